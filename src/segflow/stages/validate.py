"""validate: run the data contracts over the manifest; keep good cases, stop on dataset errors."""

from __future__ import annotations

import pandas as pd

from segflow.config import Params
from segflow.contracts import ContractResult, check_manifest
from segflow.errors import StageFailed
from segflow.io import read_json, write_json
from segflow.paths import Paths


def declared_labels(splits: dict) -> list[int]:
    return sorted(int(k) for k in splits["labels"])


def run(params: Params, manifest: pd.DataFrame, splits: dict) -> ContractResult:
    cfg = params.validate_
    return check_manifest(manifest, declared_labels(splits), cfg.max_dim, cfg.min_cases)


def summary(result: ContractResult) -> str:
    """One screen: counts per rule, then each dataset-level error."""
    report = result.to_report()
    lines = [f"validate: {report['n_kept']} cases kept, {report['n_quarantined']} quarantined"]
    lines += [f"  {rule}: {count}" for rule, count in report["rule_counts"].items()]
    lines += [f"  ERROR {f.rule}: {f.message}" for f in result.dataset_errors]
    return "\n".join(lines)


def main(params: Params, paths: Paths, tracker=None) -> dict:
    manifest = pd.read_csv(paths.manifest, keep_default_na=True)
    result = run(params, manifest, read_json(paths.splits))
    write_json(paths.validation_report, result.to_report())
    if not result.passed:
        raise StageFailed(f"{summary(result)}\nDataset rejected; full report: {paths.validation_report}")
    print(summary(result))
    return {"kept": len(result.kept), "quarantined": len(result.quarantined)}
