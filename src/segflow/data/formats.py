"""What a file really is, judged by its first bytes rather than its name.

A delivery may hold a PNG renamed to `.nii.gz`, an uncompressed NIfTI named `.nii.gz`, or an
HTML error page saved by a failed download. Sniffing the signature first lets validation say
"this is not the format its name says" instead of passing a parser's cryptic error along, and
keeps such bytes away from the parsers altogether.
"""

from __future__ import annotations

from pathlib import Path

# Format name -> the file name endings that promise it (lower case).
SUFFIXES = {
    "gzip": (".nii.gz",),
    "nifti": (".nii",),
    "nrrd": (".nrrd",),
    "metaimage": (".mha", ".mhd"),
    "png": (".png",),
    "tiff": (".tif", ".tiff"),
    "bmp": (".bmp",),
}
PLANAR_FORMATS = ("png", "tiff", "bmp")  # 2D image files: (H, W) or (H, W, C)
# Every name ending an image file may have, longest first (so .nii.gz wins over a bare .gz).
IMAGE_SUFFIXES = tuple(sorted((e for endings in SUFFIXES.values() for e in endings), key=len, reverse=True))

_SIGNATURES = (
    ("gzip", 0, (b"\x1f\x8b",)),
    ("png", 0, (b"\x89PNG\r\n\x1a\n",)),
    ("tiff", 0, (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),  # classic and BigTIFF
    ("bmp", 0, (b"BM",)),
    ("nrrd", 0, (b"NRRD000",)),
    # MetaImage: a text header of `Key = value` lines, by convention opening with one of these.
    ("metaimage", 0, (b"ObjectType", b"NDims", b"Comment")),
    ("nifti", 344, (b"n+1\x00", b"ni1\x00")),  # NIfTI-1: magic at byte 344
    ("nifti", 4, (b"n+2\x00",)),  # NIfTI-2: magic right after sizeof_hdr
)
_HEAD_BYTES = 348


def format_from_name(name: str) -> str | None:
    """The format a file name promises ('gzip' for .nii.gz, 'nifti' for .nii, ...), or None."""
    lowered = name.lower()
    for fmt, endings in SUFFIXES.items():
        if lowered.endswith(endings):
            return fmt
    return None


def sniff_bytes(head: bytes) -> str | None:
    """The format whose signature `head` starts with: 'unknown' when none matches, None when empty."""
    if not head:
        return None
    for fmt, offset, magics in _SIGNATURES:
        if any(head[offset : offset + len(m)] == m for m in magics):
            return fmt
    return "unknown"


def sniff_format(path: Path) -> str | None:
    """The format `path` really holds, from its first bytes (None for an empty file)."""
    with open(path, "rb") as handle:
        return sniff_bytes(handle.read(_HEAD_BYTES))


def is_planar(name: str) -> bool:
    """True for 2D image files (PNG/TIF), which have no spacing or affine of their own."""
    return format_from_name(name) in PLANAR_FORMATS


def text_start(head: bytes, width: int = 40) -> str | None:
    """The start of the first line when `head` is printable UTF-8 text (a cut last character
    allowed); None for binary data. Names a text file saved under a model's or an image's name."""
    text = head.decode("utf-8", errors="ignore")
    if not text.strip() or len(text) < len(head) - 3 or not all(c.isprintable() or c in "\t\r\n" for c in text):
        return None
    return text.strip().splitlines()[0][:width]
