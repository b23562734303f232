"""The peers of `make bench-peers`: other serving stacks a user might run
instead, each in its own pinned virtualenv, doing our per-image work (loadtest/peers/README.md)."""
import argparse

PYTRITON_READY = "pytriton: serving"  # pytriton_app.py prints it once Triton serves; the benchmark waits for it


def server_arguments(description: str) -> argparse.Namespace:
    """What loadtest/bench/peers.py starts every peer's app with: --host, --port and --workers."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1,
                        help="inference workers, one per core (LitServe: processes; PyTriton: instances)")
    return parser.parse_args()
