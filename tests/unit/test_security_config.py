"""Security as configured, without a server: every rendered profile keeps management on loopback,
the model API off and `allowed_urls` to the model store's own archives; no Kubernetes Service
names the management port. The live checks are in tests/e2e/test_security.py; figures in RELIABILITY.md.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from serving.config import PROFILES, render
from settings.ports import HOST, Ports
from tests.support.hostile_urls import traversal_urls
from tests.support.paths import REPO as ROOT


def parse(text: str) -> dict:
    """config.properties as Java's Properties.load reads it (a backslash escapes the next character)."""
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    return {key: re.sub(r"\\(.)", lambda m: escapes.get(m[1], m[1]), value)
            for key, value in (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))}


# ---- every shipped config, as rendered ---------------------------------------------------------
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("token_auth", [False, True])
def test_every_profile_keeps_management_on_loopback_and_model_api_off(profile, token_auth, tmp_path):
    config = parse(render(profile, tmp_path / "store", Ports(9180, 9181, 9182), token_auth))
    assert config["management_address"] == f"http://{HOST}:9181"
    assert config["grpc_management_address"] == HOST and config["grpc_inference_address"] == HOST
    assert config["enable_model_api"] == "false"
    # TorchServe 0.12: Pattern.compile(allowed, CASE_INSENSITIVE).matcher(url).matches(), the whole URL
    allowed = re.compile(config["allowed_urls"], re.IGNORECASE)
    store = tmp_path / "store"
    for name in ("lenet5.mar", "fashion_mlp.mar", "LENET5.MAR", "lenet5-slow.v2.mar"):
        assert allowed.fullmatch(f"file://{store}/{name}"), name
    for url in ["http://127.0.0.1/x.mar", "https://example.org/x.mar", "file:///etc/passwd",
                f"file://{tmp_path}/other/x.mar", f"file://{tmp_path}/storeX/x.mar", *traversal_urls(store)]:
        assert not allowed.fullmatch(url), url
    assert config["disable_token_authorization"] == ("false" if token_auth else "true")


def service_manifests() -> list[tuple[Path, dict]]:
    found = []
    for path in ROOT.rglob("*.y*ml"):
        if any(part in (".venv", "build", "node_modules", ".git") for part in path.relative_to(ROOT).parts):
            continue
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        found += [(path, d) for d in documents if isinstance(d, dict) and d.get("kind") == "Service"]
    return found


def test_no_kubernetes_service_exposes_the_management_port():
    services = service_manifests()
    assert services, "no Kubernetes Service manifest found (k8s/base/service.yaml has one)"
    management = Ports().management
    for path, service in services:
        for port in service.get("spec", {}).get("ports", []):
            exposed = {port.get("port"), port.get("targetPort"), port.get("name")}
            assert management not in exposed and "management" not in exposed, (path, port)
