"""The Prefect flow against plain `dvc repro`: same pipeline, same params, same project state, runs
alternated (plain, flow, plain, flow, ...); the ratio flow/plain of the medians, and where the
flow's extra time goes.

    .venv/bin/python -m bench.flow_overhead                  # 3 pairs, full data, small params
    .venv/bin/python -m bench.flow_overhead --pairs 2 --cases 13
    .venv/bin/python -m bench.flow_overhead --api-url http://127.0.0.1:4200/api   # a running server
    .venv/bin/python -m bench.flow_overhead --baseline-flow HEAD   # + the committed flow, alternated

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
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import report
from bench.dvc_noop import BIN, REPO, SMALL, BenchError, Scratch, make_scratch, stages_ran

# Runs the flow as `python flows/pipeline.py` does, timing it from inside: the import, each task
# call and its body (Prefect's cost is the difference), and each git/DVC subprocess.
DRIVER = r'''
import functools, json, os, re, sys, time
t0 = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("pipeline", sys.argv[1])
pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline)
from prefect import Task
from segflow.processes import commands
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
flow_body, marks = pipeline.segflow_pipeline.fn, {}
@functools.wraps(flow_body)
def timed_flow_body(*args, **kwargs):
    marks["body_start_s"] = time.perf_counter() - t0
    try:
        return flow_body(*args, **kwargs)
    finally:
        marks["body_end_s"] = time.perf_counter() - t0
pipeline.segflow_pipeline.fn = timed_flow_body
flow_start = time.perf_counter()
state = pipeline.segflow_pipeline(project_dir=".", return_state=True)
flow_s = time.perf_counter() - flow_start
print("DRIVER " + json.dumps({"import_s": t_import, "flow_start_s": flow_start - t0, "flow_s": flow_s,
      "completed": state.is_completed(), "message": state.message, "tasks": tasks,
      "subprocesses": subprocesses, "end_s": time.perf_counter() - t0, **marks}))
'''

# A first flow on a fresh PREFECT_HOME creates Prefect's database; timed apart, outside the ratio.
WARM_PREFECT = ("from segflow.env import apply_project_env\napply_project_env()\n"
                "from prefect import flow\nflow(name='warm-up')(lambda: 1)()")


def reset(scratch: Scratch) -> None:
    """Make every stage run again, from the same state, without a cache hit hiding its work."""
    (scratch.root / "dvc.lock").unlink(missing_ok=True)
    for name in (".dvc/cache/runs", "artifacts/checkpoints", "registry"):
        shutil.rmtree(scratch.root / name, ignore_errors=True)


def warm_up(scratch: Scratch, small_first: bool) -> float:
    """One untimed build (file caches, compiled imports); returns its seconds. With `small_first`
    it builds with the small params, then puts the measured params.yaml back: a warm-up of the
    default pipeline would cost a whole extra run."""
    from segflow.overrides import apply_overrides

    if small_first:
        apply_overrides(scratch.root / "params.yaml", SMALL)
    _, seconds = scratch.dvc("repro")
    if small_first:
        scratch.git("checkout", "--", "params.yaml")
    scratch.commit("bench: pipeline built")
    return seconds


def run_plain(scratch: Scratch) -> dict:
    reset(scratch)
    output, seconds = scratch.dvc("repro")
    return {"wall_s": seconds, "cpu_s": scratch.last_cpu_s, "ran": stages_ran(output), "load_1m": os.getloadavg()[0]}


def run_flow(scratch: Scratch, flow_file: str = "flows/pipeline.py") -> dict:
    reset(scratch)
    output, seconds = scratch.run([str(BIN / "python"), "-c", DRIVER, flow_file])
    line = next((ln for ln in output.splitlines() if ln.startswith("DRIVER ")), None)
    if line is None:
        raise BenchError(f"the flow driver printed no timings:\n{output[-3000:]}")
    inside = json.loads(line.removeprefix("DRIVER "))
    if not inside["completed"]:
        raise BenchError(f"the flow did not complete: {inside['message']}\n{output[-3000:]}")
    ran = [stage for call in inside["subprocesses"] for stage in call["ran"]]
    return {"wall_s": seconds, "cpu_s": scratch.last_cpu_s, "ran": ran, "inside": inside,
            "load_1m": os.getloadavg()[0]}


def breakdown(flow: dict) -> dict[str, float]:
    """Where one flow run's wall time went (seconds)."""
    inside = flow["inside"]
    tasks = inside["tasks"]
    stage_calls = [c for c in inside["subprocesses"] if c["what"].startswith("dvc repro")]
    other_calls = [c for c in inside["subprocesses"] if not c["what"].startswith("dvc repro")]
    subprocess_s = sum(c["seconds"] for c in inside["subprocesses"])
    first_task = min((t["start_s"] for t in tasks), default=inside["body_start_s"])
    in_tasks = sum(t["call_s"] for t in tasks)
    flow_end = inside["flow_start_s"] + inside["flow_s"]
    return {
        "python start + exit (server stop, log flush)": flow["wall_s"] - inside["end_s"],
        "import flows/pipeline.py (prefect, segflow)": inside["import_s"],
        "flow call -> flow body (ephemeral server start, flow run)": inside["body_start_s"] - inside["flow_start_s"],
        "flow body -> first task (workspace lock)": first_task - inside["body_start_s"],
        "dvc repro STAGE subprocesses (stage work inside)": sum(c["seconds"] for c in stage_calls),
        "other git/dvc subprocesses (dvc push)": sum(c["seconds"] for c in other_calls),
        "task bodies outside subprocesses": sum(t.get("body_s", 0.0) for t in tasks) - subprocess_s,
        "Prefect cost of tasks (call - body)": sum(t["call_s"] - t.get("body_s", 0.0) for t in tasks),
        "flow body outside tasks": inside["body_end_s"] - first_task - in_tasks,
        "flow body end -> flow call returns (final state, result)": flow_end - inside["body_end_s"],
        "n_tasks": len(tasks),
    }


