"""Prefect flows: the GPU pool's jobs. One fold's training (`segflow-train-job`), and the budget
stage (`segflow-budget-job`), which times training steps and so must run on the device that trains.

The pipeline flow starts them with run_deployment and a request from
segflow.orchestration.handoff.job_request: commit, overrides, upstream dvc.lock entries, DVC
remote. A job rebuilds the workspace from git and the remote, runs `dvc repro` of its one stage
(torchrun inside train@K when train.nproc_per_node > 1), pushes the outputs and returns the
stage's dvc.lock entry. Orchestration only; the steps are in segflow.orchestration.handoff.
"""

from __future__ import annotations

import segflow.orchestration.flow_env  # noqa: F401  (first: segflow's environment before Prefect's settings)

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, task

from segflow.orchestration import handoff
from segflow.orchestration.limits import STAGE_TIMEOUT_S, TRAIN_TIMEOUT_S, network_retries
from segflow.orchestration.progress import POLL_S as PROGRESS_POLL_S
from segflow.orchestration.progress import TrainProgressRelay, planned_epochs_of, polling, prefect_reporter
from segflow.paths import Paths

NETWORK_RETRIES = network_retries()


@task(name="checkout", **NETWORK_RETRIES)
def check_out(request: dict, workdir: Path) -> Path:
    return handoff.check_out(request, workdir)


@task(name="pull-inputs", **NETWORK_RETRIES)
def pull_inputs(workdir: Path, request: dict) -> None:
    handoff.pull_job_inputs(workdir, request)


@task(name="budget")
def budget(workdir: Path) -> None:
    handoff.run_job_stage(workdir, handoff.BUDGET, timeout_s=STAGE_TIMEOUT_S)


@task(name="train", task_run_name="train@{fold}")
def train(workdir: Path, fold: int) -> None:
    """train@fold, relaying its progress (the planned epochs) to this flow run while it trains."""
    relay = TrainProgressRelay(Paths(workdir), [fold], planned_epochs_of(workdir),
                               prefect_reporter(f"train@{fold}: epochs done"))
    with polling(relay.poll, PROGRESS_POLL_S):
        handoff.run_job_stage(workdir, handoff.train_stage(fold), timeout_s=TRAIN_TIMEOUT_S)
    relay.done()


@task(name="push-outputs", task_run_name="push {stage}", **NETWORK_RETRIES)
def push_outputs(workdir: Path, stage: str, summary: Path) -> dict:
    return handoff.push_job_outputs(workdir, stage, summary)


@contextmanager
def job_workspace(request: dict, name: str) -> Iterator[Path]:
    """The parent's workspace rebuilt in a scratch folder (removed afterwards), inputs pulled."""
    scratch = Path(os.environ.get("SEGFLOW_JOB_DIR") or tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix=f"segflow-{name}-", dir=scratch)) / "workspace"
    try:
        check_out(request, workdir)
        pull_inputs(workdir, request)
        yield workdir
    finally:
        shutil.rmtree(workdir.parent, ignore_errors=True)


# Results persist so the pipeline flow (another process, maybe another pod) can read them: on a
# cluster point PREFECT_DEFAULT_RESULT_STORAGE_BLOCK at shared storage (see infra/README.md).
@flow(name="segflow-train-job", persist_result=True, log_prints=True)
def segflow_train_job(request: dict, fold: int = 0) -> dict:
    """Train fold `fold` of the pipeline state described by `request`; returns train@fold's lock entry."""
    with job_workspace(request, f"train-{fold}") as workdir:
        train(workdir, fold)
        result = push_outputs(workdir, handoff.train_stage(fold), Paths(workdir).train_summary_for(fold))
    get_run_logger().info("%s done: %s", result["stage"], result["summary"])
    return result


@flow(name="segflow-budget-job", persist_result=True, log_prints=True)
def segflow_budget_job(request: dict) -> dict:
    """Run the budget stage of the pipeline state described by `request` on this job's device;
    returns its dvc.lock entry and the decision (training.json)."""
    with job_workspace(request, "budget") as workdir:
        budget(workdir)
        result = push_outputs(workdir, handoff.BUDGET, Paths(workdir).training_plan)
    get_run_logger().info("budget done: %s", result["summary"].get("budget"))
    return result
