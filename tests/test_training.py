"""Training pieces: LR schedule, config fingerprint, checkpoints, and exact resume after an interruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_same_up_to_float32_order
from segflow import training as T
from segflow.config import AugmentConfig
from segflow.data.preprocess import Volume, save_volume
from segflow.models.factory import build_network

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)
PATCH = [16, 16, 16]
SEED = 7
CASES = [f"case_{i:03d}" for i in range(5)]


# ---- learning rate and fingerprint -------------------------------------------------------------

def test_poly_lr_starts_at_base_and_ends_at_zero():
    assert T.poly_lr(0.01, 0, 40) == pytest.approx(0.01)
    assert T.poly_lr(0.01, 40, 40) == 0.0
    schedule = [T.poly_lr(0.01, e, 40) for e in range(40)]
    assert all(a > b > 0 for a, b in zip(schedule, schedule[1:]))


def test_fingerprint_changes_with_any_section_but_not_key_order():
    train = {"epochs": 3, "lr": 0.003}
    model = {"name": "UNet", "channels": [4, 8]}
    base = T.config_fingerprint(0, model, train)
    assert T.config_fingerprint(0, dict(reversed(model.items())), dict(reversed(train.items()))) == base
    assert T.config_fingerprint(0, model, {**train, "lr": 0.001}) != base
    assert T.config_fingerprint(0, {**model, "channels": [8, 16]}, train) != base
    assert T.config_fingerprint(1, model, train) != base


# ---- checkpoints -------------------------------------------------------------------------------

def tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    net = build_network("UNet", NET_ARGS)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return net, optimizer, scaler


def one_step(net, optimizer):
    optimizer.zero_grad()
    net(torch.randn(1, 1, 16, 16, 16)).mean().backward()
    optimizer.step()


def test_checkpoint_round_trip_restores_weights_optimizer_and_history(tmp_path):
    net, optimizer, scaler = tiny_setup(0)
    one_step(net, optimizer)
    state = T.TrainState(epoch=2, history=[{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.8}])
    path = tmp_path / "checkpoints" / "last.pt"
    T.save_checkpoint(path, "fp-1", state, net, optimizer, scaler)

    fresh_net, fresh_optimizer, fresh_scaler = tiny_setup(1)
    restored = T.resume_checkpoint(path, "fp-1", fresh_net, fresh_optimizer, fresh_scaler)

    assert restored == state
    for key, value in net.state_dict().items():
        assert torch.equal(fresh_net.state_dict()[key], value), key
    first = next(iter(optimizer.state.values()))
    fresh_first = next(iter(fresh_optimizer.state.values()))
    assert torch.equal(first["exp_avg"], fresh_first["exp_avg"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    net, optimizer, scaler = tiny_setup(0)
    path = tmp_path / "last.pt"
    T.save_checkpoint(path, "fp-old", T.TrainState(epoch=5), net, optimizer, scaler)

    fresh_net, fresh_optimizer, fresh_scaler = tiny_setup(1)
    before = {k: v.clone() for k, v in fresh_net.state_dict().items()}
    assert T.resume_checkpoint(path, "fp-new", fresh_net, fresh_optimizer, fresh_scaler) is None
    assert all(torch.equal(before[k], v) for k, v in fresh_net.state_dict().items())


@pytest.mark.parametrize("damage", ["truncated", "text", "pickled-code"])
def test_a_damaged_checkpoint_stops_training_naming_the_file_and_the_way_out(tmp_path, damage):
    import pickle

    from segflow.errors import StageFailed

    path = tmp_path / "last.pt"
    net, optimizer, scaler = tiny_setup()
    T.save_checkpoint(path, "fp", T.TrainState(epoch=3), net, optimizer, scaler)
    whole = path.read_bytes()
    path.write_bytes({"truncated": whole[: len(whole) // 2], "text": b"not a checkpoint\n",
                      "pickled-code": pickle.dumps(print)}[damage])
    with pytest.raises(StageFailed) as refused:
        T.resume_checkpoint(path, "fp", *tiny_setup())
    message = str(refused.value)
    assert str(path) in message and "from scratch" in message and "weights_only" not in message
    assert path.exists(), "the checkpoint must be left for the user to judge"


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert T.resume_checkpoint(tmp_path / "missing.pt", "fp", *tiny_setup()) is None


# ---- resume equivalence ------------------------------------------------------------------------

@pytest.fixture
def deterministic_cpu():
    """One thread, deterministic kernels, no MONAI meta tracking (as the Trainer runs)."""
    from monai.data import set_track_meta

    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    set_track_meta(False)
    yield
    set_track_meta(True)
    torch.use_deterministic_algorithms(was_deterministic)
    torch.set_num_threads(threads)


@pytest.fixture
def synthetic_cache(tmp_path) -> Path:
    """A few (1, 24, 24, 24) cases with two foreground classes, written as the augment stage does."""
    cache = tmp_path / "preprocessed"
    for i, case_id in enumerate(CASES):
        rng = np.random.default_rng(i)
        label = np.zeros((1, 24, 24, 24), np.uint8)
        x, y, z = rng.integers(4, 10, size=3)
        label[0, x:x + 6, y:y + 6, z:z + 8] = 1
        label[0, x + 6:x + 12, y:y + 6, z:z + 8] = 2
        image = (label.astype(np.float32) + rng.normal(0, 0.5, label.shape)).astype(np.float32)
        save_volume(cache / f"{case_id}.npz", Volume(image, label, np.eye(4)))
    return cache


def augment_config() -> AugmentConfig:
    """The repo's augmentation with every random transform likely to fire on a tiny patch."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())["augment"]
    probs = {k: 0.5 for k in raw if k.endswith("_prob")}
    return AugmentConfig(**{**raw, **probs, "patch_size": PATCH})


