"""End to end in a real browser: ``streamlit run app.py`` + headless Chromium (Playwright, sync API), with the
shipped models (``trained_models/``) and the kept segmentations of the bundled samples (``cache/``, computed by
the server's first page run when missing: the first run of this file takes minutes, later ones about two).

Issue #14's flows, with screenshots in ``artifacts/screenshots/`` (gitignored) for a human look:
arrive (a bundled test sample with both models' results, first paint timed) and upload on the page's own drop
zone; a long job with its progress bar (step, time left) and Cancel; the outcome view with a merge; a U-Net
prediction corrected into an annotation (split, erase, merge, save). Also (issue #15): a bad upload is one line,
a long segmentation stops when its tab closes, page URLs go through the router, Annotate's polygon, Train.
Skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import contextlib
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

from glandseg_core.imaging.io import read_image, read_label_map
from glandseg_dashboard import label_edits

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "screenshots"
MODELS = REPO / "trained_models"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip
STARTUP_S, RESULT_MS = 120, 300_000  # two shared cores

# The browser flows take minutes with the shipped models on two cores and wait on a real Chromium: they run
# with --runbrowser (bash scripts/run_tests.sh --runbrowser), not in the default suite.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt install chromium)"
    ),
    pytest.mark.skipif(
        not all((MODELS / r / "weights.pt").is_file() for r in ("unet", "maskrcnn")),
        reason="the shipped models are missing",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(tmp: Path, cache: Path) -> Iterator[tuple[str, float]]:
    """A streamlit server on a free port with the shipped models, the kept segmentations in ``cache`` and
    private folders in ``tmp`` otherwise (its segmentation jobs' folders in ``tmp/jobs``); yields its URL and
    the seconds it took to answer its health check."""
    env = dict(os.environ)
    env.pop("GLANDSEG_DATA", None)
    (tmp / "jobs").mkdir(exist_ok=True)
    env.update(
        GLANDSEG_MODELS=str(MODELS), GLANDSEG_RUNS=str(tmp / "runs"), GLANDSEG_CACHE=str(cache),
        GLANDSEG_ANNOTATIONS=str(tmp / "annotations"), GLANDSEG_LOCK_DIR=str(tmp / "locks"),
        GLANDSEG_MEMORY_BUDGET_MB="8192", TMPDIR=str(tmp / "jobs"),  # segmentation jobs' folders land here
    )  # fmt: skip
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115  closed below
    t0 = time.monotonic()
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
            time.sleep(0.2)
        yield url, time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server with the repository's kept segmentations (``cache/``); yields its URL and the folder where its
    segmentation jobs are made."""
    tmp = tmp_path_factory.mktemp("e2e")
    with streamlit_server(tmp, REPO / "cache") as (url, _):
        yield url, tmp / "jobs"


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
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
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
    uploader = page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first
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
    shot(page, "e2e_compare_upload.png")
    deadline = (
        time.monotonic() + 30
    )  # once, in a full run, a rerun after idle briefly had no results drawn
    while metrics.count() != 2:
        assert time.monotonic() < deadline, f"{metrics.count()} Glands metrics"
        page.wait_for_timeout(300)
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
    page.get_by_text("Add: polygon").click()
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
    page.locator(
        '[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]'
    ).first.set_input_files(str(big))
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
    deadline = time.time() + 10
    while pid_file.parent.exists() and time.time() < deadline:
        time.sleep(0.2)  # removed once the killed worker is reaped
    assert not pid_file.parent.exists()  # the job's folder is cleaned up too


# ------------------------------------------------------------------------------ issue #14: the four flows


def overlays_shown(page) -> None:
    page.get_by_text("unet: U-Net overlay").first.wait_for()
    page.get_by_text("maskrcnn: Mask R-CNN overlay").first.wait_for()
    page.locator('[data-testid="stMetric"]').filter(has_text="Object Hausdorff").nth(1).wait_for()


def test_flow_arrive_on_a_sample_with_results_then_upload(server: tuple[str, Path], browser) -> None:
    """#14: Compare opens on a bundled test sample with both models' results (first paint timed on a warm
    server), and the drop zone is on the page itself."""
    url, jobs = server
    warm = browser.new_context(viewport={"width": 1440, "height": 1800})
    pg = warm.new_page()
    pg.set_default_timeout(RESULT_MS)
    pg.goto(url)
    overlays_shown(pg)  # the samples' results: from cache/, or computed now (the first run only)
    warm.close()
    deadline = time.monotonic() + 600
    while list(jobs.glob("glandseg-job-*")) and time.monotonic() < deadline:
        time.sleep(1)  # the other samples' results, computed in the background at the first run
    time.sleep(2)
    ctx = browser.new_context(viewport={"width": 1440, "height": 1800})
    page = ctx.new_page()
    page.set_default_timeout(RESULT_MS)
    t0 = time.monotonic()
    page.goto(url)
    overlays_shown(page)
    first_paint = time.monotonic() - t0
    (ARTIFACTS / "first_paint.txt").write_text(f"{first_paint:.2f} s\n")
    print(f"warm first paint of Compare: {first_paint:.2f} s")
    wait_idle(page)
    main = page.locator('[data-testid="stMain"]')
    assert main.locator('[data-testid="stFileUploaderDropzone"]').count() == 1
    assert "testA_1" in main.inner_text() and "more than half" in main.inner_text()
    shot(page, "flow1_arrival.png")
    assert (
        first_paint < 30
    )  # the target is 5 s on two idle cores (report the measured time); shared machine
    main.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(REPO / "samples" / "testB_2.png")
    )
    page.get_by_text("**testB_2**").or_(page.get_by_text("testB_2", exact=True)).first.wait_for()
    page.get_by_text("unet: U-Net overlay").first.wait_for()  # scores only with a ground truth
    page.get_by_text("maskrcnn: Mask R-CNN overlay").first.wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("unet: U-Net overlay").count() == 1  # testA_1's results are gone
    shot(page, "flow1_uploaded.png")
    ctx.close()


