"""DVC caching, measured: the time of a no-op `dvc repro` after a full run, and which stages each
single param change reruns, checked against the params each stage declares in dvc.yaml.

    .venv/bin/python -m bench.dvc_noop                    # full Hippocampus data, small params
    .venv/bin/python -m bench.dvc_noop --cases 13         # a 13-case project (fewer files to check)
    .venv/bin/python -m bench.dvc_noop -n 10 --profile    # + cProfile of one no-op, top functions
    .venv/bin/python -m bench.dvc_noop --change train.lr=0.002 --change model.num_res_units=2

What a run does, in a scratch folder (never this repo's own DVC workspace):
1. `git clone` of this repo at HEAD into DIR/x, `DIR/shared` -> ../shared (data.local_copy
   resolves), the bench's OVERLAY files copied over the clone (this session's uncommitted code),
   params shrunk for speed (SMALL, plus `-S`), `segflow fetch-data`, all committed.
   The clone's own code runs (`PYTHONPATH=DIR/x/src`), with this repo's venv tools on PATH.
2. A full `dvc repro` (timed), one untimed no-op, then N timed no-op `dvc repro` runs, N
   `dvc status` and N `dvc --version` (the interpreter + DVC import floor).
3. For each `--change KEY=VALUE`: `dvc status --json` (stages DVC sees changed directly), then
   `dvc repro` (stages that ran, from DVC's "Running stage" lines), then params, dvc.lock and
   outputs restored (and `dvc status` checked clean). Expected: the stages whose declared params
   cover KEY (a section or the whole file covers its keys), plus stages the change adds (a new
   fold); what runs after them must be downstream of them.

The scratch helpers here (`make_scratch`, `Scratch`) are shared by flow_overhead.py and
predict_time.py. Results: a table on stdout, JSON in bench/results/dvc_noop[_casesN].json.
"""

from __future__ import annotations

import argparse
import cProfile  # noqa: F401 - documented: the profile runs `python -m cProfile`
import json
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import report

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
SHARED = REPO.parent / "shared"
DATASET = SHARED / "datasets" / "Task04_Hippocampus"
# This session's files: measured as they are in the working tree, not as committed.
OVERLAY = ("flows/pipeline.py", "src/segflow/inference/predict.py", "src/segflow/inference/sliding_window.py",
           "src/segflow/cli.py", "src/segflow/env.py")
# A pipeline that runs in about a minute on 2 CPU cores, with every stage doing its real kind of work.
SMALL = ["preprocess.patch_size=[32,48,32]", "augment.preview_samples=2", "model.channels=[8,16,32]",
         "model.strides=[2,2]", "model.num_res_units=1", "train.epochs=1", "train.batch_size=2",
         "train.val_every=1", "evaluate.overlay_cases=1", "evaluate.tta=false", "register.min_mean_dice=0.0",
         "register.export=[]"]
CHANGES = ["train.lr=0.002", "evaluate.tta=true", "augment.noise_prob=0.2", "validate.outlier_z=4.0",
           "split.folds=[0,1]", "register.min_gain=0.01"]


class BenchError(Exception):
    """A step failed; the message names it and carries the command's output tail."""


# --- scratch project (shared with flow_overhead.py and predict_time.py) ---------------------------


@dataclass
class Scratch:
    """A scratch clone of this repo at `root` (DIR/x), with the environment its commands run in."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    last_cpu_s: float = 0.0  # user + system CPU seconds of the last command and the processes it waited for

    def run(self, cmd: list[str], check: bool = True, timeout: float | None = None) -> tuple[str, float]:
        """(stdout + stderr, wall seconds) of `cmd` in the project."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed ({done.returncode}) in {self.root}:\n{output[-3000:]}")
        return output, seconds

    def dvc(self, *args: str, check: bool = True) -> tuple[str, float]:
        return self.run([str(BIN / "dvc"), *args], check=check)

    def git(self, *args: str) -> str:
        return self.run(["git", *args])[0]

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.run(["git", "commit", "-qm", message], check=False)  # nothing to commit is fine


