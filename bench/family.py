"""The U-Net family at equal training budget (issue #18): each network trained by a fresh clone and
pipeline with the same `train.budget`, folds and plan rules, then compared by `segflow compare`
(Dice with 95 % CIs, paired Wilcoxon against UNet, params, FLOPs, latency; the U-Bench practice).

    .venv/bin/python -m bench.family --budget 5m                       # every network below
    .venv/bin/python -m bench.family --budget 5m --networks UNet,DynUNet-ResEnc

Each network's clone is kept under --workdir (default /tmp/segflow-family) and its evaluate and
register outputs are copied to <workdir>/records/<network>/ (per_case.csv, metrics.json, model.pt),
the folder form `segflow compare` reads. A network whose pipeline fails (e.g. a budget too small
for it) is reported with the failing stage's line and left out of the comparison. Results: a table
on stdout, JSON at --out (default bench/results/family.json), the compare CSV and PNG beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

from bench.accuracy import REPO, BenchError, measure, sweep_row, write_json
from bench.common import machine_info

DEFAULT_OUT = REPO / "bench" / "results" / "family.json"
BASELINE = "UNet"
# The UNet-only keys of params.yaml, removed for networks that do not take them (Hydra's `~`).
UNET_KEYS = ["~model.channels", "~model.strides", "~model.num_res_units", "~model.norm"]
DYNUNET = ["model.name=DynUNet", "~model.channels", "~model.num_res_units", "~model.norm", "+model.filters=auto"]
# Overrides per network on top of the default params.yaml; `auto` arguments are the planner's.
NETWORKS: dict[str, list[str]] = {
    "UNet": [],
    "AttentionUnet": ["model.name=AttentionUnet", "~model.num_res_units", "~model.norm"],
    "BasicUNetPlusPlus": ["model.name=BasicUNetPlusPlus", "~model.channels", "~model.strides",
                          "~model.num_res_units", "+model.features=auto"],
    "DynUNet": DYNUNET,
    # nnU-Net's residual encoder (ResEnc) as DynUNet has it: residual blocks in every stage.
    "DynUNet-ResEnc": [*DYNUNET, "+model.res_block=true"],
    "DynUNet-DS": [*DYNUNET, "+model.deep_supervision=true", "+model.deep_supr_num=2"],
    "SegResNet": ["model.name=SegResNet", *UNET_KEYS, "+model.init_filters=auto"],
    "UNETR": ["model.name=UNETR", *UNET_KEYS, "+model.img_size=auto", "+model.feature_size=auto"],
    "SwinUNETR": ["model.name=SwinUNETR", *UNET_KEYS, "+model.feature_size=auto"],
}


def copy_record(project: Path, dest: Path) -> Path:
    """The project's evaluate and register outputs in the folder form `segflow compare` reads."""
    from segflow.paths import Paths
    from segflow.reporting.compare import METRICS, MODEL, PER_CASE

    paths = Paths(project)
    dest.mkdir(parents=True, exist_ok=True)
    for source, name in ((paths.per_case, PER_CASE), (paths.metrics, METRICS), (paths.ensemble, MODEL)):
        if source.is_file():
            shutil.copy2(source, dest / name)
    return dest


def train_network(args: argparse.Namespace, network: str) -> tuple[dict, Path | None]:
    """One network's fresh clone and pipeline: its sweep row (or failure) and its record folder."""
    workdir = args.workdir / network
    if workdir.exists():
        shutil.rmtree(workdir)
    run_args = argparse.Namespace(workdir=workdir, uncommitted=False, track=False, keep=True)
    overrides = [*args.overrides, *NETWORKS[network], f"train.budget={args.budget}"]
    print(f"[family] {network}: {' '.join(overrides)}", file=sys.stderr, flush=True)
    try:
        report = measure(run_args, overrides)
    except BenchError as error:
        return {"network": network, "overrides": overrides, "failed": str(error)}, None
    row = {"network": network, "overrides": overrides, **sweep_row(report), "settings": report["settings"]}
    return row, copy_record(workdir, args.workdir / "records" / network)


def compare_records(records: dict[str, Path], out: Path) -> dict:
    """`segflow compare` of the record folders, UNet the baseline; its CSV and PNG beside `out`."""
    from segflow.reporting.compare import compare, render_table, write_outputs

    baseline = BASELINE if BASELINE in records else next(iter(records))
    result = compare(REPO, [str(p) for p in records.values()], baseline=baseline)
    write_outputs(result, out.with_suffix(".csv"), out.with_suffix(".png"))
    print(render_table(result))
    return {"baseline": result.baseline, "notes": result.notes,
            "table": result.table.to_dict(orient="records")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", required=True, help="train.budget of every network (e.g. 5m, 20m)")
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, from {list(NETWORKS)}")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for every network (as bench.accuracy -S)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segflow-family"),
                        help="one kept clone per network, and records/ for segflow compare")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result; compare CSV and PNG beside it")
    args = parser.parse_args(argv)
    args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = sorted(set(args.networks) - set(NETWORKS))
    if unknown:
        parser.error(f"unknown network(s) {unknown}; choose from {list(NETWORKS)}")
    args.workdir = args.workdir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, records = [], {}
    for network in args.networks:
        row, record = train_network(args, network)
        rows.append(row)
        if record is not None:
            records[network] = record
        print(f"[family] {network}: {row.get('failed') or row['dice_mean']}", file=sys.stderr, flush=True)
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "budget": args.budget, "overrides": args.overrides, "rows": rows}
    out = args.out.resolve()
    if len(records) >= 2:
        result["compare"] = compare_records(records, out)
    write_json(out, result)
    print(f"\nresults: {out}")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
