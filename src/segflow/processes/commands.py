"""Run git and DVC (the venv's) in a project; a failure raises with the command's own message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from segflow.errors import SegflowError

OUTPUT_TAIL = 4000


class CommandFailed(SegflowError):
    """A git or DVC command exited non-zero; the message carries its output's tail."""


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ with this interpreter's bin first: dvc, git hooks and, in a clone without .venv,
    bin/segflow's `python3` are this environment's."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **(extra or {})}


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_command(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None,
                timeout_s: float | None = None) -> str:
    """Run `cmd` in its own process group, so a timeout ends it and everything it started."""
    process = subprocess.Popen(cmd, cwd=cwd, env=venv_env(env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        raise CommandFailed(f"{what} timed out after {timeout_s:.0f} s in {cwd}:\n"
                            f"{(stdout + stderr).strip()[-OUTPUT_TAIL:]}") from None
    except BaseException:  # interrupted (Ctrl-C, flow cancelled): do not leave the command running
        _kill_group(process)
        raise
    if process.returncode != 0:
        output = (stdout + stderr).strip()[-OUTPUT_TAIL:]
        raise CommandFailed(f"{what} failed in {cwd} (exit {process.returncode}):\n{output}")
    return stdout


def dvc(root: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float | None = None) -> str:
    """`dvc ARGS` in `root` with the venv's DVC."""
    return run_command([sys.executable, "-m", "dvc", *args], root, f"dvc {' '.join(args)}", env, timeout_s)


def git(root: Path, *args: str) -> str:
    return run_command(["git", *args], root, f"git {' '.join(args)}").strip()
