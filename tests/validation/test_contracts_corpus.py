"""A generated bad-input corpus: every kind of defect in one delivery, beside good cases.

The delivery is a two-channel MSD/nnU-Net dataset: good cases come both as one 4D NIfTI with
channels last (MSD BraTS) and as nnU-Net channel files (`x_0000`, `x_0001`) while dataset.json
names `x.nii.gz`, and one through a symbolic link inside the delivery. Each defect case carries
exactly one defect and must produce its own named finding; the good cases must be kept without a
single finding. Hostile entries (`../`, absolute paths, links to files outside, /etc/passwd) are
refused before a byte of them is read. Then the real Hippocampus copy must give exactly its
documented defects.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from segflow.config import ValidateConfig
from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset
from segflow.validation.contracts import check_manifest

SHAPE = (8, 9, 7)
DECLARED = [0, 1, 2, 3]  # 3 is declared but drawn in no case: declared_label_present
MAX_DIM = 24
MIN_CASES = 50  # more than the delivery has: min_cases
GOOD_4D = [f"good4d_{i:02d}" for i in range(6)]
GOOD_SPLIT = [f"goodsplit_{i:02d}" for i in range(6)]
GOOD_LINKED = ["goodlink_00"]  # imagesTr/goodlink_00.nii.gz links to ../store/: inside the delivery, fine
GOOD = GOOD_4D + GOOD_SPLIT + GOOD_LINKED
HIPPOCAMPUS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "Task04_Hippocampus"

# case id -> (rule, severity) it must produce. Kinds marked with a dataset-level rule are judged
# over the usable cases; "*" findings concern the delivery as a whole.
EXPECTED = {
    "missing_image": ("image_present", "error"),
    "missing_channel": ("image_present", "error"),
    "missing_label": ("label_present", "error"),
    "empty_image": ("image_nonempty", "error"),
    "empty_label": ("label_nonempty", "error"),
    "png_named_nifti": ("image_format", "error"),
    "uncompressed_label": ("label_format", "error"),
    "truncated_image": ("image_readable", "error"),
    "corrupt_label": ("label_readable", "error"),
    "channels_differ": ("channels_consistent", "error"),
    "one_channel": ("channel_count", "error"),
    "shape_mismatch": ("shapes_match", "error"),
    "spacing_mismatch": ("spacing_match", "error"),
    "shifted_label": ("affine_match", "error"),
    "too_large": ("dimensions_sane", "error"),
    "nan_image": ("intensities_finite", "error"),
    "fractional_label": ("label_integral", "error"),
    "undeclared_value": ("label_values_declared", "error"),
    "parent_path": ("paths_confined", "error"),
    "absolute_path": ("paths_confined", "error"),
    "absolute_inside": ("paths_confined", "error"),  # absolute, though it names a file of the delivery
    "link_outside": ("paths_confined", "error"),
    "link_to_passwd": ("paths_confined", "error"),
    "float_label": ("label_integer_dtype", "warning"),
    "no_foreground": ("foreground_present", "warning"),
    "orphan": ("orphan_file", "warning"),
    "listed_twice": ("unique_case_ids", "error"),
    "copy_a": ("duplicate_content", "warning"),
    "copy_b": ("duplicate_content", "warning"),
    "leak_a": ("content_leakage", "error"),
    "leak_b": ("content_leakage", "error"),
    "coarse_spacing": ("spacing_outlier", "warning"),
    "big_crop": ("shape_outlier", "warning"),
    "bright": ("intensity_outlier", "warning"),
    "int16_image": ("uniform_image_dtype", "warning"),  # reported for the delivery ("*")
}
DELIVERY_RULES = {"min_cases": "error", "declared_label_present": "error", "uniform_image_dtype": "warning"}
KEPT_WITH_WARNINGS = {"float_label", "no_foreground", "copy_a", "copy_b", "leak_a", "leak_b", "coarse_spacing",
                      "big_crop", "bright", "int16_image", "listed_twice"}
FOLDS = {"leak_a": 0, "leak_b": 1, "copy_a": 2, "copy_b": 2}


# ------------------------------------------------------------------ writing the delivery


def affine(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    matrix = np.diag([*spacing, 1.0])
    matrix[:3, 3] = origin
    return matrix


def nifti_bytes(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> bytes:
    """An uncompressed NIfTI-1 file, in memory."""
    image = nib.Nifti1Image(array, affine(spacing, origin))
    image.header.set_data_dtype(array.dtype)
    return image.to_bytes()


def save(path: Path, content: np.ndarray | bytes, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> None:
    """Arrays become .nii.gz files (gzip time stamp fixed, so equal arrays give equal files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(gzip.compress(nifti_bytes(content, spacing, origin), mtime=0))


def channel(seed: int, shape=SHAPE, scale: float = 1.0) -> np.ndarray:
    """A smooth ramp plus faint noise: intensity statistics barely differ between good cases."""
    ramp = np.linspace(0.0, 100.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    noise = np.random.default_rng(seed).normal(0, 0.01, shape).astype(np.float32)
    return (ramp + noise) * np.float32(scale)


def image4d(seed: int, shape=SHAPE, scale: float = 1.0) -> np.ndarray:
    return np.stack([channel(seed, shape, scale), channel(seed + 1000, shape, scale)], axis=-1)


def label(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    array = np.zeros(shape, dtype=dtype)
    array[1:3, 1:3, 1:3] = 1
    array[4:6, 4:6, 2:4] = 2
    return array


def png_bytes() -> bytes:
    import cv2

    return cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()


class Delivery:
    """Writes cases below `root` and collects their dataset.json entries."""

    def __init__(self, root: Path):
        self.root, self.entries = root, []

    def case(self, case_id: str, image=None, lbl=None, *, spacing=(1.0, 1.0, 1.0), label_spacing=None,
             label_origin=(0.0, 0.0, 0.0), entry: dict | None = None) -> None:
        if image is not None:
            save(self.root / "imagesTr" / f"{case_id}.nii.gz", image, spacing)
        if lbl is not None:
            save(self.root / "labelsTr" / f"{case_id}.nii.gz", lbl, label_spacing or spacing, label_origin)
        self.entries.append(entry or {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})

    def channels(self, case_id: str, channels: list[np.ndarray], lbl: np.ndarray) -> None:
        """nnU-Net v1: one file per channel, dataset.json names the case without suffix."""
        for index, array in enumerate(channels):
            save(self.root / "imagesTr" / f"{case_id}_{index:04d}.nii.gz", array)
        self.case(case_id, None, lbl)

    def link(self, case_id: str, target: Path | str) -> None:
        """A case whose image is a symbolic link to `target` (its label a plain file)."""
        (self.root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (self.root / "imagesTr" / f"{case_id}.nii.gz").symlink_to(target)
        self.case(case_id, None, label())

    def finish(self) -> None:
        labels = {str(v): f"class {v}" for v in DECLARED}
        descriptor = {"name": "Corpus", "modality": {"0": "T1", "1": "T2"}, "labels": labels, "training": self.entries}
        (self.root / "dataset.json").write_text(json.dumps(descriptor))


def write_good(delivery: Delivery) -> None:
    for i, case_id in enumerate(GOOD_4D):
        delivery.case(case_id, image4d(i), label())
    for i, case_id in enumerate(GOOD_SPLIT):
        delivery.channels(case_id, [channel(100 + i), channel(200 + i)], label())
    for i, case_id in enumerate(GOOD_LINKED):
        save(delivery.root / "store" / f"{case_id}.nii.gz", image4d(50 + i))
        delivery.link(case_id, f"../store/{case_id}.nii.gz")


def write_file_defects(d: Delivery, outside: Path) -> None:
    """Defects of single files: missing, empty, wrong format, undecodable, outside the root."""
    d.case("missing_image", None, label())
    d.channels("missing_channel", [channel(1)], label())
    d.case("missing_label", image4d(2), None)
    d.case("empty_image", b"", label())
    d.case("empty_label", image4d(3), b"")
    d.case("png_named_nifti", png_bytes(), label())
    d.case("uncompressed_label", image4d(4), nifti_bytes(label()))
    d.case("truncated_image", gzip.compress(nifti_bytes(image4d(5)), mtime=0)[:400], label())
    d.case("corrupt_label", image4d(6), b"\x1f\x8b" + b"not deflate data" * 8)
    save(outside / "secret.nii.gz", image4d(7))
    d.case("parent_path", None, label(), entry={"image": "./imagesTr/../../outside/secret.nii.gz",
                                                "label": "./labelsTr/parent_path.nii.gz"})
    d.case("absolute_path", image4d(8), None, entry={"image": "./imagesTr/absolute_path.nii.gz",
                                                     "label": str(outside / "secret.nii.gz")})
    d.case("absolute_inside", image4d(9), label(), entry={
        "image": str(d.root / "imagesTr" / "absolute_inside.nii.gz"), "label": "./labelsTr/absolute_inside.nii.gz"})
    d.link("link_outside", outside / "secret.nii.gz")
    d.link("link_to_passwd", "/etc/passwd")


def write_content_defects(d: Delivery) -> None:
    """Defects of what the files hold: geometry, channels, intensities, label values."""
    nan_image = image4d(10)
    nan_image[0, 0, 0, 0] = np.nan
    fractional, undeclared = label(dtype=np.float32), label()
    fractional[0, 0, 0] = 0.5
    undeclared[0, 0, 0] = 7
    d.channels("channels_differ", [channel(11), channel(12, (8, 9, 6))], label())
    d.case("one_channel", channel(13), label())
    d.case("shape_mismatch", image4d(14), label((8, 9, 6)))
    d.case("spacing_mismatch", image4d(15), label(), label_spacing=(1.0, 1.0, 2.0))
    d.case("shifted_label", image4d(16), label(), label_origin=(2.0, 0.0, 0.0))
    d.case("too_large", image4d(17, (MAX_DIM + 4, 9, 7)), label((MAX_DIM + 4, 9, 7)))
    d.case("nan_image", nan_image, label())
    d.case("fractional_label", image4d(18), fractional)
    d.case("undeclared_value", image4d(19), undeclared)
    d.case("float_label", image4d(20), label(dtype=np.float32))
    d.case("no_foreground", image4d(21), np.zeros(SHAPE, np.uint8))


def write_delivery_defects(d: Delivery) -> None:
    """Defects visible only across cases: listing, copies, leakage, outliers, dtypes."""
    save(d.root / "imagesTr" / "orphan.nii.gz", image4d(30))
    d.case("listed_twice", image4d(31), label())
    d.entries.append(dict(d.entries[-1]))
    for case_id in ("copy_a", "copy_b"):
        d.case(case_id, image4d(32), label())
    for case_id in ("leak_a", "leak_b"):
        d.case(case_id, image4d(33), label())
    d.case("coarse_spacing", image4d(34), label(), spacing=(3.0, 3.0, 3.0))
    d.case("big_crop", image4d(35, (20, 21, 19)), label((20, 21, 19)))
    d.case("bright", image4d(36, scale=1000.0), label())
    d.case("int16_image", np.rint(image4d(37)).astype(np.int16), label())


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    base = tmp_path_factory.mktemp("corpus")
    delivery = Delivery(base / "delivery")
    write_good(delivery)
    write_file_defects(delivery, base / "outside")
    write_content_defects(delivery)
    write_delivery_defects(delivery)
    delivery.finish()
    return build_manifest(read_msd_dataset(delivery.root))


@pytest.fixture(scope="module")
def result(manifest):
    return check_manifest(manifest, DECLARED, ValidateConfig(max_dim=MAX_DIM, min_cases=MIN_CASES), folds=FOLDS)


def rules_of(result, case_id: str) -> set[tuple[str, str]]:
    return {(f.rule, f.severity) for f in result.findings if f.case_id == case_id}


# ------------------------------------------------------------------ the corpus


def test_corpus_has_at_least_15_kinds_and_10_good_cases():
    assert len({rule for rule, _ in EXPECTED.values()} | set(DELIVERY_RULES)) >= 15
    assert len(GOOD) >= 10


@pytest.mark.parametrize("case_id", sorted(EXPECTED))
def test_each_defect_gives_its_own_named_finding(result, case_id):
    rule, severity = EXPECTED[case_id]
    finding_case = "*" if rule == "uniform_image_dtype" else case_id
    assert (rule, severity) in rules_of(result, finding_case)


@pytest.mark.parametrize("rule", sorted(DELIVERY_RULES))
def test_delivery_level_defects_are_named_for_the_delivery(result, rule):
    assert (rule, DELIVERY_RULES[rule]) in rules_of(result, "*")


def test_single_file_and_content_defects_cause_no_other_error(result):
    """One defect, one error: a bad file is not parsed further, so nothing cascades."""
    for case_id, (rule, severity) in EXPECTED.items():
        if severity != "error" or case_id in {"fractional_label", "listed_twice", "leak_a", "leak_b"}:
            continue  # non-integral values are also undeclared; dataset rules add to case rules
        errors = {r for r, s in rules_of(result, case_id) if s == "error"}
        assert errors == {rule}, case_id


def test_good_cases_are_kept_without_any_finding(result):
    assert not [f for f in result.findings if f.case_id in GOOD]
    assert set(GOOD) <= set(result.kept)


def test_error_cases_are_quarantined_and_warning_cases_kept(result):
    case_errors = {c for c, (r, s) in EXPECTED.items() if s == "error"} - {"listed_twice", "leak_a", "leak_b"}
    assert set(result.quarantined) == case_errors
    assert set(result.kept) == set(GOOD) | KEPT_WITH_WARNINGS


def test_dataset_level_errors_reject_the_delivery(result):
    assert not result.passed
    assert {f.rule for f in result.dataset_errors} == {"unique_case_ids", "content_leakage", "min_cases",
                                                       "declared_label_present"}
    (absent,) = [f for f in result.dataset_errors if f.rule == "declared_label_present"]
    assert "label 3" in absent.message


def test_findings_name_the_offending_file_in_a_sentence(result):
    by_case = {(f.case_id, f.rule): f for f in result.findings}
    missing = by_case[("missing_channel", "image_present")]
    assert missing.file == "imagesTr/missing_channel_0001.nii.gz" and missing.file in missing.message
    wrong = by_case[("png_named_nifti", "image_format")]
    assert "png" in wrong.message and "gzip" in wrong.message
    refused = by_case[("parent_path", "paths_confined")]
    assert refused.file == "./imagesTr/../../outside/secret.nii.gz" and "outside the dataset folder" in refused.message
    leak = by_case[("leak_a", "content_leakage")]
    assert "leak_b" in leak.message and "another fold" in leak.message


def test_paths_outside_the_root_are_never_opened(manifest):
    rows = manifest[manifest["listed"]].set_index("case_id")
    assert pd.isna(rows.loc["parent_path", "image_exists"]) and pd.isna(rows.loc["parent_path", "image_shape"])
    assert pd.isna(rows.loc["absolute_path", "label_exists"]) and pd.isna(rows.loc["absolute_path", "label_shape"])
    for linked in ("link_outside", "link_to_passwd"):  # not even the magic bytes
        assert pd.isna(rows.loc[linked, "image_bytes"]) and pd.isna(rows.loc[linked, "image_format"])


def test_refused_paths_are_named_as_given_with_the_rule(result):
    by_case = {(f.case_id, f.rule): f for f in result.findings}
    for case_id in ("absolute_path", "absolute_inside"):
        refused = by_case[(case_id, "paths_confined")]
        assert Path(refused.file).is_absolute() and refused.file.endswith(".nii.gz")
        assert f"dataset.json names {refused.file}, outside the dataset folder" in refused.message
    linked = by_case[("link_outside", "paths_confined")]
    assert linked.file == "imagesTr/link_outside.nii.gz"
    assert "imagesTr/link_outside.nii.gz is a link to" in linked.message and "outside/secret.nii.gz" in linked.message
    assert "/etc/passwd" in by_case[("link_to_passwd", "paths_confined")].message


def test_a_file_listed_by_an_absolute_path_is_an_orphan_under_its_own_name(result):
    """The delivery's own file is unused (its listing was refused): the warning names that file,
    not the absolute entry of the listed case with the same id."""
    orphan = next(f for f in result.findings if (f.case_id, f.rule) == ("absolute_inside", "orphan_file"))
    assert orphan.file == "imagesTr/absolute_inside.nii.gz" and orphan.message.startswith(orphan.file)


def test_both_channel_layouts_describe_two_channels(manifest):
    rows = manifest.drop_duplicates("case_id").set_index("case_id")
    for case_id in (GOOD_4D[0], GOOD_SPLIT[0]):
        assert rows.loc[case_id, "n_channels"] == 2
        assert json.loads(rows.loc[case_id, "image_shape"]) == list(SHAPE)
    assert json.loads(rows.loc[GOOD_SPLIT[0], "image_channels"]) == [
        f"imagesTr/{GOOD_SPLIT[0]}_0000.nii.gz", f"imagesTr/{GOOD_SPLIT[0]}_0001.nii.gz"]
    assert rows.loc[GOOD_SPLIT[0], "image"] == f"imagesTr/{GOOD_SPLIT[0]}_0000.nii.gz"


def test_without_folds_copies_are_only_warnings(manifest):
    unfolded = check_manifest(manifest, DECLARED, ValidateConfig(min_cases=10, max_dim=MAX_DIM))
    assert not [f for f in unfolded.findings if f.rule == "content_leakage"]
    assert {"leak_a", "leak_b", "copy_a", "copy_b"} <= {f.case_id for f in unfolded.findings if f.rule == "duplicate_content"}


def test_manifest_read_back_from_csv_gives_the_same_verdict(manifest, result):
    """The validate stage reads manifest.csv: the CSV round trip must not change a finding."""
    buffer = io.StringIO()
    manifest.to_csv(buffer, index=False)
    buffer.seek(0)
    again = check_manifest(pd.read_csv(buffer, keep_default_na=True), DECLARED,
                           ValidateConfig(max_dim=MAX_DIM, min_cases=MIN_CASES), folds=FOLDS)
    assert again.findings == result.findings and again.kept == result.kept


# ------------------------------------------------------------------ the real Hippocampus copy

KNOWN_DEFECTS = {
    ("hippocampus_010", "image_present", "error"),
    ("hippocampus_118", "label_present", "error"),
    ("hippocampus_281", "orphan_file", "warning"),
    ("hippocampus_243", "label_integer_dtype", "warning"),
    ("*", "uniform_image_dtype", "warning"),
}
OUTLIER_RULES = {"spacing_outlier", "shape_outlier", "intensity_outlier"}


@pytest.fixture(scope="module")
def hippocampus():
    if not HIPPOCAMPUS.is_dir():
        pytest.skip("shared Task04_Hippocampus copy not present")
    manifest = build_manifest(read_msd_dataset(HIPPOCAMPUS))
    return check_manifest(manifest, [0, 1, 2], ValidateConfig(max_dim=1024, min_cases=10))


def test_hippocampus_reports_exactly_its_known_defects(hippocampus):
    found = {(f.case_id, f.rule, f.severity) for f in hippocampus.findings if f.rule not in OUTLIER_RULES}
    assert found == KNOWN_DEFECTS
    assert {(f.case_id, f.rule) for f in hippocampus.findings if f.severity == "error"} == {
        ("hippocampus_010", "image_present"), ("hippocampus_118", "label_present")}
    assert hippocampus.passed and len(hippocampus.kept) == 220
    assert set(hippocampus.quarantined) == {"hippocampus_010", "hippocampus_118"}


def test_hippocampus_outliers_are_the_rescaled_scans_and_one_wide_crop(hippocampus):
    """28 scans are stored at ~400x the others' intensity scale; 125 is the widest crop."""
    outliers = [f for f in hippocampus.findings if f.rule in OUTLIER_RULES]
    assert all(f.severity == "warning" for f in outliers)
    assert sum(f.rule == "intensity_outlier" for f in outliers) == 28
    assert {f.case_id for f in outliers if f.rule == "shape_outlier"} == {"hippocampus_125"}
    assert not [f for f in outliers if f.rule == "spacing_outlier"]


def test_hippocampus_case_copy_with_new_gzip_stamp_is_still_a_duplicate(tmp_path):
    if not HIPPOCAMPUS.is_dir():
        pytest.skip("shared Task04_Hippocampus copy not present")
    ids = ["hippocampus_004", "hippocampus_006"]
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
        for case_id in ids:
            shutil.copyfile(HIPPOCAMPUS / folder / f"{case_id}.nii.gz", tmp_path / folder / f"{case_id}.nii.gz")
        resaved = nib.load(HIPPOCAMPUS / folder / "hippocampus_004.nii.gz")
        nib.save(resaved, tmp_path / folder / "hippocampus_900.nii.gz")  # new gzip header, same voxels
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in [*ids, "hippocampus_900"]]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "a", "2": "p"}, "training": training}))
    manifest = build_manifest(read_msd_dataset(tmp_path)).set_index("case_id")
    assert manifest.loc["hippocampus_900", "content_hash"] == manifest.loc["hippocampus_004", "content_hash"]
    assert manifest.loc["hippocampus_006", "content_hash"] != manifest.loc["hippocampus_004", "content_hash"]
