"""Data-parallel helpers: single-process defaults, the global batch split, and the sample order
that makes N processes see, step by step, exactly the batches of one process."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

from segflow.errors import StageFailed
from segflow.training import distributed as D
from segflow.training import loader as L

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@pytest.fixture
def single_process(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_worker(monkeypatch):
    """The environment torchrun gives rank 3 of 4 (2 nodes x 2 processes)."""
    for name, value in {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)


def test_outside_torchrun_is_a_world_of_one(single_process):
    net = torch.nn.Linear(2, 2)
    assert not D.is_distributed()
    assert (D.rank(), D.local_rank(), D.world_size(), D.local_world_size()) == (0, 0, 1, 1)
    assert D.is_main_process()
    assert D.wrap_data_parallel(net, torch.device("cpu")) is net
    assert D.mean_over_processes(0.25) == 0.25
    assert D.cpu_threads_per_process() == max(1, os.cpu_count() or 1)
    with D.process_group():  # no-op: no process group to join
        D.barrier()
        assert not torch.distributed.is_initialized()


def test_torchrun_worker_reads_its_place_from_the_environment(torchrun_worker):
    assert D.is_distributed()
    assert (D.rank(), D.local_rank(), D.world_size(), D.local_world_size()) == (3, 1, 4, 2)
    assert not D.is_main_process()
    assert D.process_device(torch.device("cpu")) == torch.device("cpu")
    assert D.process_device(torch.device("cuda")) == torch.device("cuda", 1)


def test_global_batch_is_split_evenly_or_refused():
    assert D.per_rank_batch(8, 1) == 8
    assert D.per_rank_batch(8, 4) == 2
    with pytest.raises(ValueError, match=r"train\.batch_size \(6\).*train\.nproc_per_node"):
        D.per_rank_batch(6, 4)


def toy_items(n: int) -> list[dict]:
    return [{"index": i, "x": np.full((1, 4), float(i), np.float32)} for i in range(n)]


def batches(n: int, global_batch: int, world: int, rank: int, epoch: int, transforms=()) -> list[dict]:
    """The batches `rank` of `world` sees in `epoch`, built as the train stage builds them."""
    loader = L.build_loader(toy_items(n), [], list(transforms), D.per_rank_batch(global_batch, world),
                            seed=5, rank=rank, world=world)
    L.seed_epoch(loader, 5, epoch)
    return list(loader)


@pytest.mark.parametrize("n", [8, 10])  # 10: a last, smaller global batch
def test_ranks_together_see_the_single_process_batches(n):
    for epoch in (0, 1):
        single = [sorted(b["index"].tolist()) for b in batches(n, 4, 1, 0, epoch)]
        ranks = [[b["index"].tolist() for b in batches(n, 4, 2, r, epoch)] for r in (0, 1)]
        joined = [sorted(a + b) for a, b in zip(*ranks, strict=True)]
        assert joined == single
    assert single != [sorted(b["index"].tolist()) for b in batches(n, 4, 1, 0, 0)], "epochs must reshuffle"


def test_uneven_dataset_is_padded_with_repeated_samples():
    """7 samples over 2 processes: each takes 4, one sample is seen twice (DistributedSampler)."""
    ranks = [[i for b in batches(7, 2, 2, r, 0) for i in b["index"].tolist()] for r in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4]
    assert sorted(set(ranks[0] + ranks[1])) == list(range(7))


def test_augmentation_of_a_sample_does_not_depend_on_the_process_that_draws_it():
    from monai.transforms import RandGaussianNoised

    noise = [RandGaussianNoised("x", prob=1.0, std=1.0)]
    single = {int(i): x for b in batches(8, 4, 1, 0, 2, noise) for i, x in zip(b["index"], b["x"])}
    split = {int(i): x for r in (0, 1) for b in batches(8, 4, 2, r, 2, noise) for i, x in zip(b["index"], b["x"])}
    assert single.keys() == split.keys() == set(range(8))
    assert all(torch.equal(single[i], split[i]) for i in single)
    assert not torch.equal(single[0], batches(8, 4, 1, 0, 3, noise)[0]["x"][0]), "epochs must reseed"


def test_sample_seeds_differ_by_seed_epoch_and_index():
    seeds = {L.sample_seed(s, e, i) for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**32 for s in seeds)


def test_torchrun_command_reruns_the_module_under_torchrun():
    command = D.torchrun_command(2, "segflow.cli", ["stage", "train", "--fold", "1"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "segflow.cli", "stage", "train", "--fold", "1"]


def test_failed_workers_raise_with_their_exit_code(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, returncode=3))
    with pytest.raises(StageFailed, match="exit code 3"):
        D.launch_torchrun(2, "segflow.cli", ["stage", "train", "--fold", "0"], cwd=tmp_path)
