"""The cluster path with real parts: `prefect server start` on 127.0.0.1, the work pools from
infra/, `prefect deploy --all` from prefect.yaml, a process worker for the pipeline's CPU pool and
another standing in for the GPU pool. The pipeline runs with dispatch on and a train.budget, so
its budget stage is a `segflow-budget-job` flow run and its train step a `segflow-train-job` run per
fold, handed off through git and a DVC remote (a folder here).

Only the Kubernetes cluster is out of reach: its pool is created from the template and its job
manifest rendered, never run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, REPO, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RUN_TIMEOUT_S = 900
# Two folds: two train jobs at once, after one budget job (a budget the tiny project can train;
# 2d left out). The stand-in "GPU" worker is this CPU.
DISPATCH_OVERRIDES = ["train.device=cpu", "split.folds=[0,1]", "train.budget=10s", "train.budget_min_epochs=1",
                      "train.budget_converged_epochs=1000"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrefectStack:
    """A Prefect server on 127.0.0.1 and the workers started against it; stop() ends them all."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        log = self.home / f"{name}.log"
        process = subprocess.Popen([str(BIN / "prefect"), *args], cwd=cwd or self.home, env=self.env,
                                   stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((process, log))
        return process

    def start_server(self) -> None:
        self.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"prefect server did not become healthy:\n{self.logs()}")

    def cli(self, *args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None):
        return run([str(BIN / "prefect"), *args], cwd or self.home, check=check, env={**self.env, **(env or {})})

    def python(self, code: str) -> str:
        return run([str(BIN / "python"), "-c", code], self.home, env=self.env).stdout

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.processes if log.exists())

    def stop(self) -> None:
        """SIGTERM every process group started (workers' flow runs included), then SIGKILL."""
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process, _ in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


READ_RUNS = """
import json
from prefect import get_client
from prefect.client.schemas.sorting import FlowRunSort
with get_client(sync_client=True) as client:
    flows = {f.id: f.name for f in client.read_flows()}
    runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_ASC)
    print(json.dumps([{"id": str(r.id), "name": r.name, "flow": flows[r.flow_id], "state": r.state.name,
                       "message": r.state.message, "parameters": r.parameters,
                       "end_time": r.end_time.isoformat() if r.end_time else None} for r in runs]))
"""

STATES_OF = """
import json, uuid
from prefect import get_client
with get_client(sync_client=True) as client:
    states = client.read_flow_run_states(uuid.UUID({run_id!r}))
    print(json.dumps([(s.name, s.timestamp.isoformat()) for s in states]))
"""

RESULT_OF = """
import json, uuid
from prefect import get_client
with get_client(sync_client=True) as client:
    print(json.dumps(client.read_flow_run(uuid.UUID({run_id!r})).state.result()))
"""


def flow_runs(stack: PrefectStack) -> list[dict]:
    return json.loads(stack.python(READ_RUNS))


def start_pipeline(stack: PrefectStack, project: Path, overrides: list[str]) -> str:
    """`prefect deployment run` the nightly pipeline with dispatch on; returns the flow run id."""
    done = stack.cli("deployment", "run", "segflow-pipeline/nightly", "--param", "dispatch=true",
                     "--param", f"overrides={json.dumps(overrides)}", cwd=project)
    return done.stdout.split("UUID:")[1].split()[0]


def wait_for(stack: PrefectStack, run_id: str, final=("Completed", "Failed", "Crashed", "Cancelled")) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        found = next(r for r in flow_runs(stack) if r["id"] == run_id)
        if found["state"] in final:
            return found
        time.sleep(3)
    raise AssertionError(f"flow run {run_id} did not finish in {RUN_TIMEOUT_S} s:\n{stack.logs()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = PrefectStack(tmp_path_factory.mktemp("prefect"))
    try:
        stack.start_server()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def deployed(stack, tiny_project_template, tmp_path_factory) -> Path:
    """The tiny project as a cluster sees it: a git repo with a DVC remote holding its data,
    pools from infra/, deployments from prefect.yaml, a worker per pool."""
    project = tmp_path_factory.mktemp("origin") / "project"
    run(["cp", "-a", str(tiny_project_template), str(project)], project.parent)
    remote = project.parent / "dvc-remote"
    run([str(BIN / "dvc"), "remote", "add", "-d", "storage", str(remote)], project)
    run(["git", "commit", "-qam", "DVC remote"], project)
    run([str(BIN / "dvc"), "push", "--quiet"], project)
    process_template = REPO / "infra/prefect/process-pool.json"
    for pool in ("segflow-cpu", "segflow-gpu"):  # segflow-gpu: a process pool stands in for Kubernetes
        stack.cli("work-pool", "create", pool, "--type", "process", "--base-job-template", str(process_template))
    branch = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], project).stdout.strip()
    stack.cli("--no-prompt", "deploy", "--all", cwd=project,
              env={"SEGFLOW_GIT_URL": str(project), "SEGFLOW_GIT_BRANCH": branch})
    for pool in ("segflow-cpu", "segflow-gpu"):
        stack.start(f"worker-{pool}", "worker", "start", "--pool", pool, "--type", "process")
    return project


