"""The optional peers of `make bench-peers` (issue 15): other serving stacks a user might run
instead, each in its own pinned virtualenv, doing our per-image work (loadtest/peers/README.md)."""
