"""Prefect flow: the pipeline's DVC stages as tasks, the train step in-process or as GPU jobs.

Orchestration only: stage logic lives in src/segflow, the git/DVC handoff in
segflow.orchestration. Every stage runs through `dvc repro`, so caching is exactly DVC's.

Run switches (flow parameters), never a second copy of params.yaml:
  dispatch         False: train here. True: one `segflow-train-job` run per fold on the GPU pool
                   (run_deployment), handed off through git and the DVC remote; with a
                   train.budget, the budget stage first runs there too (`segflow-budget-job`), so
                   the epochs are measured on the device that trains.
  overrides        params.yaml overrides as `dvc exp run -S` takes them: ["train.epochs=2"].
  rev              git revision to check out first (refused when tracked files are modified).

    python flows/pipeline.py [--project-dir .] [--dispatch] [-S train.epochs=2] [--rev main]
"""

from __future__ import annotations

import segflow.orchestration.flow_env  # noqa: F401  (first: segflow's environment before Prefect's settings)

import argparse
import json
import os
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from segflow.config import load_params
from segflow.env import PREFECT_STARTUP_TIMEOUT_SETTING
from segflow.orchestration import handoff
from segflow.orchestration.api_server import ephemeral_server_failure
from segflow.orchestration.limits import STAGE_TIMEOUT_S, TRAIN_TIMEOUT_S, network_retries
from segflow.orchestration.progress import POLL_S as PROGRESS_POLL_S
from segflow.orchestration.progress import TrainProgressRelay, planned_epochs_of, polling, prefect_reporter
from segflow.orchestration.workspace import file_restored, require_committed, workspace_lock
from segflow.overrides import apply_overrides
from segflow.paths import Paths
from segflow.processes.commands import CommandFailed, dvc, run_command
from segflow.stages import STAGES

TRAIN_DEPLOYMENT = "segflow-train-job/gpu"
BUDGET_DEPLOYMENT = "segflow-budget-job/gpu"
AFTER_TRAIN = STAGES[STAGES.index(handoff.TRAIN) + 1:]
NETWORK_RETRIES = network_retries()


class JobFailed(RuntimeError):
    """A dispatched job did not complete; the message carries the job's own error."""


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, root: Path, group: str, upstream: bool = False) -> str:
    """`dvc repro <stage>`: runs it only if its deps or params changed, else a no-op."""
    return repro(stage, root, group, upstream)


@task(name="dvc-stage", task_run_name="train")
def train_here(root: Path, group: str) -> str:
    """`dvc repro train` (its folds one after another), relaying their progress to the flow run."""
    folds = load_params(root / "params.yaml").split.folds
    relay = TrainProgressRelay(Paths(root), folds, planned_epochs_of(root),
                               prefect_reporter("train: epochs done over all folds"))
    with polling(relay.poll, PROGRESS_POLL_S):
        output = repro(handoff.TRAIN, root, group)
    relay.done()
    return output


def repro(stage: str, root: Path, group: str, upstream: bool = False) -> str:
    """`dvc repro <stage>` logging into W&B group `group`; its output.

    The flow runs the stages in DAG order, so when a stage's turn comes its upstream stages are up
    to date: `--single-item` spares DVC re-checking them (about 0.5 s per stage, measured by
    bench/flow_overhead.py). `upstream=True` (the first stage) checks them, e.g. the data.dvc source."""
    args = ["repro", stage] if upstream else ["repro", "--single-item", stage]
    try:
        output = dvc(root, *args, env={"SEGFLOW_RUN_GROUP": group}, timeout_s=STAGE_TIMEOUT_S)
    except CommandFailed as exc:
        raise RuntimeError(f"stage {stage} failed: {exc}") from None
    get_run_logger().info("stage %s done:\n%s", stage, output[-4000:])
    return output


@task(name="checkout", task_run_name="checkout {rev}", **NETWORK_RETRIES)
def check_out_rev(root: Path, rev: str) -> None:
    require_committed(root)
    run_command(["git", "checkout", "--quiet", rev], root, f"git checkout {rev}")


@task(name="apply-overrides")
def set_params(root: Path, overrides: list[str]) -> None:
    apply_overrides(root / "params.yaml", overrides)
    get_run_logger().info("params.yaml overrides: %s", " ".join(overrides))


@task(name="restore-workspace", **NETWORK_RETRIES)
def restore_workspace(root: Path) -> str:
    """A fresh clone (a worker's checkout): pull the data and cached outputs, else fetch the data."""
    data = root / Path(load_params(root / "params.yaml").data.root).parts[0]
    if data.exists():
        return "data present"
    if handoff.default_remote_url(root):
        dvc(root, "pull", "--quiet", "--allow-missing")
    if not data.exists():
        run_command([sys.executable, "-m", "segflow.cli", "fetch-data"], root, "segflow fetch-data")
    return "restored"


@task(name="push-job-inputs", task_run_name="push {stage}'s inputs", **NETWORK_RETRIES)
def push_job_inputs(root: Path, stage: str) -> None:
    handoff.push_job_inputs(root, stage)


@task(name="job", task_run_name="{name} job")
def dispatch_job(deployment: str, parameters: dict, job_variables: dict, name: str) -> dict:
    """One job on the GPU pool; its failure fails this task with the job's own error.
    (run_deployment's own timeout bounds the wait: a task timeout cannot stop a worker thread.)"""
    job = run_deployment(deployment, parameters=parameters, job_variables=job_variables,
                         flow_run_name=f"{name}-{parameters['request']['rev'][:8]}", timeout=TRAIN_TIMEOUT_S)
    state = job.state
    if state is None or not state.is_final():
        raise JobFailed(f"{name} job {job.name} ({job.id}) did not finish within "
                        f"{TRAIN_TIMEOUT_S} s (state {state.name if state else 'unknown'})")
    if not state.is_completed():
        raise JobFailed(f"{name} job {job.name} ({job.id}) ended {state.name}: {state.message}")
    return state.result()


