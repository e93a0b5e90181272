"""The trainer of one fold: builds the network, loss, optimiser and loader from params, resumes
from the fold's checkpoint, runs the remaining epochs, then writes the fold's outputs (history,
model file, summary). The train stage resolves params and paths and calls it (nnU-Net's
run_training.py and its trainer class), so benchmarks and tests build the same Trainer the stage runs.
"""

from __future__ import annotations

import torch

from segflow.config import ALL_FOLDS, Params
from segflow.data.cache import PreprocessedCache
from segflow.data.regions import Regions
from segflow.data.splits import Splits
from segflow.errors import StageFailed
from segflow.files import file_hash
from segflow.models.factory import build_network, network_dims
from segflow.models.losses import build_loss
from segflow.models.model_file import ModelFile, save_model_file
from segflow.paths import Paths
from segflow.training import distributed as D
from segflow.training import loader, loop
from segflow.training.checkpoint import TrainState, config_fingerprint, resume_checkpoint, save_checkpoint
from segflow.training.distributed import training_device
from segflow.training.history import epoch_record, write_history
from segflow.training.progress import TrainProgress, fold_progress
from segflow.training.summary import TrainSummary
from segflow.training.usage import Stopwatch, peak_rss_mb


def the_fold(params: Params) -> int:
    """The one fold a per-fold stage runs (`stages.stage_params` narrowed split.folds to it)."""
    return params.split.folds[0]


def split_cases(paths: Paths, params: Params) -> tuple[list[str], list[str]]:
    """(train, validation) ids among the cached (validated, kept) cases."""
    train_ids, val_ids = PreprocessedCache(paths.preprocessed).fold_cases(Splits.load(paths.splits), the_fold(params))
    if not train_ids or (not val_ids and the_fold(params) != ALL_FOLDS):  # fold all holds none out
        raise StageFailed(f"fold {the_fold(params)} leaves {len(train_ids)} training and "
                          f"{len(val_ids)} validation cases; both must be non-empty")
    return train_ids, val_ids


def class_names(paths: Paths, params: Params) -> dict[str, str]:
    """The dataset's labels ({"0": "background", ...}), one per output of model.out_channels (for
    region-based labels: background, then one per region and output)."""
    splits = Splits.load(paths.splits)
    outputs = len(splits.labels) - 1 if splits.regions else len(splits.labels)
    if outputs != params.model.out_channels:
        raise StageFailed(f"dataset.json declares {outputs} {'regions' if splits.regions else 'labels'} but "
                          f"model.out_channels is {params.model.out_channels}; they must match")
    return splits.labels


def resume_fingerprint(params: Params, paths: Paths, train_ids: list[str], code_digest: dict[str, str]) -> str:
    """Everything a resumed run must share with the interrupted one: params, code and cached data.

    Args:
        code_digest: hashes of the training code by file (the train stage passes its import
            closure's), so a checkpoint is never resumed across a change of that code.
    """
    cache = PreprocessedCache(paths.preprocessed)
    data = {case: [file_hash(path) for path in cache.case_files(case)] for case in train_ids}
    return config_fingerprint(params.seed, params.model.model_dump(), params.train.model_dump(),
                              params.preprocess.model_dump(), params.augment.model_dump(), data, code_digest)


