"""The Trainer on a tiny fold: the device it trains on, what a checkpoint's fingerprint covers,
compiled and channels-last training saving plain weights, and the fold's output files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import (
    REPO,
    WANDB_TEST_GROUP,
    assert_same_up_to_float32_order,
    offline_run_header,
    offline_run_records,
    offline_runs,
)
from training_fixtures import NET_ARGS, PATCH, synthetic_cache, tiny_params, write_fold_project  # noqa: F401

from segflow.config import load_params
from segflow.data.cache import PreprocessedCache
from segflow.data.preprocess import Volume
from segflow.errors import StageFailed
from segflow.models.factory import build_network
from segflow.models.model_file import load_model_file, save_model_file
from segflow.paths import Paths
from segflow.tracking.runs import stage_run
from segflow.training.progress import TrainProgress
from segflow.training.summary import TrainSummary
from segflow.training.trainer import Trainer, resume_fingerprint, training_device
from segflow.training.usage import Stopwatch

# ---- train.device -----------------------------------------------------------------------------------


def test_cpu_is_cpu_even_where_a_gpu_is_present():
    assert training_device("cpu").type == "cpu"


def test_auto_takes_the_gpu_when_there_is_one():
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    """A GPU job whose node lost its GPU fails instead of training on CPU."""
    with pytest.raises(StageFailed, match="train.device is cuda but no CUDA GPU is visible"):
        training_device("cuda")


# ---- the resume fingerprint -------------------------------------------------------------------------

def cache_case(paths: Paths, case: str, value: float) -> None:
    image = np.full((1, 4, 4, 4), value, np.float32)
    PreprocessedCache(paths.preprocessed).write_case(case, Volume(image, np.zeros((1, 4, 4, 4), np.uint8), np.eye(4)),
                                                     [1.0, 1.0, 1.0])


def test_resume_fingerprint_changes_with_cached_data_params_and_code(tmp_path):
    """A checkpoint is resumed only by a run with the same params, cached data and training code."""
    params, paths, code = load_params(REPO / "params.yaml"), Paths(tmp_path), {"training/loop.py": "1"}
    cache_case(paths, "a", 0.0)
    before = resume_fingerprint(params, paths, ["a"], code)
    assert resume_fingerprint(params, paths, ["a"], code) == before
    assert resume_fingerprint(params, paths, ["a"], {"training/loop.py": "2"}) != before
    changed = params.model_copy(update={"train": params.train.model_copy(update={"lr": 0.1})})
    assert resume_fingerprint(changed, paths, ["a"], code) != before
    cache_case(paths, "a", 1.0)
    assert resume_fingerprint(params, paths, ["a"], code) != before


# ---- training on the tiny fold ----------------------------------------------------------------------

@pytest.fixture
def fold_project(tmp_path, synthetic_cache):
    project = tmp_path / "project"
    write_fold_project(project, synthetic_cache)
    return project


@pytest.mark.slow
def test_compiled_training_saves_plain_weights_in_a_loadable_model_file(fold_project):
    trainer = Trainer(tiny_params(compile=True), Paths(fold_project))
    assert trainer.model is not trainer.net  # trains through the compiled module
    state = trainer.fit()

    assert state.epoch == 1 and state.history[-1]["val_dice_mean"] is not None
    checkpoint = torch.load(trainer.checkpoint, map_location="cpu", weights_only=True)["model"]
    save_model_file(fold_project / "model.pt", trainer.model_file(preprocessing=None))
    model_file = load_model_file(fold_project / "model.pt")
    assert set(model_file.state_dicts[0]) == set(checkpoint) == set(build_network("UNet", NET_ARGS).state_dict())
    (net,) = model_file.build()  # strict load: no `_orig_mod.` keys
    assert net(torch.zeros(1, 1, *PATCH)).shape == (1, 3, *PATCH)


def test_channels_last_training_gives_a_model_file_that_loads_into_a_standard_network(fold_project):
    """train.channels_last changes the layout the network trains in, never what is saved."""
    trainer = Trainer(tiny_params(channels_last=True), Paths(fold_project))
    conv = next(m for m in trainer.net.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()
    trainer.fit()

    save_model_file(fold_project / "model.pt", trainer.model_file(preprocessing=None))
    (net,) = load_model_file(fold_project / "model.pt").build()
    image = torch.randn(1, 1, *PATCH)
    trainer.net.eval()
    with torch.no_grad():
        assert_same_up_to_float32_order(net(image), trainer.net(image))  # other layout, other rounding


def test_trainer_pins_loader_memory_only_for_a_gpu(fold_project):
    """Pinned (page-locked) batches make the copy to a GPU asynchronous; on CPU they only cost."""
    trainer = Trainer(tiny_params(), Paths(fold_project))
    assert trainer.device.type == "cpu" and trainer.loader.pin_memory is False


def test_a_fitted_fold_writes_history_model_file_and_a_summary_that_reads_back(fold_project, capsys):
    paths = Paths(fold_project)
    trainer = Trainer(tiny_params(epochs=2, val_every=2), paths)
    trainer.fit()
    console = capsys.readouterr().out
    assert "train: epoch 1/2 (50%, ETA " in console and "train: epoch 2/2 (100%, ETA 0s)" in console
    progress = TrainProgress.read(paths.train_progress_for(0))  # what the Prefect flow relays
    assert (progress.fold, progress.epoch, progress.epochs, progress.eta_seconds) == (0, 2, 2, 0.0)
    summary = trainer.write_outputs(preprocessing=None, clock=Stopwatch())

    assert TrainSummary.load(paths.train_summary_for(0)) == summary
    assert json.loads(paths.train_summary_for(0).read_text()) == {
        "epochs": 2, "val_dice_mean": trainer.state.history[-1]["val_dice_mean"],
        "train_loss": trainer.state.history[-1]["train_loss"], "seconds": summary.seconds,
        "seconds_this_run": summary.seconds_this_run, "seconds_per_epoch": summary.seconds_per_epoch,
        "peak_rss_mb": summary.peak_rss_mb, "device": "cpu", "fold": 0, "processes": 1}
    assert summary.seconds_per_epoch == round(summary.seconds / 2, 2)
    assert paths.history_for(0).read_text().count("\n") == 3  # header + 2 epochs
    assert paths.val_history_for(0).read_text().count("\n") == 2  # header + epoch 2 (val_every 2)
    assert load_model_file(paths.model_for(0)).info["epochs"] == 2


def stop_after_next_epoch(trainer: Trainer) -> None:
    """Make `trainer` stop like a Ctrl-C right after its next epoch is checkpointed and logged."""
    save_epoch = trainer.save_epoch

    def save_then_stop(record: dict) -> None:
        save_epoch(record)
        raise KeyboardInterrupt

    trainer.save_epoch = save_then_stop


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_an_interrupted_fold_resumes_in_its_own_wandb_run(fold_project, wandb_dir, monkeypatch):
    """One W&B run per fold however often it is resumed: same id, same group, epochs in order."""
    params, paths = tiny_params(epochs=3, val_every=3), Paths(fold_project)
    with pytest.raises(KeyboardInterrupt), stage_run("train", {}, fold=0) as tracker:
        trainer = Trainer(params, paths, tracker)
        stop_after_next_epoch(trainer)
        trainer.fit()
    monkeypatch.setenv("SEGFLOW_RUN_GROUP", "a-later-pipeline-run")  # e.g. the next `dvc repro`
    with stage_run("train", {}, fold=0) as tracker:
        resumed = Trainer(params, paths, tracker)
        resumed.fit()

    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3
    first, second = offline_runs(wandb_dir)  # offline, a continued run is a second folder of it
    headers = [offline_run_header(first), offline_run_header(second)]
    assert {(h["run_id"], h["run_group"], h["display_name"]) for h in headers} \
        == {(headers[0]["run_id"], WANDB_TEST_GROUP, "train-fold0")}
    assert resumed.state.tracked_run.run_id == headers[0]["run_id"]
    steps = [[r["history"]["step"]["num"] for r in offline_run_records(d) if r["type"] == "history"]
             for d in (first, second)]
    assert steps == [[1], [2, 3]]
