"""Get the raw MSD dataset into `data.root` so a fresh clone needs no manual step.

Sources, in order: the dataset already in place, a local copy (`data.local_copy`), the official
download (`data.url`, checked against `data.md5`). Every write goes to a hidden temporary sibling
of `root` first and is renamed into place, so an interrupted run never leaves a half-written
`root`. Archives are checked member by member before anything is extracted.
"""

from __future__ import annotations

import os
import shutil
import stat
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
from segflow.files import file_hash

MARKER = "dataset.json"
CHUNK_BYTES = 1 << 20
UNKNOWN_SIZE_REPORT_BYTES = 50 << 20
DOWNLOAD_TIMEOUT_S = 60

Source = Literal["present", "local_copy", "download"]
Reporter = Callable[[str], None]


class AcquireError(RuntimeError):
    """The dataset could not be put in place; the message names the file or URL and the rule."""


class ArchiveTooLarge(AcquireError):
    """An archive would expand (or did expand) beyond `data.archive_max_bytes`/`archive_max_ratio`."""


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.3g} MiB"


@dataclass(frozen=True)
class ArchiveLimits:
    """How far an archive may expand: bytes in all, and times its own size on disk.

    Defaults are `DataConfig`'s (params.yaml `data.archive_max_bytes`, `data.archive_max_ratio`).
    """

    max_bytes: int = DataConfig.model_fields["archive_max_bytes"].default
    max_ratio: float = DataConfig.model_fields["archive_max_ratio"].default

    @classmethod
    def of(cls, cfg: DataConfig) -> ArchiveLimits:
        return cls(cfg.archive_max_bytes, cfg.archive_max_ratio)

    def exceeded(self, expanded: int, archive_bytes: int) -> str | None:
        """Which limit `expanded` bytes from an archive of `archive_bytes` break, or None."""
        if expanded > self.max_bytes:
            return f"over data.archive_max_bytes = {self.max_bytes} ({_gib(self.max_bytes)})"
        if expanded > self.max_ratio * max(archive_bytes, 1):
            return (f"{expanded / max(archive_bytes, 1):.0f} times the archive's {archive_bytes} bytes, over "
                    f"data.archive_max_ratio = {self.max_ratio:g}")
        return None


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
        note = download_dataset(cfg.url, cfg.md5, root, progress, marker, ArchiveLimits.of(cfg))
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
    """Copy the folder `source` to `root` atomically, keeping its defects as is.

    A symbolic link leaving `source` is refused before anything is copied (following it would
    smuggle an outside file into the dataset); links inside `source` are copied as the files
    they point to, so `root` holds plain files only, and a dangling one stays missing.
    """
    _refuse_links_leaving(source)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        shutil.copytree(source, staging, copy_function=shutil.copy2, dirs_exist_ok=True, ignore=_dangling_links)
        _move_into_place(staging, root)
    except OSError as exc:
        raise AcquireError(f"Copying {source} to {root} failed: {exc}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dangling_links(folder: str, names: list[str]) -> list[str]:
    """The names in `folder` that are links to nothing (copytree's own option misjudges relative links)."""
    return [name for name in names if os.path.islink(os.path.join(folder, name))
            and not os.path.exists(os.path.join(folder, name))]


def _refuse_links_leaving(source: Path) -> None:
    """Raise `AcquireError` for the first link below `source` that points outside it (or at a
    folder holding the link itself, which a copy would follow forever)."""
    base = source.resolve()
    for folder, dirs, files in os.walk(source):
        for link in (Path(folder) / name for name in sorted(dirs + files)):
            problem = _link_problem(link, base) if link.is_symlink() else None
            if problem:
                raise AcquireError(f"The local copy {source} holds {link}, a link {problem}; refusing to copy it "
                                   "(put the file itself in the copy, or remove the link).")


def _link_problem(link: Path, base: Path) -> str | None:
    """Why the link `link` must not be followed when copying `base`, or None when it may."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return "that never resolves (a loop)"
    if not target.is_relative_to(base):
        return f"to {target}, outside it"
    if link.parent.resolve().is_relative_to(target):
        return f"to {target}, a folder holding the link itself"
    return None


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


def download_dataset(url: str, md5: str | None, root: Path, progress: Reporter, marker: str = MARKER,
                     limits: ArchiveLimits | None = None) -> str:
    """Download the archive at `url`, check its md5, unpack it (within `limits`) and move the
    dataset to `root`. Returns a short note on the md5 check for the user.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    archive = _download(url, root.parent, progress)
    try:
        note = _verify_md5(archive, url, md5)
        _unpack_into_place(archive, root, label=f"The archive downloaded from {url}", marker=marker,
                           limits=limits)
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


def _unpack_into_place(archive: Path, root: Path, label: str, marker: str = MARKER,
                       limits: ArchiveLimits | None = None) -> None:
    """Extract `archive` beside `root`, find the dataset folder in it and rename it to `root`."""
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".extract", dir=root.parent))
    try:
        safe_extract(archive, staging, label=label, limits=limits)
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


