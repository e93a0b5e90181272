"""The train step as a separate job, handed off through git and the DVC remote.

The parent pushes the outputs of the stages before train and sends their dvc.lock entries with
the commit and the params overrides. The job checks out that commit, applies the same overrides,
writes those entries into its dvc.lock, pulls their outputs, runs `dvc repro --single-item
train@K` and pushes the result; it returns train@K's dvc.lock entry. The parent writes that entry
into its own dvc.lock and pulls the outputs: DVC then sees train@K up to date, exactly as if it had
run here, and the stages after it go on.
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
from segflow.paths import Paths
from segflow.processes.commands import CommandFailed, dvc, git
from segflow.stages import STAGES

TRAIN = "train"
BEFORE_TRAIN = STAGES[: STAGES.index(TRAIN)]
LOCK_FILE = "dvc.lock"
HANDOFF_REMOTE = "segflow-handoff"


class HandoffError(SegflowError):
    """The job's result does not fit the workspace it was made for."""


def train_stage(fold: int) -> str:
    """dvc.yaml's `foreach` names the per-fold train stages train@0, train@1, ..."""
    return f"{TRAIN}@{fold}"


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
        raise HandoffError(f"{root / LOCK_FILE}: no entry for {', '.join(missing)}; run them before the train job")
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


def push_train_inputs(root: Path) -> None:
    """Push the outputs of every stage before train (train's inputs among them) to the remote."""
    dvc(root, "push", "--quiet", *BEFORE_TRAIN)


def train_job_request(root: Path, overrides: list[str]) -> dict[str, Any]:
    """Everything a job needs to rebuild train's inputs: where and what to check out, the
    overrides, the upstream dvc.lock entries and the remote. JSON, so it travels as parameters."""
    return {"repo_url": repository_url(root), "rev": head_commit(root), "overrides": list(overrides),
            "lock": lock_entries(root, BEFORE_TRAIN), "remote_url": require_remote(root)}


def train_job_variables(root: Path) -> dict[str, Any]:
    """What the job's pod must offer: one GPU per torchrun process (train.nproc_per_node)."""
    return {"gpus": load_params(root / "params.yaml").train.nproc_per_node}


def adopt_train_result(root: Path, result: dict[str, Any]) -> None:
    """Take a job's train@K as this workspace's own: its dvc.lock entry, then its outputs."""
    stage = result["stage"]
    merge_lock_entries(root, {stage: result["lock"]})
    dvc(root, "pull", "--quiet", stage)
    require_up_to_date(root, stage)


def require_up_to_date(root: Path, stage: str) -> None:
    """Refuse to go on when DVC would rerun the job's stage here (other code, params or inputs)."""
    changed = json.loads(dvc(root, "status", "--json", stage) or "{}")
    if changed:
        raise HandoffError(f"{root}: {stage} from the train job does not match this workspace "
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


def pull_train_inputs(workdir: Path) -> None:
    dvc(workdir, "pull", "--quiet", *BEFORE_TRAIN)


def run_train(workdir: Path, fold: int, timeout_s: float | None = None) -> None:
    """Only train@K: its inputs are pulled, the stages before it are the parent's business. The
    checked-out src/ comes first on the path, so the code that runs is the commit's."""
    dvc(workdir, "repro", "--single-item", train_stage(fold), env={"PYTHONPATH": str(workdir / "src")},
        timeout_s=timeout_s)


def push_train_outputs(workdir: Path, fold: int) -> dict[str, Any]:
    stage = train_stage(fold)
    dvc(workdir, "push", "--quiet", stage)
    summary = Paths(workdir).train_summary_for(fold)
    return {"stage": stage, "lock": lock_entries(workdir, [stage])[stage],
            "summary": json.loads(summary.read_text()) if summary.is_file() else {}}
