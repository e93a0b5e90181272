"""Prefect flow: one fold's training as a job of its own (the GPU pool's deployment).

The pipeline flow starts it with run_deployment and a request from
segflow.orchestration.handoff.train_job_request: commit, overrides, upstream dvc.lock entries,
DVC remote. The job rebuilds the workspace from git and the remote, runs `dvc repro` of train@K
(torchrun inside when train.nproc_per_node > 1), pushes the outputs and returns train@K's
dvc.lock entry. Orchestration only; the steps are in segflow.orchestration.handoff.
"""

from __future__ import annotations

import segflow.orchestration.flow_env  # noqa: F401  (first: segflow's environment before Prefect's settings)

import os
import shutil
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task

from segflow.config import load_params
from segflow.orchestration import handoff
from segflow.orchestration.limits import TRAIN_TIMEOUT_S, network_retries
from segflow.orchestration.progress import POLL_S as PROGRESS_POLL_S
from segflow.orchestration.progress import TrainProgressRelay, polling, prefect_reporter
from segflow.paths import Paths

NETWORK_RETRIES = network_retries()


@task(name="checkout", **NETWORK_RETRIES)
def check_out(request: dict, workdir: Path) -> Path:
    return handoff.check_out(request, workdir)


@task(name="pull-train-inputs", **NETWORK_RETRIES)
def pull_inputs(workdir: Path) -> None:
    handoff.pull_train_inputs(workdir)


@task(name="train", task_run_name="train@{fold}")
def train(workdir: Path, fold: int) -> None:
    """train@fold, relaying its progress to this flow run while it trains."""
    relay = TrainProgressRelay(Paths(workdir), [fold], load_params(workdir / "params.yaml").train.epochs,
                               prefect_reporter(f"train@{fold}: epochs done"))
    with polling(relay.poll, PROGRESS_POLL_S):
        handoff.run_train(workdir, fold, timeout_s=TRAIN_TIMEOUT_S)
    relay.done()


@task(name="push-train-outputs", **NETWORK_RETRIES)
def push_outputs(workdir: Path, fold: int) -> dict:
    return handoff.push_train_outputs(workdir, fold)


# Results persist so the pipeline flow (another process, maybe another pod) can read them: on a
# cluster point PREFECT_DEFAULT_RESULT_STORAGE_BLOCK at shared storage (see infra/README.md).
@flow(name="segflow-train-job", persist_result=True, log_prints=True)
def segflow_train_job(request: dict, fold: int = 0) -> dict:
    """Train fold `fold` of the pipeline state described by `request`; returns train@fold's lock entry."""
    scratch = Path(os.environ.get("SEGFLOW_JOB_DIR") or tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix=f"segflow-train-{fold}-", dir=scratch)) / "workspace"
    try:
        check_out(request, workdir)
        pull_inputs(workdir)
        train(workdir, fold)
        result = push_outputs(workdir, fold)
    finally:
        shutil.rmtree(workdir.parent, ignore_errors=True)
    get_run_logger().info("%s done: %s", result["stage"], result["summary"])
    return result
