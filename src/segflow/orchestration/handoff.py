"""A stage as a separate job on the GPU pool, handed off through git and the DVC remote: each
fold's train@K, and the budget stage when there is a budget (it times training on the device
that trains, so it must run where training will).

The parent pushes the outputs of the stages before the job's stage and sends their dvc.lock
entries with the commit and the params overrides. The job checks out that commit, applies the same
overrides, writes those entries into its dvc.lock, pulls their outputs, runs `dvc repro
--single-item <stage>` and pushes the result; it returns the stage's dvc.lock entry. The parent
writes that entry into its own dvc.lock and pulls the outputs: DVC then sees the stage up to date,
exactly as if it had run here, and the stages after it go on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from segflow.config import AUTO, ConfigError, load_params
from segflow.errors import SegflowError
from segflow.files import write_text
from segflow.orchestration.workspace import head_commit, repository_url
from segflow.overrides import apply_overrides
from segflow.processes.commands import CommandFailed, dvc, git
from segflow.stages import STAGES

TRAIN = "train"
BUDGET = "budget"
BEFORE_BUDGET = STAGES[: STAGES.index(BUDGET)]
LOCK_FILE = "dvc.lock"
HANDOFF_REMOTE = "segflow-handoff"


class HandoffError(SegflowError):
    """The job's result does not fit the workspace it was made for."""


def train_stage(fold: int) -> str:
    """dvc.yaml's `foreach` names the per-fold train stages train@0, train@1, ..."""
    return f"{TRAIN}@{fold}"


def stages_before(stage: str) -> tuple[str, ...]:
    """The stages whose outputs a job of `stage` (`budget`, `train@K`) pulls as its inputs."""
    return STAGES[: STAGES.index(stage.split("@")[0])]


# --- dvc.lock --------------------------------------------------------------------------------------


def read_lock(root: Path) -> dict[str, Any]:
    path = root / LOCK_FILE
    lock = yaml.safe_load(path.read_text()) if path.is_file() else None
    return lock or {"schema": "2.0", "stages": {}}


