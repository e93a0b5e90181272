"""The loader: cheap reseeding that keeps MONAI's random streams, an uncopied cache, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_fixtures import (  # noqa: F401
    CASES,
    PATCH,
    SEED,
    always_config,
    augment_config,
    deterministic_cpu,
    synthetic_cache,
)

from segflow.config import AugmentConfig
from segflow.data.cache import PreprocessedCache
from segflow.training import loader as L


def pipeline_2d(cfg: AugmentConfig, patch: list[int]):
    from monai.transforms import Compose

    from segflow.transforms.two_d import build_random_transforms_2d

    return Compose(build_random_transforms_2d(cfg, patch))


def pipeline_3d(cfg: AugmentConfig, patch: list[int] = PATCH):
    from monai.transforms import Compose

    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    return Compose(build_cached_transforms(patch) + build_random_transforms(cfg, patch))


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
    cfg, patch = (augment_config(), PATCH) if dims == 3 else (always_config(), [24, 24])
    build = pipeline_3d if dims == 3 else pipeline_2d
    case = PreprocessedCache(synthetic_cache).load(CASES[:1])[0] if dims == 3 else case_2d(0)
    monai_seeded, reseeded = build(cfg, patch), build(cfg, patch)
    reseed = L.Reseeder(reseeded)
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

    pipeline = Compose(build_random_transforms(augment_config(), PATCH))
    reseed = L.Reseeder(pipeline)
    reseed(1)
    for transform, states in reseed.plan:
        assert states is not None and transform.R in states, type(transform).__name__
    crop = pipeline.transforms[0]
    assert {id(crop.R), id(crop.cropper.R)} <= {id(s) for _, states in reseed.plan for s in states}


def test_reseeder_follows_a_pipeline_reseeded_by_someone_else(synthetic_cache, deterministic_cpu):
    case = PreprocessedCache(synthetic_cache).load(CASES[:1])[0]
    monai_seeded, reseeded = pipeline_3d(augment_config()), pipeline_3d(augment_config())
    reseed = L.Reseeder(reseeded)
    reseed(3)
    reseeded.set_random_state(seed=99)  # new RandomState objects: the ones reseed kept are stale
    monai_seeded.set_random_state(seed=4)
    reseed(4)
    assert torch.equal(sample_of(monai_seeded, case)["image"], sample_of(reseeded, case)["image"])


@pytest.mark.parametrize("dims", [3, 2])
def test_augmentation_never_changes_the_cache(synthetic_cache, deterministic_cpu, dims):
    """The cache is not copied per sample, so no random transform may write into it."""
    from segflow.transforms import build_training_transforms

    patch = PATCH if dims == 3 else [24, 24]
    items = PreprocessedCache(synthetic_cache).load(CASES) if dims == 3 else [case_2d(i) for i in range(4)]
    loader = L.build_loader(items, *build_training_transforms(always_config(), patch, dims), batch_size=2, seed=SEED)
    cache = loader.dataset.cache_dataset._cache
    before = [{k: np.array(v, copy=True) for k, v in item.items() if k != "case_id"} for item in cache]
    for epoch in range(3):
        L.seed_epoch(loader, SEED, epoch)
        for _ in loader:
            pass
    for item, saved in zip(cache, before, strict=True):
        for key, value in saved.items():
            assert np.array_equal(np.asarray(item[key]), value), key


def test_loader_workers_give_the_batches_of_the_main_process(synthetic_cache, deterministic_cpu):
    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    cfg = augment_config()
    items = PreprocessedCache(synthetic_cache).load(CASES)

    def batches(workers: int) -> list[dict]:
        loader = L.build_loader(items, build_cached_transforms(PATCH), build_random_transforms(cfg, PATCH), batch_size=2,
                                seed=SEED, num_workers=workers)
        out = []
        for epoch in range(2):
            L.seed_epoch(loader, SEED, epoch)
            out += list(loader)
        return out

    main_process, workers = batches(0), batches(2)
    assert len(main_process) == len(workers) == 6
    for expected, actual in zip(main_process, workers, strict=True):
        assert torch.equal(expected["image"], actual["image"]) and torch.equal(expected["label"], actual["label"])


def test_pinned_loader_memory_is_on_request(synthetic_cache):
    """Pinned (page-locked) batches make the copy to a GPU asynchronous; off by default."""
    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    items, cfg = PreprocessedCache(synthetic_cache).load(CASES), augment_config()
    cached, random = build_cached_transforms(PATCH), build_random_transforms(cfg, PATCH)
    assert L.build_loader(items, cached, random, batch_size=2).pin_memory is False
    assert L.build_loader(items, cached, random, batch_size=2, pin_memory=True).pin_memory is True
