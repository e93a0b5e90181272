"""One pipeline run per workspace: a second waits (saying for whom) and then refuses clearly."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import run

from segflow.orchestration.workspace import DirtyWorkspace, WorkspaceBusy, require_committed, workspace_lock

HOLD = """
import sys, time
from pathlib import Path
from segflow.orchestration.workspace import workspace_lock
with workspace_lock(Path(sys.argv[1]), "flow run first-run (abc)", timeout_s=5):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(root, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_run_waits_then_refuses_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path, 30)
    heard = []
    try:
        with pytest.raises(WorkspaceBusy, match=r"held by flow run first-run \(abc\) \(pid \d+"):
            with workspace_lock(tmp_path, "second", timeout_s=1.0, wait=heard.append, poll_s=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert heard and "waiting for the workspace" in heard[0] and "first-run" in heard[0]


def test_a_waiting_run_goes_on_when_the_holder_finishes(tmp_path):
    holder = hold_lock(tmp_path, 1.0)
    start = time.monotonic()
    with workspace_lock(tmp_path, "second", timeout_s=30, wait=lambda _: None, poll_s=0.1):
        waited = time.monotonic() - start
    holder.wait()
    assert 0.3 < waited < 30


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = hold_lock(tmp_path, 60)
    holder.kill()
    holder.wait()
    with workspace_lock(tmp_path, "after", timeout_s=0):
        pass


def test_dispatch_refuses_modified_tracked_files_but_not_dvc_lock(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    for name in ("train.py", "dvc.lock"):
        (tmp_path / name).write_text("v1\n")
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], tmp_path)
    (tmp_path / "dvc.lock").write_text("v2\n")
    require_committed(tmp_path)
    (tmp_path / "train.py").write_text("v2\n")
    with pytest.raises(DirtyWorkspace, match="train.py"):
        require_committed(tmp_path)


def test_a_file_comes_back_byte_for_byte_after_the_block_even_when_it_fails(tmp_path):
    from segflow.orchestration.workspace import file_restored

    params = tmp_path / "params.yaml"
    params.write_bytes(b"train:\n  epochs: 40   # the user's comment\n  lr: [0.1, 0.2]\n")
    original = params.read_bytes()
    with pytest.raises(RuntimeError), file_restored(params):
        params.write_text("train:\n  epochs: 1\n  lr:\n  - 0.1\n  - 0.2\n")
        raise RuntimeError("stage failed")
    assert params.read_bytes() == original
