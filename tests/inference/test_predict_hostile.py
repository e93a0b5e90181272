"""The hostile-input corpus for `segflow predict` (issue 14): files, folders and models a user may
hand it. Each case must end in a sentence naming the file and the rule, never a traceback (nor
click's bare 'Aborted!'), with the documented exit code: 0 every input labelled, 1 some inputs
refused (the rest labelled) or the model unusable, 2 nothing done (unusable input or output
folder, label files that collide, or would overwrite an input or an existing file).

A tiny UNet and 12x10x9 volumes keep the whole corpus to seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BIN, REPO, run, save_nifti
from typer.testing import CliRunner

from segflow.cli import app
from segflow.inference.predict import repair_nonfinite
from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, save_model_file

NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)
SHAPE = (12, 10, 9)
GOOD = Path("in") / "good.nii.gz"
WRITTEN = str(Path("out") / "good.nii.gz")


def tiny_bundle(**info) -> ModelFile:
    torch.manual_seed(0)
    return ModelFile(network="UNet", network_args=NET_ARGS, patch_size=[16, 16, 16],
                       labels={"0": "background", "1": "a", "2": "b"},
                       state_dicts=[build_network("UNet", NET_ARGS).state_dict()], info=info)


def noise(shape=SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=shape).astype(np.float32)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A current folder outside any segflow project holding model.pt and in/good.nii.gz."""
    monkeypatch.chdir(tmp_path)
    save_model_file(tmp_path / "model.pt", tiny_bundle())
    save_nifti(tmp_path / GOOD, noise())
    return tmp_path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if predict reads the model file: checks that need none come first."""
    def refuse(path):
        raise AssertionError(f"the model {path} was loaded before the inputs were checked")

    monkeypatch.setattr("segflow.inference.predict.load_model_file", refuse)


def predict(*args: str, model: str = "model.pt"):
    return CliRunner().invoke(app, ["predict", "--model", model, "--no-tta", *args])


def assert_clean(result, exit_code: int) -> None:
    """The documented exit code and a message, no traceback, no bare 'Aborted!', no unsafe advice."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for crash in ("Traceback", "Aborted", "weights_only"):
        assert crash not in result.output


# -- bad inputs in a folder: each refused by name and rule, the batch goes on, exit 1 -----------------


