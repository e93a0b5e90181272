"""Sliding-window inference shared by training-time validation, evaluate and predict."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """CUDA when present (and not refused), else CPU."""
    if prefer == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA only; a no-op context on CPU."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(net: torch.nn.Module, image: np.ndarray | torch.Tensor, patch_size: list[int],
                   sw_batch_size: int = 4, overlap: float = 0.5, amp: bool = True) -> torch.Tensor:
    """Class logits (K, *spatial) for one channel-first image, Gaussian-weighted windows."""
    from monai.inferers import sliding_window_inference

    device = next(net.parameters()).device
    batch = torch.as_tensor(image, dtype=torch.float32)[None].to(device)
    with autocast(device, amp):
        logits = sliding_window_inference(batch, list(patch_size), sw_batch_size, net,
                                          overlap=overlap, mode="gaussian")
    return torch.as_tensor(logits)[0].float().cpu()


def mirror_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of flipped spatial axes, the identity first (nnU-Net's mirror TTA)."""
    from itertools import combinations

    return [axes for r in range(spatial_dims + 1) for axes in combinations(range(spatial_dims), r)]


def predict_probabilities(net: torch.nn.Module | list[torch.nn.Module], image: np.ndarray | torch.Tensor,
                          patch_size: list[int], tta: bool = False, **kwargs) -> torch.Tensor:
    """Softmax (K, *spatial), averaged over the members of an ensemble (a list of networks) and,
    with `tta`, over all mirrored copies of the input."""
    image = torch.as_tensor(image, dtype=torch.float32)
    members = list(net) if isinstance(net, (list, tuple)) else [net]
    flips = mirror_sets(image.ndim - 1) if tta else [()]
    total = None
    for member in members:
        for axes in flips:
            dims = [a + 1 for a in axes]  # image is channel-first
            view = torch.flip(image, dims) if dims else image
            probabilities = predict_logits(member, view, patch_size, **kwargs).softmax(0)
            probabilities = torch.flip(probabilities, dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
    return total / (len(flips) * len(members))


def predict_labels(net: torch.nn.Module | list[torch.nn.Module], image: np.ndarray, patch_size: list[int],
                   tta: bool = False, **kwargs) -> np.ndarray:
    """Label map (*spatial) uint8 for one channel-first image."""
    return predict_probabilities(net, image, patch_size, tta, **kwargs).argmax(0).numpy().astype(np.uint8)
