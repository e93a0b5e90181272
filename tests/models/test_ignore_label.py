"""nnU-Net's ignore label in the loss and the metrics: IgnoringDiceCELoss leaves ignored voxels out
(their logits change nothing, get no gradient) and is MONAI's DiceCELoss when none is ignored;
build_loss picks it only with an ignore label; without_ignored blanks ignored voxels in both maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from segflow.metrics.segmentation import without_ignored
from segflow.models.losses import IgnoringDiceCELoss, build_loss

IGNORE = 3
N_CLASSES = 3
SHAPE = (8, 10, 6)
# Both losses sum the same float32 terms, the cross-entropy once as a mean and once as a sum divided
# by the count: over the 2 x 480 voxels here that reorders a sum, whose rounding is about
# log2(n) * 6e-8 ~ 1e-6 relative. 1e-5 leaves a margin of ten; a wrong term (a class or a voxel
# too many) moves the loss by far more.
RTOL = 1e-5


def batch(seed: int = 0, ignored: slice | None = slice(0, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, 3, *SHAPE) and a target (2, 1, *SHAPE) with every class, `ignored` z-slices set to IGNORE."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, N_CLASSES, *SHAPE, generator=generator)
    target = torch.randint(0, N_CLASSES, (2, 1, *SHAPE), generator=generator).float()
    if ignored is not None:
        target[..., ignored] = IGNORE
    return logits, target


def test_logits_at_ignored_voxels_do_not_change_the_loss():
    logits, target = batch()
    loss = IgnoringDiceCELoss(IGNORE)
    changed = logits.clone()
    changed[..., :2] = torch.randn_like(changed[..., :2]) * 50
    assert float(loss(changed, target)) == pytest.approx(float(loss(logits, target)), rel=1e-6)


def test_ignored_voxels_get_no_gradient_and_the_others_do():
    logits, target = batch()
    logits.requires_grad_(True)
    IgnoringDiceCELoss(IGNORE)(logits, target).backward()
    assert torch.count_nonzero(logits.grad[..., :2]) == 0
    assert torch.all(logits.grad[..., 2:].abs().sum(1) > 0)


def test_without_ignored_voxels_it_is_monai_dice_ce():
    logits, target = batch(ignored=None)
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    assert float(IgnoringDiceCELoss(IGNORE)(logits, target)) == pytest.approx(float(expected), rel=RTOL)


def test_with_an_ignored_slab_it_is_monai_dice_ce_over_the_other_voxels():
    logits, target = batch(ignored=slice(0, 2))
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits[..., 2:], target[..., 2:])
    assert float(IgnoringDiceCELoss(IGNORE)(logits, target)) == pytest.approx(float(expected), rel=RTOL)


def test_an_all_ignored_batch_gives_a_finite_loss_and_gradient():
    logits, target = batch(ignored=slice(None))
    logits.requires_grad_(True)
    loss = IgnoringDiceCELoss(IGNORE)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(torch.isfinite(logits.grad))


class ModelSection:
    """The two things build_loss asks of the `model:` section."""

    def __init__(self, name: str, **args):
        self.name, self.args = name, args

    def network_args(self) -> dict:
        return self.args


def test_build_loss_uses_the_ignoring_loss_only_with_an_ignore_label():
    model = ModelSection("UNet", spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2])
    assert isinstance(build_loss(model, IGNORE), IgnoringDiceCELoss)
    assert build_loss(model, IGNORE).ignore == IGNORE
    assert type(build_loss(model)) is DiceCELoss


def test_without_ignored_sets_both_maps_to_background_where_the_truth_is_ignored():
    truth = np.array([[0, 1, 3], [3, 2, 1]])
    prediction = np.array([[1, 1, 2], [2, 2, 0]])
    kept_prediction, kept_truth = without_ignored(prediction, truth, IGNORE)
    np.testing.assert_array_equal(kept_prediction, [[1, 1, 0], [0, 2, 0]])
    np.testing.assert_array_equal(kept_truth, [[0, 1, 0], [0, 2, 1]])


def test_without_ignored_leaves_both_maps_alone_without_an_ignore_label():
    truth = np.array([0, 1, 3])
    prediction = np.array([3, 1, 2])
    kept_prediction, kept_truth = without_ignored(prediction, truth, None)
    assert kept_prediction is prediction and kept_truth is truth
