"""nnU-Net v2 on segflow's own cases and fold-0 split (issue 7, item 7): Dice vs training time and
predict time per case, with and without mirror TTA, beside segflow's numbers from
bench/results/accuracy.json and bench/results/predict_time.json.

nnU-Net lives in its own venv (default ../nnunet-venv beside this checkout; torch pinned as ours):

    python3 -m venv ../nnunet-venv
    ../nnunet-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/c.txt && ../nnunet-venv/bin/pip install -c /tmp/c.txt nnunetv2

Then, from the repo (runs nnU-Net under `nice -n 19`, 1 thread by default):

    .venv/bin/python -m bench.nnunet_v2 --epochs 1                      # nnU-Net's 1-epoch trainer
    .venv/bin/python -m bench.nnunet_v2 --epochs 5 --iterations-per-epoch 25   # shortened epochs
    .venv/bin/python -m bench.nnunet_v2 --epochs 5 --skip-preprocess --skip-train  # re-score only

What a run does, in --workdir (default /tmp/nnunet-bench; never inside the project):
1. raw/Dataset004_Hippocampus: symlinks to the cases segflow kept (artifacts/preprocessed/
   index.json) from the project's data root, named as nnU-Net wants, and a dataset.json.
2. `nnUNetv2_plan_and_preprocess -d 4 -c 3d_fullres --verify_dataset_integrity`, then
   splits_final.json with segflow's folds (fold 0 = segflow's fold-0 train/validation cases).
3. `nnUNetv2_train 4 3d_fullres 0 -device cpu -tr nnUNetTrainer_<N>epoch(s)`, timed; the training
   log gives each epoch's time and pseudo-Dice (Dice vs wall clock) and the final validation Dice.
4. `nnUNetv2_predict -f 0 -device cpu` on the fold-0 validation cases with and without TTA, and on
   one case (start-up and model-load overhead), timed; Dice per class by MONAI's DiceMetric
   (segflow.metrics.segmentation, as segflow's evaluate), 95% bootstrap CI over cases.

nnU-Net's entry points run through a small launcher in its venv that (a) caps torch's threads at
--threads (nnU-Net's `-device cpu` otherwise sets them to every core), (b) with
--iterations-per-epoch, sets the trainer's iterations per epoch (validation iterations = 1/5, as
nnU-Net's 250/50), and (c) only when torchvision cannot be imported (the registry's torchvision
for torch 2.13.0 is a CUDA build), stubs nnU-Net's Primus trainer module, the one module that
imports timm -> torchvision, so nnU-Net's search for the trainer class does not crash on it.

Results: a table on stdout, JSON at bench/results/nnunet_v2.json (bench/common.py's report()).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench.common import RESULTS, report

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 4
DATASET = "Dataset004_Hippocampus"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
FOLD = 0
DEFAULT_VENV = Path(__file__).resolve().parents[2] / "nnunet-venv"  # beside the checkout, outside it
DEFAULT_WORKDIR = Path("/tmp/nnunet-bench")
INSTALL_HINT = ("python3 -m venv {venv} && {venv}/bin/pip install torch==2.13.0 && echo torch==2.13.0 "
                "> /tmp/c.txt && {venv}/bin/pip install -c /tmp/c.txt nnunetv2")
ENTRY_POINTS = {"plan_and_preprocess": "nnUNetv2_plan_and_preprocess", "train": "nnUNetv2_train",
                "predict": "nnUNetv2_predict"}


class BenchError(Exception):
    """An expected failure, reported as one line (no traceback)."""


# --- the nnU-Net venv --------------------------------------------------------------------------

PROBE = r'''
import json, os, subprocess, sys
from importlib import metadata
import nnunetv2
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
tv = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
print(json.dumps({"nnunetv2": version("nnunetv2"), "torch": version("torch"),
                  "torchvision": version("torchvision"), "timm": version("timm"),
                  "torchvision_importable": tv.returncode == 0,
                  "torchvision_error": (tv.stderr.strip().splitlines() or [""])[-1][:200],
                  "package_dir": os.path.dirname(nnunetv2.__file__)}))
'''


def nnunet_python(venv: Path) -> Path:
    """The venv's python, once nnunetv2 is known to be importable there."""
    python = venv / "bin" / "python"
    hint = INSTALL_HINT.format(venv=venv)
    if not python.exists():
        raise BenchError(f"no virtual environment at {venv}; install nnU-Net v2 there: {hint}")
    done = subprocess.run([str(python), "-c", "import nnunetv2"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"nnunetv2 is not installed in {venv}; install it: {hint}")
    return python


def venv_facts(python: Path) -> dict:
    """Versions in the nnU-Net venv, whether torchvision imports, where nnunetv2 lies."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BenchError(f"could not inspect the nnU-Net venv: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def epoch_trainers(package_dir: Path) -> dict[int, str]:
    """{epochs: trainer class} of the installed nnU-Net's fixed-length trainers (mirroring kept)."""
    folder = package_dir / "training" / "nnUNetTrainer" / "variants" / "training_length"
    found = {}
    for source in sorted(folder.glob("*.py")):
        for name, epochs in re.findall(r"^class (nnUNetTrainer_(\d+)epochs?)\(", source.read_text(), re.M):
            found[int(epochs)] = name
    return found


def trainer_for(epochs: int, trainers: dict[int, str]) -> str:
    if epochs not in trainers:
        raise BenchError(f"nnU-Net ships no {epochs}-epoch trainer; --epochs must be one of {sorted(trainers)}")
    return trainers[epochs]


# --- segflow's cases and split -----------------------------------------------------------------


def need(path: Path, what: str) -> Path:
    if not path.exists():
        raise BenchError(f"{path} not found ({what}); run the segflow pipeline there first "
                         "(`make run`, or `dvc repro preprocess`)")
    return path


def read_project(project: Path) -> dict:
    """Kept cases, folds, labels and case file paths of a segflow project, as its stages see them."""
    from segflow.config import ConfigError, load_params

    try:
        params = load_params(need(project / "params.yaml", "segflow params"))
    except ConfigError as exc:
        raise BenchError(str(exc)) from None
    if params.data.layout != "msd":
        raise BenchError(f"data.layout is {params.data.layout!r}; this bench needs the msd layout (3D NIfTI)")
    splits = json.loads(need(project / "artifacts/ingest/splits.json", "ingest output").read_text())
    index = json.loads(need(project / "artifacts/preprocessed/index.json", "preprocess output").read_text())
    with need(project / "artifacts/ingest/manifest.csv", "ingest output").open() as handle:
        manifest = {row["case_id"]: row for row in csv.DictReader(handle)}
    data_root = (project / params.data.root).resolve()
    kept = sorted(index["cases"])
    files = {case: (data_root / manifest[case]["image"], data_root / manifest[case]["label"]) for case in kept}
    return {"kept": kept, "folds": splits["folds"], "n_folds": splits["n_folds"], "labels": splits["labels"],
            "files": files, "data_root": str(data_root)}


def nnunet_splits(folds: dict[str, int], kept: list[str], n_folds: int) -> list[dict]:
    """nnU-Net's splits_final.json: fold k's train/val = segflow's (segflow.data.splits.fold_cases)."""
    from segflow.data.splits import fold_cases

    return [dict(zip(("train", "val"), fold_cases(folds, k, kept), strict=True)) for k in range(n_folds)]


# --- nnU-Net's raw dataset ---------------------------------------------------------------------


def dataset_json(labels: dict[str, str], n_cases: int) -> dict:
    return {"channel_names": {"0": "MRI"},
            "labels": {name: int(value) for value, name in sorted(labels.items(), key=lambda kv: int(kv[0]))},
            "numTraining": n_cases, "file_ending": ".nii.gz"}


def build_raw_dataset(raw: Path, project: dict) -> Path:
    """raw/Dataset004_Hippocampus rebuilt from scratch: symlinks to the kept cases + dataset.json."""
    folder = raw / DATASET
    others = [p.name for p in raw.glob(f"Dataset{DATASET_ID:03d}_*") if p.name != DATASET]
    if others:
        raise BenchError(f"{raw} also holds {others}: nnU-Net cannot tell dataset {DATASET_ID} apart")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case, (image, label) in project["files"].items():
        if not (image.is_file() and label.is_file()):
            raise BenchError(f"case {case} kept by segflow but {image} or {label} is missing")
        (folder / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(image)
        (folder / "labelsTr" / f"{case}.nii.gz").symlink_to(label)
    spec = dataset_json(project["labels"], len(project["files"]))
    (folder / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")
    return folder


def link_inputs(dest: Path, cases: list[str], project: dict) -> Path:
    """A predict input folder: CASE_0000.nii.gz symlinks to the images of `cases`."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for case in cases:
        (dest / f"{case}_0000.nii.gz").symlink_to(project["files"][case][0])
    return dest


# --- running nnU-Net ---------------------------------------------------------------------------

# argv: <console script name> <its arguments>; settings come from SEGFLOW_NNUNET_* variables.
LAUNCHER = r'''
import importlib, multiprocessing, os, sys, types
from importlib import metadata
threads = int(os.environ["SEGFLOW_NNUNET_THREADS"])
multiprocessing.cpu_count = lambda: threads  # `-device cpu` sets torch's threads to cpu_count()
if os.environ.get("SEGFLOW_NNUNET_STUB_PRIMUS") == "1":  # timm -> torchvision fails with CPU torch
    name = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"
    sys.modules[name] = types.ModuleType(name)
iterations = int(os.environ.get("SEGFLOW_NNUNET_ITERATIONS") or 0)
if iterations:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    original_init = nnUNetTrainer.__init__
    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.num_iterations_per_epoch = iterations
        self.num_val_iterations_per_epoch = max(1, iterations // 5)
    nnUNetTrainer.__init__ = init
script = sys.argv[1]
entry = metadata.entry_points(group="console_scripts", name=script)
if not entry:
    sys.exit(f"{script}: no such nnU-Net entry point in this venv")
sys.argv = [script, *sys.argv[2:]]
sys.exit(next(iter(entry)).load()())
'''


def nnunet_env(workdir: Path, threads: int, iterations: int | None, stub_primus: bool) -> dict[str, str]:
    """nnU-Net's folders in the scratch dir; threads, worker processes and extras capped."""
    env = dict(os.environ)
    env.update({"nnUNet_raw": str(workdir / "raw"), "nnUNet_preprocessed": str(workdir / "preprocessed"),
                "nnUNet_results": str(workdir / "results"), "nnUNet_def_n_proc": "1",
                "nnUNet_n_proc_DA": "0", "nnUNet_compile": "false",
                "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OPENBLAS_NUM_THREADS": str(threads), "SEGFLOW_NNUNET_THREADS": str(threads),
                "SEGFLOW_NNUNET_ITERATIONS": str(iterations or ""),
                "SEGFLOW_NNUNET_STUB_PRIMUS": "1" if stub_primus else "0"})
    return env


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:240] if lines else "(no output)"


def run_nnunet(python: Path, step: str, args: list[str], env: dict, log: Path) -> dict:
    """One nnU-Net command under `nice -n 19`, output to `log`: wall and CPU seconds, load."""
    cmd = ["nice", "-n", "19", str(python), "-c", LAUNCHER, ENTRY_POINTS[step.split(":")[0]], *args]
    print(f"[nnunet_v2] {step}: {ENTRY_POINTS[step.split(':')[0]]} {' '.join(args)}", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    before, load_before, start = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0], time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"{step} failed (exit {done.returncode}) after {seconds:.0f} s: {last_line(log)} [log: {log}]")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"[nnunet_v2] {step} done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return {"wall_s": round(seconds, 2), "cpu_s": round(cpu, 2), "load_1m_before": round(load_before, 2),
            "load_1m_after": round(os.getloadavg()[0], 2), "log": str(log)}


