"""One pipeline run per workspace at a time, and the git facts a train job needs to rebuild it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from segflow.errors import SegflowError
from segflow.processes.commands import CommandFailed, git

LOCK_FILE = Path(".segflow") / "pipeline.lock"


class WorkspaceBusy(SegflowError):
    """Another pipeline run holds the workspace and did not let go in time."""


class DirtyWorkspace(SegflowError):
    """A job elsewhere would run other code than this workspace holds."""


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "another run"
    return f"{info.get('run', 'a run')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')})"


@contextmanager
def workspace_lock(root: Path, run_name: str, timeout_s: float, wait: Callable[[str], None] = print,
                   poll_s: float = 2.0) -> Iterator[None]:
    """Hold `root`'s pipeline lock for the block; wait up to `timeout_s` for a run that holds it.

    An OS file lock (flock): it is released when its holder exits, however it exits, so a killed
    run never leaves the workspace locked. `wait` hears who holds it while this run waits.
    """
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(f"{root}: the workspace is held by {holder}; gave up after "
                                        f"{timeout_s:.0f} s (lock file {path})") from None
                if not told:
                    wait(f"waiting for the workspace {root}: held by {holder}")
                    told = True
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"run": run_name, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def head_commit(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def repository_url(root: Path) -> str:
    """Where a job clones from: the `origin` remote, else this repository's own folder."""
    try:
        return git(root, "remote", "get-url", "origin")
    except CommandFailed:
        return str(root.resolve())


def require_committed(root: Path, allowed: tuple[str, ...] = ("dvc.lock",)) -> None:
    """A dispatched job checks out HEAD: refuse when tracked files differ from it."""
    changed = [name for name in git(root, "diff", "--name-only", "HEAD").splitlines() if name not in allowed]
    if changed:
        raise DirtyWorkspace(f"{root}: the train job would run commit {head_commit(root)[:12]}, but these "
                             f"tracked files differ from it: {', '.join(changed)}. Commit (and push) "
                             "them first, or run with dispatch off.")


@contextmanager
def file_restored(path: Path) -> Iterator[None]:
    """`path` as it was before the block, byte for byte, after it (also when the block fails): a
    run's params.yaml overrides apply to that run only, as `dvc exp run -S` leaves the workspace's
    params, and never cost the user the file's comments or formatting."""
    from segflow.files import atomic_path

    original = path.read_bytes()
    try:
        yield
    finally:
        if path.read_bytes() != original:
            with atomic_path(path) as staged:
                staged.write_bytes(original)
