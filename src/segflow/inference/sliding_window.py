"""Sliding-window inference shared by training-time validation, evaluate and predict."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from segflow.data.regions import Regions

PROGRESS_WINDOWS = 64  # a pass over more sliding windows than this shows a progress bar (stderr)


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


def count_windows(spatial: Sequence[int], patch_size: Sequence[int], overlap: float) -> int:
    """How many windows sliding_window_inference tiles an image of this size with (the image is
    padded up to the patch first; steps are patch * (1 - overlap), as MONAI's scan interval)."""
    count = 1
    for size, patch in zip(spatial, patch_size, strict=True):
        if size > patch:
            count *= math.ceil((size - patch) / max(int(patch * (1 - overlap)), 1)) + 1
    return count


@torch.no_grad()
def predict_batch_logits(net: torch.nn.Module, images: torch.Tensor, patch_size: list[int],
                         sw_batch_size: int = 4, overlap: float = 0.5, amp: bool = True,
                         progress: bool = False) -> torch.Tensor:
    """Class logits (B, K, *spatial) for a batch of same-size channel-first images; their windows
    share the network's forward batches (up to `sw_batch_size` windows each). `progress` shows
    MONAI's tqdm bar over the windows (on stderr), for volumes that take a while."""
    from monai.inferers import sliding_window_inference

    weight = next(net.parameters())
    device = weight.device
    stitch = stitching_device(device, images.shape)
    batch = torch.as_tensor(images).to(stitch, dtype=weight.dtype)
    with autocast(device, amp):
        logits = sliding_window_inference(batch, list(patch_size), sw_batch_size, net, overlap=overlap,
                                          mode="gaussian", progress=progress, sw_device=device, device=stitch)
    return torch.as_tensor(logits).float().cpu()


# Above this many input voxels (a batch of 512 x 512 x 256 volumes) a GPU runs the windows but the
# image and the stitched logits (classes x voxels, float32) stay in CPU memory, so GPU memory is
# bounded by the windows alone (nnU-Net falls back to the same when the device runs out).
STITCH_ON_GPU_MAX_VOXELS = 64 * 2**20


def stitching_device(device: torch.device, shape: Sequence[int]) -> torch.device:
    """Where the sliding window keeps the image and accumulates the output: the network's device,
    except for a GPU and a volume too large to stitch there (then CPU)."""
    if device.type == "cuda" and math.prod(shape) > STITCH_ON_GPU_MAX_VOXELS:
        return torch.device("cpu")
    return device


def predict_logits(net: torch.nn.Module, image: np.ndarray | torch.Tensor, patch_size: list[int],
                   sw_batch_size: int = 4, overlap: float = 0.5, amp: bool = True) -> torch.Tensor:
    """Class logits (K, *spatial) for one channel-first image, Gaussian-weighted windows."""
    image = torch.as_tensor(image, dtype=torch.float32)[None]
    return predict_batch_logits(net, image, patch_size, sw_batch_size, overlap, amp)[0]


def mirror_sets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of flipped spatial axes, the identity first (nnU-Net's mirror TTA)."""
    from itertools import combinations

    return [axes for r in range(spatial_dims + 1) for axes in combinations(range(spatial_dims), r)]


def flip(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """`tensor` (channel-first) mirrored along these spatial axes."""
    return torch.flip(tensor, [a + 1 for a in axes]) if axes else tensor


def predict_probabilities(net: torch.nn.Module | list[torch.nn.Module], image: np.ndarray | torch.Tensor,
                          patch_size: list[int], tta: bool = False, sw_batch_size: int = 4,
                          overlap: float = 0.5, sigmoid: bool = False, **kwargs) -> torch.Tensor:
    """Softmax (K, *spatial) (with `sigmoid`: per-output sigmoid, for region-based labels),
    averaged over the members of an ensemble (a list of networks) and, with `tta`, over all
    mirrored copies of the input.

    Mirrored copies go through the network together while their windows fit in one forward batch
    (`sw_batch_size` windows): a small volume (one window, e.g. Hippocampus) runs its 8 mirrors in
    2 forward passes of 4 instead of 8 passes of 1 (faster: README, Performance; see
    bench/predict_time.py); a volume of `sw_batch_size` windows or more keeps one copy per pass."""
    image = torch.as_tensor(image, dtype=torch.float32)
    members = list(net) if isinstance(net, (list, tuple)) else [net]
    flips = mirror_sets(image.ndim - 1) if tta else [()]
    per_pass = max(1, sw_batch_size // count_windows(image.shape[1:], patch_size, overlap))
    total = None
    for member in members:
        for start in range(0, len(flips), per_pass):
            group = flips[start:start + per_pass]
            views = torch.stack([flip(image, axes) for axes in group])
            logits = predict_batch_logits(member, views, patch_size, sw_batch_size, overlap, **kwargs)
            for axes, view_logits in zip(group, logits, strict=True):
                probabilities = flip(view_logits.sigmoid() if sigmoid else view_logits.softmax(0), axes)
                total = probabilities if total is None else total + probabilities
    return total / (len(flips) * len(members))


def predict_labels(net: torch.nn.Module | list[torch.nn.Module], image: np.ndarray, patch_size: list[int],
                   tta: bool = False, regions: Regions | None = None, **kwargs) -> np.ndarray:
    """Label map (*spatial) uint8 for one channel-first image: the most probable class, or for
    region-based labels (segflow.data.regions) the regions painted in their class order."""
    probabilities = predict_probabilities(net, image, patch_size, tta, sigmoid=regions is not None, **kwargs)
    return to_labels(probabilities, regions)


def to_labels(probabilities: torch.Tensor | np.ndarray, regions: Regions | None = None) -> np.ndarray:
    """(K, *spatial) probabilities -> (*spatial) uint8 label map (argmax, or the regions' order)."""
    if regions is not None:
        return regions.to_label_map(probabilities)
    return np.asarray(torch.as_tensor(probabilities).argmax(0)).astype(np.uint8)
