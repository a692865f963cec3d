"""The clinicians' page at ``/`` in Debian's headless chromium, driven by Playwright, against a
real uvicorn server with the release vision model and a small real literature index.

Chromium is a system package: ``scripts/test.sh`` installs it (``apt-get install -y
chromium``) when it is missing and it can. Without it these tests fail under CI (``CI``
set) and are skipped elsewhere, each saying why.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from tests.service.conftest import UPLOAD_LIMIT

pytestmark = [pytest.mark.data, pytest.mark.slow]

Br35h = Callable[[int], Path]

VIEWPORT: ViewportSize = {"width": 1280, "height": 1000}
TIMEOUT_MS = 90_000  # analyses and chat answers on a loaded 2-core machine
# Where to keep a copy of the screenshot, under 300 KB (the README's docs/page.png).
SAVE_SCREENSHOT_ENV = "ASSISTANT_PAGE_SCREENSHOT"


def chromium_executable() -> str:
    """Debian's chromium; a clear failure under CI, a skip elsewhere, when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = ("Debian's chromium is not installed: run `apt-get install -y chromium` (as root, "
           "scripts/test.sh does it) to run the page tests")
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser, indexed_server: str) -> Iterator[Page]:
    """A fresh page at ``/``; console errors (CSP violations among them) fail the test."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser logs every 4xx fetch; the error tests cause some on purpose.
        if message.type == "error" and "status of 4" not in message.text:
            errors.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    response = tab.goto(f"{indexed_server}/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    tab.get_by_text("Service ready").wait_for()
    yield tab
    context.close()
    assert errors == [], errors


def _analyse(page: Page, image: Path, indication: str = "", age: str = "",
             sex: str = "") -> None:
    page.get_by_label("Image (PNG, JPEG or DICOM)").set_input_files(str(image))
    page.get_by_label("Indication (optional)").fill(indication)
    page.get_by_label("Age in years (optional)").fill(age)
    page.get_by_label("Sex (optional)").select_option(sex)
    page.get_by_role("button", name="Analyse").click()


def _ask(page: Page, question: str, answers: int) -> str:
    """Send ``question`` and wait for the ``answers``-th complete answer; its text."""
    page.get_by_label("Question").fill(question)
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#chat-log li.assistant .text").nth(answers - 1)
    page.wait_for_function(
        "n => { const a = document.querySelectorAll('#chat-log li.assistant .text')[n];"
        " return a && /\\(conversation page-[0-9a-f]+\\)/.test(a.textContent); }",
        arg=answers - 1)
    return answer.inner_text()


def test_analyse_then_chat(page: Page, br35h: Br35h, tmp_path: Path) -> None:
    _analyse(page, br35h(1), indication="headache", age="61", sex="male")
    expect(page.locator("#result")).to_be_visible()

    # The diagnosis: label, calibrated probability against its threshold, in scope.
    expect(page.locator("#dx-label")).to_have_text("tumour")
    probability = float(page.locator("#dx-probability").inner_text().split()[0])
    threshold = float(page.locator("#dx-threshold").inner_text())
    assert 0.0 <= threshold <= probability <= 1.0
    expect(page.locator("#dx-scope")).to_have_text("yes")
    expect(page.locator("#notice")).to_contain_text("draft", ignore_case=True)

    # The heatmap <img> has loaded a non-empty picture.
    heatmap = page.get_by_alt_text("Attention heatmap laid over the uploaded image")
    expect(heatmap).to_be_visible()
    size = heatmap.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert size[0] is True and size[1] > 0 and size[2] > 0, size

    # The drafted report and the citations (citation string, snippet, link).
    assert page.locator("#report-findings").inner_text().strip()
    assert page.locator("#report-impression").inner_text().strip()
    expect(page.get_by_text("Draft for a clinician to review")).to_be_visible()
    citations = page.locator("#citations li")
    assert citations.count() >= 1
    first = citations.first
    assert re.match(r"https?://", first.locator("a").get_attribute("href") or "")
    assert first.locator("a").inner_text().strip()
    assert first.locator("blockquote").inner_text().strip()

    # Chat about the study: the first question carries the image, the follow-up does not.
    where = _ask(page, "Where is the finding?", 1)
    assert where.startswith("Draft for a clinician") and "study" in where
    sure = _ask(page, "How sure is the model?", 2)
    assert "probability" in sure.lower()
    assert page.locator("#chat-error").is_hidden()

    _check_screenshot(page, tmp_path / "page.png")


def _check_screenshot(page: Page, path: Path) -> None:
    """The screenshot has the viewport's size, is not blank, and the heatmap is coloured."""
    page.locator("#result").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    shot = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None, f"{path} is not a PNG"
    assert shot.shape == (VIEWPORT["height"], VIEWPORT["width"], 3)
    assert float(shot.std()) > 20.0, "the screenshot is blank"
    box = page.locator("#heatmap").bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50
    x0, y0 = int(box["x"]), int(box["y"])
    region = shot[y0:y0 + int(box["height"]), x0:x0 + int(box["width"])]
    saturation = cv2.cvtColor(region, cv2.COLOR_BGR2HSV)[..., 1]
    coloured = float((saturation > 80).mean())
    assert coloured > 0.05, f"the heatmap region is not coloured ({coloured:.3f})"
    # The rest of the page is greys and a few accents: the colour comes from the heatmap.
    page_saturation = cv2.cvtColor(shot, cv2.COLOR_BGR2HSV)[..., 1]
    assert coloured > 3 * float((page_saturation > 80).mean())
    keep = os.environ.get(SAVE_SCREENSHOT_ENV)
    if keep:
        _save_small(shot, Path(keep))


