"""`segflow models list|show|promote|rollback` on a real registry, through the installed CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, REPO, run

from segflow.registry.store import Registry

ENTRY = {"created": "2026-01-01T00:00:00", "git_commit": "abc1234def5678", "network": "UNet",
         "metrics": {"dice_mean": 0.87, "dice_mean_ci95": [0.86, 0.88]}}


@pytest.fixture
def project(tmp_path) -> tuple[Path, list[str]]:
    """A project root whose registry holds a champion, a retired model and a candidate."""
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    registry = Registry(tmp_path / "registry")
    ids = []
    for content, promote in ((b"a", True), (b"b", True), (b"c", False)):
        model = tmp_path / f"{content.decode()}.pt"
        model.write_bytes(content)
        ids.append(registry.add(model, ENTRY, {"MODEL_CARD.md": "# card\n"},
                                lambda champion, p=promote: (p, f"test decision {p}"))[0])
    return tmp_path, ids


def segflow(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "segflow"), "models", *args], project, check=False, timeout=120)


def test_list_marks_the_champion_and_shows_dice_with_ci(project):
    root, (a, b, c) = project
    done = segflow(root, "list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines[b].startswith("*") and "champion" in lines[b]
    assert "retired" in lines[a] and "candidate" in lines[c]
    assert "0.8700 [0.8600, 0.8800]" in lines[b] and "abc1234def56" in lines[b]


def test_show_prints_the_entry_and_its_files(project):
    root, (_, b, _) = project
    done = segflow(root, "show")  # default: the champion
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout.split("\n\nfolder:")[0])
    assert entry["id"] == b and entry["reason"] == "test decision True"
    assert "MODEL_CARD.md" in done.stdout and "model.pt" in done.stdout


def test_promote_then_rollback(project):
    root, (_, b, c) = project
    promoted = segflow(root, "promote", c, "--reason", "validated on site data")
    assert promoted.returncode == 0 and f"champion is now {c}" in promoted.stdout
    assert Registry(root / "registry").entry(c)["events"][-1]["reason"] == "validated on site data"
    back = segflow(root, "rollback", "--reason", "regression in production")
    assert back.returncode == 0 and f"champion is now {b} (was {c})" in back.stdout
    assert Registry(root / "registry").index()["champion"] == b


def test_unknown_model_is_one_clear_line(project):
    root, _ = project
    done = segflow(root, "promote", "nope")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("segflow: 'nope' is not a registered model id")
    assert "Traceback" not in done.stderr


def test_empty_registry_says_so(tmp_path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    assert "no models registered yet" in segflow(tmp_path, "list").stdout
    rollback = segflow(tmp_path, "rollback")
    assert rollback.returncode == 1 and "no earlier champion" in rollback.stderr


def test_lost_index_is_listed_from_the_entries_and_repaired(project):
    root, (a, b, c) = project
    (root / "registry" / "index.json").unlink()

    listed = segflow(root, "list")
    assert listed.returncode == 0 and "no models registered yet" not in listed.stdout
    assert all(model_id in listed.stdout for model_id in (a, b, c))
    assert "registry/index.json is missing" in listed.stderr and "segflow models repair" in listed.stderr
    refused = segflow(root, "promote", c)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "registry/index.json is missing" in refused.stderr and "segflow models repair" in refused.stderr

    repaired = segflow(root, "repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "from 3 entries" in repaired.stdout and f"champion: {b}" in repaired.stdout
    listed = segflow(root, "list")
    assert listed.stderr == "" and next(line for line in listed.stdout.splitlines() if b in line).startswith("*")


def test_deleted_champion_folder_is_named_not_called_unknown(project):
    root, (a, b, _) = project
    shutil.rmtree(root / "registry" / "models" / b)
    done = segflow(root, "show")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"champion {b} is named in {root / 'registry' / 'index.json'} but its folder" in done.stderr
    assert "run `segflow models repair`" in done.stderr
    assert f"champion: {a}" in segflow(root, "repair").stdout


def test_unreadable_index_is_named_without_a_traceback(project):
    root, _ = project
    (root / "registry" / "index.json").write_text("")
    done = segflow(root, "rollback")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"segflow: {root / 'registry' / 'index.json'}: not valid JSON")
    assert "segflow models repair" in done.stderr
