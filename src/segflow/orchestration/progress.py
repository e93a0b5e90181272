"""Relaying training progress to an orchestrator while `dvc repro train` runs.

The trainer writes each fold's progress file (`segflow.training.progress`); a flow task polls
those files in a background thread and hands a percentage and a line to a reporter (a Prefect
progress artifact and the flow run's log), so the flow run shows progress, not only the end.
Progress is a courtesy: a failing poll is logged and never stops the training."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from segflow.paths import Paths
from segflow.training.progress import TrainProgress, format_duration, overall_progress

log = logging.getLogger(__name__)

Reporter = Callable[[float, str], None]  # (percent done, line for people)
POLL_S = 10.0  # a training epoch takes seconds to minutes; the flow run need not hear more often


def planned_epochs_of(root: Path) -> int:
    """Each model's epochs in the project at `root`: the budget stage's decision (it has run
    before training), else train.epochs. The relay's total for one fold."""
    from segflow.config import load_params
    from segflow.planning.configurations import planned_epochs
    from segflow.planning.plan import TrainingPlan

    return planned_epochs(TrainingPlan.load(Paths(root).training_plan), load_params(root / "params.yaml").train.epochs)


class TrainProgressRelay:
    """Reads the progress files of `folds` and reports overall progress whenever it changed.

    Files older than the relay (an earlier run's) are ignored, so a fold DVC skips reports nothing."""

    def __init__(self, paths: Paths, folds: Sequence[int], epochs: int, report: Reporter):
        self.paths, self.folds, self.epochs, self.report = paths, list(folds), epochs, report
        self.since = time.time()
        self._last: tuple | None = None

    def current(self) -> list[TrainProgress | None]:
        """Each fold's progress written since the relay started (None for the others)."""
        found = [TrainProgress.read(self.paths.train_progress_for(fold)) for fold in self.folds]
        return [p if p is not None and p.updated >= self.since else None for p in found]

    def poll(self) -> None:
        folds = self.current()
        state = tuple((p.fold, p.epoch) for p in folds if p is not None)
        if not state or state == self._last:
            return
        self._last = state
        fraction, left = overall_progress(folds, self.epochs)
        running = " ".join(f"fold {p.fold}: {p.epoch}/{p.epochs}" for p in folds if p is not None)
        self.report(100 * fraction, f"train {fraction:.0%} ({running}), ETA {format_duration(left)}")

    def done(self) -> None:
        """The training finished (or DVC found it up to date): 100%."""
        self.report(100.0, "train done")


def prefect_reporter(description: str) -> Reporter:
    """A reporter into a progress artifact of the current Prefect task run, plus a line in its log."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    artifact = create_progress_artifact(0.0, description=description)
    logger = get_run_logger()

    def report(percent: float, line: str) -> None:
        update_progress_artifact(artifact, percent, description=line)
        logger.info(line)

    return report


@contextmanager
def polling(poll: Callable[[], None], interval_s: float) -> Iterator[None]:
    """Call `poll` every `interval_s` in a background thread while the body runs, then once more.

    The thread runs in a copy of the caller's context, so a poll that reports to Prefect finds the
    task run the body runs in."""
    stop = threading.Event()
    context = contextvars.copy_context()

    def loop() -> None:
        while not stop.wait(interval_s):
            context.run(_poll_safely, poll)

    thread = threading.Thread(target=loop, name="segflow-progress-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _poll_safely(poll)


def _poll_safely(poll: Callable[[], None]) -> None:
    try:
        poll()
    except Exception as exc:  # noqa: BLE001 - progress must never stop the work it describes
        log.warning("progress relay: %s: %s", type(exc).__name__, exc)