def scratch_env(root: Path) -> dict[str, str]:
    """This repo's venv first on PATH, the clone's code first on PYTHONPATH, segflow's project
    defaults for `root` (Prefect and W&B state inside it), W&B off."""
    from segflow.env import project_env

    env = {**os.environ, **project_env(root)}  # the scratch project's state, not the caller's
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["PYTHONPATH"] = str(root / "src")
    env["SEGFLOW_TRACKING"] = "off"
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("PREFECT_API_URL", None)
    return env


def copy_cases(dest: Path, n_cases: int) -> None:
    """The dataset's first `n_cases` training entries (the source's defects as they come)."""
    descriptor = json.loads((DATASET / "dataset.json").read_text())
    entries = descriptor["training"][:n_cases]
    for folder in ("imagesTr", "labelsTr"):
        (dest / folder).mkdir(parents=True)
    for entry in entries:
        for key in ("image", "label"):
            source = DATASET / entry[key]
            if source.exists():
                shutil.copy2(source, dest / entry[key])
    descriptor.update(training=entries, numTraining=len(entries))
    (dest / "dataset.json").write_text(json.dumps(descriptor, indent=1))


def make_scratch(workdir: Path, overrides: list[str], cases: int | None = None,
                 overlay: tuple[str, ...] = OVERLAY) -> Scratch:
    """`git clone` of this repo into WORKDIR/x with ../shared linked, OVERLAY files copied in,
    params overridden, the data fetched (all cases, or the first `cases`) and all committed."""
    from segflow.overrides import apply_overrides

    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "x"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    if not (workdir / "shared").exists():
        (workdir / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    for name in overlay:
        shutil.copy2(REPO / name, root / name)
    scratch = Scratch(root, scratch_env(root))
    scratch.git("config", "user.email", "bench@localhost")
    scratch.git("config", "user.name", "segflow bench")
    scratch.dvc("config", "core.analytics", "false")
    apply_overrides(root / "params.yaml", overrides)
    if cases:
        copy_cases(root / "data" / "Task04_Hippocampus", cases)
    scratch.run([str(BIN / "segflow"), "fetch-data"])
    scratch.commit("bench scratch project")
    return scratch


def stages_ran(output: str) -> list[str]:
    """Stages `dvc repro` ran (or restored from the run-cache), in order, from its log lines."""
    pattern = r"(?:Running stage|Stage) '([^']+)'(?::| is cached)"
    return list(dict.fromkeys(re.findall(pattern, output)))


def median_of(fn, n: int) -> tuple[float, list[float]]:
    times = [fn() for _ in range(n)]
    return statistics.median(times), times


# --- what each stage declares ---------------------------------------------------------------------


def stage_graph(root: Path) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """({stage: declared param keys, '*' for a whole params file}, {stage: stages downstream})."""
    import contextlib

    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    declared: dict[str, list[str]] = {}
    # DVC names stages relative to the working directory, as `dvc repro` in the project prints them.
    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        for stage in graph.nodes:
            keys = []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    keys += list(dep.params) or ["*"]
            declared[stage.addressing] = keys
        downstream = {stage.addressing: {s.addressing for s in nx.ancestors(graph, stage)} for stage in graph.nodes}
    return declared, downstream


def covers(declared: list[str], key: str) -> bool:
    return any(k == "*" or k == key or key.startswith(f"{k}.") for k in declared)


def changed_stages(scratch: Scratch) -> list[str]:
    output, _ = scratch.dvc("status", "--json")
    return sorted(json.loads(output[output.index("{"):]).keys()) if "{" in output else []


# --- restore after a change -----------------------------------------------------------------------


@dataclass
class Snapshot:
    """What `dvc checkout` cannot restore: params.yaml, dvc.lock, uncached outputs, the file list."""

    files: dict[str, bytes]
    artifacts: set[Path]

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        names = ["params.yaml", "dvc.lock", *uncached_outputs(root)]
        files = {name: (root / name).read_bytes() for name in names if (root / name).is_file()}
        return cls(files, {p for p in (root / "artifacts").rglob("*") if p.is_file()})

    def restore(self, scratch: Scratch) -> None:
        for name, content in self.files.items():
            (scratch.root / name).write_bytes(content)
        for path in (scratch.root / "artifacts").rglob("*"):
            if path.is_file() and path not in self.artifacts:
                path.unlink()  # an output of a stage the change added (e.g. a new fold)
        scratch.dvc("checkout", "--force", "--quiet")
        for name, content in self.files.items():  # checkout may touch uncached outputs
            (scratch.root / name).write_bytes(content)


def uncached_outputs(root: Path) -> list[str]:
    import yaml

    names = []
    for stage in (yaml.safe_load((root / "dvc.yaml").read_text())["stages"]).values():
        for section in ("outs", "metrics", "plots"):
            for entry in stage.get(section) or []:
                if isinstance(entry, dict):
                    names += [path for path, opts in entry.items() if (opts or {}).get("cache") is False]
    return names


# --- measurements ---------------------------------------------------------------------------------


def time_noop(scratch: Scratch, n: int) -> dict:
    _, warm = scratch.dvc("repro")
    out = {}
    for name, args in {"dvc repro (no-op)": ["repro"], "dvc status": ["status"],
                       "dvc --version (floor)": ["--version"]}.items():
        runs = []
        for _ in range(n):
            output, seconds = scratch.dvc(*args)
            if args == ["repro"] and stages_ran(output):
                raise BenchError(f"the no-op repro ran {stages_ran(output)}: the pipeline is not up to date")
            runs.append(seconds)
        out[name] = {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs), "runs_s": runs}
    out["first no-op after the build"] = {"median_s": warm}
    return out


