"""Train-step throughput: the train stage's own loop against a bare MONAI loop, side by side.

A (segflow): the `Trainer` the stage runs (`segflow.training.trainer`: its loader with per-sample
seeding and caching, augmentation, loss, AdamW, AMP and thread settings, the compiled/DDP wrapper
it trains through) stepped by `segflow.training.loop.train_epoch`, the function `Trainer.run_epoch`
calls, with the Trainer's progress bar. B (bare): the same MONAI network class built from the
same params, the same preprocessed cases and transform lists in a plain `CacheDataset` +
`DataLoader(shuffle=True)`, DiceCE loss, AdamW, and `for batch in loader: forward/backward/step`,
same batch size, same torch threads (the process-wide setting the Trainer made), the same AMP
setting (autocast + GradScaler on CUDA).

After a warm-up of each, the loops run interleaved (A, B, A, B, ...), `--steps` batches per turn;
the table gives the median, min and max patches/s of each, the ratio of the medians segflow/bare
and the median of the per-turn ratios (each turn of A against the turn of B in the same round).
The goal (>= 0.95) is judged on the paired ratio: when other work shares the cores, turn times
jump between two modes (a busy core stalls every OpenMP barrier of the step) and the two medians
can land in different modes, while paired turns mostly share one; the script then warns, and
the medians are only comparable from a quiet machine. Results: bench/results/train_throughput.json.

`--baseline-src DIR` adds A as built from another source tree (e.g. a clone at HEAD: before/after
a change, in the same run): it lives in a child process that imports segflow from DIR and runs
a turn only when asked, so exactly one loop computes at any time, in the same A, A', B rotation.

    .venv/bin/python -m bench.train_throughput --project /tmp/sfbench/proj     # a project after `dvc repro preprocess`
    .venv/bin/python -m bench.train_throughput --prepare /tmp/sfbench/proj     # make that project first (~1 min)
    .venv/bin/python -m bench.train_throughput --steps 4 --repeats 20 --device cpu --set train.num_workers=1
    git clone -q . /tmp/head && .venv/bin/python -m bench.train_throughput --baseline-src /tmp/head/src

`--project` is a segflow project in which the plan and preprocess stages have run
(artifacts/plan/plan.json, artifacts/preprocessed/, artifacts/ingest/splits.json); the code
measured is the installed segflow (this checkout's, for the editable install). Nothing is written
into the project (the Trainer would resume from a matching checkpoint there; that only changes
the starting weights, not the speed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import report

REPO = Path(__file__).resolve().parents[1]

NEEDED = ("artifacts/plan/plan.json", "artifacts/preprocessed/index.json", "artifacts/ingest/splits.json")


# --- the project measured -------------------------------------------------------------------------

def prepare_project(dest: Path) -> Path:
    """Clone this repository at HEAD into `dest` (shared data beside it) and run the pipeline up to
    preprocess there with this venv, so the bench has a plan and a preprocessed cache to read."""
    dest = dest.resolve()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(dest / "src"),
           "SEGFLOW_TRACKING": "off", "DVC_NO_ANALYTICS": "1"}
    if not dest.exists():
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
        for key, value in (("user.email", "bench@localhost"), ("user.name", "bench")):
            subprocess.run(["git", "config", key, value], cwd=dest, check=True)
    shared = dest.parent / "shared"
    if not shared.exists():
        shared.symlink_to(REPO.parent / "shared")
    subprocess.run([str(bin_dir / "segflow"), "fetch-data"], cwd=dest, env=env, check=True)
    subprocess.run([str(bin_dir / "dvc"), "repro", "preprocess"], cwd=dest, env=env, check=True)
    return dest


def ready_project(args: argparse.Namespace) -> Path:
    """The project to measure (`--prepare` makes one first), checked for what the benches read."""
    project = (prepare_project(args.prepare) if args.prepare else args.project).resolve()
    check_project(project)
    return project


def check_project(project: Path) -> None:
    missing = [name for name in NEEDED if not (project / name).is_file()]
    if missing:
        sys.exit(f"{project} lacks {', '.join(missing)}: run the pipeline up to preprocess there "
                 f"(`dvc repro preprocess`), or let the bench do it in a scratch clone: "
                 f"--prepare /tmp/segflow-bench/proj")


def parse_setting(text: str) -> tuple[str, object]:
    """`train.num_workers=1` -> ("train.num_workers", 1); the value is read as YAML."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise argparse.ArgumentTypeError(f"{text!r} is not section.key=value (e.g. train.num_workers=1)")
    return key.strip(), yaml.safe_load(value)


