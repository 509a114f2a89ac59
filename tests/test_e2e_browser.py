"""End to end in a real browser: ``streamlit run app.py`` + headless Chromium (Playwright, sync API).

Compare: a bad upload shows a one-line error and the app stays up; a sample image uploaded from disk gets both
overlays and both gland counts; a long segmentation stops when its browser tab closes (issue #15, item 4).
Annotate: a polygon clicked on the canvas becomes one gland. Train: the form and the device line render.
Screenshots go to ``artifacts/`` (gitignored) for a human look.
Skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.test_app import make_tiny_models

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip
STARTUP_S, RESULT_MS = 120, 300_000  # two shared cores

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt install chromium)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A streamlit server on a free port with tiny models and private folders; yields its URL and the folder
    where its segmentation jobs are made."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ)
    env.pop("GLANDSEG_DATA", None)
    (tmp / "jobs").mkdir()
    env.update(
        GLANDSEG_MODELS=str(make_tiny_models(tmp / "models")), GLANDSEG_RUNS=str(tmp / "runs"),
        GLANDSEG_ANNOTATIONS=str(tmp / "annotations"), GLANDSEG_LOCK_DIR=str(tmp / "locks"), OMP_NUM_THREADS="1",
        GLANDSEG_MEMORY_BUDGET_MB="8192", TMPDIR=str(tmp / "jobs"),  # segmentation jobs' folders land here
    )  # fmt: skip
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115  closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"streamlit did not start: {(tmp / 'streamlit.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url, tmp / "jobs"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1800})
    pg = ctx.new_page()
    pg.set_default_timeout(RESULT_MS)
    yield pg
    ctx.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page) -> None:
    """Until the script has finished running (the status widget's running indicator is gone)."""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")


def test_a_page_url_on_a_fresh_server_goes_through_the_router(server: tuple[str, Path], page) -> None:
    server, _ = server
    # First test on purpose: Streamlit serves /train from pages/ alone until app.py has run once (PR #10276)
    page.goto(f"{server}/train")
    page.get_by_text("Train a model").wait_for()
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Image drill-down").wait_for()
    assert nav.get_by_text("app", exact=True).count() == 0


def test_compare_upload_bad_then_good_image(server: tuple[str, Path], page, tmp_path: Path) -> None:
    server, _ = server
    page.goto(server)
    page.get_by_text("Compare U-Net and Mask R-CNN").wait_for()
    page.locator('[data-testid="stSidebar"]').get_by_text("Upload", exact=True).click()
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]').first
    bad = tmp_path / "not_really.png"
    bad.write_bytes(b"this is a text file, not a PNG\n" * 10)
    uploader.set_input_files(str(bad))
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="not_really.png")
    alert.wait_for()
    assert "not an image" in alert.inner_text() and "Traceback" not in page.content()
    shot(page, "e2e_compare_bad_upload.png")

    uploader.set_input_files(str(REPO / "samples" / "testA_13.png"))
    page.get_by_text("unet: U-Net overlay").wait_for()
    page.get_by_text("maskrcnn: Mask R-CNN overlay").wait_for()
    metrics = page.locator('[data-testid="stMetric"]').filter(has_text="Glands")
    metrics.nth(1).wait_for()
    wait_idle(page)
    assert metrics.count() == 2
    counts = [m.locator('[data-testid="stMetricValue"]').inner_text() for m in metrics.all()]
    assert all(c.strip().isdigit() for c in counts), counts
    assert page.get_by_text("Where the models disagree").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    path = shot(page, "e2e_compare_upload.png")
    assert path.stat().st_size > 10_000


def test_default_sample_with_scores(server: tuple[str, Path], page) -> None:
    server, _ = server
    page.goto(server)
    page.get_by_text("unet: U-Net overlay").wait_for()
    page.locator('[data-testid="stMetric"]').filter(has_text="Object Hausdorff").nth(1).wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "e2e_compare_sample.png")


def test_annotate_polygon_becomes_a_gland(server: tuple[str, Path], page) -> None:
    server, _ = server
    page.goto(f"{server}/annotate")
    page.get_by_text("Annotate glands").wait_for()
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for()
    wait_idle(page)
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 700  # the 775-px sample at full size
    x0, y0 = box["x"], box["y"]
    for dx, dy in (
        (100, 100),
        (220, 110),
        (230, 220),
        (110, 230),
        (100, 100),
    ):  # the last click closes it
        page.mouse.click(x0 + dx, y0 + dy)
        page.wait_for_timeout(300)
    drawn = page.locator('[data-testid="stMetric"]').filter(has_text="Glands drawn")
    drawn.locator('[data-testid="stMetricValue"]').filter(has_text="1").wait_for(timeout=60_000)
    shot(page, "e2e_annotate.png")


def test_train_page_renders(server: tuple[str, Path], page) -> None:
    server, _ = server
    page.goto(f"{server}/train")
    page.get_by_text("Train a model").wait_for()
    page.get_by_text("training runs on").wait_for()
    page.get_by_text("Start training").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "e2e_train.png")


def test_closing_the_tab_stops_a_long_segmentation(
    server: tuple[str, Path], page, tmp_path: Path
) -> None:
    """#15 item 4: the worker of a segmentation still running when its browser tab closes is killed, and its
    memory goes with it (before, inference went on for minutes after the browser closed)."""
    url, jobs = server
    big = tmp_path / "big.png"
    tile = np.asarray(Image.open(REPO / "samples" / "testA_13.png").convert("RGB"))
    Image.fromarray(np.tile(tile, (6, 4, 1))).save(big)  # 3132x3100: many windows, slow enough
    page.goto(url)
    page.get_by_text("Compare U-Net and Mask R-CNN").wait_for()
    page.locator('[data-testid="stSidebar"]').get_by_text("Upload", exact=True).click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(big))
    page.get_by_text("Segmenting big with").first.wait_for()
    deadline = time.time() + 120
    while not list(jobs.glob("glandseg-job-*/worker.pid")) and time.time() < deadline:
        time.sleep(0.5)
    [pid_file] = list(jobs.glob("glandseg-job-*/worker.pid"))
    pid = int(pid_file.read_text())
    assert psutil.pid_exists(pid)
    shot(page, "e2e_compare_long_job.png")
    page.context.close()  # the tab goes away mid-job
    deadline = time.time() + 60
    while (
        psutil.pid_exists(pid)
        and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        and time.time() < deadline
    ):
        time.sleep(0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not pid_file.parent.exists()  # the job's folder is cleaned up too
