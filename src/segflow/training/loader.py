"""Training data: the loader over the preprocessed cache and the seeding that makes it reproducible.

Resumable and reproducible: the shuffling is a function of (seed, epoch) and each sample's
augmentation a function of (seed, epoch, dataset index), so a run resumed from the checkpoint of
epoch k continues exactly as an uninterrupted run would (on CPU with deterministic kernels), and
neither the number of loader workers nor the number of DDP processes changes what a sample sees.
"""

from __future__ import annotations

import numpy as np
import torch

from segflow.config import AUTO, MAX_AUTO_ITERATIONS, Params
from segflow.data.cache import PreprocessedCache


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item `index` in `epoch` (a hash, so nearby triples differ)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


def random_states(transform, seen: set[int] | None = None) -> list[np.random.RandomState]:
    """The RandomState objects of a MONAI random transform and of the random transforms it holds
    (e.g. RandCropByPosNegLabeld's cropper), each object once."""
    from monai.transforms import Randomizable

    seen = set() if seen is None else seen
    if id(transform) in seen:
        return []
    seen.add(id(transform))
    states = [transform.R] if isinstance(getattr(transform, "R", None), np.random.RandomState) else []
    for value in getattr(transform, "__dict__", {}).values():
        for inner in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(inner, Randomizable):
                states += [s for s in random_states(inner, seen) if all(s is not t for t in states)]
    return states


def _seeded_with(states: list[np.random.RandomState], seed: int) -> bool:
    expected = np.random.RandomState(seed).get_state()
    return all(all(np.array_equal(a, b) for a, b in zip(s.get_state(), expected, strict=True)) for s in states)


class Reseeder:
    """`compose.set_random_state(seed=s)` with the same random streams after it, about 20x cheaper.

    MONAI's call builds a new np.random.RandomState for the Compose and for every random transform
    and the ones inside it, ~130 us each (numpy draws OS entropy first): ~3 ms per 3D sample. Here
    the first call is MONAI's own; after it the states it built are reseeded in place
    (`RandomState.seed(s)` gives exactly the stream of `RandomState(s)`). A transform whose states
    that first call did not all seed with the seed the Compose drew for it (a nested Compose, a
    derived seed) keeps MONAI's `set_random_state`.
    """

    def __init__(self, compose):
        self.compose, self.plan = compose, None

    def __call__(self, seed: int) -> None:
        if self.plan is None or self.replaced():
            self.plan = self._first_call(seed)
            return
        from monai.utils import MAX_SEED

        self.compose.R.seed(seed % MAX_SEED)
        for transform, states in self.plan:
            derived = int(self.compose.R.randint(MAX_SEED, dtype="uint32"))
            if states is None:
                transform.set_random_state(seed=derived)
            for state in states or ():
                state.seed(derived)

    def replaced(self) -> bool:
        """True when someone else reseeded the transforms since (their states are new objects)."""
        return any(states and transform.R is not states[0] for transform, states in self.plan)

    def _first_call(self, seed: int) -> list[tuple]:
        from monai.transforms import Randomizable
        from monai.utils import MAX_SEED

        self.compose.set_random_state(seed=seed)
        replay, plan = np.random.RandomState(seed % MAX_SEED), []
        for transform in (t for t in self.compose.transforms if isinstance(t, Randomizable)):
            derived = int(replay.randint(MAX_SEED, dtype="uint32"))
            states = random_states(transform)
            plan.append((transform, states if _seeded_with(states, derived) else None))
        return plan


class PerSampleSeeded(torch.utils.data.Dataset):
    """A MONAI (Cache)Dataset whose random transforms are reseeded from (seed, epoch, index) before
    each item, so an item's augmentation does not depend on which process or worker draws it, nor
    on what was drawn before it. `set_epoch` must run before the loader is iterated (workers copy
    the dataset at the start of each epoch; persistent workers would keep a stale epoch)."""

    def __init__(self, cache_dataset, seed: int):
        self.cache_dataset, self.seed, self.epoch = cache_dataset, seed, 0
        self.reseed = Reseeder(cache_dataset.transform)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cache_dataset)

    def __getitem__(self, index: int):
        self.reseed(sample_seed(self.seed, self.epoch, index))
        return self.cache_dataset[index]