def stage_inputs(project: Path, fold: int, device: str, settings: list[tuple[str, object]] = ()):
    """(params, paths) exactly as `segflow stage train --fold F` sees them, with `device` and the
    `section.key=value` settings put over them (after the plan's values)."""
    from segflow.config import parse_params
    from segflow.paths import Paths
    from segflow.stages import stage_params

    raw = stage_params("train", project, fold).model_dump(by_alias=True)
    for key, value in [*settings, *([("train.device", device)] if device != "auto" else [])]:
        section, _, name = key.partition(".")
        if name not in raw.get(section, {}):
            raise SystemExit(f"--set {key}: params have no key {key!r}")
        raw[section][name] = value
    return parse_params(raw, source="params.yaml with the plan's values and --set"), Paths(project)


def build_trainer(project: Path, fold: int, device: str, settings: list[tuple[str, object]] = ()):
    """The Trainer the train stage runs for `fold` (it sets torch's threads and MONAI's meta tracking)."""
    from segflow.training.trainer import Trainer

    params, paths = stage_inputs(project, fold, device, settings)
    return Trainer(params, paths)


def code_measured() -> str:
    """Where the segflow package measured lives (PYTHONPATH=<other checkout>/src measures that one)."""
    import segflow

    return str(Path(segflow.__file__).resolve().parent)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless(loader, reseed=None):
    """Batches of epoch after epoch (`reseed(epoch)` first, as the stage does before each epoch)."""
    for epoch in itertools.count():
        if reseed:
            reseed(epoch)
        yield from loader


# --- a loop from another source tree, in a child process ------------------------------------------

