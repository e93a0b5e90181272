"""`segflow compare`: several models or runs side by side, with statistics and inference cost.

Each source (the workspace, a registry model, a DVC experiment or git rev, a folder) becomes a
`Record`: its per-case table, its metrics and, where there is one, its model file. Every record
gets its mean Dice with a 95% bootstrap interval and its mean HD95; every record but the baseline
is paired case by case with the baseline (mean Dice difference with a bootstrap interval and a
two-sided Wilcoxon signed-rank p, Holm-corrected when several models face one baseline). The model
files are profiled on one device (parameters, FLOPs, latency, peak memory) and scored with a
U-Bench-style U-Score. Results go to a terminal table, a CSV and a PNG.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.errors import SegflowError
from segflow.files import atomic_path, file_hash, read_json, write_csv
from segflow.metrics.per_case import PerCaseError, case_dice, check_per_case, mean_hd95, mean_iou
from segflow.paths import Paths

WORKSPACE = "workspace"
CHAMPION = "champion"
EXP_PREFIX = "exp:"
PER_CASE, METRICS, MODEL = "per_case.csv", "metrics.json", "model.pt"
U_SCORE_MIN_MODELS = 3  # normalised across the compared models, two would always score 0 and 1


class CompareError(SegflowError):
    """A source that cannot be read or compared; the message names the source and what is missing."""


@dataclass
class Record:
    name: str  # what the table calls it (the source as given, or a folder's name)
    source: str  # where it came from, in words
    per_case: pd.DataFrame
    metrics: dict = field(default_factory=dict)
    model_path: Path | None = None


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per record, columns as in the CSV
    baseline: str
    notes: list[str]


# ---------------------------------------------------------------- per-case statistics

def check_table(name: str, per_case: pd.DataFrame) -> pd.DataFrame:
    """The per-case table if it can be compared; else an error naming the record."""
    try:
        return check_per_case(per_case, name)
    except PerCaseError as exc:
        raise CompareError(str(exc)) from None


def min_paired_cases(root: Path) -> int:
    """register.min_paired_cases of the project's params.yaml (the number register promotes by), or
    its default where there is no usable params.yaml: one setting for both."""
    from segflow.config import ConfigError, RegisterConfig, load_params

    try:
        return load_params(root / "params.yaml").register_.min_paired_cases
    except ConfigError:
        return RegisterConfig.model_fields["min_paired_cases"].default


def summarise(record: Record) -> dict:
    from segflow.metrics.statistics import bootstrap_ci

    interval = bootstrap_ci(case_dice(record.per_case).to_numpy())
    return {"name": record.name, "source": record.source, "n_cases": interval["n"],
            "dice_mean": interval["mean"], "dice_ci_low": interval["low"], "dice_ci_high": interval["high"],
            "iou_mean": mean_iou(record.per_case), "hd95_mean": mean_hd95(record.per_case)}


def paired_with(baseline: Record, other: Record, min_paired: int) -> dict:
    """`other` minus `baseline` on the cases both scored (at least `min_paired` of them)."""
    from segflow.metrics.statistics import paired_bootstrap_difference, paired_wilcoxon

    base, new = case_dice(baseline.per_case), case_dice(other.per_case)
    common = base.index.intersection(new.index)
    if len(common) < min_paired:
        raise CompareError(f"{other.name} and {baseline.name} share only {len(common)} case(s); a paired "
                           f"comparison needs at least {min_paired} (register.min_paired_cases; were they "
                           f"evaluated on the same split?)")
    a, b = new[common].to_numpy(), base[common].to_numpy()
    delta, test = paired_bootstrap_difference(a, b), paired_wilcoxon(a, b)
    return {"n_paired": len(common), "delta_dice": delta["mean"], "delta_ci_low": delta["low"],
            "delta_ci_high": delta["high"], "p_wilcoxon": test["p_value"]}


# ---------------------------------------------------------------- sources

def _read_folder(name: str, source: str, folder: Path) -> Record:
    """A folder holding per_case.csv (required), metrics.json and model.pt (both optional)."""
    if not (folder / PER_CASE).is_file():
        raise CompareError(f"{name}: {folder / PER_CASE} not found ({source} has no per-case scores)")
    metrics = read_json(folder / METRICS) if (folder / METRICS).is_file() else {}
    model = folder / MODEL if (folder / MODEL).is_file() else None
    return Record(name, source, pd.read_csv(folder / PER_CASE), metrics, model)


def _workspace(root: Path) -> Record:
    paths = Paths(root)
    if not paths.per_case.is_file():
        raise CompareError(f"workspace: {paths.per_case} not found (run the pipeline: dvc repro)")
    metrics = read_json(paths.metrics) if paths.metrics.is_file() else {}
    model = paths.ensemble if paths.ensemble.is_file() else None
    return Record(WORKSPACE, "workspace artifacts", pd.read_csv(paths.per_case), metrics, model)


def registry_dir(root: Path) -> Path:
    from segflow.config import load_params

    return root / load_params(root / "params.yaml").register_.registry_dir


def champion_id(root: Path) -> str | None:
    """The champion of the project's current dataset (or of the only dataset with models); a
    damaged registry raises CompareError naming the fault."""
    from segflow.registry.store import CHAMPION, RegistryError

    try:
        found = project_registry(root)
        return found.registry.model_id(CHAMPION) if found and found.registry.index().get("champion") else None
    except RegistryError as exc:
        raise CompareError(str(exc)) from None


def project_registry(root: Path):
    """The dataset registry of the project's last run (its splits and fingerprint), else the only
    dataset registry; None when there is none."""
    from segflow.paths import Paths
    from segflow.registry.catalog import Catalog, dataset_key, only_dataset, project_dataset
    from segflow.registry.store import RegistryError

    catalog = Catalog(registry_dir(root))
    try:
        key = dataset_key(*project_dataset(Paths(root)))
    except (OSError, ValueError, KeyError):
        key = None
    chosen = [d for d in catalog.datasets() if d.key == key]
    if chosen:
        return chosen[0]
    try:
        return only_dataset(catalog)
    except RegistryError:
        return None


def _registry_model(root: Path, reference: str) -> Record | None:
    """'champion', a model id or an id prefix from the registry; None when it names no model there
    (a damaged registry is named, never taken for 'no such model')."""
    from segflow.registry.catalog import Catalog
    from segflow.registry.store import BrokenRegistry, RegistryError

    catalog = Catalog(registry_dir(root))
    try:
        if reference == CHAMPION:
            found = project_registry(root)
            if found is None:
                raise RegistryError(f"{catalog.root}: no champion for this project's dataset")
            model_id = found.registry.model_id(reference)
        else:
            found, model_id = catalog.locate(reference)
    except BrokenRegistry as exc:
        raise CompareError(str(exc)) from None
    except RegistryError as exc:
        if reference == CHAMPION:
            raise CompareError(f"champion: {exc}") from None
        return None
    return _read_folder(reference, f"registry model {model_id}", found.registry.model_dir(model_id))


def _read_at_rev(root: Path, rev: str, path: str, mode: str = "r", required: bool = True):
    """A file's content at a git rev or DVC experiment, through the local DVC cache."""
    import dvc.api
    from dvc.exceptions import DvcException, PathMissingError
    from dvc.scm import RevError

    try:
        with dvc.api.open(path, rev=rev, repo=str(root), mode=mode) as handle:
            return handle.read()
    except RevError:
        raise CompareError(f"exp:{rev}: no git revision or DVC experiment of that name") from None
    except PathMissingError:
        if not required:
            return None
        raise CompareError(f"exp:{rev}: {path} cannot be read at that revision: it is not tracked there or "
                           f"its data is not in the local DVC cache (try `dvc exp pull` or `dvc pull`)") from None
    except DvcException as exc:
        raise CompareError(f"exp:{rev}: reading {path} failed: {exc}") from None


