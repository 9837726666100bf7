"""The web page in Debian's Chromium (Playwright, headless) against a real uvicorn server.

Skipped, with the reason, where /usr/bin/chromium or Playwright is missing (CI installs both:
``apt-get install chromium``, ``pip install playwright``; never ``playwright install``).
The screenshots land under tmp_path and are copied to tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from mvpt.serve import create_app

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def served_index(demo) -> tuple[Path, dict]:
    """(index_dir, keyword arguments for create_app) the server runs on: the real pipeline over
    the demo fixture's music index (its trained MVPt run), or over ``MVPT_SERVE_INDEX=DIR``."""
    if os.environ.get("MVPT_SERVE_INDEX"):
        return Path(os.environ["MVPT_SERVE_INDEX"]), {}
    return Path(demo["index"]), {}


@pytest.fixture(scope="module")
def server_url(served_index, tmp_path_factory):
    """uvicorn in a thread on a free loopback port; stopped (and its work folder removed) after."""
    import uvicorn

    index_dir, options = served_index
    work_dir = tmp_path_factory.mktemp("work")
    app = create_app(index_dir, work_dir=work_dir, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
    assert list(work_dir.iterdir()) == [], "the server left temporary files behind"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def query_video(tmp_path_factory) -> Path:
    from mvpt.data.synth import generate_video

    folder = tmp_path_factory.mktemp("query")
    factors = generate_video(folder, index=3, seed=5, duration_s=6.0, size=(320, 180))
    return folder / "videos" / f"{factors['id']}.mp4"


@pytest.fixture
def page(browser, server_url):
    """A 1280x800 page on the server that records console errors and every URL it requests."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_errors, page.requested = [], []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(server_url)
    page.wait_for_function("() => /\\d+ tracks/.test(document.getElementById('index-status').textContent)")
    yield page
    context.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)
    return path


def test_upload_rank_play_and_preview(page, query_video, server_url, served_index, tmp_path):
    page.set_input_files("#video-input", str(query_video))
    assert page.locator("#submit-button").is_enabled()
    page.click("#submit-button")
    expected = min(10, page.evaluate("() => fetch('/api/health').then(r => r.json())")["tracks"])
    page.wait_for_selector(f"#results li.result >> nth={expected - 1}", timeout=WAIT_MS)
    ranks = page.locator("#results .rank").all_text_contents()
    assert ranks == [str(rank) for rank in range(1, expected + 1)]
    assert page.locator("#error").is_hidden()

    # Each <audio> starts at its track's offset; the one with the latest offset plays from there.
    offsets = _audio_offsets(page)
    assert len(offsets) == expected
    assert all(offset >= 0 for offset in offsets)
    index = offsets.index(max(offsets))
    audio = page.locator("#results audio").nth(index)
    audio.evaluate("a => new Promise(r => a.readyState >= 1 ? r() : a.addEventListener('loadedmetadata', r))")
    page.wait_for_function("([a, t]) => Math.abs(a.currentTime - t) < 0.3", arg=[audio.element_handle(), offsets[index]])
    audio.evaluate("a => a.play()")
    page.wait_for_function("([a, t]) => !a.paused && a.currentTime > t + 0.1 && !a.error",
                           arg=[audio.element_handle(), offsets[index]], timeout=WAIT_MS)

    # The preview: the video plays, with picture and with (decoded) sound under it.
    page.locator("#results .preview-button").first.click()
    page.wait_for_function(
        "() => { const v = document.getElementById('preview');"
        " return v.src.includes('/api/previews/') && !v.paused && v.currentTime > 0.5 && !v.error"
        " && v.videoWidth > 0 && v.webkitAudioDecodedByteCount > 0; }", timeout=WAIT_MS)
    assert page.locator("#results li.result").first.get_attribute("class").split() == ["result", "current"]
    assert "rank 1" in page.locator("#preview-caption").text_content()

    save_screenshot(page, tmp_path, "browser.png")
    assert page.console_errors == []
    outside = [url for url in page.requested if not url.startswith((server_url, "blob:", "data:"))]
    assert outside == [], "the page must not reach outside the server"


def _audio_offsets(page) -> list[float]:
    """The offsets (s) each result's <audio> carries in its #t= media fragment."""
    sources = page.locator("#results audio").evaluate_all("list => list.map(a => a.getAttribute('src'))")
    return [float(src.split("#t=")[1]) for src in sources]


def test_api_errors_are_shown_in_the_page(page, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are notes, not a video\n" * 20)
    page.set_input_files("#video-input", str(fake))
    page.click("#submit-button")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert "'notes.mp4' is not a media file" in error.text_content()
    assert page.locator("#progress").is_hidden()
    assert page.locator("#submit-button").is_enabled()


def test_narrow_screen_has_no_sideways_scroll(page, query_video, tmp_path):
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_input_files("#video-input", str(query_video))
    page.click("#submit-button")
    page.wait_for_selector("#results li.result", timeout=WAIT_MS)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1]
    boxes = [page.locator(sel).bounding_box() for sel in ("#query-title", "#preview-title", "#results-title")]
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]  # one column, in reading order
    save_screenshot(page, tmp_path, "browser-narrow.png")