class Trainer:
    """Holds what an epoch needs; `fit` runs the remaining epochs, `write_outputs` the fold's files.

    Under torchrun every process builds the same Trainer (same seed, same checkpoint) and trains
    on its share of each global batch through DistributedDataParallel; rank 0 alone validates,
    writes checkpoints and history, and tracks. `net` is the plain module (saved and validated),
    `model` what the optimiser steps through (`net` in DDP and/or compiled). `code_digest` joins
    the checkpoint fingerprint (see `resume_fingerprint`); tests and benchmarks may leave it empty.
    """

    def __init__(self, params: Params, paths: Paths, tracker=None, code_digest: dict[str, str] | None = None):
        from monai.data import set_track_meta

        set_track_meta(False)
        self.params, self.paths, self.tracker = params, paths, tracker
        cfg = params.train
        torch.set_num_threads(cfg.num_threads or D.cpu_threads_per_process())
        self.device = D.process_device(training_device(cfg.device))
        self.amp = cfg.amp and self.device.type == "cuda"
        self.labels = class_names(paths, params)
        splits = Splits.load(paths.splits)
        self.ignore_label, self.regions = splits.ignore_label, Regions.of(splits.regions)
        train_ids, val_ids = split_cases(paths, params)
        self.fingerprint = resume_fingerprint(params, paths, train_ids, code_digest or {})
        torch.manual_seed(params.seed)
        layout = loop.memory_format(cfg.channels_last, network_dims(params.model.network_args()))
        self.net = build_network(params.model.name, params.model.network_args()).to(self.device, memory_format=layout)
        self.loss_fn = build_loss(params.model, self.ignore_label, self.regions)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.loader = self.build_loader(train_ids)
        self.val_ids = val_ids
        self.fold = the_fold(params)
        self.checkpoint = paths.checkpoints_for(self.fold) / "last.pt"
        # Every rank resumes from the same checkpoint, so all start from the same weights and optimiser.
        self.state = (resume_checkpoint(self.checkpoint, self.fingerprint, self.net, self.optimizer, self.scaler)
                      or TrainState())
        if tracker is not None and self.state.tracked_run is not None:
            tracker.continue_run(self.state.tracked_run)  # the resumed epochs go on in the same W&B run
        self.model = self.training_model()

    def build_loader(self, train_ids: list[str]):
        """This process's loader over the fold's training cases (`fold_loader`), in memory while
        they fit train.cache_ram_gb."""
        cache = PreprocessedCache(self.paths.preprocessed)
        self.in_memory = loader.fits_in_memory(cache, train_ids, self.params.train.cache_ram_gb)
        return loader.fold_loader(self.params, cache, train_ids, self.ignore_label, self.device, self.in_memory)

    def training_model(self) -> torch.nn.Module:
        """`net` in DDP under torchrun, compiled when train.compile; checkpoints and the model
        file read `net` itself, so their keys carry neither `module.` nor `_orig_mod.`."""
        model = D.wrap_data_parallel(self.net, self.device)
        return torch.compile(model) if self.params.train.compile else model

    def lr_for(self, epoch: int) -> float:
        cfg = self.params.train
        return loop.poly_lr(cfg.lr, epoch, cfg.epochs) if cfg.lr_schedule == "poly" else cfg.lr

    def run_epoch(self, epoch: int, progress) -> dict:
        lr = self.lr_for(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loader.seed_epoch(self.loader, self.params.seed, epoch)
        clock = Stopwatch()
        loss = loop.train_epoch(self.model, self.loader, self.loss_fn, self.optimizer, self.scaler,
                                self.device, self.amp, progress)
        # Equal shares per step, so the mean of the ranks' means is the single-process mean loss.
        loss = D.mean_over_processes(loss)
        val = self.validate(epoch) if D.is_main_process() else None
        return epoch_record(epoch + 1, loss, lr, clock.seconds(), val, self.labels)

    def validate(self, epoch: int) -> list[float] | None:
        """Validation Dice every train.val_every epochs and after the last, on the plain network (fold
        all has no validation cases: None)."""
        cfg = self.params.train
        if not self.val_ids or (epoch + 1 != cfg.epochs and (epoch + 1) % cfg.val_every):
            return None
        cases = PreprocessedCache(self.paths.preprocessed).iter_cases(self.val_ids)  # one case in memory at a time
        return loop.validate(self.net, cases, self.params.preprocess.patch_size,
                             self.params.model.out_channels, self.amp, self.ignore_label, self.regions)

    def fit(self) -> TrainState:
        total = self.params.train.epochs
        if D.is_main_process():
            if self.state.epoch:
                print(f"train: resuming after epoch {self.state.epoch}/{total} from {self.checkpoint}")
            self.report_progress()  # a watcher sees the fold start (or resume) before its first epoch ends
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
        if self.tracker:
            self.state.tracked_run = self.tracker.identity or self.state.tracked_run
        save_checkpoint(self.checkpoint, self.fingerprint, self.state, self.net, self.optimizer, self.scaler)
        write_history(self.paths, self.fold, self.state.history)
        progress = self.report_progress()
        print(f"train: {progress.line()}  " + "  ".join(f"{k}={v}" for k, v in record.items() if k != "epoch"),
              flush=True)
        if self.tracker:
            self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def report_progress(self) -> TrainProgress:
        """Write the fold's progress file (epochs done, ETA from the measured epochs); returns it."""
        progress = fold_progress(self.fold, self.params.train.epochs, self.state.history)
        progress.save(self.paths.train_progress_for(self.fold))
        return progress

    def model_file(self, preprocessing: dict | None) -> ModelFile:
        """The trained network as a model file: weights of the plain `net`, how to build it, and
        the preprocessing its inputs need (the plan's)."""
        final = self.state.history[-1]
        return ModelFile(network=self.params.model.name, network_args=self.params.model.network_args(),
                         patch_size=list(self.params.preprocess.patch_size), labels=self.labels,
                         state_dicts=[self.net.state_dict()], folds=[self.fold], preprocessing=preprocessing,
                         info={"epochs": self.state.epoch,
                               "label_map": {str(k): v for k, v in (self.params.data.label_map or {}).items()},
                               "val_dice_mean": final.get("val_dice_mean"), "fingerprint": self.fingerprint,
                               "regions": self.regions.to_dict() if self.regions else None})

    def summary(self, clock: Stopwatch, predicted_seconds: float | None = None) -> TrainSummary:
        """The fold's summary; `clock` started with this process's run (`seconds_this_run`)."""
        history = self.state.history
        epoch_seconds = sum(h["seconds"] for h in history)
        return TrainSummary(epochs=self.state.epoch, val_dice_mean=history[-1].get("val_dice_mean"),
                            train_loss=history[-1]["train_loss"], seconds=round(epoch_seconds, 1),
                            seconds_this_run=round(clock.seconds(), 1),
                            seconds_per_epoch=round(epoch_seconds / len(history), 2),
                            peak_rss_mb=round(peak_rss_mb(), 1), device=self.device.type, fold=self.fold,
                            processes=D.world_size(), predicted_seconds=predicted_seconds)

    def write_outputs(self, preprocessing: dict, clock: Stopwatch,
                      predicted_seconds: float | None = None) -> TrainSummary:
        """Rank 0 after `fit`: the history files (also when resuming a run killed after its last
        epoch), the model file and summary.json of the fold; returns the summary."""
        write_history(self.paths, self.fold, self.state.history)
        save_model_file(self.paths.model_for(self.fold), self.model_file(preprocessing))
        summary = self.summary(clock, predicted_seconds)
        summary.save(self.paths.train_summary_for(self.fold))
        return summary
