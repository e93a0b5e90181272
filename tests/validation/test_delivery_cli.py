"""`segflow validate` on new deliveries, without the pipeline: exit 0 clean, 1 errors, 2 unusable
input (one line, no traceback); archives are extracted safely; limits come from params.yaml."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import BIN, REPO, run, synthetic_case

from segflow.data.acquire import ArchiveLimits
from segflow.validation.delivery import UnusableInput, delivery_rules, validate_delivery

SHAPE = (16, 24, 16)
CASES = [f"case_{i}" for i in range(4)]


def write_delivery(root: Path, missing_label: str | None = None, empty_label: str | None = None) -> Path:
    """Tiny MSD delivery of CASES; `missing_label` is listed but its label never delivered,
    `empty_label` has a label with no foreground (a warning only)."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for seed, case in enumerate(CASES):
        image, label = synthetic_case(seed, SHAPE)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"{case}.nii.gz")
        if case != missing_label:
            label = np.zeros_like(label) if case == empty_label else label
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES]
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": labels, "training": training}))
    return root


def segflow_validate(cwd: Path, data: Path, report: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "segflow"), "validate", "--data", str(data), "--report", str(report), *args]
    return run(command, cwd, check=False, timeout=120)


def assert_unusable(done: subprocess.CompletedProcess, path: Path, rule: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and str(path) in message and f"[{rule}]" in message
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_clean_delivery_exits_0_with_every_case_kept(tmp_path):
    data = write_delivery(tmp_path / "Toy")

    done = segflow_validate(tmp_path, data, tmp_path / "out" / "report.json", "--min-cases", "2")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["kept"] == CASES and report["quarantined"] == {} and report["decision"]["stop"] is False
    assert "4 cases kept" in done.stdout


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_missing_label_exits_1_and_the_report_names_case_and_rule(tmp_path):
    data = write_delivery(tmp_path / "Toy", missing_label="case_2")

    done = segflow_validate(tmp_path, data, tmp_path / "report.json", "--min-cases", "2")

    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert ("case_2", "label_present", "error") in {(f["case_id"], f["rule"], f["severity"]) for f in report["findings"]}
    assert list(report["quarantined"]) == ["case_2"] and "case_2" not in report["kept"]
    assert "case_2: label_present" in done.stdout and "Traceback" not in done.stderr


def test_missing_folder_exits_2_with_one_line(tmp_path):
    done = segflow_validate(tmp_path, tmp_path / "nowhere", tmp_path / "report.json")

    assert_unusable(done, tmp_path / "nowhere", "data_exists")
    assert not (tmp_path / "report.json").exists()


def test_folder_without_dataset_json_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()

    done = segflow_validate(tmp_path, tmp_path / "empty", tmp_path / "report.json")

    assert_unusable(done, tmp_path / "empty", "dataset_json")


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_tar_gz_of_a_clean_delivery_exits_0(tmp_path):
    data = write_delivery(tmp_path / "src" / "Task99_Toy")
    archive = tmp_path / "delivery.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname="Task99_Toy")

    done = segflow_validate(tmp_path, archive, tmp_path / "report.json", "--min-cases", "2")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kept"] == CASES and report["source"] == str(archive)


def test_tar_with_a_member_escaping_the_folder_exits_2_and_writes_nothing_outside(tmp_path):
    archive = tmp_path / "delivery.tar"
    payload = b"{}"
    with tarfile.open(archive, "w") as tar:
        member = tarfile.TarInfo("../evil")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))

    done = segflow_validate(tmp_path, archive, tmp_path / "report.json")

    assert_unusable(done, archive, "archive_members_safe")
    assert "../evil" in done.stderr
    assert not (tmp_path / "evil").exists() and not (tmp_path / "report.json").exists()


def test_a_file_that_is_no_archive_exits_2(tmp_path):
    bogus = tmp_path / "delivery.tar.gz"
    bogus.write_bytes(b"not an archive at all")

    done = segflow_validate(tmp_path, bogus, tmp_path / "report.json")

    assert_unusable(done, bogus, "archive_readable")


# In-process (great-expectations already imported): the decision rules behind the exit code.


def test_a_warning_passes_unless_strict(tmp_path):
    data = write_delivery(tmp_path / "Toy", empty_label="case_1")

    lenient = validate_delivery(data, tmp_path / "lenient.json", min_cases=2)
    strict = validate_delivery(data, tmp_path / "strict.json", min_cases=2, strict=True)

    assert lenient.exit_code == 0 and strict.exit_code == 1
    assert "foreground_present" in strict.summary and "warning" in strict.summary
    assert json.loads((tmp_path / "strict.json").read_text())["decision"]["strict"] is True


