"""Atomic file writes: an output is either the old whole file or the new whole file.

Stages write through these helpers so a stage killed midway never leaves a half-written
output for DVC (or a person) to pick up. Folders are staged the same way, in a hidden sibling
named after its owner (`owner_tag`), so a later run can remove the ones a killed run left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()  # read once: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(dest: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest` in one rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600; give the file the mode a plain open() would
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(dest: Path | str, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that becomes `dest` only when the block succeeds."""
    with atomic_path(dest) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(dest: Path | str, text: str) -> None:
    with atomic_open(dest) as handle:
        handle.write(text)


def write_json(dest: Path | str, data: Any) -> None:
    write_text(dest, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def load_json_model(model: type[T], path: Path | str, what: str, remedy: str) -> T:
    """`path` read as JSON and validated as the pydantic `model`: the one way a file passed
    between stages is read back. A missing or invalid file is a ConfigError naming the file,
    what is wrong, and `remedy` (e.g. "run the plan stage (dvc repro plan)")."""
    from pydantic import ValidationError

    from segflow.config import ConfigError

    path = Path(path)
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no {what}; {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top level>'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ConfigError(f"{path} is not a valid {what} ({problems}); {remedy}") from None


def write_csv(dest: Path | str, frame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_open(dest) as handle:
        frame.to_csv(handle, index=False)


def file_hash(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks so large files need little memory."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- staging folders of killed runs --------------------------------------------------------------

ABANDONED_AFTER_S = 24 * 3600  # a staging folder this old is abandoned, whoever made it


def owner_tag() -> str:
    """`<pid>@<host>`: who made a staging folder, so a later run can tell whether it is still at work."""
    return f"{os.getpid()}@{socket.gethostname()}"


def is_abandoned(folder: Path, max_age_s: float = ABANDONED_AFTER_S) -> bool:
    """True when the process a staging folder's name ends with (`-<pid>@<host>`) is gone from this
    host, or the folder is older than `max_age_s` (another host's, or one named without an owner)."""
    owner = re.search(r"[-.](\d+)@([^@/]+)$", folder.name)
    if owner and owner[2] == socket.gethostname() and not _process_alive(int(owner[1])):
        return True
    try:
        return time.time() - folder.stat().st_mtime > max_age_s
    except FileNotFoundError:  # its owner finished meanwhile
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_abandoned(parent: Path, pattern: str) -> list[Path]:
    """Remove the abandoned staging folders matching `pattern` in `parent`; returns those removed."""
    removed = [p for p in sorted(parent.glob(pattern)) if p.is_dir() and is_abandoned(p)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed
