"""Registry: one folder per model, an index naming the champion, champion/challenger decided under
the lock (so concurrent registers neither lose an entry nor crown the wrong model), promote, rollback."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO

from segflow.registry.catalog import Catalog
from segflow.registry.store import CANDIDATE, CHAMPION, RETIRED, ROLLED_BACK, Registry, RegistryError

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


# A registry recoverable from its entries: a lost, stale or contradicted index stops every change
# (rather than crown a model without comparison) until `repair` rebuilds it.

def _three_models(tmp_path: Path) -> tuple[Registry, list[str]]:
    """a then b crowned on arrival, c a candidate: b is champion, a retired."""
    registry = Registry(tmp_path / "registry")
    ids = [registry.add(fake_model(tmp_path, name), ENTRY, {}, decide)[0]
           for name, decide in ((b"a", always), (b"b", always), (b"c", never))]
    return registry, ids


def test_a_lost_index_stops_register_and_repair_restores_champion_and_history(tmp_path):
    registry, (a, b, c) = _three_models(tmp_path)
    registry.index_path.unlink()
    seen = []

    with pytest.raises(RegistryError, match=r"index\.json is missing but .*models holds 3 model entries.*"
                                            r"run `segflow models repair`"):
        registry.add(fake_model(tmp_path, b"d"), ENTRY, {}, lambda champion: seen.append(champion) or (True, "x"))
    assert not seen, "a model was judged against no champion"
    assert sorted(p.name for p in registry.models_dir.iterdir()) == sorted([a, b, c]), "the refused model stayed"

    report = registry.repair()
    assert (report.entries, report.champion, report.champions) == (3, b, [a, b])
    assert any("index.json is missing" in line for line in report.lines())
    registry.add(fake_model(tmp_path, b"d"), ENTRY, {}, lambda champion: seen.append(champion) or (False, "x"))
    assert seen[0]["id"] == b, "after repair the next model is compared with the old champion"
    assert registry.rollback("back") == (b, a)


def test_an_entry_missing_from_the_index_stops_promote_and_rollback(tmp_path):
    registry, (a, b, c) = _three_models(tmp_path)
    index = json.loads(registry.index_path.read_text())
    del index["models"][c]
    registry.index_path.write_text(json.dumps(index))

    for change in (lambda: registry.promote(a, "x"), lambda: registry.rollback("x")):
        with pytest.raises(RegistryError, match=rf"models/{c} is not listed in .*index\.json.*segflow models repair"):
            change()
    assert registry.index()["champion"] == b and registry.entry(a)["status"] == RETIRED
    report = registry.repair()
    assert report.entries == 3 and any(c in found for found in report.found)
    assert registry.problems() == [] and registry.index()["models"][c]["status"] == CANDIDATE


def test_deleted_champion_folder_is_named_and_repair_gives_the_title_back(tmp_path):
    registry, (a, b, c) = _three_models(tmp_path)
    shutil.rmtree(registry.model_dir(b))

    for reference in (CHAMPION, b):
        with pytest.raises(RegistryError, match=rf"champion {b} is named in .*index\.json but its folder "
                                                rf".*models/{b} is missing; run `segflow models repair`"):
            registry.resolve(reference)
    report = registry.repair()
    assert report.champion == a and "no entry says champion" in report.why
    assert registry.resolve(CHAMPION) == registry.model_dir(a) / "model.pt"
    assert registry.entry(a)["status"] == CHAMPION
    assert registry.entry(a)["events"][-1]["reason"].startswith("registry repair: no entry says champion")
    assert registry.index()["models"][c]["status"] == CANDIDATE and b not in registry.index()["models"]


def test_two_entries_saying_champion_are_settled_by_the_latest_crowning(tmp_path):
    """A register killed after it moved its champion in, before it retired the old one."""
    registry, (a, b, c) = _three_models(tmp_path)
    entry_a = registry.model_dir(a) / "entry.json"
    entry_a.write_text(json.dumps({**json.loads(entry_a.read_text()), "status": CHAMPION}))

    with pytest.raises(RegistryError, match=rf"says {a} is retired but .*{a}/entry\.json says champion"):
        registry.promote(c, "x")
    report = registry.repair()
    assert report.champion == b and f"2 entries say champion ({', '.join(sorted([a, b]))})" in report.why
    assert registry.entry(a)["status"] == RETIRED and registry.entry(b)["status"] == CHAMPION
    assert registry.problems() == []


def test_repair_rebuilds_the_rollback_stack_from_the_events(tmp_path):
    registry = Registry(tmp_path / "registry")
    a, b, c = (registry.add(fake_model(tmp_path, n), ENTRY, {}, always)[0] for n in (b"a", b"b", b"c"))
    registry.rollback("c regressed")  # champion b, c rolled back
    d, _, _ = registry.add(fake_model(tmp_path, b"d"), ENTRY, {}, never)
    registry.promote(d, "by hand")  # champions a, b, d
    registry.index_path.unlink()

    report = registry.repair()
    assert (report.champion, report.champions) == (d, [a, b, d])
    assert registry.rollback("d too") == (d, b) and registry.rollback("b too") == (b, a)


def test_repair_leaves_out_an_unreadable_entry_and_says_so(tmp_path):
    registry, (a, b, c) = _three_models(tmp_path)
    (registry.model_dir(c) / "entry.json").write_text('{"id": "broken')

    with pytest.raises(RegistryError, match=rf"{c}/entry\.json: not valid JSON"):
        registry.entry(c)
    report = registry.repair()
    assert report.entries == 2 and c not in registry.index()["models"]
    assert any(f"{c}/entry.json: not valid JSON" in line for line in report.lines())
    registry.add(fake_model(tmp_path, b"d"), ENTRY, {}, never)  # the registry works again


def test_an_existing_file_wins_over_an_id_prefix(tmp_path, monkeypatch):
    registry, (a, _, _) = _three_models(tmp_path)
    monkeypatch.chdir(tmp_path)
    prefix = a[:-1]  # names a alone in the registry
    Path(prefix).write_bytes(b"a model file named like an id prefix")
    assert registry.resolve(prefix) == Path(prefix)
    Path(a).write_bytes(b"a model file named exactly like an id")
    with pytest.raises(RegistryError, match=rf"'{a}' is both a file here and a registered model in .*\./{a}"):
        registry.resolve(a)
    Path("champion").write_bytes(b"a model file named champion")
    with pytest.raises(RegistryError, match=r"'champion' is both a file here and a registered model in .*\./champion"):
        registry.resolve("champion")
    assert registry.resolve("./champion") == Path("champion")


def _register_and_hang(root: str) -> None:
    """Worker: a register that is killed while its model waits in the staging folder."""
    model = Path(root) / "hanging.pt"
    model.write_bytes(b"hanging")
    Registry(Path(root) / "registry").add(model, ENTRY, {}, lambda champion: time.sleep(600) or (True, ""))


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_a_killed_register_leaves_no_staging_folder_behind(tmp_path):
    registry = Registry(tmp_path / "registry")
    killed = multiprocessing.get_context("spawn").Process(target=_register_and_hang, args=(str(tmp_path),))
    killed.start()
    deadline = time.time() + 60
    while not list(registry.models_dir.glob(".*.partial*")) and time.time() < deadline:
        time.sleep(0.1)
    killed.kill()
    killed.join()
    assert list(registry.models_dir.glob(".*.partial*")), "the killed register had staged nothing"
    live = registry.models_dir / f".20260101-000000-live.partial-{os.getpid()}@{socket.gethostname()}"
    elsewhere = registry.models_dir / ".20260101-000000-other.partial-1@another-host"
    old = registry.models_dir / ".20250101-000000-legacy.partial"
    for folder in (live, elsewhere, old):
        folder.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)

    registry.add(fake_model(tmp_path, b"next"), ENTRY, {}, always)
    assert sorted(registry.models_dir.glob(".*.partial*")) == sorted([live, elsewhere]), \
        "only the folders of dead or long-gone runs are removed"


# Three `segflow stage register` at once (outside DVC): each entry gets its own bundle.

def make_register_project(root: Path) -> None:
    """What stage register reads: two tiny fold models, evaluate's outputs, a validate report."""
    import torch
    import yaml

    from segflow.files import write_json
    from segflow.models.factory import build_network
    from segflow.models.model_file import ModelFile, save_model_file
    from segflow.paths import Paths
    from segflow.training.summary import TrainSummary

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["split"].update(n_folds=2, folds=[0, 1])
    params["register"].update(min_mean_dice=0.0, export=["torchscript"])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = Paths(root)
    args = dict(spatial_dims=3, in_channels=1, out_channels=2, channels=[4, 8], strides=[2], num_res_units=0)
    for fold in (0, 1):
        torch.manual_seed(fold)
        save_model_file(paths.model_for(fold), ModelFile("UNet", args, [16, 16, 16], {"0": "background", "1": "x"},
                                                       [build_network("UNet", args).state_dict()], folds=[fold]))
        TrainSummary(epochs=1, val_dice_mean=0.5, train_loss=1.0, seconds=1.0, seconds_this_run=1.0,
                     seconds_per_epoch=1.0, peak_rss_mb=100.0, device="cpu", fold=fold,
                     processes=1).save(paths.train_summary_for(fold))
    write_json(paths.postprocessing, {"keep_largest_component": []})
    write_json(paths.metrics, {"dice_mean": 0.8})
    paths.per_case.write_text("case_id,dice_x\n" + "".join(f"c{i},0.{i}\n" for i in range(1, 9)))
    write_json(paths.splits, {"n_folds": 2, "seed": 0, "dataset": "Tiny", "labels": {"0": "background", "1": "x"},
                              "label_values": [0, 1], "folds": {f"c{i}": i % 2 for i in range(1, 9)}})
    write_json(paths.validation_report, {"passed": True, "n_kept": 8, "n_quarantined": 0, "quarantined": {},
                                         "kept": [f"c{i}" for i in range(1, 9)],
                                         "decision": {"stop": False, "reasons": [], "strict": False}})
    write_json(paths.plan, {})
    write_json(paths.training_plan, {})  # no budget: the native configuration only
    write_json(paths.configuration_choice, {"selected": "3d", "dice_mean": {"3d": 0.8}, "reason": "the only one"})
    write_json(paths.fingerprint, {"n_cases": 8, "min_shape": [16, 16, 16], "max_shape": [16, 16, 16],
                                   "min_spacing": [1.0, 1.0, 1.0], "max_spacing": [1.0, 1.0, 1.0],
                                   "spatial_dims": 3, "n_channels": 1, "labels": {"0": "background", "1": "x"}})


