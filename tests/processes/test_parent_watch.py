"""A stage ends when the dvc process that started it dies, however many shells lie between."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN

STAGE_LIKE = """
import sys, time
from pathlib import Path
from segflow.processes.parent_watch import exit_with_launcher
out = Path(sys.argv[1])
launcher = exit_with_launcher()
(out / "launcher").write_text(launcher.name)
try:
    while True:
        time.sleep(0.1)
finally:
    (out / "cleaned-up").write_text("yes")
"""


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_stage_stops_cleanly_when_its_dvc_grandparent_is_killed(tmp_path):
    """dvc -> sh -c -> stage, as `dvc repro` runs a stage: SIGKILL of dvc leaves the shell waiting,
    so only the watch on the dvc process itself can stop the stage."""
    (tmp_path / "stage.py").write_text(STAGE_LIKE)
    fake_dvc = tmp_path / "dvc"  # named like the dvc entry point
    fake_dvc.write_text("import subprocess, sys\n"
                        f"subprocess.run(['sh', '-c', {sys.executable!r} + ' stage.py .'])\n")
    dvc = subprocess.Popen([sys.executable, str(fake_dvc)], cwd=tmp_path)
    assert wait_for(lambda: (tmp_path / "launcher").exists(), 30)
    import psutil

    stage = next(p for p in psutil.Process(dvc.pid).children(recursive=True) if "stage.py" in " ".join(p.cmdline()))
    assert (tmp_path / "launcher").read_text() == "dvc"

    dvc.send_signal(signal.SIGKILL)
    dvc.wait()

    assert wait_for(lambda: not alive(stage.pid), 10), "the stage outlived dvc"
    assert (tmp_path / "cleaned-up").read_text() == "yes", "the stage was stopped without running its finally blocks"


def test_without_dvc_the_parent_is_watched(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE_LIKE)
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               "subprocess.run([sys.executable, 'stage.py', '.'])"], cwd=tmp_path)
    assert wait_for(lambda: (tmp_path / "launcher").exists(), 30)
    assert (tmp_path / "launcher").read_text() == "parent"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: (tmp_path / "cleaned-up").exists(), 10)


@pytest.mark.slow
@pytest.mark.integration
def test_killing_dvc_repro_stops_the_training_stage(preprocessed_project):
    """The real thing: `dvc repro` killed mid-training leaves no `segflow stage train` behind."""
    import psutil
    import yaml

    params = yaml.safe_load((preprocessed_project / "params.yaml").read_text())
    params["train"]["epochs"] = 10_000
    (preprocessed_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    dvc = subprocess.Popen([str(BIN / "dvc"), "repro", "train"], cwd=preprocessed_project, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def training():
        return [p for p in psutil.Process(dvc.pid).children(recursive=True)
                if "stage" in p.cmdline() and "train" in p.cmdline()]

    assert wait_for(lambda: training() and (preprocessed_project / "artifacts" / "checkpoints").exists(), 120)
    stage = training()[0]
    dvc.send_signal(signal.SIGKILL)
    dvc.wait()
    assert wait_for(lambda: not alive(stage.pid), 15), "segflow stage train kept running after dvc was killed"
    assert not [p for p in Path(preprocessed_project, "artifacts").rglob("*.tmp")], "a half-written file was left"