def safe_extract(archive: Path, dest: Path, *, label: str | None = None,
                 limits: ArchiveLimits | None = None) -> None:
    """Extract a tar (plain, .gz, .bz2, .xz) or zip archive into `dest`, refusing unsafe members.

    Every member is checked before anything is written: a path that is absolute or resolves
    outside `dest`, any link, device or other special file, and sizes that together break
    `limits` (default `ArchiveLimits()`) raise `AcquireError` (`ArchiveTooLarge` for sizes).
    Headers can lie, so the bytes actually written are counted too and writing stops at the
    limit; the caller removes `dest` (a temporary folder) after a failure.
    `label` names the archive in messages (default: its path), e.g. the URL it came from.
    """
    archive, dest = Path(archive), Path(dest)
    label = label or str(archive)
    size = archive.stat().st_size if archive.is_file() else 0
    meter = ExpansionMeter(label, limits or ArchiveLimits(), size)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, meter)
    elif _is_tarfile(archive):
        _extract_tar(archive, dest, meter)
    else:
        raise AcquireError(f"{label} is neither a tar nor a zip archive; cannot unpack it.")


def _is_tarfile(archive: Path) -> bool:
    """True for a readable tar archive, compressed or not."""
    try:
        return tarfile.is_tarfile(archive)
    except OSError:
        return False


@dataclass
class ExpansionMeter:
    """The bytes an archive expands to, checked against its limits from the member headers before
    writing (`check_headers`) and again while writing (`copy`), since headers can lie."""

    label: str
    limits: ArchiveLimits
    archive_bytes: int
    written: int = 0

    def check_headers(self, sizes: dict[str, int]) -> None:
        """Refuse the archive when its members' declared sizes together break a limit."""
        total = sum(sizes.values())
        problem = self.limits.exceeded(total, self.archive_bytes)
        if problem:
            largest = max(sizes, key=sizes.__getitem__)
            raise ArchiveTooLarge(
                f"{self.label} would expand to {total} bytes ({_gib(total)}), {problem}; its largest member is "
                f"{largest!r} ({sizes[largest]} bytes). Refusing to unpack it; raise the limit in params.yaml "
                "if the delivery is genuine.")

    def copy(self, source, target: Path, name: str, declared: int) -> None:
        """Write member `name` from the stream `source` to `target`, stopping (and removing
        `target`) once it outgrows its declared size or the archive outgrows its limits."""
        try:
            with open(target, "wb") as out:
                member_bytes = 0
                while chunk := source.read(CHUNK_BYTES):
                    member_bytes += len(chunk)
                    self._count(len(chunk), name, member_bytes, declared)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _count(self, n_bytes: int, name: str, member_bytes: int, declared: int) -> None:
        self.written += n_bytes
        if member_bytes > declared:
            raise ArchiveTooLarge(f"{self.label}: member {name!r} expands past the {declared} bytes its header "
                                  "declares; the archive lies about its sizes, so unpacking stopped.")
        problem = self.limits.exceeded(self.written, self.archive_bytes)
        if problem:
            raise ArchiveTooLarge(f"{self.label}: unpacking {name!r} took the archive to {self.written} bytes, "
                                  f"{problem}; unpacking stopped.")


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


def _refuse_special(label: str, name: str, kind: str) -> None:
    raise AcquireError(f"{label} holds {name!r}, a {kind}; only plain files and folders are accepted, "
                       "so refusing to unpack it.")


def _extract_tar(archive: Path, dest: Path, meter: ExpansionMeter) -> None:
    """Check every tar member (plain files and folders only) and the sizes, then write them."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_tar_member(member, dest, meter.label)
            meter.check_headers({m.name: m.size for m in members if m.isfile()})
            for member in members:
                _write_tar_member(tar, member, dest, meter)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AcquireError(f"Unpacking {meter.label} failed: {exc}.") from exc


def _check_tar_member(member: tarfile.TarInfo, dest: Path, label: str) -> None:
    """Allow only regular files and folders whose path stays inside `dest`."""
    _check_member_path(member.name, dest, label)
    if not (member.isfile() or member.isdir()):
        _refuse_special(label, member.name, "link" if member.issym() or member.islnk() else "special file")


def _write_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, meter: ExpansionMeter) -> None:
    target = dest / member.name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    meter.copy(tar.extractfile(member), target, member.name, member.size)


def _is_zip_link(info: zipfile.ZipInfo) -> bool:
    """True for a member stored with Unix symlink mode (zipfile would write it as a plain file)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(archive: Path, dest: Path, meter: ExpansionMeter) -> None:
    """Check every zip member name and the sizes, then write them."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for info in members:
                _check_member_path(info.filename, dest, meter.label)
                if _is_zip_link(info):
                    _refuse_special(meter.label, info.filename, "link")
            meter.check_headers({i.filename: i.file_size for i in members if not i.is_dir()})
            for info in members:
                _write_zip_member(zipped, info, dest, meter)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise AcquireError(f"Unpacking {meter.label} failed: {exc}.") from exc


def _write_zip_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, meter: ExpansionMeter) -> None:
    target = dest / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipped.open(info) as source:
        meter.copy(source, target, info.filename, info.file_size)
