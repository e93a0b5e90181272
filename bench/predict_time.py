"""`segflow predict` on CPU, per Hippocampus case, with and without mirror TTA: the command's wall
time end to end, split into process start-up, model load and per-case time (read, inference,
postprocessing, write), and a hash of every label map written (so a speed change can be shown
not to change the predictions).

    .venv/bin/python -m bench.predict_time                       # 10 real cases, champion model
    .venv/bin/python -m bench.predict_time --cases 20 --repeats 3
    .venv/bin/python -m bench.predict_time --model path/to/model.pt --threads 1
    .venv/bin/python -m bench.predict_time --keep-labels /tmp/before      # then, after a change:
    .venv/bin/python -m bench.predict_time --compare-labels /tmp/before   # voxels that differ
    .venv/bin/python -m bench.predict_time --profile             # + cProfile of a TTA driver run
    git clone -q . /tmp/head && .venv/bin/python -m bench.predict_time --baseline-src /tmp/head/src
                                     # before/after: both code trees, runs alternated, labels compared

Model: `--model PATH`; default the 3D one-channel champion of this repo's registry (registry/<dataset>/ ->
models/<id>/model.pt); without one, a small model trained in a scratch project
(dvc_noop.make_scratch, `dvc repro train`). Inputs: the first `--cases` files of
../shared/datasets/Task04_Hippocampus/imagesTr (sorted), linked into a scratch folder.

Per mode (tta, no-tta): `--repeats` runs of the real command (`segflow predict --model M -i IN
-o OUT [--no-tta]`, median wall), and one run of a driver that runs the same code path in-process
(segflow.inference.predict.predict_paths) with its steps timed. Start-up = the driver's imports + the
interpreter's start and exit. Results: bench/results/predict_time.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
IMAGES = REPO.parent / "shared" / "datasets" / "Task04_Hippocampus" / "imagesTr"
MODES = {"tta": "--tta", "no-tta": "--no-tta"}

# `segflow predict`'s code path in-process, each step timed: argv = model input output mode threads
DRIVER = r'''
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
model, source, output, mode, threads = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
import segflow.cli
root = segflow.cli._project_root()
import segflow.inference.predict as P
import torch
if threads:
    torch.set_num_threads(threads)
import_s = time.perf_counter() - t0
steps, cases = {}, []

def timed(name, fn, per_case=True, case_of=None):
    def wrapper(*args, **kwargs):
        if case_of is not None:
            cases.append({"case": case_of(args)})
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            if per_case:
                cases[-1][name] = cases[-1].get(name, 0.0) + seconds
            else:
                steps[name] = seconds
    return wrapper

def time_steps(names):
    for label, name in names:
        if hasattr(P, name):
            setattr(P, name, timed(label, getattr(P, name)))

new_api = hasattr(P, "predict_files")  # the hostile-input predict (read_input, prepare_image, Outcome)
if hasattr(P, "load_predictor"):
    P.load_predictor = timed("load_model", P.load_predictor, per_case=False)
else:  # older code: the model file's read only (the networks' build is in the first case)
    P.load_model_file = timed("load_model", P.load_model_file, per_case=False)
if new_api:  # a case = predict_one (checks, label_volume, write); load_case = read + prepare
    P.predict_one = timed("label_volume", P.predict_one, case_of=lambda args: args[0].source.name)
    time_steps([("load_case", "read_input"), ("load_case", "prepare_image")])
else:
    P.label_volume = timed("label_volume", P.label_volume, case_of=lambda args: Path(args[2]).name)
    time_steps([("load_case", "load_case")])
time_steps([(n, n) for n in ("predict_probabilities", "apply_postprocessing")])
write = "write_labels" if hasattr(P, "write_labels") else "save_label"
setattr(P, write, timed("write_labels", getattr(P, write)))
loop = time.perf_counter()
if new_api:
    options = P.PredictOptions(tta=mode == "tta")
    written = [str(o.dest) for o in P.predict_files(model, source, output, options, log=lambda line: None)]
else:
    written = [str(p) for p in P.predict_paths(root, model, source, output, tta=mode == "tta")]
loop_s = time.perf_counter() - loop
print("DRIVER " + json.dumps({"new_api": new_api, "import_s": import_s, "threads": torch.get_num_threads(), "steps": steps,
      "cases": cases, "loop_s": loop_s, "written": written, "end_s": time.perf_counter() - t0}))
'''


# Variants in one process, paired per case: each tree's segflow/inference/sliding_window.py loaded side by side,
# each variant (tree, torch threads) called in turn on the same preprocessed volume, the order
# rotating, so load spikes from other work hit all variants alike. argv = model input rounds variants-json
PAIRED = r'''
import importlib.util, json, sys, time
from pathlib import Path
import torch
model, source, rounds, variants = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
default_threads = torch.get_num_threads()
modules = {}
for variant in variants:
    src = variant["src"]
    if src not in modules:
        spec = importlib.util.spec_from_file_location(f"inference_{len(modules)}", Path(src) / "segflow" / "inference.py")
        modules[src] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[src])
from segflow.data.preprocess import load_case
from segflow.models.model_file import load_model_file
bundle = load_model_file(model)
nets = bundle.build("cpu")
images = [load_case(p, preprocessing=bundle.preprocessing).image for p in sorted(source.glob("*.nii.gz"))]
times = {f"{v['name']} {mode}": [] for mode in ("tta", "no-tta") for v in variants}
differing = {f"{v['name']} {mode}": 0 for mode in ("tta", "no-tta") for v in variants}
with torch.no_grad():
    for r in range(rounds):
        for i, image in enumerate(images):
            for mode in ("tta", "no-tta"):
                shift = (r * len(images) + i) % len(variants)
                labels = {}
                for variant in variants[shift:] + variants[:shift]:
                    torch.set_num_threads(variant["threads"] or default_threads)
                    start = time.perf_counter()
                    probabilities = modules[variant["src"]].predict_probabilities(nets, image, bundle.patch_size,
                                                                                   tta=mode == "tta")
                    times[f"{variant['name']} {mode}"].append(time.perf_counter() - start)
                    labels[variant["name"]] = probabilities.argmax(0)
                if r == 0:
                    for name, label in labels.items():
                        differing[f"{name} {mode}"] += int((label != labels[variants[0]["name"]]).sum())
print("PAIRED " + json.dumps({"times": times, "label_voxels_differing_from_first": differing,
                              "default_threads": default_threads}))
'''


def champion_model() -> Path | None:
    """The champion of the default dataset (3D, one channel) in this repo's registry, if any."""
    from segflow.registry.catalog import Catalog
    from segflow.registry.store import RegistryError

    try:
        return Catalog(REPO / "registry").resolve("champion", spatial_dims=3, n_channels=1)
    except RegistryError:
        return None


