"""One module per DVC stage, each with `main(params, paths, tracker) -> dict`.

`run_stage` is what `segflow stage NAME` (and so dvc.yaml) calls: it loads params, resolves
their `auto` values from the plan for the stages that come after it, narrows them to one fold for
per-fold stages, opens the stage's W&B run and hands all that to the stage.
"""

from __future__ import annotations

import importlib
import os
from contextlib import nullcontext
from pathlib import Path

STAGES = ("ingest", "validate", "plan", "preprocess", "budget", "train", "evaluate", "register", "report")
PER_FOLD = ("train",)  # dvc.yaml runs these once per fold in split.folds (`foreach`)
PLANNED = ("preprocess", "train", "evaluate", "register")  # read params with the plan's values


def stage_params(name: str, root: Path, fold: int | None = None):
    """params.yaml as stage `name` sees it: `auto` resolved after planning, one fold per-fold."""
    from segflow.config import ALL_FOLDS, ConfigError, load_params
    from segflow.paths import Paths

    params = load_params(root / "params.yaml")
    if name in PER_FOLD:
        if fold is None and len(params.split.folds) > 1:
            raise ConfigError(f"stage {name} trains one fold at a time: pass --fold (split.folds is "
                              f"{params.split.folds})")
        fold = params.split.folds[0] if fold is None else fold
        if fold != ALL_FOLDS and fold >= params.split.n_folds:
            raise ConfigError(f"fold {fold} does not exist with split.n_folds={params.split.n_folds}")
        params = params.with_fold(fold)
    elif fold is not None:
        raise ConfigError(f"stage {name} covers every fold; --fold applies to {', '.join(PER_FOLD)}")
    if name in PLANNED:
        from segflow.planning.plan import Plan, resolve_params

        params = resolve_params(params, Plan.load(Paths(root).plan))
    return params


def _tracks(name: str, params) -> bool:
    """One W&B run per stage: a DDP train tracks from its rank 0 worker (torchrun sets RANK), not
    from the other ranks nor from the launcher that waits for them (an unstarted run is a no-op)."""
    if "RANK" in os.environ:
        return os.environ["RANK"] == "0"
    return not (name in PER_FOLD and params.train.nproc_per_node > 1)


def tracking_config(name: str, params, root: Path) -> dict:
    """The W&B config of a stage's run: the full typed params (plan values filled in after the
    plan stage), plus the code's git commit, the raw data's DVC hash, the plan and the fold, so
    W&B's runs table can compare runs on any of them."""
    from segflow.files import read_json
    from segflow.paths import Paths
    from segflow.tracking.provenance import data_hash, git_commit, git_state

    plan = Paths(root).plan
    return {**params.model_dump(by_alias=True, mode="json"),
            "segflow": {"stage": name, "fold": params.split.folds[0] if name in PER_FOLD else None,
                        "git_commit": git_commit(root), "git_modified": git_state(root)[1],
                        "data_hash": data_hash(root)},
            "plan": read_json(plan) if name in PLANNED and plan.is_file() else None}


def run_stage(name: str, root: Path, fold: int | None = None) -> dict:
    """Run one stage in project `root` (one fold of it for per-fold stages); returns its summary.

    Every number the stage returns lands in its W&B summary as `<stage>/<key>`, the one naming
    scheme all stages share, so W&B's runs table lines runs up column by column."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    from segflow.paths import Paths
    from segflow.tracking.runs import StageRun, stage_run

    params = stage_params(name, root, fold)
    module = importlib.import_module(f"segflow.stages.{name}")
    if _tracks(name, params):
        run = stage_run(name, tracking_config(name, params, root), fold=params.split.folds[0] if name in PER_FOLD else None)
    else:
        run = nullcontext(StageRun(name, {}, group="off"))
    with run as tracker:
        result = module.main(params, Paths(root), tracker)
        tracker.summary({f"{name}/{k}": v for k, v in result.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return result