def overhead_model(results: dict, per_stage: dict) -> list[list]:
    """The flow's extra time from parts measured apart (robust where other work makes the wall
    times of whole runs noisy): Prefect's fixed cost (measured inside the flow process), its own
    extra step (dvc push), and the extra DVC start-ups and upstream checks of one `dvc repro` per
    stage, taken from the no-op timings: sum over the flow's stage calls minus one `dvc repro`."""
    rows = []
    fixed_keys = ["python start + exit (server stop, log flush)", "import flows/pipeline.py (prefect, segflow)",
                  "flow call -> flow body (ephemeral server start, flow run)", "flow body -> first task (workspace lock)",
                  "task bodies outside subprocesses", "Prefect cost of tasks (call - body)", "flow body outside tasks",
                  "flow body end -> flow call returns (final state, result)"]
    for arm, data in results["arms"].items():
        parts = data["breakdown_median_s"]
        fixed = sum(parts[k] for k in fixed_keys)
        push = parts["other git/dvc subprocesses (dvc push)"]
        calls = [c for c in data["stage_calls"] if c.startswith("dvc repro")]
        dvc_extra = sum(per_stage[c.split()[-1]]["single_item" if "--single-item" in c else "repro"] for c in calls)
        dvc_extra -= per_stage["(all) dvc repro"]["repro"]
        total = fixed + push + dvc_extra
        data["overhead_model_s"] = {"prefect_fixed": fixed, "dvc_push": push, "extra_dvc_invocations": dvc_extra,
                                    "total": total, "ratio_estimate": 1 + total / results["plain_median_s"]}
        rows += [[f"{arm}: modelled overhead (Prefect fixed + push + extra dvc)",
                  f"{total:.2f}", f"{fixed:.2f} + {push:.2f} + {dvc_extra:.2f}; ratio "
                                  f"{1 + total / results['plain_median_s']:.3f} on plain's median"]]
    return rows


