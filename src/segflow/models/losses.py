"""The training loss for a model config: Dice + cross-entropy, summed over heads under deep supervision."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from segflow.models.factory import supports_deep_supervision

if TYPE_CHECKING:
    from segflow.data.regions import Regions


class StackedHeadsLoss(torch.nn.Module):
    """MONAI's DeepSupervisionLoss fed from a stacked output (B, heads, C, *spatial), main head first.

    DynUNet (and BasicUNetPlusPlus through the factory) return their heads stacked along dim 1 in
    training mode; DeepSupervisionLoss wants a list. A plain (B, C, *spatial) output, as in eval
    mode, gets the main loss alone. Head weights halve per level (MONAI's "exp" mode: 1, 0.5, ...).
    """

    def __init__(self, loss: torch.nn.Module):
        from monai.losses import DeepSupervisionLoss

        super().__init__()
        self.deep_supervision = DeepSupervisionLoss(loss, weight_mode="exp")

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.ndim == target.ndim + 1:
            return self.deep_supervision(list(torch.unbind(output, dim=1)), target)
        return self.deep_supervision(output, target)


class IgnoringDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy that leaves voxels labelled `ignore` out, as nnU-Net does with its
    ignore label: the Dice term over softmax and one-hot target both masked after encoding (so an
    ignored voxel counts for no class, background included), cross-entropy averaged over the kept
    voxels (a batch of only ignored voxels contributes no cross-entropy rather than NaN). With no
    ignored voxel it is MONAI's DiceCELoss(to_onehot_y=True, softmax=True)."""

    def __init__(self, ignore: int):
        from monai.losses import DiceLoss

        super().__init__()
        self.ignore = ignore
        self.dice = DiceLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kept = (target != self.ignore).to(logits.dtype)
        classes = torch.where(target != self.ignore, target, torch.zeros_like(target))[:, 0].long()
        one_hot = torch.nn.functional.one_hot(classes, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        dice = self.dice(torch.softmax(logits, dim=1) * kept, one_hot * kept)
        per_voxel = torch.nn.functional.cross_entropy(logits, target[:, 0].long(), ignore_index=self.ignore,
                                                      reduction="sum")
        return dice + per_voxel / kept.sum().clamp(min=1)


class RegionDiceBCELoss(torch.nn.Module):
    """nnU-Net's loss for region-based labels: soft Dice over the sigmoid outputs plus binary
    cross-entropy, one output per region (segflow.data.regions); voxels of `ignore` left out of
    both (masked after encoding, as for classes)."""

    def __init__(self, regions: Regions, ignore: int | None = None):
        from monai.losses import DiceLoss

        super().__init__()
        self.regions, self.ignore = regions, ignore
        self.dice = DiceLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inside = self.regions.target(target).to(logits.dtype)
        kept = torch.ones_like(target, dtype=logits.dtype) if self.ignore is None else (target != self.ignore).to(
            logits.dtype)
        dice = self.dice(torch.sigmoid(logits) * kept, inside * kept)
        per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(logits, inside, reduction="none") * kept
        return dice + per_voxel.sum() / (kept.sum() * logits.shape[1]).clamp(min=1)


def build_loss(model_cfg, ignore_label: int | None = None, regions: Regions | None = None) -> torch.nn.Module:
    """DiceCELoss on one-hot labels and softmax logits (voxels of `ignore_label` left out); wrapped
    per head where the network has them.

    Args:
        model_cfg: the `model:` section (name plus MONAI constructor arguments).
        ignore_label: the dataset's ignore label (nnU-Net v2), or None.
        regions: the dataset's region-based labels (segflow.data.regions.Regions): Dice + BCE on
            one sigmoid output per region instead.
    """
    from monai.losses import DiceCELoss

    if regions is not None:
        loss = RegionDiceBCELoss(regions, ignore_label)
    elif ignore_label is None:
        loss = DiceCELoss(to_onehot_y=True, softmax=True)
    else:
        loss = IgnoringDiceCELoss(ignore_label)
    if supports_deep_supervision(model_cfg.name, model_cfg.network_args()):
        return StackedHeadsLoss(loss)
    return loss