def preprocess(python: Path, env: dict, logs: Path) -> dict:
    env = {**env, "nnUNet_n_proc_DA": "1"}  # the planner sets torch's threads to this; 0 is invalid
    args = ["-d", str(DATASET_ID), "-c", CONFIGURATION, "--verify_dataset_integrity", "-npfp", "1", "-np", "1"]
    return run_nnunet(python, "plan_and_preprocess", args, env, logs / "plan_and_preprocess.log")


def plan_summary(preprocessed: Path) -> dict:
    """The settings nnU-Net planned for 3d_fullres (patch, batch, network size)."""
    plans = json.loads((preprocessed / DATASET / f"{PLANS}.json").read_text())
    config = plans["configurations"][CONFIGURATION]
    arch = config.get("architecture", {}).get("arch_kwargs", {})
    return {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
            "spacing": config["spacing"], "network": config.get("architecture", {}).get("network_class_name"),
            "n_stages": arch.get("n_stages"), "features_per_stage": arch.get("features_per_stage")}


def fold_dir(workdir: Path, trainer: str) -> Path:
    return workdir / "results" / DATASET / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"


def train(python: Path, env: dict, workdir: Path, trainer: str) -> dict:
    """nnUNetv2_train from scratch (a previous run of this trainer/fold is removed first)."""
    shutil.rmtree(fold_dir(workdir, trainer), ignore_errors=True)
    args = [str(DATASET_ID), CONFIGURATION, str(FOLD), "-device", "cpu", "-tr", trainer]
    started = time.time()
    timing = run_nnunet(python, "train", args, env, workdir / "logs" / f"train_{trainer}.log")
    timing["started_epoch_s"] = started
    (fold_dir(workdir, trainer) / "segflow_bench_train.json").write_text(json.dumps(timing, indent=2) + "\n")
    return timing