def test_flow_long_job_shows_progress_and_cancels_in_seconds(
    server: tuple[str, Path], page, tmp_path: Path
) -> None:
    """#14: a progress bar names the model, the window and the time left; Cancel kills the worker at once and
    the previous image's results are gone from under the new title."""
    url, jobs = server
    big = tmp_path / "wide.png"
    Image.fromarray(np.tile(read_image(REPO / "samples" / "testA_1.png"), (3, 4, 1))).save(
        big
    )  # 3100x1566: two Mask R-CNN windows of up to 2048 px
    page.goto(url)
    overlays_shown(page)
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(big)
    )
    bar = page.locator('[data-testid="stProgress"]')
    bar.filter(has_text="Mask R-CNN (model 2 of 2): window").wait_for()  # the Mask R-CNN's windows
    assert page.get_by_text("unet: U-Net overlay").count() == 0  # testA_1's results were cleared
    assert page.get_by_text("Where the models disagree").count() == 0  # all of them, greyed or not
    assert page.get_by_text("testA_1_anno.png").count() == 0
    gt = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(
        has_text="Ground truth"
    )
    assert gt.count() == 1  # #22 item 7: no second, greyed selector of the previous image during the run
    text = bar.inner_text()
    assert "wide with Mask R-CNN (model 2 of 2)" in text and "left" in text
    shot(page, "flow2_progress.png")
    [pid_file] = list(jobs.glob("glandseg-job-*/worker.pid"))
    pid = int(pid_file.read_text())
    t0 = time.monotonic()
    page.get_by_role("button", name="Cancel").click()
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - t0 < 10, "the worker still runs 10 s after Cancel"
        time.sleep(0.05)
    cancel_s = time.monotonic() - t0
    (ARTIFACTS / "cancel.txt").write_text(f"{cancel_s:.2f} s\n")
    print(f"Cancel to worker gone: {cancel_s:.2f} s")
    page.get_by_text("Segmentation cancelled").wait_for()
    page.get_by_role("button", name="Run the models again").wait_for()
    wait_idle(page)
    shot(page, "flow2_cancelled.png")
    assert cancel_s < 10  # 1-2 s on an idle machine; the printed time is the one to report


