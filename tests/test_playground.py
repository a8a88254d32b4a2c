"""The generation playground at / of the pipeline, driven in a real headless browser against
the five real services on the shipped models."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.browser import screenshot


@pytest.fixture()
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    pg = context.new_page()
    pg.goto(stack["pipeline"].url + "/")
    pg.wait_for_selector("body[data-ready='1']", timeout=15_000)
    yield pg
    context.close()


def _slider(page, name):
    return page.locator(f"#conditions .condition[data-name='{name}'] input.lo")


def test_the_page_and_its_config_are_served(stack):
    url = stack["pipeline"].url
    r = httpx.get(url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "playground" in r.text
    cfg = httpx.get(url + "/playground/config.json").json()
    assert cfg["conditions"] == ["eyes", "mouth", "hair_color", "background", "head"] and cfg["max_faces"] >= 1
    assert httpx.get(url + "/playground/../service.py").status_code == 404
    assert httpx.get(url + "/playground/nothing.js").status_code == 404
    assert httpx.get(url + "/readyz").status_code == 200  # the API's own routes are untouched


def test_generate_shows_the_faces_and_what_was_measured(page):
    page.fill("#count", "6")
    page.fill("#seed", "11")
    with page.expect_response("**/generate") as resp:
        page.click("#generate")
    assert resp.value.status == 200
    faces = page.locator("#grid .face img")
    faces.first.wait_for()
    assert faces.count() == 6
    sizes = page.eval_on_selector_all("#grid .face img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes == [[64, 64]] * 6
    page.locator("#grid .face").nth(1).click()
    details = page.locator("#details").inner_text()
    for word in ("requested", "measured", "error", "realness after", "P(female)", "eyes", "head"):
        assert word in details, details
    screenshot(page, "playground")


def test_moving_a_slider_changes_the_request(page):
    request_text = page.locator("#request")
    page.locator("#request").evaluate("e => e.parentElement.open = true")
    assert '"eyes": 0.5' in request_text.inner_text()
    slider = _slider(page, "eyes")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert slider.input_value() == "0.65"
    assert '"eyes": 0.65' in request_text.inner_text()
    page.select_option("#conditions .condition[data-name='mouth'] select.mode", "any")
    assert '"mouth"' not in request_text.inner_text()
    page.fill("#count", "1")
    with page.expect_request("**/generate") as req:
        page.click("#generate")
    sent = req.value.post_data_json
    assert sent["conditions"]["eyes"] == pytest.approx(0.65) and "mouth" not in sent["conditions"]
    assert sent["count"] == 1


def test_an_api_error_is_shown_as_the_api_words_it(page, stack):
    page.fill("#count", "100000")
    page.click("#generate")
    error = page.locator("#error")
    error.wait_for(state="visible")
    api = httpx.post(stack["pipeline"].url + "/generate", json={"count": 100000})
    assert 400 <= api.status_code < 500
    shown = error.inner_text()
    answer = api.json()  # the service's limit (its config), in the service's words
    assert shown.startswith(str(api.status_code)) and answer["error"] in shown and "count" in shown, shown
    page.fill("#count", "300")
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent.includes('300')")
    assert "count must be in [1, " in error.inner_text()  # the pipeline's own words
    assert page.locator("#grid .face").count() == 0


def test_sweep_draws_one_face_per_step(page):
    page.select_option("#sweep-condition", "head")
    page.fill("#sweep-steps", "3")
    page.click("#sweep")
    page.wait_for_function("document.querySelectorAll('#grid .face').length === 3", timeout=60_000)
    captions = page.locator("#grid .face figcaption").all_inner_texts()
    assert captions == ["head 0.00", "head 0.50", "head 1.00"]


def test_upload_a_face_and_edit_it(page, synth_root):
    face = sorted((synth_root / "Female").iterdir())[0]
    page.set_input_files("#edit-file", str(face))
    page.locator("#conditions .condition[data-name='eyes'] input.change").check()
    with page.expect_response("**/edit") as resp:
        page.click("#edit-run")
    assert resp.value.status == 200
    edited = page.locator("#edit-result img[alt='edited face']")
    edited.wait_for()
    src = edited.get_attribute("src")
    import base64

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    assert img.shape == (64, 64, 3)
    assert "measured after" in page.locator("#edit-result").inner_text()
    page.locator("#conditions .condition[data-name='eyes'] input.change").uncheck()
    page.click("#edit-run")
    page.locator("#error").wait_for(state="visible")
    assert "say which condition" in page.locator("#error").inner_text()