# --- nnU-Net's training log --------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): (.*)$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def numbers(text: str) -> list[float]:
    """Floats in a logged value, numpy 2's `np.float32(0.8)` reprs included."""
    return [float(x) for x in NUMBER.findall(re.sub(r"np\.\w+\(([^)]*)\)", r"\1", text))]


def parse_training_log(text: str) -> dict:
    """Per epoch: time, losses and pseudo-Dice (on validation patches), with the end timestamp;
    the final validation's mean Dice (whole cases) and when it was logged."""
    epochs, final = [], {}
    for line in text.splitlines():
        match = LOG_LINE.match(line.strip())
        if not match:
            continue
        stamp, message = datetime.fromisoformat(match.group(1)).timestamp(), match.group(2).strip()
        if re.fullmatch(r"Epoch \d+", message):
            epochs.append({"epoch": int(message.split()[1]), "start_s": stamp})
        elif epochs and message.startswith(("train_loss", "val_loss")):
            epochs[-1][message.split()[0]] = numbers(message.split(maxsplit=1)[1])[0]
        elif epochs and message.startswith("Pseudo dice"):
            epochs[-1]["pseudo_dice"] = numbers(message[len("Pseudo dice"):])
        elif epochs and message.startswith("Epoch time:"):
            epochs[-1].update(epoch_s=numbers(message)[0], end_s=stamp)
        elif message.startswith("Mean Validation Dice:"):
            final = {"dice_mean": numbers(message)[0], "logged_s": stamp}
    return {"epochs": [e for e in epochs if "end_s" in e], "final_validation": final}


