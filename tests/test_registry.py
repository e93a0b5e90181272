"""Registry: one folder per model, an index naming the champion, safe under concurrent registers."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from segflow.registry import CHAMPION, Registry, RegistryError

ENTRY = {"created": "2026-01-01T00:00:00", "metrics": {"dice_mean": 0.9}, "git_commit": "abc1234"}


def fake_model(folder: Path, content: bytes) -> Path:
    path = folder / f"model-{content.hex()[:12]}.pt"
    path.write_bytes(content)
    return path


def test_add_creates_model_folder_and_names_champion(tmp_path):
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path, b"weights-1")
    model_id = registry.add(model, ENTRY, {"metrics.json": '{"dice": 0.9}\n', "README.md": "hi\n"}, promote=True)

    folder = tmp_path / "registry" / "models" / model_id
    assert (folder / "model.pt").read_bytes() == b"weights-1"
    assert (folder / "metrics.json").read_text() == '{"dice": 0.9}\n'
    assert (folder / "README.md").read_text() == "hi\n"
    entry = json.loads((folder / "entry.json").read_text())
    assert entry["id"] == model_id and entry["status"] == CHAMPION
    assert entry["git_commit"] == "abc1234"
    index = json.loads((tmp_path / "registry" / "index.json").read_text())
    assert index["champion"] == model_id
    assert index["models"][model_id]["status"] == CHAMPION
    assert not list((tmp_path / "registry" / "models").glob(".*partial")), "staging folder left behind"


def test_candidate_is_not_promoted(tmp_path):
    registry = Registry(tmp_path)
    model_id = registry.add(fake_model(tmp_path, b"weak"), ENTRY, {}, promote=False)
    index = registry.index()
    assert index["champion"] is None
    assert index["models"][model_id]["status"] == "candidate"
    with pytest.raises(RegistryError, match="no champion"):
        registry.resolve(CHAMPION)


def test_second_promoted_add_retires_the_first(tmp_path):
    registry = Registry(tmp_path / "registry")
    first = registry.add(fake_model(tmp_path, b"weights-1"), ENTRY, {}, promote=True)
    second = registry.add(fake_model(tmp_path, b"weights-2"), ENTRY, {}, promote=True)

    index = registry.index()
    assert index["champion"] == second
    assert index["models"][first]["status"] == "retired"
    assert index["models"][second]["status"] == CHAMPION
    assert registry.resolve(CHAMPION) == registry.model_dir(second) / "model.pt"


def test_resolve_champion_id_and_path(tmp_path):
    registry = Registry(tmp_path / "registry")
    model_id = registry.add(fake_model(tmp_path, b"weights-1"), ENTRY, {}, promote=True)
    stored = tmp_path / "registry" / "models" / model_id / "model.pt"
    outside = fake_model(tmp_path, b"somewhere else")

    assert registry.resolve(CHAMPION) == stored
    assert registry.resolve(model_id) == stored
    assert registry.resolve(str(outside)) == outside


def test_resolve_on_empty_registry_says_no_champion(tmp_path):
    registry = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="no champion model is registered"):
        registry.resolve(CHAMPION)


def test_resolve_unknown_reference_is_named(tmp_path):
    with pytest.raises(RegistryError, match="'20990101-000000-deadbeef'"):
        Registry(tmp_path).resolve("20990101-000000-deadbeef")


def _add_model(root: str, content: bytes, start_at: float) -> str:
    """Worker: register one model (all workers start at the same instant)."""
    time.sleep(max(0.0, start_at - time.time()))
    model = Path(root) / f"source-{content.decode()}.pt"
    model.write_bytes(content)
    return Registry(Path(root) / "registry").add(model, ENTRY, {"note.txt": content.decode()}, promote=True)


def test_concurrent_adds_lose_no_entry_and_index_stays_valid_json(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.root.mkdir()
    contents = [f"model-{i}".encode() for i in range(4)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        start_at = time.time() + 1.5  # after every spawned worker has started
        pending = pool.starmap_async(_add_model, [(str(tmp_path), c, start_at) for c in contents])
        reads = 0
        while not pending.ready():
            if registry.index_path.exists():
                json.loads(registry.index_path.read_text())  # never half written
                reads += 1
        ids = pending.get(timeout=60)

    index = registry.index()
    assert sorted(index["models"]) == sorted(ids) and len(set(ids)) == 4
    assert index["champion"] in ids
    statuses = sorted(m["status"] for m in index["models"].values())
    assert statuses == [CHAMPION, "retired", "retired", "retired"]
    for model_id in ids:
        assert (registry.model_dir(model_id) / "model.pt").is_file()
    assert reads > 0


def test_registering_the_same_file_twice_at_once_does_not_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")  # both in one second
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path, b"same weights")
    registry.add(model, ENTRY, {}, promote=True)
    registry.add(model, ENTRY, {}, promote=True)  # e.g. `dvc repro -f register` run twice quickly
    assert registry.resolve(CHAMPION).read_bytes() == b"same weights"
