"""`segflow` command line: parse arguments, call the library, print errors without tracebacks.

Heavy libraries (torch, MONAI, GX, wandb) are imported inside commands so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="segflow: versioned, validated, tracked U-Net segmentation pipelines.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, LookupError, RuntimeError)


def _project_root() -> Path:
    from segflow.env import apply_project_env, find_project_root

    root = find_project_root()
    apply_project_env(root)
    return root


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"segflow: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported(prefix: str = "", usage: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """End the command on an error a user can act on (config, data, registry, model), printing its
    message without a traceback. Exit code: 2 for `usage` errors, else the error's own
    `exit_code` (SegflowError subclasses say 1 or 2), else 1."""
    from segflow.config import ConfigError
    from segflow.errors import SegflowError

    try:
        yield
    except typer.Exit:  # click's Exit is a RuntimeError: a command's own exit is no error
        raise
    except (ConfigError, SegflowError, *USER_ERRORS) as exc:
        code = 2 if isinstance(exc, usage) else getattr(exc, "exit_code", 1)
        _fail(f"{prefix}{exc}", code)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="ingest|validate|plan|preprocess|train|evaluate|register")],
    fold: Annotated[str | None, typer.Option(help="train: the fold to train, a number or `all` (dvc.yaml foreach)")] = None,
) -> None:
    """Run one pipeline stage (this is what dvc.yaml calls)."""
    root = _project_root()
    if fold is not None and fold != "all" and not fold.isdigit():
        raise typer.BadParameter(f"--fold {fold!r}: a fold number (0, 1, ...) or all")
    from segflow.processes.parent_watch import exit_with_launcher
    from segflow.stages import run_stage

    exit_with_launcher()  # killed with dvc, never left training as an orphan

    with reported(f"stage {name} failed: "):
        run_stage(name, root, None if fold is None else fold if fold == "all" else int(fold))


@app.command()
def validate(
    data: Annotated[Path, typer.Option(help="the delivery: a dataset folder (MSD, nnU-Net v2, 2D), or a "
                                            ".tar/.tar.gz/.zip of one")],
    report: Annotated[Path, typer.Option(help="where to write the JSON report")],
    layout: Annotated[str, typer.Option(help="auto | msd | nnunetv2 | folders2d (auto: by dataset.json, "
                                             "else 2D folders)")] = "auto",
    mask_values: Annotated[str, typer.Option(help="folders2d: raw mask values allowed, e.g. 0,255")] = "",
    image_dir: Annotated[str, typer.Option(help="folders2d: image folder below --data")] = "train/image",
    label_dir: Annotated[str, typer.Option(help="folders2d: mask folder below --data")] = "train/label",
    min_cases: Annotated[int | None, typer.Option(min=1, help="default: params.yaml validate.min_cases")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="warnings fail too")] = False,
) -> None:
    """Check a new delivery with the pipeline's data contracts, without running the pipeline.

    Exit 0: no error.
    Exit 1: a case is quarantined or the delivery has a dataset-level error (--strict: or a warning).
    Exit 2: the delivery cannot be read (missing, not an archive, unsafe member, too large, no
    dataset.json), the report cannot be written there, or an option is malformed.
    """
    from segflow.config import ConfigError
    from segflow.validation.delivery import FolderLayout, parse_mask_values, validate_delivery

    with reported(f"--mask-values {mask_values!r}: ", usage=(ValueError,)):
        values = parse_mask_values(mask_values)
    with reported(usage=(ConfigError,)):
        folders = FolderLayout(image_dir, label_dir, values)
        verdict = validate_delivery(data, report, layout=layout, min_cases=min_cases, strict=strict,
                                    folders=folders)
    typer.echo(f"{verdict.summary}\nreport: {verdict.report}")
    raise typer.Exit(verdict.exit_code)


@app.command("fetch-data")
def fetch_data() -> None:
    """Put the raw dataset in place: local copy if present, else the official download (md5-checked)."""
    root = _project_root()
    from segflow.data.fetch import ensure_dataset

    with reported():
        typer.echo(ensure_dataset(root))



@app.command()
def predict(
    model: Annotated[str, typer.Option(help="a model file (needs no project), or 'champion' / a registry "
                                            "model id or id prefix of the project here")] = "champion",
    source: Annotated[Path | None, typer.Option("--input", "-i", help="an image file or a folder of them (NIfTI, "
                                                 "NRRD, MetaImage, PNG/TIF/BMP; <case>_0000, <case>_0001... are one "
                                                 "case's channels); default: the project dataset's imagesTs/")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="folder for the label files; default with "
                                                "the default input: artifacts/predictions/imagesTs")] = None,
    sw_overlap: Annotated[float, typer.Option(min=0.0, max=0.95, help="sliding-window overlap")] = 0.5,
    tta: Annotated[bool, typer.Option(help="mirror test-time augmentation (as evaluate uses by default)")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace label files already in --output "
                                                                "(an input is never overwritten)")] = False,
    repair_nonfinite: Annotated[bool, typer.Option("--repair-nonfinite", help="replace NaN/infinite voxels by "
                                                   "the channel's finite median (and warn) instead of refusing "
                                                   "the file")] = False,
    postprocess: Annotated[bool, typer.Option(help="apply the postprocessing chosen on validation (the model "
                                                   "card says which and why)")] = True,
    dataset: Annotated[str | None, typer.Option(help="with --model champion: the dataset whose champion to use "
                                                     "(default: the one whose champion takes these inputs)")] = None,
) -> None:
    """Label new volumes with a registered (or any) model; one label file per input.

    Written label files are listed on stdout; warnings, refusals and a per-file summary on stderr.
    Exit 0: every input labelled.
    Exit 1: some inputs refused (each named with the rule it breaks); the others were labelled.
    Exit 2: nothing done: the input or the output folder is unusable, two inputs map to one label
    file, or a label file would overwrite an input (or an existing file, without --overwrite).
    An unusable model (no such file or registry id, not a segflow model file) exits 1.
    """
    from segflow.inference.predict import PredictOptions, batch_exit_code, predict_files, resolve_io, summary_lines

    options = PredictOptions(overlap=sw_overlap, tta=tta, overwrite=overwrite, repair_nonfinite=repair_nonfinite,
                             postprocess=postprocess, dataset=dataset)
    outcomes = []
    with reported():
        source, output = resolve_io(source, output)
        for outcome in predict_files(model, source, output, options):
            outcomes.append(outcome)
            if outcome.dest is not None:
                typer.echo(outcome.dest)
    typer.echo("\n".join(summary_lines(outcomes)), err=True)
    raise typer.Exit(batch_exit_code(outcomes))


@app.command()
def plots(output: Annotated[Path, typer.Option(help="folder for index.html and PNGs")] = Path("artifacts/plots")) -> None:
    """Render the DVC plots to HTML that opens offline, plus PNGs."""
    root = _project_root()
    from segflow.reporting.dvc_plots import render_plots

    with reported():
        typer.echo(render_plots(root, root / output))



models_app = typer.Typer(help="The model registry: list, show, promote, roll back, repair.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _catalog():
    from segflow.config import load_params
    from segflow.registry.catalog import Catalog

    root = _project_root()
    return Catalog(root / load_params(root / "params.yaml").register_.registry_dir)


DatasetOption = Annotated[str | None, typer.Option(help="the dataset (its name or key, see `segflow models list`) "
                                                        "when several have models")]


@models_app.command("list")
def models_list() -> None:
    """Every registered model with its dataset, task and metric; '*' marks each dataset's champion.
    A damaged or out-of-date index is reported (on stderr) after what could be listed."""
    from segflow.registry.view import models_report

    with reported():
        table, warnings = models_report(_catalog())

    typer.echo(table)
    for warning in warnings:
        typer.echo(f"segflow: warning: {warning}", err=True)


@models_app.command("show")
def models_show(model: Annotated[str, typer.Argument(help="'champion', a model id or an id prefix")] = "champion",
                dataset: DatasetOption = None) -> None:
    """A model's registry entry (dataset, task, metrics, provenance, promotion reason) and its files."""
    from segflow.registry.view import entry_lines

    with reported():
        typer.echo("\n".join(entry_lines(_catalog(), model, dataset)))



