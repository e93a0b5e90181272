"""`segflow models list|show|promote|rollback` on a real registry, through the installed CLI: a
registry from before per-dataset registries, and one folder holding two datasets' registries."""

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
    header, rest = done.stdout.split("\n\n", 1)
    assert header.startswith(f"model {b}: champion of dataset") and "code: commit abc1234def5678" in header
    entry = json.loads(rest.split("\n\nfolder:")[0])
    assert entry["id"] == b and entry["reason"] == "test decision True"
    assert "MODEL_CARD.md" in done.stdout and "model.pt" in done.stdout


def test_promote_then_rollback(project):
    root, (_, b, c) = project
    promoted = segflow(root, "promote", c, "--reason", "validated on site data")
    assert promoted.returncode == 0 and promoted.stdout.strip().endswith(f"is now {c}")
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
    assert rollback.returncode == 1 and "no models registered yet" in rollback.stderr


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


HIPPOCAMPUS = {"spatial_dims": 3, "n_channels": 1, "modality": {"0": "MRI"}, "regions": None,
               "labels": {"0": "background", "1": "anterior", "2": "posterior"}}
MEMBRANES = {"spatial_dims": 2, "n_channels": 1, "modality": {}, "regions": None,
             "labels": {"0": "background", "1": "membrane"}}


@pytest.fixture
def two_datasets(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    """A project whose registry folder holds a 3D and a 2D dataset, each with its own champion."""
    from segflow.registry.catalog import Catalog, dataset_key

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    catalog, ids = Catalog(tmp_path / "registry"), {}
    for name, task in (("Hippocampus", HIPPOCAMPUS), ("membranes", MEMBRANES)):
        registry = catalog.for_dataset(dataset_key(name, task))
        for content in (b"1", b"2"):
            model = tmp_path / f"{name}{content.decode()}.pt"
            model.write_bytes(content)
            entry = {**ENTRY, "dataset": name, "task": task, "git_modified": ["src/x.py"] if name == "membranes" else []}
            ids.setdefault(name, []).append(registry.add(model, entry, {}, lambda champion: (champion is None, "t"))[0])
    return tmp_path, ids


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_each_dataset_has_its_champion_and_list_shows_dataset_task_and_code(two_datasets):
    root, ids = two_datasets
    done = segflow(root, "list")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in done.stdout.splitlines()}
    for name, task in (("Hippocampus", "3D, 1 ch (MRI), 2 classes"), ("membranes", "2D, 1 ch, 1 class")):
        first, second = ids[name]
        assert lines[first].startswith("*") and "champion" in lines[first] and f"{name}-" in lines[first]
        assert task in lines[first] and "candidate" in lines[second]
    assert "abc1234def56 +1 modified" in lines[ids["membranes"][0]]
    assert "abc1234def56 " in lines[ids["Hippocampus"][0]] and "modified" not in lines[ids["Hippocampus"][0]]
    show = segflow(root, "show", ids["membranes"][0])
    assert "code: commit abc1234def5678, modified: src/x.py" in show.stdout


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_champion_and_rollback_ask_for_a_dataset_when_several_have_one(two_datasets):
    root, ids = two_datasets
    show = segflow(root, "show")
    assert show.returncode == 1 and "choose one with --dataset" in show.stderr and "Traceback" not in show.stderr
    show = segflow(root, "show", "--dataset", "membranes")
    assert show.returncode == 0 and f"model {ids['membranes'][0]}: champion" in show.stdout
    promoted = segflow(root, "promote", ids["membranes"][1])
    assert promoted.returncode == 0 and "champion of membranes-" in promoted.stdout
    rollback = segflow(root, "rollback")
    assert rollback.returncode == 1 and "choose one with --dataset" in rollback.stderr
    rollback = segflow(root, "rollback", "--dataset", "membranes")
    assert rollback.returncode == 0 and f"champion is now {ids['membranes'][0]}" in rollback.stdout
