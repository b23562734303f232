"""Run our handler without a server: unpack a real .mar and build TorchServe's own Context for it.

Like TorchServe's MockContext, but with the archive's true manifest, metadata and
model-config.yaml, so the unit tests exercise exactly what the server loads.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml
from ts.context import Context, RequestProcessor

from handlers.classifier_handler import ImageClassifierHandler
from tests.support.paths import MODEL_STORE


def unpack_archive(name: str, dest: Path) -> Path:
    mar = MODEL_STORE / f"{name}.mar"
    if not mar.is_file():
        pytest.fail(f"{mar} is missing: run `make archive`")
    with zipfile.ZipFile(mar) as zf:
        zf.extractall(dest)
    return dest


def make_context(model_dir: Path, name: str) -> Context:
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    config = yaml.safe_load((model_dir / "model-config.yaml").read_text())
    return Context(name, str(model_dir), manifest, config["batchSize"], None, "0.12.0",
                   model_yaml_config=config)


class LoadedHandler:
    """An initialised handler and a way to send it one batch of (body, headers) requests."""

    def __init__(self, model_dir: Path, name: str):
        self.name = name
        self.context = make_context(model_dir, name)
        self.handler = ImageClassifierHandler()
        self.handler.initialize(self.context)

    def batch(self, requests: list[tuple[dict, dict]]):
        """requests: (row as TorchServe hands it, request headers). Returns [(status, body)]."""
        self.context.request_processor = [RequestProcessor(dict(headers)) for _, headers in requests]
        out = self.handler.handle([row for row, _ in requests], self.context)
        assert len(out) == len(requests), "a handler must answer every request of its batch"
        answers = []
        for idx, body in enumerate(out):
            status = self.context.request_processor[idx].get_response_status_code()
            answers.append((status, json.loads(body)))
        return answers

    def one(self, row: dict, headers: dict | None = None):
        return self.batch([(row, headers or {})])[0]
