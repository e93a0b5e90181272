"""read_folder_dataset: 2D image/mask pairs matched by stem, judged by the same manifest and contracts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segflow.config import ValidateConfig
from segflow.data.folders2d import read_folder_dataset
from segflow.data.manifest import build_manifest
from segflow.data.msd import LayoutError
from segflow.validation.contracts import check_manifest

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "isbi2012-membrane"
LABELS = {0: "membrane", 255: "cell"}


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array)


def mask() -> np.ndarray:
    array = np.zeros((6, 8), np.uint8)
    array[1:4, 2:6] = 255
    return array


@pytest.fixture
def folders(tmp_path) -> Path:
    """Images 1, 2, 10 and 3 (3 without mask); masks 1, 2, 10 and 7 (7 without image)."""
    for stem in ("1", "2", "10", "3"):
        write_png(tmp_path / "train/image" / f"{stem}.png", np.full((6, 8), int(stem) * 10, np.uint8))
    for stem in ("1", "2", "10", "7"):
        write_png(tmp_path / "train/label" / f"{stem}.png", mask())
    (tmp_path / "train/image/notes.txt").write_text("not an image")
    return tmp_path


def test_pairs_are_matched_by_stem_in_natural_order(folders):
    dataset = read_folder_dataset(folders, labels=LABELS)
    listed = [c for c in dataset.cases if c.listed]
    assert [c.case_id for c in listed] == ["1", "2", "3", "10"]
    assert (listed[0].image, listed[0].label) == ("train/image/1.png", "train/label/1.png")
    assert dataset.labels == LABELS and dataset.descriptor == "train/image"


def test_image_without_mask_is_a_case_missing_its_label_and_mask_without_image_an_orphan(folders):
    cases = {c.case_id: c for c in read_folder_dataset(folders, labels=LABELS).cases}
    assert cases["3"].listed and cases["3"].label == "train/label/3.png"  # named, though absent
    assert not cases["7"].listed and (cases["7"].image, cases["7"].label) == (None, "train/label/7.png")


def test_folder_delivery_is_judged_like_msd(folders):
    manifest = build_manifest(read_folder_dataset(folders, labels=LABELS))
    result = check_manifest(manifest, sorted(LABELS), ValidateConfig(max_dim=64, min_cases=2))
    found = {(f.case_id, f.rule, f.severity) for f in result.findings}
    assert found == {("3", "label_present", "error"), ("7", "orphan_file", "warning")}
    assert result.kept == ["1", "2", "10"] and result.passed
    (orphan,) = [f for f in result.findings if f.rule == "orphan_file"]
    assert "train/label/7.png" in orphan.message and "train/image" in orphan.message


def test_custom_folders_and_tif_images(tmp_path):
    write_png(tmp_path / "imgs/a.tif", np.zeros((4, 4), np.uint16))
    write_png(tmp_path / "masks/a.png", np.zeros((4, 4), np.uint8))
    (case,) = read_folder_dataset(tmp_path, image_dir="imgs", label_dir="masks", labels={0: "bg"}).cases
    assert (case.case_id, case.image, case.label) == ("a", "imgs/a.tif", "masks/a.png")


def test_missing_image_folder_or_labels_is_a_layout_error(tmp_path):
    with pytest.raises(LayoutError, match="image folder"):
        read_folder_dataset(tmp_path, labels=LABELS)
    with pytest.raises(LayoutError, match="labels"):
        read_folder_dataset(tmp_path, labels={})


@pytest.mark.skipif(not ISBI.is_dir(), reason="shared isbi2012-membrane copy not present")
def test_isbi_membrane_set_is_read_described_and_kept_whole():
    dataset = read_folder_dataset(ISBI, image_dir="train/image", label_dir="train/label", labels=LABELS)
    manifest = build_manifest(dataset)
    assert (manifest["image_shape"] == "[512, 512]").all() and (manifest["n_channels"] == 1).all()
    result = check_manifest(manifest, [0, 255], ValidateConfig(max_dim=1024, min_cases=10))
    assert len(result.kept) == 30 and not result.quarantined and result.passed
    assert not [f for f in result.findings if f.severity == "error"]


def test_a_linked_image_leaving_the_delivery_is_refused_and_named(folders, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    write_png(outside, np.full((6, 8), 99, np.uint8))
    (folders / "train/image/11.png").symlink_to(outside)
    write_png(folders / "train/label/11.png", mask())
    (folders / "train/image/12.png").symlink_to("1.png")  # inside the delivery: fine
    (folders / "train/label/12.png").symlink_to("1.png")

    result = check_manifest(build_manifest(read_folder_dataset(folders, labels=LABELS)), sorted(LABELS),
                            ValidateConfig(max_dim=64, min_cases=2))

    (refused,) = [f for f in result.findings if f.rule == "paths_confined"]
    assert (refused.case_id, refused.file, refused.severity) == ("11", "train/image/11.png", "error")
    assert str(outside) in refused.message and "never read" in refused.message
    assert "11" in result.quarantined and "12" in result.kept
