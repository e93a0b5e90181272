"""Training loop pieces: data loading from the preprocessed cache, epochs, validation, checkpoints.

Resumable and reproducible: the shuffling is a function of (seed, epoch) and each sample's
augmentation a function of (seed, epoch, dataset index), so a run resumed from the checkpoint of
epoch k continues exactly as an uninterrupted run would (on CPU with deterministic kernels), and
neither the number of loader workers nor the number of DDP processes changes what a sample sees.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segflow.data.preprocess import read_volume
from segflow.inference import autocast, predict_labels
from segflow.errors import StageFailed
from segflow.io import atomic_path
from segflow.models.torch_files import load_torch_file
from segflow.metrics.segmentation import dice_per_class


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)


def config_fingerprint(*sections: dict) -> str:
    """Hash of everything that shapes the weights; a checkpoint from another config is not resumed."""
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_volumes(cache: Path, case_ids: list[str]) -> list[dict]:
    """Preprocessed cases as MONAI data dicts (decoded once, kept in memory for every epoch)."""
    items = []
    for case_id in case_ids:
        volume = read_volume(cache / f"{case_id}.npz")
        items.append({"case_id": case_id, "image": volume.image, "label": volume.label})
    return items


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
    """A MONAI CacheDataset whose random transforms are reseeded from (seed, epoch, index) before
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


def build_loader(items: list[dict], cached: list, random: list, batch_size: int, seed: int = 0,
                 rank: int = 0, world: int = 1, num_workers: int = 0, pin_memory: bool = False):
    """MONAI CacheDataset (deterministic transforms run once) + DataLoader.

    `batch_size` is this process's share of the global batch. The sampler draws one permutation
    of the whole dataset per epoch, the same for any `world`, and gives rank r the positions
    r, r + world, ...; so step k of all ranks together holds exactly the samples of step k of a
    single process with the global batch. When len(items) % world != 0 the sampler pads the
    permutation by repeating its first (world - len % world) samples (DistributedSampler's
    drop_last=False), so every rank takes the same number of steps.

    `num_workers` > 0 augments in that many worker processes (forked at the start of each epoch,
    so they see its `set_epoch`), overlapping the next batches with the training step; batches
    are the same as with 0 (each sample is seeded by its index). The cache is not copied per
    sample (`copy_cache=False`): the random transforms only read it (the crop comes first and
    every later transform returns new arrays), which tests/test_training.py checks.
    `pin_memory` (for a CUDA device) puts batches in page-locked memory, so their copy to the GPU
    can run asynchronously (`train_epoch` copies with non_blocking).
    """
    from monai.data import CacheDataset, list_data_collate
    from monai.transforms import Compose
    from torch.utils.data import DataLoader, DistributedSampler

    cache = CacheDataset(items, Compose(cached + random), cache_rate=1.0, num_workers=0, progress=False,
                         copy_cache=False)
    dataset = PerSampleSeeded(cache, seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    # list_data_collate flattens the one-element lists RandCropByPosNegLabeld returns.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
                      collate_fn=list_data_collate, pin_memory=pin_memory)


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Reseed everything random for `epoch` (makes resume exact)."""
    torch.manual_seed(seed + epoch)
    np.random.seed((seed + epoch) % 2**32)
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)


def memory_format(channels_last: bool, spatial_dims: int) -> torch.memory_format:
    """The layout to train in: channels-last (NHWC / NDHWC) where asked and defined, else the default."""
    layouts = {2: torch.channels_last, 3: torch.channels_last_3d}
    return layouts.get(spatial_dims, torch.contiguous_format) if channels_last else torch.contiguous_format


def poly_lr(base_lr: float, epoch: int, total: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay."""
    return base_lr * (1 - epoch / total) ** exponent


def standard_layout(output):
    """The network's output in the default (channels-first contiguous) layout. A channels-last
    network returns channels-last logits, and softmax and cross-entropy over the channel axis are
    slow in that layout (profile: 3x the loss time of one copy back; bench/profile_train.py)."""
    return output.contiguous() if isinstance(output, torch.Tensor) else output


def train_epoch(net, loader, loss_fn, optimizer, scaler, device, amp: bool, progress=None) -> float:
    """One pass over the loader; returns the mean loss."""
    net.train()
    losses = []
    dtype = next(net.parameters()).dtype  # float32, or float64 for exact numerical checks
    for batch in loader:
        images = batch["image"].to(device, dtype=dtype, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(standard_layout(net(images)), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
    return float(np.mean(losses))


def validate(net, items: list[dict], patch_size: list[int], n_classes: int, amp: bool) -> list[float]:
    """Mean Dice per foreground class over the validation cases (sliding window, whole volumes)."""
    net.eval()
    scores = [dice_per_class(predict_labels(net, it["image"], patch_size, amp=amp), it["label"][0], n_classes)
              for it in items]
    return [float(v) for v in np.mean(scores, axis=0)]


def save_checkpoint(path: Path, fingerprint: str, state: TrainState, net, optimizer, scaler) -> None:
    payload = {"fingerprint": fingerprint, "epoch": state.epoch, "history": state.history,
               "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resume_checkpoint(path: Path, fingerprint: str, net, optimizer, scaler) -> TrainState | None:
    """Restore the last checkpoint if it belongs to this configuration; None otherwise. A checkpoint
    that does not load stops training (it may hold hours of work): the error names it and says
    that deleting it restarts the fold from scratch."""
    if not path.is_file():
        return None
    try:
        payload = load_torch_file(path, "training checkpoint")
    except ValueError as exc:
        raise StageFailed(f"{exc}. Delete {path} to train this fold from scratch") from None
    if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
        return None
    net.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    return TrainState(epoch=int(payload["epoch"]), history=list(payload["history"]))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
