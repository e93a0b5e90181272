"""train: fit the network on the training folds; checkpoint every epoch, resume from the last."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from segflow.config import Params
from segflow.data.splits import fold_cases
from segflow.errors import StageFailed
from segflow.inference import pick_device
from segflow.io import file_hash, read_json, write_csv, write_json
from segflow.models.bundle import ModelBundle, save_bundle
from segflow.models.factory import build_network
from segflow.models.losses import build_loss
from segflow import training as T
from segflow.paths import Paths


def split_cases(paths: Paths, params: Params) -> tuple[list[str], list[str]]:
    """(train, validation) ids among the cached (validated, kept) cases."""
    cached = sorted(read_json(paths.preprocessed / "index.json")["cases"])
    folds = read_json(paths.splits)["folds"]
    train_ids, val_ids = fold_cases(folds, params.split.fold, cached)
    if not train_ids or not val_ids:
        raise StageFailed(f"fold {params.split.fold} leaves {len(train_ids)} training and "
                          f"{len(val_ids)} validation cases; both must be non-empty")
    return train_ids, val_ids


def class_names(paths: Paths, params: Params) -> dict[str, str]:
    labels = read_json(paths.splits)["labels"]
    if len(labels) != params.model.out_channels:
        raise StageFailed(f"dataset.json declares {len(labels)} labels but model.out_channels is "
                          f"{params.model.out_channels}; they must match")
    return labels


TRAINING_CODE = ("training.py", "inference.py", "stages/train.py", "models", "transforms")


def code_digest() -> dict[str, str]:
    """Hashes of the code that shapes the weights, so a checkpoint is never resumed across a change."""
    import segflow

    package = Path(segflow.__file__).parent
    files = sorted(f for name in TRAINING_CODE for f in ([package / name] if (package / name).is_file()
                                                         else (package / name).glob("*.py")))
    return {f.relative_to(package).as_posix(): file_hash(f) for f in files}


def fingerprint(params: Params, paths: Paths, train_ids: list[str]) -> str:
    """Everything a resumed run must share with the interrupted one: params, code and cached data."""
    data = {case: file_hash(paths.preprocessed / f"{case}.npz") for case in train_ids}
    return T.config_fingerprint(params.seed, params.model.model_dump(), params.train.model_dump(),
                                params.augment.model_dump(), data, code_digest())


def epoch_record(epoch: int, loss: float, lr: float, seconds: float, val: list[float] | None,
                 labels: dict[str, str]) -> dict:
    record = {"epoch": epoch, "train_loss": round(loss, 5), "lr": lr, "seconds": round(seconds, 1)}
    if val is not None:
        record["val_dice_mean"] = round(sum(val) / len(val), 5)
        names = [labels[k] for k in sorted(labels, key=int)][1:]
        record.update({f"val_dice_{n.lower()}": round(v, 5) for n, v in zip(names, val, strict=True)})
    return record


def write_history(paths: Paths, history: list[dict]) -> None:
    """Two plot files: loss every epoch, validation Dice where it was measured."""
    frame = pd.DataFrame(history)
    write_csv(paths.history, frame[["epoch", "train_loss", "lr", "seconds"]])
    val = frame.dropna(subset=["val_dice_mean"]) if "val_dice_mean" in frame else frame.iloc[:0]
    write_csv(paths.train_dir / "val_history.csv", val[["epoch"] + [c for c in val if c.startswith("val_")]])


class Trainer:
    """Holds what an epoch needs; `fit` runs the remaining epochs."""

    def __init__(self, params: Params, paths: Paths, tracker=None):
        from monai.data import set_track_meta

        from segflow.transforms import build_training_transforms

        set_track_meta(False)
        self.params, self.paths, self.tracker = params, paths, tracker
        cfg = params.train
        torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
        self.device = pick_device()
        self.amp = cfg.amp and self.device.type == "cuda"
        self.labels = class_names(paths, params)
        train_ids, val_ids = split_cases(paths, params)
        self.fingerprint = fingerprint(params, paths, train_ids)
        torch.manual_seed(params.seed)
        self.net = build_network(params.model.name, params.model.network_args()).to(self.device)
        self.loss_fn = build_loss(params.model)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        cached, random = build_training_transforms(params.augment, params.model.spatial_dims)
        self.loader = T.build_loader(T.load_volumes(paths.preprocessed, train_ids), cached, random,
                                     cfg.batch_size)
        self.val_items = T.load_volumes(paths.preprocessed, val_ids)
        self.checkpoint = paths.checkpoints / "last.pt"
        self.state = (T.resume_checkpoint(self.checkpoint, self.fingerprint, self.net, self.optimizer, self.scaler)
                      or T.TrainState())

    def lr_for(self, epoch: int) -> float:
        cfg = self.params.train
        return T.poly_lr(cfg.lr, epoch, cfg.epochs) if cfg.lr_schedule == "poly" else cfg.lr

    def run_epoch(self, epoch: int, progress) -> dict:
        lr = self.lr_for(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        T.seed_epoch(self.loader, self.params.seed, epoch)
        clock = T.Stopwatch()
        loss = T.train_epoch(self.net, self.loader, self.loss_fn, self.optimizer, self.scaler,
                             self.device, self.amp, progress)
        last = epoch + 1 == self.params.train.epochs
        val = None
        if last or (epoch + 1) % self.params.train.val_every == 0:
            val = T.validate(self.net, self.val_items, self.params.augment.patch_size,
                             self.params.model.out_channels, self.amp)
        return epoch_record(epoch + 1, loss, lr, clock.seconds(), val, self.labels)

    def fit(self) -> T.TrainState:
        from tqdm import tqdm

        total = self.params.train.epochs
        if self.state.epoch:
            print(f"train: resuming after epoch {self.state.epoch}/{total} from {self.checkpoint}")
        for epoch in range(self.state.epoch, total):
            with tqdm(total=len(self.loader), desc=f"epoch {epoch + 1}/{total}", unit="batch",
                      leave=False, mininterval=2.0) as progress:
                record = self.run_epoch(epoch, progress)
            self.state.epoch, self.state.history = epoch + 1, self.state.history + [record]
            T.save_checkpoint(self.checkpoint, self.fingerprint, self.state, self.net, self.optimizer, self.scaler)
            write_history(self.paths, self.state.history)
            print("train: " + "  ".join(f"{k}={v}" for k, v in record.items()), flush=True)
            if self.tracker:
                self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        return self.state

    def bundle(self) -> ModelBundle:
        final = self.state.history[-1]
        return ModelBundle(network=self.params.model.name, network_args=self.params.model.network_args(),
                           patch_size=list(self.params.augment.patch_size), labels=self.labels,
                           state_dict=self.net.state_dict(),
                           info={"epochs": self.state.epoch, "fold": self.params.split.fold,
                                 "label_map": {str(k): v for k, v in (self.params.data.label_map or {}).items()},
                                 "val_dice_mean": final.get("val_dice_mean"), "fingerprint": self.fingerprint})


def main(params: Params, paths: Paths, tracker=None) -> dict:
    clock = T.Stopwatch()
    trainer = Trainer(params, paths, tracker)
    state = trainer.fit()
    write_history(paths, state.history)  # also when resuming a run killed after its last epoch
    save_bundle(paths.model, trainer.bundle())
    final = state.history[-1]
    summary = {"epochs": state.epoch, "val_dice_mean": final.get("val_dice_mean"),
               "train_loss": final["train_loss"], "seconds": round(clock.seconds(), 1),
               "seconds_per_epoch": round(sum(h["seconds"] for h in state.history) / len(state.history), 2),
               "peak_rss_mb": round(T.peak_rss_mb(), 1), "device": trainer.device.type}
    write_json(paths.train_dir / "summary.json", summary)
    if tracker:
        tracker.summary(summary)
        tracker.log_artifact(paths.model, name="model", type="model", metadata=summary)
    return summary