def lock_entries(root: Path, stages: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """These stages' dvc.lock entries; an error names any that has not run here."""
    recorded = read_lock(root)["stages"]
    missing = [s for s in stages if s not in recorded]
    if missing:
        raise HandoffError(f"{root / LOCK_FILE}: no entry for {', '.join(missing)}; run them before the job")
    return {stage: recorded[stage] for stage in stages}


def merge_lock_entries(root: Path, entries: dict[str, Any]) -> None:
    """Write `entries` into root's dvc.lock (replaced in one rename), keeping the others."""
    lock = read_lock(root)
    lock["stages"].update(entries)
    write_text(root / LOCK_FILE, yaml.safe_dump(lock, sort_keys=False))


# --- the DVC remote --------------------------------------------------------------------------------


def default_remote_url(root: Path) -> str | None:
    """The default remote's URL, or None without one. DVC's own config reader merges the config
    levels (.dvc/config, config.local, ...) and makes a local remote's path absolute."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        return config["remote"].get(name, {}).get("url") if name else None


def require_remote(root: Path) -> str:
    url = default_remote_url(root)
    if not url:
        raise HandoffError(f"{root}: dispatch needs a default DVC remote the job can reach "
                           "(`dvc remote add -d storage s3://bucket/path`)")
    return url


# --- parent side -----------------------------------------------------------------------------------


def check_dispatchable(root: Path) -> None:
    """Before any stage runs: a remote the job can reach, and a plan made for the job's device."""
    require_remote(root)
    params = load_params(root / "params.yaml")
    if params.train.device == AUTO:
        raise ConfigError(f"{root / 'params.yaml'}: train.device is auto, but with dispatch the plan is "
                          "made here and training runs on the GPU pool; set train.device to the job's "
                          "device (e.g. overrides ['train.device=cuda']) so the plan sizes the network for it")


def budget_runs_as_job(root: Path) -> bool:
    """With a train.budget the budget stage times training, so with dispatch it runs as a job on
    the pool that trains, unless its decision is already up to date here (the same plan gives the
    same model: it is not measured again). Without a budget it only records train.epochs and runs
    anywhere. Call it once the stages before it are up to date."""
    if load_params(root / "params.yaml").train.budget is None:
        return False
    return not is_up_to_date(root, BUDGET)


def push_job_inputs(root: Path, stage: str) -> None:
    """Push the outputs of every stage before `stage` (its inputs among them) to the remote."""
    dvc(root, "push", "--quiet", *stages_before(stage))


def job_request(root: Path, overrides: list[str], stage: str) -> dict[str, Any]:
    """Everything a job of `stage` needs to rebuild its inputs: where and what to check out, the
    overrides, the upstream dvc.lock entries and the remote. JSON, so it travels as parameters."""
    return {"repo_url": repository_url(root), "rev": head_commit(root), "overrides": list(overrides),
            "lock": lock_entries(root, stages_before(stage)), "remote_url": require_remote(root)}


def train_job_variables(root: Path) -> dict[str, Any]:
    """What a train job's pod must offer: one GPU per torchrun process (train.nproc_per_node)."""
    return {"gpus": load_params(root / "params.yaml").train.nproc_per_node}


def budget_job_variables() -> dict[str, Any]:
    """The budget stage times one process's steps: one GPU."""
    return {"gpus": 1}


def adopt_job_result(root: Path, result: dict[str, Any]) -> None:
    """Take a job's stage as this workspace's own: its dvc.lock entry, then its outputs."""
    stage = result["stage"]
    merge_lock_entries(root, {stage: result["lock"]})
    dvc(root, "pull", "--quiet", stage)
    require_up_to_date(root, stage)


def stage_changes(root: Path, stage: str) -> dict[str, Any]:
    """DVC's own verdict (`dvc status`): what of the stage's recorded deps, params and outputs
    differs from the workspace; empty when it is up to date."""
    return json.loads(dvc(root, "status", "--json", stage) or "{}")


def is_up_to_date(root: Path, stage: str) -> bool:
    return not stage_changes(root, stage)


def require_up_to_date(root: Path, stage: str) -> None:
    """Refuse to go on when DVC would rerun the job's stage here (other code, params or inputs)."""
    changed = stage_changes(root, stage)
    if changed:
        raise HandoffError(f"{root}: {stage} from its job does not match this workspace "
                           f"({json.dumps(changed)}); was the commit pushed and unchanged?")


# --- job side --------------------------------------------------------------------------------------


def check_out(request: dict[str, Any], workdir: Path) -> Path:
    """A fresh clone of the parent's commit in `workdir`, with the parent's overrides applied."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    git(workdir.parent, "clone", "--quiet", "--no-checkout", request["repo_url"], str(workdir))
    try:
        git(workdir, "checkout", "--quiet", request["rev"])
    except CommandFailed as exc:
        raise HandoffError(f"commit {request['rev']} is not in {request['repo_url']}: push it first "
                           f"({exc})") from None
    apply_overrides(workdir / "params.yaml", request["overrides"])
    dvc(workdir, "remote", "add", "--local", "--force", "--default", HANDOFF_REMOTE, request["remote_url"])
    merge_lock_entries(workdir, request["lock"])
    return workdir


def pull_job_inputs(workdir: Path, request: dict[str, Any]) -> None:
    """The outputs of the stages whose dvc.lock entries the parent sent."""
    dvc(workdir, "pull", "--quiet", *request["lock"])


def run_job_stage(workdir: Path, stage: str, timeout_s: float | None = None) -> None:
    """Only the job's stage: its inputs are pulled, the stages before it are the parent's business.
    The checked-out src/ comes first on the path, so the code that runs is the commit's."""
    dvc(workdir, "repro", "--single-item", stage, env={"PYTHONPATH": str(workdir / "src")}, timeout_s=timeout_s)


def push_job_outputs(workdir: Path, stage: str, summary: Path) -> dict[str, Any]:
    """Push the stage's outputs; its dvc.lock entry and `summary` (a JSON output) for the parent."""
    dvc(workdir, "push", "--quiet", stage)
    return {"stage": stage, "lock": lock_entries(workdir, [stage])[stage],
            "summary": json.loads(summary.read_text()) if summary.is_file() else {}}