def _saved_gz(array: np.ndarray) -> bytes:
    """The bytes of `array` saved as a .nii.gz."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        save_nifti(Path(folder) / "x.nii.gz", array)
        return (Path(folder) / "x.nii.gz").read_bytes()


def zero_bytes(folder: Path) -> str:
    (folder / "empty.nii.gz").write_bytes(b"")
    return "empty.nii.gz"


def text_named_nii_gz(folder: Path) -> str:
    (folder / "notes.nii.gz").write_text("patient notes, not an image\n")
    return "notes.nii.gz"


def png_named_nii_gz(folder: Path) -> str:
    import cv2

    (folder / "photo.nii.gz").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    return "photo.nii.gz"


def truncated_nii_gz(folder: Path) -> str:
    data = _saved_gz(noise())
    (folder / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return "cut.nii.gz"


def nii_gz_without_its_checksum(folder: Path) -> str:
    """Cut in the gzip trailer: nibabel alone reads the voxels and never notices."""
    (folder / "tail.nii.gz").write_bytes(_saved_gz(noise())[:-4])
    return "tail.nii.gz"


def truncated_nii(folder: Path) -> str:
    """An uncompressed NIfTI whose header promises more voxels than the file holds."""
    import nibabel as nib

    data = nib.Nifti1Image(noise(), np.eye(4)).to_bytes()
    (folder / "short.nii").write_bytes(data[: len(data) // 3])
    return "short.nii"


def non_finite(folder: Path) -> str:
    array = noise()
    array[0, 0, :2], array[1, 1, 1] = np.nan, np.inf
    save_nifti(folder / "nan.nii.gz", array)
    return "nan.nii.gz"


def two_channels(folder: Path) -> str:
    save_nifti(folder / "dual.nii.gz", np.stack([noise(), noise(seed=1)], axis=-1))
    return "dual.nii.gz"


def planar_nifti(folder: Path) -> str:
    save_nifti(folder / "flat.nii.gz", noise(SHAPE[:2]))
    return "flat.nii.gz"


def dangling_link(folder: Path) -> str:
    os.symlink(folder / "gone-elsewhere", folder / "gone.nii.gz")
    return "gone.nii.gz"


CORPUS = {  # name: (writer, rule, words the message must hold)
    "zero-byte .nii.gz": (zero_bytes, "image_nonempty", "is empty (0 bytes)"),
    "text file named .nii.gz": (text_named_nii_gz, "image_format", "plain text ('patient notes"),
    "PNG named .nii.gz": (png_named_nii_gz, "image_format", "first bytes are png"),
    "truncated .nii.gz": (truncated_nii_gz, "image_readable", "the file is truncated"),
    ".nii.gz cut in its checksum": (nii_gz_without_its_checksum, "image_readable", "gzip stream ends early"),
    "truncated .nii": (truncated_nii, "image_readable", "header declares a 12x10x9 float32 image"),
    "NaN and inf voxels": (non_finite, "intensities_finite", "3 of 1,080 voxels"),
    "two channels for a one-channel model": (two_channels, "channel_count", "2 channel(s); the model expects 1"),
    "2D image for a 3D model": (planar_nifti, "spatial_dims", "is 2D"),
    "link to nothing": (dangling_link, "image_present", "does not exist"),
}


@pytest.mark.parametrize("case", CORPUS)
def test_a_bad_input_is_refused_by_name_and_rule_and_the_rest_is_labelled(here, case):
    write, rule, says = CORPUS[case]
    bad = Path("in") / write(here / "in")
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 1)
    assert result.stdout.split() == [WRITTEN]
    assert f"refused {bad} [{rule}]: " in result.stderr and says in result.stderr
    assert "predict: 1 written, 1 refused" in result.stderr
    assert f"  refused  {bad}  [{rule}]" in result.stderr


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_the_installed_command_survives_the_whole_corpus_in_one_folder(here):
    """The real console script (a fresh process, as a user runs it): the truncated .nii.gz used to
    end in click's bare 'Aborted.' (gzip's EOFError) and stop the batch."""
    for write, _, _ in CORPUS.values():
        write(here / "in")
    done = run([str(BIN / "segflow"), "predict", "--model", "model.pt", "-i", "in", "-o", "out", "--no-tta"],
               here, check=False, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Aborted" not in done.stderr
    assert done.stdout.split() == [WRITTEN]
    assert f"predict: 1 written, {len(CORPUS)} refused" in done.stderr
    for rule in {rule for _, rule, _ in CORPUS.values()}:
        assert f"[{rule}]" in done.stderr


# -- before any work: refused with exit 2, no model read, nothing written --------------------------


def test_the_input_folder_as_output_is_refused_and_no_input_changes(here, no_model_loading):
    before = (here / GOOD).read_bytes()
    for extra in ((), ("--overwrite",)):
        result = predict("-i", "in", "-o", "in", *extra)
        assert_clean(result, 2)
        assert "would overwrite the inputs in/good.nii.gz" in result.stderr
    assert (here / GOOD).read_bytes() == before
    assert sorted(p.name for p in (here / "in").iterdir()) == ["good.nii.gz"]


def test_the_input_folder_as_output_is_fine_when_no_name_collides(here):
    save_nifti(here / "raw" / "scan.nii", noise())
    before = (here / "raw" / "scan.nii").read_bytes()
    result = predict("-i", "raw", "-o", "raw")
    assert_clean(result, 0)
    assert result.stdout.split() == [str(Path("raw") / "scan.nii.gz")]
    assert (here / "raw" / "scan.nii").read_bytes() == before


def test_a_label_file_linked_to_an_input_is_never_written_through(here, no_model_loading):
    (here / "out").mkdir()
    os.symlink(here / GOOD, here / WRITTEN)
    result = predict("-i", "in", "-o", "out", "--overwrite")
    assert_clean(result, 2)
    assert "would overwrite the inputs" in result.stderr


def test_an_existing_label_file_is_replaced_only_with_overwrite(here, monkeypatch):
    (here / "out").mkdir()
    (here / WRITTEN).write_bytes(b"an earlier result")
    with monkeypatch.context() as patched:
        patched.setattr("segflow.inference.predict.load_model_file", lambda path: pytest.fail("model loaded"))
        refused = predict("-i", "in", "-o", "out")
    assert_clean(refused, 2)
    assert "1 label file(s) already exist: out/good.nii.gz; pass --overwrite" in refused.stderr
    assert (here / WRITTEN).read_bytes() == b"an earlier result"
    replaced = predict("-i", "in", "-o", "out", "--overwrite")
    assert_clean(replaced, 0)
    assert (here / WRITTEN).read_bytes() != b"an earlier result"


def test_two_inputs_for_one_label_file_are_refused_naming_both(here, no_model_loading):
    save_nifti(here / "in" / "good.nii", noise())
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 2)
    assert "in/good.nii and in/good.nii.gz would both be labelled good.nii.gz" in result.stderr
    assert not (here / "out").exists()


@pytest.mark.parametrize("output", ["taken", "taken/below/it"])
def test_an_output_that_is_a_file_or_below_one_is_refused(here, no_model_loading, output):
    (here / "taken").write_text("a file")
    result = predict("-i", "in", "-o", output)
    assert_clean(result, 2)
    assert output in result.stderr and ("is a file" in result.stderr or "lies below the file" in result.stderr)


@pytest.mark.parametrize("source, says", [("nowhere", "no such file or folder"),
                                          ("empty", "holds no .nii/.nii.gz/.nrrd/.mha/.mhd/.png/.tif/.bmp file"),
                                          ("model.pt", "not a .nii/.nii.gz/.nrrd/.mha/.mhd/.png/.tif/.bmp file")])
def test_an_unusable_input_is_refused(here, no_model_loading, source, says):
    (here / "empty").mkdir()
    result = predict("-i", source, "-o", "out")
    assert_clean(result, 2)
    assert says in result.stderr and not (here / "out").exists()


# -- non-finite intensities: refused by default (above), repaired on request -------------------------


def test_repair_nonfinite_labels_the_file_and_warns(here):
    non_finite(here / "in")
    result = predict("-i", "in", "-o", "out", "--repair-nonfinite")
    assert_clean(result, 0)
    assert str(Path("out") / "nan.nii.gz") in result.stdout.split()
    assert "WARNING in/nan.nii.gz holds NaN or infinite intensities (3 of 1,080 voxels)" in result.stderr
    assert "[3 non-finite voxels repaired]" in result.stderr


def test_repair_uses_each_channels_finite_median():
    image = np.array([[1.0, 2.0, np.nan, 10.0], [np.inf, -np.inf, 5.0, 5.0]], dtype=np.float32)
    repaired = repair_nonfinite(Path("x.nii.gz"), image)
    np.testing.assert_array_equal(repaired, [[1, 2, 2, 10], [5, 5, 5, 5]])


# -- far from the training data: labelled, warned about, flagged in the summary ------------------------


def test_a_constant_volume_is_labelled_but_flagged(here):
    save_nifti(here / "in" / "blank.nii.gz", np.zeros((24, 20, 16), np.float32))
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 0)
    assert "WARNING in/blank.nii.gz is far out of the training distribution: channel 0 is constant" in result.stderr
    assert "written  in/blank.nii.gz -> out/blank.nii.gz  [out of distribution]" in result.stderr
    assert "written  in/good.nii.gz -> out/good.nii.gz\n" in result.stderr
    assert "predict: 2 written, 0 refused, 1 flagged" in result.stderr


def test_shape_and_spacing_far_from_the_training_cases_are_flagged(here):
    ranges = {"n_cases": 4, "shape": {"min": [10, 8, 8], "max": [14, 12, 10]},
              "spacing": {"min": [1.0, 1.0, 1.0], "max": [1.0, 1.2, 1.5]}}
    save_model_file(here / "model.pt", tiny_bundle(training_ranges=ranges))
    save_nifti(here / "in" / "huge.nii.gz", noise((40, 10, 9)))
    save_nifti(here / "in" / "thick.nii.gz", noise(), spacing=(1.0, 1.0, 5.0))
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 0)
    assert "in/huge.nii.gz is far out of the training distribution: its shape 40x10x9 is far outside" in result.stderr
    assert "in/thick.nii.gz is far out of the training distribution: its spacing 1x1x5 is far outside" in result.stderr
    assert "WARNING in/good.nii.gz" not in result.stderr
    assert "2 flagged" in result.stderr


# -- the model: a file needs no project; hostile model files are described --------------------------


def test_a_model_file_needs_no_project_and_creates_nothing_here(here):
    before = set(os.listdir(here))
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 0)
    assert set(os.listdir(here)) == before | {"out"}


def test_a_registry_reference_outside_a_project_says_so(here, no_model_loading):
    result = predict("-i", "in", "-o", "out", model="champion")
    assert_clean(result, 1)
    assert "'champion' is no model file" in result.stderr and "not inside a segflow project" in result.stderr


def registered_project(folder: Path, model_id: str) -> Path:
    """A segflow project whose registry holds `model_id` (the champion) with the tiny model."""
    shutil.copy2(REPO / "params.yaml", folder / "params.yaml")
    (folder / "dvc.yaml").write_text("")
    save_model_file(folder / "registry" / "models" / model_id / "model.pt", tiny_bundle())
    index = {"champion": model_id, "champions": [model_id], "models": {model_id: {}}}
    (folder / "registry" / "index.json").write_text(json.dumps(index))
    return folder


def test_a_registry_id_prefix_names_the_registered_model_inside_a_project(here):
    registered_project(here, "20250101-000000-abcdef12-000001")
    result = predict("-i", "in", "-o", "out", model="20250101")
    assert_clean(result, 0)
    assert result.stdout.split() == [WRITTEN]


def test_a_file_named_like_a_registered_model_is_ambiguous(here, no_model_loading):
    registered_project(here, "20250101-000000-abcdef12-000001")
    shutil.copy2(here / "model.pt", here / "champion")
    result = predict("-i", "in", "-o", "out", model="champion")
    assert_clean(result, 1)
    assert "'champion' is both a file here and a registered model" in result.stderr
    assert "write ./champion for the file" in result.stderr


def _save(path: Path, payload) -> None:
    torch.save(payload, path)


HOSTILE_MODELS = {  # how to spoil model.pt: what the message must say
    "text file": (lambda path: path.write_text("weights: see wiki\n"), "is a text file"),
    "truncated torch save": (lambda path: path.write_bytes(path.read_bytes()[:4000]), "zip archive cut short"),
    "pickled reference to code": (lambda path: _save(path, {"format": "segflow-model/2", "x": os.system}),
                                  "reference to the Python object posix.system"),
    "a .nii.gz given as the model": (lambda path: path.write_bytes(_saved_gz(noise())), "gzip-compressed data"),
}


@pytest.mark.parametrize("case", HOSTILE_MODELS)
def test_a_hostile_model_file_is_described_without_a_traceback(here, case):
    spoil, says = HOSTILE_MODELS[case]
    spoil(here / "model.pt")
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 1)
    assert "model.pt: not a readable segflow model file: it" in result.stderr and says in result.stderr
    assert not (here / "out").exists()


# -- progress: per-file lines and (long passes) a bar on stderr; stdout lists written files only ------


def test_progress_goes_to_stderr_and_stdout_lists_only_label_files(here, monkeypatch):
    save_nifti(here / "in" / "later.nii.gz", noise(seed=2))
    monkeypatch.setattr("segflow.inference.predict.PROGRESS_WINDOWS", 0)  # every pass counts as long
    result = predict("-i", "in", "-o", "out")
    assert_clean(result, 0)
    assert result.stdout.split() == [WRITTEN, str(Path("out") / "later.nii.gz")]
    assert "[1/2] in/good.nii.gz: shape 12x10x9, 1 window(s) x 1 pass(es)" in result.stderr
    assert "[2/2] in/later.nii.gz" in result.stderr
    assert re.search(r"\[1/2\] done; ETA \d\d:\d\d for the 1 left", result.stderr)  # the pace so far
    assert "100%" in result.stderr  # MONAI's tqdm bar over the windows
