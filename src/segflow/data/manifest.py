"""Build the case manifest: one row per delivered case with what validation needs to judge it.

Nothing here raises on a bad case: missing, empty, mislabelled or unreadable files are recorded
in the row (`*_exists`, `*_bytes`, `*_format`, `*_error`) so the validate stage can name every
problem at once. A file is only parsed once its first bytes show it is what its name says, and
a path that would leave the dataset root, as written or through a symbolic link, is never opened
at all (`unsafe_paths`, with the reason in `unsafe_reason`).

Columns per role (`image`, `label`): the first path, `_file` (the file the facts are about: the
first problem file, else the first file), `_exists`, `_bytes`, `_format`, `_format_expected`,
`_error`, then `_shape` (spatial), `_spacing`, `_affine`, `_dtype`. Images add `image_channels`,
`n_channels`, `image_channel_shapes`, `image_channel_spacings` and intensity statistics; labels
add their values and voxel counts. Dataset-wide: `descriptor`, `expected_channels`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.data.formats import format_from_name, sniff_format
from segflow.data.images import ImageFile, companion_files, read_image
from segflow.data.msd import CaseFiles, MsdDataset, confined_path, escaping_link
from segflow.files import file_hash

# What only a descriptor can get wrong (nnU-Net v2 datasets; empty for the other layouts), the same
# in every row: see segflow.data.nnunet_v2 and the validate stage's descriptor rules.
DESCRIPTOR_FACTS = ("declared_cases", "labels_consecutive", "declared_label_values", "file_ending",
                    "file_ending_found")
PERCENTILES = {"intensity_p0_5": 0.5, "intensity_p50": 50.0, "intensity_p99_5": 99.5}
LEADING_COLUMNS = ["case_id", "listed", "image", "label", "image_exists", "label_exists"]
UNSUPPORTED = "unsupported"  # `_format_expected` of a file name no reader supports


def _role_columns(prefix: str) -> list[str]:
    facts = ["file", "bytes", "format", "format_expected", "error", "shape", "spacing", "affine", "dtype"]
    return [f"{prefix}_{name}" for name in facts]


# Every column, always present (empty where unknown), so a delivery in which, say, no image could
# be read still has the schema the contracts expect.
MANIFEST_COLUMNS = [
    *LEADING_COLUMNS, "image_channels", "n_channels", *_role_columns("image"),
    "image_channel_shapes", "image_channel_spacings", "intensity_finite", *PERCENTILES,
    "intensity_mean", "intensity_std", *_role_columns("label"), "label_values", "label_voxels",
    "label_integral", "paths_confined", "unsafe_paths", "unsafe_reason", "content_hash", "descriptor",
    "expected_channels", *DESCRIPTOR_FACTS,
]


def _file_facts(root: Path, rel: str) -> dict:
    """Existence, size and sniffed format of one file, without parsing it."""
    path = root / rel
    facts = {"file": rel, "exists": path.is_file(), "bytes": None, "format": None,
             "format_expected": format_from_name(rel) or UNSUPPORTED}
    if facts["exists"]:
        facts["bytes"] = path.stat().st_size
        facts["format"] = sniff_format(path)
    return facts


def _parseable(facts: dict) -> bool:
    return bool(facts["exists"] and facts["bytes"] and facts["format"] == facts["format_expected"])


def _facts_columns(prefix: str, facts: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in facts.items()} | {f"{prefix}_error": ""}


def _voxel_digest(array: np.ndarray) -> bytes:
    """Digest of the decoded voxels (dtype and shape included): a re-saved copy of a case still
    matches, although gzip stamps a new time into its bytes."""
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


def _raw_digest(path: Path) -> bytes:
    return bytes.fromhex(file_hash(path))


def _json(values) -> str:
    return json.dumps(values)


def _geometry(prefix: str, first: ImageFile, shape: list[int]) -> dict:
    return {
        f"{prefix}_shape": _json(shape),
        f"{prefix}_spacing": _json([round(s, 6) for s in first.spacing]),
        f"{prefix}_affine": _json(np.round(np.asarray(first.affine, dtype=np.float64), 6).tolist()),
        f"{prefix}_dtype": first.dtype,
    }


def _channel_geometry(loaded: list[ImageFile]) -> dict:
    """Channel count and per-file geometry, so contracts can check the channel files agree."""
    return {
        "n_channels": sum(f.n_channels for f in loaded),
        "image_channel_shapes": _json([f.spatial_shape for f in loaded]),
        "image_channel_spacings": _json([[round(s, 6) for s in f.spacing] for f in loaded]),
    }


def _intensity_stats(array: np.ndarray) -> dict:
    values = array.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    stats = {"intensity_finite": bool(finite.all())}
    kept = values[finite] if not stats["intensity_finite"] else values
    if kept.size == 0:
        return stats
    values_at = np.percentile(kept, list(PERCENTILES.values()))
    stats.update({name: float(v) for name, v in zip(PERCENTILES, values_at, strict=True)})
    stats["intensity_mean"] = float(kept.mean())
    stats["intensity_std"] = float(kept.std())
    return stats


def _label_stats(array: np.ndarray) -> dict:
    values, counts = np.unique(array, return_counts=True)
    integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    return {
        "label_values": _json([float(v) if not integral else int(v) for v in values]),
        "label_voxels": _json({str(int(v)): int(c) for v, c in zip(values, counts, strict=True)})
        if integral
        else "{}",
        "label_integral": integral,
    }


def _decoded_columns(prefix: str, loaded: list[ImageFile]) -> dict:
    """Geometry and statistics of decoded files: images by spatial shape over all channels,
    labels by their full shape (a label must be single-channel, so extra axes show as a mismatch)."""
    first = loaded[0]
    if prefix == "label":
        return _geometry(prefix, first, [int(s) for s in first.array.shape]) | _label_stats(first.array)
    voxels = np.concatenate([f.array.ravel() for f in loaded]) if len(loaded) > 1 else first.array
    return _geometry(prefix, first, first.spatial_shape) | _channel_geometry(loaded) | _intensity_stats(voxels)


def _read_all(root: Path, facts: list[dict], prefix: str) -> tuple[dict, list[ImageFile]]:
    """Decode every file; the first failure is recorded against that file."""
    loaded = []
    for fact in facts:
        try:
            loaded.append(read_image(root / fact["file"]))
        except Exception as exc:  # noqa: BLE001 - any reader failure is a finding, not a crash
            reason = str(exc).replace(f"{root}/", "")  # paths in the report stay relative
            return _facts_columns(prefix, fact) | {f"{prefix}_error": f"{type(exc).__name__}: {reason}"}, []
    return _facts_columns(prefix, facts[0]), loaded


def describe_files(root: Path, rels: tuple[str, ...], prefix: str) -> tuple[dict, list[bytes]]:
    """Manifest columns for one role of a case (its image channels, or its label) and the digests
    that make up its content hash. Files are parsed only when all of them look sound."""
    if not rels:
        return {f"{prefix}_file": "", f"{prefix}_exists": False, f"{prefix}_error": ""}, []
    facts = [_file_facts(root, rel) for rel in rels]
    problem = next((fact for fact in facts if not _parseable(fact)), None)
    if problem is not None:
        raw = [_raw_digest(root / f["file"]) for f in facts if f["exists"]]
        return _facts_columns(prefix, problem), raw
    row, loaded = _read_all(root, facts, prefix)
    if not loaded:
        return row, []
    return row | _decoded_columns(prefix, loaded), [_voxel_digest(f.array) for f in loaded]


def _refused_columns(prefix: str, entry: str) -> dict:
    """A path outside the dataset root: named in the report, never looked at (existence unknown)."""
    return {f"{prefix}_file": entry, f"{prefix}_exists": None, f"{prefix}_error": ""}


@dataclass(frozen=True)
class Confinement:
    """Where the files of a delivery may lie: below `root`, or (reached through a link) below
    one of `allowed`; `descriptor` names what lists the cases, for messages."""

    root: Path
    descriptor: str = "dataset.json"
    allowed: tuple[Path, ...] = ()

    def refusal(self, rel: str) -> str | None:
        """Why `rel` must not be opened, or None when it stays inside."""
        if confined_path(rel) is None:
            return f"{self.descriptor} names {rel}, outside the dataset folder"
        target = escaping_link(self.root, rel, self.allowed)
        if target is not None:
            return f"{rel} is a link to {target}, outside the dataset folder"
        for companion in companion_files(self.root / rel):
            pixels = posixpath.join(posixpath.dirname(rel), companion)
            target = escaping_link(self.root, pixels, self.allowed)
            if target is not None:
                return f"{pixels} (the pixel file of {rel}) is a link to {target}, outside the dataset folder"
        return None


def _role(confinement: Confinement, prefix: str,
          rels: tuple[str, ...]) -> tuple[dict, list[bytes], list[tuple[str, str]]]:
    """Columns and digests of one role; refused paths (with their reasons) instead when any of
    its files would be read from outside the delivery."""
    refused = {rel: why for rel in rels if (why := confinement.refusal(rel))}
    if refused:
        return _refused_columns(prefix, next(iter(refused))), [], [*refused.items()]
    row, digests = describe_files(confinement.root, rels, prefix)
    return row, digests, []


def _content_hash(digests: list[bytes]) -> str:
    """sha256 over the case's file digests; empty when no file could be looked at."""
    return hashlib.sha256(b"".join(digests)).hexdigest() if digests else ""


