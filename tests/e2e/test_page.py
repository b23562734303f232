"""The browser page (web/) in a real browser: headless Debian chromium driven by Playwright, against
the session's real TorchServe (tests/conftest.py `server`) on the same origin.

A digit drawn on the canvas with mouse events, a photo dropped, a Fashion-MNIST picture chosen with
the file picker and a text file named .png: each state's screenshot is kept in results/page/.
Without chromium (or Playwright) the tests skip, except under CI (CI set, not "false"), where
`make test` installs it (mk/browser.mk) and a missing browser fails.
"""
from __future__ import annotations

import base64
import os

import numpy as np
import pytest
import requests

from handlers.png import png_bytes
from model_defs.registry import get_spec
from serving import proxy
from serving.api_keys import ApiKeys
from settings.ports import Ports
from tests.support.browser import find_chromium, launch
from tests.support.paths import REPO
from tests.support.sample_images import encode, photo_of
from tests.support.stub_backend import backend_running

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # requirements.txt pins it; a venv without it skips (fails under CI)
    sync_playwright = None

pytestmark = pytest.mark.e2e

WEB = REPO / "web"
SCREENSHOTS = REPO / "results" / "page"
VIEWPORT = {"width": 1100, "height": 900}
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def site_url(browser, request):
    """The session server's public origin: nginx (serving/proxy.py) serves web/ at / and proxies
    /explanations/ to TorchServe, as in the pod. Asked for after `browser`: no server when it skips."""
    yield request.getfixturevalue("server").inference_url + "/"


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    missing = ("Playwright is not installed (requirements.txt)" if sync_playwright is None
               else "no chromium on the PATH (Debian: apt-get install chromium; make test installs it)"
               if executable is None else None)
    if missing:
        if os.environ.get("CI", "false") not in ("", "false"):
            pytest.fail(f"{missing}; CI is set: make test installs chromium (mk/browser.mk), the page must be tested")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture(params=[{"viewport": VIEWPORT}], ids=["desktop"])
def page(browser, site_url, request):
    context = browser.new_context(**request.param)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda request: None if request.url.startswith((site_url, "data:", "blob:" + site_url[:-1]))
            else errors.append(f"request outside the site: {request.url}"))
    page.goto(site_url)
    yield page
    context.close()
    assert not errors, errors  # no script errors, nothing fetched from elsewhere


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def draw(page, strokes) -> None:
    """Mouse strokes on the canvas, points in a 280 x 280 square scaled to the canvas as shown."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=12)
        page.mouse.up()


def draw_with_a_finger(page, strokes) -> None:
    """Touch strokes (Chromium's touch events, which the page gets as pointer events), as draw()."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    touch = page.context.new_cdp_session(page)
    for stroke in strokes:
        for i, (x, y) in enumerate(stroke):
            kind = "touchStart" if i == 0 else "touchMove"
            steps = 1 if i == 0 else 12
            (x0, y0) = stroke[max(i - 1, 0)]
            for step in range(1, steps + 1):
                px, py = x0 + (x - x0) * step / steps, y0 + (y - y0) * step / steps
                touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
                    {"x": box["x"] + px * scale, "y": box["y"] + py * scale}]})
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    touch.detach()


