"""API keys at the proxy: the keys file (names, SHA-256 hashes, model scopes, rates), the nginx lines
that check them, and the command that adds and removes keys while the server runs.

Clients send `Authorization: Bearer <key>`. nginx hashes the token (serving/api_key.js, njs) and
looks the hash up; a request without a valid key gets a JSON 401 before it reaches TorchServe, a key
scoped to other models a 403, a key past its rate a 429 with Retry-After. The file holds hashes
only: a key is shown once, when it is made. The access log names the key's name, never the key.

    python -m serving.api_keys add alice [--models lenet5,mnist_net] [--rate 100] [--burst 100]
    python -m serving.api_keys remove alice
    python -m serving.api_keys list
    (--file, default .run/api_keys.json; --run-dir .run: a running proxy there reloads at once)

The file, as a Kubernetes Secret holds it (`api_keys.json`):
    {"keys": [{"name": "alice", "sha256": "<64 hex>", "models": ["lenet5"], "rate_per_s": 100, "burst": 100}]}
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from settings.model_serving import SERVING
from settings.proxy import KEYS, KeyDefaults

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MODEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_FILE = Path(".run") / "api_keys.json"
EXAMPLE = '{"keys": [{"name": ..., "sha256": ..., "models": [...], "rate_per_s": ..., "burst": ...}]}'
NJS_MODULE = Path(__file__).resolve().parent / "api_key.js"


class KeysError(ValueError):
    """The keys file or a change to it is not valid; the message says what to fix."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    models: tuple[str, ...] = ()  # empty: every model
    rate_per_s: int = KEYS.rate_per_s
    burst: int = KEYS.burst

    def check(self) -> "ApiKey":
        if not NAME.match(self.name):
            raise KeysError(f"key name {self.name!r}: letters, digits and ._- only, at most 64")
        if not SHA256.match(self.sha256):
            raise KeysError(f"key {self.name!r}: sha256 must be 64 lower-case hex digits")
        bad = [m for m in self.models if not MODEL.match(m)]
        if bad:
            raise KeysError(f"key {self.name!r}: model names {bad} are not valid")
        if not (isinstance(self.rate_per_s, int) and self.rate_per_s >= 1 and isinstance(self.burst, int)
                and self.burst >= 0):
            raise KeysError(f"key {self.name!r}: rate_per_s must be an integer >= 1 and burst >= 0")
        return self


