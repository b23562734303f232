"""What tests share besides fixtures: paths in the repository (tests/support/paths.py)."""
