"""git/DVC commands: a failure carries the command's output; a timeout ends its whole process group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from segflow.processes.commands import CommandFailed, run_command


def test_a_failure_names_the_command_and_keeps_its_output(tmp_path):
    with pytest.raises(CommandFailed, match=r"(?s)listing failed in .*\(exit 3\):.*the reason"):
        run_command(["sh", "-c", "echo the reason >&2; exit 3"], tmp_path, "listing")


def test_a_timeout_kills_the_command_and_what_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after"):
        run_command(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], tmp_path, "sleeper", timeout_s=1)
    assert time.monotonic() - start < 30
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running or sleeping; a killed child that nobody reaped yet (a zombie) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