def _experiment(root: Path, rev: str, workdir: Path, want_model: bool) -> Record:
    paths = Paths(Path("."))
    per_case = pd.read_csv(io.StringIO(_read_at_rev(root, rev, paths.per_case.as_posix())))
    metrics_text = _read_at_rev(root, rev, paths.metrics.as_posix(), required=False)
    model = None
    if want_model:
        content = _read_at_rev(root, rev, paths.ensemble.as_posix(), mode="rb", required=False)
        if content is not None:
            model = workdir / f"{len(list(workdir.iterdir()))}-{MODEL}"
            model.write_bytes(content)
    return Record(EXP_PREFIX + rev, f"revision {rev}", per_case, json.loads(metrics_text or "{}"), model)


def list_experiments(root: Path) -> list[str]:
    """Names of the DVC experiments based on the current commit (what `dvc exp list` shows)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        found = repo.experiments.ls()
    names = [name or sha for runs in found.values() for name, sha in runs]
    if not names:
        raise CompareError("--all-exps: no DVC experiments on the current commit (run `dvc exp run` first)")
    return names


def load_record(root: Path, spec: str, workdir: Path, want_model: bool = True) -> Record:
    """One source: 'workspace', 'champion', a registry model id, 'exp:<name or rev>' or a folder."""
    if spec == WORKSPACE:
        return _workspace(root)
    if spec.startswith(EXP_PREFIX):
        return _experiment(root, spec[len(EXP_PREFIX):], workdir, want_model)
    folder = Path(spec) if Path(spec).is_absolute() else root / spec
    if spec != CHAMPION and folder.is_dir():
        return _read_folder(folder.name or spec, f"folder {spec}", folder)
    from segflow.config import ConfigError

    try:
        record, registry = _registry_model(root, spec), registry_dir(root)
    except ConfigError as exc:  # no usable params.yaml: no registry to look in
        record, registry = None, f"the registry (not found: {exc})"
    if record is None:
        raise CompareError(f"{spec!r} is not 'workspace', 'champion', 'exp:<name>', a model id in "
                           f"{registry} or a folder holding {PER_CASE}")
    return record


def default_sources(root: Path) -> list[str]:
    """champion + workspace, the question asked most often: is what I just ran better?"""
    missing = []
    if champion_id(root) is None:
        missing.append(f"no champion in {registry_dir(root) / 'index.json'}")
    if not Paths(root).per_case.is_file():
        missing.append(f"no {Paths(root).per_case}")
    if missing:
        raise CompareError(f"no sources given and the default (champion + workspace) is not available: "
                           f"{'; '.join(missing)}; name the sources to compare")
    return [CHAMPION, WORKSPACE]


def load_records(root: Path, specs: list[str], workdir: Path, want_model: bool) -> list[Record]:
    records, seen = [], set()
    for spec in specs:
        record = load_record(root, spec, workdir, want_model)
        base, n = record.name, 2
        while record.name in seen:  # two folders of the same name
            record.name, n = f"{base}#{n}", n + 1
        seen.add(record.name)
        record.per_case = check_table(record.name, record.per_case)
        records.append(record)
    return records


# ---------------------------------------------------------------- cost and U-Score

def measure_costs(records: list[Record], device: str) -> dict[str, dict]:
    """Cost of each record's model file on one device; identical files are measured once."""
    from segflow.models.profile import profile_model_file

    costs, by_hash = {}, {}
    for record in records:
        if record.model_path is None:
            continue
        digest = file_hash(record.model_path)
        if digest not in by_hash:
            by_hash[digest] = profile_model_file(record.model_path, device)
        cost = by_hash[digest]
        costs[record.name] = {"params": cost.params, "gflops": cost.flops / 1e9, "latency_ms": cost.latency_ms,
                              "peak_mb": cost.peak_mb, "members": cost.members, "device": cost.device,
                              "threads": cost.threads}
    return costs


