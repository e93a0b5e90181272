"""Region-based labels: the training target, the masks metrics read, the conversion back to a
label map, and the region loss (ignored voxels left out)."""

from __future__ import annotations

import numpy as np
import torch

from segflow.data.regions import Regions
from segflow.metrics.segmentation import dice_per_region
from segflow.models.losses import RegionDiceBCELoss

BRATS = Regions(("whole", "core", "enhancing"), ((1, 2, 3), (2, 3), (3,)), (1, 2, 3))


def test_regions_round_trip_through_their_json_form():
    assert Regions.of(BRATS.to_dict()) == BRATS and Regions.of(None) is None
    assert BRATS.label_values == [0, 1, 2, 3]


def test_the_target_has_one_channel_per_region():
    labels = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 4)
    assert BRATS.target(labels)[0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]


def test_nested_regions_paint_back_the_label_map_they_came_from():
    labels = np.array([[0, 1, 2, 3, 2]])
    probabilities = BRATS.masks(labels).astype(np.float32)  # a perfect prediction
    assert np.array_equal(BRATS.to_label_map(probabilities), labels)
    assert dice_per_region(labels, labels, BRATS) == [1.0, 1.0, 1.0]


def test_region_loss_ignores_the_ignored_voxels():
    loss = RegionDiceBCELoss(BRATS, ignore=4)
    target = torch.tensor([0, 1, 2, 3, 4, 4]).reshape(1, 1, 6)
    logits = torch.randn(1, 3, 6, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and not logits.grad[..., 4:].any()
    changed = logits.detach().clone()
    changed[..., 4:] = 50.0
    assert torch.allclose(loss(changed, target), value.detach())
