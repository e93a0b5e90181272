"""train stage under torchrun: 2 CPU processes (gloo) with the same seed and global batch train
the network one process trains.

Why the weights are compared in float64: DDP sums the ranks' gradients in another order than one
process sums a batch, so in float32 the two arms differ by rounding, and AdamW turns rounding into
real moves: its step is lr * m / (sqrt(v) + eps) per element, about +-lr whatever the gradient's
size, so an element whose gradient is mostly rounding noise (a bias an instance norm cancels, a
weight the norm makes scale-free) can move up to lr = 3e-3 per step in either arm. The largest
float32 weight difference is then a property of the CPU's kernels, not of segflow (1.7e-6 on an
Intel Xeon, 1.6e-4 on an AMD EPYC). In float64 the noise is about 1e-16 of a gradient, under
AdamW's eps (1e-8), so it moves an element by at most ~lr * 1e-8 per step: the arms must agree to
FLOAT64_WEIGHT_TOLERANCE, 3 orders below one real step (lr) and 4 orders above what was measured
(4e-11, AMD EPYC). The float32 arms, started the way users start them, check the launcher and that
training ran the same course."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, copy_project, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FLOAT64_STAGE = Path(__file__).with_name("float64_stage.py")
FLOAT64_WEIGHT_TOLERANCE = 1e-6
# An epoch's mean loss averages ~1e5 voxel terms per batch over 4 steps: the float32 arms' rounding
# differences (a few elements moved by up to lr, see above) shift it by < 1e-4 (measured), while a
# real divergence (other samples or augmentation) changes it by > 1e-2 (one step lowers it by ~0.1).
FLOAT32_LOSS_RTOL = 1e-3


@pytest.fixture(scope="module")
def augmented(preprocessed_template, tmp_path_factory) -> Path:
    """The tiny project with its preprocessed cache, shared by this module's tests (train never
    writes into the cache)."""
    return copy_project(preprocessed_template, tmp_path_factory.mktemp("ddp") / "project")


def set_train(project: Path, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train(project: Path, fold: int, nproc: int, fresh: bool = True, float64: bool = False) -> dict:
    """`segflow stage train --fold F` with `nproc` processes: its weights, summary, history. With
    `float64`, the stage runs with float64 as torch's default dtype, its workers started by torchrun
    here (the launcher itself is what the float32 arms check)."""
    from segflow.models.model_file import load_model_file

    if fresh:
        shutil.rmtree(project / "artifacts" / "checkpoints", ignore_errors=True)
    set_train(project, nproc_per_node=nproc, batch_size=2, epochs=2, val_every=2)  # Dice after epoch 2
    command = [str(BIN / "segflow")]
    if float64:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if nproc > 1 else []
        command = [sys.executable, *launcher, str(FLOAT64_STAGE)]
    done = run([*command, "stage", "train", "--fold", str(fold)], project)
    fold_dir = project / "artifacts" / "train" / f"fold_{fold}"
    bundle = load_model_file(fold_dir / "model.pt")
    return {"weights": bundle.state_dicts[0], "output": done.stdout + done.stderr,
            "summary": json.loads((fold_dir / "summary.json").read_text()),
            "history": (fold_dir / "history.csv").read_text().splitlines()}


def losses(arm: dict) -> list[float]:
    return [float(line.split(",")[1]) for line in arm["history"][1:]]  # history.csv: epoch,train_loss,...


def fold_with_even_training_set(project: Path) -> int:
    """A fold whose training cases split evenly over 2 processes: DistributedSampler pads an odd
    count with a repeated case, which one process never sees."""
    folds = json.loads((project / "artifacts" / "ingest" / "splits.json").read_text())["folds"]
    cached = json.loads((project / "artifacts" / "preprocessed" / "index.json").read_text())["cases"]
    counts = {f: sum(1 for case in cached if case in folds and folds[case] != f) for f in set(folds.values())}
    even = sorted(f for f, n in counts.items() if n % 2 == 0)
    assert even, f"no fold has an even number of training cases: {counts}"
    return even[0]


@pytest.fixture(scope="module")
def trained(augmented) -> dict:
    """One fold trained by one process, then (left in place) by two, as users start them (float32)."""
    fold = fold_with_even_training_set(augmented)
    return {"fold": fold, "single": train(augmented, fold, 1), "ddp": train(augmented, fold, 2)}


def test_two_processes_train_what_one_process_trains(augmented):
    fold = fold_with_even_training_set(augmented)
    single, ddp = (train(augmented, fold, nproc, float64=True) for nproc in (1, 2))
    assert ddp["summary"]["processes"] == 2 and single["summary"]["processes"] == 1
    assert all(v.dtype == torch.float64 for v in single["weights"].values())
    assert single["weights"].keys() == ddp["weights"].keys()
    diff = {k: float((single["weights"][k] - ddp["weights"][k]).abs().max()) for k in single["weights"]}
    worst = max(diff.values())
    assert worst < FLOAT64_WEIGHT_TOLERANCE, f"weights differ beyond float64 rounding: {diff}"
    assert losses(single) == pytest.approx(losses(ddp), abs=1e-5)  # history.csv rounds to 5 decimals
    assert single["summary"]["val_dice_mean"] == pytest.approx(ddp["summary"]["val_dice_mean"], abs=1e-5)
    print(f"DDP vs single (float64): max abs weight diff {worst:.2e}")


def test_segflow_starts_the_workers_under_torchrun_and_they_train_the_same_course(trained):
    single, ddp = trained["single"], trained["ddp"]
    assert "torch.distributed.run" in ddp["output"] and ddp["summary"]["processes"] == 2
    assert single["weights"].keys() == ddp["weights"].keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ddp["weights"])
    assert losses(ddp) == pytest.approx(losses(single), rel=FLOAT32_LOSS_RTOL)
    print(f"DDP vs single (float32): train losses {losses(ddp)} vs {losses(single)}")


def test_rerun_under_ddp_resumes_every_rank_from_the_checkpoint(augmented, trained):
    model = augmented / "artifacts" / "train" / f"fold_{trained['fold']}" / "model.pt"
    model.unlink()  # as if killed after the last checkpoint, before the model file was written

    rerun = train(augmented, trained["fold"], 2, fresh=False)

    assert rerun["output"].count("resuming after epoch 2") == 1  # rank 0 alone reports
    assert all(torch.equal(rerun["weights"][k], v) for k, v in trained["ddp"]["weights"].items())
    assert len(rerun["history"]) == 1 + 2


def test_global_batch_not_divisible_by_processes_is_refused(augmented):
    set_train(augmented, nproc_per_node=2, batch_size=3)
    done = run([str(BIN / "segflow"), "stage", "train", "--fold", "0"], augmented, check=False)
    assert done.returncode != 0
    assert "train.batch_size (3)" in done.stderr and "train.nproc_per_node" in done.stderr
    assert "torch.distributed.run" not in done.stdout  # refused before starting any worker
