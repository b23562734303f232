"""The input contract, end to end against the real server: every transport and format clients
send works, every mistake gets its own precise 4xx JSON, and bad requests never fail a batch."""
from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from handlers.contract import check_error, check_prediction, check_predictions
from model_defs.registry import get_spec
from settings.limits import LIMITS
from tests.support import sample_images as samples
from tests.support.parity import assert_same_probabilities

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def picture(held_out):
    """A 160x120 dark-on-white 'photo' of a held-out digit, and its label."""
    data = held_out("lenet5")
    return samples.photo_of(data.raw[0]), int(data.labels[0])


@pytest.fixture(scope="module")
def url(server):
    return f"{server.inference_url}/predictions/lenet5"


def labels_of(response) -> tuple[str, ...]:
    """The labels of the model a /predictions/<model> response came from."""
    return get_spec(urlsplit(response.url).path.rsplit("/", 1)[-1]).labels


def probabilities(response) -> np.ndarray:
    """A 200 answer that keeps the contract (handlers/contract.py) -> its probabilities [classes]."""
    assert response.status_code == 200, response.text
    answer = response.json()
    check_prediction(answer, labels_of(response))
    return np.array(list(answer["probabilities"].values()))


# ---- transports --------------------------------------------------------------------------------
def transports(png: bytes) -> dict[str, dict]:
    """name -> requests.request arguments (POST unless `method` says otherwise)."""
    b64 = base64.b64encode(png).decode()
    return {
        "PUT, no Content-Type (curl -T)": dict(method="PUT", data=png),
        "PUT image/png": dict(method="PUT", data=png, headers={"Content-Type": "image/png"}),
        "raw image/png (curl --data-binary -H)": dict(data=png, headers={"Content-Type": "image/png"}),
        "raw octet-stream": dict(data=png, headers={"Content-Type": "application/octet-stream"}),
        "raw image/jpeg mislabelled": dict(data=png, headers={"Content-Type": "image/jpeg"}),
        "raw, no Content-Type at all": dict(data=png),
        "multipart field data (curl -F data=@)": dict(files={"data": ("x.png", png, "image/png")}),
        "multipart field file": dict(files={"file": ("x.png", png, "image/png")}),
        "multipart any name, beside a text field": dict(files={"note": (None, "hello"), "upload": ("x.png", png, "image/png")}),
        "browser FormData blob": dict(files={"image": ("blob", png, "application/octet-stream")}),
        "json base64": dict(data=json.dumps({"image": b64}), headers=JSON),
        "json data URI": dict(data=json.dumps({"image": f"data:image/png;base64,{b64}"}), headers=JSON),
        "json base64 with line breaks": dict(data=json.dumps({"image": base64.encodebytes(png).decode()}), headers=JSON),
    }


