"""Prefect flow: the six DVC stages as tasks, run through `dvc repro` so caching is DVC's.

Orchestration only: every stage's logic lives in src/segflow. Runs locally with no server
configured (Prefect starts a temporary one) or against PREFECT_API_URL.

    python flows/pipeline.py [--project-dir .]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from segflow.env import apply_project_env, find_project_root

apply_project_env(find_project_root(Path(__file__).resolve().parent))  # before prefect reads settings

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from segflow.stages import STAGES  # noqa: E402

OUTPUT_TAIL = 4000


def _dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@task(name="dvc-stage", task_run_name="{stage}", retries=0)
def run_dvc_stage(stage: str, project_dir: str, group: str) -> str:
    """`dvc repro <stage>`: runs it only if its deps or params changed, else a no-op."""
    logger = get_run_logger()
    env = {**os.environ, "SEGFLOW_RUN_GROUP": group,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(_dvc_command("repro", stage), cwd=project_dir, env=env,
                          capture_output=True, text=True)
    output = (done.stdout + done.stderr)[-OUTPUT_TAIL:]
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (dvc exit {done.returncode}):\n{output}")
    logger.info("stage %s done:\n%s", stage, done.stdout[-OUTPUT_TAIL:])
    return done.stdout


@flow(name="segflow-pipeline", log_prints=True)
def segflow_pipeline(project_dir: str = ".", stages: list[str] | None = None) -> dict:
    """Run the pipeline's stages in order; returns the evaluation metrics."""
    root = Path(project_dir).resolve()
    group = os.environ.get("SEGFLOW_RUN_GROUP") or f"prefect-{flow_run.get_name() or 'local'}"
    for stage in stages or list(STAGES):
        run_dvc_stage(stage, str(root), group)
    metrics = root / "artifacts" / "evaluate" / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".")
    args = parser.parse_args()
    state = segflow_pipeline(project_dir=args.project_dir, return_state=True)
    print(f"segflow-pipeline finished in state {state.name}")
    if not state.is_completed():
        print(f"segflow-pipeline failed: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