@task(name="adopt-job-result", task_run_name="adopt {result[stage]}", **NETWORK_RETRIES)
def adopt_job_result(root: Path, result: dict) -> None:
    handoff.adopt_job_result(root, result)


@task(name="push-results", **NETWORK_RETRIES)
def push_results(root: Path) -> str:
    """Outputs and DVC's run-cache to the remote (so `dvc repro --pull` in another clone restores
    stages that did not change instead of rerunning them)."""
    if not handoff.default_remote_url(root):
        return "no DVC remote configured: results stay local"
    dvc(root, "push", "--quiet", "--run-cache")
    return "pushed"


@task(name="record-lock")
def record_lock(root: Path) -> None:
    """The run's dvc.lock as a Prefect artifact: a worker's clone is gone after the run, and with
    this lock `dvc pull` fetches exactly this run's outputs from the remote."""
    lock = (root / handoff.LOCK_FILE).read_text()
    create_markdown_artifact(key="segflow-dvc-lock", markdown=f"```yaml\n{lock}```",
                             description=f"dvc.lock of {root} after this run")


@task(name="sync-wandb", **NETWORK_RETRIES)
def sync_wandb() -> str:
    """Upload offline W&B runs (for workers that log offline and sync after the run)."""
    wandb_dir = Path(os.environ["WANDB_DIR"]) / "wandb"
    return run_command([sys.executable, "-m", "wandb", "sync", "--sync-all"], wandb_dir, "wandb sync")


def budget_on_the_pool(root: Path, overrides: list[str], deployment: str) -> None:
    """The budget stage as a job where training runs, its decision adopted here."""
    push_job_inputs(root, handoff.BUDGET)
    request = handoff.job_request(root, overrides, handoff.BUDGET)
    result = dispatch_job(deployment, {"request": request}, handoff.budget_job_variables(), handoff.BUDGET)
    adopt_job_result(root, result)
    get_run_logger().info("budget measured on the pool: %s", result["summary"].get("budget"))


def train_here_or_dispatch(root: Path, group: str, dispatch: bool, overrides: list[str], deployment: str) -> None:
    if not dispatch:
        train_here(root, group)
        return
    push_job_inputs(root, handoff.TRAIN)
    request = handoff.job_request(root, overrides, handoff.TRAIN)
    job_variables = handoff.train_job_variables(root)
    folds = load_params(root / "params.yaml").split.folds
    jobs = [dispatch_job.submit(deployment, {"request": request, "fold": fold}, job_variables, handoff.train_stage(fold))
            for fold in folds]  # in parallel
    for job in jobs:
        adopt_job_result(root, job.result())


# The metrics it returns persist, so a scheduled run's outcome can be read back through the API.
@flow(name="segflow-pipeline", log_prints=True, persist_result=True)
def segflow_pipeline(project_dir: str = ".", dispatch: bool = False, overrides: list[str] | None = None,
                     rev: str | None = None, train_deployment: str = TRAIN_DEPLOYMENT,
                     budget_deployment: str = BUDGET_DEPLOYMENT,
                     wait_for_workspace_s: float = 3600, sync_wandb_runs: bool = False) -> dict:
    """Run the pipeline in `project_dir`; returns the evaluation metrics."""
    root = Path(project_dir).resolve()
    overrides = list(overrides or [])
    logger = get_run_logger()
    run_name = f"flow run {flow_run.get_name() or 'local'} ({flow_run.get_id() or '-'})"
    group = os.environ.get("SEGFLOW_RUN_GROUP") or f"prefect-{flow_run.get_name() or 'local'}"
    # One run per workspace: a second one waits here (and says for whom), then gives up clearly.
    with workspace_lock(root, run_name, wait_for_workspace_s, wait=logger.warning):
        if rev:
            check_out_rev(root, rev)
        if dispatch:
            require_committed(root)  # the job checks out HEAD: it must be what runs here
        with file_restored(root / "params.yaml"):  # overrides are this run's: the user's file comes back
            set_params(root, overrides)
            if dispatch:
                handoff.check_dispatchable(root)
            restore_workspace(root)
            for i, stage in enumerate(handoff.BEFORE_BUDGET):
                run_stage(stage, root, group, upstream=i == 0)
            if dispatch and handoff.budget_runs_as_job(root):
                budget_on_the_pool(root, overrides, budget_deployment)
            else:
                run_stage(handoff.BUDGET, root, group)
            train_here_or_dispatch(root, group, dispatch, overrides, train_deployment)
            for stage in AFTER_TRAIN:
                run_stage(stage, root, group)
        push_results(root)
        record_lock(root)
        if sync_wandb_runs:
            sync_wandb()
    metrics = Paths(root).metrics
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--dispatch", action="store_true", help=f"train as {TRAIN_DEPLOYMENT} runs")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rev", default=None)
    args = parser.parse_args()
    try:
        state = segflow_pipeline(project_dir=args.project_dir, dispatch=args.dispatch, overrides=args.overrides,
                                 rev=args.rev, return_state=True)
    except RuntimeError as exc:  # Prefect's temporary API server did not come up: say what to do
        message = ephemeral_server_failure(exc, os.environ.get(PREFECT_STARTUP_TIMEOUT_SETTING))
        if message is None:
            raise
        print(f"segflow-pipeline did not start: {message}", file=sys.stderr)
        return 1
    print(f"segflow-pipeline finished in state {state.name}")
    if not state.is_completed():
        print(f"segflow-pipeline failed: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
