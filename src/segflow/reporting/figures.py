"""PNG figures a person looks at: augmentation previews and prediction overlays.

Orientation: a 3D array is (x, y, z) as segflow reads volumes (segflow.data.images), shown with x
to the right and y up; a 2D array is (row, column) as the PNG it was read from, shown as the PNG
is (row 0 at the top), never transposed. Every overlay names its classes in a legend, fills each
class with its colour and draws its outline, so a reader needs no code to read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.files import atomic_path

LABEL_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
FILL_ALPHA = 0.35
#: The three orthogonal views of a 3D overlay: name and the (x, y, z) axis each slice fixes.
VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_colour(label: int) -> str:
    """The colour of foreground class `label` (1, 2, ...) in every figure."""
    return LABEL_COLOURS[(label - 1) % len(LABEL_COLOURS)]


def busiest_slice(label: np.ndarray) -> int:
    """Index along the last axis with the most foreground (middle slice if none)."""
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(0)
    return int(counts.argmax()) if counts.any() else label.shape[-1] // 2


def structure_centre(label: np.ndarray) -> tuple[int, ...]:
    """The foreground's centre of mass, as a voxel index (the array's centre when it is empty)."""
    foreground = np.argwhere(label > 0)
    if not len(foreground):
        return tuple(s // 2 for s in label.shape)
    return tuple(int(round(c)) for c in foreground.mean(axis=0))


def orthogonal_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice of an (x, y, z) volume at `index` along `axis`."""
    return np.take(volume, index, axis=axis)


def display_range(image: np.ndarray) -> tuple[float, float]:
    """Grey window: the 0.5-99.5 percentiles, so one bright voxel does not wash the image out."""
    low, high = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))


def _draw(ax, image: np.ndarray, label: np.ndarray, n_classes: int, planar: bool,
          window: tuple[float, float] | None = None) -> None:
    """Image in grey, each class filled (alpha) and outlined in its colour; planar: a 2D image
    shown in its own orientation, else a slice of an (x, y, z) volume, x right and y up."""
    shown_image, shown_label = (image, label) if planar else (image.T, label.T)
    origin = "upper" if planar else "lower"
    low, high = window or display_range(image)
    ax.imshow(shown_image, cmap="gray", vmin=low, vmax=high, origin=origin, interpolation="nearest")
    for value in range(1, n_classes + 1):
        mask = shown_label == value
        if not mask.any():
            continue
        rgba = np.zeros((*mask.shape, 4))
        rgba[mask] = (*_rgb(class_colour(value)), FILL_ALPHA)
        ax.imshow(rgba, origin=origin, interpolation="nearest")
        ax.contour(mask.astype(float), levels=[0.5], colors=[class_colour(value)], linewidths=0.9, origin=origin)
    ax.set_xticks([])
    ax.set_yticks([])


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def _legend(fig, class_names: list[str]) -> None:
    """A legend naming each class with its colour, under the panels."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=class_colour(i), edgecolor=class_colour(i), alpha=0.8, label=name)
               for i, name in enumerate(class_names, start=1)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)


def save_figure(fig, dest: Path, tight: bool = True) -> None:
    """`fig` as a PNG; `tight=False` keeps the figure's own size (overlays: one size for all, as
    W&B's image panel needs)."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight" if tight else None)
    pyplot().close(fig)


def plot_samples(samples: list[tuple[str, np.ndarray, np.ndarray]], dest: Path) -> None:
    """One panel per (title, image, label); 3D inputs show their busiest slice."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(samples), figsize=(2.6 * len(samples), 3), squeeze=False)
    for ax, (title, image, label) in zip(axes[0], samples, strict=True):
        planar = image.ndim == 2
        if not planar:
            index = busiest_slice(label)
            image, label = image[..., index], label[..., index]
        _draw(ax, image, label, max(int(label.max()), 1), planar)
        ax.set_title(title, fontsize=8)
    save_figure(fig, dest)


def dice_caption(class_names: list[str], dice: list[float]) -> str:
    """`Dice anterior 0.85, posterior 0.80` (NaN: a class absent from truth and prediction)."""
    return "Dice " + ", ".join(f"{n} {d:.2f}" for n, d in zip(class_names, dice, strict=True))


def _panels(image: np.ndarray, truth: np.ndarray) -> list[tuple[str, object]]:
    """(view title, cut) per column: a 2D image whole; a volume's three orthogonal slices through
    the centre of its ground-truth structure."""
    if image.ndim == 2:
        return [("", lambda a: a)]
    centre = structure_centre(truth)
    return [(f"{name} slice {centre[axis]}", lambda a, axis=axis: orthogonal_slice(a, axis, centre[axis]))
            for name, axis in VIEWS]


def prediction_figure(case_id: str, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                      class_names: list[str], dice: list[float]):
    """Ground truth and prediction, classes named in a legend, the title the case and its Dice per
    class. A volume: truth (top row) over prediction, in three orthogonal slices (axial, coronal,
    sagittal) through the centre of the ground-truth structure. A 2D image: truth beside prediction."""
    plt = pyplot()
    planar, panels, window = image.ndim == 2, _panels(image, truth), display_range(image)
    shape = (1, 2) if planar else (2, len(panels))
    fig, axes = plt.subplots(*shape, figsize=(9, 5.2) if planar else (9, 6.2), squeeze=False)
    for row, (what, label) in enumerate((("ground truth", truth), ("prediction", prediction))):
        for column, (view, cut) in enumerate(panels):
            ax = axes[0][row] if planar else axes[row][column]
            _draw(ax, cut(image), cut(label), len(class_names), planar, window)
            ax.set_title(f"{what}, {view}" if view else what, fontsize=8)
    fig.suptitle(f"{case_id}: {dice_caption(class_names, dice)}", fontsize=9)
    _legend(fig, class_names)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return fig


def plot_prediction(case_id: str, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                    class_names: list[str], dice: list[float], dest: Path) -> None:
    """`prediction_figure` written to `dest` as a PNG."""
    save_figure(prediction_figure(case_id, image, truth, prediction, class_names, dice), dest, tight=False)
