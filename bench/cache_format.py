"""Cache format: what one training patch costs to read from each way of storing a case.

A two-channel float32 case of about 64x a Hippocampus crop (140 x 200 x 144) and its uint8 label
are written as (a) one uncompressed .npz (the cache before issue 16), (b) one compressed .npz,
(c) per-array .npy files, read as a memory map (the cache now). Each turn reads one random
64 x 80 x 64 patch of image and label, as the patch sampler does, from a cold start of the file
(np.load each time, as a loader worker would), alternating the formats turn by turn. Reported:
median milliseconds per patch, file size, and the bytes each read pulls into memory.

    .venv/bin/python -m bench.cache_format
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import report

SHAPE = (140, 200, 144)
PATCH = (64, 80, 64)


def write_case(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    label = (rng.random((1, *SHAPE)) > 0.9).astype(np.uint8)
    np.savez(folder / "plain.npz", image=image, label=label)
    np.savez_compressed(folder / "compressed.npz", image=image, label=label)
    np.save(folder / "case.image.npy", image)
    np.save(folder / "case.label.npy", label)
    return {"npz (uncompressed)": folder / "plain.npz", "npz (compressed)": folder / "compressed.npz",
            "npy memory map": folder / "case.image.npy"}


def window(rng: np.random.Generator) -> tuple[slice, ...]:
    starts = [int(rng.integers(0, n - p + 1)) for n, p in zip(SHAPE, PATCH, strict=True)]
    return (slice(None), *[slice(s, s + p) for s, p in zip(starts, PATCH, strict=True)])


def read_patch(kind: str, path: Path, where: tuple[slice, ...]) -> None:
    if kind == "npy memory map":
        image = np.load(path, mmap_mode="r")
        label = np.load(path.with_name("case.label.npy"), mmap_mode="r")
        np.array(image[where]), np.array(label[where])
        return
    with np.load(path) as data:  # a .npz member is read (and inflated) whole
        np.array(data["image"][where]), np.array(data["label"][where])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="segflow-cache-format-") as tmp:
        paths = write_case(Path(tmp))
        times: dict[str, list[float]] = {kind: [] for kind in paths}
        peaks: dict[str, int] = {}
        for _ in range(args.turns):
            where = window(rng)
            for kind, path in paths.items():
                start = time.perf_counter()
                read_patch(kind, path, where)
                times[kind].append((time.perf_counter() - start) * 1000)
        for kind, path in paths.items():
            tracemalloc.start()
            read_patch(kind, path, window(rng))
            peaks[kind] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        sizes = {kind: (path.stat().st_size + (path.with_name("case.label.npy").stat().st_size
                                               if kind == "npy memory map" else 0)) for kind, path in paths.items()}
    results = {kind: {"ms_per_patch": round(statistics.median(times[kind]), 2), "file_mb": round(sizes[kind] / 2**20, 1),
                      "peak_read_mb": round(peaks[kind] / 2**20, 1)} for kind in paths}
    rows = [[kind, r["ms_per_patch"], r["file_mb"], r["peak_read_mb"]] for kind, r in results.items()]
    report("cache_format", {"case_shape": SHAPE, "patch": PATCH, "formats": results}, rows,
           ["format", "ms per patch (median)", "file MB", "memory per read MB"])


if __name__ == "__main__":
    main()