def describe_case(confinement: Confinement, case: CaseFiles) -> dict:
    """All per-case manifest columns for one case, its files read only where `confinement` allows."""
    row = {"case_id": case.case_id, "listed": case.listed, "image": case.image or "",
           "label": case.label or "", "image_channels": _json(list(case.channels))}
    image_row, image_digests, unsafe_images = _role(confinement, "image", case.channels)
    label_row, label_digests, unsafe_labels = _role(confinement, "label", (case.label,) if case.label else ())
    unsafe = unsafe_images + unsafe_labels
    row.update(image_row | label_row)
    row.update({"paths_confined": not unsafe, "unsafe_paths": ", ".join(rel for rel, _ in unsafe),
                "unsafe_reason": "; ".join(why for _, why in unsafe),
                "content_hash": _content_hash(image_digests + label_digests)})
    return row


def build_manifest(dataset: MsdDataset, link_roots: tuple[Path, ...] = ()) -> pd.DataFrame:
    """One row per case (listed first, then orphans), columns in a stable order.

    A file reached through a symbolic link must lie inside the dataset root, or inside one of
    `link_roots` (e.g. the project's DVC cache, which links tracked files into place).
    """
    confinement = Confinement(dataset.root, dataset.descriptor, tuple(link_roots))
    rows = [describe_case(confinement, case) for case in dataset.cases]
    frame = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    frame["descriptor"] = dataset.descriptor
    frame["expected_channels"] = len(dataset.modality) or None
    for column, value in dataset.facts.items():
        frame[column] = value
    return frame


def case_image_paths(data_root: Path, row: pd.Series | dict) -> list[Path]:
    """Every image file of a manifest row: `image_channels` (one file per channel) or `image`."""
    channels = row.get("image_channels")
    listed = json.loads(channels) if isinstance(channels, str) and channels.strip() else []
    return [data_root / rel for rel in (listed or [row["image"]])]
