"""train: fit the network for one fold (dvc.yaml runs it per fold in split.folds); checkpoint every
epoch, resume from the last. `params` arrive resolved (plan values in) and narrowed to the fold.
With train.nproc_per_node > 1 the stage reruns itself under torchrun (DDP, `segflow.distributed`)."""

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
from segflow import distributed as D
from segflow import training as T
from segflow.paths import Paths


def the_fold(params: Params) -> int:
    """The one fold a per-fold stage runs (`stages.stage_params` narrowed split.folds to it)."""
    return params.split.folds[0]


def split_cases(paths: Paths, params: Params) -> tuple[list[str], list[str]]:
    """(train, validation) ids among the cached (validated, kept) cases."""
    cached = sorted(read_json(paths.preprocessed / "index.json")["cases"])
    folds = read_json(paths.splits)["folds"]
    train_ids, val_ids = fold_cases(folds, the_fold(params), cached)
    if not train_ids or not val_ids:
        raise StageFailed(f"fold {the_fold(params)} leaves {len(train_ids)} training and "
                          f"{len(val_ids)} validation cases; both must be non-empty")
    return train_ids, val_ids


def class_names(paths: Paths, params: Params) -> dict[str, str]:
    labels = read_json(paths.splits)["labels"]
    if len(labels) != params.model.out_channels:
        raise StageFailed(f"dataset.json declares {len(labels)} labels but model.out_channels is "
                          f"{params.model.out_channels}; they must match")
    return labels


