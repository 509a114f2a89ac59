"""In a real browser (``--runbrowser``), as a new user would: correct two U-Net predictions on the Annotate page
and save them into a new annotation set, then see that set offered and scored as ground truth on Compare.
Screenshots in ``artifacts/screenshots/sets_*.png``. The server, browser and helpers are those of
``test_e2e_browser.py`` (skipped without Chromium or the shipped models)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from playwright.sync_api import expect

from tests import test_e2e_browser as base
from tests.test_e2e_browser import shot, wait_glands, wait_idle

pytestmark = base.pytestmark
server, browser, page = base.server, base.browser, base.page  # its fixtures: one server for this module

SET = "e2e-set"


def choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()
    wait_idle(page)


def correct_and_save(page, n_expected: int) -> None:
    """Start from the U-Net's prediction, erase one gland, save it into the set."""
    choose(page, "Start from", "Prediction of unet")
    n0 = wait_glands(page, lambda n: n > 1)
    canvas = page.locator("canvas.upper-canvas").first
    wait_idle(page)
    # one Undo: the canvas's own toolbar is hidden (its style lands a frame after a canvas is mounted)
    expect(page.locator(".dc-toolbar").first).to_be_hidden(timeout=10_000)
    expect(page.get_by_role("button", name="Undo")).to_have_count(1, timeout=10_000)
    page.get_by_text("Erase", exact=True).click()
    wait_idle(page)
    box = canvas.bounding_box()
    assert box is not None
    clicks = [(0.5, 0.5), (0.3, 0.3), (0.7, 0.6), (0.4, 0.7), (0.6, 0.3)]
    for fx, fy in clicks:  # until a click lands on a gland
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        wait_idle(page)
        try:
            wait_glands(page, lambda n: n == n0 - 1, timeout_s=20)
            break
        except AssertionError:
            continue
    field = page.get_by_label("Annotation set", exact=True)
    field.fill(SET)
    field.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Save to set").click()
    success = page.locator('[data-testid="stAlert"]').filter(has_text=f"holds {n_expected} image")
    success.wait_for()
    assert SET in success.inner_text()


def test_two_corrected_predictions_saved_into_a_set_are_ground_truth_on_compare(
    server: tuple[str, Path], page
) -> None:
    url, _ = server
    page.goto(f"{url}/annotate")
    page.get_by_text("Annotate glands").wait_for()
    wait_idle(page)
    correct_and_save(page, 1)  # the default sample, testA_1
    shot(page, "sets_first_saved.png")
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Sample").click()
    page.get_by_role("option", name="testA_13").first.click()
    wait_idle(page)
    correct_and_save(page, 2)
    shot(page, "sets_second_saved.png")

    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Compare").click()
    page.get_by_text("Compare U-Net and Mask R-CNN").wait_for()
    wait_idle(page)
    choose(page, "Ground truth", f"Annotation set {SET} (testA_1.png)")
    caption = page.get_by_text(f"ground truth: Annotation set {SET}")
    caption.wait_for()
    f1 = page.locator('[data-testid="stMetric"]').filter(has_text="F1")
    deadline = time.monotonic() + 300
    while f1.count() < 2:
        assert time.monotonic() < deadline, "no F1 per model"
        page.wait_for_timeout(500)
    wait_idle(page)
    values = [m.locator('[data-testid="stMetricValue"]').inner_text() for m in f1.all()[:2]]
    assert all(0 <= float(v) <= 1 for v in values), values
    assert np.isfinite([float(v) for v in values]).all()
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "sets_compare_ground_truth.png")

    # the set on the Metrics page: scored by both models in the background, then its table and plots
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Metrics").click()
    page.get_by_text("Metrics", exact=True).first.wait_for()
    wait_idle(page)
    choose(page, "Data set", f"Annotation set {SET}")
    page.get_by_text(f"No scores on Annotation set {SET} yet").wait_for()
    page.get_by_role("button", name="Score both models on this set").click()
    page.locator('[data-testid="stProgress"]').first.wait_for()
    shot(page, "sets_metrics_scoring.png")
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(timeout=900_000)  # both models on two images, on two busy cores
    wait_idle(page)
    assert page.get_by_text("GT split into components").count() >= 1
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, "sets_metrics_table.png")
