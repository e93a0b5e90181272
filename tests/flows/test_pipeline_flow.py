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
    user_params = (tiny_project / "params.yaml").read_bytes()
    # An override with the file's own value: nothing reruns, yet dvc's writer would reformat the file.
    done = run([str(BIN / "python"), "flows/pipeline.py", "--project-dir", str(tiny_project),
                "-S", "register.min_gain=0.0"], tiny_project)
    assert (tiny_project / "params.yaml").read_bytes() == user_params  # the user's file, byte for byte
    metrics = json.loads((tiny_project / "artifacts/evaluate/metrics.json").read_text())
    assert "dice_mean" in metrics
    assert "segflow-pipeline finished in state Completed" in done.stdout
    assert re.search(r"Finished in state Completed", done.stdout + done.stderr)  # Prefect's own log
    for stage in ("ingest", "validate", "plan", "preprocess", "budget", "train", "evaluate", "register", "report"):
        assert f"stage {stage} done" in done.stdout + done.stderr
    # Same caching as dvc: the pipeline is now up to date.
    status = run([str(BIN / "dvc"), "status"], tiny_project)
    assert "up to date" in status.stdout


def test_flow_fails_with_the_stage_error_visible(tiny_project):
    user_params = (tiny_project / "params.yaml").read_bytes()
    done = run([str(BIN / "python"), "flows/pipeline.py", "--project-dir", str(tiny_project),
                "-S", "validate.min_cases=100"], tiny_project, check=False)
    assert done.returncode != 0
    assert (tiny_project / "params.yaml").read_bytes() == user_params  # overrides undone, failed run too
    assert "stage validate failed" in done.stdout + done.stderr
    assert "min_cases" in done.stdout + done.stderr