def test_every_transport_gives_the_same_answer(url, picture):
    png = samples.encodings(picture[0])["png_L"]
    reference = probabilities(requests.post(url, data=png, headers={"Content-Type": "image/png"}, timeout=30))
    for name, kwargs in transports(png).items():
        got = probabilities(requests.request(kwargs.pop("method", "POST"), url, timeout=30, **kwargs))
        assert np.array_equal(got, reference), name
    assert int(reference.argmax()) == picture[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_upload_the_readme_headline(url, picture, tmp_path):
    """`curl -T x.png URL` as the README shows it: a PUT without Content-Type, with
    `Expect: 100-continue`."""
    png = samples.encodings(picture[0])["png_L"]
    path = tmp_path / "digit.png"
    path.write_bytes(png)
    done = subprocess.run(["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}", "-T", str(path), url],
                          capture_output=True, text=True, timeout=60, check=True)
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", done.stdout
    reference = probabilities(requests.post(url, data=png, headers={"Content-Type": "image/png"}, timeout=30))
    assert np.array_equal(np.array(list(json.loads(body)["probabilities"].values())), reference)


@pytest.mark.parametrize("value_range, scale", [("0-255", 1), ("0-1", 1 / 255), (None, 1), (None, 1 / 255)])
def test_pixel_arrays_in_either_range(url, picture, value_range, scale):
    gray = np.asarray(picture[0].convert("L"))
    document = {"pixels": (gray * scale).tolist()}
    if value_range:
        document["range"] = value_range
    got = probabilities(requests.post(url, json=document, timeout=30))
    png = samples.encodings(picture[0])["png_L"]
    reference = probabilities(requests.post(url, data=png, headers={"Content-Type": "image/png"}, timeout=30))
    assert_same_probabilities(got, reference)


def test_instances_answer_in_order(server, held_out):
    data = held_out("mnist_net")
    pngs = [samples.encode(samples.photo_of(img), "PNG") for img in data.raw[:10]]
    instances = [base64.b64encode(p).decode() for p in pngs[:4]]
    instances += [{"image": base64.b64encode(p).decode()} for p in pngs[4:8]]
    instances += [{"pixels": np.asarray(samples.photo_of(img)).tolist()} for img in data.raw[8:10]]
    response = requests.post(f"{server.inference_url}/predictions/mnist_net", json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    answers = response.json()
    check_predictions(answers, labels_of(response), 10)  # a list of 10 answers, each the contract
    singles = [requests.post(f"{server.inference_url}/predictions/mnist_net", data=p,
                             headers={"Content-Type": "image/png"}, timeout=30).json() for p in pngs]
    assert [a["index"] for a in answers] == [s["index"] for s in singles]
    for a, single in zip(answers[:8], singles[:8]):  # batched maths differs in the last bits only
        assert_same_probabilities(list(a["probabilities"].values()), list(single["probabilities"].values()))


# ---- formats -----------------------------------------------------------------------------------
def test_lossless_encodings_give_identical_probabilities(url, picture):
    encodings = samples.encodings(picture[0])
    results = {name: probabilities(requests.post(url, data=data, headers={"Content-Type": "image/png"}, timeout=30))
               for name, data in encodings.items()}
    reference = results["png_L"]
    for name, got in results.items():
        assert np.array_equal(got, reference), name
    assert int(reference.argmax()) == picture[1]


def test_jpeg_and_lossy_webp_keep_the_top_1(url, picture):
    for name, data in samples.lossy(picture[0]).items():
        got = probabilities(requests.post(url, data=data, headers={"Content-Type": "image/jpeg"}, timeout=30))
        assert int(got.argmax()) == picture[1], name


def test_exif_orientation_is_honoured(url, held_out):
    """A phone photo stored sideways with EXIF Orientation 6 reads as upright."""
    data = held_out("lenet5")
    sevens = [i for i, label in enumerate(data.labels) if label == 7][:5]
    for i in sevens:
        photo = samples.photo_of(data.raw[i])
        upright = probabilities(requests.post(url, data=samples.jpeg_with_orientation(photo), timeout=30))
        sideways = probabilities(requests.post(url, data=samples.rotated_without_exif(photo), timeout=30))
        plain = probabilities(requests.post(url, data=samples.encode(photo.convert("RGB"), "JPEG", quality=95),
                                            timeout=30))
        assert int(upright.argmax()) == 7
        # the tagged file answers as the upright picture does, not as its stored (sideways) pixels
        assert np.abs(upright - plain).sum() < np.abs(upright - sideways).sum()
        assert np.abs(upright - plain).max() < 0.05


def test_gif_uses_the_first_frame(url, held_out):
    data = held_out("lenet5")
    other = int(np.flatnonzero(data.labels != data.labels[0])[0])  # the held-out set is sorted by digit
    first, second = samples.photo_of(data.raw[0]), samples.photo_of(data.raw[other])
    got = probabilities(requests.post(url, data=samples.animated_gif(first, second), timeout=30))
    assert int(got.argmax()) == int(data.labels[0])


def test_one_bit_png_and_large_photo(url, held_out):
    data = held_out("lenet5")
    photo = samples.photo_of(data.raw[0])
    assert int(probabilities(requests.post(url, data=samples.one_bit_png(photo), timeout=30)).argmax()) == data.labels[0]
    big = samples.photo_of(data.raw[0], size=(1200, 900), box=600, at=(450, 120))
    rgb = samples.encode(big.convert("RGB"), "JPEG", quality=92)
    assert int(probabilities(requests.post(url, data=rgb, timeout=30)).argmax()) == data.labels[0]


def test_fashion_product_photo(server, held_out):
    """A Fashion-MNIST item as a product shot: dark on a white page, larger, not square."""
    data = held_out("fashion_mlp")
    hits = 0
    for i in range(20):
        photo = samples.photo_of(data.raw[i], size=(300, 200), box=150, at=(80, 25))
        response = requests.post(f"{server.inference_url}/predictions/fashion_mlp",
                                 data=samples.encode(photo, "PNG"), timeout=30)
        hits += int(probabilities(response).argmax()) == int(data.labels[i])
    assert hits >= 15


# ---- errors ------------------------------------------------------------------------------------
def bad_inputs(png: bytes) -> dict[str, tuple[dict, int, str]]:
    gif = samples.encode(Image.new("L", (8, 8)), "GIF")
    ico = samples.encode(Image.new("RGB", (16, 16)), "ICO")
    lab = samples.encode(Image.merge("LAB", [Image.new("L", (8, 8), 128)] * 3), "TIFF")
    b64 = base64.b64encode(png).decode()
    side = int(LIMITS.max_image_pixels ** 0.5)  # each image allowed, together over the request's budget
    too_many_pixels = [base64.b64encode(samples.png_header_only(side, side)).decode()] * (
        LIMITS.max_pixels_per_request // (side * side) + 1)
    return {
        "empty body": (dict(data=b"", headers={"Content-Type": "image/png"}), 400, "empty_body"),
        "not an image": (dict(data=b"hello, world", headers={"Content-Type": "image/png"}), 415, "not_an_image"),
        "truncated png": (dict(data=png[: len(png) // 2], headers={"Content-Type": "image/png"}), 400, "corrupt_image"),
        "corrupted png header": (dict(data=png[:16] + b"\xff" * 40 + png[56:]), 400, "corrupt_image"),
        "truncated gif": (dict(data=gif[:20]), 400, "corrupt_image"),
        "unsupported ICO": (dict(data=ico), 415, "unsupported_format"),
        "unsupported HEIC": (dict(data=b"\0\0\0\x18ftypheic" + b"\0" * 64), 415, "unsupported_format"),
        "TIFF in CIELab colour": (dict(data=lab, headers={"Content-Type": "image/tiff"}), 415, "unsupported_format"),
        "zero width png": (dict(data=samples.png_header_only(0, 10)), 400, "corrupt_image"),
        "absurd dimensions": (dict(data=samples.png_header_only(100_000, 100_000)), 413, "image_too_large"),
        # the proxy passes a form-labelled body on as raw bytes (serving/proxy.py): the text is no image
        "form-encoded (curl -d image=x.png)": (dict(data=b"image=digit.png", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "not_an_image"),
        "multipart boundary not the header's": (dict(data=b"--other\r\nContent-Disposition: form-data; name=\"data\"; filename=\"d.png\"\r\nContent-Type: image/png\r\n\r\n" + png + b"\r\n--other--\r\n", headers={"Content-Type": "multipart/form-data; boundary=expected"}), 400, "bad_multipart"),
        "malformed json": (dict(data=b'{"image": ', headers=JSON), 400, "malformed_json"),
        "json not an object we know": (dict(data=b'{"picture": 1}', headers=JSON), 422, "bad_json_fields"),
        "bad base64": (dict(data=json.dumps({"image": "@@not base64@@"}), headers=JSON), 400, "bad_base64"),
        "ragged pixels": (dict(data=json.dumps({"pixels": [[0, 1], [2]]}), headers=JSON), 422, "bad_pixels"),
        "3-D pixels": (dict(data=json.dumps({"pixels": [[[0, 1]], [[2, 3]]]}), headers=JSON), 422, "bad_pixels"),
        "NaN pixels": (dict(data=b'{"pixels": [[NaN, 0], [0, 0]]}', headers=JSON), 422, "bad_pixels"),
        "infinite pixels": (dict(data=b'{"pixels": [[Infinity, 0], [0, 0]]}', headers=JSON), 422, "bad_pixels"),
        "pixels out of range": (dict(data=json.dumps({"pixels": [[0, 300], [0, 0]]}), headers=JSON), 422, "bad_pixels"),
        "pixel over 1e400": (dict(data='{"pixels": [[1%s, 0]]}' % ("0" * 400), headers=JSON), 422, "bad_pixels"),
        "number of 5000 digits": (dict(data='{"pixels": [[1%s, 0]]}' % ("0" * 5000), headers=JSON), 400, "malformed_json"),
        "image field not a string": (dict(data=json.dumps({"image": 123}), headers=JSON), 422, "bad_image_field"),
        "too many images": (dict(data=json.dumps({"instances": [b64] * (LIMITS.max_images_per_request + 1)}), headers=JSON), 413, "too_many_images"),
        "too many pixels": (dict(data=json.dumps({"instances": too_many_pixels}), headers=JSON), 413, "too_many_pixels"),
        "empty instances": (dict(data=json.dumps({"instances": []}), headers=JSON), 422, "bad_instances"),
        "json 9 levels deep": (dict(data="[" * 9 + "]" * 9, headers=JSON), 400, "json_too_deep"),
        "json deep in the 5th instance": (dict(data=json.dumps({"instances": [b64] * 4 + [[[[[[[[0]]]]]]]]}), headers=JSON), 400, "json_too_deep"),
        "json nested past the parser's recursion limit": (dict(data="[" * 5000 + "]" * 5000, headers=JSON), 400, "malformed_json"),
    }


def test_every_mistake_gets_its_own_4xx_json(url, picture):
    png = samples.encodings(picture[0])["png_L"]
    for name, (kwargs, status, code) in bad_inputs(png).items():
        response = requests.post(url, timeout=30, **kwargs)
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        body = response.json()
        assert check_error(body, response.status_code) == code, (name, body)  # exactly {"error", "message"}
        assert len(body["message"]) > 20 and "Traceback" not in body["message"], name


def test_binary_body_labelled_a_web_form_is_served_through_the_proxy(server, picture):
    """`curl --data-binary @x.png URL` without -H sends application/x-www-form-urlencoded. TorchServe
    0.12's frontend alone tries to decode the binary as a form and fails with its own 500
    ErrorDataDecoderException before any handler runs (pinned on TorchServe itself, so we notice
    if that changes); the proxy passes such bodies on as raw bytes, so the client gets its answer."""
    jpeg = samples.encode(picture[0].convert("RGB"), "JPEG")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    direct = requests.post(f"{server.backend_url}/predictions/lenet5", data=jpeg, headers=form, timeout=30)
    assert (direct.status_code, direct.json().get("type")) == (500, "ErrorDataDecoderException")
    proxied = requests.post(f"{server.inference_url}/predictions/lenet5", data=jpeg, headers=form, timeout=30)
    reference = requests.post(f"{server.inference_url}/predictions/lenet5", data=jpeg,
                              headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert proxied.status_code == 200 and proxied.json() == reference.json()


def test_decompression_bomb_is_refused_from_its_header(url):
    bomb = samples.decompression_bomb()  # valid PNG, 144 Mpx, ~140 KB
    started = time.perf_counter()
    response = requests.post(url, data=bomb, headers={"Content-Type": "image/png"}, timeout=30)
    elapsed = time.perf_counter() - started
    assert response.status_code == 413 and check_error(response.json(), 413) == "image_too_large"
    assert elapsed < 2.0, f"took {elapsed:.2f} s: the pixels were decoded"


def test_body_over_the_size_limit_is_413(server):
    """The proxy refuses it from its Content-Length before reading it, with a JSON 413."""
    conn = http.client.HTTPConnection("127.0.0.1", server.ports.inference, timeout=30)
    body = b"\0" * (LIMITS.max_request_bytes + 1024)
    conn.request("POST", "/predictions/lenet5", body=body, headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    assert response.status == 413
    assert check_error(json.loads(response.read()), 413) == "request_too_large"


# ---- isolation under batching ------------------------------------------------------------------
def test_bad_requests_never_fail_their_batch(server, held_out):
    """Interleaved good and bad requests, concurrent, batching on: every answer checked."""
    data = held_out("lenet5")
    url = f"{server.inference_url}/predictions/lenet5"
    bad = list(bad_inputs(samples.encode(samples.photo_of(data.raw[0]), "PNG")).values())
    jobs = []
    for i in range(96):
        if i % 3 == 2:
            jobs.append(bad[(i // 3) % len(bad)])  # every kind of mistake, in turn
        else:
            png = samples.encode(Image.fromarray(data.raw[i]), "PNG")
            jobs.append((dict(data=png, headers={"Content-Type": "image/png"}), 200, int(data.labels[i])))

    def send(job):
        kwargs, _, _ = job
        return requests.post(url, timeout=30, **kwargs)

    assert all(kind in jobs for kind in bad), "every kind of mistake must be mixed in"
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, jobs))
    good = correct = 0
    for (kwargs, status, expected), response in zip(jobs, answers):
        assert response.status_code == status, (status, response.status_code, response.text[:200])
        if status == 200:
            good += 1
            check_prediction(response.json(), labels_of(response))
            correct += response.json()["index"] == expected
        else:
            assert check_error(response.json(), status) == expected, (expected, response.text[:200])
    assert good == 64 and correct >= 60
    description = requests.get(f"{server.management_url}/models/lenet5", timeout=10).json()[0]
    assert description["batchSize"] > 1
