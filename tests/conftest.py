"""Shared fixtures: the project environment, a tiny real-data project for end-to-end runs.

The tiny project is a fresh git + DVC repository with this repo's pipeline files, a few real
Hippocampus cases (the source's defects included) and params shrunk to a one-minute CPU run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_HIPPOCAMPUS = REPO.parent / "shared" / "datasets" / "Task04_Hippocampus"
SHARED_ISBI = REPO.parent / "shared" / "datasets" / "isbi2012-membrane"
ISBI_CASES = [str(i) for i in range(8)]
BIN = Path(sys.executable).parent
# Good cases plus the source's real defects: 010 (image missing), 118 (label missing),
# 243 (float-typed label); 281 is the orphan label.
TINY_CASES = ["hippocampus_004", "hippocampus_006", "hippocampus_007", "hippocampus_008",
              "hippocampus_011", "hippocampus_014", "hippocampus_015", "hippocampus_017",
              "hippocampus_019", "hippocampus_020", "hippocampus_010", "hippocampus_118",
              "hippocampus_243"]
PIPELINE_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", "bin", "src", "flows", "prefect.yaml"]

TINY_PARAMS = {
    "split": {"n_folds": 4},
    "validate": {"min_cases": 5},
    "preprocess": {"patch_size": [32, 48, 32]},
    "augment": {"preview_samples": 2},
    "model": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "train": {"epochs": 2, "batch_size": 2, "val_every": 1},
    "evaluate": {"overlay_cases": 1},
    # Exports (TorchScript + ONNX, parity-checked) are tested in tests/models/test_export.py and
    # by the end-to-end run (test_pipeline_e2e), which turns them on; elsewhere they only cost time.
    "register": {"min_mean_dice": 0.0, "export": []},
}


@pytest.fixture(autouse=True, scope="session")
def project_env(tmp_path_factory):
    """segflow's environment, with W&B state in a temporary folder (never the repo). W&B is off
    (each run's start and finish cost seconds in every stage of every pipeline a test runs): the
    tests of tracking turn it on (the `wandb_dir` fixture), and so does the end-to-end run, which
    checks every stage's W&B record."""
    from segflow.env import project_env as defaults

    state = tmp_path_factory.mktemp("segflow-state")
    env = defaults(state)
    env["PREFECT_HOME"] = str(state / "prefect")
    env["SEGFLOW_TRACKING"] = "off"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


WANDB_TEST_GROUP = "pipeline-test-42"


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    """Offline W&B with every folder under tmp_path; returns WANDB_DIR."""
    from segflow.env import wandb_env

    state = tmp_path / "wandb-state"
    env = {**wandb_env(state, project="segflow-test"), "SEGFLOW_RUN_GROUP": WANDB_TEST_GROUP}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("SEGFLOW_TRACKING", raising=False)
    state.mkdir()
    yield state
    import wandb

    # wandb caches its environment per process; start the next test from a clean session.
    wandb.teardown()


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The offline W&B run folders under WANDB_DIR `wandb_dir`, oldest first."""
    return sorted((wandb_dir / "wandb").glob("offline-run-*"))


def offline_run_records(run_dir: Path) -> list[dict]:
    """Every record of an offline W&B run folder, read from its .wandb transaction log by wandb's own CLI."""
    out = subprocess.run([str(BIN / "wandb"), "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def offline_run_header(run_dir: Path) -> dict:
    """The run record of an offline W&B run folder: run_id, run_group, display_name, job_type, ..."""
    (header,) = [r["run"] for r in offline_run_records(run_dir) if r["type"] == "run"]
    return header


def save_nifti(path: Path, array, spacing=(1.0, 1.0, 1.0)) -> None:
    """A NIfTI file with the array's own dtype and a diagonal (spacing) affine."""
    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    image.header.set_data_dtype(array.dtype)
    nib.save(image, str(path))


# Two float32 computations of one network output that differ only in summation order (memory
# layout, batch size, thread count, TorchScript/ONNX kernels, and the CPU: oneDNN picks other
# kernels on AMD EPYC than on Intel Xeon) differ by rounding: measured up to 6e-7 of the output's
# largest magnitude (UNet logits; batch 8 vs 1, channels-last vs first, 1 vs 2 threads). A bound of
# 1e-4 of that magnitude leaves two orders of margin for deeper networks and other CPUs, and a real
# change (another weight, a missing layer) moves an output by O(1) of it.
FLOAT32_REORDER_RTOL = 1e-4


def assert_same_up_to_float32_order(actual, expected) -> None:
    """`actual` equals `expected` up to the rounding of another float32 summation order."""
    import torch

    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=FLOAT32_REORDER_RTOL, atol=FLOAT32_REORDER_RTOL * scale)


def assert_same_labels_where_decided(actual, expected) -> None:
    """Argmax labels of two probability maps that agree up to float32 order: equal wherever the
    top two classes are further apart than that rounding (a near-tie may go either way)."""
    import torch

    assert_same_up_to_float32_order(actual, expected)
    top2 = torch.as_tensor(expected).topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 2 * FLOAT32_REORDER_RTOL
    assert torch.equal(actual.argmax(0)[decided], expected.argmax(0)[decided])


def merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **kwargs.pop("env", {})}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def synthetic_case(seed: int, shape=(36, 48, 36)) -> tuple:
    """An MRI-like volume with two adjacent blobs (labels 1 and 2) at a random offset."""
    import numpy as np

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    centre = np.array(shape)[:, None, None, None] / 2 + rng.integers(-3, 4, size=(3, 1, 1, 1))
    offset = np.array([0, 6, 0])[:, None, None, None]
    label = np.zeros(shape, np.uint8)
    label[(((grid - centre + offset) / 5.0) ** 2).sum(0) < 1] = 1
    label[(((grid - centre - offset) / 5.0) ** 2).sum(0) < 1] = 2
    image = rng.normal(100, 15, shape) + 80 * (label == 1) + 140 * (label == 2)
    return image.astype(np.float32), label


def write_synthetic_dataset(dest: Path) -> None:
    """Stand-in for the real cases (same ids and the same defects) where ../shared is absent."""
    import nibabel as nib
    import numpy as np

    for folder in ("imagesTr", "labelsTr"):
        (dest / folder).mkdir(parents=True)
    for seed, case in enumerate(TINY_CASES):
        image, label = synthetic_case(seed)
        if case != "hippocampus_010":
            nib.save(nib.Nifti1Image(image, np.eye(4)), dest / "imagesTr" / f"{case}.nii.gz")
        if case != "hippocampus_118":
            stored = label.astype(np.float32) if case == "hippocampus_243" else label
            nib.save(nib.Nifti1Image(stored, np.eye(4)), dest / "labelsTr" / f"{case}.nii.gz")
    orphan = synthetic_case(99)[1]
    nib.save(nib.Nifti1Image(orphan, np.eye(4)), dest / "labelsTr" / "hippocampus_281.nii.gz")
    labels = {"0": "background", "1": "Anterior", "2": "Posterior"}
    write_descriptor(dest, {"name": "Hippocampus", "modality": {"0": "MRI"}, "labels": labels})


def write_descriptor(dest: Path, descriptor: dict) -> None:
    descriptor["training"] = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                              for c in TINY_CASES]
    descriptor["numTraining"] = len(TINY_CASES)
    (dest / "dataset.json").write_text(json.dumps(descriptor, indent=1))


