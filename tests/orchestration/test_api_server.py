"""A flow run with no PREFECT_API_URL starts Prefect's temporary server: segflow gives it time to
start on a cold machine and, when it still does not come up, one line saying what to do."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import BIN, REPO

from segflow.env import PREFECT_STARTUP_TIMEOUT_S, PREFECT_STARTUP_TIMEOUT_SETTING, project_env
from segflow.orchestration.api_server import ephemeral_server_failure

PREFECT_ERROR = "Timed out while attempting to connect to ephemeral Prefect API server."


def test_segflow_gives_the_server_more_than_prefects_20_s(tmp_path):
    assert project_env(tmp_path)[PREFECT_STARTUP_TIMEOUT_SETTING] == str(PREFECT_STARTUP_TIMEOUT_S)
    assert PREFECT_STARTUP_TIMEOUT_S >= 60  # 23 s measured with both cores busy


def test_the_timeout_is_one_line_with_the_way_out():
    line = ephemeral_server_failure(RuntimeError(PREFECT_ERROR), "120")
    assert "did not answer within 120 s" in line and PREFECT_STARTUP_TIMEOUT_SETTING in line
    assert "prefect server start" in line and "PREFECT_API_URL" in line and "\n" not in line


def test_a_crashed_server_says_it_exited():
    error = RuntimeError(f"{PREFECT_ERROR} Ephemeral server process exited with code 3. stdout: x\nstderr: boom")
    line = ephemeral_server_failure(error, "120")
    assert "exited with code 3" in line and "prefect server start" in line and "\n" not in line


def test_other_errors_are_not_rewritten():
    assert ephemeral_server_failure(RuntimeError("stage train failed"), "120") is None
    assert ephemeral_server_failure(ValueError(PREFECT_ERROR), "120") is None


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_the_flow_command_prints_the_line_not_a_traceback(tmp_path):
    """The real flow script with the timeout forced to 0 s: the server cannot answer in time."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {PREFECT_STARTUP_TIMEOUT_SETTING: "0", "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run([str(BIN / "python"), str(REPO / "flows" / "pipeline.py"), "--project-dir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    [line] = [line for line in done.stderr.splitlines() if line.startswith("segflow-pipeline did not start")]
    assert "did not answer within 0 s" in line and "PREFECT_API_URL" in line
