"""train stage under torchrun: 2 CPU processes (gloo) with the same seed and global batch train
the network one process trains, up to float summation order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Per-process gradients are summed by DDP in another order than one process sums a batch (and
# each worker runs 1 thread instead of 2), so weights agree to float rounding (~1e-7 measured
# after 2 epochs), not bit for bit.
WEIGHT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def augmented(tiny_project_template, tmp_path_factory) -> Path:
    """The tiny project up to the preprocessed cache (shared: train never writes into it)."""
    project = tmp_path_factory.mktemp("ddp") / "project"
    shutil.copytree(tiny_project_template, project, symlinks=True)
    run([str(BIN / "dvc"), "repro", "augment"], project)
    return project


def set_train(project: Path, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train(project: Path, fold: int, nproc: int, fresh: bool = True) -> dict:
    """`segflow stage train --fold F` with `nproc` processes: its weights, summary, history."""
    from segflow.models.bundle import load_bundle

    if fresh:
        shutil.rmtree(project / "artifacts" / "checkpoints", ignore_errors=True)
    set_train(project, nproc_per_node=nproc, batch_size=2, epochs=2, val_every=2)  # Dice after epoch 2
    done = run([str(BIN / "segflow"), "stage", "train", "--fold", str(fold)], project)
    fold_dir = project / "artifacts" / "train" / f"fold_{fold}"
    bundle = load_bundle(fold_dir / "model.pt")
    return {"weights": bundle.state_dicts[0], "net": bundle.build()[0], "output": done.stdout + done.stderr,
            "summary": json.loads((fold_dir / "summary.json").read_text()),
            "history": (fold_dir / "history.csv").read_text().splitlines()}


def norm_cancelled_biases(net: torch.nn.Module) -> set[str]:
    """Biases of convolutions that feed an instance norm. The norm subtracts them again, so their
    gradient is zero up to rounding noise, and AdamW's normalised step turns that noise into
    moves of about +-lr that differ between any two summation orders without changing the output."""
    from monai.networks.blocks import Convolution

    return {f"{name}.conv.bias" for name, module in net.named_modules()
            if isinstance(module, Convolution) and hasattr(module, "adn")
            and any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in module.adn.modules())}


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
    """One fold trained by one process, then (left in place) by two."""
    fold = fold_with_even_training_set(augmented)
    return {"fold": fold, "single": train(augmented, fold, 1), "ddp": train(augmented, fold, 2)}


def test_two_processes_train_what_one_process_trains(trained):
    single, ddp = trained["single"], trained["ddp"]
    assert "torch.distributed.run" in ddp["output"] and ddp["summary"]["processes"] == 2
    assert single["weights"].keys() == ddp["weights"].keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ddp["weights"])
    cancelled = norm_cancelled_biases(single["net"])
    assert cancelled and cancelled < single["weights"].keys()
    diff = {k: float((single["weights"][k] - ddp["weights"][k]).abs().max()) for k in single["weights"]}
    worst = max(v for k, v in diff.items() if k not in cancelled)
    assert worst < WEIGHT_TOLERANCE, f"weights differ beyond float rounding: {diff}"
    image = torch.randn(1, 1, 32, 48, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the cancelled biases change nothing the network computes
        assert torch.allclose(single["net"](image), ddp["net"](image), atol=1e-4)
    assert single["summary"]["val_dice_mean"] == pytest.approx(ddp["summary"]["val_dice_mean"], abs=1e-4)
    for one, two in zip(single["history"][1:], ddp["history"][1:], strict=True):
        assert float(one.split(",")[1]) == pytest.approx(float(two.split(",")[1]), abs=1e-4)  # train_loss
    print(f"DDP vs single: max abs weight diff {worst:.2e} (norm-cancelled biases: "
          f"{max(diff[k] for k in cancelled):.2e}), val Dice {single['summary']['val_dice_mean']} vs "
          f"{ddp['summary']['val_dice_mean']}")


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
