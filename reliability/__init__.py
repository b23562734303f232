"""Reliability tooling: the soak runner and the test-only slow model (see RELIABILITY.md)."""
