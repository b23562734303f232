"""Start, wait for and stop a local TorchServe, failing with the reason instead of exit code 0.

    python -m serving.launcher start [--run-dir .run] [--model-store model_store] [--timeout 120]
    python -m serving.launcher stop  [--run-dir .run]
    python -m serving.launcher status [--run-dir .run]

The command line (`make serve`, `make stop`, `make status`) over serving/server.py's `start` and
`stop`: they check what they can first (Java, archives, ports, a server already running), wait
until every model has a READY worker, and on failure print the reason from TorchServe's log.
`start` and `status` say which batcher the frontend runs (serving/batcher.py), with a banner on
stderr when it is TorchServe's own rather than ours.
Ports come from settings/ports.py, overridable with INFERENCE_PORT, MANAGEMENT_PORT and
METRICS_PORT.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.api_keys import ApiKeys
from serving.batcher import Verdict
from serving.server import LaunchError, Server, start, stop
from settings.model_serving import SERVING
from settings.ports import Ports


def secure_keys(keys_file: Path) -> str | None:
    """A development key in `keys_file` when it holds none (`make serve-secure`'s first run): the key,
    to be shown once; None when the file already has keys (their hashes only)."""
    keys = ApiKeys.load(keys_file, missing_ok=True)
    if keys.keys:
        return None
    key = keys.add("dev")
    keys.save(keys_file)
    return key


def example(server: Server, new_key: str | None = None) -> str:
    """What to type next: the addresses, and for a secure server the CA file and key a client needs."""
    curl, lines = "curl", []
    if server.tls:
        curl += f" --cacert {server.tls_files.ca}"
        lines.append(f"  HTTPS only; clients trust the local CA {server.tls_files.ca}")
    metrics = curl  # before the key: the metrics port takes none
    token = server.keys().get("inference")  # TorchServe's own token auth (--token-auth)
    if new_key:
        curl += f' -H "Authorization: Bearer {new_key}"'
        lines.append(f"  API key \"dev\" made now and shown once; its hash is kept in {server.api_keys} "
                     "(more: python -m serving.api_keys add NAME)")
    elif server.api_keys:
        curl += ' -H "Authorization: Bearer <key>"'
        lines.append(f"  API keys: those of {server.api_keys} (python -m serving.api_keys list / add NAME)")
    elif token:
        curl += f' -H "Authorization: Bearer {token}"'
        lines.append(f"  token auth on: the inference key above is TorchServe's, in {server.key_file}")
    return "\n".join([
        f"TorchServe is ready behind nginx: {', '.join(SERVING)}",
        f"  try it in a browser: {server.inference_url}/",
        f"  {curl} -T samples/digit.png {server.inference_url}/predictions/lenet5",
        f"  {curl} -T samples/shoe.png {server.inference_url}/predictions/fashion_mlp",
        *lines,
        f"  models: curl {server.management_url}/models   metrics: {metrics} {server.metrics_url}/metrics",
        f"  logs: {server.log_dir}   stop: make stop",
        f"  batcher: {server.batcher().describe()}"])


def batcher_warning(verdict: Verdict) -> str | None:
    """A banner for stderr when the frontend runs TorchServe's own batcher instead of ours (a refused or
    failed agent), None when it runs ours. The server works either way, but every batch then waits up to
    maxBatchDelay: a lone request is slower, and the figures in docs/BENCHMARKS.md do not hold."""
    if verdict.ours:
        return None
    rule = "!" * 100
    return (f"{rule}\n"
            f"WARNING: this TorchServe does not run our batcher ({verdict.state}); it runs TorchServe's own,\n"
            f"which waits up to maxBatchDelay for every batch (serving/java/README.md).\n"
            f"{verdict.why}\n"
            f"{rule}")


def warn_about_batcher(server: Server) -> None:
    warning = batcher_warning(server.batcher())
    if warning:
        print(warning, file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--token-auth", action="store_true",
                        help="require a bearer token (key in <run-dir>/key_file.json)")
    parser.add_argument("--api-keys", type=Path, default=None,
                        help="the proxy takes only this file's API keys (serving/api_keys.py); a development "
                             "key is made when it holds none")
    parser.add_argument("--tls", action="store_true",
                        help="the proxy speaks HTTPS only, with a local CA and certificate (<run-dir>/tls/, "
                             "made on first use)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            new_key = secure_keys(args.api_keys) if args.api_keys else None
            server = start(run_dir=args.run_dir, model_store=args.model_store, timeout=args.timeout,
                           token_auth=args.token_auth, tls=args.tls, api_keys=args.api_keys)
            print(example(server, new_key))
            warn_about_batcher(server)
        elif args.command == "stop":
            stop(args.run_dir)
        else:
            server = Server(args.run_dir.resolve(), Ports.from_env())
            pid = server.pid()
            if not pid:
                print("not running")
                return 1
            print(f"running, pid {pid}\n  batcher: {server.batcher().describe()}")
            warn_about_batcher(server)
    except (LaunchError, ValueError) as err:  # KeysError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
