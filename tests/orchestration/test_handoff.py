"""The train-job handoff's checks and dvc.lock bookkeeping (the whole round trip through a real
Prefect server and worker is in tests/flows/test_cluster_orchestration.py)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import BIN, REPO, run

from segflow.config import ConfigError
from segflow.orchestration import handoff


@pytest.fixture
def repo(tmp_path):
    """A git + DVC repository holding this project's params.yaml."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], root)
    return root


def test_merging_a_jobs_entry_keeps_every_other_stage(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "ingest": {"cmd": "segflow stage ingest"}, "train@0": {"cmd": "old"}}}))
    handoff.merge_lock_entries(tmp_path, {"train@0": {"cmd": "new"}, "train@1": {"cmd": "new"}})
    stages = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert stages == {"ingest": {"cmd": "segflow stage ingest"}, "train@0": {"cmd": "new"},
                      "train@1": {"cmd": "new"}}


def test_a_stage_that_has_not_run_cannot_be_handed_off(tmp_path):
    with pytest.raises(handoff.HandoffError, match="no entry for ingest"):
        handoff.lock_entries(tmp_path, ["ingest"])


def test_a_job_pulls_the_outputs_of_every_stage_before_its_own():
    assert handoff.stages_before("budget") == ("ingest", "validate", "plan", "preprocess")
    assert handoff.stages_before("train@3") == ("ingest", "validate", "plan", "preprocess", "budget")


def test_without_a_budget_the_budget_stage_is_not_a_job(repo):
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["budget"] is None
    assert not handoff.budget_runs_as_job(repo)


def test_the_remote_url_a_job_gets_is_absolute(repo):
    assert handoff.default_remote_url(repo) is None
    run([str(BIN / "dvc"), "remote", "add", "-d", "storage", "../store"], repo)
    assert handoff.default_remote_url(repo) == str((repo.parent / "store").resolve())


def test_dispatch_needs_a_remote_and_a_device_to_plan_for(repo):
    with pytest.raises(handoff.HandoffError, match="default DVC remote"):
        handoff.check_dispatchable(repo)
    run([str(BIN / "dvc"), "remote", "add", "-d", "storage", "s3://bucket/segflow"], repo)
    with pytest.raises(ConfigError, match="train.device is auto"):
        handoff.check_dispatchable(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["device"] = "cuda"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    handoff.check_dispatchable(repo)


def test_a_job_for_an_unpushed_commit_says_so(repo, tmp_path):
    request = {"repo_url": str(repo), "rev": "0" * 40, "overrides": [], "lock": {}, "remote_url": "/nowhere"}
    with pytest.raises(handoff.HandoffError, match=r"commit 0{40} is not in .*push it first"):
        handoff.check_out(request, tmp_path / "job" / "workspace")


def test_a_job_checks_out_the_commit_with_the_overrides_and_the_parents_lock(repo, tmp_path):
    rev = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    request = {"repo_url": str(repo), "rev": rev, "overrides": ["train.epochs=3"],
               "lock": {"ingest": {"cmd": "segflow stage ingest"}}, "remote_url": str(tmp_path / "store")}
    workdir = handoff.check_out(request, tmp_path / "job" / "workspace")
    assert run(["git", "rev-parse", "HEAD"], workdir).stdout.strip() == rev
    assert yaml.safe_load((workdir / "params.yaml").read_text())["train"]["epochs"] == 3
    assert handoff.lock_entries(workdir, ["ingest"]) == request["lock"]
    assert handoff.default_remote_url(workdir) == str(tmp_path / "store")
