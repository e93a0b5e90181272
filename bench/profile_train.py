"""Where a train step's time goes: torch.profiler over the train stage's own loop.

The loop is train_throughput.py's `SegflowLoop` (the stage's Trainer stepped by
`segflow.training.loop.train_epoch`). After a warm-up, `--steps` batches run under torch.profiler; the
table groups the operators' self CPU time into what the step is made of (convolutions forward and
backward, normalisation, activations, loss, optimiser, copies and layout changes) and puts the
rest of the wall time (Python, the loader's augmentation outside torch operators, the progress
bar) in one row. It is the profile behind the speed work of issue #7: if convolutions are most of
the step, only a cheaper network or a faster convolution (channels-last, a GPU) speeds training.

    .venv/bin/python -m bench.profile_train --project /tmp/sfbench/proj
    .venv/bin/python -m bench.profile_train --project /tmp/sfbench/proj --set train.channels_last=false
    .venv/bin/python -m bench.profile_train --project /tmp/sfbench/proj --trace /tmp/step.json   # chrome://tracing

Results: bench/results/profile_train.json (or --out).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import report
from bench.train_throughput import REPO, SegflowLoop, build_trainer, check_project, parse_setting

# Operator name fragments -> the part of the step they belong to (first match wins).
CATEGORIES = [
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward", "slow_conv3d_backward")),
    ("convolution forward", ("convolution", "conv3d", "conv2d", "conv_transpose")),
    ("normalisation", ("instance_norm", "batch_norm", "native_batch_norm", "group_norm", "layer_norm")),
    ("activation", ("prelu", "relu", "leaky", "gelu", "elu", "silu")),
    ("loss (softmax, one-hot, Dice, CE)", ("softmax", "one_hot", "scatter", "cross_entropy", "nll", "log_softmax")),
    ("optimiser (AdamW)", ("_foreach", "adam", "lerp", "addcdiv", "addcmul")),
    ("copies and layout", ("copy_", "contiguous", "clone", "to_copy", "_to_copy", "empty_like", "cat", "stack")),
]


def category(name: str) -> str:
    lowered = name.lower()
    return next((label for label, parts in CATEGORIES if any(p in lowered for p in parts)), "other operators")


def profile(loop: SegflowLoop, steps: int, trace: Path | None):
    """(profiler, wall seconds) of `steps` batches of the stage's loop."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        loop.run(steps)
        wall = time.perf_counter() - start
    if trace:
        prof.export_chrome_trace(str(trace))
    return prof, wall


def breakdown(prof, wall_s: float) -> tuple[dict[str, float], list[dict]]:
    """Seconds per category (self CPU time summed over threads) and the top operators."""
    events = prof.key_averages()
    totals: dict[str, float] = {}
    top = sorted(({"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in events),
                 key=lambda row: -row["self_cpu_s"])
    for row in top:
        totals[category(row["op"])] = totals.get(category(row["op"]), 0.0) + row["self_cpu_s"]
    return totals, top[:15]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=REPO, help="a project after `dvc repro preprocess`")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--steps", type=int, default=12, help="batches profiled")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--set", dest="settings", type=parse_setting, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--trace", type=Path, help="also write a Chrome trace here")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/profile_train.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    check_project(args.project)
    trainer = build_trainer(args.project, args.fold, args.device, args.settings)
    loop = SegflowLoop(trainer)
    loop.run(args.warmup)
    prof, wall = profile(loop, args.steps, args.trace)
    totals, top = breakdown(prof, wall)
    threads = torch.get_num_threads()
    op_s = sum(totals.values())
    rows = [[label, f"{s:.2f}", f"{100 * s / op_s:.1f}"] for label, s in sorted(totals.items(), key=lambda kv: -kv[1])]
    rows.append(["all operators (self CPU, summed over threads)", f"{op_s:.2f}", "100.0"])
    rows.append([f"wall time of {args.steps} steps ({threads} threads)", f"{wall:.2f}", ""])
    print("top operators by self CPU time:")
    for row in top:
        print(f"  {row['self_cpu_s']:7.2f} s  {row['calls']:6d} calls  {row['op']}")
    print()
    results = {"steps": args.steps, "wall_s": wall, "s_per_step": wall / args.steps, "torch_threads": threads,
               "operator_self_cpu_s": totals, "top_operators": top, "network": trainer.params.model.name,
               "batch_size": trainer.params.train.batch_size, "patch_size": list(trainer.params.preprocess.patch_size),
               "channels_last": trainer.params.train.channels_last, "set": dict(args.settings)}
    report("profile_train", results, rows, ["part of the step", "self CPU s", "% of operator time"], out=args.out)


if __name__ == "__main__":
    main()
