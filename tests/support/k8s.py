"""The Kubernetes overlays (k8s/overlays/*) as `kubectl kustomize` renders them, and the objects in them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.paths import REPO as ROOT
from tests.support.venv_tools import tool

OVERLAYS = ("gpu", "cpu")
K8S_VERSION = "1.30.0"


def kustomize(path: Path) -> list[dict]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlays() -> dict[str, list[dict]]:
    """overlay name -> its rendered objects."""
    return {overlay: kustomize(ROOT / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def main_container(objects) -> dict:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1
    return containers[0]


def container_ports(objects) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in main_container(objects)["ports"]}


def container_env(objects) -> dict[str, str]:
    return {e["name"]: e["value"] for e in main_container(objects).get("env", [])}
