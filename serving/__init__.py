"""Serving settings, TorchServe configuration and the local server launcher."""
