"""Get the raw MSD dataset into `data.root` so a fresh clone needs no manual step.

Sources, in order: the dataset already in place, a local copy (`data.local_copy`), the official
download (`data.url`, checked against `data.md5`). Every write goes to a hidden temporary sibling
of `root` first and is renamed into place, so an interrupted run never leaves a half-written
`root`. Archives are checked member by member before anything is extracted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from segflow.config import DataConfig
from segflow.io import file_hash

MARKER = "dataset.json"
CHUNK_BYTES = 1 << 20
UNKNOWN_SIZE_REPORT_BYTES = 50 << 20
DOWNLOAD_TIMEOUT_S = 60

Source = Literal["present", "local_copy", "download"]
Reporter = Callable[[str], None]


class AcquireError(RuntimeError):
    """The dataset could not be put in place; the message names the file or URL and the rule."""


@dataclass(frozen=True)
class FetchResult:
    """Where the dataset now lies, where it came from, and a line to show the user."""

    path: Path
    source: Source
    message: str


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fetch_dataset(
    cfg: DataConfig, project_root: Path, progress: Reporter = _print_stderr
) -> FetchResult:
    """Put the dataset at `cfg.root`: keep it if present, else copy `local_copy`, else download.

    Relative paths in `cfg` are taken from `project_root`. `progress` receives download progress
    lines (about one per 10%). Raises `AcquireError` when no source works.
    """
    root = _resolve(cfg.root, project_root)
    marker = cfg.marker
    if (root / marker).exists():
        return FetchResult(root, "present", f"Dataset already in place at {root}; nothing to do.")
    _check_root_is_free(root, marker)
    local = _resolve(cfg.local_copy, project_root) if cfg.local_copy else None
    if local is not None and (local / marker).exists():
        copy_dataset(local, root)
        return FetchResult(root, "local_copy", f"Copied the dataset from {local} to {root}.")
    if cfg.url:
        note = download_dataset(cfg.url, cfg.md5, root, progress, marker)
        return FetchResult(root, "download", f"Downloaded {cfg.url} to {root}; {note}.")
    raise AcquireError(_no_source_message(root, local, marker))


def _resolve(path: Path, project_root: Path) -> Path:
    """`path` as is when absolute, else relative to the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(project_root) / path


def _check_root_is_free(root: Path, marker: str = MARKER) -> None:
    """Refuse to overwrite a `root` that holds something other than the dataset."""
    if root.is_dir() and not any(root.iterdir()):
        return
    if root.exists() or root.is_symlink():
        raise AcquireError(
            f"{root} exists but holds no {marker}, so it is not the dataset and will not be "
            "overwritten. Move or delete it, then run again."
        )


def _no_source_message(root: Path, local: Path | None, marker: str = MARKER) -> str:
    """Explain that neither the local copy nor a download URL could be used."""
    if local is None:
        local_part = "data.local_copy is not set"
    elif local.exists():
        local_part = f"the local copy {local} holds no {marker}"
    else:
        local_part = f"the local copy {local} does not exist"
    return (
        f"No dataset at {root} and no source to get it from: {local_part}, and data.url is not "
        "set in params.yaml. Set one of the two, or place the dataset there by hand."
    )


# --- local copy -----------------------------------------------------------------------------


def copy_dataset(source: Path, root: Path) -> None:
    """Copy the folder `source` to `root` byte for byte, atomically, keeping its defects as is."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        shutil.copytree(source, staging, copy_function=shutil.copy2, dirs_exist_ok=True)
        _move_into_place(staging, root)
    except OSError as exc:
        raise AcquireError(f"Copying {source} to {root} failed: {exc}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(folder: Path, root: Path) -> None:
    """Rename a finished folder to `root` in one step (same filesystem, so it is atomic)."""
    try:
        os.replace(folder, root)
    except OSError as exc:
        raise AcquireError(
            f"Could not move the finished dataset into {root}: {exc.strerror}. "
            "Another run may have put something there; check it and run again."
        ) from exc


# --- download -------------------------------------------------------------------------------


def download_dataset(url: str, md5: str | None, root: Path, progress: Reporter, marker: str = MARKER) -> str:
    """Download the archive at `url`, check its md5, unpack it and move the dataset to `root`.

    Returns a short note on the md5 check for the user.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    archive = _download(url, root.parent, progress)
    try:
        note = _verify_md5(archive, url, md5)
        _unpack_into_place(archive, root, label=f"The archive downloaded from {url}", marker=marker)
    finally:
        archive.unlink(missing_ok=True)
    return note