def test_flow_outcome_view_shows_a_merge(server: tuple[str, Path], page) -> None:
    """#14: testA_1 with its annotation, coloured by outcome: the merges are named and drawn as such."""
    url, _ = server
    page.goto(url)
    overlays_shown(page)
    page.get_by_text("Merges").first.wait_for()
    wait_idle(page)
    assert "covers true glands" in page.locator('[data-testid="stMain"]').inner_text()
    assert page.get_by_text("merge: one prediction over several glands").count() >= 1
    page.get_by_text("unet: U-Net overlay").scroll_into_view_if_needed()
    shot(page, "flow3_outcome_merge.png")


def unet_labels() -> np.ndarray:
    """The U-Net's testA_1 label map the server shows (its kept result: on disk, else shipped)."""
    from glandseg_dashboard import diskcache, shipped

    image = read_image(REPO / "samples" / "testA_1.png")
    model = MODELS / "unet"
    image_id = diskcache.digest(image)
    hit = diskcache.load(diskcache.key(str(model), False, None, image_id)) or shipped.load(
        model, image_id
    )
    assert hit is not None, "the U-Net's testA_1 result is neither in cache/ nor shipped"
    return hit[0]


def a_cut(labels: np.ndarray) -> tuple[int, int, int]:
    """(column, top row, bottom row) of a vertical line that splits the largest gland."""
    gid = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(labels == gid)
    middle = (cols.min() + cols.max()) / 2
    for c in sorted(
        np.linspace(cols.min() + 10, cols.max() - 10, 15).astype(int), key=lambda c: abs(c - middle)
    ):
        top, bottom = max(0, rows.min() - 8), min(labels.shape[0] - 1, rows.max() + 8)
        cut = label_edits.split_along(labels, np.array([[top, c], [bottom, c]]))
        if len(np.unique(cut)) > len(np.unique(labels)):
            return int(c), int(top), int(bottom)
    raise AssertionError("no vertical cut splits the largest gland")


def inside(labels: np.ndarray, gid: int) -> tuple[int, int]:
    """(row, col) of the pixel of gland ``gid`` farthest from its border (a safe place to click)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(labels == gid, 1))[
        1:-1, 1:-1
    ]  # the image's edge is a border
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


def glands_drawn(page) -> int:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Glands drawn")
    return int(metric.locator('[data-testid="stMetricValue"]').inner_text())


def wait_glands(page, test, timeout_s: float = 120) -> int:
    """Until the "Glands drawn" count passes ``test``; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            n = glands_drawn(page)
            if test(n):
                return n
        except (ValueError, Exception):  # noqa: BLE001  between reruns the metric may be missing
            n = -1
        assert time.monotonic() < deadline, f"Glands drawn is {n}"
        page.wait_for_timeout(300)