def test_too_few_cases_is_a_dataset_level_error(tmp_path):
    data = write_delivery(tmp_path / "Toy")

    verdict = validate_delivery(data, tmp_path / "report.json", min_cases=10)

    assert verdict.exit_code == 1 and "ERROR min_cases" in verdict.summary
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is False


@pytest.mark.parametrize("inside_project", [True, False])
def test_limits_default_to_params_inside_a_project_else_to_the_config_defaults(tmp_path, inside_project):
    if inside_project:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["validate"].update(min_cases=37, max_dim=99)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    rules = delivery_rules(start=tmp_path)
    assert (rules.min_cases, rules.max_dim) == ((37, 99) if inside_project else (10, 1024))
    assert delivery_rules(3, None, start=tmp_path).min_cases == 3


def write_folder_delivery(root: Path, n: int = 10, bad_value_case: str | None = None) -> Path:
    """2D image/mask PNG pairs as ISBI delivers them (masks {0, 255})."""
    import cv2

    for folder in ("image", "label"):
        (root / "train" / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.where(rng.random((32, 32)) > 0.3, 255, 0).astype(np.uint8)
        if str(i) == bad_value_case:
            mask[0, 0] = 7
        cv2.imwrite(str(root / "train/image" / f"{i}.png"), (mask // 2 + 20).astype(np.uint8))
        cv2.imwrite(str(root / "train/label" / f"{i}.png"), mask)
    return root


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_2d_folder_delivery_is_validated_with_its_mask_values(tmp_path):
    data = write_folder_delivery(tmp_path / "isbi", bad_value_case="3")
    done = segflow_validate(tmp_path, data, tmp_path / "report.json", "--mask-values", "0,255")
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["quarantined"]) == ["3"] and report["n_kept"] == 9
    assert any(f["rule"] == "label_values_declared" and f["case_id"] == "3" for f in report["findings"])


def test_2d_folder_delivery_without_mask_values_is_unusable(tmp_path):
    data = write_folder_delivery(tmp_path / "isbi")
    done = segflow_validate(tmp_path, data, tmp_path / "report.json")
    assert_unusable(done, data, "mask_values")


# Hostile or malformed arguments: one line naming the path (or option) and the rule, exit 2.


@pytest.mark.parametrize("where", ["folder", "below_a_file"])
def test_a_report_path_that_cannot_be_a_file_exits_2(tmp_path, where):
    data = write_delivery(tmp_path / "Toy")
    (tmp_path / "notes.txt").write_text("a file")
    report = {"folder": tmp_path, "below_a_file": tmp_path / "notes.txt" / "report.json"}[where]

    done = segflow_validate(tmp_path, data, report, "--min-cases", "2")

    assert_unusable(done, report, "report_path")
    assert (tmp_path / "notes.txt").read_text() == "a file"


def test_the_report_path_is_checked_before_the_delivery_is_read(tmp_path):
    with pytest.raises(UnusableInput) as caught:  # the delivery is missing too: report_path comes first
        validate_delivery(tmp_path / "nowhere", tmp_path, min_cases=2)
    assert caught.value.rule == "report_path"


def test_mask_values_that_are_not_integers_exit_2(tmp_path):
    data = write_folder_delivery(tmp_path / "isbi")

    done = segflow_validate(tmp_path, data, tmp_path / "report.json", "--mask-values", "a,b")

    assert done.returncode == 2, done.stdout + done.stderr
    assert "--mask-values" in done.stderr and "'a' is not a whole number" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "report.json").exists()


def tar_gz_of(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def test_an_archive_past_the_limits_given_is_unusable_with_rule_archive_size(tmp_path):
    data = write_delivery(tmp_path / "src" / "Task99_Toy")
    (data / "imagesTr" / "padding.bin").write_bytes(bytes(2 << 20))  # 2 MiB that gzip shrinks ~1000x
    archive = tar_gz_of(data, tmp_path / "delivery.tar.gz")

    with pytest.raises(UnusableInput) as caught:
        validate_delivery(archive, tmp_path / "report.json", min_cases=2,
                          archive_limits=ArchiveLimits(max_bytes=1 << 30, max_ratio=20))

    assert caught.value.rule == "archive_size"
    assert "padding.bin" in str(caught.value) and "data.archive_max_ratio" in str(caught.value)
    assert not (tmp_path / "report.json").exists()


def test_segflow_validate_honours_the_archive_limits_in_params(tmp_path):
    data = write_delivery(tmp_path / "src" / "Task99_Toy")
    archive = tar_gz_of(data, tmp_path / "delivery.tar.gz")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["archive_max_bytes"] = 1024  # far below the delivery's expanded size
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    done = segflow_validate(tmp_path, archive, tmp_path / "report.json", "--min-cases", "2")

    assert_unusable(done, archive, "archive_size")
    assert "data.archive_max_bytes = 1024" in done.stderr