def _run_register_stage(root: str, start_at: float) -> dict:
    import torch

    from segflow.config import load_params
    from segflow.paths import Paths
    from segflow.stages import register

    torch.set_num_threads(1)
    time.sleep(max(0.0, start_at - time.time()))
    return register.main(load_params(Path(root) / "params.yaml"), Paths(Path(root)))


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_three_register_stages_at_once_each_register_their_bundle(tmp_path):
    make_register_project(tmp_path)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        start_at = time.time() + 8  # after every spawned worker has imported torch
        pool.starmap(_run_register_stage, [(str(tmp_path), start_at)] * 3, chunksize=1)

    (dataset,) = Catalog(tmp_path / "registry").datasets()  # registered under the dataset's own key
    registry = dataset.registry
    assert dataset.key.startswith("Tiny-") and len(registry.index()["models"]) == 3
    for model_id in registry.index()["models"]:
        assert (registry.model_dir(model_id) / "bundle" / "models" / "model.ts").is_file(), f"{model_id}: no bundle"
        assert registry.entry(model_id)["export"]["formats"] == ["torchscript"]
    register = tmp_path / "artifacts" / "register"
    assert (register / "bundle" / "models" / "model.ts").is_file() and (register / "model.pt").is_file()
    assert sorted(p.name for p in register.iterdir()) == ["bundle", "model.pt", "registration.json"], \
        "a run's working folder was left behind"


def test_export_removes_the_staging_folders_of_dead_runs_only(tmp_path):
    from segflow.models.export import export_model

    make_register_project(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    register = tmp_path / "artifacts" / "register"
    left = {name: register / name for name in (
        f".bundle.staging-0badc0de-{dead.pid}@{host}", f".bundle.old-0badc0de-{dead.pid}@{host}",  # killed
        f".bundle.staging-1234abcd-{os.getpid()}@{host}",  # at work
        f".bundle.staging-5678abcd-{dead.pid}@another-host", ".bundle.staging-4242-legacy0")}  # can't tell: age
    for folder in left.values():
        folder.mkdir(parents=True)
    aged = register / ".bundle.staging-4243-legacy1"
    aged.mkdir()
    os.utime(aged, (time.time() - 2 * 86400,) * 2)

    export_model(tmp_path / "artifacts" / "train" / "fold_0" / "model.pt", register / "bundle", formats=["torchscript"])
    kept = sorted(p.name for p in register.iterdir() if p.name.startswith("."))
    assert kept == sorted(list(left)[2:]), "removed a folder still in use, or kept one of a dead run"