def profile_noop(scratch: Scratch, top: int) -> dict:
    """cProfile of one no-op `dvc repro`: the top functions by cumulative time, and the share
    spent hashing files and in DVC's state database."""
    dump = scratch.root / ".segflow" / "noop.prof"
    dump.parent.mkdir(parents=True, exist_ok=True)
    scratch.run([str(BIN / "python"), "-m", "cProfile", "-o", str(dump), "-m", "dvc", "repro"])
    stats = pstats.Stats(str(dump))
    total = max(v[3] for v in stats.stats.values())
    rows = sorted(((f"{Path(f).parent.name}/{Path(f).name}:{fn}", v[3], v[1]) for (f, _, fn), v in stats.stats.items()),
                  key=lambda r: r[1], reverse=True)
    picks = {"hashing (file_md5)": r"hash\.py:file_md5$", "state db": r"state\.py:(get|save|get_many|save_many)$",
             "os.stat/scandir": r"^~/:<(built-in method posix\.(stat|scandir|lstat))>",
             "params.yaml/dvc.yaml load": r"(serialize|yaml)\.py:(load_yaml|parse_yaml)",
             "imports": r"<frozen importlib\._bootstrap>:_find_and_load$",
             "stage changed checks": r"__init__\.py:changed$", "git (scmrepo)": r"scmrepo.*:__init__$"}
    shares = {}
    for label, pattern in picks.items():
        matches = [r for r in rows if re.search(pattern, r[0])]
        shares[label] = {"cumulative_s": max((r[1] for r in matches), default=0.0),
                         "calls": sum(r[2] for r in matches)}
    return {"total_s": total, "top": [{"function": f, "cumulative_s": c, "calls": k} for f, c, k in rows[:top]],
            "shares": shares}


