"""A fold's progress file: written from the measured epochs, read back by a watcher, combined over folds."""

from __future__ import annotations

import pytest

from segflow.training.progress import TrainProgress, fold_progress, format_duration, overall_progress


def epochs_taking(*seconds: float) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": 0.5, "seconds": s} for i, s in enumerate(seconds)]


def test_progress_reads_back_with_an_eta_from_the_measured_epochs(tmp_path):
    progress = fold_progress(fold=1, epochs=40, history=epochs_taking(9.0, 11.0, 10.0))
    path = tmp_path / "checkpoints" / "fold_1" / "progress.json"
    path.parent.mkdir(parents=True)
    progress.save(path)

    assert TrainProgress.read(path) == progress
    assert (progress.epoch, progress.seconds_per_epoch, progress.eta_seconds) == (3, 10.0, 370.0)
    assert progress.line() == "epoch 3/40 (8%, ETA 6m10s)"


def test_before_the_first_epoch_the_eta_is_unknown():
    progress = fold_progress(fold=0, epochs=5, history=[])
    assert progress.eta_seconds is None and progress.line() == "epoch 0/5 (0%, ETA ?)"


@pytest.mark.parametrize("content", [None, "", '{"fold": 0, "epo', '{"fold": 0}'])
def test_a_missing_or_half_written_file_reads_as_no_progress(tmp_path, content):
    path = tmp_path / "progress.json"
    if content is not None:
        path.write_text(content)
    assert TrainProgress.read(path) is None


def test_overall_progress_counts_unstarted_folds_at_the_pace_of_the_running_ones():
    running = fold_progress(fold=0, epochs=10, history=epochs_taking(*[6.0] * 4))
    fraction, left = overall_progress([running, None], epochs=10)
    assert fraction == pytest.approx(4 / 20)
    assert left == pytest.approx(16 * 6.0)
    assert overall_progress([None, None], epochs=10) == (0.0, None)


@pytest.mark.parametrize(("seconds", "text"), [(None, "?"), (0.4, "0s"), (45, "45s"), (130, "2m10s"),
                                                (3599.6, "1h00m"), (11100, "3h05m")])
def test_durations_read_at_a_glance(seconds, text):
    assert format_duration(seconds) == text
