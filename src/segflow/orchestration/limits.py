"""Retry and timeout policy shared by the flows: steps that touch a network retry with back-off;
stages do not (they are deterministic: a second try would fail the same way)."""

from __future__ import annotations

from typing import Any

STAGE_TIMEOUT_S = 2 * 3600
TRAIN_TIMEOUT_S = 24 * 3600


def network_retries() -> dict[str, Any]:
    """Prefect task options for a step on the DVC remote, a git remote or W&B: 3 retries after
    10, 20 and 40 s, with jitter."""
    from prefect.tasks import exponential_backoff

    return {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=10),
            "retry_jitter_factor": 0.5}