def measure_change(scratch: Scratch, change: str, before: dict, snapshot: Snapshot) -> dict:
    from segflow.overrides import apply_overrides

    key = change.partition("=")[0]
    apply_overrides(scratch.root / "params.yaml", [change])
    declared, downstream = stage_graph(scratch.root)
    expected = sorted(s for s, keys in declared.items() if covers(keys, key) or s not in before)
    direct = changed_stages(scratch)
    output, seconds = scratch.dvc("repro")
    ran = stages_ran(output)
    reach = set(expected).union(*(downstream[s] for s in expected)) if expected else set()
    snapshot.restore(scratch)
    left = changed_stages(scratch)
    problems = []
    if direct != expected:
        problems.append(f"dvc status sees {direct}, declared {expected}")
    if not set(expected) <= set(ran):
        problems.append(f"declared but not run: {sorted(set(expected) - set(ran))}")
    if not set(ran) <= reach:
        problems.append(f"ran but not downstream of a declaring stage: {sorted(set(ran) - reach)}")
    if left:
        problems.append(f"not clean after restore: {left}")
    return {"change": change, "declared_by": expected, "status_changed": direct, "ran": ran,
            "repro_s": seconds, "verdict": "ok" if not problems else "; ".join(problems)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="timed no-op runs (median reported)")
    parser.add_argument("--cases", type=int, default=None, help="only the dataset's first N cases (default: all)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[],
                        help="params override on top of the small preset, e.g. train.epochs=2")
    parser.add_argument("--change", action="append", default=None, help=f"param change to check (default: {CHANGES})")
    parser.add_argument("--no-changes", action="store_true", help="only the no-op timing")
    parser.add_argument("--profile", action="store_true", help="cProfile one no-op repro")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept; default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segflow-dvc-noop-"))
    scratch = make_scratch(workdir, SMALL + args.overrides, cases=args.cases)
    _, build_s = scratch.dvc("repro")
    scratch.commit("bench: pipeline built")
    noop = time_noop(scratch, args.n)
    files = {name: sum(1 for p in (scratch.root / name).rglob("*") if p.is_file()) for name in ("data", "artifacts")}
    results = {"project": str(scratch.root), "cases": args.cases or "all", "params_overrides": SMALL + args.overrides,
               "files": files, "full_repro_s": build_s, "noop": noop, "goal_noop_s": 2.0,
               "goal_met": noop["dvc repro (no-op)"]["median_s"] <= 2.0}
    rows = [[name, f"{v['median_s']:.2f}", f"{v.get('min_s', v['median_s']):.2f}", f"{v.get('max_s', v['median_s']):.2f}"]
            for name, v in noop.items()]
    rows.append(["full dvc repro (build)", f"{build_s:.1f}", "", ""])
    if args.profile:
        results["profile"] = profile_noop(scratch, args.top)
    if not args.no_changes:
        before = set(stage_graph(scratch.root)[0])
        snapshot = Snapshot.take(scratch.root)
        results["changes"] = [measure_change(scratch, change, before, snapshot) for change in args.change or CHANGES]
    name = "dvc_noop" if not args.cases else f"dvc_noop_cases{args.cases}"
    report(name, results, rows, ["what", "median s", "min s", "max s"])
    print(f"\nfiles: {files}; goal no-op <= 2 s: {'met' if results['goal_met'] else 'NOT met'}")
    if "profile" in results:
        prof = results["profile"]
        print(f"\nprofile of one no-op ({prof['total_s']:.2f} s in-process):")
        for label, share in prof["shares"].items():
            print(f"  {label:28s} {share['cumulative_s']:6.2f} s  ({share['calls']} calls)")
        for row in prof["top"]:
            print(f"  {row['cumulative_s']:6.2f} s  {row['calls']:6d}  {row['function']}")
    if "changes" in results:
        from tabulate import tabulate

        print("\nparam change -> stages rerun\n")
        print(tabulate([[c["change"], " ".join(c["declared_by"]), " ".join(c["status_changed"]), " ".join(c["ran"]),
                         f"{c['repro_s']:.1f}", c["verdict"]] for c in results["changes"]],
                       headers=["change", "declared by", "dvc status", "dvc repro ran", "s", "verdict"]))
    if not args.workdir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
