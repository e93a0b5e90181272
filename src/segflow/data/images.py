"""The one reader and writer of image files, whatever their format.

Every stage and `segflow predict` read pixels and geometry through `read_image`, and predictions
are written back through `write_label` in the input's own format and grid. Three libraries, one
representation:

- NIfTI (`.nii`, `.nii.gz`): nibabel, the reference NIfTI implementation. Its voxel order and RAS
  affine are what every existing segflow model was trained on, so they stay bit-identical.
- NRRD and MetaImage (`.nrrd`, `.mha`, `.mhd`): SimpleITK, which nnU-Net v2 also reads them
  with. Chosen over MONAI's ITKReader because that needs the full `itk` wheels (hundreds of MB)
  and gives no writer; SimpleITK reads and writes these formats with their spacing, direction
  and origin. Its (z, y, x) array is transposed to (x, y, z) and its LPS geometry turned into a
  RAS affine, so a case looks the same whichever format it came in.
- PNG/TIF/BMP (2D): OpenCV, as stored (8/16-bit, grey or colour; colour as RGB), no spacing.

An `ImageFile` keeps spatial axes first and channels after (a 4D NIfTI, an RGB PNG), spacing in
mm rounded to 6 decimals (headers store float32: 1.2 reads 1.2000000477).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.data.formats import format_from_name

ITK_FORMATS = ("nrrd", "metaimage")
NIFTI_FORMATS = ("nifti", "gzip")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DATA_FILE = re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ImageFile:
    """One decoded image file; the axes past `spatial_ndim` are channels."""

    array: np.ndarray
    dtype: str
    spacing: list[float]
    affine: np.ndarray  # (spatial_ndim + 1) square, RAS for 3D; identity for 2D files
    spatial_ndim: int
    format: str  # as segflow.data.formats names it

    @property
    def spatial_shape(self) -> list[int]:
        return [int(s) for s in self.array.shape[: self.spatial_ndim]]

    @property
    def n_channels(self) -> int:
        return int(np.prod(self.array.shape[self.spatial_ndim :], dtype=np.int64))

    def channels_first(self) -> np.ndarray:
        """(C, *spatial): channels moved to the front, one channel added when there is none."""
        if self.array.ndim > self.spatial_ndim:
            return np.moveaxis(self.array, -1, 0).reshape(-1, *self.spatial_shape)
        return self.array[None]


def _spacing(values) -> list[float]:
    return [round(float(v), 6) for v in values]


def _read_nifti(path: Path) -> ImageFile:
    import nibabel as nib

    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    spatial = min(array.ndim, 3)
    zooms = image.header.get_zooms()[:spatial]
    return ImageFile(array, str(image.header.get_data_dtype()), _spacing(zooms), image.affine, spatial,
                     "nifti")


def check_metaimage_data_file(path: Path) -> None:
    """A `.mhd` header names its pixel file; it must lie beside the header (a name, not a path),
    so a header can never make segflow read a file outside the delivery."""
    if path.suffix.lower() != ".mhd":
        return
    name = metaimage_data_file(path)
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.upper() == "LIST":
        raise ValueError(f"its ElementDataFile {name!r} is not a file name beside the header")


def metaimage_data_file(path: Path) -> str:
    """The pixel file a `.mhd` header names (ElementDataFile), as written; '' when it names none."""
    found = _DATA_FILE.search(Path(path).read_text(errors="replace")[:65536])
    return found.group(1) if found else ""


def companion_files(path: Path) -> list[str]:
    """Files beside `path` that reading it opens too (a `.mhd` header's pixel file), by name; the
    manifest checks where they lead before anything is read."""
    if Path(path).suffix.lower() != ".mhd" or not Path(path).is_file():
        return []
    name = metaimage_data_file(path)
    return [name] if name and "/" not in name and "\\" not in name and name not in (".", "..") else []


def itk_affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    """The RAS voxel-to-world affine of an ITK image (ITK's world is LPS)."""
    ndim = len(spacing)
    lps = np.eye(ndim + 1)
    lps[:ndim, :ndim] = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim) * np.asarray(spacing)
    lps[:ndim, ndim] = origin
    return _LPS_TO_RAS @ lps if ndim == 3 else lps


def _read_itk(path: Path) -> ImageFile:
    import SimpleITK as sitk

    check_metaimage_data_file(path)
    image = sitk.ReadImage(str(path))
    dims = image.GetDimension()
    array = sitk.GetArrayFromImage(image)  # ([t,] z, y, x[, components])
    # ITK's axes reversed to x, y, z[, t], vector components after them; a 4th axis is channels.
    array = np.transpose(array, (*range(dims - 1, -1, -1), *range(dims, array.ndim)))
    spatial = min(dims, 3)
    direction = np.asarray(image.GetDirection()).reshape(dims, dims)[:spatial, :spatial]
    affine = itk_affine(direction, image.GetSpacing()[:spatial], image.GetOrigin()[:spatial])
    return ImageFile(array, str(array.dtype), _spacing(image.GetSpacing()[:spatial]), affine, spatial,
                     format_from_name(path.name) or "")


def _read_planar(path: Path) -> ImageFile:
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("OpenCV cannot decode it as an image")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return ImageFile(array, str(array.dtype), [1.0, 1.0], np.eye(3), 2, format_from_name(path.name) or "")


def read_image(path: Path | str) -> ImageFile:
    """Decode an image file, the reader chosen by its name (callers sniff its bytes first)."""
    path = Path(path)
    fmt = format_from_name(path.name)
    if fmt in NIFTI_FORMATS:
        return _read_nifti(path)
    if fmt in ITK_FORMATS:
        return _read_itk(path)
    return _read_planar(path)


def write_label(dest: Path, labels: np.ndarray, reference: Path) -> None:
    """Write a label map (spatial axes, uint8) at `dest` (its extension chooses the format), on the
    grid of the image file `reference`: same header for NIfTI, same spacing/direction/origin for
    NRRD/MetaImage, a plain 8-bit image for 2D files. Callers stage `dest` for atomicity."""
    fmt = format_from_name(dest.name)
    labels = np.ascontiguousarray(labels.astype(np.uint8))
    if fmt in NIFTI_FORMATS:
        import nibabel as nib

        source = nib.load(str(reference))
        out = nib.Nifti1Image(labels, source.affine, header=source.header)
        out.set_data_dtype(np.uint8)
        out.header.set_slope_inter(1, 0)
        nib.save(out, str(dest))
    elif fmt in ITK_FORMATS:
        _write_itk(dest, labels, reference)
    else:
        import cv2

        if not cv2.imwrite(str(dest), labels):
            raise OSError(f"{dest}: OpenCV could not write it")


def _write_itk(dest: Path, labels: np.ndarray, reference: Path) -> None:
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    info.SetFileName(str(reference))
    info.ReadImageInformation()
    image = sitk.GetImageFromArray(np.transpose(labels))
    image.SetSpacing(info.GetSpacing()[: labels.ndim])
    image.SetOrigin(info.GetOrigin()[: labels.ndim])
    full = info.GetDimension()  # a multi-channel reference may have a 4th (channel) axis
    direction = np.asarray(info.GetDirection()).reshape(full, full)[: labels.ndim, : labels.ndim]
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, str(dest), useCompression=True)
