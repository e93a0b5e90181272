"""segflow.reporting.dvc_plots: `dvc plots` rendered to self-contained HTML and PNG, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segflow.reporting.dvc_plots import ReportingError, _run_dvc, build_offline_template, render_plots

pytestmark = pytest.mark.integration  # runs the real dvc CLI (about 2 s in all)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = "epoch,train_loss,val_dice\n1,0.9,0.3\n2,0.7,0.5\n3,0.5,0.6\n4,0.4,0.7\n5,0.35,0.75\n"
DVC_YAML = "plots:\n  - history.csv:\n      x: epoch\n      y: [train_loss, val_dice]\n"


def _init_repo(root: Path) -> Path:
    """A git + DVC repo in `root` with no plots yet."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.name", "segflow-test"],
        ["git", "config", "user.email", "test@segflow.invalid"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The offline template, built once for the module (the bundle takes about 1.5 s)."""
    return build_offline_template(tmp_path_factory.mktemp("tpl") / "template.html")


@pytest.fixture
def toy_repo(tmp_path) -> Path:
    """A DVC repo whose dvc.yaml plots a 5-epoch training history."""
    root = tmp_path / "repo"
    root.mkdir()
    _init_repo(root)
    (root / "history.csv").write_text(HISTORY)
    (root / "dvc.yaml").write_text(DVC_YAML)
    return root


def test_template_is_self_contained_and_cached(template: Path) -> None:
    html = template.read_text(encoding="utf-8")
    assert "{plot_divs}" in html and "{scripts}" not in html
    assert "<script src=" not in html
    assert "window.vegaEmbed=" in html
    mtime = template.stat().st_mtime_ns
    assert build_offline_template(template) == template
    assert template.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_render_plots_offline_html_and_png(toy_repo: Path, template: Path, tmp_path) -> None:
    index = render_plots(toy_repo, tmp_path / "plots", template=template)

    assert index == tmp_path / "plots" / "index.html" and index.is_file()
    html = index.read_text(encoding="utf-8")
    assert "<script src=" not in html  # nothing is fetched from a network (or anywhere)
    assert "cdn.jsdelivr" not in html
    assert "window.vegaEmbed=" in html  # vega-embed inlined ...
    assert "vegaEmbed('#" in html  # ... and called by DVC's plot snippet
    assert "val_dice" in html

    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["history_csv.png"]
    data = pngs[0].read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_render_plots_without_plots_raises(tmp_path, template: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    _init_repo(root)
    with pytest.raises(ReportingError, match="no plots"):
        render_plots(root, tmp_path / "out", template=template)


def test_render_plots_with_corrupt_dvc_yaml_raises(tmp_path, template: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    _init_repo(root)
    (root / "dvc.yaml").write_text("plots: [\n")  # DVC exits 0 here, reporting it in its JSON
    with pytest.raises(ReportingError, match="could not load the plots.*corrupted"):
        render_plots(root, tmp_path / "out", template=template)


def test_failing_dvc_command_raises(tmp_path) -> None:
    with pytest.raises(ReportingError, match="failed"):
        _run_dvc(tmp_path, "no-such-command")


def test_the_per_class_template_draws_one_line_per_class(tmp_path) -> None:
    """The project's .dvc/plots/per_class.json colours val_dice_per_class.csv's rows by class."""
    import json
    import shutil

    from conftest import REPO

    root = _init_repo(tmp_path)
    (root / ".dvc" / "plots").mkdir()
    shutil.copy2(REPO / ".dvc" / "plots" / "per_class.json", root / ".dvc" / "plots" / "per_class.json")
    (root / "dice.csv").write_text("epoch,class,dice\n1,anterior,0.5\n1,posterior,0.4\n2,anterior,0.7\n2,posterior,0.6\n")
    (root / "dvc.yaml").write_text("plots:\n  - dice.csv:\n      template: per_class\n      title: Validation Dice per "
                                   "class\n      x: epoch\n      y: dice\n")
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=root, check=True,
                           capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    (plot,) = json.loads(shown.stdout)["data"]["dice.csv"]
    spec = plot["content"]
    assert spec["encoding"]["color"]["field"] == "class" and spec["title"]["text"] == "Validation Dice per class"
    assert {row["class"] for row in spec["data"]["values"]} == {"anterior", "posterior"}