def training_log(folder: Path) -> dict:
    logs = sorted(folder.glob("training_log_*.txt"))
    if not logs:
        raise BenchError(f"no nnU-Net training log in {folder}")
    return parse_training_log(logs[-1].read_text(errors="replace"))


def mean_or_none(values: list[float] | None) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


def dice_curve(parsed: dict, started: float) -> list[dict]:
    """Pseudo-Dice (mean over classes) after each epoch against wall-clock minutes since start."""
    return [{"epoch": e["epoch"] + 1, "minutes": round((e["end_s"] - started) / 60, 3),
             "epoch_s": e["epoch_s"], "pseudo_dice": e.get("pseudo_dice"),
             "pseudo_dice_mean": mean_or_none(e.get("pseudo_dice")),
             "train_loss": e.get("train_loss"), "val_loss": e.get("val_loss")} for e in parsed["epochs"]]


def trainer_settings(folder: Path) -> dict:
    """Iterations per epoch and batch size as the trainer ran them (its debug.json)."""
    debug = json.loads((folder / "debug.json").read_text()) if (folder / "debug.json").exists() else {}
    counts = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "batch_size")
    settings = {key: int(debug[key]) if str(debug.get(key, "")).isdigit() else None for key in counts}
    return {**settings, "device": debug.get("device")}