def training_device(requested: str) -> torch.device:
    """train.device as asked: `cuda` without a visible GPU is an error (a GPU job on a node whose
    GPU is missing must fail, not train for days on CPU); `auto` takes a GPU when there is one."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise StageFailed("train.device is cuda but no CUDA GPU is visible to this process "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                          "check the node's GPU and driver, or set train.device to auto or cpu")
    return pick_device("cpu" if requested == "cpu" else "auto")


TRAINING_CODE = ("training.py", "distributed.py", "inference.py", "stages/train.py", "models", "transforms")


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


def write_history(paths: Paths, fold: int, history: list[dict]) -> None:
    """Two plot files: loss every epoch, validation Dice where it was measured."""
    frame = pd.DataFrame(history)
    write_csv(paths.history_for(fold), frame[["epoch", "train_loss", "lr", "seconds"]])
    val = frame.dropna(subset=["val_dice_mean"]) if "val_dice_mean" in frame else frame.iloc[:0]
    write_csv(paths.val_history_for(fold), val[["epoch"] + [c for c in val if c.startswith("val_")]])


class Trainer:
    """Holds what an epoch needs; `fit` runs the remaining epochs.

    Under torchrun every process builds the same Trainer (same seed, same checkpoint) and trains
    on its share of each global batch through DistributedDataParallel; rank 0 alone validates,
    writes checkpoints and history, and tracks. `net` is the plain module (saved and validated),
    `model` what the optimiser steps through (`net` in DDP and/or compiled).
    """

    def __init__(self, params: Params, paths: Paths, tracker=None):
        from monai.data import set_track_meta

        set_track_meta(False)
        self.params, self.paths, self.tracker = params, paths, tracker
        cfg = params.train
        torch.set_num_threads(cfg.num_threads or D.cpu_threads_per_process())
        self.device = D.process_device(training_device(cfg.device))
        self.amp = cfg.amp and self.device.type == "cuda"
        self.labels = class_names(paths, params)
        train_ids, val_ids = split_cases(paths, params)
        self.fingerprint = fingerprint(params, paths, train_ids)
        torch.manual_seed(params.seed)
        layout = T.memory_format(cfg.channels_last, params.model.spatial_dims)
        self.net = build_network(params.model.name, params.model.network_args()).to(self.device, memory_format=layout)
        self.loss_fn = build_loss(params.model)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.loader = self.build_loader(train_ids)
        self.val_items = T.load_volumes(paths.preprocessed, val_ids)
        self.fold = the_fold(params)
        self.checkpoint = paths.checkpoints_for(self.fold) / "last.pt"
        # Every rank resumes from the same checkpoint, so all start from the same weights and optimiser.
        self.state = (T.resume_checkpoint(self.checkpoint, self.fingerprint, self.net, self.optimizer, self.scaler)
                      or T.TrainState())
        self.model = self.training_model()

    def build_loader(self, train_ids: list[str]):
        """This process's loader: its share of the global batch, the same sample order for any world."""
        from segflow.transforms import build_training_transforms

        batch = D.per_rank_batch(self.params.train.batch_size, D.world_size())  # before loading any data
        cached, random = build_training_transforms(self.params.augment, self.params.model.spatial_dims)
        return T.build_loader(T.load_volumes(self.paths.preprocessed, train_ids), cached, random, batch,
                              seed=self.params.seed, rank=D.rank(), world=D.world_size(),
                              num_workers=self.params.train.num_workers, pin_memory=self.device.type == "cuda")

    def training_model(self) -> torch.nn.Module:
        """`net` in DDP under torchrun, compiled when train.compile; checkpoints and the bundle
        read `net` itself, so their keys carry neither `module.` nor `_orig_mod.`."""
        model = D.wrap_data_parallel(self.net, self.device)
        return torch.compile(model) if self.params.train.compile else model

    def lr_for(self, epoch: int) -> float:
        cfg = self.params.train
        return T.poly_lr(cfg.lr, epoch, cfg.epochs) if cfg.lr_schedule == "poly" else cfg.lr

    def run_epoch(self, epoch: int, progress) -> dict:
        lr = self.lr_for(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        T.seed_epoch(self.loader, self.params.seed, epoch)
        clock = T.Stopwatch()
        loss = T.train_epoch(self.model, self.loader, self.loss_fn, self.optimizer, self.scaler,
                             self.device, self.amp, progress)
        # Equal shares per step, so the mean of the ranks' means is the single-process mean loss.
        loss = D.mean_over_processes(loss)
        val = self.validate(epoch) if D.is_main_process() else None
        return epoch_record(epoch + 1, loss, lr, clock.seconds(), val, self.labels)

    def validate(self, epoch: int) -> list[float] | None:
        """Validation Dice every train.val_every epochs and after the last, on the plain network."""
        cfg = self.params.train
        if epoch + 1 != cfg.epochs and (epoch + 1) % cfg.val_every:
            return None
        return T.validate(self.net, self.val_items, self.params.augment.patch_size,
                          self.params.model.out_channels, self.amp)

    def fit(self) -> T.TrainState:
        total = self.params.train.epochs
        if self.state.epoch and D.is_main_process():
            print(f"train: resuming after epoch {self.state.epoch}/{total} from {self.checkpoint}")
        for epoch in range(self.state.epoch, total):
            with self.progress_bar(epoch) as progress:
                record = self.run_epoch(epoch, progress)
            self.state.epoch, self.state.history = epoch + 1, self.state.history + [record]
            if D.is_main_process():
                self.save_epoch(record)
            D.barrier()  # the other ranks wait while rank 0 validates and writes
        return self.state

    def progress_bar(self, epoch: int):
        from tqdm import tqdm

        total = self.params.train.epochs
        return tqdm(total=len(self.loader), desc=f"epoch {epoch + 1}/{total}", unit="batch", leave=False,
                    mininterval=2.0, disable=not D.is_main_process())

    def save_epoch(self, record: dict) -> None:
        """Rank 0's end of an epoch: checkpoint, history files, console line, W&B row."""
        T.save_checkpoint(self.checkpoint, self.fingerprint, self.state, self.net, self.optimizer, self.scaler)
        write_history(self.paths, self.fold, self.state.history)
        print("train: " + "  ".join(f"{k}={v}" for k, v in record.items()), flush=True)
        if self.tracker:
            self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def bundle(self, preprocessing: dict) -> ModelBundle:
        final = self.state.history[-1]
        return ModelBundle(network=self.params.model.name, network_args=self.params.model.network_args(),
                           patch_size=list(self.params.augment.patch_size), labels=self.labels,
                           state_dicts=[self.net.state_dict()], folds=[self.fold], preprocessing=preprocessing,
                           info={"epochs": self.state.epoch,
                                 "label_map": {str(k): v for k, v in (self.params.data.label_map or {}).items()},
                                 "val_dice_mean": final.get("val_dice_mean"), "fingerprint": self.fingerprint})


def main(params: Params, paths: Paths, tracker=None) -> dict:
    """Train the fold here, or under torchrun when train.nproc_per_node > 1 (see `launch_workers`)."""
    if params.train.nproc_per_node > 1 and not D.is_distributed():
        return launch_workers(params, paths)
    with D.process_group():
        summary = train_fold(params, paths, tracker)
        D.barrier()  # the other ranks wait for rank 0's model file and summary
    return summary


def launch_workers(params: Params, paths: Paths) -> dict:
    """Rerun this stage for the fold as train.nproc_per_node torchrun workers; rank 0's summary."""
    fold = the_fold(params)
    D.per_rank_batch(params.train.batch_size, params.train.nproc_per_node)  # refuse before starting any
    D.launch_torchrun(params.train.nproc_per_node, "segflow.cli", ["stage", "train", "--fold", str(fold)],
                      cwd=paths.root)
    return read_json(paths.train_summary_for(fold))


def train_fold(params: Params, paths: Paths, tracker=None) -> dict:
    """Fit, then (rank 0 only; the others return {}) write the model bundle and the summary."""
    from segflow.planning.planner import Plan

    clock = T.Stopwatch()
    if tracker:  # lineage: this model was trained on ingest's dataset artifact
        from segflow.tracking import dataset_artifact

        tracker.use_artifact_files([paths.manifest, paths.splits], name=dataset_artifact(read_json(paths.splits)["dataset"]),
                                   type="dataset")
    trainer = Trainer(params, paths, tracker)
    state = trainer.fit()
    if not D.is_main_process():
        return {}
    fold = trainer.fold
    write_history(paths, fold, state.history)  # also when resuming a run killed after its last epoch
    save_bundle(paths.model_for(fold), trainer.bundle(Plan.load(paths.plan).preprocessing.model_dump()))
    final = state.history[-1]
    epoch_seconds = sum(h["seconds"] for h in state.history)
    # `seconds`: every epoch's training time, those before a resume included (what the model cost);
    # `seconds_this_run`: this process's wall clock (after a resume, only the part it ran).
    summary = {"epochs": state.epoch, "val_dice_mean": final.get("val_dice_mean"),
               "train_loss": final["train_loss"], "seconds": round(epoch_seconds, 1),
               "seconds_this_run": round(clock.seconds(), 1),
               "seconds_per_epoch": round(epoch_seconds / len(state.history), 2),
               "peak_rss_mb": round(T.peak_rss_mb(), 1), "device": trainer.device.type, "fold": fold,
               "processes": D.world_size()}
    write_json(paths.train_summary_for(fold), summary)
    if tracker:  # the summary's numbers reach W&B as train/<key> through run_stage
        from segflow.tracking import fold_model_artifact

        tracker.log_artifact(paths.model_for(fold), name=fold_model_artifact(fold), type="model", metadata=summary)
    return summary
