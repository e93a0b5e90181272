"""Inference cost of a segflow model file: parameters, FLOPs, latency and peak memory.

Everything is measured on one input of the bundle's patch size (batch 1) through every member,
because that is what one sliding-window step of `segflow predict` costs: an ensemble of N folds
costs N forwards. `profile_model_file` runs the measurement in a fresh Python process by default,
so each model of a comparison starts from the same state (no allocator pool, thread pool or kernel
cache left behind by the model measured before it) and peak memory can be read from the kernel.
Run as `python -m segflow.models.profile MODEL.pt` it prints the cost as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from segflow.models.model_file import ModelFile, load_model_file

DEFAULT_REPEATS = 10
DEFAULT_WARMUP = 2


@dataclass(frozen=True)
class ModelCost:
    params: int  # all members
    flops: int  # one forward of every member on one patch (a multiply-add counts 2)
    latency_ms: float  # median wall time of that ensemble forward
    peak_mb: float  # memory the forward needs above the loaded model and its input
    members: int
    device: str
    threads: int
    input_shape: list[int]


def default_threads() -> int:
    """The cores this process may run on (what torch would use), fixed so models compare fairly."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def input_shape(bundle: ModelFile) -> list[int]:
    return [1, int(bundle.network_args.get("in_channels", 1)), *map(int, bundle.patch_size)]


def _forward_all(nets: list[torch.nn.Module], x: torch.Tensor) -> None:
    for net in nets:
        net(x)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_parameters(nets: list[torch.nn.Module]) -> int:
    return sum(p.numel() for net in nets for p in net.parameters())


def count_flops(nets: list[torch.nn.Module], x: torch.Tensor) -> int:
    """FLOPs of one ensemble forward, counted by torch's own FlopCounterMode (convolutions and
    matrix products; element-wise ops such as normalisation are not counted, as in fvcore/thop)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        _forward_all(nets, x)
    return int(counter.get_total_flops())


def time_forward(nets: list[torch.nn.Module], x: torch.Tensor, repeats: int = DEFAULT_REPEATS,
                 warmup: int = DEFAULT_WARMUP) -> float:
    """Median milliseconds of one ensemble forward after `warmup` untimed ones (the first calls
    pay for kernel selection and allocation; the median ignores a stray slow call)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _synchronize(x.device)
            start = time.perf_counter()
            _forward_all(nets, x)
            _synchronize(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return float(statistics.median(times))


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")


def _release_free_heap() -> None:
    """Hand memory freed by earlier forwards back to the OS (glibc keeps it resident otherwise,
    which would hide the next forward's allocations from the RSS high-water mark)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_memory_mb(nets: list[torch.nn.Module], x: torch.Tensor) -> float:
    """Peak resident memory of one ensemble forward above the loaded model, from the kernel.

    Why RSS: torch has no CPU counterpart of `cuda.max_memory_allocated`, and its profiler's
    memory events miss allocations made inside oneDNN, so they undercount. Linux can reset a
    process's RSS high-water mark (`echo 5 > /proc/self/clear_refs`): after trimming the heap,
    reset it, run the forward, and the new high-water mark minus the RSS before is what the
    forward really needed (activations, workspaces, allocator overhead). NaN where the kernel
    offers no such reset (not Linux), rather than a number that means something else.
    """
    _release_free_heap()
    try:
        before = _proc_status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return float("nan")
    with torch.inference_mode():
        _forward_all(nets, x)
    return max(0.0, _proc_status_mb("VmHWM") - before)


def cuda_peak_memory_mb(nets: list[torch.nn.Module], x: torch.Tensor) -> float:
    """Peak CUDA memory of one ensemble forward above what was allocated before it (weights, input)."""
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    with torch.inference_mode():
        _forward_all(nets, x)
    torch.cuda.synchronize(x.device)
    return (torch.cuda.max_memory_allocated(x.device) - before) / 2**20


def profile_bundle(bundle: ModelFile, device: str = "cpu", repeats: int = DEFAULT_REPEATS,
                   warmup: int = DEFAULT_WARMUP, threads: int | None = None) -> ModelCost:
    """Cost of the bundle's ensemble forward on `device`, with a fixed CPU thread count."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    threads = threads or default_threads()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        target = torch.device(device)
        nets = bundle.build(target)
        x = torch.randn(input_shape(bundle), device=target)
        flops = count_flops(nets, x)
        latency = time_forward(nets, x, repeats, warmup)
        peak = cuda_peak_memory_mb(nets, x) if target.type == "cuda" else cpu_peak_memory_mb(nets, x)
    finally:
        torch.set_num_threads(saved_threads)
    return ModelCost(params=count_parameters(nets), flops=flops, latency_ms=round(latency, 3),
                     peak_mb=round(peak, 2), members=len(nets), device=device, threads=threads,
                     input_shape=list(x.shape))


def profile_model_file(path: Path, device: str = "cpu", repeats: int = DEFAULT_REPEATS,
                       warmup: int = DEFAULT_WARMUP, threads: int | None = None,
                       isolate: bool = True) -> ModelCost:
    """Cost of a model file; `isolate` measures it in a fresh process (see the module docstring)."""
    if not isolate:
        return profile_bundle(load_model_file(Path(path)), device, repeats, warmup, threads)
    command = [sys.executable, "-m", "segflow.models.profile", str(path), "--device", device,
               "--repeats", str(repeats), "--warmup", str(warmup), "--threads", str(threads or default_threads())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"{path}: cost measurement failed: {last}")
    return ModelCost(**json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--threads", type=int, default=0, help="0: the cores this process may use")
    args = parser.parse_args(argv)
    try:
        cost = profile_bundle(load_model_file(args.model), args.device, args.repeats, args.warmup, args.threads or None)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        sys.exit(str(exc))
    print(json.dumps(asdict(cost)))


if __name__ == "__main__":  # pragma: no cover - subprocess entry
    main()