def _normalised(values: pd.Series, low: float, high: float, higher_is_better: bool) -> pd.Series:
    """Position between the two references, clipped to [0, 1]; 1 when the references coincide."""
    if not np.isfinite(high - low) or high == low:
        return pd.Series(1.0, index=values.index)
    scaled = (values - low) / (high - low)
    return (scaled if higher_is_better else 1 - scaled).clip(0, 1)


def u_score(table: pd.DataFrame, references: dict | None = None) -> pd.Series:
    """U-Bench-style U-Score in [0, 1]: the harmonic mean of a performance score and an efficiency score.

    Tang et al. 2025 (arXiv 2510.07041) define U-Score from IoU, parameters, FLOPs and FPS, each
    normalised between two references per dataset; their exact equation is not in the sources that
    could be read here (FengheTan9/U-Bench README points to an online calculator; issue #5 of that
    repository shows each dataset's references as pairs of low/high IoU, log params, log FLOPs and
    FPS). This is an approximation built on that: performance = IoU between the references; each
    cost = its position between the references (log scale for params and FLOPs, lower is better;
    FPS = 1000 / latency, higher is better); efficiency = the mean of the three; U-Score = the
    harmonic mean of performance and efficiency (high only when both are). Without `references`
    ({"iou": (low, high), "params": ..., "gflops": ..., "fps": ...}) the compared models themselves
    are the references (their min and max), so the score ranks models within one comparison only,
    and needs at least U_SCORE_MIN_MODELS models with a measured cost (NaN otherwise).
    """
    rows = table.dropna(subset=["iou_mean", "params", "gflops", "latency_ms"])
    if not references and len(rows) < U_SCORE_MIN_MODELS:
        return pd.Series(np.nan, index=table.index)
    values = pd.DataFrame({"iou": rows["iou_mean"], "params": np.log(rows["params"].astype(float)),
                           "gflops": np.log(rows["gflops"].astype(float)), "fps": 1000 / rows["latency_ms"]})
    refs = {k: (values[k].min(), values[k].max()) for k in values}
    for key, (low, high) in (references or {}).items():
        refs[key] = (math.log(low), math.log(high)) if key in ("params", "gflops") else (low, high)
    performance = _normalised(values["iou"], *refs["iou"], higher_is_better=True)
    efficiency = (_normalised(values["params"], *refs["params"], higher_is_better=False)
                  + _normalised(values["gflops"], *refs["gflops"], higher_is_better=False)
                  + _normalised(values["fps"], *refs["fps"], higher_is_better=True)) / 3
    harmonic = (2 * performance * efficiency / (performance + efficiency)).fillna(0.0)
    return harmonic.reindex(table.index)


