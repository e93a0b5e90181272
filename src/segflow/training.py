"""Training loop pieces: data loading from the preprocessed cache, epochs, validation, checkpoints.

Resumable and reproducible: every epoch reseeds torch, the shuffling and the MONAI transforms
from (seed, epoch), so a run resumed from the checkpoint of epoch k continues exactly as an
uninterrupted run would (on CPU with deterministic kernels).
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
from segflow.io import atomic_path
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


def build_loader(items: list[dict], cached: list, random: list, batch_size: int):
    """MONAI CacheDataset (deterministic transforms run once) + DataLoader on the main process."""
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose

    dataset = CacheDataset(items, Compose(cached + random), cache_rate=1.0, num_workers=0, progress=False)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=False,
                      generator=torch.Generator())


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Reseed everything random for `epoch` (makes resume exact)."""
    torch.manual_seed(seed + epoch)
    np.random.seed((seed + epoch) % 2**32)
    loader.generator.manual_seed(seed + epoch)
    loader.dataset.transform.set_random_state(seed=seed + epoch)


def poly_lr(base_lr: float, epoch: int, total: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay."""
    return base_lr * (1 - epoch / total) ** exponent


def train_epoch(net, loader, loss_fn, optimizer, scaler, device, amp: bool, progress=None) -> float:
    """One pass over the loader; returns the mean loss."""
    net.train()
    losses = []
    for batch in loader:
        images, labels = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(net(images), labels)
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
    """Restore the last checkpoint if it belongs to this configuration; None otherwise."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("fingerprint") != fingerprint:
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
