"""Data throughput: patches/s the train stage's loader produces (workers, caching, augmentation, no
model) against patches/s the model consumes (forward + backward on one batch), side by side; and
the number of file decodes per epoch, to show that epoch 2 onwards reads nothing from disk.

The loader is the stage's own (`Trainer.loader`, reseeded per epoch by `seed_epoch` as the stage
does); the model is the Trainer's (same network, loss, device, AMP). Turns alternate: one whole
loader epoch, then `--model-steps` forward+backward passes on a fixed batch, `--repeats` times
after a short model warm-up. Goal: loader/model >= 2 (the loader is never what training waits
for), judged on the median of the per-round ratios (steadier than the ratio of the medians when
other work shares the cores; see train_throughput.py).

Decodes are counted by wrapping, in this process and (through shared counters) in forked loader
workers: `segflow.data.cache.PreprocessedCache.load` (the preprocessed-cache reader), `numpy.load` (the
.npy opens) and `nibabel.load` (NIfTI), separately for building the Trainer, epoch 1, epoch 2 and
the later epochs. Results: bench/results/data_throughput.json.

`--baseline-src DIR` adds the loader built from another source tree (before/after a change, in the
same run): a child process importing segflow from DIR runs its epoch only when asked, in the
rotation current loader, baseline loader, model.

    .venv/bin/python -m bench.data_throughput --project /tmp/sfbench/proj
    .venv/bin/python -m bench.data_throughput --project /tmp/sfbench/proj --set train.num_workers=1
    .venv/bin/python -m bench.data_throughput --project /tmp/sfbench/proj --baseline-src /tmp/head/src
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

from bench.common import report
from bench.train_throughput import (
    Remote,
    add_project_options,
    add_run_options,
    build_trainer,
    child_argv,
    code_measured,
    loader_settings,
    ready_project,
    serve_requests,
    sync,
    warn_if_noisy,
)

COUNTED = ("PreprocessedCache.load", "numpy.load", "nibabel.load")


class DecodeCounter:
    """Counts calls of the functions that read data files, also from forked loader workers."""

    def __init__(self):
        self.values = {name: multiprocessing.Value("q", 0) for name in COUNTED}

    def wrap(self, name: str, function):
        counter = self.values[name]

        def counted(*args, **kwargs):
            with counter.get_lock():
                counter.value += 1
            return function(*args, **kwargs)

        return counted

    def install(self) -> None:
        """Wrap the readers where the code looks them up (module attributes, incl. `from` imports)."""
        import nibabel
        import numpy

        from segflow.data import cache

        numpy.load = self.wrap("numpy.load", numpy.load)
        nibabel.load = self.wrap("nibabel.load", nibabel.load)
        cache.PreprocessedCache.load = self.wrap("PreprocessedCache.load", cache.PreprocessedCache.load)

    def snapshot(self) -> dict[str, int]:
        return {name: value.value for name, value in self.values.items()}


def difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after}


class StageLoader:
    """The Trainer's loader, one timed and decode-counted epoch at a time."""

    def __init__(self, args: argparse.Namespace):
        self.counter = DecodeCounter()
        self.counter.install()
        self.trainer = build_trainer(args.project, args.fold, args.device, args.settings)
        self.built = self.counter.snapshot()

    def epoch(self, epoch: int) -> dict:
        from segflow.training.loader import seed_epoch

        loader, before = self.trainer.loader, self.counter.snapshot()
        seed_epoch(loader, self.trainer.params.seed, epoch)
        start, patches = time.perf_counter(), 0
        for batch in loader:
            patches += int(batch["image"].shape[0])
        seconds = time.perf_counter() - start
        return {"epoch": epoch + 1, "seconds": seconds, "patches": patches, "patches_per_s": patches / seconds,
                "decodes": difference(self.counter.snapshot(), before)}


class RemoteLoader:
    """StageLoader built from the baseline source tree, in a child process."""

    def __init__(self, args: argparse.Namespace):
        self.remote = Remote("bench.data_throughput", args.baseline_src, child_argv(args))
        self.built, self.code = self.remote.info["built"], self.remote.info["segflow_code"]

    def epoch(self, epoch: int) -> dict:
        return self.remote.call(epoch=epoch)


def model_turn(trainer, images, labels, steps: int) -> float:
    """Seconds for `steps` forward + backward passes of the Trainer's model on one batch."""
    from segflow.inference.sliding_window import autocast

    model = trainer.model
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        with autocast(trainer.device, trainer.amp):
            loss = trainer.loss_fn(model(images), labels)
        loss.backward()
    sync(trainer.device)
    return time.perf_counter() - start


def measure(loaders: dict, trainer, args) -> dict:
    """Loader epochs (each loader in turn) and model turns, alternating."""
    batch = next(iter(trainer.loader))
    images, labels = batch["image"].to(trainer.device), batch["label"].to(trainer.device)
    model_turn(trainer, images, labels, args.warmup)
    epochs, model_seconds = {name: [] for name in loaders}, []
    for epoch in range(args.repeats):
        for name, loader in loaders.items():
            epochs[name].append(loader.epoch(epoch))
        model_seconds.append(model_turn(trainer, images, labels, args.model_steps))
    return {"epochs": epochs, "model_patches_per_s": [args.model_steps * images.shape[0] / s for s in model_seconds],
            "model_batch": int(images.shape[0])}


def decode_phases(built: dict, epochs: list[dict]) -> dict[str, dict]:
    later = {name: sum(e["decodes"][name] for e in epochs[2:]) for name in COUNTED}
    return {"building the Trainer (load + cache)": built, "epoch 1": epochs[0]["decodes"],
            "epoch 2": epochs[1]["decodes"], f"epochs 3-{len(epochs)}": later}