def _save_small(shot: np.ndarray, path: Path, limit: int = 300_000) -> None:
    """``shot`` as a PNG under ``limit`` bytes, scaled down until it fits."""
    scale = 1.0
    while True:
        size = (round(shot.shape[1] * scale), round(shot.shape[0] * scale))
        small = shot if scale == 1.0 else cv2.resize(shot, size, interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        if png.nbytes < limit or scale < 0.3:
            path.write_bytes(png.tobytes())
            return
        scale *= 0.9


def test_unsupported_file_shows_the_415_message(page: Page, indexed_server: str,
                                                tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    expected = httpx.post(f"{indexed_server}/v1/analyze",
                          files={"file": ("notes.txt", notes.read_bytes())}, timeout=60)
    assert expected.status_code == 415
    _analyse(page, notes)
    error = page.get_by_role("alert").filter(has_text="Error 415")
    expect(error).to_be_visible()
    expect(error).to_contain_text(expected.json()["error"]["message"])
    expect(page.locator("#result")).to_be_hidden()


def test_invalid_context_shows_the_422_message(page: Page, br35h: Br35h) -> None:
    _analyse(page, br35h(0), age="200")
    error = page.get_by_role("alert").filter(has_text="Error 422")
    expect(error).to_be_visible()
    expect(error).to_contain_text("age")


def test_every_control_has_a_label(page: Page) -> None:
    unlabelled = page.evaluate(
        "() => Array.from(document.querySelectorAll('input, select, textarea'))"
        ".filter(e => e.labels.length === 0).map(e => e.id)")
    assert unlabelled == []


def test_page_files_and_headers(indexed_server: str) -> None:
    for path, kind in (("/", "text/html"), ("/static/page.js", "text/javascript"),
                       ("/static/page.css", "text/css")):
        response = httpx.get(f"{indexed_server}{path}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    html = httpx.get(f"{indexed_server}/").text
    assert "http://" not in html and "https://" not in html  # nothing from outside
    for missing in ("/static/secret.py", "/static/..%2Fpage.py", "/static/app.py"):
        response = httpx.get(f"{indexed_server}{missing}")
        assert response.status_code == 404 and "error" in response.json()


def test_too_large_file_shows_the_413_message(page: Page, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(UPLOAD_LIMIT + 100_000))
    _analyse(page, big)
    error = page.get_by_role("alert").filter(has_text="Error 413")
    expect(error).to_be_visible()
    expect(error).to_contain_text("exceeds the limit")


def _chat_bodies(page: Page) -> list[dict[str, object]]:
    """The JSON bodies of the page's chat requests, as they are sent."""
    import json

    bodies: list[dict[str, object]] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/v1/chat/completions") else None)
    return bodies


def test_an_answer_stays_with_the_study_it_was_asked_about(page: Page, br35h: Br35h) -> None:
    """A slow answer to a question about one study arrives after the next study was
    analysed: it must not enter the new study's conversation, whose first question then
    carries the new image."""
    held = []
    page.route("**/v1/chat/completions", lambda route: held.append(route))
    _analyse(page, br35h(1))
    expect(page.locator("#chat")).to_be_visible()
    page.get_by_label("Question").fill("Where is the finding?")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function("() => document.getElementById('chat-button').disabled")
    _analyse(page, br35h(0))  # the clinician moves on while the answer is slow
    page.wait_for_function("() => !document.getElementById('analyze-button').disabled")
    expect(page.locator("#chat")).to_be_visible()
    page.unroute("**/v1/chat/completions")
    for route in held:  # the first answer goes on, unless the page gave it up
        with suppress(PlaywrightError):  # "already handled": the page aborted it
            route.continue_()
    bodies = _chat_bodies(page)
    _ask(page, "Is there a tumour?", 1)
    (body,) = bodies
    messages = body["messages"]
    assert isinstance(messages, list) and len(messages) == 1  # no other study's turns
    assert any(part.get("type") == "image_url" for part in messages[0]["content"])
    assert page.locator("#chat-log li.assistant").count() == 1


def test_enter_twice_sends_one_question(page: Page, br35h: Br35h) -> None:
    _analyse(page, br35h(1))
    expect(page.locator("#chat")).to_be_visible()
    bodies = _chat_bodies(page)
    question = page.get_by_label("Question")
    question.fill("Where is the finding?")
    question.press("Enter")
    question.press("Enter")
    page.wait_for_function("() => !document.getElementById('chat-button').disabled")
    assert len(bodies) == 1 and page.locator("#chat-log li.user").count() == 1


def test_no_sideways_scroll_on_a_phone(browser: Browser, indexed_server: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 812})
    try:
        tab = context.new_page()
        tab.goto(f"{indexed_server}/")
        width = tab.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, width
    finally:
        context.close()
