"""read_image / write_label: NIfTI, NRRD and MetaImage (.mha, .mhd + pixel file) decode to the same
(x, y, z) voxels, spacing and RAS affine; labels are written on the reference's grid; a .mhd
header that names a pixel file outside its folder is refused before anything is read; format
sniffing tells NRRD and MetaImage bytes from a file's name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import save_itk

from segflow.data.formats import sniff_format
from segflow.data.images import read_image, write_label
from segflow.data.manifest import build_manifest
from segflow.data.msd import CaseFiles, MsdDataset

SHAPE = (8, 10, 6)  # x, y, z: every axis a different length, so a transposition shows
SPACING = (0.8, 1.2, 2.5)
ORIGIN = (10.0, -4.0, 7.5)
ANGLE = 0.3  # a rotation about z, so direction cosines and the LPS -> RAS flip both matter
DIRECTION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0.0], [np.sin(ANGLE), np.cos(ANGLE), 0.0], [0.0, 0.0, 1.0]])
ITK_NAMES = ("image.nii.gz", "image.nrrd", "image.mha", "image.mhd")


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


def labels() -> np.ndarray:
    array = np.zeros(SHAPE, np.uint8)
    array[1:4, 2:6, 1:3] = 1
    array[5:7, 6:9, 3:5] = 2
    return array


def itk_info(path: Path) -> tuple:
    """Size, spacing, origin and direction as SimpleITK reads the file's header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


def assert_same_geometry(actual: Path, expected: Path) -> None:
    size, spacing, origin, direction = itk_info(actual)
    want_size, want_spacing, want_origin, want_direction = itk_info(expected)
    assert size == want_size
    # NIfTI headers store float32: allow its rounding, nothing more
    np.testing.assert_allclose(spacing, want_spacing, atol=1e-5)
    np.testing.assert_allclose(origin, want_origin, atol=1e-5)
    np.testing.assert_allclose(direction, want_direction, atol=1e-5)


# -- reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ITK_NAMES)
def test_each_format_round_trips_voxels_in_xyz_order_and_spacing(tmp_path, name):
    array = volume()
    save_itk(tmp_path / name, array, SPACING, ORIGIN, DIRECTION)
    image = read_image(tmp_path / name)
    assert image.array.shape == SHAPE and image.spatial_ndim == 3 and image.n_channels == 1
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == list(SPACING) and image.dtype == "float32"


def test_a_nifti_written_by_nibabel_keeps_its_voxels_and_zooms(tmp_path):
    import nibabel as nib

    array = volume()
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), tmp_path / "image.nii")
    image = read_image(tmp_path / "image.nii")
    np.testing.assert_array_equal(image.array, array)
    assert image.spacing == list(SPACING) and image.format == "nifti"
    np.testing.assert_allclose(image.affine, np.diag([*SPACING, 1.0]))


def test_an_mhd_with_its_raw_pixel_file_beside_it_round_trips(tmp_path):
    array = volume()
    image = sitk.GetImageFromArray(np.transpose(array))
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(tmp_path / "image.mhd"), useCompression=False)
    assert "ElementDataFile = image.raw" in (tmp_path / "image.mhd").read_text()
    assert (tmp_path / "image.raw").stat().st_size == array.nbytes
    decoded = read_image(tmp_path / "image.mhd")
    np.testing.assert_array_equal(decoded.array, array)
    assert decoded.spacing == list(SPACING) and decoded.format == "metaimage"


@pytest.mark.parametrize("name", ITK_NAMES[1:])
def test_same_array_and_geometry_read_the_same_as_nifti_and_as_nrrd_or_metaimage(tmp_path, name):
    array = volume()
    save_itk(tmp_path / "image.nii.gz", array, SPACING, ORIGIN, DIRECTION)
    save_itk(tmp_path / name, array, SPACING, ORIGIN, DIRECTION)
    nifti, other = read_image(tmp_path / "image.nii.gz"), read_image(tmp_path / name)
    np.testing.assert_array_equal(other.array, nifti.array)
    np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-5)
    assert other.spacing == nifti.spacing


