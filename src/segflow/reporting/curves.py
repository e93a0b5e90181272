"""Training curves as one PNG: loss, validation Dice per class and learning rate against epoch,
each panel titled by its metric, one line per fold (and per class for Dice)."""

from __future__ import annotations

from pathlib import Path

from segflow.reporting.figures import class_colour, pyplot, save_figure
from segflow.training.history import FoldHistory

FOLD_STYLES = ["-", "--", ":", "-."]


def _fold_style(history: FoldHistory) -> str:
    """A line style per fold; fold all (trained on every case) draws solid."""
    return FOLD_STYLES[history.fold % len(FOLD_STYLES)] if isinstance(history.fold, int) else FOLD_STYLES[0]


def _loss(ax, histories: list[FoldHistory]) -> None:
    for h in histories:
        ax.plot(h.train["epoch"], h.train["train_loss"], _fold_style(h), color="#333333", label=f"fold {h.fold}")
    ax.set(title="Training loss", xlabel="epoch", ylabel="loss")


def _dice(ax, histories: list[FoldHistory]) -> None:
    for h in histories:
        for label, name in enumerate(h.class_names, start=1):
            ax.plot(h.val["epoch"], h.class_dice(name), _fold_style(h), marker=".", color=class_colour(label),
                    label=f"{name}, fold {h.fold}" if len(histories) > 1 else name)
    ax.set(title="Validation Dice per class", xlabel="epoch", ylabel="Dice", ylim=(0, 1))


def _lr(ax, histories: list[FoldHistory]) -> None:
    for h in histories:
        ax.plot(h.train["epoch"], h.train["lr"], _fold_style(h), color="#1f77b4", label=f"fold {h.fold}")
    ax.set(title="Learning rate", xlabel="epoch", ylabel="lr")


def plot_training_curves(histories: list[FoldHistory], dest: Path) -> None:
    """Three panels side by side (loss, Dice per class, lr), each with its legend."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, panel in zip(axes, (_loss, _dice, _lr), strict=True):
        panel(ax, histories)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, dest)