def train_small_model(workdir: Path) -> Path:
    """No registry here: a model from a scratch project's small pipeline (its train stage)."""
    from bench.dvc_noop import SMALL, make_scratch

    scratch = make_scratch(workdir / "model-project", SMALL)
    scratch.dvc("repro", "train")
    return scratch.root / "artifacts" / "train" / "fold_0" / "model.pt"


def project_folder(scratch: Path, src: Path) -> Path:
    """A folder the CLI takes as a project root (params.yaml + dvc.yaml), so a model path works;
    params.yaml from the checkout that holds `src`, so that code reads its own params."""
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.parent / "params.yaml", scratch / "params.yaml")
    (scratch / "dvc.yaml").write_text("")
    return scratch


def inputs(dest: Path, n_cases: int) -> list[Path]:
    files = sorted(IMAGES.glob("*.nii.gz"))[:n_cases]
    dest.mkdir(parents=True, exist_ok=True)
    for source in files:
        (dest / source.name).symlink_to(source)
    return files


def env_for(threads: int, src: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(src)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_cli(project: Path, model: Path, source: Path, output: Path, mode: str, env: dict) -> float:
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "segflow"), "predict", "--model", str(model), "-i", str(source), "-o",
                           str(output), MODES[mode]], cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"segflow predict failed in {project} (PYTHONPATH={env['PYTHONPATH']}):\n{done.stderr[-2000:]}")
    return seconds


def run_driver(project: Path, driver: Path, args: list[str], env: dict, profile: Path | None) -> dict:
    cmd = [str(BIN / "python"), *(["-m", "cProfile", "-o", str(profile)] if profile else []), str(driver), *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("DRIVER "))
    return {"wall_s": wall, **json.loads(line.removeprefix("DRIVER "))}


def label_arrays(folder: Path) -> dict[str, "object"]:
    import nibabel as nib
    import numpy as np

    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def sha(array) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def differing_voxels(new: dict, old_folder: Path) -> dict[str, int]:
    old = label_arrays(old_folder)
    return {name: int((array != old[name]).sum()) if name in old else -1 for name, array in new.items()}