# ---------------------------------------------------------------- the comparison

def pick_baseline(records: list[Record], baseline: str | None) -> Record:
    if baseline is None:
        return records[0]
    for record in records:
        if baseline in (record.name, record.source):
            return record
    raise CompareError(f"--baseline {baseline!r} is none of the compared records: "
                       f"{', '.join(r.name for r in records)}")


def build_table(records: list[Record], base: Record, costs: dict[str, dict], min_paired: int,
                u_references: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per record: statistics, paired test against `base` (on at least `min_paired` common
    cases), cost, U-Score."""
    from segflow.metrics.statistics import holm_adjust

    rows = []
    for record in records:
        row = summarise(record) | {"baseline": record is base}
        if record is not base:
            row |= paired_with(base, record, min_paired)
        rows.append(row | costs.get(record.name, {}))
    table = pd.DataFrame(rows).reindex(columns=CSV_COLUMNS)
    notes = []
    compared = table.index[~table["baseline"].astype(bool)]
    if len(compared) > 1:
        table.loc[compared, "p_holm"] = holm_adjust(table.loc[compared, "p_wilcoxon"])
        notes.append(f"{len(compared)} models against one baseline: p_holm is the Holm-corrected Wilcoxon p")
    table["u_score"] = u_score(table, u_references)
    return table, notes


CSV_COLUMNS = ["name", "source", "baseline", "n_cases", "dice_mean", "dice_ci_low", "dice_ci_high", "iou_mean",
               "hd95_mean", "n_paired", "delta_dice", "delta_ci_low", "delta_ci_high", "p_wilcoxon", "p_holm",
               "params", "gflops", "latency_ms", "peak_mb", "members", "device", "threads", "u_score"]


def check_device(device: str, cost: bool) -> None:
    """Fail before any source is read: every model is measured on this one device."""
    if device not in ("cpu", "cuda"):
        raise CompareError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and cost:
        import torch

        if not torch.cuda.is_available():
            raise CompareError("--device cuda: no CUDA device is available here (use --device cpu)")


def compare(root: Path, specs: list[str], baseline: str | None = None, all_exps: bool = False,
            device: str = "cpu", cost: bool = True, u_references: dict | None = None) -> Comparison:
    """Compare the sources (default: champion + workspace); see the module docstring.

    Args:
        specs: sources as `load_record` reads them; `all_exps` adds every experiment of HEAD.
        baseline: name of the record the others are paired with (default: the first).
        device: where the cost is measured, the same for every model.
        u_references: fixed U-Score references (see `u_score`); default: the compared models.
    """
    check_device(device, cost)
    specs = list(specs) + ([EXP_PREFIX + n for n in list_experiments(root)] if all_exps else [])
    specs = specs or default_sources(root)
    with tempfile.TemporaryDirectory(prefix="segflow-compare-") as workdir:
        records = load_records(root, specs, Path(workdir), want_model=cost)
        base = pick_baseline(records, baseline)
        costs = measure_costs(records, device) if cost else {}
        table, notes = build_table(records, base, costs, min_paired_cases(root), u_references)
    return Comparison(table, base.name, notes + cost_notes(records, costs, cost, u_references))


def cost_notes(records: list[Record], costs: dict, cost: bool, u_references: dict | None) -> list[str]:
    """What the reader of the cost columns must know."""
    if not cost:
        return ["--no-cost: cost and U-Score not measured"]
    notes = [f"no model file for {', '.join(r.name for r in records if r.model_path is None)}: cost and "
             f"U-Score left blank"] if any(r.model_path is None for r in records) else []
    if costs:
        some = next(iter(costs.values()))
        notes.append(f"cost: batch 1 at the patch size, all members, on {some['device']} "
                     f"({some['threads']} threads); latency = median")
    if u_references:
        notes.append("U-Score: approximation of U-Bench's, normalised against the given references")
    elif len(costs) >= U_SCORE_MIN_MODELS:
        notes.append("U-Score: approximation of U-Bench's, normalised across the models compared here")
    elif costs:
        notes.append(f"U-Score needs at least {U_SCORE_MIN_MODELS} models with a cost (it is normalised "
                     f"across the compared models)")
    return notes


# ---------------------------------------------------------------- output

def _fmt(value, pattern: str) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else pattern.format(value)


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, r in table.iterrows():
        interval = f"{r.dice_mean:.4f} [{r.dice_ci_low:.4f}, {r.dice_ci_high:.4f}]"
        delta = ("baseline" if r.baseline else
                 f"{r.delta_dice:+.4f} [{r.delta_ci_low:+.4f}, {r.delta_ci_high:+.4f}] (n={int(r.n_paired)})")
        p = "" if r.baseline else _fmt(r.p_wilcoxon, "{:.3g}") + _fmt(r.p_holm, " (Holm {:.3g})")
        rows.append([str(r["name"]), str(int(r.n_cases)), interval, delta, p, _fmt(r.hd95_mean, "{:.2f}"),
                     _fmt(r.params / 1e6 if pd.notna(r.params) else None, "{:.2f}"), _fmt(r.gflops, "{:.2f}"),
                     _fmt(r.latency_ms, "{:.1f}"), _fmt(r.peak_mb, "{:.1f}"), _fmt(r.u_score, "{:.3f}")])
    return rows


HEADERS = ["model", "n", "mean Dice [95% CI]", "ΔDice vs baseline [95% CI]", "Wilcoxon p", "HD95",
           "params (M)", "GFLOPs", "latency ms", "peak MB", "U-Score"]


def render_table(result: Comparison, width: int = 200) -> str:
    """The comparison as a plain-text table (rich), ready to print."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"segflow compare (baseline: {result.baseline})", title_justify="left")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i in (0, 2, 3) else "right", no_wrap=i in (2, 3))
    for row in display_rows(result.table):
        table.add_row(*row)
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)
    return console.file.getvalue().rstrip()