def test_flow_prediction_corrected_into_an_annotation(server: tuple[str, Path], page) -> None:
    """#14: start from the U-Net's prediction, cut a merged gland, erase one, merge two, save."""
    url, _ = server
    labels = unet_labels()
    n0 = len(np.unique(labels)) - 1
    page.goto(f"{url}/annotate")
    page.get_by_text("Annotate glands").wait_for()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Start from").click()
    page.get_by_role("option", name="Prediction of unet").click()
    wait_glands(page, lambda n: n == n0)
    canvas = page.locator("canvas.upper-canvas").first
    wait_idle(page)
    box = canvas.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + 0.5, box["y"] + 0.5  # image pixel (r, c) centre is canvas (c + 0.5, r + 0.5)
    shot(page, "flow4_start.png")

    page.get_by_text("Split: draw a cut").click()
    wait_idle(page)
    c, top, bottom = a_cut(labels)
    page.mouse.move(x0 + c, y0 + top)
    page.mouse.down()
    for r in np.linspace(top, bottom, 25):
        page.mouse.move(x0 + c, y0 + r)
    page.mouse.up()
    n1 = wait_glands(page, lambda n: n > n0)
    wait_idle(page)
    shot(page, "flow4_split.png")

    split = label_edits.split_along(labels, np.array([[top, c], [bottom, c]]))
    pieces = [
        int(g) for g in np.unique(split[labels == labels[split != labels][0]]) if g
    ]  # the cut gland
    sizes = np.bincount(split.ravel())
    sizes[[0, *pieces]] = 0
    small = int(np.argmax(sizes))  # erase the largest other gland, a visible change
    r, c = inside(split, small)
    page.get_by_text("Erase", exact=True).click()
    wait_idle(page)
    page.mouse.click(x0 + c, y0 + r)
    wait_glands(page, lambda n: n == n1 - 1)
    wait_idle(page)
    shot(page, "flow4_erased.png")

    # the app's own label map now (a freehand stroke is smoothed: its cut may differ from the straight line)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download").click()
    rest = read_label_map(dl.value.path())
    cut_gland = labels == labels[split != labels][0]
    ids = [
        int(g) for g in np.argsort(np.bincount(rest[cut_gland], minlength=rest.max() + 1))[::-1] if g
    ][:2]
    page.get_by_text("Merge", exact=True).first.click()
    wait_idle(page)
    clicked = page.get_by_text("Clicked glands")
    for k, g in enumerate(ids):
        r, c = inside(rest, g)
        page.mouse.click(x0 + c, y0 + r)
        wait_idle(page)  # as a user does: the caption names the gland before the next click
        deadline = time.monotonic() + 30
        while (
            len(clicked.inner_text().split(":")[1].split(",")) < k + 1 or "none" in clicked.inner_text()
        ):
            assert time.monotonic() < deadline, clicked.inner_text()
            page.wait_for_timeout(300)
    merge = page.get_by_role("button", name="Merge")
    deadline = time.monotonic() + 60
    while not merge.is_enabled():  # two glands clicked
        assert time.monotonic() < deadline, page.get_by_text("Clicked glands").inner_text()
        page.wait_for_timeout(300)
    merge.click()
    wait_glands(page, lambda n: n == n1 - 2)
    wait_idle(page)
    shot(page, "flow4_merged.png")
    page.get_by_role("button", name="Save to set").click()
    page.get_by_text(f"({n1 - 2} glands) in").wait_for()
    shot(page, "flow4_saved.png")


# ------------------------------------------------------------------------------ issue #22: the dashboard's waits

WAITS = REPO / "benchmarks" / "results_dashboard_waits.txt"
TARGETS = {
    "first_visit": 10.0,
    "upload_warm": 4.0,
    "pixel_size": 5.0,
}  # seconds (issue #22), reported only


def both_results_after(page, t0: float, settle_s: float = 0.6) -> float:
    """Seconds from ``t0`` until the earlier results went away and both models' overlays are drawn again with
    the script idle (held for ``settle_s``: a rerun that follows does not count as done)."""
    captions = [
        page.get_by_text(f"{r}: {t} overlay") for r, t in (("unet", "U-Net"), ("maskrcnn", "Mask R-CNN"))
    ]
    captions[0].first.wait_for(state="detached")  # the earlier results are cleared when the models start
    status = page.locator('[data-testid="stStatusWidget"]')
    while True:
        for c in captions:
            c.first.wait_for()
        status.wait_for(state="detached")
        done = time.monotonic()
        page.wait_for_timeout(settle_s * 1000)
        if status.count() == 0 and all(c.count() == 1 for c in captions):
            return done - t0


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")  # fmt: skip
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load} (1, 5, 15 min) at the start"