class Run:
    """What the train stage builds, made fresh (as a restarted process would)."""

    def __init__(self, cache: Path, init_seed: int, channels_last: bool = False):
        from monai.losses import DiceCELoss

        from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

        cfg = augment_config()
        torch.manual_seed(init_seed)
        self.net = build_network("UNet", NET_ARGS).to(memory_format=T.memory_format(channels_last, 3))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=0.01, weight_decay=1e-5)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.loader = T.build_loader(T.load_volumes(cache, CASES), build_cached_transforms(cfg),
                                     build_random_transforms(cfg), batch_size=2)

    def epochs(self, start: int, stop: int, total: int) -> list[float]:
        losses = []
        for epoch in range(start, stop):
            for group in self.optimizer.param_groups:
                group["lr"] = T.poly_lr(0.01, epoch, total)
            T.seed_epoch(self.loader, SEED, epoch)
            losses.append(T.train_epoch(self.net, self.loader, self.loss_fn, self.optimizer, self.scaler,
                                        torch.device("cpu"), amp=False))
        return losses


@pytest.mark.parametrize("channels_last", [False, True])
def test_resumed_training_matches_uninterrupted_training(tmp_path, synthetic_cache, deterministic_cpu, channels_last):
    straight = Run(synthetic_cache, init_seed=SEED, channels_last=channels_last)
    straight_losses = straight.epochs(0, 3, total=3)

    interrupted = Run(synthetic_cache, init_seed=SEED, channels_last=channels_last)
    first_losses = interrupted.epochs(0, 2, total=3)
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    T.save_checkpoint(checkpoint, "fp", T.TrainState(epoch=2), interrupted.net, interrupted.optimizer,
                      interrupted.scaler)
    del interrupted

    resumed = Run(synthetic_cache, init_seed=SEED + 1, channels_last=channels_last)  # weights from the checkpoint
    state = T.resume_checkpoint(checkpoint, "fp", resumed.net, resumed.optimizer, resumed.scaler)
    assert state is not None and state.epoch == 2
    last_loss = resumed.epochs(state.epoch, 3, total=3)

    assert first_losses + last_loss == straight_losses
    expected, actual = straight.net.state_dict(), resumed.net.state_dict()
    assert expected.keys() == actual.keys()
    different = {k: float((expected[k].float() - actual[k].float()).abs().max())
                 for k in expected if not torch.equal(expected[k], actual[k])}
    assert not different, f"resumed weights differ from uninterrupted ones (max abs diff): {different}"


# ---- the loader: cheap reseeding, an uncopied cache, workers ---------------------------------------

