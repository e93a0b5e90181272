"""nnU-Net's region-based labels: the network outputs one sigmoid channel per region (a set of
label values, e.g. BraTS' whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing {3}) instead of
one softmax channel per label value.

dataset.json declares them as `"labels": {"background": 0, "whole_tumor": [1, 2, 3], ...}` with
`"regions_class_order": [1, 2, 3]`: the label value each region paints into the label map, later
regions over earlier ones (nnU-Net's conversion back). Training targets, evaluation masks and the
conversion to a label map all come from here, so every stage reads a region the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

THRESHOLD = 0.5  # a voxel is in a region where its sigmoid probability is above this


@dataclass(frozen=True)
class Regions:
    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]  # the label values each region covers
    class_order: tuple[int, ...]  # the label value region i writes into the label map

    @classmethod
    def of(cls, described: dict | None) -> Regions | None:
        """From `to_dict`'s form (splits.json, a model file's info); None for plain labels."""
        if not described:
            return None
        return cls(tuple(described["names"]), tuple(tuple(v) for v in described["values"]),
                   tuple(described["class_order"]))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "values": [list(v) for v in self.values],
                "class_order": list(self.class_order)}

    @property
    def label_values(self) -> list[int]:
        """Every label value a mask may hold (background 0 included)."""
        return sorted({0, *(v for region in self.values for v in region)})

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, 1, *spatial) label map -> (B, R, *spatial) float: 1 inside each region."""
        import torch

        return torch.cat([torch.isin(labels, torch.tensor(values, device=labels.device)) for values in self.values],
                         dim=1).to(torch.float32)

    def masks(self, label_map: np.ndarray) -> np.ndarray:
        """(*spatial) label map -> (R, *spatial) bool: each region's voxels."""
        return np.stack([np.isin(label_map, values) for values in self.values])

    def to_label_map(self, probabilities: "torch.Tensor | np.ndarray") -> np.ndarray:
        """(R, *spatial) sigmoid probabilities -> (*spatial) uint8 label map, as nnU-Net converts."""
        probabilities = np.asarray(probabilities)
        label_map = np.zeros(probabilities.shape[1:], np.uint8)
        for region, value in enumerate(self.class_order):
            label_map[probabilities[region] > THRESHOLD] = value
        return label_map