def summarise(mode: str, cli: list[float], drv: dict, n: int) -> dict:
    # predict_one includes the write; the older label_volume did not
    per_case = [c["label_volume"] + (0.0 if drv["new_api"] else c.get("write_labels", 0.0)) for c in drv["cases"]]
    parts = {k: statistics.median(c.get(k, 0.0) for c in drv["cases"])
             for k in ("load_case", "predict_probabilities", "apply_postprocessing", "write_labels")}
    startup = drv["import_s"] + (drv["wall_s"] - drv["end_s"])
    cli_med = statistics.median(cli)
    return {"cli_runs_s": cli, "cli_median_s": cli_med, "cli_min_s": min(cli), "cli_per_case_s": cli_med / n,
            "startup_s": startup, "import_s": drv["import_s"], "load_model_s": drv["steps"].get("load_model"),
            "per_case_median_s": statistics.median(per_case), "per_case_first_s": per_case[0],
            "per_case_rest_median_s": statistics.median(per_case[1:]) if len(per_case) > 1 else per_case[0],
            "per_case_parts_median_s": parts, "threads": drv["threads"],
            "cli_minus_startup_and_load_per_case_s": (cli_med - startup - (drv["steps"].get("load_model") or 0)) / n}


def print_profile(dump: Path, top: int) -> list[dict]:
    stats = pstats.Stats(str(dump))
    rows = sorted(((f"{Path(f).parent.name}/{Path(f).name}:{fn}", v[3], v[2], v[1])
                   for (f, _, fn), v in stats.stats.items()), key=lambda r: r[1], reverse=True)[:top]
    print("\nprofile (cProfile, tta driver run): cumulative s, own s, calls, function")
    for name, cum, own, calls in rows:
        print(f"  {cum:7.2f} {own:7.2f} {calls:7d}  {name}")
    return [{"function": n, "cumulative_s": c, "own_s": o, "calls": k} for n, c, o, k in rows]


def measure_mode(mode: str, trees: dict[str, Path], args, scratch: Path, model: Path, files: list[Path]) -> dict:
    """One mode, every code tree: CLI runs alternated between trees, then one driver run each."""
    source, driver = scratch / "in", scratch / "driver.py"
    cli: dict[str, list[float]] = {tree: [] for tree in trees}
    for _ in range(args.repeats):
        for tree, src in trees.items():
            cli[tree].append(run_cli(scratch / f"project-{tree}", model, source, scratch / f"out-{mode}-{tree}", mode,
                                     env_for(args.threads, src)))
    out = {}
    for tree, src in trees.items():
        driver_args = [str(model), str(source), str(scratch / "drv-out"), mode, str(args.threads)]
        project = scratch / f"project-{tree}"
        drv = run_driver(project, driver, driver_args, env_for(args.threads, src), None)
        summary = summarise(mode, cli[tree], drv, len(files))
        labels = label_arrays(scratch / f"out-{mode}-{tree}")
        summary["label_sha256"] = {name: sha(a) for name, a in labels.items()}
        if tree != "current":
            summary["voxels_differing_from_current"] = differing_voxels(labels, scratch / f"out-{mode}-current")
        if args.compare_labels and tree == "current":
            summary["voxels_differing_from"] = {"folder": str(args.compare_labels / mode),
                                                "per_case": differing_voxels(labels, args.compare_labels / mode)}
        if args.keep_labels and tree == "current":
            shutil.copytree(scratch / f"out-{mode}-{tree}", args.keep_labels / mode, dirs_exist_ok=True)
        if args.profile and mode == "tta":  # a separate run: cProfile's overhead stays out of the timings
            profile = scratch / f"driver-{tree}.prof"
            run_driver(project, driver, driver_args, env_for(args.threads, src), profile)
            print(f"\n{tree} code:", end="")
            summary["profile_top"] = print_profile(profile, args.top)
        summary["driver"] = drv
        out[tree] = summary
    return out


def run_paired(scratch: Path, model: Path, trees: dict[str, Path], args) -> dict:
    """Inference only: every (tree, threads) variant alternated per case, `--rounds` passes over the
    cases; ratios against the first variant (the baseline tree, or the first thread count)."""
    threads = [int(t) for t in args.paired_threads.split(",")]
    order = ["baseline", "current"] if "baseline" in trees else ["current"]
    variants = [{"name": f"{tree} threads={t or 'default'}", "src": str(trees[tree]), "threads": t}
                for t in threads for tree in order]
    driver = scratch / "paired.py"
    driver.write_text(PAIRED)
    done = subprocess.run([str(BIN / "python"), str(driver), str(model), str(scratch / "in"), str(args.rounds),
                           json.dumps(variants)], cwd=scratch / "project-current", env=env_for(0, trees["current"]),
                          capture_output=True, text=True, check=True)
    paired = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("PAIRED ")).removeprefix("PAIRED "))
    paired["median_s"] = {k: statistics.median(v) for k, v in paired["times"].items()}
    paired["min_s"] = {k: min(v) for k, v in paired["times"].items()}
    first = variants[0]["name"]
    paired["ratio_to_first"] = {}
    for key, runs in paired["times"].items():
        name, mode = key.rsplit(" ", 1)
        reference = paired["times"][f"{first} {mode}"]
        paired["ratio_to_first"][key] = {
            "ratio_of_medians": statistics.median(runs) / statistics.median(reference),
            "median_of_paired_ratios": statistics.median(n / o for n, o in zip(runs, reference, strict=True))}
    paired["variants"] = variants
    return paired