class Remote:
    """A child process running a bench module (`python -m bench.<name> --serve`, from this repository's
    root, so this bench code runs) with PYTHONPATH=`src` (so that tree's segflow is the one imported):
    it builds what the module's `serve` builds, then answers one JSON request per line, computing only
    while this process waits for the answer (so side-by-side turns never overlap)."""

    def __init__(self, module: str, src: Path, argv: list[str]):
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}  # the child runs in REPO
        self.module = module
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--serve", *argv], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = self.receive()

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the baseline process (python -m {self.module} --serve) ended; its error is above")
        return json.loads(line)

    def call(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_requests(handle) -> None:
    """The child's side of `Remote`: stdout carries only the answers (prints go to stderr)."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(payload: dict) -> None:
        answers.write(json.dumps(payload, default=str) + "\n")
        answers.flush()

    handle(answer, (json.loads(line) for line in sys.stdin))


def child_argv(args: argparse.Namespace) -> list[str]:
    """The options a `--serve` child needs to build the same thing from its own source tree."""
    argv = ["--project", str(args.project), "--fold", str(args.fold), "--device", args.device]
    return argv + [part for key, value in args.settings for part in ("--set", f"{key}={json.dumps(value)}")]


# --- the loops --------------------------------------------------------------------------------------

class SegflowLoop:
    """The stage's own train step: `train_epoch` over the Trainer's loader, model, loss, optimiser."""

    def __init__(self, trainer, name: str = "segflow (Trainer + train_epoch)"):
        from segflow.training.loader import seed_epoch
        from segflow.training.loop import train_epoch

        self.name, self.trainer, self.train_epoch = name, trainer, train_epoch
        self.batches = endless(trainer.loader, lambda epoch: seed_epoch(trainer.loader, trainer.params.seed, epoch))

    def run(self, steps: int) -> None:
        t = self.trainer
        with t.progress_bar(0) as progress:
            self.train_epoch(t.model, itertools.islice(self.batches, steps), t.loss_fn, t.optimizer, t.scaler,
                             t.device, t.amp, progress)
        sync(t.device)


class RemoteLoop:
    """SegflowLoop built from the baseline source tree, in a child process."""

    def __init__(self, args: argparse.Namespace):
        self.remote = Remote("bench.train_throughput", args.baseline_src, child_argv(args))
        self.name = "segflow, baseline tree"

    def run(self, steps: int) -> None:
        self.remote.call(steps=steps)


class BareLoop:
    """A plain MONAI loop on the same data, transforms, network params, batch, threads and AMP."""

    name = "bare MONAI loop"

    def __init__(self, trainer):
        import numpy as np
        import torch
        from monai import networks
        from monai.data import CacheDataset, list_data_collate
        from monai.losses import DiceCELoss
        from monai.transforms import Compose
        from torch.utils.data import DataLoader

        from segflow.training.trainer import split_cases
        from segflow.transforms import build_training_transforms

        params, cfg = trainer.params, trainer.params.train
        self.device, self.amp = trainer.device, trainer.amp
        train_ids, _ = split_cases(trainer.paths, params)
        items = [{"image": np.load(trainer.paths.preprocessed / f"{case_id}.image.npy"),
                  "label": np.load(trainer.paths.preprocessed / f"{case_id}.label.npy")} for case_id in train_ids]
        cached, random = build_training_transforms(params.augment, params.preprocess.patch_size, params.model.spatial_dims)
        dataset = CacheDataset(items, Compose(cached + random), cache_rate=1.0, num_workers=0, progress=False)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=list_data_collate)
        torch.manual_seed(params.seed)
        network = getattr(networks.nets, params.model.name)
        self.net = network(**params.model.network_args()).to(self.device)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.batches = endless(loader)

    def run(self, steps: int) -> None:
        import torch

        self.net.train()
        for batch in itertools.islice(self.batches, steps):
            images, labels = batch["image"].to(self.device), batch["label"].to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                loss = self.loss_fn(self.net(images), labels)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        sync(self.device)


# --- measuring --------------------------------------------------------------------------------------

def timed(loop, steps: int) -> float:
    start = time.perf_counter()
    loop.run(steps)
    return time.perf_counter() - start


def interleave(loops: list, steps: int, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per turn of `steps` batches for each loop, turns alternating after a warm-up."""
    for loop in loops:
        loop.run(warmup)
    seconds: dict[str, list[float]] = {loop.name: [] for loop in loops}
    for _ in range(repeats):
        for loop in loops:
            seconds[loop.name].append(timed(loop, steps))
    return seconds


def summarise(seconds: list[float], patches_per_turn: int) -> dict:
    rates = [patches_per_turn / s for s in seconds]
    return {"patches_per_s": rates, "median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def paired_ratio(faster: list[float], slower: list[float]) -> float:
    """Median over turns of rate(first)/rate(second), i.e. seconds(second)/seconds(first)."""
    return statistics.median(b / a for a, b in zip(faster, slower, strict=True))


def noisy(stats: dict, spread: float = 1.5) -> bool:
    """True when some loop's fastest turn is `spread` times its slowest: other work took the cores."""
    return any(s["max"] > spread * s["min"] for s in stats.values())


def warn_if_noisy(is_noisy: bool) -> None:
    if is_noisy:
        print(f"warning: turn times vary by more than 1.5x (load average now {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} cores): other work shares the machine; the paired ratios hold, the medians "
              "and absolute numbers need a quiet machine")


def loader_settings(loader) -> dict:
    return {"num_workers": loader.num_workers, "pin_memory": loader.pin_memory,
            "persistent_workers": loader.persistent_workers, "prefetch_factor": loader.prefetch_factor}


def settings(trainer, args) -> dict:
    import torch

    p = trainer.params
    return {"project": str(args.project), "segflow_code": code_measured(), "fold": args.fold,
            "device": trainer.device.type, "amp": trainer.amp,
            "batch_size": p.train.batch_size, "patch_size": list(p.preprocess.patch_size), "network": p.model.name,
            "network_args": p.model.network_args(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "compile": p.train.compile,
            "steps_per_turn": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
            "train_cases": len(trainer.loader.dataset), "loader": loader_settings(trainer.loader),
            "set": {key: value for key, value in args.settings}}


def ratio_rows(stats: dict, seconds: dict, pairs: list[tuple[str, str, str]]) -> tuple[list[list], dict]:
    """Table rows and JSON for each (label, numerator loop, denominator loop)."""
    rows, ratios = [], {}
    for label, top, bottom in pairs:
        of_medians = stats[top]["median"] / stats[bottom]["median"]
        paired = paired_ratio(seconds[top], seconds[bottom])
        ratios[label] = {"ratio_of_medians": of_medians, "median_paired_ratio": paired}
        rows.append([f"ratio {label}", f"{of_medians:.3f}", "", "", f"paired turns: {paired:.3f}"])
    return rows, ratios


def add_project_options(parser: argparse.ArgumentParser, measured: str) -> None:
    """--project/--prepare/--baseline-src/--fold: what the throughput benches measure, and where."""
    parser.add_argument("--project", type=Path, default=REPO,
                        help="a project after `dvc repro preprocess` (default: this repo)")
    parser.add_argument("--prepare", type=Path, metavar="DIR",
                        help="clone HEAD into DIR, run fetch-data and `dvc repro preprocess` there, measure it")
    parser.add_argument("--baseline-src", type=Path, metavar="DIR",
                        help=f"also measure the {measured} of the segflow package under DIR (e.g. /tmp/head/src)")
    parser.add_argument("--fold", type=int, default=0)


def add_run_options(parser: argparse.ArgumentParser, name: str) -> None:
    """--device/--set/--out (and the baseline child's hidden --serve)."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when present (the stage's own rule)")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="a params value for this measurement, e.g. --set train.num_workers=1 (repeatable)")
    parser.add_argument("--out", type=Path, help=f"JSON path (default bench/results/{name}.json)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the baseline's child process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_options(parser, "stage loop")
    parser.add_argument("--steps", type=int, default=4, help="batches per timed turn")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches of each loop first")
    parser.add_argument("--repeats", type=int, default=15, help="timed turns of each loop, interleaved")
    add_run_options(parser, "train_throughput")
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    """Child process: the stage loop from this PYTHONPATH's segflow, one turn per request."""
    def handle(answer, requests) -> None:
        loop = SegflowLoop(build_trainer(args.project, args.fold, args.device, args.settings))
        answer({"segflow_code": code_measured()})
        for request in requests:
            loop.run(request["steps"])
            answer({"done": True})

    serve_requests(handle)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        return serve(args)
    args.project = ready_project(args)
    load_before = os.getloadavg()[0]
    trainer = build_trainer(args.project, args.fold, args.device, args.settings)
    ours, bare = SegflowLoop(trainer), BareLoop(trainer)
    baseline = RemoteLoop(args) if args.baseline_src else None
    loops = [ours, *([baseline] if baseline else []), bare]
    seconds = interleave(loops, args.steps, args.warmup, args.repeats)
    if baseline:
        baseline.remote.close()
    patches = args.steps * trainer.params.train.batch_size
    stats = {name: summarise(s, patches) for name, s in seconds.items()}
    pairs = [("segflow/bare", ours.name, bare.name)]
    if baseline:
        pairs += [("baseline/bare", baseline.name, bare.name), ("segflow/baseline", ours.name, baseline.name)]
    extra_rows, ratios = ratio_rows(stats, seconds, pairs)
    main_ratio = ratios["segflow/bare"]["ratio_of_medians"]
    rows = [[name, f"{s['median']:.2f}", f"{s['min']:.2f}", f"{s['max']:.2f}",
             f"{1000 * statistics.median(seconds[name]) / args.steps:.0f}"] for name, s in stats.items()]
    rows += extra_rows
    met = ratios["segflow/bare"]["median_paired_ratio"] >= 0.95
    rows[len(stats)][4] += f"; goal >= 0.95: {'met' if met else 'not met'}"
    results = {"settings": settings(trainer, args), "loops": stats, "seconds_per_turn": seconds, "ratios": ratios,
               "ratio_of_medians": main_ratio, "goal": 0.95, "met": met, "noisy": noisy(stats),
               "baseline_code": baseline.remote.info["segflow_code"] if baseline else None,
               "load_average_1m_before": round(load_before, 2)}
    s = results["settings"]
    print(f"device {s['device']}, batch {s['batch_size']}, patch {s['patch_size']}, {s['network']}, "
          f"{s['torch_threads']} torch threads, loader {s['loader']}, {args.repeats} x {args.steps} steps each, "
          f"load average before {load_before:.2f}\n")
    report("train_throughput", results, rows, ["loop", "patches/s median", "min", "max", "ms/step median"],
           out=args.out)
    warn_if_noisy(results["noisy"])


if __name__ == "__main__":
    main()