def rate_row(name: str, rates: list[float], extra: str) -> list:
    return [name, f"{statistics.median(rates):.1f}", f"{min(rates):.1f}", f"{max(rates):.1f}", extra]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_options(parser, "stage loader")
    parser.add_argument("--repeats", type=int, default=6, help="loader epochs (>= 2), each followed by a model turn")
    parser.add_argument("--model-steps", type=int, default=4, help="forward+backward passes per model turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed model passes first")
    add_run_options(parser, "data_throughput")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (epoch 2 is what shows the caching)")
    return args


def serve(args: argparse.Namespace) -> None:
    """Child process: the stage loader from this PYTHONPATH's segflow, one epoch per request."""
    def handle(answer, requests) -> None:
        loader = StageLoader(args)
        answer({"segflow_code": code_measured(), "built": loader.built})
        for request in requests:
            answer(loader.epoch(request["epoch"]))

    serve_requests(handle)


def paired_median(top: list[float], bottom: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(top, bottom, strict=True))


def loader_results(loaders: dict, data: dict) -> dict:
    """Per loader: its epochs, median rate, decodes per phase; prints the decode tables."""
    from tabulate import tabulate

    model_rates, results = data["model_patches_per_s"], {}
    for name, loader in loaders.items():
        epochs = data["epochs"][name]
        rates = [e["patches_per_s"] for e in epochs]
        phases = decode_phases(loader.built, epochs)
        print(f"{name}:\n" + tabulate([[phase, *(counts[n] for n in COUNTED)] for phase, counts in phases.items()],
                                      headers=["decodes during", *COUNTED]) + "\n")
        results[name] = {"epochs": epochs, "median": statistics.median(rates), "decodes": phases,
                         "ratio_over_model": statistics.median(rates) / statistics.median(model_rates),
                         "median_paired_ratio_over_model": paired_median(rates, model_rates),
                         "no_decodes_from_epoch_2": not any(n for p in list(phases.values())[2:] for n in p.values())}
    return results


def table(loaders: dict, data: dict, by_loader: dict, args) -> list[list]:
    """Rows: each loader's rate, the model's, loader/model (the goal) and current/baseline."""
    rows = [rate_row(name, [e["patches_per_s"] for e in data["epochs"][name]],
                     "s/epoch: " + ", ".join(f"{e['seconds']:.2f}" for e in data["epochs"][name])) for name in loaders]
    rows.append(rate_row(f"model forward+backward, batch {data['model_batch']}", data["model_patches_per_s"],
                         f"{args.model_steps} passes per turn"))
    first = by_loader[next(iter(loaders))]
    paired = first["median_paired_ratio_over_model"]
    rows.append(["ratio loader/model (medians)", f"{first['ratio_over_model']:.2f}", "", "",
                 f"paired turns: {paired:.2f}; goal >= 2: {'met' if paired >= 2 else 'not met'}"])
    if "current_over_baseline" in by_loader:
        ratios = by_loader["current_over_baseline"]
        rows.append(["ratio loader current/baseline", f"{ratios['ratio_of_medians']:.2f}", "", "",
                     f"paired epochs: {ratios['median_paired_ratio']:.2f}"])
    return rows


def run_settings(args, trainer, loaders: dict) -> dict:
    import torch

    p = trainer.params
    baseline = next((loader.code for loader in loaders.values() if isinstance(loader, RemoteLoader)), None)
    return {"project": str(args.project), "segflow_code": code_measured(), "baseline_code": baseline,
            "fold": args.fold, "device": trainer.device.type, "amp": trainer.amp, "batch_size": p.train.batch_size,
            "patch_size": list(p.preprocess.patch_size), "network": p.model.name,
            "torch_threads": torch.get_num_threads(), "loader": loader_settings(trainer.loader),
            "train_cases": len(trainer.loader.dataset), "repeats": args.repeats, "model_steps": args.model_steps,
            "set": {key: value for key, value in args.settings}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        return serve(args)
    args.project = ready_project(args)
    load_before = os.getloadavg()[0]
    current = StageLoader(args)
    trainer = current.trainer
    loaders = {f"stage loader ({trainer.loader.num_workers} workers), no model": current}
    if args.baseline_src:
        loaders["stage loader, baseline tree"] = RemoteLoader(args)
    data = measure(loaders, trainer, args)
    for loader in loaders.values():
        if isinstance(loader, RemoteLoader):
            loader.remote.close()

    by_loader = loader_results(loaders, data)
    if args.baseline_src:
        ours, theirs = (by_loader[name] for name in loaders)
        by_loader["current_over_baseline"] = {
            "ratio_of_medians": ours["median"] / theirs["median"],
            "median_paired_ratio": paired_median([e["patches_per_s"] for e in ours["epochs"]],
                                                 [e["patches_per_s"] for e in theirs["epochs"]])}
    first = by_loader[next(iter(loaders))]
    model_rates = data["model_patches_per_s"]
    results = {"settings": run_settings(args, trainer, loaders), "loaders": by_loader,
               "model_patches_per_s": model_rates, "model_median": statistics.median(model_rates),
               "ratio_loader_over_model": first["ratio_over_model"],
               "median_paired_ratio": first["median_paired_ratio_over_model"], "goal": 2.0,
               "met": first["median_paired_ratio_over_model"] >= 2,
               "no_decodes_from_epoch_2": first["no_decodes_from_epoch_2"],
               "noisy": max(model_rates) > 1.5 * min(model_rates), "load_average_1m_before": round(load_before, 2)}
    rows = table(loaders, data, by_loader, args)
    report("data_throughput", results, rows, ["", "patches/s median", "min", "max", ""], out=args.out)
    warn_if_noisy(results["noisy"])


if __name__ == "__main__":
    main()
