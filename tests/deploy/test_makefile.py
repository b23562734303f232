"""mk/deploy.mk and mk/container.mk: the image name and tag equal the manifests'; `make k8s
REGISTRY=...` renders the registry's image names; `make docker` says clearly when there is no Docker
engine, and with podman uses the docker format and can build only the CPU image.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.k8s import OVERLAYS, main_container
from tests.support.make import make_vars
from tests.support.paths import REPO as ROOT


def test_image_name_and_tag_agree_between_make_and_manifests(rendered):
    images = dict(line.split() for line in make_vars("print-image").splitlines())
    assert set(images) == set(OVERLAYS)
    for overlay in OVERLAYS:
        assert main_container(rendered[overlay])["image"] == images[overlay]
    assert images["cpu"] == images["gpu"] + "-cpu"


def test_make_k8s_with_a_registry_renders_the_registry_image_names(tmp_path, rendered):
    """`make k8s REGISTRY=...` (the rendering `make deploy` applies), offline with the venv's
    kubectl, into a temporary K8S_OUT so build/k8s/ is left as it was."""
    if subprocess.run(["make", "-q", "venv"], cwd=ROOT, capture_output=True, timeout=60).returncode != 0:
        pytest.fail("the venv is older than requirements.txt and `make k8s` would reinstall it: run `make venv`")
    registry, out = "r.example/t", tmp_path / "k8s"
    k8s_before = subprocess.run(["git", "status", "--porcelain", "--", "k8s"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60).stdout
    result = subprocess.run(["make", "--no-print-directory", "k8s", f"REGISTRY={registry}", f"K8S_OUT={out}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    images = dict(line.split() for line in make_vars("print-image").splitlines())
    for overlay in OVERLAYS:
        objects = [doc for doc in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if doc]
        container = main_container(objects)
        assert container["image"] == f"{registry}/{images[overlay]}"
        # and nothing else differs from the plain render
        container["image"] = images[overlay]
        assert objects == rendered[overlay], overlay
    assert subprocess.run(["git", "status", "--porcelain", "--", "k8s"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60).stdout == k8s_before, "make k8s changed files under k8s/"


def test_make_docker_says_clearly_when_there_is_no_docker_engine():
    for docker, expected in (("false", "no Docker engine answers"), ("no-such-docker-cli", "no 'no-such-docker-cli' command")):
        result = subprocess.run(["make", "--no-print-directory", "docker", f"DOCKER={docker}"], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert result.returncode != 0
        assert expected in result.stderr and "docker build -f docker/Dockerfile" in result.stderr, result.stderr


def test_make_docker_with_podman_uses_the_docker_format_and_can_build_only_the_cpu_image():
    result = subprocess.run(["make", "-n", "--no-print-directory", "docker", "DOCKER=podman", "VARIANTS=cpu",
                             "DOCKER_BUILD_ARGS=--build-arg UBUNTU_IMAGE=debian:12"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    build = result.stdout.split("for v in ", 1)[1]
    assert build.startswith("cpu;")
    assert "podman build --format docker -f docker/Dockerfile" in build
    assert "CONTAINERS_CONF=" in build and "docker/containers.conf" in build
    assert "--build-arg UBUNTU_IMAGE=debian:12" in build
    plain = subprocess.run(["make", "-n", "--no-print-directory", "docker"], capture_output=True, text=True,
                           cwd=ROOT, timeout=120).stdout.split("for v in ", 1)[1]
    assert plain.startswith("gpu cpu;") and "DOCKER_BUILDKIT=1 docker build" in plain and "--format" not in plain
