"""The deployable model file: network spec + weights + what prediction needs, no pickled code.

Saved with torch.save and loaded with `weights_only=True`, so opening a model file from the
registry cannot run arbitrary code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from segflow.io import atomic_path
from segflow.models.factory import build_network

FORMAT = "segflow-model/1"


@dataclass
class ModelBundle:
    network: str
    network_args: dict
    patch_size: list[int]
    labels: dict[str, str]
    state_dict: dict
    normalisation: str = "zscore-per-case"
    info: dict = field(default_factory=dict)

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with its weights, in eval mode on `device`."""
        net = build_network(self.network, self.network_args)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()


def save_bundle(path: Path, bundle: ModelBundle) -> None:
    payload = {
        "format": FORMAT,
        "network": bundle.network,
        "network_args": bundle.network_args,
        "patch_size": list(bundle.patch_size),
        "labels": bundle.labels,
        "normalisation": bundle.normalisation,
        "info": bundle.info,
        "state_dict": {k: v.detach().cpu() for k, v in bundle.state_dict.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_bundle(path: Path) -> ModelBundle:
    """Read a model file written by `save_bundle`; refuses anything else with a clear error."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise ValueError(f"{path}: not a readable segflow model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a segflow model file (expected format {FORMAT})")
    payload.pop("format")
    return ModelBundle(**payload)
