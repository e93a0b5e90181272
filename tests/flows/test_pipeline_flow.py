"""The Prefect flow runs the DVC stages as tasks, with no server configured."""

from __future__ import annotations

import json
import re

import pytest
from conftest import BIN, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_flow_runs_all_stages_through_dvc(preprocessed_project):
    """Every stage is a flow task that runs `dvc repro` of it: those already run (up to the
    preprocessed cache, shared with other tests) are DVC's cache hits, the rest run for real."""
    tiny_project = preprocessed_project
    done = run([str(BIN / "python"), "flows/pipeline.py", "--project-dir", str(tiny_project)], tiny_project)
    metrics = json.loads((tiny_project / "artifacts/evaluate/metrics.json").read_text())
    assert "dice_mean" in metrics
    assert "segflow-pipeline finished in state Completed" in done.stdout
    assert re.search(r"Finished in state Completed", done.stdout + done.stderr)  # Prefect's own log
    for stage in ("ingest", "validate", "plan", "preprocess", "train", "evaluate", "register"):
        assert f"stage {stage} done" in done.stdout + done.stderr
    # Same caching as dvc: the pipeline is now up to date.
    status = run([str(BIN / "dvc"), "status"], tiny_project)
    assert "up to date" in status.stdout


def test_flow_fails_with_the_stage_error_visible(tiny_project):
    import yaml

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["validate"]["min_cases"] = 100
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = run([str(BIN / "python"), "flows/pipeline.py", "--project-dir", str(tiny_project)],
               tiny_project, check=False)
    assert done.returncode != 0
    assert "stage validate failed" in done.stdout + done.stderr
    assert "min_cases" in done.stdout + done.stderr
