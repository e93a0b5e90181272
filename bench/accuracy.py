"""Accuracy benchmark (issue #4): Dice per class with 95% bootstrap CIs, wall-clock per stage and
the Dice-vs-training-time curve of the default pipeline, against the target "mean Dice >= 0.89
within 20 minutes on 2 CPU cores".

Default: clone this repository at HEAD into a scratch folder, fetch the data, apply `-S`
overrides to the clone's params.yaml, run every DVC stage in DAG order (each timed), report.
`--project-dir DIR --no-run` reports on an existing project's artifacts instead.

    .venv/bin/python -m bench.accuracy                       # the default `make run`, measured
    .venv/bin/python -m bench.accuracy -S train.epochs=10    # with overrides (as `dvc exp run -S`)
    .venv/bin/python -m bench.accuracy --project-dir . --no-run
    .venv/bin/python -m bench.accuracy --budgets 5m,10m,20m  # one fresh clone per train.budget

Results: a table on stdout, JSON at --out (default bench/results/accuracy.json) and a PNG of
Dice vs training minutes beside it. A failing stage exits 1 with a one-line message naming it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.common import machine_info

REPO = Path(__file__).resolve().parents[1]

DEFAULT_OUT = REPO / "bench" / "results" / "accuracy.json"
SWEEP_OUT = REPO / "bench" / "results" / "budget_sweep.json"
TARGET_DICE = 0.89
TARGET_MINUTES = 20.0
FETCH_STEP = "fetch-data"


class BenchError(Exception):
    """A failure reported as one line (no traceback): a stage, the clone, a missing file."""


# --- params overrides (`-S key=value`, as `dvc exp run -S`) ---------------------------------------


def write_params(project: Path, overrides: list[str]) -> None:
    """Apply `-S` overrides to the project's params.yaml through segflow's own override code
    (DVC's Hydra grammar, typed-config check, atomic write); untouched when there are none."""
    from segflow.config import ConfigError
    from segflow.overrides import apply_overrides

    try:
        apply_overrides(project / "params.yaml", overrides)
    except ConfigError as exc:
        raise BenchError(str(exc)) from None


# --- the scratch project ---------------------------------------------------------------------------


def run_command(cmd: list[str], cwd: Path, env: dict | None = None,
                log: Path | None = None) -> tuple[int, float]:
    """Run `cmd`; output to `log` (or captured and dropped). Returns (exit code, seconds)."""
    start = time.perf_counter()
    if log is None:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            done = subprocess.run(cmd, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return done.returncode, time.perf_counter() - start


def git_output(repo: Path, *args: str) -> str | None:
    """stdout of a read-only git command in `repo`, or None when it fails (e.g. not a repo)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def clone_repo(repo: Path, dest: Path) -> None:
    """`git clone` of `repo` at HEAD into `dest` (which must be absent or empty)."""
    if dest.exists() and any(dest.iterdir()):
        raise BenchError(f"workdir {dest} is not empty")
    done = subprocess.run(["git", "clone", "--quiet", str(repo), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git clone of {repo} failed: {done.stderr.strip().splitlines()[-1:]}")
    if git_output(dest, "config", "user.email") is None:  # DVC needs a git identity
        subprocess.run(["git", "-C", str(dest), "config", "user.email", "bench@localhost"], check=True)
        subprocess.run(["git", "-C", str(dest), "config", "user.name", "segflow bench"], check=True)


def copy_uncommitted(repo: Path, clone: Path) -> list[str]:
    """Overlay the repo's uncommitted changes (modified, new, deleted files) onto the clone."""
    listed = git_output(repo, "ls-files", "-z", "--modified", "--others", "--exclude-standard") or ""
    changed = sorted({name for name in listed.split("\0") if name})
    for name in changed:
        source, target = repo / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.is_file():
            target.unlink()
    return changed


def link_shared(repo: Path, clone: Path) -> None:
    """Make `../shared` (params data.local_copy) resolve from the clone as it does from the repo."""
    shared, beside_clone = repo.parent / "shared", clone.parent / "shared"
    if shared.is_dir() and not beside_clone.exists() and not beside_clone.is_symlink():
        beside_clone.symlink_to(shared.resolve(), target_is_directory=True)


def bench_env(repo: Path, clone: Path, track: bool) -> dict[str, str]:
    """The repo's venv tools on PATH, the clone's code first on PYTHONPATH (it is what's measured)."""
    env = dict(os.environ)
    env["PATH"] = f"{repo / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(clone / "src")
    env["DVC_NO_ANALYTICS"] = "1"
    if not track:
        env["SEGFLOW_TRACKING"] = "off"
    env.setdefault("SEGFLOW_RUN_GROUP", f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    return env


def venv_tool(repo: Path, name: str) -> str:
    """Path of a tool in the repo's venv (the clone has no venv of its own)."""
    tool = repo / ".venv" / "bin" / name
    if not tool.exists():
        raise BenchError(f"{tool} not found; run `make setup` in {repo} first")
    return str(tool)


# --- stage order and timing --------------------------------------------------------------------


def dag_edges(dot: str) -> list[tuple[str, str]]:
    """Edges of `dvc dag --dot` output: [("ingest", "validate"), ...]."""
    return re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot)


def order_stages(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """`names` in dependency order, otherwise keeping their listed order (edges to others ignored)."""
    pending = list(names)
    needs = {name: {a for a, b in edges if b == name and a in names} for name in names}
    ordered: list[str] = []
    while pending:
        ready = next((n for n in pending if needs[n] <= set(ordered)), None)
        if ready is None:
            raise BenchError(f"dvc dag has a cycle among {pending}")
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def pipeline_stages(dvc: str, project: Path, env: dict) -> list[str]:
    """Stage names of the project's dvc.yaml (foreach expanded: train@0, ...) in DAG order."""
    def dvc_output(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dvc, *args], cwd=project, env=env, capture_output=True, text=True)

    listed, dot = dvc_output("stage", "list", "--name-only"), dvc_output("dag", "--dot")
    if listed.returncode or dot.returncode:
        raise BenchError(f"dvc could not read the pipeline: {(listed.stderr or dot.stderr).strip()[-300:]}")
    return order_stages(listed.stdout.split(), dag_edges(dot.stdout))


DVC_WRAPPER_ERROR = "ERROR: failed to reproduce"


def failure_cause(log: Path) -> str:
    """The line of a failed step's log that names the cause (the last one, skipping DVC's own
    "failed to reproduce" wrapper line after it), shortened."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(DVC_WRAPPER_ERROR)] or lines
    return causes[-1][:240] if causes else "(no output)"


def timed_step(name: str, cmd: list[str], project: Path, env: dict, log_dir: Path) -> float:
    """Run one step, print its time (stderr); a failure raises BenchError naming the step."""
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    log = log_dir / f"{name}.log"
    code, seconds = run_command(cmd, project, env, log)
    if code != 0:
        raise BenchError(f"stage '{name}' failed (exit {code}) after {seconds:.1f} s: {failure_cause(log)} "
                         f"[log: {log}]")
    print(f"[bench] {name} done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def run_pipeline(repo: Path, project: Path, env: dict, log_dir: Path) -> tuple[dict[str, float], float]:
    """fetch-data, then each stage forced and alone (`dvc repro --single-item --force`), each timed.

    Returns ({step: seconds}, total seconds). Forcing makes a warm DVC/run cache unable to turn a
    stage into a cache hit: every number is a real run."""
    start = time.perf_counter()
    steps = {FETCH_STEP: timed_step(FETCH_STEP, [venv_tool(repo, "segflow"), "fetch-data"], project, env, log_dir)}
    dvc = venv_tool(repo, "dvc")
    for stage in pipeline_stages(dvc, project, env):
        steps[stage] = timed_step(stage, [dvc, "repro", "--single-item", "--force", stage], project, env, log_dir)
    return steps, time.perf_counter() - start


# --- reading the artifacts (pure: files in, values out) ------------------------------------------


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is absent."""
    return json.loads(path.read_text()) if path.is_file() else {}


def to_float(text: str | None) -> float:
    """A CSV cell as float; empty or unparsable cells are NaN."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values (NaN when there are none)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def class_names(columns: list[str]) -> list[str]:
    """Class names from per-case columns dice_<class> (dice_<class>_raw excluded)."""
    return [c[len("dice_"):] for c in columns if c.startswith("dice_") and not c.endswith("_raw")]


def summarize_per_case(rows: list[dict[str, str]], ci: Callable | None = None) -> dict:
    """Per-class and mean Dice with 95% bootstrap CIs, HD95 mean, cases and per-fold Dice.

    The mean's CI is over the per-case mean across classes. Args: ci: bootstrap_ci-like function
    (default segflow.metrics.statistics.bootstrap_ci)."""
    if ci is None:
        from segflow.metrics.statistics import bootstrap_ci as ci
    if not rows:
        raise BenchError("per_case.csv holds no cases")
    names = class_names(list(rows[0]))
    dice = {n: [to_float(r[f"dice_{n}"]) for r in rows] for n in names}
    case_means = [nanmean([dice[n][i] for n in names]) for i in range(len(rows))]
    hd95 = [nanmean([to_float(r.get(f"hd95_{n}")) for r in rows]) for n in names]
    return {
        "n_cases": len(rows),
        "folds": sorted({r["fold"] for r in rows if r.get("fold") not in (None, "")}, key=fold_key),
        "classes": {n: ci(dice[n]) for n in names},
        "dice_mean": ci(case_means),
        "hd95_mean": nanmean(hd95),
        "dice_mean_per_fold": per_fold_means(rows, case_means),
    }


def fold_key(fold: str) -> tuple:
    """Sort folds numerically where they are numbers."""
    return (0, int(fold), "") if fold.isdigit() else (1, 0, fold)


def per_fold_means(rows: list[dict[str, str]], case_means: list[float]) -> dict[str, float]:
    """Mean of the per-case mean Dice within each fold ({} when per_case.csv has no fold column)."""
    groups: dict[str, list[float]] = {}
    for row, value in zip(rows, case_means):
        if row.get("fold") not in (None, ""):
            groups.setdefault(row["fold"], []).append(value)
    return {fold: nanmean(groups[fold]) for fold in sorted(groups, key=fold_key)}


def training_curve(history: list[dict[str, str]], val_history: list[dict[str, str]]) -> list[dict]:
    """Validation Dice against cumulative training minutes (sum of history.csv `seconds` up to and
    including each validated epoch); epochs missing from history.csv are left out."""
    elapsed, total = {}, 0.0
    for row in sorted(history, key=lambda r: int(r["epoch"])):
        seconds = to_float(row["seconds"])
        total += 0.0 if math.isnan(seconds) else seconds
        elapsed[int(row["epoch"])] = total
    return [{"epoch": int(r["epoch"]), "minutes": round(elapsed[int(r["epoch"])] / 60, 3),
             "val_dice_mean": to_float(r["val_dice_mean"])}
            for r in val_history if int(r["epoch"]) in elapsed]


def first_reaching(curve: list[dict], target: float = TARGET_DICE) -> dict | None:
    """The first curve point with validation Dice >= target (None when never reached)."""
    return next((point for point in curve if point["val_dice_mean"] >= target), None)


def fold_dirs(train_dir: Path) -> dict[str, Path]:
    """{fold: folder} of artifacts/train/fold_<k>; a pre-fold layout (files directly in
    artifacts/train) counts as one fold named "0"."""
    found = {p.name[len("fold_"):]: p for p in train_dir.glob("fold_*") if p.is_dir()}
    if not found and (train_dir / "history.csv").is_file():
        found = {"0": train_dir}
    return {fold: found[fold] for fold in sorted(found, key=fold_key)}


def read_training(train_dir: Path) -> dict[str, dict]:
    """Per fold: summary.json and the Dice-vs-training-time curve."""
    folds = {}
    for fold, folder in fold_dirs(train_dir).items():
        history, val = folder / "history.csv", folder / "val_history.csv"
        both = history.is_file() and val.is_file()
        curve = training_curve(read_csv_rows(history), read_csv_rows(val)) if both else []
        folds[fold] = {"summary": read_json(folder / "summary.json"), "curve": curve,
                       "first_reaching_target": first_reaching(curve)}
    return folds


def resolve_auto(value: Any, planned: Any) -> Any:
    """A params value, with `auto` replaced by the plan's value (kept as `auto` without a plan)."""
    return planned if value == "auto" and planned is not None else value


def effective_settings(params: dict, plan: dict) -> dict:
    """The settings that matter for accuracy and time, `auto` resolved from plan.json."""
    train, model, split = params.get("train", {}), params.get("model", {}), params.get("split", {})
    network_args = plan.get("network_args", {})
    network = {"name": model.get("name")}
    for key in ("channels", "strides", "num_res_units", "norm"):
        network[key] = resolve_auto(model.get(key), network_args.get(key))
    return {
        "epochs": train.get("epochs"),
        "batch_size": resolve_auto(train.get("batch_size"), plan.get("batch_size")),
        "patch_size": resolve_auto(params.get("preprocess", {}).get("patch_size"), plan.get("patch_size")),
        "network": network,
        "lr": train.get("lr"),
        "folds": split.get("folds", [split["fold"]] if "fold" in split else None),
        "n_folds": split.get("n_folds"),
        "tta": params.get("evaluate", {}).get("tta"),
    }


def target_verdict(dice: float, minutes: float | None, whole_pipeline: bool) -> dict:
    """Is "mean Dice >= 0.89 within 20 min" met? Only a whole-pipeline time can say "met";
    training time alone can only say "not met" (Dice short, or training alone over budget)."""
    dice_ok = dice >= TARGET_DICE
    time_ok = minutes is not None and minutes <= TARGET_MINUTES
    if whole_pipeline or not dice_ok or (minutes is not None and not time_ok):
        met: bool | None = dice_ok and time_ok
    else:
        met = None
    word = {True: "met", False: "not met", None: "undetermined"}[met]
    when = "time unknown" if minutes is None else f"{minutes:.1f} min" + ("" if whole_pipeline else " of training")
    return {"dice": TARGET_DICE, "minutes": TARGET_MINUTES, "met": met,
            "line": f"target mean Dice >= {TARGET_DICE} within {TARGET_MINUTES:.0f} min: {word} ({dice:.4f} at {when})"}


def training_minutes(training: dict[str, dict]) -> float | None:
    """Sum of summary.json `seconds` over folds, in minutes (None when no fold reports it)."""
    seconds = [f["summary"]["seconds"] for f in training.values() if "seconds" in f["summary"]]
    return sum(seconds) / 60 if seconds else None


# --- the report --------------------------------------------------------------------------------


def build_report(project: Path, steps: dict[str, float] | None, total_seconds: float | None) -> dict:
    """Everything the benchmark found in `project`'s artifacts, with the measured timings."""
    artifacts = project / "artifacts"
    per_case = artifacts / "evaluate" / "per_case.csv"
    if not per_case.is_file():
        raise BenchError(f"{per_case} not found: the evaluate stage has not run in {project}")
    accuracy = summarize_per_case(read_csv_rows(per_case))
    accuracy["pipeline_metrics"] = read_json(artifacts / "evaluate" / "metrics.json")
    training = read_training(artifacts / "train")
    whole = total_seconds is not None
    minutes = total_seconds / 60 if whole else training_minutes(training)
    params = yaml.safe_load((project / "params.yaml").read_text()) or {}
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "project": str(project), "git_commit": git_output(project, "rev-parse", "HEAD"),
        "machine": machine_info(),
        "settings": effective_settings(params, read_json(artifacts / "plan" / "plan.json")),
        "accuracy": accuracy,
        "timing": {"steps_seconds": steps, "total_seconds": total_seconds,
                   "training_seconds": {k: v["summary"].get("seconds") for k, v in training.items()}},
        "curve": {fold: info["curve"] for fold, info in training.items()},
        "first_reaching_target": {fold: info["first_reaching_target"] for fold, info in training.items()},
        "target": target_verdict(accuracy["dice_mean"]["mean"], minutes, whole),
        "budget": budget_summary(artifacts),
    }


def configuration_summaries(artifacts: Path) -> list[dict]:
    """summary.json of every trained model: each fold's native one and its other configurations."""
    found = []
    for folder in fold_dirs(artifacts / "train").values():
        found += [read_json(folder / "summary.json")] if (folder / "summary.json").is_file() else []
        found += [read_json(p) for p in sorted((folder / "configurations").glob("*/summary.json"))]
    return found


def budget_summary(artifacts: Path) -> dict | None:
    """train.budget's decision (artifacts/plan/training.json) beside what training measured and
    which configuration evaluate selected; None for a run without a budget."""
    training_plan = artifacts / "plan" / "training.json"
    budget = read_json(training_plan).get("budget") if training_plan.is_file() else None
    if not budget:
        return None
    choice = artifacts / "evaluate" / "configuration.json"
    measured = sum(s.get("seconds", 0.0) for s in configuration_summaries(artifacts)) / 60
    return {"budget": budget["budget"], "budget_minutes": budget["budget_minutes"], "epochs": budget["epochs"],
            "folds": budget["folds"], "configurations": budget["configurations"],
            "predicted_training_minutes": budget["predicted_total_minutes"],
            "measured_training_minutes": round(measured, 2),
            "prediction_error": round(measured / budget["predicted_total_minutes"] - 1, 4),
            "selection": read_json(choice) if choice.is_file() else None}


def format_interval(ci: dict) -> str:
    """`0.8559  [0.8410, 0.8690]  n=45`."""
    return f"{ci['mean']:.4f}  [{ci['low']:.4f}, {ci['high']:.4f}]  n={ci['n']}"


def format_accuracy(accuracy: dict) -> list[str]:
    """Dice table lines: per class, mean, HD95, per fold."""
    folds = ", ".join(accuracy["folds"]) or "?"
    lines = [f"Dice on {accuracy['n_cases']} validation cases (folds {folds}), mean with 95% bootstrap CI",
             f"  {'class':<14}{'mean':>7}  95% CI"]
    for name, ci in accuracy["classes"].items():
        lines.append(f"  {name:<14}{format_interval(ci)}")
    lines.append(f"  {'mean (case)':<14}{format_interval(accuracy['dice_mean'])}")
    lines.append(f"  HD95 mean: {accuracy['hd95_mean']:.3f} mm")
    before = accuracy["pipeline_metrics"].get("dice_mean_before_postprocessing")
    if before is not None:
        lines.append(f"  mean Dice before postprocessing: {before:.4f}")
    lines += [f"  fold {fold}: mean Dice {value:.4f}" for fold, value in accuracy["dice_mean_per_fold"].items()]
    return lines


def format_timing(timing: dict) -> list[str]:
    """Wall-clock lines per step and the total (training seconds only, without a run)."""
    steps = timing["steps_seconds"]
    if steps is None:
        lines = ["Wall-clock per stage: not measured (--no-run); training time from summary.json:"]
        return lines + [f"  train fold {k:<8}{v / 60:8.2f} min" for k, v in timing["training_seconds"].items() if v]
    lines = ["Wall-clock per stage", f"  {'stage':<16}{'seconds':>9}{'minutes':>9}"]
    lines += [f"  {name:<16}{s:9.1f}{s / 60:9.2f}" for name, s in steps.items()]
    total = timing["total_seconds"]
    return lines + [f"  {'total':<16}{total:9.1f}{total / 60:9.2f}"]


def format_curves(curves: dict[str, list[dict]], reaching: dict[str, dict | None]) -> list[str]:
    """Dice-vs-training-time table per fold."""
    lines = ["Validation Dice vs training time (validation during training)"]
    for fold, curve in curves.items():
        first = reaching.get(fold)
        note = f"first >= {TARGET_DICE} at {first['minutes']:.1f} min" if first else f"never >= {TARGET_DICE}"
        lines.append(f"  fold {fold} ({note})")
        lines.append(f"    {'epoch':>5}{'train min':>11}{'val Dice':>10}")
        lines += [f"    {p['epoch']:>5}{p['minutes']:>11.2f}{p['val_dice_mean']:>10.4f}" for p in curve]
    return lines


def format_settings(report: dict) -> list[str]:
    """Machine and parameter lines."""
    m, s = report["machine"], report["settings"]
    net = s["network"]
    return [f"machine: {m['cpu']}, {m['usable_cores']}/{m['cores']} cores usable, {m['ram_gib']} GiB RAM, "
            f"torch {m['torch']}, monai {m['monai']}",
            f"settings: epochs {s['epochs']}, batch {s['batch_size']}, patch {s['patch_size']}, {net['name']} "
            f"channels {net['channels']} strides {net['strides']} res units {net['num_res_units']}, "
            f"folds {s['folds']} of {s['n_folds']}, lr {s['lr']}, TTA {s['tta']}"]


def format_report(report: dict) -> str:
    """The readable report printed to stdout."""
    commit = (report.get("git_commit") or "unknown")[:10]
    if report.get("uncommitted_included"):
        commit += " + uncommitted changes"
    header = [f"segflow accuracy benchmark: {report['project']} @ {commit}, {report['created']}"]
    if report.get("overrides"):
        header.append(f"overrides: {' '.join(report['overrides'])}")
    sections = [header + format_settings(report), format_accuracy(report["accuracy"]),
                format_timing(report["timing"]), format_curves(report["curve"], report["first_reaching_target"]),
                [report["target"]["line"]]]
    return "\n\n".join("\n".join(lines) for lines in sections)


def json_safe(value: Any) -> Any:
    """NaN/inf floats as null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path) in path's folder, then rename over `path` (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    """Strict JSON, written atomically."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    replace_atomically(path, lambda temporary: temporary.write_text(text))


def plot_curve(report: dict, path: Path) -> None:
    """PNG of validation Dice vs cumulative training minutes, one line per fold, with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fold, curve in report["curve"].items():
        ax.plot([p["minutes"] for p in curve], [p["val_dice_mean"] for p in curve], marker="o", label=f"fold {fold}")
    ax.axhline(TARGET_DICE, linestyle="--", color="grey", label=f"target Dice {TARGET_DICE}")
    ax.axvline(TARGET_MINUTES, linestyle=":", color="grey", label=f"{TARGET_MINUTES:.0f} min (whole-pipeline budget)")
    dice = report["accuracy"]["dice_mean"]
    title = f"Dice vs training time; evaluate mean Dice {dice['mean']:.4f} [{dice['low']:.4f}, {dice['high']:.4f}]"
    ax.set(xlabel="training minutes (cumulative epoch wall-clock)", ylabel="validation mean Dice", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    replace_atomically(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
    plt.close(fig)


# --- the budget sweep --------------------------------------------------------------------------


def sweep_row(report: dict) -> dict:
    """One budget's line: out-of-fold Dice with CI (mean and per class: ISBI's membrane Dice is its
    pixel F-score), wall clock, predicted and measured training."""
    accuracy, budget = report["accuracy"], report["budget"] or {}
    total = report["timing"]["total_seconds"]
    return {**budget, "dice_mean": accuracy["dice_mean"], "classes": accuracy["classes"],
            "pipeline_minutes": round(total / 60, 2) if total else None, "git_commit": report.get("git_commit")}


def format_sweep(sweep: dict) -> str:
    lines = [f"segflow budget sweep, {sweep['created']}, {sweep['machine']['cpu']}",
             "budget | epochs | configurations | selected | mean Dice [95% CI] | training min predicted / "
             "measured (error) | pipeline min | Dice per class"]
    for row in sweep["rows"]:
        dice, selection = row["dice_mean"], row.get("selection") or {}
        lines.append(f"{row.get('budget')} | {row.get('epochs')} | {row.get('configurations')} | "
                     f"{selection.get('selected')} | {dice['mean']:.4f} [{dice['low']:.4f}, {dice['high']:.4f}] | "
                     f"{row.get('predicted_training_minutes')} / {row.get('measured_training_minutes')} "
                     f"({100 * (row.get('prediction_error') or 0):+.1f}%) | {row.get('pipeline_minutes')} | "
                     + ", ".join(f"{name} {ci['mean']:.4f}" for name, ci in (row.get("classes") or {}).items()))
    return "\n".join(lines)


def plot_sweep(sweep: dict, path: Path) -> None:
    """PNG of out-of-fold mean Dice (95% CI) against the training budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sweep["rows"]
    minutes = [r["budget_minutes"] for r in rows]
    mean = [r["dice_mean"]["mean"] for r in rows]
    errors = [[m - r["dice_mean"]["low"] for m, r in zip(mean, rows, strict=True)],
              [r["dice_mean"]["high"] - m for m, r in zip(mean, rows, strict=True)]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(minutes, mean, yerr=errors, marker="o", capsize=4)
    ax.set(xscale="log", xlabel="train.budget (minutes, log scale)", ylabel="out-of-fold mean Dice (95% CI)",
           title="Dice against the training budget")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    replace_atomically(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
    plt.close(fig)


def run_sweep(args: argparse.Namespace, budgets: list[str]) -> dict:
    """A fresh clone and pipeline per budget, only train.budget changed (on top of any -S)."""
    rows = []
    for budget in budgets:
        print(f"[bench] train.budget={budget}", file=sys.stderr, flush=True)
        rows.append(sweep_row(measure(args, [*args.overrides, f"train.budget={budget}"])))
    return {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
            "overrides": args.overrides, "rows": rows}


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key in the scratch clone (dotted key, YAML value); repeatable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result path; the PNG goes beside it")
    parser.add_argument("--workdir", type=Path, help="clone into this (absent or empty) folder and keep it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch project after success")
    parser.add_argument("--uncommitted", action="store_true",
                        help="also copy the repo's uncommitted changes into the clone (default: HEAD only)")
    parser.add_argument("--track", action="store_true", help="leave W&B tracking on (default SEGFLOW_TRACKING=off)")
    parser.add_argument("--project-dir", type=Path, help="with --no-run: the project whose artifacts to report on")
    parser.add_argument("--no-run", action="store_true", help="report on --project-dir's artifacts; run nothing")
    parser.add_argument("--budgets", help="comma-separated train.budget values (e.g. 5m,10m,20m): a fresh clone and "
                        f"pipeline each; results at {SWEEP_OUT.relative_to(REPO)} unless --out")
    args = parser.parse_args(argv)
    if args.no_run != (args.project_dir is not None):
        parser.error("--no-run and --project-dir go together")
    return args


def prepare_project(args: argparse.Namespace) -> tuple[Path, bool]:
    """Clone (and overlay uncommitted changes if asked) into the workdir; (clone, is temporary)."""
    temporary = args.workdir is None
    clone = Path(tempfile.mkdtemp(prefix="segflow-bench-")) / "segflow" if temporary else args.workdir.resolve()
    print(f"[bench] cloning {REPO} into {clone}", file=sys.stderr, flush=True)
    clone_repo(REPO, clone)
    if args.uncommitted:
        print(f"[bench] {len(copy_uncommitted(REPO, clone))} uncommitted files copied in", file=sys.stderr)
    link_shared(REPO, clone)
    return clone, temporary


def measure(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Scratch project, timed pipeline, report; the temporary clone is removed after success."""
    clone, temporary = prepare_project(args)
    try:
        write_params(clone, overrides)
    except BenchError:
        if temporary:  # nothing ran yet: nothing worth keeping
            shutil.rmtree(clone.parent)
        raise
    steps, total = run_pipeline(REPO, clone, bench_env(REPO, clone, args.track), clone / ".segflow" / "bench-logs")
    report = build_report(clone, steps, total)
    report["uncommitted_included"] = args.uncommitted
    if temporary and not args.keep:
        shutil.rmtree(clone.parent)
        report["project"] += " (removed)"
    return report


def sweep_main(args: argparse.Namespace) -> int:
    out = (SWEEP_OUT if args.out == DEFAULT_OUT else args.out).resolve()
    try:
        sweep = run_sweep(args, [b.strip() for b in args.budgets.split(",") if b.strip()])
        write_json(out, sweep)
        plot_sweep(sweep, out.with_suffix(".png"))
    except BenchError as error:
        print(f"accuracy bench: {error}", file=sys.stderr)
        return 1
    print(format_sweep(sweep))
    print(f"\nresults: {out} and {out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.budgets:
        return sweep_main(args)
    try:
        overrides = list(args.overrides)
        if args.no_run and overrides:
            raise BenchError("-S overrides need a run; they cannot apply with --no-run")
        report = build_report(args.project_dir.resolve(), None, None) if args.no_run else measure(args, overrides)
        report["overrides"] = args.overrides
        out = args.out.resolve()
        write_json(out, report)
        plot_curve(report, out.with_suffix(".png"))
    except BenchError as error:
        print(f"accuracy bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("accuracy bench: interrupted", file=sys.stderr)
        return 130
    print(format_report(report))
    print(f"\nresults: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
