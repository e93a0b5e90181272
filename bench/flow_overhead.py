"""The Prefect flow against plain `dvc repro`: same pipeline, same params, same project state, runs
alternated (plain, flow, plain, flow, ...); the ratio flow/plain of the medians, and where the
flow's extra time goes.

    .venv/bin/python bench/flow_overhead.py                  # 3 pairs, full data, small params
    .venv/bin/python bench/flow_overhead.py --pairs 2 --cases 13
    .venv/bin/python bench/flow_overhead.py --api-url http://127.0.0.1:4200/api   # a running server

Prefect mode: by default none is configured, as `python flows/pipeline.py` runs for a user without
a server: Prefect 3 then starts its ephemeral API server (a subprocess on 127.0.0.1, state in the
project's PREFECT_HOME) for the run. `--api-url` runs against a server you started instead.

Same work in both arms: the flow cannot force its stages (`dvc repro STAGE` per task), so before
every run the project is reset: dvc.lock, DVC's run-cache, train's checkpoints and the registry
are removed, so each run executes every stage (checked from DVC's "Running stage" lines).

Breakdown of a flow run (a driver process times from inside, without changing the flow):
python start/exit, import of flows/pipeline.py (prefect + segflow), flow start -> first task
(ephemeral server start, flow-run creation), the dvc subprocesses (stage work plus one DVC
start-up and upstream check per stage), Prefect's own cost per task (task call minus its body),
the flow body outside tasks, and the per-stage cost of `dvc repro STAGE` as a no-op.

Scratch project as in dvc_noop.py (`make_scratch`). Results: bench/results/flow_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402
from dvc_noop import BIN, SMALL, BenchError, Scratch, make_scratch, stages_ran  # noqa: E402

# Runs the flow as `python flows/pipeline.py` does, timing it from inside: the import, each task
# call and its body (Prefect's cost is the difference), and each git/DVC subprocess.
DRIVER = r'''
import functools, json, os, re, sys, time
t0 = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("pipeline", "flows/pipeline.py")
pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline)
from prefect import Task
from segflow.orchestration import commands
t_import = time.perf_counter() - t0
tasks, subprocesses = [], []
original = commands.run_command

def timed_command(cmd, cwd, what, env=None, timeout_s=None):
    start = time.perf_counter()
    output = ""
    try:
        output = original(cmd, cwd, what, env, timeout_s)
        return output
    finally:
        ran = list(dict.fromkeys(re.findall(r"Running stage '([^']+)'", output or "")))
        subprocesses.append({"what": what, "start_s": start - t0, "seconds": time.perf_counter() - start, "ran": ran})
commands.run_command = timed_command
pipeline.run_command = timed_command

def wrap(name, task):
    body = task.fn
    @functools.wraps(body)  # Prefect binds the call's arguments by the body's signature
    def timed_body(*args, **kwargs):
        start = time.perf_counter()
        try:
            return body(*args, **kwargs)
        finally:
            tasks[-1]["body_s"] = time.perf_counter() - start
    task.fn = timed_body
    def call(*args, **kwargs):
        tasks.append({"task": name, "arg": str(args[0]) if args else "", "start_s": time.perf_counter() - t0})
        start = time.perf_counter()
        try:
            return task(*args, **kwargs)
        finally:
            tasks[-1]["call_s"] = time.perf_counter() - start
    return call

for name, value in list(vars(pipeline).items()):
    if isinstance(value, Task):
        setattr(pipeline, name, wrap(name, value))
flow_start = time.perf_counter()
state = pipeline.segflow_pipeline(project_dir=".", return_state=True)
flow_s = time.perf_counter() - flow_start
print("DRIVER " + json.dumps({"import_s": t_import, "flow_start_s": flow_start - t0, "flow_s": flow_s,
      "completed": state.is_completed(), "message": state.message, "tasks": tasks,
      "subprocesses": subprocesses, "end_s": time.perf_counter() - t0}))
'''

WARM_PREFECT = "from prefect import flow\nflow(name='warm-up')(lambda: 1)()"


def reset(scratch: Scratch) -> None:
    """Make every stage run again, from the same state, without a cache hit hiding its work."""
    (scratch.root / "dvc.lock").unlink(missing_ok=True)
    for name in (".dvc/cache/runs", "artifacts/checkpoints", "registry"):
        shutil.rmtree(scratch.root / name, ignore_errors=True)


def run_plain(scratch: Scratch) -> dict:
    reset(scratch)
    output, seconds = scratch.dvc("repro")
    return {"wall_s": seconds, "ran": stages_ran(output), "load_1m": os.getloadavg()[0]}


def run_flow(scratch: Scratch) -> dict:
    reset(scratch)
    output, seconds = scratch.run([str(BIN / "python"), "-c", DRIVER])
    line = next((ln for ln in output.splitlines() if ln.startswith("DRIVER ")), None)
    if line is None:
        raise BenchError(f"the flow driver printed no timings:\n{output[-3000:]}")
    inside = json.loads(line.removeprefix("DRIVER "))
    if not inside["completed"]:
        raise BenchError(f"the flow did not complete: {inside['message']}\n{output[-3000:]}")
    ran = [stage for call in inside["subprocesses"] for stage in call["ran"]]
    return {"wall_s": seconds, "ran": ran, "inside": inside, "load_1m": os.getloadavg()[0]}


def breakdown(flow: dict) -> dict[str, float]:
    """Where one flow run's wall time went (seconds)."""
    inside = flow["inside"]
    tasks = inside["tasks"]
    dvc_s = sum(c["seconds"] for c in inside["subprocesses"])
    task_overhead = sum(t["call_s"] - t.get("body_s", 0.0) for t in tasks)
    bodies_not_subprocess = sum(t.get("body_s", 0.0) for t in tasks) - dvc_s
    first_task = min((t["start_s"] for t in tasks), default=inside["flow_start_s"]) - inside["flow_start_s"]
    in_tasks = sum(t["call_s"] for t in tasks)
    return {
        "python start + exit (outside the driver)": flow["wall_s"] - inside["end_s"],
        "import flows/pipeline.py (prefect, segflow)": inside["import_s"],
        "flow start -> first task (server, flow run)": first_task,
        "git/dvc subprocesses (stage work inside)": dvc_s,
        "task bodies outside subprocesses": bodies_not_subprocess,
        "Prefect cost of tasks (call - body)": task_overhead,
        "flow body outside tasks, after first task": inside["flow_s"] - first_task - in_tasks,
        "n_tasks": len(tasks),
    }