def per_stage_noop(scratch: Scratch, stages: list[str], n: int = 3) -> dict[str, dict[str, float]]:
    """The up-to-date pipeline: `dvc repro STAGE` (what each flow task runs) and with
    `--single-item` (no upstream check), median seconds per stage."""
    out = {"(all) dvc repro": {"repro": statistics.median(scratch.dvc("repro")[1] for _ in range(n))}}
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
    parser.add_argument("--default-params", action="store_true",
                        help="measure the repo's params.yaml as `make run` does (not the small params); "
                             "the warm-up build still uses the small ones")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[])
    parser.add_argument("--api-url", default=None, help="a running Prefect server's API (default: ephemeral)")
    parser.add_argument("--baseline-flow", default=None, metavar="REV",
                        help="also time flows/pipeline.py as of this git revision (e.g. HEAD), alternated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out-name", default="flow_overhead", help="results file name under bench/results")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segflow-flow-bench-"))
    measured = args.overrides if args.default_params else SMALL + args.overrides
    scratch = make_scratch(workdir, measured, cases=args.cases)
    if args.api_url:
        scratch.env["PREFECT_API_URL"] = args.api_url
    build_s = warm_up(scratch, small_first=args.default_params)
    _, prefect_cold_s = scratch.run([str(BIN / "python"), "-c", WARM_PREFECT])  # fresh PREFECT_HOME: DB created
    arms = {"flow": "flows/pipeline.py"}
    if args.baseline_flow:  # that revision's flows/pipeline.py beside this one (same project and library)
        baseline = scratch.root / "flows" / "pipeline_baseline.py"
        baseline.write_text(subprocess.run(["git", "-C", str(REPO), "show", f"{args.baseline_flow}:flows/pipeline.py"],
                                           capture_output=True, text=True, check=True).stdout)
        arms["flow baseline"] = "flows/pipeline_baseline.py"
    runs: list[tuple[str, dict]] = []
    for _ in range(args.pairs):  # plain, flow[, flow baseline], plain, flow, ...
        runs.append(("plain", run_plain(scratch)))
        runs += [(arm, run_flow(scratch, path)) for arm, path in arms.items()]
    results, rows = summarise(runs, list(arms))
    per_stage = per_stage_noop(scratch, results["stages"])
    results.update({"project": str(scratch.root), "cases": args.cases or "all", "prefect_mode":
                    f"server {args.api_url}" if args.api_url else "ephemeral (no PREFECT_API_URL: Prefect's temporary server)",
                    "params_overrides": measured, "build_s": build_s,
                    "prefect_first_run_fresh_home_s": prefect_cold_s, "baseline_flow_rev": args.baseline_flow,
                    "per_stage_noop_s": per_stage})
    rows += [[f"no-op dvc repro {s} / --single-item", f"{v['repro']:.2f} / {v.get('single_item', float('nan')):.2f}", ""]
             for s, v in per_stage.items()]
    rows += overhead_model(results, per_stage)
    report(args.out_name, results, rows, ["what", "median s", "runs"])
    print(f"\nPrefect: {results['prefect_mode']}; first run on a fresh PREFECT_HOME {prefect_cold_s:.1f} s "
          f"(not in the ratio); goal ratio <= 1.10: {'met' if results['goal_met'] else 'NOT met'}")
    if not args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def summarise(runs: list[tuple[str, dict]], arms: list[str]) -> tuple[dict, list[list]]:
    """Medians per arm, ratios to plain, the flow's breakdown; checks every run did the same stages."""
    plain = [r for kind, r in runs if kind == "plain"]
    for kind, run in runs:
        if sorted(run["ran"]) != sorted(plain[0]["ran"]):
            raise BenchError(f"{kind} ran {run['ran']}, plain ran {plain[0]['ran']}: not the same work")
    plain_med = statistics.median(r["wall_s"] for r in plain)
    plain_cpu = statistics.median(r["cpu_s"] for r in plain)
    results = {"stages": plain[0]["ran"], "plain_s": [r["wall_s"] for r in plain], "plain_median_s": plain_med,
               "plain_cpu_median_s": plain_cpu,
               "goal_ratio": 1.10, "arms": {},
               "runs": [{"kind": k, **{key: v for key, v in r.items() if key != "inside"}} for k, r in runs]}
    rows = [["plain dvc repro", f"{plain_med:.2f}", " ".join(f"{r['wall_s']:.1f}" for r in plain)],
            ["  CPU s (user+sys, process tree)", f"{plain_cpu:.2f}", " ".join(f"{r['cpu_s']:.1f}" for r in plain)]]
    for arm in arms:
        flows = [r for kind, r in runs if kind == arm]
        med = statistics.median(r["wall_s"] for r in flows)
        cpu = statistics.median(r["cpu_s"] for r in flows)
        parts = [breakdown(f) for f in flows]
        parts_med = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        results["arms"][arm] = {"runs_s": [r["wall_s"] for r in flows], "median_s": med, "ratio": med / plain_med,
                                "cpu_median_s": cpu, "cpu_ratio": cpu / plain_cpu,
                                "stage_calls": [c["what"] for c in flows[0]["inside"]["subprocesses"]],
                                "breakdown_median_s": parts_med, "inside": [f["inside"] for f in flows]}
        rows += [[f"{arm} (Prefect)", f"{med:.2f}", " ".join(f"{r['wall_s']:.1f}" for r in flows)],
                 ["  CPU s (user+sys, process tree)", f"{cpu:.2f}", " ".join(f"{r['cpu_s']:.1f}" for r in flows)],
                 [f"  ratio {arm}/plain", f"{med / plain_med:.3f}", f"goal <= 1.10; CPU ratio {cpu / plain_cpu:.3f}"],
                 [f"  {arm} - plain", f"{med - plain_med:.2f}", ""]]
        rows += [[f"    {k}", f"{v:.2f}" if k != "n_tasks" else f"{v:.0f}", ""] for k, v in parts_med.items()]
    results["ratio"] = results["arms"]["flow"]["ratio"]
    results["goal_met"] = results["ratio"] <= 1.10
    return results, rows


if __name__ == "__main__":
    sys.exit(main())
