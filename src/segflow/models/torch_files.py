"""Reading torch files (model bundles, training checkpoints) without ever running their code.

`torch.load(weights_only=True)` refuses anything but tensors and plain containers. When it fails,
its message advises retrying with `weights_only=False`, which would run whatever the file holds:
that advice never reaches a user. The error says instead what the file is, from its bytes (text, a
zip archive that is no torch save, a truncated save, a pickled reference to code).
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch

from segflow.data.formats import text_start

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive since torch 1.6
PICKLE_MAGIC = b"\x80"  # pickle protocol 2+ (a bare pickle, or torch's legacy format)
LEGACY_TORCH_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch's pre-1.6 saves pickle this number first
GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 64


def _describe_zip(path: Path) -> str | None:
    """What a zip archive is when it is no loadable torch save; None when it looks like one."""
    if not zipfile.is_zipfile(path):
        return ("is a zip archive cut short (its closing directory is missing): a torch save truncated, e.g. "
                "by an interrupted copy or download")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if not any(name.endswith("/data.pkl") for name in names):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"is a zip archive that is not a torch save (no data.pkl inside; it holds {shown or 'nothing'})"
    return None


def describe_foreign_bytes(path: Path, head: bytes) -> str | None:
    """What the file is, from its first bytes, when that alone shows it is no torch save."""
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(ZIP_MAGIC):
        return _describe_zip(path)
    if head.startswith(GZIP_MAGIC):
        return "is gzip-compressed data (an image such as .nii.gz?), not a torch save"
    if text_start(head) is not None:
        return f"is a text file ({text_start(head)!r}...), not a torch save"
    if not head.startswith(PICKLE_MAGIC):
        return f"is not a torch save: its first bytes are {head[:8].hex(' ')}"
    if head[2:2 + len(LEGACY_TORCH_MAGIC)] != LEGACY_TORCH_MAGIC:
        return "is a plain Python pickle, not a torch save"
    return None


def _blocked_global(message: str) -> str | None:
    """The Python object a weights-only load refused (`GLOBAL module.name` in torch's message)."""
    found = re.search(r"GLOBAL\s+([\w.]+)", message)
    return found.group(1) if found else None


def _safe_detail(message: str) -> str:
    """torch's first sentence, unless it is advice to load unsafely (weights_only=False)."""
    first = re.split(r"(?<=\.)\s", message.strip(), maxsplit=1)[0][:200]
    return "" if not first or "weights_only" in first else f" ({first})"


def why_unreadable(path: Path, exc: Exception, what: str) -> str:
    """A sentence saying what `path` is, for a file torch.load (weights only) refused as a `what`."""
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    described = describe_foreign_bytes(path, head)
    if described:
        return f"{path}: not a readable {what}: it {described}"
    blocked = _blocked_global(str(exc))
    if blocked:
        return (f"{path}: not a readable {what}: it holds a reference to the Python object {blocked}, "
                "which a segflow file never contains; it was not loaded, since unpickling it could run code. "
                f"Use a {what} written by segflow")
    kind = "a torch save" if head.startswith(ZIP_MAGIC) else "a torch save in the legacy format"
    return f"{path}: not a readable {what}: it is {kind} that is damaged{_safe_detail(str(exc))}"


def load_torch_file(path: Path, what: str) -> object:
    """`torch.load(path, weights_only=True)` on the CPU; a file that is missing, a folder, or does not
    load raises FileNotFoundError / ValueError naming the file and saying what it is (`what` names
    what it should have been, e.g. "segflow model file")."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a {what}")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol note: the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file: say what it is instead
        raise ValueError(why_unreadable(path, exc, what)) from None
