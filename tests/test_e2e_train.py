"""End to end in a real browser (issue #14): a training run stopped mid-epoch and mid-tuning from the Train page.

``streamlit run app.py`` + headless Chromium (Playwright) on a fake GlaS folder with a tiny U-Net typed into the
form: the data folder and preset come back in a new browser session, the fields have human labels, an epoch-time
estimate is measured, Stop ends a run within seconds in the middle of its epoch steps and in the middle of its
post-processing tuning, the Runs table follows, and Resume redoes only the tuning; then Evaluate is enabled with
no stale "need a best.pt". Screenshots go to ``artifacts/screenshots/`` (gitignored). Skipped without Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import write_fake_glas
from tests.test_app import make_tiny_models

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "artifacts" / "screenshots"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip
STARTUP_S, WAIT_MS = 180, 240_000  # two shared cores
STOPPED_WITHIN_S = (
    20  # Stop click -> "stopped" on the page (the trainer itself stops at once; the page polls)
)

# A real training run driven in Chromium (minutes on two cores): runs with --runbrowser, not in the default suite.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """A streamlit server with a fake GlaS folder (160x240 images: tuning lasts long enough to stop it) and
    private runs/locks; the dashboard settings file says a previous session used that folder and glandseg-unet."""
    tmp = tmp_path_factory.mktemp("e2e_train")
    glas = write_fake_glas(tmp / "glas", size=(160, 240))
    runs = tmp / "runs"
    runs.mkdir()
    (runs / ".dashboard.json").write_text(json.dumps({"data_dir": str(glas), "preset": "glandseg-unet"}))
    env = dict(os.environ)
    env.update(GLANDSEG_MODELS=str(make_tiny_models(tmp / "models")), GLANDSEG_RUNS=str(runs),
               GLANDSEG_DATA=str(glas), GLANDSEG_LOCK_DIR=str(tmp / "locks"), OMP_NUM_THREADS="1",
               GLANDSEG_ANNOTATIONS=str(tmp / "annotations"))  # fmt: skip
    port = _free_port()
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
        yield url, runs, glas
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for pid_file in runs.glob("*/train.pid"):  # never leave a trainer behind
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), 9)


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS)
        ctx = browser.new_context(viewport={"width": 1440, "height": 4200})  # a new browser session
        pg = ctx.new_page()
        pg.set_default_timeout(WAIT_MS)
        yield pg
        browser.close()


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page) -> None:
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")


def main(page):
    """The page's own content (the toolbar has a "Stop" button of its own while a script runs)."""
    return page.get_by_test_id("stMainBlockContainer")


def run_name(page, name: str) -> None:
    box = page.get_by_label("Run folder name", exact=True)
    box.fill(name)
    box.press("Enter")
    wait_idle(page)


def stop_and_wait(page, words: str) -> float:
    """Click Stop; seconds until the page says the run stopped while ``words``."""
    t0 = time.time()
    main(page).get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile(rf"stopped · .*stopped while {words}")).first.wait_for(timeout=60_000)
    return time.time() - t0


def test_a_training_run_stopped_mid_epoch_and_mid_tuning(server, page) -> None:
    url, runs, glas = server
    page.goto(f"{url}/train")
    page.get_by_text("Train a model").wait_for()
    wait_idle(page)
    # remembered from an earlier session (runs/.dashboard.json): the data folder and the preset
    expect(page.get_by_label("GlaS folder", exact=True)).to_have_value(str(glas), timeout=60_000)
    expect(page.get_by_role("combobox", name="Preset")).to_have_value("glandseg-unet", timeout=30_000)
    wait_idle(page)
    shot(page, "train_arrival.png")
    page.get_by_text("Pretrained starts available now").wait_for()
    # a tiny U-Net, typed into the form's labelled fields
    page.get_by_role("tab", name="U-Net").click()
    fill(page, "U-Net first-layer channels (channels)", "4")
    fill(page, "U-Net depth (levels)", "2")
    fill(page, "U-Net image scale (× size)", "1")
    page.get_by_role("tab", name="Training").click()
    fill(page, "Epochs (epochs)", "1")
    fill(page, "Batch size (images per step)", "2")
    fill(page, "Steps per epoch (steps)", "3000")
    fill(page, "Training crop side (px)", "64")
    fill(page, "Warm-up (steps)", "0")
    fill(page, "Training images used at most (images)", "2")
    page.get_by_text("Mixed precision", exact=True).click()
    page.get_by_role("button", name="Estimate time per epoch").click()
    page.get_by_text("Estimated time per epoch").wait_for()
    wait_idle(page)
    estimate = page.locator('[data-testid="stAlert"]').filter(has_text="Estimated time per epoch").first
    assert "An estimate" in estimate.inner_text() and "3000 steps" in estimate.inner_text()
    shot(page, "train_form_estimate.png")

    # 1. Stop in the middle of the epoch's steps
    run_name(page, "stop-mid-epoch")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"epoch 1/1 · step \d+/3000")).first.wait_for()
    page.get_by_text(re.compile(r"left in this phase")).first.wait_for()
    shot(page, "train_running_steps.png")
    took = stop_and_wait(page, "training steps")
    assert took < STOPPED_WITHIN_S, took
    progress = json.loads((runs / "stop-mid-epoch" / "progress.json").read_text())
    assert progress["status"] == "stopped" and progress["phase"] == "train"
    page.wait_for_timeout(4000)  # the next refresh
    shot(page, "train_stopped_mid_epoch.png")
    main(page).get_by_text("No epoch had finished: Restart").wait_for(timeout=60_000)
    main(page).get_by_role("button", name="Restart").wait_for(timeout=30_000)  # nothing to resume

    # 2. Stop in the middle of the post-processing tuning, then resume: only the tuning is redone
    page.get_by_role("tab", name="Training").click()
    fill(page, "Steps per epoch (steps)", "2")
    run_name(page, "stop-mid-tuning")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"tuning post-processing on val: \d+/\d+")).first.wait_for()
    shot(page, "train_tuning.png")
    took = stop_and_wait(page, "tuning post-processing")
    assert took < STOPPED_WITHIN_S, took
    run = runs / "stop-mid-tuning"
    assert json.loads((run / "progress.json").read_text())["phase"] == "tune"
    assert (run / "last.pt").is_file() and not (run / "postprocess.json").exists()
    table = page.locator('[data-testid="stDataFrame"]').first
    shot(page, "train_stopped_mid_tuning.png")
    assert table.count() == 1
    main(page).get_by_role("button", name="Resume").click()
    page.get_by_text(re.compile(r"finished · 1/1 epochs done")).first.wait_for()
    wait_idle(page)
    assert (run / "postprocess.json").is_file()
    assert [json.loads(ln)["epoch"] for ln in (run / "log.jsonl").read_text().splitlines()] == [1]
    assert page.get_by_role("button", name="Evaluate on val").is_enabled()
    assert page.get_by_text("need a best.pt").count() == 0  # no stale message
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "train_resumed_finished.png")
