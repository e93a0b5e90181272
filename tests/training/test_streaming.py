"""A dataset larger than memory: patches read from the memory-mapped cache, a fixed number of
steps per epoch, and memory that does not grow with the number of cases."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from training_fixtures import CASES, PATCH, SEED, augment_config, deterministic_cpu, synthetic_cache  # noqa: F401

from segflow.data.cache import PreprocessedCache
from segflow.data.preprocess import Volume
from segflow.training import loader as L
from segflow.transforms import build_streaming_transforms, build_training_transforms
from segflow.transforms.patches import PatchFromDisk, window_starts


def streaming_loader(cache: PreprocessedCache, case_ids: list[str], iterations: int, batch: int = 2,
                     rank: int = 0, world: int = 1):
    items = [cache.file_item(c) for c in case_ids]
    return L.build_loader(items, [], build_streaming_transforms(augment_config(), PATCH, 3), batch, seed=SEED,
                          rank=rank, world=world, iterations=iterations, in_memory=False)


def test_a_patch_window_stays_inside_the_case_and_starts_at_zero_on_a_short_axis():
    assert window_starts([24, 24, 8], [16, 16, 16], [0, 23, 4]) == [0, 8, 0]
    assert window_starts([24, 24, 24], [16, 16, 16], [12, 12, 12]) == [4, 4, 4]


def test_a_patch_read_from_disk_is_the_cases_window_padded_where_the_case_is_smaller(tmp_path):
    cache = PreprocessedCache(tmp_path)
    image = np.arange(2 * 20 * 20 * 8, dtype=np.float32).reshape(2, 20, 20, 8)
    label = np.zeros((1, 20, 20, 8), np.uint8)
    label[0, 15, 15, 4] = 1
    cache.write_case("c", Volume(image, label, np.eye(4)), [1.0, 1.0, 1.0])
    reader = PatchFromDisk([16, 16, 16], foreground_oversample=1.0)  # always centred on the foreground voxel
    reader.set_random_state(0)

    out = reader(cache.file_item("c"))

    assert out["image"].shape == (2, 16, 16, 16) and out["label"].shape == (1, 16, 16, 16)
    assert np.array_equal(out["image"][:, :, :, 4:12], image[:, 4:20, 4:20, :])  # z padded 4 + 4
    assert not out["image"][:, :, :, :4].any() and out["label"].sum() == 1


def test_streamed_batches_are_reproducible_and_seeded_per_sample(synthetic_cache, deterministic_cpu):
    cache = PreprocessedCache(synthetic_cache)

    def first_batches(workers_loader):
        L.seed_epoch(workers_loader, SEED, 3)
        return [batch["image"].clone() for batch in workers_loader]

    once, again = first_batches(streaming_loader(cache, CASES, 4)), first_batches(streaming_loader(cache, CASES, 4))
    assert len(once) == 4 and all(b.shape == (2, 1, *PATCH) for b in once)
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))


def test_an_epoch_is_the_requested_number_of_steps_split_evenly_between_processes():
    single = L.EpochSampler(5, 12, seed=1)
    single.set_epoch(2)
    order = list(single)
    assert len(order) == 12 and sorted(order[:5]) == list(range(5))  # whole passes first, then a cut one
    ranks = [L.EpochSampler(5, 6, rank=r, world=2, seed=1) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert [x for pair in zip(*map(list, ranks), strict=True) for x in pair] == order


def test_one_pass_keeps_the_distributed_sampler_and_its_sample_order(synthetic_cache):
    items = PreprocessedCache(synthetic_cache).load(CASES)
    cached, random = build_training_transforms(augment_config(), PATCH, 3)
    one_pass = L.build_loader(items, cached, random, 2, seed=SEED, iterations=3)
    assert isinstance(one_pass.sampler, torch.utils.data.DistributedSampler) and len(one_pass) == 3
    capped = L.build_loader(items, cached, random, 2, seed=SEED, iterations=2)
    assert isinstance(capped.sampler, L.EpochSampler) and len(capped) == 2


def write_cases(cache: PreprocessedCache, n: int, side: int = 48) -> list[str]:
    ids = []
    for i in range(n):
        rng = np.random.default_rng(i)
        label = np.zeros((1, side, side, side), np.uint8)
        label[0, 10:20, 10:20, 10:20] = 1 + i % 2
        cache.write_case(f"case_{i:03d}", Volume(rng.normal(size=label.shape).astype(np.float32), label, np.eye(4)),
                         [1.0, 1.0, 1.0])
        ids.append(f"case_{i:03d}")
    return ids


def peak_traced_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("in_memory", [False, True])
def test_loader_memory_stays_flat_as_cases_grow_only_when_streaming(tmp_path, deterministic_cpu, in_memory):
    """Peak Python-tracked memory (numpy arrays included) of building a loader and running one
    epoch of 4 steps, for 4 and for 16 cases of 48^3 voxels (~0.5 MB each): streaming stays within
    a few patches, while holding the cases grows by the 12 extra cases (measured 6.6 MB: images
    and labels)."""
    cache = PreprocessedCache(tmp_path)
    ids = write_cases(cache, 16)

    def epoch(case_ids):
        def run():
            if in_memory:
                cached, random = build_training_transforms(augment_config(), PATCH, 3)
                loader = L.build_loader(cache.load(case_ids), cached, random, 2, seed=SEED, iterations=4)
            else:
                loader = streaming_loader(cache, case_ids, 4)
            L.seed_epoch(loader, SEED, 0)
            for _ in loader:
                pass
        return peak_traced_bytes(run)

    few, many = epoch(ids[:4]), epoch(ids)
    if in_memory:
        assert many - few > 12 * 48**3 * 4  # at least the 12 extra float32 images
    else:
        assert many - few < 48**3 * 5  # less than one more case: nothing per case is held


def test_a_trainer_over_budget_streams_patches_for_the_requested_steps(tmp_path, synthetic_cache):
    from training_fixtures import tiny_params, write_fold_project

    from segflow.paths import Paths
    from segflow.training.trainer import Trainer

    write_fold_project(tmp_path / "project", synthetic_cache)
    trainer = Trainer(tiny_params(cache_ram_gb=0, iterations_per_epoch=3), Paths(tmp_path / "project"))
    assert trainer.in_memory is False and len(trainer.loader) == 3
    state = trainer.fit()
    assert np.isfinite(state.history[-1]["train_loss"]) and state.history[-1]["val_dice_mean"] is not None


def test_auto_steps_are_one_pass_capped_at_nnunets_250():
    from segflow.training.loader import epoch_iterations

    assert epoch_iterations("auto", 176, 4, 1) == 44  # Hippocampus fold 0: one pass, as before
    assert epoch_iterations("auto", 5000, 2, 1) == 250
    assert epoch_iterations(7, 5000, 2, 1) == 7
