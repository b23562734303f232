"""POST /explanations/<model> through a real TorchServe (tests/conftest.py `server`): the
prediction plus its saliency, the same 4xx as /predictions/, and explanations batched with
predictions leave the predictions' answers alone."""
from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from handlers.contract import check_error, check_explanation, check_prediction
from handlers.png import png_bytes
from model_defs.registry import MODELS, get_spec

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", list(MODELS))
def test_explanations_answer_with_the_prediction_and_saliency(server, held_out, name):
    body = png_bytes(held_out(name).raw[0])
    headers = {"Content-Type": "image/png"}
    predicted = requests.post(f"{server.inference_url}/predictions/{name}", data=body, headers=headers, timeout=30)
    explained = requests.post(f"{server.inference_url}/explanations/{name}", data=body, headers=headers, timeout=30)
    assert explained.status_code == 200, explained.text
    assert explained.headers["content-type"].startswith("application/json")
    answer = explained.json()
    assert {k: answer[k] for k in predicted.json()} == predicted.json()
    height, width = get_spec(name).input_size
    check_explanation(answer, get_spec(name).labels, (height, width), model=name)  # saliency H x W, 2 PNGs
    for key in ("saliency_png", "canonical_png"):
        assert Image.open(io.BytesIO(base64.b64decode(answer[key]))).size == (width, height)


def test_explanations_refuse_like_predictions_and_mix_with_them(server, held_out):
    raw = held_out("lenet5").raw
    url = server.inference_url
    for body, content_type in [(b"not an image", "image/png"), (b'{"image": "%%%"}', "application/json")]:
        answers = [requests.post(f"{url}/{api}/lenet5", data=body, headers={"Content-Type": content_type},
                                 timeout=30) for api in ("predictions", "explanations")]
        assert answers[0].status_code == answers[1].status_code and 400 <= answers[0].status_code < 500
        assert answers[0].json() == answers[1].json()
        check_error(answers[1].json(), answers[1].status_code)

    def post(i):
        api = "explanations" if i % 2 else "predictions"
        return api, requests.post(f"{url}/{api}/lenet5", data=png_bytes(raw[i]), headers={"Content-Type": "image/png"},
                                  timeout=30)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(32)))
    assert all(r.status_code == 200 for _, r in results), [r.text for _, r in results if r.status_code != 200][:2]
    labels = get_spec("lenet5").labels
    for api, r in results:  # exact fields: saliency in every explanation and in no prediction
        (check_explanation if api == "explanations" else check_prediction)(r.json(), labels)
