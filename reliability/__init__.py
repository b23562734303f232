"""Reliability tooling: the soak runner, hostile and crafted requests, the probe (see RELIABILITY.md).
The test-only slow model the reliability tests serve lives in tests/support/slow_model.py."""
