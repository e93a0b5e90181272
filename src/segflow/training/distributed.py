"""Data-parallel training: one process per device, started by torchrun, joined by a process group.

`segflow stage train` relaunches itself as `python -m torch.distributed.run --standalone
--nproc_per_node N -m segflow.cli stage train --fold F` when `train.nproc_per_node` > 1; each
worker finds RANK, WORLD_SIZE and LOCAL_RANK in its environment and joins through `process_group`.
Outside torchrun every helper answers as the only process of a world of one.

Multi-node: run `torchrun --nnodes M --node-rank I --nproc-per-node N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m segflow.cli stage train --fold F` on every node (same project and
data on each); the workers need no other change, and `train.batch_size` must divide by M x N.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from segflow.errors import StageFailed
from segflow.processes.parent_watch import die_with_parent

# Other ranks wait at a barrier while rank 0 validates and writes files; allow for a long
# validation rather than torch's default (10 min on NCCL).
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=60)


def is_distributed() -> bool:
    """True in a torchrun worker (torchrun sets these for every process it starts)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if is_distributed() else 1


def local_world_size() -> int:
    """Processes on this machine (they share its CPU cores)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that validates, writes files and talks to W&B."""
    return rank() == 0


def per_rank_batch(global_batch: int, world: int) -> int:
    """Each process's share of the global `train.batch_size`; refuses an uneven split."""
    if global_batch % world:
        raise ValueError(f"train.batch_size ({global_batch}) is the global batch and must be divisible "
                         f"by the number of processes ({world}: train.nproc_per_node x nodes)")
    return global_batch // world


def cpu_threads_per_process() -> int:
    """This machine's cores shared among its processes, so they do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // local_world_size())


def training_device(requested: str) -> torch.device:
    """train.device as asked: `cuda` without a visible GPU is an error (a GPU job on a node whose
    GPU is missing must fail, not train for days on CPU); `auto` takes a GPU when there is one."""
    from segflow.errors import StageFailed

    if requested == "cuda" and not torch.cuda.is_available():
        raise StageFailed("train.device is cuda but no CUDA GPU is visible to this process "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                          "check the node's GPU and driver, or set train.device to auto or cpu")
    return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def process_device(device: torch.device) -> torch.device:
    """The device of this process: cuda:LOCAL_RANK for a CUDA worker, else `device` itself."""
    if device.type != "cuda" or not is_distributed():
        return device
    return torch.device("cuda", local_rank())


@contextmanager
def process_group() -> Iterator[None]:
    """Join the torchrun job for the body (gloo on CPU, nccl on CUDA) and always leave it;
    a no-op outside torchrun."""
    if not is_distributed():
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                            device_id=torch.device("cuda", local_rank()) if cuda else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_over_processes(value: float) -> float:
    """`value` averaged over all processes (itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def wrap_data_parallel(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`net` in DistributedDataParallel inside a process group (gradients averaged over
    processes), `net` itself otherwise."""
    if not (dist.is_available() and dist.is_initialized()):
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def torchrun_command(nproc: int, module: str, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run` starting `nproc` copies of `python -m module args` here."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", module, *args]


def launch_torchrun(nproc: int, module: str, args: list[str], cwd: Path) -> None:
    """Run `module` under torchrun with `nproc` processes and wait; its output goes to the terminal.

    Raises:
        StageFailed: a worker failed (torchrun's exit code and its report are in the message/output).
    """
    command = torchrun_command(nproc, module, args)
    print(f"train: starting {nproc} processes: {' '.join(command)}", flush=True)
    # torchrun stops its workers on SIGTERM: it gets one when this stage dies (parent_watch).
    code = subprocess.run(command, cwd=cwd, check=False, preexec_fn=die_with_parent).returncode
    if code != 0:
        raise StageFailed(f"the {nproc} torchrun workers of `{' '.join(args)}` failed with exit code "
                          f"{code}; their tracebacks are in the output above")