@dataclass
class ApiKeys:
    keys: list[ApiKey] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, missing_ok: bool = False) -> "ApiKeys":
        """The keys of `path`; with `missing_ok`, none when there is no such file yet."""
        if missing_ok and not Path(path).exists():
            return cls()
        try:
            document = json.loads(Path(path).read_text())
            entries = document["keys"]
            keys = [ApiKey(name=e["name"], sha256=e["sha256"], models=tuple(e.get("models") or ()),
                           rate_per_s=e.get("rate_per_s", KEYS.rate_per_s), burst=e.get("burst", KEYS.burst)).check()
                    for e in entries]
        except OSError as err:
            raise KeysError(f"cannot read the keys file {path}: {err.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise KeysError(f"the keys file {path} is not valid ({err}); expected {EXAMPLE}") from None
        names = [k.name for k in keys]
        if len(set(names)) != len(names) or len({k.sha256 for k in keys}) != len(keys):
            raise KeysError(f"the keys file {path} names a key or a hash twice")
        return cls(keys)

    def save(self, path: Path) -> None:
        """Written whole to a temporary file, then renamed over the old one; readable by its owner only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(json.dumps({"keys": [asdict(k) for k in self.keys]}, indent=1) + "\n")
        temporary.chmod(0o600)
        os.replace(temporary, path)

    def add(self, name: str, models: tuple[str, ...] = (), rate_per_s: int = KEYS.rate_per_s,
            burst: int = KEYS.burst) -> str:
        """A new random key under `name`; returns the key itself (the file keeps its hash only)."""
        if any(k.name == name for k in self.keys):
            raise KeysError(f"a key named {name!r} exists; remove it first, or choose another name")
        key = secrets.token_urlsafe(32)
        self.keys.append(ApiKey(name, sha256_hex(key), tuple(models), rate_per_s, burst).check())
        return key

    def remove(self, name: str) -> None:
        if not any(k.name == name for k in self.keys):
            raise KeysError(f"no key is named {name!r}; `python -m serving.api_keys list` shows them")
        self.keys = [k for k in self.keys if k.name != name]


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ---- nginx -------------------------------------------------------------------------------------
def _rate_classes(keys: ApiKeys) -> list[tuple[int, int]]:
    """The distinct (rate, burst) pairs: nginx's limit_req has one rate per zone, so one zone each."""
    return sorted({(k.rate_per_s, k.burst) for k in keys.keys})


def http_lines(keys: ApiKeys | None, defaults: KeyDefaults = KEYS) -> str:
    """The http-level lines: the njs hash, hash -> name, name/model -> allowed, one limit_req zone per
    rate class keyed by the names in it (an empty key is not counted: other keys pass that zone)."""
    if keys is None:
        return 'map $request_method $api_key_name { default ""; }  # no API keys on this server'
    lines = [f"js_path {NJS_MODULE.parent};", f"js_import api_key from {NJS_MODULE.name};",
             "js_set $api_key_sha256 api_key.sha256;",
             "map $api_key_sha256 $api_key_name {", '    default "";',
             *(f'    "{k.sha256}" "{k.name}";' for k in keys.keys), "}",
             'map "$api_key_name/$model" $api_key_allowed {', '    default "";',
             *(f'    "~^{re.escape(k.name)}/" 1;' if not k.models else
               f'    "~^{re.escape(k.name)}/({"|".join(re.escape(m) for m in k.models)})$" 1;' for k in keys.keys),
             "}"]
    for rate, burst in _rate_classes(keys):
        members = [k.name for k in keys.keys if (k.rate_per_s, k.burst) == (rate, burst)]
        lines += [f"map $api_key_name $api_key_in_r{rate}b{burst} {{", '    default "";',
                  *(f'    "{name}" "{name}";' for name in members), "}",
                  f"limit_req_zone $api_key_in_r{rate}b{burst} zone=api_key_r{rate}b{burst}:{defaults.zone_size} "
                  f"rate={rate}r/s;"]
    lines += [f"limit_req_status {defaults.limited_status};", "limit_req_log_level warn;"]
    return "\n".join(lines)


def location_lines(keys: ApiKeys | None) -> str:
    """Where a model route is proxied: the rate limit of each class (a key is in one)."""
    if keys is None:
        return ""
    return "\n".join(f"limit_req zone=api_key_r{rate}b{burst} burst={burst} nodelay;"
                     for rate, burst in _rate_classes(keys))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("add", "remove", "list"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="the server whose proxy reloads the keys at once, if it runs")
    parser.add_argument("--models", default="", help=f"comma-separated models the key may call (default all: "
                                                     f"{', '.join(SERVING)})")
    parser.add_argument("--rate", type=int, default=KEYS.rate_per_s, help="requests per second, sustained")
    parser.add_argument("--burst", type=int, default=KEYS.burst, help="requests above the rate taken at once")
    args = parser.parse_args(argv)
    try:
        keys = ApiKeys.load(args.file, missing_ok=True)
        if args.command == "list":
            for k in keys.keys:
                print(f"{k.name}: models {', '.join(k.models) or 'all'}, {k.rate_per_s}/s, burst {k.burst}, "
                      f"sha256 {k.sha256[:12]}...")
            return 0
        if not args.name:
            parser.error(f"{args.command} needs a key name")
        if args.command == "add":
            models = tuple(m for m in args.models.split(",") if m)
            key = keys.add(args.name, models, args.rate, args.burst)
            keys.save(args.file)
            print(f"key {args.name}: {key}\n  shown once; its hash is in {args.file}. Clients send "
                  f'-H "Authorization: Bearer {key}"')
        else:
            keys.remove(args.name)
            keys.save(args.file)
            print(f"removed key {args.name} from {args.file}")
    except KeysError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from serving.server import LaunchError, reload_proxy  # the lifecycle, which imports this module
    try:
        if reload_proxy(args.run_dir):
            print(f"the proxy of {args.run_dir} reloaded: the change holds now")
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
