"""train stage: a run killed mid-training resumes from its last epoch and ends where an
uninterrupted run ends (same history, bit-identical weights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, copy_project, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EPOCHS = 3
FOLD_DIR = Path("artifacts") / "train" / "fold_0"


def set_epochs(project: Path, epochs: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def checkpoint_epoch(path: Path) -> int:
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def kill_after_first_epoch(project: Path, timeout: float = 120.0) -> int:
    """Start `dvc repro train`, SIGKILL its whole process group once epoch 1 is checkpointed."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "train"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = project / "artifacts" / "checkpoints" / "fold_0" / "last.pt"
    deadline = time.monotonic() + timeout
    try:
        while (epoch := checkpoint_epoch(checkpoint)) < 1:
            if proc.poll() is not None:
                pytest.fail(f"dvc repro train exited ({proc.returncode}) before checkpointing epoch 1")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint of epoch 1 after {timeout:.0f} s")
            time.sleep(0.2)
        still_running = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert still_running and epoch < EPOCHS, "training finished before it could be interrupted"
    return epoch


def final_weights(project: Path) -> dict[str, torch.Tensor]:
    from segflow.models.model_file import load_model_file

    return load_model_file(project / FOLD_DIR / "model.pt").state_dicts[0]


def test_killed_training_resumes_and_matches_uninterrupted_run(preprocessed_project, preprocessed_template, tmp_path):
    set_epochs(preprocessed_project, EPOCHS)

    killed_at = kill_after_first_epoch(preprocessed_project)
    resumed = run([str(BIN / "dvc"), "repro", "train"], preprocessed_project)

    assert f"resuming after epoch {killed_at}" in resumed.stdout + resumed.stderr
    history = (preprocessed_project / FOLD_DIR / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(1, EPOCHS + 1)]

    other = copy_project(preprocessed_template, tmp_path / "other")
    set_epochs(other, EPOCHS)
    run([str(BIN / "dvc"), "repro", "train"], other)

    expected, actual = final_weights(other), final_weights(preprocessed_project)
    assert expected.keys() == actual.keys()
    different = {k: float((expected[k].float() - actual[k].float()).abs().max())
                 for k in expected if not torch.equal(expected[k], actual[k])}
    assert not different, f"resumed weights differ from an uninterrupted run (max abs diff): {different}"


def test_rerun_killed_after_final_checkpoint_completes(preprocessed_project):
    run([str(BIN / "dvc"), "repro", "train"], preprocessed_project)
    epochs = yaml.safe_load((preprocessed_project / "params.yaml").read_text())["train"]["epochs"]
    # As if killed after the last epoch's checkpoint, before the model file was written.
    (preprocessed_project / FOLD_DIR / "model.pt").unlink()

    # The outputs are DVC-cached: this finished run's model comes back from the cache, untrained ...
    restored = run([str(BIN / "dvc"), "repro", "train"], preprocessed_project)
    assert "resuming" not in restored.stdout
    assert (preprocessed_project / FOLD_DIR / "model.pt").is_file()
    # ... a run killed for real never reached the cache: it runs again, and resumes.
    (preprocessed_project / FOLD_DIR / "model.pt").unlink()
    rerun = run([str(BIN / "dvc"), "repro", "--force", "train"], preprocessed_project)

    assert f"resuming after epoch {epochs}" in rerun.stdout
    history = (preprocessed_project / FOLD_DIR / "history.csv").read_text().splitlines()
    assert len(history) == 1 + epochs
    assert (preprocessed_project / FOLD_DIR / "model.pt").is_file()
    # The model's cost counts the epochs trained before the resume, not just this short rerun.
    summary = json.loads((preprocessed_project / FOLD_DIR / "summary.json").read_text())
    epoch_seconds = sum(float(row.split(",")[3]) for row in history[1:])
    assert summary["seconds"] == pytest.approx(epoch_seconds, abs=0.1)
    assert summary["seconds_this_run"] <= summary["seconds"] + 5
