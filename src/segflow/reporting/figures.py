"""PNG figures a person looks at: augmentation previews and prediction overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.files import atomic_path

LABEL_COLOURS = ["none", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def busiest_slice(label: np.ndarray) -> int:
    """Index along the last axis with the most foreground (middle slice if none)."""
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(0)
    return int(counts.argmax()) if counts.any() else label.shape[-1] // 2


def _overlay(ax, image: np.ndarray, label: np.ndarray, title: str) -> None:
    from matplotlib.colors import ListedColormap

    n = max(int(label.max()) + 1, 2)
    cmap = ListedColormap([(0, 0, 0, 0)] + [LABEL_COLOURS[1 + i % 5] for i in range(n - 1)])
    ax.imshow(image.T, cmap="gray", origin="lower")
    ax.imshow(np.ma.masked_equal(label.T, 0), cmap=cmap, vmin=0, vmax=n - 1, alpha=0.45,
              origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def save_figure(fig, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_samples(samples: list[tuple[str, np.ndarray, np.ndarray]], dest: Path) -> None:
    """One panel per (title, image, label); 3D inputs show their busiest slice."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 3), squeeze=False)
    for ax, (title, image, label) in zip(axes[0], samples, strict=True):
        if image.ndim == 3:
            index = busiest_slice(label)
            image, label = image[..., index], label[..., index]
        _overlay(ax, image, label, title)
    save_figure(fig, dest)


def plot_prediction(case_id: str, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                    dice: list[float], dest: Path) -> None:
    """Ground truth beside prediction on the busiest ground-truth slice."""
    plt = _pyplot()
    index = busiest_slice(truth) if image.ndim == 3 else None
    pick = (lambda a: a[..., index]) if index is not None else (lambda a: a)
    fig, axes = plt.subplots(1, 2, figsize=(5.4, 3))
    _overlay(axes[0], pick(image), pick(truth), f"{case_id}: ground truth")
    _overlay(axes[1], pick(image), pick(prediction), "prediction, Dice " + ", ".join(f"{d:.2f}" for d in dice))
    save_figure(fig, dest)
