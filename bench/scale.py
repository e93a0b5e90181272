"""Scale: peak memory and time per stage as the dataset grows in cases and in case size.

Datasets are generated from real Hippocampus cases (synthetic stand-ins where ../shared is
absent): upsampled by `size` per axis (1x, 2x, 4x: about 1x, 8x, 64x the voxels of a crop), given
a second channel (a gamma-transformed copy) and a 2 mm slice spacing (anisotropic), and written
as an nnU-Net v2 raw dataset of N cases (its splits_final.json validates fold 0 on the same 4
cases for every N). For each (size, N) a scratch project runs ingest,
validate, plan, preprocess and train (fixed `train.iterations_per_epoch`, explicit patch and
batch, so an epoch is the same work for any N; the time of epoch 1, which does not validate) as
separate `segflow stage` processes, each timed
and its peak RSS read from the kernel (ru_maxrss of that child). Train runs twice: streaming
patches from the memory-mapped cache (`train.cache_ram_gb: 0`) and with the default in-memory
budget. For the largest size, `segflow predict` labels one case and its peak RSS is recorded.

Goals (issue 16): train peak RSS for the largest N within 15 % of the smallest N at the same case
size (streaming); time per epoch independent of N; predict peak RSS for the 64x case under 4 GB.

    .venv/bin/python -m bench.scale                              # sizes 1 2 4, N 20 40 80 (long)
    .venv/bin/python -m bench.scale --sizes 1 2 --counts 20 80   # a quicker grid
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "Task04_Hippocampus"
BIN = Path(sys.executable).parent
STAGES = ("ingest", "validate", "plan", "preprocess")
SLICE_SPACING = 2.0
PATCH = {1: [32, 48, 32], 2: [48, 64, 48], 4: [64, 80, 64]}


def source_cases(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n distinct (image, label) pairs from the real cases (synthetic when absent); a reused case
    is mirrored, since the validate stage rightly refuses identical cases in two folds."""
    import nibabel as nib

    if SHARED.is_dir():
        listed = json.loads((SHARED / "dataset.json").read_text())["training"]
        pairs = []
        for entry in listed:
            image, label = SHARED / entry["image"], SHARED / entry["label"]
            if image.is_file() and label.is_file():
                pairs.append((np.asarray(nib.load(image).dataobj, np.float32),
                              np.rint(np.asarray(nib.load(label).dataobj)).astype(np.uint8)))
            if len(pairs) == n:
                break
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import synthetic_case

        pairs = [synthetic_case(i) for i in range(n)]
    return [pairs[i % len(pairs)] if i < len(pairs) else tuple(np.flip(a, axis=i // len(pairs) % 3).copy()
                                                                for a in pairs[i % len(pairs)]) for i in range(n)]


def upsampled(array: np.ndarray, size: int, order: int) -> np.ndarray:
    from scipy import ndimage

    return array if size == 1 else ndimage.zoom(array, size, order=order, grid_mode=True, mode="nearest")


def write_dataset(dest: Path, n: int, size: int) -> float:
    """An nnU-Net v2 dataset of n two-channel cases at `size`x per axis; returns its bytes (GB)."""
    import nibabel as nib

    for folder in ("imagesTr", "labelsTr"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0 / size, 1.0 / size, SLICE_SPACING / size, 1.0])
    for i, (image, label) in enumerate(source_cases(n)):
        image, label = upsampled(image, size, 1), upsampled(label, size, 0)
        second = (np.clip(image, 0, None) ** 0.8).astype(np.float32)
        for channel, array in enumerate((image, second)):
            nib.save(nib.Nifti1Image(array, affine), dest / "imagesTr" / f"case_{i:03d}_{channel:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), dest / "labelsTr" / f"case_{i:03d}.nii.gz")
    # Fold 0 validates on the same 4 cases for every N, so validation costs the same at any N.
    cases = [f"case_{i:03d}" for i in range(n)]
    (dest / "splits_final.json").write_text(json.dumps([{"train": cases[4:], "val": cases[:4]},
                                                        {"train": cases[:4], "val": cases[4:]}]))
    (dest / "dataset.json").write_text(json.dumps({
        "name": f"Scale{size}x{n}", "channel_names": {"0": "T1", "1": "T1gamma"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2}, "numTraining": n, "file_ending": ".nii.gz"}))
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 1e9


def make_project(root: Path, data: Path, size: int, iterations: int) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update({"root": str(data), "local_copy": None, "url": None, "md5": None})
    params["validate"]["min_cases"] = 5
    params["preprocess"]["patch_size"] = PATCH[size]
    params["model"].update({"channels": [16, 32, 64, 128], "strides": [2, 2, 2]})
    # Two epochs: the first has no validation (which grows with N), the second validates.
    params["train"].update({"epochs": 2, "batch_size": 2, "iterations_per_epoch": iterations, "val_every": 10})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def set_train(root: Path, **values) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd` as a child; its wall seconds and peak RSS (MiB, from wait4's rusage)."""
    env = {**os.environ, "SEGFLOW_TRACKING": "off", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    output = process.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{output[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def epoch_seconds(root: Path) -> float | None:
    history = root / "artifacts" / "train" / "fold_0" / "history.csv"
    if not history.is_file():
        return None
    import pandas as pd

    return float(pd.read_csv(history)["seconds"].iloc[0])  # epoch 1: training steps only


def run_grid_point(work: Path, size: int, n: int, iterations: int, predict: bool) -> dict:
    data = work / f"data_{size}x_{n}"
    gigabytes = write_dataset(data, n, size)
    root = work / f"project_{size}x_{n}"
    root.mkdir()
    make_project(root, data, size, iterations)
    point = {"size": size, "cases": n, "dataset_gb": round(gigabytes, 3)}
    for name in STAGES:
        point[name] = measured([str(BIN / "segflow"), "stage", name], root)
    for mode, budget in (("streaming", 0), ("in_memory", 4.0)):
        set_train(root, cache_ram_gb=budget)
        shutil.rmtree(root / "artifacts" / "train", ignore_errors=True)
        shutil.rmtree(root / "artifacts" / "checkpoints", ignore_errors=True)
        point[f"train_{mode}"] = {**measured([str(BIN / "segflow"), "stage", "train", "--fold", "0"], root),
                                  "epoch_seconds": epoch_seconds(root)}
    if predict:
        model = root / "artifacts" / "train" / "fold_0" / "model.pt"
        image = sorted((data / "imagesTr").glob("case_000_*.nii.gz"))
        inputs = work / f"predict_in_{size}x"
        inputs.mkdir()
        for path in image:
            shutil.copy2(path, inputs / path.name)
        point["predict"] = measured([str(BIN / "segflow"), "predict", "--model", str(model), "-i", str(inputs),
                                     "-o", str(work / f"predict_out_{size}x"), "--no-tta"], work)
    shutil.rmtree(data)
    return point


def rows_of(points: list[dict]) -> list[list]:
    rows = []
    for p in points:
        rows.append([f"{p['size'] ** 3}x", p["cases"], p["dataset_gb"],
                     *[f"{p[s]['seconds']:.0f} s / {p[s]['peak_rss_mb']:.0f}" for s in STAGES],
                     *[f"{p[m]['peak_rss_mb']:.0f} MiB, {p[m]['epoch_seconds']} s/epoch"
                       for m in ("train_streaming", "train_in_memory")],
                     f"{p['predict']['peak_rss_mb']:.0f} MiB" if "predict" in p else ""])
    return rows


def ratios(points: list[dict]) -> dict:
    """Per case size: train peak RSS and epoch time of the largest N over the smallest."""
    out = {}
    for size in sorted({p["size"] for p in points}):
        at = sorted((p for p in points if p["size"] == size), key=lambda p: p["cases"])
        if len(at) < 2:
            continue
        small, large = at[0], at[-1]
        key = f"{size ** 3}x N{large['cases']}/N{small['cases']}"
        out[key] = {mode: {"rss": round(large[mode]["peak_rss_mb"] / small[mode]["peak_rss_mb"], 3),
                           "epoch_seconds": round(large[mode]["epoch_seconds"] / small[mode]["epoch_seconds"], 3)}
                    for mode in ("train_streaming", "train_in_memory")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 4],
                        help="upsampling per axis (1, 2, 4: 1x, 8x, 64x the voxels)")
    parser.add_argument("--counts", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--iterations", type=int, default=10, help="train.iterations_per_epoch")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="segflow-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    points = []
    for size in args.sizes:
        for n in args.counts:
            print(f"scale: {size ** 3}x cases, N={n} ...", flush=True)
            points.append(run_grid_point(work, size, n, args.iterations, predict=n == min(args.counts)))
    results = {"points": points, "ratios": ratios(points), "iterations_per_epoch": args.iterations,
               "this_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    headers = ["case size", "N", "data GB", *[f"{s} (time / MiB)" for s in STAGES], "train streaming",
               "train in memory", "predict"]
    report("scale", results, rows_of(points), headers)
    print(json.dumps(results["ratios"], indent=1))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
