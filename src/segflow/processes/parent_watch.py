"""A stage never outlives the process that started it.

`dvc repro` runs a stage as `dvc -> /bin/sh -c "segflow stage ..." -> segflow` (dash does not exec
the command), so when dvc is killed the shell keeps waiting and the stage would train on as an
orphan, racing the next `dvc repro` for the same outputs. `exit_with_launcher` ends the stage when
its launcher is gone: the `dvc` ancestor when there is one, else the parent process. Linux's
PR_SET_PDEATHSIG covers the direct parent at once; a daemon thread polls the launcher (the signal
cannot see a grandparent). Either way the stage gets SIGTERM, which raises SystemExit, so its
`finally` blocks run (atomic writes drop their temporary files) and its children are stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0
EXIT_CODE = 128 + signal.SIGTERM


@dataclass(frozen=True)
class Launcher:
    """The process a stage lives for; pid and start time (a reused pid is not the launcher)."""

    pid: int
    started: float
    name: str

    def alive(self) -> bool:
        import psutil

        try:
            return psutil.Process(self.pid).create_time() == self.started
        except psutil.Error:
            return False


def dvc_ancestor() -> Launcher | None:
    """The `dvc` process this one runs under (however many shells lie between), or None."""
    try:
        import psutil

        for process in psutil.Process().parents():
            command = process.cmdline()
            if any(Path(part).name == "dvc" or part.endswith("/dvc/__main__.py") for part in command[:2]):
                return Launcher(process.pid, process.create_time(), "dvc")
    except Exception:  # noqa: BLE001 - no psutil, no /proc, a parent gone: nothing to watch
        return None
    return None


def parent_launcher() -> Launcher | None:
    """The direct parent, unless it is init (already orphaned, or started by a container's pid 1)."""
    try:
        import psutil

        parent = psutil.Process().parent()
    except Exception:  # noqa: BLE001
        return None
    if parent is None or parent.pid == 1:
        return None
    return Launcher(parent.pid, parent.create_time(), "parent")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent thread exits (no-op elsewhere).
    Also usable as a `preexec_fn` for child processes."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _terminate(signum: int, frame) -> None:  # the signal handler signature
    raise SystemExit(EXIT_CODE)


def _watch(launcher: Launcher) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        if not launcher.alive():
            print(f"segflow: the {launcher.name} process (pid {launcher.pid}) that started this stage is gone; "
                  "stopping", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def exit_with_launcher() -> Launcher | None:
    """Stop this process (SIGTERM -> SystemExit) when its launcher dies; returns the launcher watched."""
    launcher = dvc_ancestor() or parent_launcher()
    if launcher is None:
        return None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    die_with_parent()
    threading.Thread(target=_watch, args=(launcher,), name="segflow-launcher-watch", daemon=True).start()
    return launcher