def _download(url: str, folder: Path, progress: Reporter) -> Path:
    """Stream `url` to a hidden temporary file in `folder`; the file is removed on failure."""
    fd, name = tempfile.mkstemp(prefix=".download.", suffix=".partial", dir=folder)
    target = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                _stream(response, out, url, progress)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        target.unlink(missing_ok=True)
        raise AcquireError(f"Downloading {url} failed: {_reason(exc)}.") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _reason(exc: BaseException) -> str:
    """A short human reason for a network or file error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


def _stream(response, out, url: str, progress: Reporter) -> None:
    """Copy the response body to `out`, reporting about every 10% (or 50 MiB when size unknown)."""
    total = int(response.headers.get("Content-Length") or 0)
    done = reported = 0
    while chunk := response.read(CHUNK_BYTES):
        out.write(chunk)
        done += len(chunk)
        step = total / 10 if total else UNKNOWN_SIZE_REPORT_BYTES
        if done - reported >= step or done == total:
            progress(_progress_line(url, done, total))
            reported = done
    if total and done != total:
        raise AcquireError(f"Downloading {url} stopped early: got {done} of {total} bytes.")


def _progress_line(url: str, done: int, total: int) -> str:
    """One progress line, e.g. `Task04_Hippocampus.tar: 40% (10.8 of 27.1 MiB)`."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    mib = done / 2**20
    if not total:
        return f"{name}: {mib:.1f} MiB"
    return f"{name}: {100 * done // total}% ({mib:.1f} of {total / 2**20:.1f} MiB)"


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in chunks so large archives need little memory."""
    return file_hash(path, "md5")


def _verify_md5(archive: Path, url: str, expected: str | None) -> str:
    """Refuse an archive whose md5 differs from the configured one; say what was checked."""
    if expected is None:
        return "no data.md5 is set, so its checksum was not verified"
    actual = md5sum(archive)
    if actual != expected.lower():
        raise AcquireError(
            f"The file downloaded from {url} has md5 {actual}, but data.md5 expects {expected}; "
            "it was deleted. The download may be corrupt or the file may have changed upstream."
        )
    return f"md5 {actual} verified"


def _unpack_into_place(archive: Path, root: Path, label: str, marker: str = MARKER) -> None:
    """Extract `archive` beside `root`, find the dataset folder in it and rename it to `root`."""
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".extract", dir=root.parent))
    try:
        safe_extract(archive, staging, label=label)
        _move_into_place(find_dataset_folder(staging, label, marker), root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_dataset_folder(extracted: Path, label: str, marker: str = MARKER) -> Path:
    """The single folder under `extracted` that holds a dataset.json (MSD: `Task04_.../`).

    `label` names the archive in the error message.
    """
    found = sorted(p for p in (extracted, *extracted.rglob("*")) if p.is_dir() and (p / marker).exists())
    if len(found) != 1:
        where = ", ".join(str(p.relative_to(extracted)) for p in found) or "none"
        raise AcquireError(
            f"{label} must hold exactly one folder with a {marker}, found {len(found)} "
            f"({where}); it is not an MSD dataset archive."
        )
    return found[0]


# --- safe extraction ------------------------------------------------------------------------


def safe_extract(archive: Path, dest: Path, *, label: str | None = None) -> None:
    """Extract a tar (plain, .gz, .bz2, .xz) or zip archive into `dest`, refusing unsafe members.

    Every member is checked before anything is written: a path that is absolute or resolves
    outside `dest`, and (tar) any link, device or other special file, raises `AcquireError`.
    `label` names the archive in messages (default: its path), e.g. the URL it came from.
    """
    archive, dest = Path(archive), Path(dest)
    label = label or str(archive)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, label)
    elif _is_tarfile(archive):
        _extract_tar(archive, dest, label)
    else:
        raise AcquireError(f"{label} is neither a tar nor a zip archive; cannot unpack it.")


def _is_tarfile(archive: Path) -> bool:
    """True for a readable tar archive, compressed or not."""
    try:
        return tarfile.is_tarfile(archive)
    except OSError:
        return False


def _check_member_path(name: str, dest: Path, label: str) -> None:
    """Refuse a member name that is absolute or lands outside `dest` once resolved."""
    if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
        raise AcquireError(f"{label} holds the absolute path {name!r}; refusing to unpack it.")
    base = dest.resolve()
    if not (base / name).resolve().is_relative_to(base):
        raise AcquireError(
            f"{label} holds {name!r}, which points outside the folder it is unpacked into; "
            "refusing to unpack it."
        )


def _extract_tar(archive: Path, dest: Path, label: str) -> None:
    """Check every tar member (plain files and folders only), then extract them all."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_tar_member(member, dest, label)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise AcquireError(f"Unpacking {label} failed: {exc}.") from exc


def _check_tar_member(member: tarfile.TarInfo, dest: Path, label: str) -> None:
    """Allow only regular files and folders whose path stays inside `dest`."""
    _check_member_path(member.name, dest, label)
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "special file"
        raise AcquireError(
            f"{label} holds {member.name!r}, a {kind}; only plain files and folders are "
            "accepted, so refusing to unpack it."
        )


def _extract_zip(archive: Path, dest: Path, label: str) -> None:
    """Check every zip member name, then extract them all."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                _check_member_path(name, dest, label)
            zipped.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AcquireError(f"Unpacking {label} failed: {exc}.") from exc
