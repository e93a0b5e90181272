"""One module per DVC stage, each with `main(params, paths, tracker) -> dict`.

`run_stage` is what `segflow stage NAME` (and so dvc.yaml) calls: it loads params, opens the
stage's W&B run and hands both to the stage.
"""

from __future__ import annotations

import importlib
from pathlib import Path

STAGES = ("ingest", "validate", "augment", "train", "evaluate", "register")


def run_stage(name: str, root: Path) -> dict:
    """Run one stage in project `root`; returns the stage's summary."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    from segflow.config import load_params
    from segflow.paths import Paths
    from segflow.tracking import stage_run

    params = load_params(root / "params.yaml")
    module = importlib.import_module(f"segflow.stages.{name}")
    config = params.model_dump(by_alias=True, mode="json")
    with stage_run(name, config) as tracker:
        result = module.main(params, Paths(root), tracker)
        tracker.summary({f"{name}/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
    return result
