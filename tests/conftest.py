"""Shared fixtures: exported models, held-out data, and one real TorchServe per test session.

The session server runs from its own run directory on ports the OS says are free
(settings.ports.Ports.free), so it never collides with a developer's `make serve` on 8080-8082
or with another test's server. Paths: tests/support/paths.py.
"""
from __future__ import annotations

import json
from contextlib import ExitStack

import numpy as np
import pytest
import torch

from export.datasets import load_held_out
from model_defs.preprocessing import canonicalize
from model_defs.registry import MODELS, get_spec
from serving.server import LaunchError, running
from settings.ports import Ports
from tests.support.dockerfile import read_dockerfile
from tests.support.handler_context import LoadedHandler, unpack_archive
from tests.support.k8s import render_overlays
from tests.support.paths import MODEL_STORE, artifact

MODEL_NAMES = list(MODELS)


class HeldOut:
    """A model's held-out split: raw images as a client has them, canonical tensors, labels."""

    def __init__(self, name: str):
        self.spec = get_spec(name)
        manifest = json.loads(artifact(name, "manifest.json").read_text())
        _, self.raw, labels = load_held_out(self.spec, manifest)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._canonical = None

    @property
    def canonical(self) -> np.ndarray:
        if self._canonical is None:
            self._canonical = np.stack([canonicalize(img, self.spec.preprocessing, self.spec.input_size)
                                        for img in self.raw])
        return self._canonical

    def __len__(self) -> int:
        return len(self.labels)


_held_out_cache: dict[str, HeldOut] = {}


@pytest.fixture(scope="session")
def held_out():
    def get(name: str) -> HeldOut:
        if name not in _held_out_cache:
            _held_out_cache[name] = HeldOut(name)
        return _held_out_cache[name]
    return get


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The handler of each real archive, loaded as TorchServe loads it, without a server."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = LoadedHandler(unpack_archive(name, tmp_path_factory.mktemp(name)), name)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def scripted():
    """The exported TorchScript models, as the server runs them."""
    cache: dict[str, torch.jit.ScriptModule] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = torch.jit.load(str(artifact(name, "model.pt"))).eval()
        return cache[name]
    return get


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real TorchServe on loopback for the whole session, stopped at the end."""
    with ExitStack() as stack:
        try:
            srv = stack.enter_context(running(run_dir=tmp_path_factory.mktemp("torchserve"), model_store=MODEL_STORE,
                                              ports=Ports.free(), timeout=180))
        except LaunchError as err:
            pytest.fail(f"TorchServe did not start: {err}")
        yield srv


@pytest.fixture(scope="module")
def dockerfile():
    """docker/Dockerfile parsed: its instructions, ARG defaults and ENV values (tests/support/dockerfile.py)."""
    return read_dockerfile()


@pytest.fixture(scope="module")
def rendered():
    """overlay -> the objects `kubectl kustomize k8s/overlays/<overlay>` renders (tests/support/k8s.py)."""
    return render_overlays()
