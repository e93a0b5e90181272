"""The training loop's pieces: one epoch of optimiser steps, validation Dice, the LR schedule and
the memory layout the network trains in. `trainer.Trainer` strings them together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from segflow.inference.sliding_window import autocast, predict_labels
from segflow.metrics.segmentation import dice_per_output, without_ignored

if TYPE_CHECKING:
    from segflow.data.regions import Regions


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


def validate(net, items: list[dict], patch_size: list[int], n_classes: int, amp: bool,
             ignore_label: int | None = None, regions: Regions | None = None) -> list[float]:
    """Mean Dice per foreground class (or per region) over the validation cases (sliding window,
    whole volumes), voxels of the ignore label left out."""
    net.eval()
    scores = [dice_per_output(*without_ignored(predict_labels(net, it["image"], patch_size, amp=amp, regions=regions),
                                               it["label"][0], ignore_label), n_classes, regions)
              for it in items]
    return [float(v) for v in np.mean(scores, axis=0)]