NNUNET_ITERATIONS, NNUNET_EPOCHS = 250, 1000  # nnU-Net's default epoch length and schedule


def default_training_estimate(s_per_iteration: float | None, threads: int) -> dict | None:
    """Hours nnU-Net's default schedule (1000 epochs x 250 iterations + 50 validation iterations)
    would take at the measured s/iteration (the measured epochs keep nnU-Net's 5:1 ratio)."""
    if not s_per_iteration:
        return None
    epoch_s = s_per_iteration * NNUNET_ITERATIONS
    return {"s_per_default_epoch": round(epoch_s), "hours_1000_epochs": round(epoch_s * NNUNET_EPOCHS / 3600, 1),
            "days_1000_epochs": round(epoch_s * NNUNET_EPOCHS / 86400, 1), "threads": threads}


def training_summary(workdir: Path, trainer: str) -> dict:
    """Wall/CPU time of nnUNetv2_train, s/epoch, s/iteration and the Dice-vs-time curve."""
    folder = fold_dir(workdir, trainer)
    timing_file = folder / "segflow_bench_train.json"
    if not timing_file.exists():
        raise BenchError(f"{timing_file} not found: no trained {trainer} fold {FOLD} to reuse; drop --skip-train")
    timing, parsed, settings = json.loads(timing_file.read_text()), training_log(folder), trainer_settings(folder)
    epoch_s = [e["epoch_s"] for e in parsed["epochs"]]
    iterations = int(settings["num_iterations_per_epoch"] or 0)
    last_end = parsed["epochs"][-1]["end_s"] if parsed["epochs"] else None
    final = parsed["final_validation"]
    return {"trainer": trainer, **settings, "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"],
            "load_1m_before": timing["load_1m_before"], "load_1m_after": timing["load_1m_after"],
            "epochs_run": len(epoch_s), "epoch_s": epoch_s,
            "s_per_epoch": round(sum(epoch_s) / len(epoch_s), 2) if epoch_s else None,
            "s_per_iteration": round(sum(epoch_s) / len(epoch_s) / iterations, 3) if epoch_s and iterations else None,
            "setup_s": round(parsed["epochs"][0]["start_s"] - timing["started_epoch_s"], 1) if epoch_s else None,
            "final_validation_s": round(final["logged_s"] - last_end, 1) if final and last_end else None,
            "final_validation_dice_mean": final.get("dice_mean"),
            "curve": dice_curve(parsed, timing["started_epoch_s"]), "log": timing["log"]}


# --- prediction and scoring --------------------------------------------------------------------


