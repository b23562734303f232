"""URLs a model registration must never be allowed to reach (tests of `allowed_urls`)."""
from __future__ import annotations

from pathlib import Path


def traversal_urls(store: Path) -> list[str]:
    """file: URLs that start in the model store and leave it; the %2e forms are decoded when
    TorchServe opens the URL, after it has checked `allowed_urls`."""
    return [f"file://{store}/../../etc/passwd", f"file://{store}/%2e%2e/%2e%2e/tmp/evil.mar",
            f"file://{store}/%2e%2e/evil.mar", f"file://{store}/../evil.mar", f"file://{store}/%2fetc%2fpasswd",
            f"file://{store}/sub/x.mar", f"file://{store}/.hidden.mar", f"file://{store}/lenet5.mar.gz"]