def write_tiny_dataset(dest: Path) -> None:
    """A few real cases in MSD layout, copied the way the source delivers them (synthetic
    stand-ins with the same defects when the real data is not beside the repo)."""
    if not SHARED_HIPPOCAMPUS.is_dir():
        write_synthetic_dataset(dest)
        return
    for folder in ("imagesTr", "labelsTr"):
        (dest / folder).mkdir(parents=True)
        for case in TINY_CASES + ["hippocampus_281"]:
            source = SHARED_HIPPOCAMPUS / folder / f"{case}.nii.gz"
            if source.exists():
                shutil.copy2(source, dest / folder / source.name)
    write_descriptor(dest, json.loads((SHARED_HIPPOCAMPUS / "dataset.json").read_text()))


TINY_PARAMS_2D = {
    "data": {"root": "data/isbi2012-membrane", "layout": "folders2d", "local_copy": None, "url": None,
             "md5": None, "labels": {0: "cell", 1: "membrane"}, "label_map": {255: 0, 0: 1}},
    "preprocess": {"patch_size": [128, 128]},
    "model": {"spatial_dims": 2},  # in/out channels: auto, from the images and data.labels
}


def write_tiny_isbi(dest: Path) -> None:
    """A few real ISBI 2012 image/mask pairs (synthetic stand-ins where ../shared is absent)."""
    import cv2
    import numpy as np

    for folder in ("image", "label"):
        (dest / "train" / folder).mkdir(parents=True)
    for i, case in enumerate(ISBI_CASES):
        for folder in ("image", "label"):
            source = SHARED_ISBI / "train" / folder / f"{case}.png"
            if source.exists():
                shutil.copy2(source, dest / "train" / folder / source.name)
                continue
            rng = np.random.default_rng(i)
            mask = np.where(rng.random((64, 64)) > 0.2, 255, 0).astype(np.uint8)
            mask = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST)
            image = (mask * 0.6 + rng.normal(40, 10, mask.shape)).clip(0, 255).astype(np.uint8)
            cv2.imwrite(str(dest / "train" / folder / f"{case}.png"), image if folder == "image" else mask)


