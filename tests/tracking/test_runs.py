"""segflow.tracking.runs against real wandb in offline mode: all W&B state under tmp_path."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import WANDB_TEST_GROUP, offline_run_header, offline_run_records, offline_runs

from segflow.tracking import runs as tracking
from segflow.tracking.runs import pipeline_group, scrub_secrets, stage_run

GROUP = WANDB_TEST_GROUP


def run_records(wandb_dir: Path) -> list[dict]:
    """Records of the one offline run under wandb_dir, read from its .wandb transaction log."""
    runs = offline_runs(wandb_dir)
    assert len(runs) == 1, runs
    return offline_run_records(runs[0])


def records_of(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def tracking_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "segflow.tracking.runs" and r.levelno == logging.WARNING
    ]


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_stage_run_logs_everything_offline(wandb_dir, tmp_path, caplog):
    from PIL import Image

    image = tmp_path / "overlay.png"
    Image.new("L", (16, 16), color=128).save(image)
    model = tmp_path / "unet.pt"
    model.write_bytes(b"weights")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id\na\n")

    with stage_run("train", {"lr": 0.01, "model": {"channels": [16, 32]}}) as run:
        run.log({"loss": 0.5}, step=0)
        run.log({"loss": 0.25}, step=1)
        run.log_images("overlays", [image], captions=["case 1"])
        run.log_table("per_case", pd.DataFrame({"case": ["a", "b"], "dice": [0.8, 0.9]}))
        run.summary({"val_dice": 0.85})
        run.log_artifact(model, name="unet", type="model", aliases=["candidate"],
                         metadata={"val_dice": 0.85})
        run.use_artifact_files([manifest], name="dataset-tiny", type="dataset")

    assert run.error is None and tracking_warnings(caplog) == []
    records = run_records(wandb_dir)
    (header,) = records_of(records, "run")
    assert header["run_group"] == GROUP
    assert header["job_type"] == "train"
    assert header["project"] == "segflow-test"
    assert header["config"]["update"]["lr"] == 0.01
    assert [h["item"]["loss"] for h in records_of(records, "history") if "loss" in h["item"]] \
        == [0.5, 0.25]
    summary = {k: v for s in records_of(records, "summary") for k, v in s["update"].items()}
    assert summary["val_dice"] == 0.85
    assert summary["overlays.captions"] == ["case 1"]
    assert summary["per_case.nrows"] == 2
    (model_artifact,) = [a for a in records_of(records, "artifact") if a["name"] == "unet"]
    assert "candidate" in model_artifact["aliases"]
    assert [c["path"] for c in model_artifact["manifest"]["contents"]] == ["unet.pt"]
    (used,) = [a for a in records_of(records, "artifact") if a["name"] == "dataset-tiny"]
    assert used["use_after_commit"] and used["type"] == "dataset"  # an input: `wandb sync` records the use
    assert not model_artifact.get("use_after_commit")
    assert [e["exit_code"] for e in records_of(records, "exit")] == [0]
    run_dir = next((wandb_dir / "wandb").glob("offline-run-*"))
    assert list((run_dir / "files" / "media" / "images").glob("overlays_*.png"))


def test_secrets_in_config_reach_no_file(wandb_dir):
    config = {
        "lr": 0.01,
        "wandb_api_key": "abc-SECRET-key-71",
        "nested": {"token": "tok-SECRET-93", "depth": 3},
        "db": [{"Password": "pw-SECRET-55"}],
    }
    with stage_run("ingest", config) as run:
        run.log({"cases": 3})

    header = records_of(run_records(wandb_dir), "run")[0]
    assert header["config"]["update"]["nested"] == {"depth": 3}
    leaked = [
        path for path in wandb_dir.rglob("*")
        if path.is_file() and b"SECRET" in path.read_bytes()
    ]
    assert leaked == []


def test_init_failure_warns_once_and_body_runs(wandb_dir, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise RuntimeError("service unavailable")

    monkeypatch.setattr(wandb, "init", broken_init)
    body_ran = False
    with stage_run("train", {"lr": 0.1}) as run:
        run.log({"loss": 1.0})
        run.summary({"dice": 0.5})
        run.log_artifact(Path("missing.pt"), name="unet", type="model")
        body_ran = True

    assert body_ran
    assert run.run is None
    assert run.error == "init failed: RuntimeError: service unavailable"
    assert tracking_warnings(caplog) == [
        "W&B tracking disabled for stage train: init failed: RuntimeError: service unavailable"
    ]


def test_invalid_wandb_mode_degrades_to_noop(wandb_dir, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "not-a-mode")
    with stage_run("evaluate", {}) as run:
        run.log({"dice": 0.7})
    assert run.error is not None and run.error.startswith("init failed")
    assert len(tracking_warnings(caplog)) == 1


def test_failing_log_call_disables_rest_of_run(wandb_dir, tmp_path, caplog):
    with stage_run("register", {}) as run:
        run.log({"before": 1})
        run.log_artifact(tmp_path / "does-not-exist.pt", name="unet", type="model")
        run.log({"after": 2})  # no-op now
        run.log_artifact(tmp_path / "also-missing.pt", name="unet", type="model")

    (warning,) = tracking_warnings(caplog)
    assert warning.startswith("W&B tracking disabled for stage register: log_artifact failed")
    history = records_of(run_records(wandb_dir), "history")
    assert [sorted(k for k in h["item"] if not k.startswith("_")) for h in history] == [["before"]]


def test_body_exception_propagates_and_marks_run_failed(wandb_dir, caplog):
    with pytest.raises(ZeroDivisionError):
        with stage_run("train", {}) as run:
            run.log({"loss": 1.0})
            1 / 0
    assert run.error is None and tracking_warnings(caplog) == []
    assert [e["exit_code"] for e in records_of(run_records(wandb_dir), "exit")] == [1]


def test_tracking_off_skips_wandb(wandb_dir, monkeypatch, caplog):
    monkeypatch.setenv("SEGFLOW_TRACKING", "off")
    with stage_run("train", {"lr": 0.1}) as run:
        run.log({"loss": 1.0})
        run.log_table("t", pd.DataFrame({"a": [1]}))
    assert run.run is None and run.error is None
    assert not (wandb_dir / "wandb").exists()
    assert tracking_warnings(caplog) == []


def test_captions_must_match_images():
    with pytest.raises(ValueError, match="2 captions for 1 images"):
        tracking.StageRun("train", {}, group="g").log_images("k", [Path("a.png")], ["x", "y"])


def test_importing_tracking_does_not_import_wandb():
    code = "import sys, segflow.tracking.runs; print('wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pipeline_group_from_env(monkeypatch):
    monkeypatch.setenv("SEGFLOW_RUN_GROUP", "prefect-flow-run-7")
    assert pipeline_group() == "prefect-flow-run-7"


def test_pipeline_group_fallback_outside_git(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGFLOW_RUN_GROUP", raising=False)
    monkeypatch.chdir(tmp_path)
    assert re.fullmatch(r"local-\d{8}-nogit", pipeline_group())


def test_pipeline_group_fallback_uses_git_sha(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGFLOW_RUN_GROUP", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert re.fullmatch(rf"local-\d{{8}}-{sha}", pipeline_group())


def test_scrub_secrets_drops_secret_keys_at_any_depth():
    config = {"API_KEY": 1, "apikey": 2, "lr": 3,
              "a": {"b": [{"client_secret": 4, "keep": 5}], "refresh_token": 6}}
    assert scrub_secrets(config) == {"lr": 3, "a": {"b": [{"keep": 5}]}}
    assert config["API_KEY"] == 1  # input untouched


def test_pipeline_group_is_one_per_dvc_process(monkeypatch, tmp_path):
    """Every stage of one `dvc repro` (a child of the dvc process) shares a group; the next
    `dvc repro` gets another."""
    monkeypatch.delenv("SEGFLOW_RUN_GROUP", raising=False)
    fake_dvc = tmp_path / "dvc"  # stands for the dvc entry point: stages run as its children
    fake_dvc.write_text(
        "import subprocess, sys\n"
        "for _ in range(2):\n"
        "    subprocess.run(['sh', '-c', sys.executable + ' -c \"from segflow.tracking.runs import pipeline_group;"
        " print(pipeline_group())\"'], check=True)\n")
    groups = [subprocess.run([sys.executable, str(fake_dvc)], capture_output=True, text=True, check=True,
                             cwd=tmp_path).stdout.split() for _ in range(2)]
    assert groups[0][0] == groups[0][1] and groups[1][0] == groups[1][1]
    assert groups[0][0] != groups[1][0]
    assert re.fullmatch(r"dvc-\d{8}-\d{6}-\d+-nogit", groups[0][0])


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung or firewalled W&B server)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_unreachable_server_is_probed_once_per_run_and_stages_log_offline(wandb_dir, monkeypatch, caplog,
                                                                          silent_server):
    import time

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    start = time.monotonic()
    with stage_run("ingest", {}) as first:
        first.log({"cases": 3})
    probes = []
    monkeypatch.setattr(tracking, "server_reachable", lambda *a, **k: probes.append(a) or True)
    with stage_run("validate", {}) as second:
        second.log({"kept": 3})
    elapsed = time.monotonic() - start

    assert elapsed < 30, f"two stages took {elapsed:.0f} s against an unreachable server"
    assert first.error is None and second.error is None  # both ran (offline) and finished
    assert probes == [], "the run's second stage probed again"
    assert len(sorted((wandb_dir / "wandb").glob("offline-run-*"))) == 2
    warnings = tracking_warnings(caplog)
    assert len(warnings) == 1 and silent_server in warnings[0] and "wandb sync" in warnings[0]


def test_reachable_server_keeps_the_configured_mode(monkeypatch, tmp_path):
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert tracking.offline_for_this_run("group-a") is False
    finally:
        server.shutdown()
    monkeypatch.setenv("WANDB_MODE", "offline")  # an offline run is never probed
    monkeypatch.setattr(tracking, "server_reachable", lambda *a, **k: pytest.fail("probed"))
    assert tracking.offline_for_this_run("group-b") is False


def test_a_started_run_is_recorded_under_its_group_for_the_results_page(wandb_dir):
    with stage_run("train", {"segflow": {"fold": 1}}) as run:
        run.log({"loss": 1.0})  # the run opens at its first use
        assert run.active
    (link,) = tracking.runs_of_group(GROUP)
    assert link.stage == "train fold 1" and link.mode == "offline" and link.url is None
    assert Path(link.folder).name.startswith("offline-run-") and Path(link.folder).is_dir()
    assert tracking.runs_of_group("another-group") == []


def history_steps(run_dir: Path) -> list[int]:
    return [h["step"]["num"] for h in records_of(offline_run_records(run_dir), "history")]


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_runs_are_named_by_stage_and_fold_within_the_pipeline_group(wandb_dir):
    with stage_run("train", {}, fold=2) as run:
        run.log({"loss": 1.0})
    with stage_run("evaluate", {}) as run:
        run.log({"dice": 0.5})

    headers = [offline_run_header(d) for d in offline_runs(wandb_dir)]
    assert sorted((h["display_name"], h["job_type"], h["run_group"]) for h in headers) == [
        ("evaluate", "evaluate", GROUP), ("train-fold2", "train", GROUP)]


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_a_continued_run_keeps_its_id_and_group_across_pipeline_runs(wandb_dir, monkeypatch):
    with stage_run("train", {}, fold=0) as first:
        first.log({"loss": 0.9}, step=1)
        earlier = first.identity
    monkeypatch.setenv("SEGFLOW_RUN_GROUP", "the-resuming-pipeline-run")
    with stage_run("train", {}, fold=0) as second:
        second.continue_run(earlier)
        second.log({"loss": 0.8}, step=2)

    assert earlier == tracking.RunIdentity(run_id=earlier.run_id, group=GROUP)
    assert second.identity is None and second.error is None  # finished cleanly
    # Offline, the continuation is a second folder of the same run; `wandb sync` joins them.
    folders = offline_runs(wandb_dir)
    assert len(folders) == 2
    assert [(h["run_id"], h["run_group"], h["display_name"]) for h in map(offline_run_header, folders)] \
        == [(earlier.run_id, GROUP, "train-fold0")] * 2
    assert [history_steps(d) for d in folders] == [[1], [2]]


def test_continue_run_after_the_run_opened_warns_and_keeps_the_open_run(wandb_dir, caplog):
    with stage_run("train", {}) as run:
        run.log({"loss": 1.0})
        own = run.identity
        run.continue_run(tracking.RunIdentity(run_id="elsewhere1", group="other"))
        assert run.identity == own
    assert any("cannot continue run elsewhere1" in w for w in tracking_warnings(caplog))


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_a_stage_that_logs_nothing_still_leaves_its_run_and_outcome(wandb_dir):
    with pytest.raises(RuntimeError):
        with stage_run("plan", {}, fold=None):
            raise RuntimeError("planning failed")
    assert [e["exit_code"] for e in records_of(run_records(wandb_dir), "exit")] == [1]


def test_an_unstarted_run_never_opens_wandb(wandb_dir):
    """A DDP rank that does not track holds a StageRun that was never started: it logs nowhere."""
    idle = tracking.StageRun("train", {}, group="off", fold=0)
    idle.log({"loss": 1.0})
    idle.finish()
    assert idle.identity is None and offline_runs(wandb_dir) == []


def test_run_identity_reads_back_only_what_it_wrote():
    identity = tracking.RunIdentity(run_id="abc123", group="g")
    assert tracking.RunIdentity.from_dict(identity.to_dict()) == identity
    assert tracking.RunIdentity.from_dict(None) is None
    assert tracking.RunIdentity.from_dict({"run_id": "abc123"}) is None