def predict(python: Path, env: dict, inputs: Path, output: Path, trainer: str, tta: bool, logs: Path) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    args = ["-i", str(inputs), "-o", str(output), "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", str(FOLD),
            "-tr", trainer, "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    args += [] if tta else ["--disable_tta"]
    n = len(list(inputs.glob("*_0000.nii.gz")))
    name = f"predict:{'tta' if tta else 'no-tta'}:{n}"
    return {"cases": n, **run_nnunet(python, name, args + [], env, logs / f"{name.replace(':', '_')}.log")}


def predict_timings(python: Path, env: dict, workdir: Path, trainer: str, cases: list[str], project: dict) -> dict:
    """Per mode: all validation cases, then one case; s/case = total / n, and (from the two) the
    marginal per-case time and the fixed start-up + model-load overhead."""
    all_in = link_inputs(workdir / "predict_in" / "val", cases, project)
    one_in = link_inputs(workdir / "predict_in" / "one", cases[:1], project)
    modes = {}
    for mode, tta in (("tta", True), ("no-tta", False)):
        full = predict(python, env, all_in, workdir / "predict_out" / mode, trainer, tta, workdir / "logs")
        one = predict(python, env, one_in, workdir / "predict_out" / f"{mode}-one", trainer, tta, workdir / "logs")
        marginal = (full["wall_s"] - one["wall_s"]) / max(1, full["cases"] - 1)
        modes[mode] = {"all": full, "one_case": one, "s_per_case": round(full["wall_s"] / full["cases"], 3),
                       "cpu_s_per_case": round(full["cpu_s"] / full["cases"], 3),
                       "marginal_s_per_case": round(marginal, 3),
                       "overhead_s": round(one["wall_s"] - marginal, 2)}
    return modes


def read_labels(path: Path):
    import nibabel as nib
    import numpy as np

    return np.rint(np.asanyarray(nib.load(str(path)).dataobj)).astype(np.int64)


def score_cases(predictions: Path, cases: list[str], project: dict, names: list[str]) -> list[dict]:
    """Dice per class per case (MONAI DiceMetric via segflow.metrics.segmentation, as evaluate)."""
    from segflow.metrics.segmentation import dice_per_class

    rows = []
    for case in cases:
        predicted = predictions / f"{case}.nii.gz"
        if not predicted.exists():
            raise BenchError(f"nnU-Net wrote no prediction for {case} in {predictions}")
        prediction, truth = read_labels(predicted), read_labels(project["files"][case][1])
        if prediction.shape != truth.shape:
            raise BenchError(f"{case}: prediction shape {prediction.shape} != label shape {truth.shape}")
        scores = dice_per_class(prediction, truth, len(names) + 1)
        rows.append({"case_id": case, **{f"dice_{n}": round(d, 5) for n, d in zip(names, scores, strict=True)}})
    return rows


def summarise_dice(rows: list[dict], names: list[str]) -> dict:
    """Mean Dice per class and of the per-case class mean, each with a 95% bootstrap CI."""
    from segflow.metrics.statistics import bootstrap_ci

    summary = {n: bootstrap_ci([r[f"dice_{n}"] for r in rows]) for n in names}
    summary["mean"] = bootstrap_ci([sum(r[f"dice_{n}"] for n in names) / len(names) for r in rows])
    return {key: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in value.items()}
            for key, value in summary.items()}


# --- segflow's numbers, for the side-by-side row -----------------------------------------------


def segflow_reference(results: Path) -> dict:
    """segflow's Dice/time from accuracy.json and predict s/case from predict_time.json, with dates."""
    out = {}
    accuracy, predict_time = results / "accuracy.json", results / "predict_time.json"
    if accuracy.exists():
        data = json.loads(accuracy.read_text())
        acc = data.get("accuracy", {})
        out["accuracy"] = {"file": "bench/results/accuracy.json", "date": data.get("created"),
                           "epochs": data.get("settings", {}).get("epochs"), "tta": data.get("settings", {}).get("tta"),
                           "n_cases": acc.get("n_cases"), "classes": acc.get("classes"),
                           "dice_mean": acc.get("dice_mean"),
                           "training_s": data.get("timing", {}).get("training_seconds", {}).get(str(FOLD)),
                           "pipeline_s": data.get("timing", {}).get("total_seconds"),
                           "threads": data.get("machine", {}).get("cores")}
    if predict_time.exists():
        data = json.loads(predict_time.read_text())
        modes = data.get("results", {}).get("modes", {})
        out["predict_time"] = {"file": "bench/results/predict_time.json", "date": data.get("machine", {}).get("when"),
                               "n_cases": len(data.get("results", {}).get("cases", [])),
                               **{mode: {k: modes.get(mode, {}).get("current", {}).get(k)
                                         for k in ("cli_per_case_s", "per_case_median_s", "startup_s",
                                                   "load_model_s", "threads")} for mode in ("tta", "no-tta")}}
    return out