def save_itk(path: Path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> None:
    """Write an (x, y, z) array with SimpleITK (NRRD, MetaImage or NIfTI, by the name)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.transpose(array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in np.asarray(direction).ravel()])
    sitk.WriteImage(image, str(path), useCompression=True)


V2_LABELS = {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}


def v2_case(seed: int, shape=(32, 40, 16)) -> tuple:
    """Two channels (an MRI-like and a CT-like one, in HU) and a label with an ignored slab."""
    import numpy as np

    mri, label = synthetic_case(seed, (shape[0], shape[1], shape[2] * 2))
    mri, label = mri[..., ::2], label[..., ::2].copy()  # anisotropic: half the slices
    rng = np.random.default_rng(1000 + seed)
    ct = (-80 + 60 * (label == 1) + 120 * (label == 2) + rng.normal(0, 20, label.shape)).astype(np.float32)
    label[:, :, :2] = V2_LABELS["ignore"]  # the first two slices are not annotated
    return np.stack([mri, ct]), label


def write_nnunet_v2_dataset(dest: Path, n_cases: int = 10, ending: str = ".nrrd", n_test: int = 2,
                            labels: dict | None = None, num_training: int | None = None,
                            **descriptor) -> list[str]:
    """An nnU-Net v2 raw dataset: channels T2 and CT in `_0000`/`_0001` files, anisotropic and
    varying slice spacing, an ignore label, splits_final.json (3 folds) and imagesTs; returns the ids."""
    cases = [f"tiny_{i:03d}" for i in range(n_cases)]
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    for seed, case in enumerate(cases + [f"test_{i:03d}" for i in range(n_test)]):
        image, label = v2_case(seed)
        spacing = (0.8, 0.8, 2.5 if seed % 3 else 2.0)
        folder = "imagesTr" if case.startswith("tiny") else "imagesTs"
        for channel, array in enumerate(image):
            save_itk(dest / folder / f"{case}_{channel:04d}{ending}", array, spacing, origin=(10.0, -4.0, 7.5))
        if folder == "imagesTr":
            save_itk(dest / "labelsTr" / f"{case}{ending}", label, spacing, origin=(10.0, -4.0, 7.5))
    (dest / "dataset.json").write_text(json.dumps({
        "name": "TinyTwoChannel", "channel_names": {"0": "T2", "1": "CT"}, "labels": labels or V2_LABELS,
        "numTraining": n_cases if num_training is None else num_training, "file_ending": ending, **descriptor},
        indent=1))
    folds = [cases[i::3] for i in range(3)]
    (dest / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c not in val], "val": val} for val in folds]))
    return cases


def make_tiny_project(dest: Path, two_d: bool = False) -> Path:
    """A fresh git+DVC repo holding the pipeline, tiny real data and tiny params."""
    for name in PIPELINE_FILES:
        source = REPO / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, dest / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {}))
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY_PARAMS)
    params["data"]["local_copy"] = None
    if two_d:
        params = merge(params, TINY_PARAMS_2D)
        write_tiny_isbi(dest / "data" / "isbi2012-membrane")
    else:
        write_tiny_dataset(dest / "data" / "Task04_Hippocampus")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "config", "user.email", "test@localhost"], dest)
    run(["git", "config", "user.name", "test"], dest)
    run([str(BIN / "dvc"), "init", "-q"], dest)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], dest)
    run([str(BIN / "segflow"), "fetch-data"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny project"], dest)
    return dest


@pytest.fixture(scope="session")
def tiny_project_template(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("tiny") / "project"
    dest.mkdir()
    return make_tiny_project(dest)


@pytest.fixture
def tiny_project(tiny_project_template, tmp_path) -> Path:
    """A private copy of the tiny project (git history and DVC state included)."""
    dest = tmp_path / "project"
    shutil.copytree(tiny_project_template, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def preprocessed_template(tiny_project_template, tmp_path_factory) -> Path:
    """The tiny project run up to the preprocessed cache and the training plan (`dvc repro
    preprocess budget`), once per session; train-stage tests start from a copy of it
    (`preprocessed_project`)."""
    dest = tmp_path_factory.mktemp("preprocessed") / "project"
    shutil.copytree(tiny_project_template, dest, symlinks=True)
    run([str(BIN / "dvc"), "repro", "preprocess", "budget"], dest)
    return dest


def copy_project(template: Path, dest: Path) -> Path:
    """A private copy of a test project (git history, DVC state and outputs included)."""
    shutil.copytree(template, dest, symlinks=True)
    return dest


@pytest.fixture
def preprocessed_project(preprocessed_template, tmp_path) -> Path:
    """A private copy of the tiny project with its preprocessed cache in place."""
    return copy_project(preprocessed_template, tmp_path / "project")