def test_deploy_registers_the_nightly_schedule_and_the_job_deployments(stack, deployed):
    nightly = stack.cli("deployment", "inspect", "segflow-pipeline/nightly").stdout
    assert "'cron': '0 2 * * *'" in nightly
    # The server's scheduler turns the cron into upcoming runs (it did not with SQLAlchemy 2.1).
    deadline = time.monotonic() + 60
    while not [r for r in flow_runs(stack) if r["state"] == "Scheduled" and r["flow"] == "segflow-pipeline"]:
        assert time.monotonic() < deadline, f"no scheduled nightly run:\n{stack.logs()}"
        time.sleep(2)
    assert "'collision_strategy': 'ENQUEUE'" in nightly  # a second run waits for the first
    assert "'dispatch': True" in nightly
    for job in ("segflow-train-job/gpu", "segflow-budget-job/gpu"):
        assert "'work_pool_name': 'segflow-gpu'" in stack.cli("deployment", "inspect", job).stdout


def test_kubernetes_gpu_pool_is_created_from_the_infra_template(stack):
    template = REPO / "infra/prefect/kubernetes-gpu-pool.json"
    stack.cli("work-pool", "create", "segflow-gpu-kubernetes", "--type", "kubernetes",
              "--base-job-template", str(template))
    inspected = stack.cli("work-pool", "inspect", "segflow-gpu-kubernetes").stdout
    assert "nvidia.com/gpu" in inspected
    assert "type='kubernetes'" in inspected or "'kubernetes'" in inspected


def test_dispatched_pipeline_matches_a_plain_dvc_repro(stack, deployed, preprocessed_project):
    """The plain run starts from the shared preprocessed project: its stages up to the cache are
    DVC cache hits of the same data and params, so only train, evaluate and register run there."""
    tiny_project = preprocessed_project
    first = start_pipeline(stack, deployed, DISPATCH_OVERRIDES)
    # The second run is started once the first holds the deployment's slot: started together,
    # either may reach the worker first (seen on a busy 2-core machine), and the other one waits.
    wait_for(stack, first, final=("Running", "Completed", "Failed", "Crashed", "Cancelled"))
    second = start_pipeline(stack, deployed, DISPATCH_OVERRIDES)
    finished = wait_for(stack, first)
    assert finished["state"] == "Completed", f"{finished['message']}\n{stack.logs()}"
    # The deployment's concurrency limit held the second run back while the first one ran.
    history = json.loads(stack.python(STATES_OF.format(run_id=second)))
    cancel = stack.cli("flow-run", "cancel", second, check=False)  # all cached: it may be done already
    assert cancel.returncode == 0 or "terminal state" in cancel.stdout + cancel.stderr, cancel.stderr
    assert "AwaitingConcurrencySlot" in [name for name, _ in history], history
    started = [when for name, when in history if name == "Running"]
    assert not started or min(started) >= finished["end_time"], (history, finished)

    budget_jobs = [r for r in flow_runs(stack) if r["flow"] == "segflow-budget-job"]
    jobs = [r for r in flow_runs(stack) if r["flow"] == "segflow-train-job"]
    assert [j["state"] for j in budget_jobs][:1] == ["Completed"]  # the budget was measured on the pool
    assert [j["state"] for j in jobs] == ["Completed", "Completed"]  # train ran as jobs, one per fold
    assert sorted(j["parameters"]["fold"] for j in jobs) == [0, 1]
    budget = json.loads(stack.python(RESULT_OF.format(run_id=budget_jobs[0]["id"])))
    assert budget["stage"] == "budget" and budget["summary"]["budget"]["folds"] == [0, 1]
    for job in jobs:  # each train job got the budget job's decision among its inputs
        assert job["parameters"]["request"]["lock"]["budget"] == budget["lock"]
    dispatched = json.loads(stack.python(RESULT_OF.format(run_id=first)))

    from segflow.overrides import apply_overrides

    apply_overrides(tiny_project / "params.yaml", DISPATCH_OVERRIDES)
    # The plain run follows the job's decision (measured again here, the epochs could differ):
    # the file the job pushed, taken from the remote by its md5 and recorded as DVC's own output.
    plan_md5 = next(out["md5"] for out in budget["lock"]["outs"] if out["path"] == "artifacts/plan/training.json")
    decision = deployed.parent / "dvc-remote" / "files" / "md5" / plan_md5[:2] / plan_md5[2:]
    run(["cp", str(decision), str(tiny_project / "artifacts/plan/training.json")], tiny_project)
    run([str(BIN / "dvc"), "repro", "preprocess"], tiny_project)  # the stages before budget, cached
    run([str(BIN / "dvc"), "commit", "--force", "budget"], tiny_project)
    run([str(BIN / "dvc"), "repro", "evaluate"], tiny_project)  # what both runs' metrics come from
    plain = json.loads((tiny_project / "artifacts/evaluate/metrics.json").read_text())
    assert dispatched == plain
    assert dispatched["folds"] == [0, 1]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a worker with no GPU")
def test_a_failing_train_job_fails_the_pipeline_with_the_jobs_error(stack, deployed):
    run_id = start_pipeline(stack, deployed, ["train.device=cuda"])  # the stand-in worker has no GPU
    finished = wait_for(stack, run_id)
    assert finished["state"] == "Failed"
    assert "train@0 job" in finished["message"]
    assert "train.device is cuda but no CUDA GPU is visible" in finished["message"]
    job = [r for r in flow_runs(stack) if r["flow"] == "segflow-train-job"][-1]
    assert job["state"] == "Failed"
    assert "train.device is cuda" in job["message"]
