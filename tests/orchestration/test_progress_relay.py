"""Relaying training progress: the folds' progress files, polled while the training runs, reach a
reporter (in a flow: a Prefect progress artifact and the flow run's log)."""

from __future__ import annotations

import os
import threading

import pytest

from segflow.orchestration.progress import TrainProgressRelay, polling
from segflow.paths import Paths
from segflow.training.progress import fold_progress


def write_epochs(paths: Paths, fold: int, done: int, epochs: int = 4, seconds: float = 30.0) -> None:
    path = paths.train_progress_for(fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": i + 1, "seconds": seconds} for i in range(done)]
    fold_progress(fold, epochs, history).save(path)


def test_progress_written_during_the_training_reaches_the_reporter_as_it_comes(tmp_path):
    paths, reports = Paths(tmp_path), []
    relay = TrainProgressRelay(paths, folds=[0, 1], epochs=4, report=lambda pct, line: reports.append((pct, line)))
    polled = threading.Event()

    def next_full_poll() -> None:  # the second poll after now read the files in full after now
        for _ in range(2):
            polled.clear()
            assert polled.wait(5)

    with polling(lambda: (relay.poll(), polled.set()), interval_s=0.01):
        for done in (1, 2):
            write_epochs(paths, fold=0, done=done)
            next_full_poll()  # while the "training" still runs
            assert reports[-1][0] == pytest.approx(100 * done / 8)
    relay.done()

    assert [pct for pct, _ in reports] == [12.5, 25.0, 100.0]  # each change once, then the end
    assert reports[1][1] == "train 25% (fold 0: 2/4), ETA 3m00s"  # 6 epochs left at 30 s


def test_an_earlier_runs_progress_file_is_not_reported(tmp_path):
    paths, reports = Paths(tmp_path), []
    write_epochs(paths, fold=0, done=4)
    os.utime(paths.train_progress_for(0), (0, 0))  # the file's own `updated` decides, not its mtime
    relay = TrainProgressRelay(paths, folds=[0], epochs=4, report=lambda *report: reports.append(report))
    relay.since += 1  # the earlier file was written before this relay started
    relay.poll()
    assert reports == []


def test_a_failing_poll_never_stops_the_work(caplog):
    def broken_poll():
        raise ConnectionError("prefect api unreachable")

    with polling(broken_poll, interval_s=0.01):
        finished = True
    assert finished and "prefect api unreachable" in caplog.text


FLOW_SCRIPT = """
import json, sys
from pathlib import Path

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
from prefect.testing.utilities import prefect_test_harness

from segflow.orchestration.progress import TrainProgressRelay, polling, prefect_reporter
from segflow.paths import Paths
from segflow.training.progress import fold_progress

paths = Paths(Path(sys.argv[1]))


@task
def train_task() -> None:
    relay = TrainProgressRelay(paths, folds=[0], epochs=4, report=prefect_reporter("train: epochs done"))
    with polling(relay.poll, interval_s=0.05):
        path = paths.train_progress_for(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        fold_progress(0, 4, [{"epoch": i + 1, "seconds": 30.0} for i in range(3)]).save(path)
    assert relay._last == ((0, 3),)


@flow
def pipeline():
    train_task()


with prefect_test_harness():  # a server of its own, stopped before the process ends
    state = pipeline(return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
print(json.dumps([[a.data, a.description] for a in mine]))
"""


@pytest.mark.slow
def test_a_flow_task_reports_progress_to_its_flow_run(tmp_path):
    """A real (ephemeral) Prefect run: the relay's reports land in the task run's progress artifact.
    In a process of its own: Prefect's in-process server leaves threads that break forked workers
    (DataLoader) of later tests in this process."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FLOW_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[75.0, "train 75% (fold 0: 3/4), ETA 30s"]]