def always_config(patch_size) -> AugmentConfig:
    """The repo's augmentation with every random transform switched on."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())["augment"]
    return AugmentConfig(**{**raw, **{k: 1.0 for k in raw if k.endswith("_prob")}, "patch_size": patch_size})


def pipeline_2d(cfg: AugmentConfig):
    from monai.transforms import Compose

    from segflow.transforms.two_d import build_random_transforms_2d

    return Compose(build_random_transforms_2d(cfg))


def pipeline_3d(cfg: AugmentConfig):
    from monai.transforms import Compose

    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    return Compose(build_cached_transforms(cfg) + build_random_transforms(cfg))


def case_2d(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    label = (rng.random((1, 40, 36)) > 0.6).astype(np.uint8)
    return {"image": rng.normal(size=(1, 40, 36)).astype(np.float32), "label": label}


def sample_of(pipeline, data: dict) -> dict:
    out = pipeline(dict(data))
    return out[0] if isinstance(out, list) else out


@pytest.mark.parametrize("dims", [3, 2])
def test_reseeder_gives_the_patches_of_monais_set_random_state(synthetic_cache, deterministic_cpu, dims):
    """In-place reseeding must not change a single augmented voxel (resume and DDP rely on the seeds)."""
    cfg = augment_config() if dims == 3 else always_config([24, 24])
    build = pipeline_3d if dims == 3 else pipeline_2d
    case = T.load_volumes(synthetic_cache, CASES[:1])[0] if dims == 3 else case_2d(0)
    monai_seeded, reseeded = build(cfg), build(cfg)
    reseed = T.Reseeder(reseeded)
    for seed in [0, 2**32 - 1, *range(1, 40)]:
        monai_seeded.set_random_state(seed=seed)
        reseed(seed)
        expected, actual = sample_of(monai_seeded, case), sample_of(reseeded, case)
        for key in ("image", "label"):
            assert torch.equal(torch.as_tensor(expected[key]), torch.as_tensor(actual[key])), (seed, key)
    if dims == 2:  # the albumentations wrapper draws from its state when seeded: MONAI's call is kept
        assert [states for _, states in reseed.plan] == [None]


def test_reseeder_reseeds_every_random_state_a_transform_holds():
    from monai.transforms import Compose

    from segflow.transforms.three_d import build_random_transforms

    pipeline = Compose(build_random_transforms(augment_config()))
    reseed = T.Reseeder(pipeline)
    reseed(1)
    for transform, states in reseed.plan:
        assert states is not None and transform.R in states, type(transform).__name__
    crop = pipeline.transforms[0]
    assert {id(crop.R), id(crop.cropper.R)} <= {id(s) for _, states in reseed.plan for s in states}


def test_reseeder_follows_a_pipeline_reseeded_by_someone_else(synthetic_cache, deterministic_cpu):
    case = T.load_volumes(synthetic_cache, CASES[:1])[0]
    monai_seeded, reseeded = pipeline_3d(augment_config()), pipeline_3d(augment_config())
    reseed = T.Reseeder(reseeded)
    reseed(3)
    reseeded.set_random_state(seed=99)  # new RandomState objects: the ones reseed kept are stale
    monai_seeded.set_random_state(seed=4)
    reseed(4)
    assert torch.equal(sample_of(monai_seeded, case)["image"], sample_of(reseeded, case)["image"])


@pytest.mark.parametrize("dims", [3, 2])
def test_augmentation_never_changes_the_cache(synthetic_cache, deterministic_cpu, dims):
    """The cache is not copied per sample, so no random transform may write into it."""
    from segflow.transforms import build_training_transforms

    cfg = always_config(PATCH if dims == 3 else [24, 24])
    items = T.load_volumes(synthetic_cache, CASES) if dims == 3 else [case_2d(i) for i in range(4)]
    loader = T.build_loader(items, *build_training_transforms(cfg, dims), batch_size=2, seed=SEED)
    cache = loader.dataset.cache_dataset._cache
    before = [{k: np.array(v, copy=True) for k, v in item.items() if k != "case_id"} for item in cache]
    for epoch in range(3):
        T.seed_epoch(loader, SEED, epoch)
        for _ in loader:
            pass
    for item, saved in zip(cache, before, strict=True):
        for key, value in saved.items():
            assert np.array_equal(np.asarray(item[key]), value), key


def test_loader_workers_give_the_batches_of_the_main_process(synthetic_cache, deterministic_cpu):
    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    cfg = augment_config()
    items = T.load_volumes(synthetic_cache, CASES)

    def batches(workers: int) -> list[dict]:
        loader = T.build_loader(items, build_cached_transforms(cfg), build_random_transforms(cfg), batch_size=2,
                                seed=SEED, num_workers=workers)
        out = []
        for epoch in range(2):
            T.seed_epoch(loader, SEED, epoch)
            out += list(loader)
        return out

    main_process, workers = batches(0), batches(2)
    assert len(main_process) == len(workers) == 6
    for expected, actual in zip(main_process, workers, strict=True):
        assert torch.equal(expected["image"], actual["image"]) and torch.equal(expected["label"], actual["label"])


# ---- the train stage's Trainer on a tiny fold ------------------------------------------------------

def write_fold_project(root: Path, cache: Path) -> None:
    """What ingest and augment leave for train: the cached cases, their index and the split."""
    import json
    import shutil

    shutil.copytree(cache, root / "artifacts" / "preprocessed")
    (root / "artifacts" / "preprocessed" / "index.json").write_text(json.dumps({"cases": CASES}))
    (root / "artifacts" / "ingest").mkdir(parents=True)
    folds = {case: int(i >= 2) for i, case in enumerate(CASES)}  # fold 0: 2 validation, 3 training cases
    labels = {"0": "background", "1": "Anterior", "2": "Posterior"}
    (root / "artifacts" / "ingest" / "splits.json").write_text(json.dumps({"folds": folds, "labels": labels}))


def tiny_params(**train):
    from segflow.config import parse_params

    from conftest import merge

    raw = merge(yaml.safe_load(REPO_PARAMS.read_text()), {
        "seed": SEED, "split": {"n_folds": 2, "folds": [0]},
        "augment": {"patch_size": PATCH, "target_spacing": [1.0, 1.0, 1.0], "normalisation": "zscore"},
        "model": {k: v for k, v in NET_ARGS.items() if k != "spatial_dims"},
        "train": {"epochs": 1, "batch_size": 2, "val_every": 1, "num_threads": 1, **train}})
    return parse_params(raw)


@pytest.mark.slow
def test_compiled_training_saves_plain_weights_in_a_loadable_bundle(tmp_path, synthetic_cache):
    from segflow.models.bundle import load_bundle, save_bundle
    from segflow.paths import Paths
    from segflow.stages.train import Trainer

    project = tmp_path / "project"
    write_fold_project(project, synthetic_cache)
    trainer = Trainer(tiny_params(compile=True), Paths(project))
    assert trainer.model is not trainer.net  # trains through the compiled module
    state = trainer.fit()

    assert state.epoch == 1 and state.history[-1]["val_dice_mean"] is not None
    checkpoint = torch.load(trainer.checkpoint, map_location="cpu", weights_only=True)["model"]
    save_bundle(project / "model.pt", trainer.bundle(preprocessing=None))
    bundle = load_bundle(project / "model.pt")
    assert set(bundle.state_dicts[0]) == set(checkpoint) == set(build_network("UNet", NET_ARGS).state_dict())
    (net,) = bundle.build()  # strict load: no `_orig_mod.` keys
    assert net(torch.zeros(1, 1, *PATCH)).shape == (1, 3, *PATCH)


def test_channels_last_training_gives_a_bundle_that_loads_into_a_standard_network(tmp_path, synthetic_cache):
    """train.channels_last changes the layout the network trains in, never what is saved."""
    from segflow.models.bundle import load_bundle, save_bundle
    from segflow.paths import Paths
    from segflow.stages.train import Trainer

    project = tmp_path / "project"
    write_fold_project(project, synthetic_cache)
    trainer = Trainer(tiny_params(channels_last=True), Paths(project))
    conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    trainer.fit()

    save_bundle(project / "model.pt", trainer.bundle(preprocessing=None))
    (net,) = load_bundle(project / "model.pt").build()
    image = torch.randn(1, 1, *PATCH)
    trainer.net.eval()
    with torch.no_grad():
        assert_same_up_to_float32_order(net(image), trainer.net(image))  # other layout, other rounding


def test_trainer_pins_loader_memory_only_for_a_gpu(tmp_path, synthetic_cache):
    """Pinned (page-locked) batches make the copy to a GPU asynchronous; on CPU they only cost."""
    from segflow.paths import Paths
    from segflow.stages.train import Trainer
    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    project = tmp_path / "project"
    write_fold_project(project, synthetic_cache)
    trainer = Trainer(tiny_params(), Paths(project))
    assert trainer.device.type == "cpu" and trainer.loader.pin_memory is False
    items = T.load_volumes(synthetic_cache, CASES)
    cfg = augment_config()
    pinned = T.build_loader(items, build_cached_transforms(cfg), build_random_transforms(cfg), batch_size=2,
                            pin_memory=True)
    assert pinned.pin_memory is True
