"""The results page: every class with its CI, every asset local, and it renders in headless
Chromium with the network blocked and no console error.

The page is built from small fabricated inputs (a few seconds), not from a pipeline run. Chromium
is Debian's `chromium` package, driven by playwright (never `playwright install`); the session
fixture installs it with apt-get when it is missing, and skips only where apt-get is unavailable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from segflow.data.preprocess import ChannelNormalisation
from segflow.planning.plan import Plan
from segflow.reporting.figures import plot_prediction
from segflow.reporting.overlays import OverlayCase, OverlayIndex
from segflow.reporting.results_page import RunResults, runs_section, write_results_page
from segflow.tracking.runs import RunLink
from segflow.training.history import FoldHistory
from segflow.validation.report import ValidationReport

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]
NAMES = ["anterior", "posterior"]


# -- fabricated inputs ---------------------------------------------------------------------------

def per_case() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"case_id": [f"case_{i}" for i in range(8)], "fold": [0] * 4 + [1] * 4})
    for name in NAMES:
        frame[f"dice_{name}"] = rng.uniform(0.6, 0.9, 8).round(5)
        frame[f"hd95_{name}"] = rng.uniform(1, 4, 8).round(5)
        frame[f"dice_{name}_raw"] = frame[f"dice_{name}"]
    return frame


def history(fold: int) -> FoldHistory:
    epochs = np.arange(1, 6)
    train = pd.DataFrame({"epoch": epochs, "train_loss": 1 / epochs, "lr": 0.01 * 0.9 ** epochs, "seconds": 1.0})
    val = pd.DataFrame({"epoch": epochs[1::2], "val_dice_mean": [0.5, 0.7], "val_dice_anterior": [0.4, 0.6],
                        "val_dice_posterior": [0.6, 0.8]})
    return FoldHistory(fold, train, val)


def plan() -> Plan:
    return Plan(device="cpu", memory_budget_gb=8, spatial_dims=3, target_spacing=[1, 1, 1], median_shape=[36, 50, 35],
                normalisation=[ChannelNormalisation(scheme="zscore")], patch_size=[32, 48, 32], batch_size=2,
                network="UNet", network_args={"channels": [8, 16]}, estimated_memory_gb=1.2,
                reasons={"patch_size": "median shape fitted to the network", "batch_size": "fits 8 GB"})


def overlays(folder: Path) -> OverlayIndex:
    image = np.random.default_rng(1).normal(size=(12, 12, 8))
    truth = np.zeros(image.shape, dtype=int)
    truth[4:8, 3:6, 2:6], truth[4:8, 6:9, 2:6] = 1, 2
    cases = []
    for case_id, dice in (("case_3", 0.61), ("case_5", 0.88)):
        plot_prediction(case_id, image, truth, truth, NAMES, [dice, dice], folder / f"{case_id}.png")
        cases.append(OverlayCase(case_id=case_id, fold=0, file=f"{case_id}.png", mean_dice=dice,
                                 dice={n: dice for n in NAMES}))
    return OverlayIndex(worst=cases[:1], best=cases[1:])


def results(root: Path) -> RunResults:
    (root / "overlays").mkdir(parents=True)
    run_folder = root / ".segflow" / "wandb" / "wandb" / "offline-run-20250101_000000-abc123"
    run_folder.mkdir(parents=True)
    (root / "data_docs").mkdir()
    (root / "data_docs" / "index.html").write_text("<html></html>")
    validation = ValidationReport(passed=True, n_kept=7, n_quarantined=1, kept=[], decision={"stop": False},
                                  quarantined={"case_9": ["label file missing"]}, rule_counts={"label_exists": 1})
    return RunResults(
        dataset="Hippocampus", metrics={"dice_mean": 0.8, "dice_mean_ci95": [0.75, 0.85]}, per_case=per_case(),
        histories=[history(0), history(1)], validation=validation, plan=plan(),
        overlays=overlays(root / "overlays"), overlay_dir=root / "overlays",
        registration={"registered": True, "model_id": "m-0001", "promoted": True, "reason": "first model"},
        model_card="# Model card\n\n| metric | mean |\n|---|---|\n| dice_anterior | 0.80 |\n",
        runs=[RunLink(stage="evaluate", group="run-1", run_id="abc123", mode="offline", folder=str(run_folder))],
        data_docs=root / "data_docs" / "index.html")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    return write_results_page(results(root), root / "artifacts" / "report")


# -- the page's content --------------------------------------------------------------------------

def test_the_page_names_every_class_with_its_confidence_interval(page):
    text = page.read_text()
    table = per_case()
    for name in NAMES:
        row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", text)
        assert row, f"no metrics row for class {name}"
        assert re.search(rf"{table[f'dice_{name}'].mean():.4f} <span class='muted'>\[0\.\d{{4}} – 0\.\d{{4}}\]",
                         row.group(1)), f"class {name}'s Dice has no interval: {row.group(1)}"


def test_the_page_shows_curves_worst_and_best_cases_validation_plan_card_and_runs(page):
    text = page.read_text()
    assert "training_curves.png" in text and "Validation Dice per class" not in text  # the curves are a PNG
    assert text.index("worst #1: <b>case_3</b>") < text.index("best #1: <b>case_5</b>")
    assert "7</b> cases kept" in text and "case_9" in text and "label file missing" in text
    assert "median shape fitted to the network" in text and "<td>dice_anterior</td>" in text  # plan, card
    assert "offline-run-20250101_000000-abc123" in text and "m-0001" in text


def local_references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", html)


def test_every_src_and_href_is_a_relative_local_path_that_exists(page):
    references = [r for r in local_references(page.read_text()) if not r.startswith("#")]
    assert any(r.endswith(".png") for r in references) and len(references) >= 5
    for reference in references:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", reference, re.I) and not reference.startswith("/"), \
            f"{reference} is not a relative local path"
        assert (page.parent / unquote(reference)).exists(), f"{reference} does not exist beside the page"


def test_an_online_run_is_linked_by_its_url_and_its_local_folder(tmp_path):
    link = RunLink(stage="train fold 0", group="g", run_id="r1", mode="online", folder=str(tmp_path / "run-r1"),
                   url="https://wandb.ai/team/segflow/runs/r1")
    (tmp_path / "run-r1").mkdir()
    section = runs_section([link], tmp_path / "report")
    assert "href='https://wandb.ai/team/segflow/runs/r1'" in section and "href='../run-r1'" in section


# -- headless Chromium, network blocked -----------------------------------------------------------

def install_chromium() -> None:
    """Debian's chromium via apt-get (CI runs the tests as root on a fresh Debian machine)."""
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip(f"{CHROMIUM} is missing and apt-get is unavailable to install Debian's chromium package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, check=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"apt-get install chromium failed: {done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        install_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def render_offline(browser, page_file: Path) -> dict:
    """Open `page_file` with every non-file request aborted; what went wrong, by kind."""
    problems = {"console": [], "external": [], "failed": [], "broken_images": []}
    context = browser.new_context(offline=True)
    tab = context.new_page()
    tab.on("console", lambda m: problems["console"].append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems["console"].append(str(e)))
    tab.on("requestfailed", lambda r: problems["failed"].append(r.url))

    def block(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            problems["external"].append(route.request.url)
            route.abort()

    tab.route("**/*", block)
    tab.goto(page_file.resolve().as_uri(), wait_until="load")
    problems["broken_images"] = tab.eval_on_selector_all(
        "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    problems["images"] = tab.eval_on_selector_all("img", "images => images.length")
    context.close()
    return problems


def test_the_page_renders_offline_in_chromium_with_no_error(browser, page):
    problems = render_offline(browser, page)
    assert problems.pop("images") >= 3  # the curves and two overlays
    assert problems == {"console": [], "external": [], "failed": [], "broken_images": []}


def test_the_offline_render_catches_an_external_asset_and_a_missing_image(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='https://cdn.example.com/x.png'><img src='missing.png'></body></html>")
    problems = render_offline(browser, bad)
    assert problems["external"] == ["https://cdn.example.com/x.png"]
    assert len(problems["broken_images"]) == 2 and problems["console"]
