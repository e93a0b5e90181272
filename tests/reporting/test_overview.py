"""The end-of-run summary names where each result is, for the per-fold layout."""

from __future__ import annotations

from segflow.files import write_json
from segflow.paths import Paths
from segflow.reporting.overview import report_lines


def test_report_lists_metrics_and_per_fold_training_folder(tmp_path):
    paths = Paths(tmp_path)
    write_json(paths.metrics, {"dice_mean": 0.87, "dice_mean_ci95": [0.86, 0.88]})
    paths.fold_dir(0).mkdir(parents=True)
    lines = "\n".join(report_lines(tmp_path))
    assert "dice_mean=0.87" in lines
    assert "train curves" in lines and str(paths.train_dir) in lines


def test_report_names_the_results_page_first_once_it_exists(tmp_path):
    paths = Paths(tmp_path)
    assert "results page" not in "\n".join(report_lines(tmp_path))
    paths.report_dir.mkdir(parents=True)
    paths.report_page.write_text("<html></html>")
    assert report_lines(tmp_path)[2] == f"  results page   {paths.report_page}  (open in a browser; works offline)"
