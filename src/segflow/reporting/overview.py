"""Where the results of the last pipeline run are, in a few lines for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from segflow.paths import Paths


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def report_lines(root: Path) -> list[str]:
    paths = Paths(root)
    lines = ["", "segflow results:"]
    if paths.report_page.is_file():
        lines.append(f"  results page   {paths.report_page}  (open in a browser; works offline)")
    metrics = _load(paths.metrics)
    if metrics:
        scores = ", ".join(f"{k}={v}" for k, v in metrics.items() if k.startswith(("dice", "hd95")))
        lines.append(f"  metrics        {paths.metrics}  ({scores})")
    report = _load(paths.validation_report)
    if report:
        lines.append(f"  validation     {paths.validation_report}  ({report['n_kept']} kept, "
                     f"{report['n_quarantined']} quarantined)")
    registration = _load(paths.registration)
    if registration:
        where = registration.get("model_dir", "not registered")
        status = ("champion" if registration.get("promoted") else "candidate") if "model_id" in registration else ""
        reason = registration.get("reason") or registration.get("gate", "")
        lines.append(f"  model          {where}  ({status + ': ' if status else ''}{reason})")
        if registration.get("export", {}).get("formats"):
            lines.append(f"  export         {paths.export_bundle}  ({', '.join(registration['export']['formats'])}, "
                         f"MONAI bundle)")
    for label, path in (("per-case", paths.per_case), ("overlays", paths.overlays),
                        ("aug. preview", paths.preprocess_preview), ("train curves", paths.train_dir),
                        ("plan", paths.plan)):
        if path.exists():
            lines.append(f"  {label:<14} {path}")
    lines.append("  plots          run `make plots` (offline HTML + PNG); W&B runs in .segflow/wandb "
                 "(`wandb sync` to upload)")
    return lines