def per_stage_noop(scratch: Scratch, stages: list[str], n: int = 3) -> dict[str, dict[str, float]]:
    """The up-to-date pipeline: `dvc repro STAGE` (what each flow task runs) and with
    `--single-item` (no upstream check), median seconds per stage."""
    out = {}
    for stage in stages:
        target = stage.split("@")[0]
        rows = {}
        for label, args in {"repro": ["repro", target], "single_item": ["repro", "--single-item", target]}.items():
            rows[label] = statistics.median(scratch.dvc(*args)[1] for _ in range(n))
        out[target] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="plain/flow pairs, alternated (median reported)")
    parser.add_argument("--cases", type=int, default=None, help="only the dataset's first N cases (default: all)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[])
    parser.add_argument("--api-url", default=None, help="a running Prefect server's API (default: ephemeral)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out-name", default="flow_overhead", help="results file name under bench/results")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segflow-flow-bench-"))
    scratch = make_scratch(workdir, SMALL + args.overrides, cases=args.cases)
    if args.api_url:
        scratch.env["PREFECT_API_URL"] = args.api_url
    _, build_s = scratch.dvc("repro")  # warm-up: file caches, imports compiled
    scratch.commit("bench: pipeline built")
    _, prefect_cold_s = scratch.run([str(BIN / "python"), "-c", WARM_PREFECT])  # fresh PREFECT_HOME: DB created
    runs = []
    for _ in range(args.pairs):
        runs.append(("plain", run_plain(scratch)))
        runs.append(("flow", run_flow(scratch)))
    plain = [r for kind, r in runs if kind == "plain"]
    flows = [r for kind, r in runs if kind == "flow"]
    for kind, run in runs:
        if sorted(run["ran"]) != sorted(plain[0]["ran"]):
            raise BenchError(f"{kind} ran {run['ran']}, plain ran {plain[0]['ran']}: not the same work")
    plain_med = statistics.median(r["wall_s"] for r in plain)
    flow_med = statistics.median(r["wall_s"] for r in flows)
    parts = [breakdown(f) for f in flows]
    parts_med = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    stages = plain[0]["ran"]
    per_stage = per_stage_noop(scratch, stages)
    results = {"project": str(scratch.root), "cases": args.cases or "all", "prefect_mode":
               f"server {args.api_url}" if args.api_url else "ephemeral (no PREFECT_API_URL: Prefect's temporary server)",
               "params_overrides": SMALL + args.overrides, "stages": stages, "build_s": build_s,
               "prefect_first_run_fresh_home_s": prefect_cold_s,
               "plain_s": [r["wall_s"] for r in plain], "flow_s": [r["wall_s"] for r in flows],
               "plain_median_s": plain_med, "flow_median_s": flow_med, "ratio": flow_med / plain_med,
               "goal_ratio": 1.10, "goal_met": flow_med / plain_med <= 1.10,
               "flow_breakdown_median_s": parts_med, "per_stage_noop_s": per_stage,
               "runs": [{"kind": k, **{key: v for key, v in r.items() if key != "inside"}} for k, r in runs],
               "flow_inside": [f["inside"] for f in flows]}
    rows = [["plain dvc repro", f"{plain_med:.2f}", " ".join(f"{r['wall_s']:.1f}" for r in plain)],
            ["Prefect flow", f"{flow_med:.2f}", " ".join(f"{r['wall_s']:.1f}" for r in flows)],
            ["ratio flow/plain", f"{flow_med / plain_med:.3f}", "goal <= 1.10"],
            ["flow - plain", f"{flow_med - plain_med:.2f}", ""]]
    rows += [[f"  {k}", f"{v:.2f}" if k != "n_tasks" else f"{v:.0f}", ""] for k, v in parts_med.items()]
    rows += [[f"  no-op dvc repro {s} / --single-item", f"{v['repro']:.2f} / {v['single_item']:.2f}", ""]
             for s, v in per_stage.items()]
    report(args.out_name, results, rows, ["what", "median s", "runs"])
    print(f"\nPrefect: {results['prefect_mode']}; first run on a fresh PREFECT_HOME {prefect_cold_s:.1f} s "
          f"(not in the ratio); goal ratio <= 1.10: {'met' if results['goal_met'] else 'NOT met'}")
    if not args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
