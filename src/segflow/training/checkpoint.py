"""The training checkpoint (artifacts/checkpoints/fold_K/last.pt): written every epoch, resumed
only by a run with the same fingerprint (params, code, data), so an interrupted fold continues
where it stopped and never from another configuration's weights. It also keeps which W&B run
logged those epochs, so the resumed fold continues that run rather than starting a second one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segflow.errors import StageFailed
from segflow.files import atomic_path
from segflow.models.torch_files import load_torch_file
from segflow.tracking.runs import RunIdentity


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    tracked_run: RunIdentity | None = None  # the W&B run the epochs so far were logged to


def config_fingerprint(*sections: dict) -> str:
    """Hash of everything that shapes the weights; a checkpoint from another config is not resumed."""
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, fingerprint: str, state: TrainState, net, optimizer, scaler) -> None:
    payload = {"fingerprint": fingerprint, "epoch": state.epoch, "history": state.history,
               "tracked_run": state.tracked_run.to_dict() if state.tracked_run else None,
               "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resume_checkpoint(path: Path, fingerprint: str, net, optimizer, scaler) -> TrainState | None:
    """Restore the last checkpoint if it belongs to this configuration; None otherwise. A checkpoint
    that does not load stops training (it may hold hours of work): the error names it and says
    that deleting it restarts the fold from scratch."""
    if not path.is_file():
        return None
    try:
        payload = load_torch_file(path, "training checkpoint")
    except ValueError as exc:
        raise StageFailed(f"{exc}. Delete {path} to train this fold from scratch") from None
    if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
        return None
    net.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    return TrainState(epoch=int(payload["epoch"]), history=list(payload["history"]),
                      tracked_run=RunIdentity.from_dict(payload.get("tracked_run")))