def write_png(result: Comparison, dest: Path) -> None:
    """Left: mean Dice with its 95% CI per model; right: Dice against latency (the trade-off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result.table
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    errors = np.vstack([t.dice_mean - t.dice_ci_low, t.dice_ci_high - t.dice_mean])
    left.errorbar(range(len(t)), t.dice_mean, yerr=errors, fmt="o", capsize=4)
    left.set_xticks(range(len(t)), t["name"], rotation=20, ha="right")
    left.set(ylabel="mean Dice (95% CI)", title="Segmentation")
    timed = t.dropna(subset=["latency_ms"])
    right.scatter(timed.latency_ms, timed.dice_mean)
    for _, r in timed.iterrows():
        right.annotate(r["name"], (r.latency_ms, r.dice_mean), textcoords="offset points", xytext=(4, 4))
    right.set(xlabel="latency per patch (ms)", ylabel="mean Dice", title="Dice vs latency")
    right.margins(0.2)
    if timed.empty:
        right.axis("off")
        right.text(0.5, 0.5, "no cost measured (--no-cost, or no model files)", ha="center",
                   transform=right.transAxes)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_outputs(result: Comparison, csv_path: Path, png_path: Path) -> None:
    write_csv(csv_path, result.table)
    write_png(result, png_path)