# --- the report --------------------------------------------------------------------------------


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def dice_cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    return f"{summary['mean']:.4f} [{summary['low']:.4f}, {summary['high']:.4f}]"


def table_rows(results: dict, names: list[str]) -> list[list]:
    """One row for nnU-Net (TTA and no TTA scores), one for segflow's recorded numbers."""
    train, modes, dice = results["training"], results["predict"], results["dice"]
    rows = []
    for mode in ("tta", "no-tta"):
        rows.append([f"nnU-Net v{results['versions']['nnunetv2']} {train['epochs_run']} ep x "
                     f"{train['num_iterations_per_epoch']} it, {mode}",
                     *[fmt(dice[mode][n]["mean"], 4) for n in names], dice_cell(dice[mode]["mean"]),
                     fmt(train["wall_s"] / 60, 1), fmt(modes[mode]["s_per_case"]), results["threads"]])
    ref = results["segflow_reference"]
    acc, pt = ref.get("accuracy") or {}, ref.get("predict_time") or {}
    if acc:
        classes = acc.get("classes") or {}
        rows.append([f"segflow {acc.get('epochs')} ep, tta={acc.get('tta')} (accuracy.json "
                     f"{str(acc.get('date'))[:10]}; predict_time.json {str(pt.get('date'))[:10]})",
                     *[fmt((classes.get(n) or {}).get("mean"), 4) for n in names], dice_cell(acc.get("dice_mean")),
                     fmt((acc.get("training_s") or 0) / 60, 1),
                     fmt((pt.get("tta") or {}).get("cli_per_case_s")), (pt.get("tta") or {}).get("threads")])
    return rows


def print_curve(training: dict) -> None:
    print(f"nnU-Net Dice vs wall clock ({training['trainer']}, {training['num_iterations_per_epoch']} it/epoch; "
          "pseudo-Dice on validation patches):")
    for point in training["curve"]:
        print(f"  epoch {point['epoch']:>3}  {point['minutes']:7.2f} min  epoch {point['epoch_s']:7.1f} s  "
              f"pseudo-Dice {fmt(point['pseudo_dice_mean'], 4)}  {point['pseudo_dice']}")
    print(f"  final validation (whole cases, TTA, nnU-Net's metric): {training['final_validation_dice_mean']}\n")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=REPO, help="segflow project with ingest/preprocess artifacts")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_VENV, help="venv holding nnunetv2")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch for nnU-Net's folders")
    parser.add_argument("--epochs", type=int, default=1, help="picks nnUNetTrainer_<N>epoch(s)")
    parser.add_argument("--iterations-per-epoch", type=int, default=None,
                        help="shorten epochs (nnU-Net: 250 training + 50 validation iterations)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for nnU-Net (default 1)")
    parser.add_argument("--skip-preprocess", action="store_true", help="reuse the workdir's preprocessed data")
    parser.add_argument("--skip-train", action="store_true", help="reuse the workdir's trained model")
    parser.add_argument("--out", type=Path, default=RESULTS / "nnunet_v2.json", help="where the JSON goes")
    return parser.parse_args(argv)


def check_workdir(workdir: Path, project: Path) -> Path:
    workdir = workdir.resolve()
    if workdir == project or project in workdir.parents or workdir == REPO or REPO in workdir.parents:
        raise BenchError(f"--workdir {workdir} lies inside the project; use a scratch folder such as {DEFAULT_WORKDIR}")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def prepare(args, python: Path, env: dict, workdir: Path, project: dict) -> dict:
    """Raw dataset, plan + preprocess (unless skipped), splits_final.json."""
    preprocessed = workdir / "preprocessed"
    if args.skip_preprocess:
        need(preprocessed / DATASET / f"{PLANS}.json", "a previous run's preprocessing (drop --skip-preprocess)")
        timing = None
    else:
        build_raw_dataset(workdir / "raw", project)
        shutil.rmtree(preprocessed / DATASET, ignore_errors=True)
        timing = preprocess(python, env, workdir / "logs")
    splits = nnunet_splits(project["folds"], project["kept"], project["n_folds"])
    (preprocessed / DATASET / "splits_final.json").write_text(json.dumps(splits, indent=1) + "\n")
    return {"timing": timing, "plan": plan_summary(preprocessed), "splits": splits}