def test_the_itk_affine_is_ras_the_nifti_convention(tmp_path):
    # ITK's world is LPS: x and y flip sign in RAS, z keeps it
    save_itk(tmp_path / "image.nrrd", volume(), SPACING, ORIGIN)
    affine = read_image(tmp_path / "image.nrrd").affine
    np.testing.assert_allclose(affine, [[-0.8, 0, 0, -10.0], [0, -1.2, 0, 4.0], [0, 0, 2.5, 7.5], [0, 0, 0, 1]])


def test_a_multi_component_nrrd_keeps_its_components_as_channels(tmp_path):
    channels = np.stack([volume(0), volume(1)], axis=-1)  # (x, y, z, c)
    image = sitk.GetImageFromArray(np.transpose(channels, (2, 1, 0, 3)), isVector=True)
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(tmp_path / "two.nrrd"))
    decoded = read_image(tmp_path / "two.nrrd")
    assert decoded.spatial_ndim == 3 and decoded.spatial_shape == list(SHAPE) and decoded.n_channels == 2
    np.testing.assert_array_equal(decoded.channels_first(), np.moveaxis(channels, -1, 0))
    assert decoded.spacing == list(SPACING)


def four_d(path: Path, channels: np.ndarray) -> None:
    """A 4D ITK image, (x, y, z, c) joined along a 4th axis as a 4D NIfTI stores channels."""
    volumes = []
    for index in range(channels.shape[-1]):
        part = sitk.GetImageFromArray(np.transpose(channels[..., index]))
        part.SetSpacing(SPACING)
        volumes.append(part)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))


def test_a_4d_nifti_reads_its_fourth_axis_as_channels(tmp_path):
    channels = np.stack([volume(0), volume(1)], axis=-1)
    four_d(tmp_path / "four.nii.gz", channels)
    decoded = read_image(tmp_path / "four.nii.gz")
    assert decoded.spatial_ndim == 3 and decoded.n_channels == 2 and decoded.spacing == list(SPACING)
    np.testing.assert_array_equal(decoded.channels_first(), np.moveaxis(channels, -1, 0))


@pytest.mark.parametrize("name", ["four.nrrd", "four.mha"])
def test_a_4d_nrrd_or_metaimage_reads_like_the_same_4d_nifti(tmp_path, name):
    channels = np.stack([volume(0), volume(1)], axis=-1)
    four_d(tmp_path / "four.nii.gz", channels)
    four_d(tmp_path / name, channels)
    nifti, other = read_image(tmp_path / "four.nii.gz"), read_image(tmp_path / name)
    assert (other.spatial_ndim, other.n_channels, other.spacing) == (3, 2, list(SPACING))
    np.testing.assert_array_equal(other.channels_first(), nifti.channels_first())
    np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-5)


# -- writing labels on a reference's grid ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["label.nrrd", "label.mha", "label.nii.gz"])
def test_write_label_keeps_the_reference_size_spacing_origin_and_direction(tmp_path, name):
    reference = tmp_path / f"reference{name.removeprefix('label')}"
    save_itk(reference, volume(), SPACING, ORIGIN, DIRECTION)
    write_label(tmp_path / name, labels(), reference)
    assert_same_geometry(tmp_path / name, reference)
    written = read_image(tmp_path / name)
    assert written.dtype == "uint8"
    np.testing.assert_array_equal(written.array, labels())
    np.testing.assert_allclose(written.affine, read_image(reference).affine, atol=1e-5)


def test_write_label_on_a_4d_reference_keeps_its_3d_grid(tmp_path):
    four_d(tmp_path / "four.nrrd", np.stack([volume(0), volume(1)], axis=-1))
    write_label(tmp_path / "label.nrrd", labels(), tmp_path / "four.nrrd")
    size, spacing, _, direction = itk_info(tmp_path / "label.nrrd")
    assert size == SHAPE and spacing == pytest.approx(SPACING) and direction == pytest.approx(np.eye(3).ravel())
    np.testing.assert_array_equal(read_image(tmp_path / "label.nrrd").array, labels())