def row(mode: str, tree: str, summary: dict) -> list:
    parts = summary["per_case_parts_median_s"]
    return [mode, tree, f"{summary['cli_median_s']:.2f}", f"{summary['cli_min_s']:.2f}", f"{summary['cli_per_case_s']:.3f}",
            f"{summary['startup_s']:.2f}", f"{summary['load_model_s']:.3f}", f"{summary['per_case_median_s']:.3f}",
            f"{summary['per_case_first_s']:.3f}", f"{parts['load_case']:.3f}", f"{parts['predict_probabilities']:.3f}",
            f"{parts['apply_postprocessing'] + parts['write_labels']:.3f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: this repo's champion)")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="CLI runs per mode (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--modes", default="tta,no-tta")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="another src/ tree (e.g. a clone at HEAD) timed alternately with this one")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the cases of the paired inference run")
    parser.add_argument("--paired-threads", default="0",
                        help="torch thread counts for the paired inference run, e.g. 1,2 (0: torch's default)")
    parser.add_argument("--keep-labels", type=Path, default=None, help="copy the label files to DIR/<mode>/")
    parser.add_argument("--compare-labels", type=Path, default=None, help="count voxels that differ from DIR/<mode>/")
    parser.add_argument("--profile", action="store_true", help="cProfile a tta driver run (an extra run per tree)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out-name", default="predict_time")
    args = parser.parse_args()

    trees = {"current": REPO / "src", **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    with tempfile.TemporaryDirectory(prefix="segflow-predict-bench-") as tmp:
        scratch = Path(tmp)
        model = args.model or champion_model() or train_small_model(scratch)
        for tree, src in trees.items():
            project_folder(scratch / f"project-{tree}", src)
        files = inputs(scratch / "in", args.cases)
        (scratch / "driver.py").write_text(DRIVER)
        results: dict = {"model": str(model), "cases": [f.name for f in files], "threads_requested": args.threads,
                         "trees": {k: str(v) for k, v in trees.items()}, "modes": {}}
        for mode in [m for m in args.modes.split(",") if m in MODES]:  # --modes none: paired run only
            results["modes"][mode] = measure_mode(mode, trees, args, scratch, model, files)
        if args.baseline_src or "," in args.paired_threads:
            results["paired"] = run_paired(scratch, model, trees, args)
    rows = [row(mode, tree, summary) for mode, by_tree in results["modes"].items() for tree, summary in by_tree.items()]
    if "baseline" in trees:
        for mode, by_tree in results["modes"].items():
            new, old = by_tree["current"], by_tree["baseline"]
            by_tree["ratio_current_over_baseline"] = {
                "cli": new["cli_median_s"] / old["cli_median_s"],
                "per_case": new["per_case_median_s"] / old["per_case_median_s"]}
    report(args.out_name, results, rows,
           ["mode", "code", f"CLI s ({len(files)} cases)", "CLI min s", "CLI s/case", "start-up s", "model load s",
            "case s (median)", "first case s", "read", "inference", "post+write"])
    if "paired" in results:
        from tabulate import tabulate

        paired = results["paired"]
        print(f"\npaired inference (one process, variants alternated per case, {args.rounds} rounds x "
              f"{len(results['cases'])} cases; ratios against the first variant)\n")
        print(tabulate([[key, f"{paired['median_s'][key]:.3f}", f"{paired['min_s'][key]:.3f}",
                         f"{ratio['ratio_of_medians']:.3f}", f"{ratio['median_of_paired_ratios']:.3f}",
                         paired["label_voxels_differing_from_first"][key]]
                        for key, ratio in paired["ratio_to_first"].items()],
                       headers=["variant", "median s/case", "min s", "ratio of medians", "median paired ratio",
                                "label voxels differing"]))
    for mode, by_tree in results["modes"].items():
        if "ratio_current_over_baseline" in by_tree:
            ratio = by_tree["ratio_current_over_baseline"]
            diff = by_tree["baseline"]["voxels_differing_from_current"]
            print(f"{mode}: current/baseline CLI {ratio['cli']:.3f}, per case {ratio['per_case']:.3f}; label voxels "
                  f"differing: {sum(v for v in diff.values() if v > 0)} in {sum(1 for v in diff.values() if v)} "
                  f"of {len(diff)} cases")
        summary = by_tree["current"]
        if "voxels_differing_from" in summary:
            diff = summary["voxels_differing_from"]["per_case"]
            print(f"{mode}: voxels differing from {summary['voxels_differing_from']['folder']}: "
                  f"{sum(v for v in diff.values() if v > 0)} in {sum(1 for v in diff.values() if v)} of {len(diff)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
