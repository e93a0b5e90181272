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


def predict_labels(net: torch.nn.Module, image: np.ndarray, patch_size: list[int], **kwargs) -> np.ndarray:
    """Label map (*spatial) uint8 for one channel-first image."""
    return predict_logits(net, image, patch_size, **kwargs).argmax(0).numpy().astype(np.uint8)