# -- a .mhd header may only name a pixel file beside it -----------------------------------------------------


def metaimage_header(data_file: str) -> str:
    return ("ObjectType = Image\nNDims = 3\nDimSize = 8 10 6\nElementType = MET_UCHAR\n"
            f"ElementSpacing = 1 1 1\nElementDataFile = {data_file}\n")


@pytest.mark.parametrize("data_file", ["../x.raw", "/etc/passwd", "..\\x.raw", "sub/x.raw", "LIST"])
def test_an_mhd_naming_a_pixel_file_elsewhere_is_refused_before_reading(tmp_path, monkeypatch, data_file):
    folder = tmp_path / "delivery"
    (folder / "sub").mkdir(parents=True)
    for place in (tmp_path / "x.raw", folder / "sub" / "x.raw"):  # a readable pixel file where it points
        place.write_bytes(labels().tobytes(order="F"))
    (folder / "image.mhd").write_text(metaimage_header(data_file))

    def no_reading(*args, **kwargs):
        raise AssertionError("SimpleITK was asked to read the image")

    monkeypatch.setattr(sitk, "ReadImage", no_reading)
    with pytest.raises(ValueError, match="ElementDataFile"):
        read_image(folder / "image.mhd")


def test_an_mhd_naming_a_pixel_file_beside_it_is_read(tmp_path):
    (tmp_path / "x.raw").write_bytes(labels().tobytes(order="F"))
    (tmp_path / "image.mhd").write_text(metaimage_header("x.raw"))
    np.testing.assert_array_equal(read_image(tmp_path / "image.mhd").array, labels())


def blank(value: object) -> bool:
    return value is None or value != value or value == ""  # None, NaN or empty text


def test_an_mhd_whose_pixel_file_is_a_link_out_of_the_delivery_is_never_read(tmp_path):
    outside, root = tmp_path / "outside", tmp_path / "delivery"
    outside.mkdir()
    (root / "imagesTr").mkdir(parents=True)
    (outside / "secret.raw").write_bytes(labels().tobytes(order="F"))
    (root / "imagesTr" / "case.mhd").write_text(metaimage_header("case.raw"))
    (root / "imagesTr" / "case.raw").symlink_to(outside / "secret.raw")
    dataset = MsdDataset(root=root, name="links", labels={0: "bg"}, modality={0: "MRI"},
                         cases=(CaseFiles("case", "imagesTr/case.mhd", None, listed=True),))
    row = build_manifest(dataset).iloc[0]
    assert not row["paths_confined"] and "imagesTr/case.raw" in row["unsafe_reason"]
    assert blank(row["image_shape"])  # nothing was decoded from outside the delivery


# -- sniffing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "found"), [("a.nrrd", "nrrd"), ("a.mha", "metaimage"), ("a.mhd", "metaimage"),
                                             ("a.nii.gz", "gzip"), ("a.nii", "nifti")])
def test_sniffing_recognises_what_simpleitk_writes(tmp_path, name, found):
    save_itk(tmp_path / name, volume(), SPACING)
    assert sniff_format(tmp_path / name) == found


def test_a_handwritten_metaimage_header_is_sniffed_as_metaimage(tmp_path):
    (tmp_path / "image.mhd").write_text(metaimage_header("x.raw"))
    assert sniff_format(tmp_path / "image.mhd") == "metaimage"


@pytest.mark.parametrize("name", ["fake.nrrd", "fake.mha"])
def test_a_png_named_like_an_itk_file_is_reported_as_png(tmp_path, name):
    cv2.imwrite(str(tmp_path / "real.png"), labels()[..., 0])
    (tmp_path / name).write_bytes((tmp_path / "real.png").read_bytes())
    assert sniff_format(tmp_path / name) == "png"


def test_a_bmp_is_sniffed_as_bmp(tmp_path):
    cv2.imwrite(str(tmp_path / "image.bmp"), labels()[..., 0] * 100)
    assert sniff_format(tmp_path / "image.bmp") == "bmp"
    assert read_image(tmp_path / "image.bmp").spatial_shape == [8, 10]