def measure(args) -> tuple[dict, list[str]]:
    python = nnunet_python(args.nnunet_venv)
    facts = venv_facts(python)
    trainer = trainer_for(args.epochs, epoch_trainers(Path(facts["package_dir"])))
    project_dir = args.project.resolve()
    project = read_project(project_dir)
    workdir = check_workdir(args.workdir, project_dir)
    env = nnunet_env(workdir, args.threads, args.iterations_per_epoch, not facts["torchvision_importable"])
    prepared = prepare(args, python, env, workdir, project)
    train_cases, val_cases = prepared["splits"][FOLD]["train"], prepared["splits"][FOLD]["val"]
    if not args.skip_train:
        train(python, env, workdir, trainer)
    training = training_summary(workdir, trainer)
    modes = predict_timings(python, env, workdir, trainer, val_cases, project)
    names = [project["labels"][k].lower() for k in sorted(project["labels"], key=int)][1:]
    per_case = {mode: score_cases(workdir / "predict_out" / mode, val_cases, project, names) for mode in modes}
    results = {"versions": {k: facts[k] for k in ("nnunetv2", "torch", "torchvision", "timm")},
               "torchvision_importable": facts["torchvision_importable"],
               "primus_trainers_stubbed": not facts["torchvision_importable"],
               "nnunet_venv": str(args.nnunet_venv), "workdir": str(workdir), "project": str(project_dir),
               "threads": args.threads, "nice": 19, "epochs": args.epochs, "trainer": trainer,
               "iterations_per_epoch_override": args.iterations_per_epoch,
               "cases": {"kept": len(project["kept"]), "fold": FOLD, "train": len(train_cases),
                         "validation": len(val_cases), "data_root": project["data_root"]},
               "preprocess": prepared["timing"], "plan": prepared["plan"], "training": training,
               "default_schedule_estimate": default_training_estimate(training["s_per_iteration"], args.threads),
               "predict": modes, "dice": {mode: summarise_dice(rows, names) for mode, rows in per_case.items()},
               "per_case": per_case, "segflow_reference": segflow_reference(RESULTS),
               "notes": ["s_per_iteration = epoch time / training iterations; each epoch also runs 1/5 as many "
                         "validation iterations (forward only), as nnU-Net's 250/50.",
                         "Dice: MONAI DiceMetric (include_background=False, ignore_empty=False) on the raw "
                         "nnU-Net predictions against the delivered labels (original geometry), no postprocessing.",
                         "nnU-Net ran under nice -n 19 with the thread cap above on a machine shared with other "
                         "benchmarks: wall times are upper bounds; cpu_s is the CPU time its processes used.",
                         "segflow's numbers are read from the files named, measured at their dates with 2 threads; "
                         "predict_time.json used the first 10 imagesTr cases, not the fold-0 validation cases."]}
    return results, names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results, names = measure(args)
    except BenchError as error:
        print(f"nnunet_v2 bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nnunet_v2 bench: interrupted", file=sys.stderr)
        return 130
    print_curve(results["training"])
    headers = ["model", *[f"Dice {n}" for n in names], "Dice mean [95% CI]", "train min", "predict s/case",
               "threads"]
    rows = table_rows(results, names)
    no_tta = results["predict"]["no-tta"]
    print(f"nnU-Net predict s/case: TTA {results['predict']['tta']['s_per_case']}, no TTA {no_tta['s_per_case']} "
          f"(marginal {results['predict']['tta']['marginal_s_per_case']} / {no_tta['marginal_s_per_case']}, "
          f"start-up + model load {results['predict']['tta']['overhead_s']} / {no_tta['overhead_s']} s)\n")
    report("nnunet_v2", results, rows, headers, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