@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(help="a model id or an id prefix")],
    reason: Annotated[str, typer.Option(help="why, recorded in the entry")] = "promoted by hand",
) -> None:
    """Make a registered model champion of its dataset by hand (overrides the champion/challenger rule)."""
    with reported():
        found, model_id = _catalog().locate(model)
        typer.echo(f"champion of {found.label()} is now {found.registry.promote(model_id, reason)}")



@models_app.command("repair")
def models_repair() -> None:
    """Rebuild each dataset's index.json from its models' entry.json files (after it was lost,
    damaged or left behind by the folders), and say what was found: entries, champion, what was left out."""
    with reported():
        for found in _catalog().datasets():
            typer.echo("\n".join(found.registry.repair().lines()))



@models_app.command("rollback")
def models_rollback(reason: Annotated[str, typer.Option(help="why, recorded in the entries")] = "rolled back by hand",
                    dataset: DatasetOption = None) -> None:
    """Give the champion title of a dataset back to its previous champion."""
    from segflow.registry.catalog import only_dataset

    with reported():
        found = _catalog().select(dataset) if dataset else only_dataset(_catalog())
        old, new = found.registry.rollback(reason)
        typer.echo(f"rolled back {found.label()}: champion is now {new} (was {old})")



@app.command()
def report() -> None:
    """Print where the last pipeline run's results are."""
    from segflow.env import find_project_root
    from segflow.reporting.overview import report_lines

    typer.echo("\n".join(report_lines(find_project_root())))


@app.command()
def compare(
    sources: Annotated[list[str] | None, typer.Argument(
        help="workspace | champion | a registry model id | exp:<name or git rev> | a folder with per_case.csv "
             "(default: champion workspace)")] = None,
    baseline: Annotated[str | None, typer.Option(help="the record the others are paired with (default: the first)")] = None,
    all_exps: Annotated[bool, typer.Option("--all-exps", help="add every DVC experiment of the current commit")] = False,
    device: Annotated[str, typer.Option(help="where cost is measured: cpu | cuda")] = "cpu",
    csv: Annotated[Path, typer.Option(help="CSV of the table")] = Path("artifacts/compare/compare.csv"),
    png: Annotated[Path, typer.Option(help="plot: Dice with CIs, Dice vs latency")] = Path("artifacts/compare/compare.png"),
    no_cost: Annotated[bool, typer.Option("--no-cost", help="skip params/FLOPs/latency/memory (and U-Score)")] = False,
) -> None:
    """Compare models or runs: Dice with 95% CIs, paired tests against a baseline, cost, U-Score."""
    root = _project_root()
    from segflow.reporting.compare import compare as run_compare
    from segflow.reporting.compare import render_table, write_outputs

    with reported("compare failed: "):
        result = run_compare(root, sources or [], baseline=baseline, all_exps=all_exps, device=device,
                             cost=not no_cost)
        write_outputs(result, root / csv, root / png)
    typer.echo(render_table(result))
    typer.echo(f"csv: {root / csv}\npng: {root / png}")


@app.command()
def env() -> None:
    """Print the environment segflow sets (as shell `export` lines)."""
    import shlex

    from segflow.env import apply_project_env

    for key, value in apply_project_env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
