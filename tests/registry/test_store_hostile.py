"""The hostile-input corpus for the registry: index.json and entry.json files that are empty,
truncated, not JSON, not UTF-8, wrongly shaped, nested too deeply, escaping the registry or not
files at all. Every command names the file and what is wrong, says how to repair, never shows a
traceback and changes nothing; `models list` still shows what it can; `models repair` rebuilds the
index from the entries that can be read and reports the rest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from segflow.cli import app
from segflow.registry.store import CHAMPION, BrokenRegistry, Registry

ENTRY = {"created": "2026-01-01T00:00:00", "metrics": {"dice_mean": 0.9}, "git_commit": "abc1234", "network": "UNet"}
REPAIR = "segflow models repair"

# index.json content -> what the message must say is wrong with it.
INDEXES = {
    "empty": (b"", "not valid JSON"),
    "truncated": (b'{"champion": "x", "models": {', "not valid JSON"),
    "not-json": (b"champion = x\n", "not valid JSON"),
    "not-utf8": (b'\xff\xfe{"models": {}}', "not valid JSON"),
    "nested-too-deeply": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "array": (b"[]", "holds an array, not a JSON object"),
    "null": (b"null", "holds null, not a JSON object"),
    "number": (b"42", "holds a number, not a JSON object"),
    "string": (b'"index"', "holds a string, not a JSON object"),
    "no-models": (b'{"champion": null, "champions": []}', 'has no "models" object'),
    "models-is-a-list": (b'{"champion": null, "champions": [], "models": []}', '"models" is an array'),
    "summary-is-a-number": (b'{"champion": null, "champions": [], "models": {"m": 1}}',
                            '"models" holds a number for m, not an object'),
    "champion-is-a-number": (b'{"champion": 7, "champions": [], "models": {}}', '"champion" is 7'),
    "champions-is-a-string": (b'{"champion": null, "champions": "abc", "models": {}}', '"champions" is "abc"'),
    "id-escapes-the-registry": (b'{"champion": "../../outside", "champions": ["../../outside"], '
                                b'"models": {"../../outside": {"status": "champion"}}}', "not a plain folder name"),
    "a-folder": (None, "cannot be read (Is a directory)"),
}

# The champion's entry.json content -> what the message must say is wrong with it.
ENTRIES = {
    "missing": (None, "entry.json: missing"),
    "a-folder": (b"dir", "cannot be read (Is a directory)"),
    "empty": (b"", "not valid JSON"),
    "not-utf8": (b"\xff\xfe\x00", "not valid JSON"),
    "array": (b"[1, 2]", "holds an array, not a JSON object"),
    "no-status": (b'{"id": "x"}', '"status" is None, not one of champion, candidate, retired, rolled-back'),
    "unknown-status": (b'{"status": "banana"}', "\"status\" is 'banana'"),
    "events-not-a-list": (b'{"status": "champion", "events": "promoted"}', '"events" is not a list of objects'),
    "metrics-not-an-object": (b'{"status": "champion", "metrics": [0.9]}', '"metrics" is an array, not an object'),
}


@pytest.fixture
def project(tmp_path, monkeypatch) -> tuple[Registry, list[str]]:
    """A project (cwd) whose registry holds a retired model, the champion and a candidate."""
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    monkeypatch.chdir(tmp_path)
    registry = Registry(tmp_path / "registry")
    ids = []
    for content, promote in ((b"a", True), (b"b", True), (b"c", False)):
        model = tmp_path / f"{content.decode()}.pt"
        model.write_bytes(content)
        ids.append(registry.add(model, ENTRY, {}, lambda champion, p=promote: (p, "test"))[0])
    return registry, ids


def spoil_index(registry: Registry, case: str) -> None:
    content, _ = INDEXES[case]
    registry.index_path.unlink()
    if content is None:
        registry.index_path.mkdir()
    else:
        registry.index_path.write_bytes(content)


def spoil_entry(path: Path, case: str) -> None:
    content, _ = ENTRIES[case]
    path.unlink()
    if content == b"dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)


def segflow(*args: str):
    return CliRunner().invoke(app, ["models", *args])


def assert_refused(done, path: Path, what: str) -> None:
    """Exit 1 with one message naming the file, the fault and the repair; no traceback."""
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert "Traceback" not in done.output
    assert str(path) in done.stderr and what in done.stderr and REPAIR in done.stderr, done.stderr


@pytest.mark.parametrize("case", list(INDEXES))
def test_a_damaged_index_is_named_by_every_command_and_changes_nothing(project, case):
    registry, (a, b, c) = project
    spoil_index(registry, case)
    _, what = INDEXES[case]

    for args in (["show"], ["show", b], ["promote", c], ["rollback"]):
        assert_refused(segflow(*args), registry.index_path, what)
    with pytest.raises(BrokenRegistry, match=REPAIR):
        registry.add(registry.model_dir(a) / "model.pt", ENTRY, {}, lambda champion: (True, "unjudged"))
    assert sorted(p.name for p in registry.models_dir.iterdir()) == sorted([a, b, c])
    assert not (registry.root.parent / "outside").exists()

    listed = segflow("list")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    assert all(model_id in listed.stdout for model_id in (a, b, c)), "list shows the entries it can read"
    assert str(registry.index_path) in listed.stderr and what in listed.stderr and REPAIR in listed.stderr


@pytest.mark.parametrize("case", list(INDEXES))
def test_repair_rebuilds_a_damaged_index_and_keeps_the_old_one(project, case):
    registry, (a, b, c) = project
    spoil_index(registry, case)

    done = segflow("repair")
    assert done.exit_code == 0, done.output
    assert "from 3 entries" in done.stdout and f"champion: {b}" in done.stdout
    assert "kept the unreadable index as" in done.stdout
    assert registry.problems() == [] and registry.resolve(CHAMPION) == registry.model_dir(b) / "model.pt"
    assert list(registry.root.glob("index.json.unreadable-*")), "the damaged index was thrown away"
    assert segflow("rollback").exit_code == 0 and registry.index()["champion"] == a


@pytest.mark.parametrize("case", list(ENTRIES))
def test_a_damaged_champion_entry_is_named_and_repair_leaves_it_out(project, case):
    registry, (a, b, c) = project
    path = registry.model_dir(b) / "entry.json"
    spoil_entry(path, case)
    _, what = ENTRIES[case]

    assert_refused(segflow("show"), path, what)
    assert_refused(segflow("promote", c), path, what)
    listed = segflow("list")
    assert listed.exit_code == 0 and a in listed.stdout and str(path) in listed.stderr

    repaired = segflow("repair")
    assert repaired.exit_code == 0 and "from 2 entries" in repaired.stdout
    assert f"left out: {path}" in repaired.stdout and what in repaired.stdout
    assert registry.index()["champion"] == a and b not in registry.index()["models"]
    listed = segflow("list")
    assert f"not listed, unreadable: {path}" in listed.stderr, "the left-out folder is forgotten"
    assert "to rebuild" not in listed.stderr, "the repaired registry still disagrees with its folders"


def test_odd_summary_values_are_listed_not_a_traceback(project):
    registry, (a, b, c) = project
    index = json.loads(registry.index_path.read_text())
    index["models"][c] = {"status": 5, "metrics": {"dice_mean": "high", "dice_mean_ci95": 3},
                          "git_commit": 1234567890123456, "created": ["x"], "network": {"name": "UNet"}}
    registry.index_path.write_text(json.dumps(index))

    listed = segflow("list")
    assert listed.exit_code == 0 and "Traceback" not in listed.output
    row = next(line for line in listed.stdout.splitlines() if c in line)
    assert "?" in row and "123456789012" in row
    assert f"says {c} is 5 but" in listed.stderr and REPAIR in listed.stderr
