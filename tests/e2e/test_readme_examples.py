"""The READMEs' examples, run as a reader runs them against `make serve`'s server, here against the
session server: every curl command and Python example in README.md and handlers/README.md that talks
to 127.0.0.1:8080, read from their fenced code blocks (tests/support/readme_examples.py), with the
session server's inference port put in for 8080, run from the repository root (curl as a command,
Python in a subprocess with the venv's interpreter). Every answer keeps the contract
(handlers/contract.py) and names the label of the sample picture it was sent.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from export.samples import SAMPLES, write_samples
from handlers.contract import check_explanation, check_prediction
from model_defs.registry import get_spec
from tests.support.paths import REPO
from tests.support.readme_examples import (
    curl_commands,
    expression_count,
    on_port,
    python_examples,
    run_curl,
    run_python,
)

pytestmark = pytest.mark.e2e
DOCS = ("README.md", "handlers/README.md")
CURL = [(doc, command) for doc in DOCS for command in curl_commands((REPO / doc).read_text())]
PYTHON = [(doc, code) for doc in DOCS for code in python_examples((REPO / doc).read_text())]
ENDPOINT = re.compile(r"/(predictions|explanations)/(\w+)")
SAMPLE = re.compile(r"samples/([\w.-]+\.png)")


@pytest.fixture(scope="module")
def samples():
    """samples/ in the repository root, where the examples read their pictures: what `make serve`
    (`make samples`) writes there, written here when missing. File name -> the label it shows."""
    if not all((REPO / "samples" / name).is_file() for name in SAMPLES):
        write_samples(REPO / "samples")
    return {name: label for name, (_, label) in SAMPLES.items()}


def port_of(server) -> int:
    return urlsplit(server.inference_url).port


def one(pattern: re.Pattern, example: str) -> tuple | str:
    """The one thing `pattern` finds in the example (an example that mixes several is not checked here)."""
    found = set(pattern.findall(example))
    assert len(found) == 1, f"expected one match of {pattern.pattern} in the example, found {sorted(found)}:\n{example}"
    return found.pop()


def test_the_readmes_show_curl_and_python_examples():
    assert CURL, "README.md shows no curl command for 127.0.0.1:8080"
    assert {doc for doc, _ in PYTHON} == set(DOCS), f"a Python example for 127.0.0.1:8080 is missing: {PYTHON}"


@pytest.mark.parametrize("doc, command", CURL, ids=[f"{doc}: {command}" for doc, command in CURL])
def test_readme_curl_example_gets_a_real_answer(server, samples, doc, command):
    endpoint, model = one(ENDPOINT, command)
    spec = get_spec(model)
    output = run_curl(on_port(command, port_of(server)), cwd=REPO)
    answer = json.loads(output)
    if endpoint == "explanations":
        label = check_explanation(answer, spec.labels, spec.input_size, model=model)
    else:
        label = check_prediction(answer, spec.labels, model=model)
    assert label == samples[one(SAMPLE, command)], (command, answer)


@pytest.mark.parametrize("doc, code", PYTHON, ids=[f"{doc}: python {i}" for i, (doc, _) in enumerate(PYTHON)])
def test_readme_python_example_gets_real_answers(server, samples, doc, code):
    endpoint, model = one(ENDPOINT, code)
    assert endpoint == "predictions", code
    labels = get_spec(model).labels
    values = run_python(on_port(code, port_of(server)), cwd=REPO)
    assert len(values) == expression_count(code) > 0, values
    expected = samples[one(SAMPLE, code)]
    for value in values:
        answers = value if isinstance(value, list) else [value]
        assert answers, value
        assert [check_prediction(answer, labels, model=model) for answer in answers] == [expected] * len(answers)
