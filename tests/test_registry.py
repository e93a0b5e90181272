"""Registry: one folder per model, an index naming the champion, champion/challenger decided under
the lock (so concurrent registers neither lose an entry nor crown the wrong model), promote, rollback."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from segflow.registry import CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK, Registry, RegistryError

ENTRY = {"created": "2026-01-01T00:00:00", "metrics": {"dice_mean": 0.9}, "git_commit": "abc1234"}


def fake_model(folder: Path, content: bytes) -> Path:
    path = folder / f"model-{content.hex()[:12]}.pt"
    path.write_bytes(content)
    return path


def always(champion):
    return True, "test: always promote"


def never(champion):
    return False, "test: never promote"


def test_add_creates_model_folder_and_names_champion(tmp_path):
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path, b"weights-1")
    model_id, promoted, reason = registry.add(model, ENTRY, {"metrics.json": '{"dice": 0.9}\n'}, always)

    folder = tmp_path / "registry" / "models" / model_id
    assert promoted and reason == "test: always promote"
    assert (folder / "model.pt").read_bytes() == b"weights-1"
    assert (folder / "metrics.json").read_text() == '{"dice": 0.9}\n'
    entry = json.loads((folder / "entry.json").read_text())
    assert entry["id"] == model_id and entry["status"] == CHAMPION and entry["reason"] == reason
    assert entry["git_commit"] == "abc1234"
    index = json.loads((tmp_path / "registry" / "index.json").read_text())
    assert index["champion"] == model_id and index["champions"] == [model_id]
    assert index["models"][model_id]["status"] == CHAMPION
    assert not list((tmp_path / "registry" / "models").glob(".*partial")), "staging folder left behind"


def test_folders_are_copied_into_the_entry(tmp_path):
    bundle = tmp_path / "bundle" / "models"
    bundle.mkdir(parents=True)
    (bundle / "model.ts").write_bytes(b"ts")
    registry = Registry(tmp_path / "registry")
    model_id, _, _ = registry.add(fake_model(tmp_path, b"w"), ENTRY, {}, always, {"bundle": tmp_path / "bundle"})
    assert (registry.model_dir(model_id) / "bundle" / "models" / "model.ts").read_bytes() == b"ts"


def test_decide_sees_the_champion_entry_and_a_candidate_keeps_its_reason(tmp_path):
    registry = Registry(tmp_path)
    first, _, _ = registry.add(fake_model(tmp_path, b"one"), ENTRY, {}, always)
    seen = []

    def decide(champion):
        seen.append(champion)
        return False, "not better: test"

    second, promoted, _ = registry.add(fake_model(tmp_path, b"two"), ENTRY, {}, decide)
    assert seen[0]["id"] == first and seen[0]["metrics"] == ENTRY["metrics"]
    assert not promoted and registry.index()["champion"] == first
    assert registry.entry(second)["status"] == CANDIDATE and registry.entry(second)["reason"] == "not better: test"


def test_failing_decision_leaves_no_entry_and_no_staging(tmp_path):
    registry = Registry(tmp_path / "registry")

    def broken(champion):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        registry.add(fake_model(tmp_path, b"w"), ENTRY, {}, broken)
    assert registry.index()["models"] == {}
    assert not list((tmp_path / "registry" / "models").iterdir())


def test_candidate_is_not_promoted(tmp_path):
    registry = Registry(tmp_path)
    model_id, _, _ = registry.add(fake_model(tmp_path, b"weak"), ENTRY, {}, never)
    index = registry.index()
    assert index["champion"] is None
    assert index["models"][model_id]["status"] == CANDIDATE
    with pytest.raises(RegistryError, match="no champion"):
        registry.resolve(CHAMPION)


def test_promoted_add_retires_the_old_champion(tmp_path):
    registry = Registry(tmp_path / "registry")
    first, _, _ = registry.add(fake_model(tmp_path, b"weights-1"), ENTRY, {}, always)
    second, _, _ = registry.add(fake_model(tmp_path, b"weights-2"), ENTRY, {}, always)

    index = registry.index()
    assert index["champion"] == second
    assert index["models"][first]["status"] == RETIRED
    assert registry.entry(first)["events"][-1]["reason"] == f"replaced by {second}"
    assert registry.resolve(CHAMPION) == registry.model_dir(second) / "model.pt"


def test_promote_by_hand_and_rollback_walk_the_champion_history(tmp_path):
    registry = Registry(tmp_path)
    a, _, _ = registry.add(fake_model(tmp_path, b"a"), ENTRY, {}, always)
    b, _, _ = registry.add(fake_model(tmp_path, b"b"), ENTRY, {}, always)
    c, _, _ = registry.add(fake_model(tmp_path, b"c"), ENTRY, {}, never)

    assert registry.promote(c[:17], "reviewed by hand") == c  # an unambiguous id prefix works
    assert registry.index()["champion"] == c and registry.entry(c)["events"][-1]["reason"] == "reviewed by hand"
    assert registry.rollback("c fails on site data") == (c, b)
    assert registry.entry(c)["status"] == ROLLED_BACK and registry.entry(b)["status"] == CHAMPION
    assert registry.rollback("b too") == (b, a)
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("nothing left")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(a, "again")


def test_unknown_and_ambiguous_references_are_named(tmp_path):
    registry = Registry(tmp_path)
    registry.add(fake_model(tmp_path, b"a"), ENTRY, {}, always)
    registry.add(fake_model(tmp_path, b"b"), ENTRY, {}, always)
    with pytest.raises(RegistryError, match="'nope' is not a registered model id"):
        registry.promote("nope", "x")
    with pytest.raises(RegistryError, match="matches several models"):
        registry.entry("2")


def test_resolve_champion_id_and_path(tmp_path):
    registry = Registry(tmp_path / "registry")
    model_id, _, _ = registry.add(fake_model(tmp_path, b"weights-1"), ENTRY, {}, always)
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


def test_index_from_before_rollback_is_read(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"champion": "x", "models": {"x": {"status": "champion"}}}))
    assert Registry(tmp_path).index()["champions"] == ["x"]


def _add_model(root: str, score: float, start_at: float) -> str:
    """Worker: register one model scoring `score`; it is promoted only above the champion's
    score, a decision taken under the lock (all workers start at the same instant)."""
    time.sleep(max(0.0, start_at - time.time()))
    model = Path(root) / f"source-{score}.pt"
    model.write_bytes(str(score).encode())

    def decide(champion):
        if champion is None or score > champion["metrics"]["dice_mean"]:
            return True, "better"
        return False, "not better"

    entry = {**ENTRY, "metrics": {"dice_mean": score}}
    return Registry(Path(root) / "registry").add(model, entry, {"note.txt": str(score)}, decide)[0]


def test_concurrent_registers_lose_no_entry_and_crown_the_best(tmp_path):
    registry = Registry(tmp_path / "registry")
    registry.root.mkdir()
    scores = [0.3, 0.9, 0.1, 0.5]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        start_at = time.time() + 1.5  # after every spawned worker has started
        pending = pool.starmap_async(_add_model, [(str(tmp_path), s, start_at) for s in scores])
        reads = 0
        while not pending.ready():
            if registry.index_path.exists():
                json.loads(registry.index_path.read_text())  # never half written
                reads += 1
        ids = pending.get(timeout=60)

    index = registry.index()
    assert sorted(index["models"]) == sorted(ids) and len(set(ids)) == 4
    assert index["champion"] == ids[1], "the 0.9 model must be champion whatever the order"
    for model_id in ids:
        assert (registry.model_dir(model_id) / "model.pt").is_file()
    assert reads > 0


def test_registering_the_same_file_twice_at_once_does_not_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")  # both in one second
    registry = Registry(tmp_path / "registry")
    model = fake_model(tmp_path, b"same weights")
    registry.add(model, ENTRY, {}, always)
    registry.add(model, ENTRY, {}, always)  # e.g. `dvc repro -f register` run twice quickly
    assert registry.resolve(CHAMPION).read_bytes() == b"same weights"
