"""Prefect's temporary API server (a flow run with no PREFECT_API_URL): the one line a user gets
when it does not come up within the startup timeout segflow sets (segflow.env)."""

from __future__ import annotations

from segflow.env import PREFECT_STARTUP_TIMEOUT_SETTING as TIMEOUT_SETTING

PREFECT_TIMEOUT_MESSAGE = "Timed out while attempting to connect to ephemeral Prefect API server"
WAY_OUT = ("start a server (`.venv/bin/prefect server start --host 127.0.0.1 &`) and "
           "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, or raise {setting}, then rerun")


def ephemeral_server_failure(error: BaseException, seconds: str | None) -> str | None:
    """The one line for Prefect's 'temporary server did not come up' error, else None.

    Args:
        error: what the flow call raised.
        seconds: the startup timeout in force (the environment variable's value)."""
    text = str(error)
    if not isinstance(error, RuntimeError) or PREFECT_TIMEOUT_MESSAGE not in text:
        return None
    exited = text.split("Ephemeral server process exited with code ", 1)
    why = (f"exited with code {exited[1].split('.')[0]} before answering" if len(exited) == 2
           else f"did not answer within {seconds} s ({TIMEOUT_SETTING})")
    way_out = WAY_OUT.format(setting=TIMEOUT_SETTING if len(exited) == 2 else "it")
    return f"Prefect's temporary API server (no PREFECT_API_URL set) {why}: {way_out}"
