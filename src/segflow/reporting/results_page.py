"""One results page per pipeline run (artifacts/report/index.html), readable offline.

The page shows the metrics per class with 95% bootstrap intervals, the training curves, the worst
and best cases as overlays, the validation summary, the plan's choices with their reasons, the
model card and the W&B runs. It loads nothing from the network: CSS is inline and every image is
a PNG in the page's own folder, so the folder can be copied or archived as it is. Links to the W&B
runs' local folders are relative; an online run also gets its W&B URL (a link, never loaded).
"""

from __future__ import annotations

import html
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from segflow.files import write_text
from segflow.metrics.per_case import DICE, HD95, score_intervals
from segflow.planning.plan import Plan
from segflow.reporting.overlays import OverlayCase, OverlayIndex
from segflow.tracking.runs import RunLink
from segflow.training.history import FoldHistory
from segflow.validation.report import ValidationReport

PAGE = "index.html"
CURVES = "training_curves.png"
OVERLAYS = "overlays"
MEAN_ROW = "dice (mean over classes, per case)"
QUARANTINE_SHOWN = 20  # quarantined cases listed by name; the rest are counted

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } figcaption { font-size: 0.9em; }
img { max-width: 100%; } figure img { max-width: 520px; } .card h1 { font-size: 1.2em; border: none; }
.card h2 { font-size: 1.05em; border: none; } .muted { color: #777; } nav a { margin-right: 1em; }
"""


@dataclass
class RunResults:
    """What one pipeline run produced, as the page shows it (each read by its own typed reader)."""

    dataset: str
    metrics: dict
    per_case: pd.DataFrame
    histories: list[FoldHistory]
    validation: ValidationReport
    plan: Plan
    overlays: OverlayIndex | None = None
    overlay_dir: Path | None = None
    registration: dict | None = None
    model_card: str | None = None  # markdown
    runs: list[RunLink] = field(default_factory=list)
    data_docs: Path | None = None  # the validate stage's Data Docs page, linked when present


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are already HTML; columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _interval(row: dict | None, digits: int) -> str:
    if row is None:
        return "<span class='muted'>n/a</span>"
    return f"{row['mean']:.{digits}f} <span class='muted'>[{row['low']:.{digits}f} – {row['high']:.{digits}f}]</span>"


def class_metric_rows(per_case: pd.DataFrame) -> list[dict]:
    """Per class: Dice and HD95 (mean over cases with a 95% bootstrap interval) and the case count."""
    intervals = {r["metric"]: r for r in score_intervals(per_case)}
    names = [m.removeprefix(f"{DICE}_") for m in intervals if m.startswith(f"{DICE}_") and m != MEAN_ROW]
    rows = [{"class": n, "dice": intervals[f"{DICE}_{n}"], "hd95": intervals.get(f"{HD95}_{n}")} for n in names]
    return rows + [{"class": "mean over classes (per case)", "dice": intervals[MEAN_ROW], "hd95": None}]


def metrics_section(results: RunResults) -> str:
    rows = [[_e(r["class"]), _interval(r["dice"], 4), _interval(r["hd95"], 2), str(r["dice"]["n"])]
            for r in class_metric_rows(results.per_case)]
    before = results.metrics.get("dice_mean_before_postprocessing")
    note = f"<p>Mean Dice before postprocessing: {before}.</p>" if before is not None else ""
    return ("<h2 id='metrics'>Metrics per class</h2><p>Out of fold: each case scored by the model of the fold that "
            "did not train on it. Mean over cases with its 95% bootstrap interval in brackets; HD95 in mm.</p>"
            + _table(["class", "Dice [95% CI]", "HD95 [95% CI]", "cases"], rows) + note)


def curves_section(has_curves: bool) -> str:
    body = (f"<img src='{CURVES}' alt='training loss, validation Dice per class and learning rate by epoch'>"
            if has_curves else "<p class='muted'>No training history found.</p>")
    return "<h2 id='training'>Training curves</h2>" + body


def _figure(case: OverlayCase, label: str) -> str:
    dice = ", ".join(f"{_e(n)} {d:.3f}" for n, d in case.dice.items())
    return (f"<figure><img src='{OVERLAYS}/{_e(case.file)}' alt='{_e(label)} case {_e(case.case_id)}'>"
            f"<figcaption>{_e(label)}: <b>{_e(case.case_id)}</b> (fold {case.fold}), mean Dice {case.mean_dice:.3f}"
            f" ({dice})</figcaption></figure>")


def cases_section(index: OverlayIndex | None) -> str:
    if index is None:
        return "<h2 id='cases'>Worst and best cases</h2><p class='muted'>No overlays were drawn.</p>"
    worst = "".join(_figure(c, f"worst #{i}") for i, c in enumerate(index.worst, start=1))
    best = "".join(_figure(c, f"best #{i}") for i, c in enumerate(index.best, start=1))
    return ("<h2 id='cases'>Worst and best cases</h2><p>Ground truth (top) and prediction after postprocessing "
            "(bottom): class fills with their outlines; a volume through the centre of its ground-truth "
            f"structure in three orthogonal slices.</p><h3>Worst by mean Dice</h3>{worst}<h3>Best</h3>{best}")


def validation_section(report: ValidationReport, data_docs: str | None) -> str:
    verdict = "passed" if report.passed else "did not pass"
    stop = report.decision.get("reasons") or []
    lines = [f"<p>Validation {verdict}: <b>{report.n_kept}</b> cases kept, <b>{report.n_quarantined}</b> "
             f"quarantined{'; stopped: ' + _e('; '.join(stop)) if stop else ''}.</p>"]
    counts = (report.model_extra or {}).get("rule_counts") or {}
    if counts:
        lines.append(_table(["rule", "findings"], [[_e(r), str(n)] for r, n in counts.items()]))
    shown = list(report.quarantined.items())[:QUARANTINE_SHOWN]
    if shown:
        lines.append(_table(["quarantined case", "reasons"], [[_e(c), _e("; ".join(r))] for c, r in shown],
                            numeric_from=2))
        if report.n_quarantined > len(shown):
            lines.append(f"<p>… and {report.n_quarantined - len(shown)} more (see the validate report).</p>")
    if data_docs:
        lines.append(f"<p>Every expectation and finding: <a href='{_e(data_docs)}'>Data Docs</a>.</p>")
    return "<h2 id='validation'>Validation</h2>" + "".join(lines)


def plan_section(plan: Plan) -> str:
    values = plan.model_dump(mode="json")
    rows = [[_e(key), _e(values.get(key, "")), _e(reason)] for key, reason in plan.reasons.items()]
    return (f"<h2 id='plan'>The plan's choices</h2><p>{plan.spatial_dims}D {_e(plan.network)} on {_e(plan.device)}, "
            f"estimated {plan.estimated_memory_gb:.1f} GB of {plan.memory_budget_gb:.1f} GB.</p>"
            + _table(["setting", "value", "reason"], rows, numeric_from=3))


def model_card_section(card: str | None, registration: dict | None) -> str:
    import markdown

    if registration and not registration.get("registered", True):
        status = f"<p>Not registered: {_e(registration.get('gate', ''))}</p>"
    elif registration:
        role = "champion" if registration.get("promoted") else "candidate"
        status = (f"<p>Registered as <b>{_e(registration.get('model_id', ''))}</b> ({role}): "
                  f"{_e(registration.get('reason', ''))}</p>")
    else:
        status = ""
    body = markdown.markdown(card, extensions=["tables"]) if card else "<p class='muted'>No model card.</p>"
    return f"<h2 id='model-card'>Model card</h2>{status}<div class='card'>{body}</div>"


def runs_section(runs: list[RunLink], page_dir: Path) -> str:
    if not runs:
        return ("<h2 id='wandb'>W&amp;B runs</h2><p class='muted'>No W&amp;B run was recorded for this pipeline "
                "run (tracking off, or every stage was up to date).</p>")
    rows = []
    for run in runs:
        folder = Path(run.folder)
        local = (f"<a href='{_e(os.path.relpath(folder, page_dir))}'>{_e(folder.name)}</a>" if folder.exists()
                 else f"<span class='muted'>{_e(folder.name)} (gone)</span>")
        online = f"<a href='{_e(run.url)}'>{_e(run.url)}</a>" if run.url else "offline: upload with <code>wandb sync</code>"
        rows.append([_e(run.stage), _e(run.run_id), local, online])
    return (f"<h2 id='wandb'>W&amp;B runs</h2><p>Pipeline run group <code>{_e(runs[0].group)}</code>.</p>"
            + _table(["stage", "run", "local folder", "W&B"], rows, numeric_from=4))


def page_html(results: RunResults, page_dir: Path, has_curves: bool) -> str:
    """The whole page: inline CSS, images referenced by relative paths inside `page_dir`."""
    docs = os.path.relpath(results.data_docs, page_dir) if results.data_docs and results.data_docs.exists() else None
    sections = [metrics_section(results), curves_section(has_curves), cases_section(results.overlays),
                validation_section(results.validation, docs), plan_section(results.plan),
                model_card_section(results.model_card, results.registration), runs_section(results.runs, page_dir)]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (("metrics", "Metrics"), ("training", "Training"),
                  ("cases", "Cases"), ("validation", "Validation"), ("plan", "Plan"), ("model-card", "Model card"),
                  ("wandb", "W&amp;B")))
    dice = results.metrics.get("dice_mean")
    headline = f"mean Dice {dice}" + (f" (95% CI {results.metrics['dice_mean_ci95']})"
                                      if "dice_mean_ci95" in results.metrics else "") if dice is not None else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>segflow results: "
            f"{_e(results.dataset)}</title><style>{STYLE}</style></head><body>"
            f"<h1>segflow results: {_e(results.dataset)}</h1><p>{_e(headline)}</p><nav>{nav}</nav>"
            + "".join(sections) + "</body></html>\n")


def copy_overlays(index: OverlayIndex | None, source: Path | None, dest: Path) -> None:
    """The drawn cases' PNGs into the page's folder, so the page travels with its images."""
    dest.mkdir(parents=True, exist_ok=True)
    for case in (index.worst + index.best) if index and source else []:
        shutil.copy2(source / case.file, dest / case.file)


def write_results_page(results: RunResults, page_dir: Path) -> Path:
    """Write the page and its images into `page_dir` (emptied first); return the page's path."""
    from segflow.reporting.curves import plot_training_curves

    if page_dir.exists():
        shutil.rmtree(page_dir)
    page_dir.mkdir(parents=True)
    copy_overlays(results.overlays, results.overlay_dir, page_dir / OVERLAYS)
    has_curves = bool(results.histories)
    if has_curves:
        plot_training_curves(results.histories, page_dir / CURVES)
    write_text(page_dir / PAGE, page_html(results, page_dir.resolve(), has_curves))
    return page_dir / PAGE
