"""The deployable model file: network spec + weights + what prediction needs, no pickled code.

One file holds one or more members of the same network (one per cross-validation fold);
prediction averages their probabilities. A configuration ensemble (a 3d and a 2d configuration,
planning.configurations) carries the other configurations as `companions`, each its own network,
patch and fold members; prediction averages the configurations' probabilities. It also carries
the preprocessing of the plan and the postprocessing chosen on validation, so `segflow predict`
prepares and cleans a new volume exactly as the pipeline did. Saved with torch.save and loaded
with `weights_only=True`, so opening a model file from the registry cannot run arbitrary code; a
file that does not load is described by what it is (`segflow.models.torch_files`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

import torch

from segflow.files import atomic_path
from segflow.models.factory import build_network
from segflow.models.torch_files import load_torch_file

FORMAT = "segflow-model/2"
OLDER_FORMATS = ("segflow-model/1",)  # one member, per-case z-score, no postprocessing


@dataclass
class ModelFile:
    network: str
    network_args: dict
    patch_size: list[int]
    labels: dict[str, str]
    state_dicts: list[dict]  # one per member (fold)
    folds: list[int] = field(default_factory=lambda: [0])
    preprocessing: dict | None = None  # planning.Preprocessing as a dict; None: per-case z-score
    postprocessing: dict | None = None  # postprocessing.choose_postprocessing's decision
    info: dict = field(default_factory=dict)
    # Other configurations ensembled with this one: {network, network_args, patch_size, state_dicts, folds}.
    companions: list[dict] = field(default_factory=list)

    def configurations(self) -> list[ModelFile]:
        """This file's configuration and each companion as a model file of its own (no companions)."""
        return [replace(self, companions=[])] + [replace(self, companions=[], **c) for c in self.companions]

    def build(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        """One network per member with its weights, in eval mode on `device`."""
        nets = []
        for member, state in enumerate(self.state_dicts):
            net = build_network(self.network, self.network_args)
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:  # torch lists every key: the first line says enough
                first = str(exc).strip().splitlines()[0]
                raise ValueError(f"the weights of member {member} do not fit the {self.network} the model file "
                                 f"describes ({first})") from None
            nets.append(net.to(device).eval())
        return nets


def ensemble(bundles: list[ModelFile], **updates) -> ModelFile:
    """Members of several bundles (same network and labels) as one bundle."""
    first = bundles[0]
    for other in bundles[1:]:
        if (other.network, other.network_args, other.labels) != (first.network, first.network_args, first.labels):
            raise ValueError("only models of the same network, arguments and labels can be ensembled")
    return replace(first, state_dicts=[s for b in bundles for s in b.state_dicts],
                   folds=[f for b in bundles for f in b.folds], **updates)


def with_companions(bundle: ModelFile, others: list[ModelFile]) -> ModelFile:
    """`bundle` ensembled with other configurations of the same labels (their probabilities averaged)."""
    if any(other.labels != bundle.labels for other in others):
        raise ValueError("only models of the same labels can be ensembled")
    return replace(bundle, companions=[{"network": o.network, "network_args": o.network_args,
                                        "patch_size": list(o.patch_size), "state_dicts": o.state_dicts,
                                        "folds": list(o.folds)} for o in others])


def save_model_file(path: Path, bundle: ModelFile) -> None:
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
    if bundle.companions:  # a file without them stays byte-compatible with readers before them
        payload["companions"] = [{**c, "state_dicts": [{k: v.detach().cpu() for k, v in s.items()}
                                                       for s in c["state_dicts"]]} for c in bundle.companions]
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _upgrade(payload: dict) -> dict:
    """A segflow-model/1 payload in today's shape."""
    payload["state_dicts"] = [payload.pop("state_dict")]
    payload.pop("normalisation", None)
    payload["folds"] = [payload.get("info", {}).get("fold", 0)]
    return payload


def _check_fields(path: Path, payload: dict) -> None:
    """The payload holds exactly the bundle's fields (a foreign dict says which are off)."""
    known = {f.name for f in fields(ModelFile)}
    required = {f.name for f in fields(ModelFile) if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(payload)), sorted(set(payload) - known)
    if missing or unknown:
        raise ValueError(f"{path}: a damaged segflow model file (missing {missing or 'nothing'}, "
                         f"unexpected {unknown or 'nothing'})")


def load_model_file(path: Path) -> ModelFile:
    """Read a model file written by `save_model_file`; refuses anything else with a clear error."""
    path = Path(path)
    payload = load_torch_file(path, "segflow model file")
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, *OLDER_FORMATS):
        raise ValueError(f"{path}: not a segflow model file (expected format {FORMAT})")
    if payload.pop("format") in OLDER_FORMATS:
        payload = _upgrade(payload)
    _check_fields(path, payload)
    return ModelFile(**payload)
