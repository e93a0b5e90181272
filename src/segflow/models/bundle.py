"""The deployable model file: network spec + weights + what prediction needs, no pickled code.

One file holds one or more members of the same network (one per cross-validation fold);
prediction averages their probabilities. It also carries the preprocessing of the plan and the
postprocessing chosen on validation, so `segflow predict` prepares and cleans a new volume exactly
as the pipeline did. Saved with torch.save and loaded with `weights_only=True`, so opening a model
file from the registry cannot run arbitrary code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from segflow.io import atomic_path
from segflow.models.factory import build_network

FORMAT = "segflow-model/2"
OLDER_FORMATS = ("segflow-model/1",)  # one member, per-case z-score, no postprocessing


@dataclass
class ModelBundle:
    network: str
    network_args: dict
    patch_size: list[int]
    labels: dict[str, str]
    state_dicts: list[dict]  # one per member (fold)
    folds: list[int] = field(default_factory=lambda: [0])
    preprocessing: dict | None = None  # planning.Preprocessing as a dict; None: per-case z-score
    postprocessing: dict | None = None  # postprocessing.choose_postprocessing's decision
    info: dict = field(default_factory=dict)

    def build(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        """One network per member with its weights, in eval mode on `device`."""
        nets = []
        for state in self.state_dicts:
            net = build_network(self.network, self.network_args)
            net.load_state_dict(state)
            nets.append(net.to(device).eval())
        return nets


def ensemble(bundles: list[ModelBundle], **updates) -> ModelBundle:
    """Members of several bundles (same network and labels) as one bundle."""
    first = bundles[0]
    for other in bundles[1:]:
        if (other.network, other.network_args, other.labels) != (first.network, first.network_args, first.labels):
            raise ValueError("only models of the same network, arguments and labels can be ensembled")
    return replace(first, state_dicts=[s for b in bundles for s in b.state_dicts],
                   folds=[f for b in bundles for f in b.folds], **updates)


def save_bundle(path: Path, bundle: ModelBundle) -> None:
    payload = {
        "format": FORMAT,
        "network": bundle.network,
        "network_args": bundle.network_args,
        "patch_size": list(bundle.patch_size),
        "labels": bundle.labels,
        "folds": list(bundle.folds),
        "preprocessing": bundle.preprocessing,
        "postprocessing": bundle.postprocessing,
        "info": bundle.info,
        "state_dicts": [{k: v.detach().cpu() for k, v in state.items()} for state in bundle.state_dicts],
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _upgrade(payload: dict) -> dict:
    """A segflow-model/1 payload in today's shape."""
    payload["state_dicts"] = [payload.pop("state_dict")]
    payload.pop("normalisation", None)
    payload["folds"] = [payload.get("info", {}).get("fold", 0)]
    return payload


def load_bundle(path: Path) -> ModelBundle:
    """Read a model file written by `save_bundle`; refuses anything else with a clear error."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise ValueError(f"{path}: not a readable segflow model file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, *OLDER_FORMATS):
        raise ValueError(f"{path}: not a segflow model file (expected format {FORMAT})")
    if payload.pop("format") in OLDER_FORMATS:
        payload = _upgrade(payload)
    return ModelBundle(**payload)
