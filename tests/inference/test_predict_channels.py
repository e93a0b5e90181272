"""`segflow predict` on nnU-Net's one-file-per-channel inputs and ITK formats: group_channels makes
one input of `case_0000`, `case_0001`, ... (same folder and format), label_name/label_suffix give
the label file the case id and the input's format, read_input refuses a gap in the channel files
naming the missing one, and save_label writes on the input's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import save_itk

from segflow.inference.predict import InputRefused, group_channels, label_name, label_suffix, read_input, save_label

SHAPE = (8, 10, 6)
SPACING = (0.8, 1.2, 2.5)
ORIGIN = (10.0, -4.0, 7.5)
DIRECTION = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


def names(groups) -> list[tuple[str, list[str]]]:
    return [(case, [p.name for p in files]) for case, files in groups]


def test_channel_files_of_a_case_form_one_input_in_channel_order():
    folder = Path("imagesTs")
    files = [folder / "case_0001.nii.gz", folder / "case_0000.nii.gz", folder / "case_0002.nii.gz"]
    assert names(group_channels(files)) == [("case", ["case_0000.nii.gz", "case_0001.nii.gz", "case_0002.nii.gz"])]


def test_plain_files_stay_inputs_of_their_own():
    files = [Path("in/brain.nii.gz"), Path("in/knee.nrrd"), Path("in/scan_01.mha")]
    assert names(group_channels(files)) == [("brain", ["brain.nii.gz"]), ("knee", ["knee.nrrd"]),
                                            ("scan_01", ["scan_01.mha"])]


def test_channel_files_are_not_grouped_across_formats_or_folders():
    files = [Path("a/case_0000.nii.gz"), Path("a/case_0001.nrrd"), Path("b/case_0001.nii.gz")]
    groups = names(group_channels(files))
    assert sorted(groups) == [("case", ["case_0000.nii.gz"]), ("case", ["case_0001.nii.gz"]),
                              ("case", ["case_0001.nrrd"])]


def test_two_cases_in_one_folder_are_two_inputs():
    files = [Path(f"in/{case}_{i:04d}.nrrd") for case in ("a", "b") for i in range(2)]
    assert names(group_channels(files)) == [("a", ["a_0000.nrrd", "a_0001.nrrd"]), ("b", ["b_0000.nrrd", "b_0001.nrrd"])]


def test_a_plain_file_beside_channel_files_of_the_same_name_is_not_dropped():
    files = [Path("in/case.nii.gz"), Path("in/case_0000.nii.gz"), Path("in/case_0001.nii.gz")]
    grouped = [p.name for _, group in group_channels(files) for p in group]
    assert sorted(grouped) == ["case.nii.gz", "case_0000.nii.gz", "case_0001.nii.gz"]


@pytest.mark.parametrize(("name", "label"), [("case_0000.nii.gz", "case.nii.gz"), ("case.nii.gz", "case.nii.gz"),
                                             ("case_0000.nii", "case.nii.gz"), ("case_0000.nrrd", "case.nrrd"),
                                             ("case.mha", "case.mha"), ("case_0000.mhd", "case.mha"),
                                             ("slice_0000.png", "slice.png"), ("slice.tif", "slice.png")])
def test_label_name_is_the_case_id_in_the_input_format(name, label):
    assert label_name(Path("in") / name) == label


def test_label_name_prefers_the_grouped_case_id():
    assert label_name(Path("in/x_0000.nrrd"), "patient_7") == "patient_7.nrrd"


@pytest.mark.parametrize(("name", "suffix"), [("a.nrrd", ".nrrd"), ("a.NRRD", ".nrrd"), ("a.mhd", ".mha"),
                                              ("a.mha", ".mha"), ("a.nii", ".nii.gz"), ("a.bmp", ".png")])
def test_label_suffix_keeps_the_format_in_one_file(name, suffix):
    assert label_suffix(Path(name)) == suffix


def test_read_input_stacks_the_channel_files_in_order(tmp_path):
    for channel in range(2):
        save_itk(tmp_path / f"case_{channel:04d}.nrrd", volume(channel), SPACING, ORIGIN)
    raw = read_input([tmp_path / "case_0000.nrrd", tmp_path / "case_0001.nrrd"])
    assert raw.image.shape == (2, *SHAPE) and raw.spacing == SPACING
    np.testing.assert_array_equal(raw.image, np.stack([volume(0), volume(1)]))


def test_a_gap_in_the_channel_files_is_refused_naming_the_missing_file(tmp_path):
    for channel in (0, 2):
        save_itk(tmp_path / f"case_{channel:04d}.nii.gz", volume(channel), SPACING)
    with pytest.raises(InputRefused) as raised:
        read_input([tmp_path / "case_0000.nii.gz", tmp_path / "case_0002.nii.gz"])
    assert raised.value.rule == "image_present"
    assert f"{tmp_path / 'case_0001.nii.gz'} does not exist" in str(raised.value)


def test_a_missing_first_channel_is_named(tmp_path):
    for channel in (1, 2):
        save_itk(tmp_path / f"case_{channel:04d}.nrrd", volume(channel), SPACING)
    with pytest.raises(InputRefused, match="case_0000.nrrd does not exist") as raised:
        read_input([tmp_path / "case_0001.nrrd", tmp_path / "case_0002.nrrd"])
    assert raised.value.rule == "image_present"


def test_a_channel_file_of_another_format_than_its_name_is_refused(tmp_path):
    save_itk(tmp_path / "case_0000.nrrd", volume(0), SPACING)
    save_itk(tmp_path / "real.mha", volume(1), SPACING)
    (tmp_path / "case_0001.nrrd").write_bytes((tmp_path / "real.mha").read_bytes())
    with pytest.raises(InputRefused) as raised:
        read_input([tmp_path / "case_0000.nrrd", tmp_path / "case_0001.nrrd"])
    assert raised.value.rule == "image_format" and "case_0001.nrrd" in str(raised.value)


@pytest.mark.parametrize("ending", [".nrrd", ".mha", ".nii.gz"])
def test_save_label_keeps_the_reference_geometry(tmp_path, ending):
    reference = tmp_path / f"case_0000{ending}"
    save_itk(reference, volume(0), SPACING, ORIGIN, DIRECTION)
    labels = (volume(1) * 3).astype(np.uint8)
    dest = tmp_path / "out" / f"case{ending}"
    save_label(dest, labels, reference)
    written, source = sitk.ReadImage(str(dest)), sitk.ReadImage(str(reference))
    assert written.GetSize() == source.GetSize()
    for got, want in ((written.GetSpacing(), source.GetSpacing()), (written.GetOrigin(), source.GetOrigin()),
                      (written.GetDirection(), source.GetDirection())):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert written.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(written)), labels)
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # nothing staged is left behind


def test_without_input_predict_takes_the_project_datasets_images_ts(tmp_path):
    import shutil

    from conftest import REPO

    from segflow.inference.predict import PredictRefused, resolve_io

    with pytest.raises(PredictRefused, match="not a segflow project"):
        resolve_io(None, None, start=tmp_path)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, tmp_path / name)
    with pytest.raises(PredictRefused, match="has no imagesTs/ folder"):
        resolve_io(None, None, start=tmp_path)
    (tmp_path / "data/Task04_Hippocampus/imagesTs").mkdir(parents=True)
    assert resolve_io(None, None, start=tmp_path) == (tmp_path / "data/Task04_Hippocampus/imagesTs",
                                                      tmp_path / "artifacts/predictions/imagesTs")
    with pytest.raises(PredictRefused, match="--output is required"):
        resolve_io(tmp_path, None)


def test_the_summary_names_an_inputs_channel_files():
    from segflow.inference.predict import Outcome, summary_lines

    lines = summary_lines([Outcome(Path("in/case_0000.nrrd"), Path("out/case.nrrd"), channel_files=2),
                           Outcome(Path("in/other.nii.gz"), rule="image_readable")])
    assert lines[1] == "  written  in/case_0000.nrrd (+1 channel files) -> out/case.nrrd"
    assert lines[2] == "  refused  in/other.nii.gz  [image_readable]"
