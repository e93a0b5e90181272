"""Label new volumes with a model from the registry (or a model file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segflow.config import load_params
from segflow.data.msd import NIFTI_SUFFIXES, case_id_from_path
from segflow.data.preprocess import is_planar, load_case
from segflow.inference import pick_device, predict_probabilities
from segflow.io import atomic_path
from segflow.models.bundle import ModelBundle, load_bundle
from segflow.postprocessing import apply_postprocessing
from segflow.registry import Registry


def input_files(source: Path) -> list[Path]:
    """An image file, or every NIfTI / 2D image file in a folder (sorted)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES) or is_planar(p))
        if files:
            return files
        raise FileNotFoundError(f"{source}: folder holds no .nii/.nii.gz/.png/.tif file")
    raise FileNotFoundError(f"{source}: no such file or folder")


def resolve_model(root: Path, reference: str) -> Path:
    registry_dir = load_params(root / "params.yaml").register_.registry_dir
    return Registry(root / registry_dir).resolve(reference)


def raw_values(labels: np.ndarray, label_map: dict[str, int]) -> np.ndarray:
    """Class indices back to the delivery's raw mask values (inverse of data.label_map)."""
    if not label_map:
        return labels
    inverse = np.arange(256, dtype=np.uint8)
    for raw, target in label_map.items():
        inverse[target] = int(raw)
    return inverse[labels]


def save_planar(dest: Path, labels: np.ndarray) -> None:
    import cv2

    with atomic_path(dest) as tmp:
        ok, encoded = cv2.imencode(".png", labels.astype(np.uint8))
        if not ok:
            raise ValueError(f"{dest}: could not encode the label image")
        tmp.write_bytes(encoded.tobytes())


def save_label(dest: Path, labels: np.ndarray, reference: Path) -> None:
    """Write a uint8 label NIfTI with the input's affine and header geometry."""
    import nibabel as nib

    source = nib.load(str(reference))
    out = nib.Nifti1Image(labels.astype(np.uint8), source.affine, header=source.header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1, 0)
    with atomic_path(dest) as tmp:
        staged = Path(f"{tmp}.nii.gz")  # nibabel picks gzip from the file name
        out.to_filename(staged)
        staged.replace(tmp)


def label_volume(nets: list, bundle: ModelBundle, path: Path, overlap: float, tta: bool) -> np.ndarray:
    """The pipeline's way end to end: the plan's preprocessing, the fold ensemble's averaged
    probabilities (mirror TTA optional), back onto the input grid, then the chosen postprocessing."""
    from segflow.data.preprocess import restore_to_shape

    volume = load_case(path, preprocessing=bundle.preprocessing)
    expected = bundle.network_args.get("in_channels", 1)
    if volume.image.shape[0] != expected:
        raise ValueError(f"{path}: {volume.image.shape[0]} channel(s), the model expects {expected}")
    probabilities = predict_probabilities(nets, volume.image, bundle.patch_size, tta=tta, overlap=overlap)
    if volume.original_shape and list(volume.original_shape) != list(probabilities.shape[1:]):
        probabilities = restore_to_shape(probabilities, volume.original_shape)
    labels = np.asarray(probabilities.argmax(0)).astype(np.uint8)
    return apply_postprocessing(labels, bundle.postprocessing)


def load_predictor(root: Path, model: str) -> tuple[ModelBundle, list]:
    """The model file `model` names (registry reference or path) and its networks, ready to run."""
    bundle = load_bundle(resolve_model(root, model))
    return bundle, bundle.build(pick_device())


def write_labels(labels: np.ndarray, bundle: ModelBundle, path: Path, output: Path) -> Path:
    """The label file for input `path` in `output`: NIfTI with the input's geometry, or a PNG of
    the delivery's raw mask values for a 2D image."""
    if is_planar(path):
        dest = output / f"{path.stem}.png"
        save_planar(dest, raw_values(labels, bundle.info.get("label_map") or {}))
    else:
        dest = output / f"{case_id_from_path(path.name)}.nii.gz"
        save_label(dest, labels, path)
    return dest


def predict_paths(root: Path, model: str, source: Path, output: Path, overlap: float = 0.5,
                  tta: bool = True) -> Iterator[Path]:
    """Predict every input; yields each written label file."""
    bundle, nets = load_predictor(root, model)
    for path in input_files(source):
        yield write_labels(label_volume(nets, bundle, path, overlap, tta), bundle, path, output)