def shown_answer(page) -> dict:
    """What the page shows: the top label, and per chart row its label, probability and bar width."""
    expect(page.locator("#result")).to_be_visible()
    rows = page.eval_on_selector_all("#chart li", """rows => rows.map(row => ({
        label: row.querySelector('.label').textContent,
        probability: Number(row.dataset.probability),
        value: row.querySelector('.value').textContent,
        fraction: row.querySelector('.bar').getBoundingClientRect().width /
                  row.querySelector('.track').getBoundingClientRect().width}))""")
    page.wait_for_function("""['sent', 'canonical', 'saliency'].every(id => {
        const img = document.getElementById(id); return img.complete && img.naturalWidth > 0; })""")
    pictures = page.eval_on_selector_all("#canonical, #saliency", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    return {"label": page.inner_text("#top-label"), "rows": rows, "pictures": pictures}


def check_chart(answer: dict, name: str) -> None:
    spec = get_spec(name)
    rows = answer["rows"]
    assert [row["label"] for row in rows] == list(spec.labels)  # one bar per label, in the model's order
    assert abs(sum(row["probability"] for row in rows) - 1) < 1e-4
    for row in rows:  # each bar as wide as its probability (to a pixel of a ~300-pixel track)
        assert abs(row["fraction"] - row["probability"]) < 0.01, row
    top = max(rows, key=lambda row: row["probability"])
    assert answer["label"] == top["label"]
    height, width = spec.input_size
    assert answer["pictures"] == [[width, height]] * 2  # the model input and its saliency, both loaded


def api_answer(site_url: str, name: str, body: bytes, content_type: str) -> requests.Response:
    """The site's own answer to a body, as the page gets it."""
    return requests.post(f"{site_url}explanations/{name}", data=body,
                         headers={"Content-Type": content_type}, timeout=30)


def test_a_digit_drawn_with_the_mouse_is_read(page):
    page.click("#ask")  # nothing drawn: the page says so without asking the server
    expect(page.locator("#error")).to_contain_text("Nothing drawn yet")

    draw(page, [[(75, 65), (215, 65), (125, 230)]])  # a 7: the bar, then the long diagonal
    page.click("#ask")
    expect(page.locator("#status")).to_contain_text("lenet5 reads your drawing as")
    expect(page.locator("#error")).to_be_hidden()
    answer = shown_answer(page)
    assert answer["label"] == "7", answer
    check_chart(answer, "lenet5")
    screenshot(page, "drawn-7-lenet5")

    page.select_option("#model", "mnist_net")  # a new model asks again about the same drawing
    expect(page.locator("#status")).to_contain_text("mnist_net reads your drawing as")
    answer = shown_answer(page)
    assert answer["label"] == "7", answer
    check_chart(answer, "mnist_net")

    page.click("#clear")
    page.select_option("#model", "lenet5")
    draw(page, [[(150, 40), (138, 245)]])  # a 1, slightly slanted
    page.click("#ask")
    expect(page.locator("#status")).to_contain_text("lenet5 reads your drawing as 1")
    check_chart(shown_answer(page), "lenet5")
    screenshot(page, "drawn-1-lenet5")


@pytest.mark.parametrize("page", [PHONE], ids=["phone"], indirect=True)
def test_a_digit_drawn_with_a_finger_on_a_phone(page):
    page.locator("#pad").scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    draw_with_a_finger(page, [[(125, 40), (80, 165), (215, 165)], [(180, 75), (180, 250)]])  # a 4, two strokes
    assert page.evaluate("window.scrollY") == scrolled  # the finger drew instead of scrolling the page
    page.click("#ask")
    expect(page.locator("#status")).to_contain_text("lenet5 reads your drawing as")
    answer = shown_answer(page)
    assert answer["label"] == "4", answer
    check_chart(answer, "lenet5")
    expect(page.locator("#answer-title")).to_be_in_viewport()  # the page scrolled down to the answer
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["viewport"]["width"]  # no sideways scroll
    screenshot(page, "phone-drawn-4")


def test_a_dropped_photo_is_read(page, site_url, held_out):
    digits = held_out("lenet5")
    for i in range(20):  # the first held-out digit, as a phone photo, that the server itself reads right
        jpeg = encode(photo_of(digits.raw[i], size=(640, 480), box=300, at=(180, 90)).convert("RGB"), "JPEG", quality=90)
        expected = api_answer(site_url, "lenet5", jpeg, "image/jpeg").json()
        if expected["label"] == str(digits.labels[i]):
            break
    else:
        pytest.fail("the server reads none of the first 20 held-out digits' photos right")

    transfer = page.evaluate_handle("""b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "photo.jpg", {type: "image/jpeg"}));
        return transfer; }""", base64.b64encode(jpeg).decode())
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#status")).to_contain_text(f"lenet5 reads photo.jpg as {expected['label']}")
    answer = shown_answer(page)
    check_chart(answer, "lenet5")
    assert [row["probability"] for row in answer["rows"]] == list(expected["probabilities"].values())
    screenshot(page, "dropped-photo")


def test_a_picked_fashion_picture_is_read(page, site_url, held_out):
    clothes = held_out("fashion_mlp")
    png = png_bytes(clothes.raw[0])
    expected = api_answer(site_url, "fashion_mlp", png, "image/png").json()
    page.select_option("#model", "fashion_mlp")
    page.set_input_files("#file", files=[{"name": "item.png", "mimeType": "image/png", "buffer": png}])
    expect(page.locator("#status")).to_contain_text(f"fashion_mlp reads item.png as {expected['label']}")
    answer = shown_answer(page)
    check_chart(answer, "fashion_mlp")
    assert answer["label"] == expected["label"]
    screenshot(page, "picked-fashion")


def test_a_bad_file_gets_the_servers_message(page, site_url):
    body = b"Shopping list: milk, eggs. Not a picture, whatever its name says.\n"
    refused = api_answer(site_url, "lenet5", body, "image/png")
    assert 400 <= refused.status_code < 500, refused.text
    page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": body}])
    expect(page.locator("#error-message")).to_have_text(refused.json()["message"])
    expect(page.locator("#error")).to_contain_text(refused.json()["error"])
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("No answer for this picture.")
    screenshot(page, "bad-file")


def test_the_key_typed_into_the_page_goes_with_each_request(browser, tmp_path):
    """A server that asks for API keys (nginx with a keys file before the stub backend): without a key
    the page shows the 401's message; with the key typed in, the request carries it."""
    keys = ApiKeys()
    key = keys.add("page")
    keys.save(tmp_path / "keys.json")
    ports = Ports.free()
    with backend_running(ports.backend_inference) as backend:
        proxy.start(tmp_path / "proxy", ports, keys_file=tmp_path / "keys.json")
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{ports.inference}/")
            picture = [{"name": "digit.png", "mimeType": "image/png", "buffer": png_bytes(np.full((28, 28), 255, np.uint8))}]
            page.set_input_files("#file", files=picture)
            expect(page.locator("#error-message")).to_contain_text("needs an API key")
            page.fill("#api-key", key)
            page.dispatch_event("#api-key", "change")
            page.set_input_files("#file", files=picture)
            page.wait_for_function("document.body.getAttribute('aria-busy') === null")
            sent = [headers for line, headers in backend.seen if "/explanations/lenet5" in line]
            assert sent and sent[-1]["authorization"] == f"Bearer {key}"
            screenshot(page, "api-key")
            context.close()
        finally:
            proxy.stop(tmp_path / "proxy")