class EpochSampler(torch.utils.data.Sampler):
    """A fixed number of samples per epoch and rank, whatever the dataset's size: seeded
    permutations of the whole dataset (a function of seed and epoch, the same for any `world`),
    joined and cut to `samples_per_rank * world`; rank r takes positions r, r + world, ...
    Used when an epoch is not one pass (train.iterations_per_epoch)."""

    def __init__(self, n_items: int, samples_per_rank: int, rank: int = 0, world: int = 1, seed: int = 0):
        self.n_items, self.samples_per_rank, self.rank, self.world, self.seed = n_items, samples_per_rank, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_rank

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        total = self.samples_per_rank * self.world
        rounds = -(-total // self.n_items)
        order = torch.cat([torch.randperm(self.n_items, generator=generator) for _ in range(rounds)])[:total]
        return iter(order[self.rank :: self.world].tolist())


def one_pass_iterations(n_items: int, batch_size: int, world: int) -> int:
    """Steps of one pass over `n_items` at this per-rank batch (the last batch may be short)."""
    return -(-n_items // (batch_size * world))


def epoch_iterations(requested: int | str, n_cases: int, batch_size: int, world: int) -> int:
    """train.iterations_per_epoch: as given, or (auto) one pass over the cases capped at
    MAX_AUTO_ITERATIONS steps."""
    if requested != AUTO:
        return int(requested)
    return min(one_pass_iterations(n_cases, batch_size, world), MAX_AUTO_ITERATIONS)


def build_loader(items: list[dict], cached: list, random: list, batch_size: int, seed: int = 0,
                 rank: int = 0, world: int = 1, num_workers: int = 0, pin_memory: bool = False,
                 iterations: int | None = None, in_memory: bool = True):
    """A DataLoader over the cases `items`: in memory (MONAI CacheDataset; the deterministic
    transforms `cached` run once per case) or, with `in_memory` False, items naming cached files
    that `random` starts by reading a patch of (no case is held; see segflow.transforms.patches).

    `batch_size` is this process's share of the global batch. An epoch is `iterations` steps
    (None: one pass). For one pass the sampler draws one permutation of the whole dataset per
    epoch, the same for any `world`, and gives rank r the positions r, r + world, ...; so step k
    of all ranks together holds exactly the samples of step k of a single process with the global
    batch. When len(items) % world != 0 the sampler pads the permutation by repeating its first
    (world - len % world) samples (DistributedSampler's drop_last=False), so every rank takes the
    same number of steps. Any other number of steps draws from `EpochSampler`.

    `num_workers` > 0 augments in that many worker processes (forked at the start of each epoch,
    so they see its `set_epoch`), overlapping the next batches with the training step; batches
    are the same as with 0 (each sample is seeded by its index). The cache is not copied per
    sample (`copy_cache=False`): the random transforms only read it (the crop comes first and
    every later transform returns new arrays), which tests/training/test_loader.py checks.
    `pin_memory` (for a CUDA device) puts batches in page-locked memory, so their copy to the GPU
    can run asynchronously (`loop.train_epoch` copies with non_blocking).
    """
    from monai.data import CacheDataset, Dataset, list_data_collate
    from monai.transforms import Compose
    from torch.utils.data import DataLoader, DistributedSampler

    if in_memory:
        cases = CacheDataset(items, Compose(cached + random), cache_rate=1.0, num_workers=0, progress=False,
                             copy_cache=False)
    else:
        cases = Dataset(items, Compose(cached + random))
    dataset = PerSampleSeeded(cases, seed)
    if iterations is None or iterations == one_pass_iterations(len(items), batch_size, world):
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    else:
        sampler = EpochSampler(len(items), iterations * batch_size, rank, world, seed)
    # list_data_collate flattens the one-element lists RandCropByPosNegLabeld returns.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      collate_fn=list_data_collate, pin_memory=pin_memory)


# Bytes per voxel besides image and label that an in-memory case costs: MONAI's foreground and
# background voxel indices (int64), which the patch sampler keeps per case.
INDEX_BYTES_PER_VOXEL = 8


def fits_in_memory(cache: PreprocessedCache, case_ids: list[str], budget_gb: float) -> bool:
    """Whether these cases, held in memory as the CacheDataset holds them, stay within `budget_gb`."""
    return cache.case_bytes(case_ids, INDEX_BYTES_PER_VOXEL) <= budget_gb * 2**30


def fold_loader(params: Params, cache: PreprocessedCache, case_ids: list[str], ignore_label: int | None,
                device: torch.device, in_memory: bool, iterations: int | None = None):
    """This process's training loader over `case_ids`: its share of the global batch, the same
    sample order for any world; the cases held in memory (`in_memory`) or read patch by patch.
    An epoch is `iterations` steps (None: train.iterations_per_epoch)."""
    from segflow.training import distributed as D
    from segflow.transforms import build_streaming_transforms, build_training_transforms

    cfg, world = params.train, D.world_size()
    batch = D.per_rank_batch(cfg.batch_size, world)  # before loading any data
    patch, dims = params.preprocess.patch_size, params.model.spatial_dims
    if in_memory:
        items = cache.load(case_ids)
        cached, random = build_training_transforms(params.augment, patch, dims, ignore_label)
    else:
        items = [cache.file_item(case_id) for case_id in case_ids]
        cached, random = [], build_streaming_transforms(params.augment, patch, dims)
    if iterations is None:
        iterations = epoch_iterations(cfg.iterations_per_epoch, len(items), batch, world)
    return build_loader(items, cached, random, batch, seed=params.seed, rank=D.rank(), world=world,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        iterations=iterations, in_memory=in_memory)


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Reseed everything random for `epoch` (makes resume exact)."""
    torch.manual_seed(seed + epoch)
    np.random.seed((seed + epoch) % 2**32)
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