def reference_seconds() -> float:
    """The same-run reference of benchmarks/bench.py: a bare torchvision Mask R-CNN's forward on testA_1 (wall
    seconds, median of 2 after a warm-up), in a fresh process: the waits divided by it compare across machines and
    loads."""
    code = "from benchmarks.bench import load_image, reference_latency; print(reference_latency(load_image(), 2)[0])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def glas_sized_jpeg(folder: Path, name: str, k: int) -> Path:
    """A GlaS-sized (775x522) JPEG no server has seen: a bundled sample flipped or rotated ``k``."""
    image = read_image(REPO / "samples" / "testB_2.png")
    image = np.rot90(image, 2) if k == 1 else (image[::-1] if k == 2 else image[:, ::-1])
    path = folder / f"{name}.jpg"
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=92)
    return path


def test_flow_dashboard_waits(browser, tmp_path: Path) -> None:
    """#22: the three waits a person sees, on a fresh server with an empty cache: the first visit until both
    overlays of the bundled sample; an upload of a GlaS-sized JPEG until both results (first, and on the warm
    server); a new pixel size until both results. Recorded in benchmarks/results_dashboard_waits.txt, with the
    date and the machine; the targets are figures there, not assertions here."""
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    where = machine()
    reference = reference_seconds()
    waits: dict[str, float] = {}
    with streamlit_server(tmp_path, tmp_path / "fresh-cache") as (url, startup_s):
        ctx = browser.new_context(viewport={"width": 1440, "height": 1800})
        page = ctx.new_page()
        page.set_default_timeout(RESULT_MS)
        t0 = time.monotonic()
        page.goto(url)
        overlays_shown(page)
        waits["first_visit"] = time.monotonic() - t0
        wait_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        shot(page, "waits_first_visit.png")
        uploader = page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]')
        for k, name in enumerate(("upload_first", "upload_warm"), 1):
            path = glas_sized_jpeg(tmp_path, f"glas_sized_{k}", k)
            t0 = time.monotonic()
            uploader.set_input_files(str(path))
            waits[name] = both_results_after(page, t0)
            assert page.get_by_text(path.stem).count() >= 1
            shot(page, f"waits_{name}.png")
        field = page.locator('input[aria-label="Pixel size (µm/px)"]')
        field.fill("0.500")
        t0 = time.monotonic()
        field.press("Enter")
        waits["pixel_size"] = both_results_after(page, t0)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stMetric"]').filter(has_text="Glands").count() == 2
        shot(page, "waits_pixel_size.png")
        ctx.close()
    rows = [
        ("first_visit", "first visit of a fresh install (new server, empty cache/) until both overlays of the bundled sample"),
        ("upload_first", "upload of a GlaS-sized JPEG (775x522) until both results, first upload after that visit"),
        ("upload_warm", "upload of another GlaS-sized JPEG until both results (warm server)"),
        ("pixel_size", "pixel size 0.62 -> 0.50 um/px until both results (warm server)"),
    ]  # fmt: skip
    lines = [
        "# The dashboard's waits (issue #22), measured in Chromium by tests/test_e2e_browser.py::test_flow_dashboard_waits",
        "# .venv/bin/python -m pytest -p no:cacheprovider tests/test_e2e_browser.py --runbrowser -k dashboard_waits",
        f"date: {started}",
        f"machine: {where}",
        f"reference (benchmarks/bench.py, same run): bare torchvision Mask R-CNN forward on testA_1 = {reference:.2f} s wall "
        "(3.85 s on the idle 2-core Xeon of benchmarks/README.md)",
        f"server start until its health check answered: {startup_s:.1f} s",
        *(
            f"{text}: {waits[k]:.1f} s = {waits[k] / reference:.2f} x ref"
            + (f" (target {TARGETS[k]:.0f} s = {TARGETS[k] / 3.85:.2f} x ref on that idle machine)" if k in TARGETS else "")
            for k, text in rows
        ),
    ]  # fmt: skip
    WAITS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
