"""Several images per request without base64, end to end: a .npy body or part and
multipart forms with several files, through the proxy (nginx, as deployed) and straight to
TorchServe, answered like {"instances": [...]}; what a repeated field name really does; hostile
.npy headers refused with the JSON error contract; and the docs' ```shell examples of these
transports, run as a reader runs them."""
from __future__ import annotations

import io
import json
import os
import shlex
import subprocess

import numpy as np
import pytest
import requests

from export.samples import SAMPLES, write_samples
from handlers.contract import check_error, check_prediction
from handlers.png import png_bytes
from model_defs.registry import get_spec
from settings.limits import LIMITS
from tests.support.parity import assert_same_probabilities
from tests.support.paths import REPO
from tests.support.readme_examples import fenced_blocks, on_port

pytestmark = pytest.mark.e2e
MODEL = "lenet5"
LABELS = get_spec(MODEL).labels
DOCS = ("README.md", "handlers/README.md")
NPY = {"Content-Type": "application/x-npy"}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(held_out) -> np.ndarray:
    return held_out(MODEL).raw[:6]


@pytest.fixture(scope="module", params=["proxy", "torchserve"])
def url(server, request) -> str:
    base = server.inference_url if request.param == "proxy" else server.backend_url
    return f"{base}/predictions/{MODEL}"


@pytest.fixture(scope="module")
def reference(server, images) -> list[dict]:
    """One PNG per request through the proxy: what every other transport must answer."""
    answers = []
    for image in images:
        response = requests.post(f"{server.inference_url}/predictions/{MODEL}", data=png_bytes(image),
                                 headers={"Content-Type": "image/png"}, timeout=30)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def assert_same(answer: dict, reference: dict) -> None:
    check_prediction(answer, LABELS, model=MODEL)
    assert answer["index"] == reference["index"]
    assert_same_probabilities(list(answer["probabilities"].values()), list(reference["probabilities"].values()))


def assert_answers(response, expected: list[dict]) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == len(expected), body
    for answer, reference in zip(body, expected):
        assert_same(answer, reference)


def assert_one_answer(response, expected: dict) -> None:
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), dict), response.json()
    assert_same(response.json(), expected)


@pytest.mark.parametrize("headers", [NPY, {"Content-Type": "application/octet-stream"}, {}],
                         ids=["application/x-npy", "application/octet-stream", "no Content-Type"])
def test_npy_body_answers_a_list_in_order(url, images, reference, headers):
    assert_answers(requests.post(url, data=npy_bytes(images), headers=headers, timeout=30), reference)


def test_npy_of_one_image_answers_one_object(url, images, reference):
    assert_one_answer(requests.put(url, data=npy_bytes(images[2]), headers=NPY, timeout=30), reference[2])


def test_npy_as_a_form_part(url, images, reference):
    files = {"batch": ("digits.npy", npy_bytes(images), "application/octet-stream")}
    assert_answers(requests.post(url, files=files, timeout=30), reference)


def test_several_files_answer_one_each_in_order(url, images, reference):
    files = [(f"image{i}", (f"{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(images)]
    assert_answers(requests.post(url, files=files, timeout=30), reference)
    assert_answers(requests.post(url, files=files[::-1], timeout=30), reference[::-1])


def test_text_fields_beside_files(url, images, reference):
    response = requests.post(url, data={"note": "hi"}, files={"file": ("7.png", png_bytes(images[0]), "image/png")},
                             timeout=30)
    assert_one_answer(response, reference[0])
    files = [("a", ("a.png", png_bytes(images[0]), "image/png")), ("b", ("b.png", png_bytes(images[1]), "image/png"))]
    assert_answers(requests.post(url, data={"note": "hi", "label": "BMW"}, files=files, timeout=30), reference[:2])


def test_a_repeated_field_name_reaches_the_model_as_its_last_part_only(url, images, reference):
    """TorchServe 0.12.0's worker keeps one value per field name (ts/service.py): of three parts named
    "file" the handler sees the last, and answers one object. What handlers/README.md documents."""
    files = [("file", (f"{i}.png", png_bytes(images[i]), "image/png")) for i in range(3)]
    assert_one_answer(requests.post(url, files=files, timeout=30), reference[2])


def hostile() -> list:
    limit = LIMITS.max_images_per_request
    objects = np.empty(1, dtype=object)
    objects[0] = {"a": 1}
    pickled = io.BytesIO()
    np.save(pickled, objects, allow_pickle=True)
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)})
    return [("huge N, tiny body", huge.getvalue() + b"\0" * 16, 413, "too_many_images"),
            ("N over the limit", npy_bytes(np.zeros((limit + 1, 28, 28), np.uint8)), 413, "too_many_images"),
            ("pickled objects", pickled.getvalue(), 422, "bad_array_dtype"),
            ("NCHW", npy_bytes(np.zeros((2, 1, 28, 28), np.uint8)), 422, "bad_array_shape"),
            ("truncated", npy_bytes(np.zeros((3, 28, 28), np.uint8))[:-10], 400, "bad_npy")]


@pytest.mark.parametrize("name, body, status, code", hostile(), ids=[case[0] for case in hostile()])
def test_hostile_npy_gets_the_json_error_contract(url, name, body, status, code):
    response = requests.post(url, data=body, headers=NPY, timeout=30)
    assert response.status_code == status, response.text
    assert check_error(response.json(), status) == code


# ---- the docs' examples of these transports --------------------------------------------------

def shell_examples() -> list[tuple[str, str]]:
    """(doc, block) for each ```shell block of the docs: a script of commands, one a line."""
    return [(doc, block) for doc in DOCS for block in fenced_blocks((REPO / doc).read_text(), "shell")]


def test_the_docs_show_shell_examples_of_several_images():
    assert {doc for doc, _ in shell_examples()} == {"handlers/README.md"}


@pytest.mark.parametrize("doc, block", shell_examples(), ids=[f"{doc}: shell {i}" for i, (doc, _)
                                                              in enumerate(shell_examples())])
def test_docs_shell_example_gets_a_list_of_real_answers(server, tmp_path, doc, block):
    """Run from a scratch directory that sees the repository's samples/ and .venv/ (so a file the
    example writes lands there, not in the checkout); each curl answer is a list whose every answer
    names the sample's label."""
    if not all((REPO / "samples" / name).is_file() for name in SAMPLES):
        write_samples(REPO / "samples")
    for name in ("samples", ".venv"):
        os.symlink(REPO / name, tmp_path / name)
    port = int(server.inference_url.rsplit(":", 1)[1])
    curls = 0
    for line in on_port(block, port).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        result = subprocess.run(shlex.split(line, comments=True), cwd=tmp_path, capture_output=True, timeout=60)
        assert result.returncode == 0, f"{line}: {result.stderr.decode(errors='replace')}"
        if line.startswith("curl "):
            curls += 1
            answers = json.loads(result.stdout)
            assert isinstance(answers, list) and len(answers) > 1, answers
            assert {check_prediction(answer, LABELS, model=MODEL) for answer in answers} == {SAMPLES["digit.png"][1]}
    assert curls, block
