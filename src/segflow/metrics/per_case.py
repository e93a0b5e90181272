"""The per-case score table (artifacts/evaluate/per_case.csv): its columns, its writer and its
readers. evaluate writes it; compare, promotion and the model card read it through here, so the
rule for which columns are final scores has one owner (as `segflow.planning.plan` for the plan).

Columns, as evaluate writes them: `case_id`, `fold` (the fold whose model scored the case), then
per foreground class `dice_<class>`, `hd95_<class>` (mm, NaN where a class is missing from the
prediction or the truth; only with evaluate.hd95) and `dice_<class>_raw` (the Dice before
postprocessing). A table from elsewhere (a folder given to `segflow compare`) needs only
`case_id` and the `dice_<class>` columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segflow.errors import SegflowError
from segflow.files import write_csv

CASE_ID, FOLD = "case_id", "fold"
DICE, HD95 = "dice", "hd95"
RAW = "_raw"  # suffix of a score before postprocessing
DECIMALS = 5  # scores are written rounded to this many places


class PerCaseError(SegflowError):
    """A per-case table that cannot be read or scored; the message names the file or source."""


# -- columns -------------------------------------------------------------------------------------

def score_column(kind: str, class_name: str) -> str:
    """The final score column of one class: `dice_<class>` or `hd95_<class>`."""
    return f"{kind}_{class_name}"


def raw_dice_column(class_name: str) -> str:
    """The class's Dice before postprocessing, written beside its final Dice."""
    return score_column(DICE, class_name) + RAW


def _final_columns(per_case: pd.DataFrame, kind: str) -> list[str]:
    """Columns of `kind` that are final scores: `<kind>_<class>_raw` beside `<kind>_<class>` is
    that class's raw score, not a class of its own."""
    columns = [c for c in per_case.columns if c.startswith(f"{kind}_")]
    return [c for c in columns if not (c.endswith(RAW) and c[: -len(RAW)] in columns)]


def dice_columns(per_case: pd.DataFrame) -> list[str]:
    """The final Dice column of each foreground class."""
    return _final_columns(per_case, DICE)


def hd95_columns(per_case: pd.DataFrame) -> list[str]:
    """The final HD95 column of each foreground class (none when evaluate.hd95 was off)."""
    return _final_columns(per_case, HD95)


def score_columns(per_case: pd.DataFrame) -> list[str]:
    """The final Dice and HD95 columns, in the table's order."""
    final = set(dice_columns(per_case) + hd95_columns(per_case))
    return [c for c in per_case.columns if c in final]


# -- writer and readers --------------------------------------------------------------------------

def write_per_case(path: Path | str, per_case: pd.DataFrame) -> None:
    """Write the table as evaluate publishes it: scores rounded to DECIMALS places, no index."""
    write_csv(path, per_case.round(DECIMALS))


def check_per_case(per_case: pd.DataFrame, source: str) -> pd.DataFrame:
    """The table with case_id as text, if it can be scored; else a PerCaseError naming `source`."""
    if CASE_ID not in per_case.columns or not dice_columns(per_case):
        raise PerCaseError(f"{source}: per-case table needs a case_id column and dice_<class> columns "
                           f"(has {', '.join(map(str, per_case.columns)) or 'none'})")
    duplicated = per_case[CASE_ID][per_case[CASE_ID].duplicated()].unique()
    if len(duplicated):
        raise PerCaseError(f"{source}: case_id {', '.join(map(str, duplicated[:5]))} appears more than once")
    if per_case.empty:
        raise PerCaseError(f"{source}: per-case table has no cases")
    return per_case.assign(**{CASE_ID: per_case[CASE_ID].astype(str)})


def read_per_case(path: Path | str) -> pd.DataFrame:
    """Read a per_case.csv; a missing, unparsable or malformed file is a PerCaseError naming it."""
    path = Path(path)
    try:
        per_case = pd.read_csv(path)
    except FileNotFoundError:
        raise PerCaseError(f"{path}: no per-case scores; run the evaluate stage (dvc repro evaluate)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PerCaseError(f"{path}: not a readable per-case CSV ({exc})") from None
    return check_per_case(per_case, str(path))


# -- summaries -----------------------------------------------------------------------------------

def case_dice(per_case: pd.DataFrame) -> pd.Series:
    """Mean Dice over the foreground classes, one value per case (index: case_id)."""
    return per_case.set_index(CASE_ID)[dice_columns(per_case)].mean(axis=1)


def mean_iou(per_case: pd.DataFrame) -> float:
    """Mean IoU over classes and cases, from Dice per class and case (IoU = D / (2 - D)); U-Bench
    scores segmentation by IoU."""
    dice = per_case[dice_columns(per_case)].to_numpy(dtype=float)
    return float(np.nanmean(dice / (2.0 - dice)))


def mean_hd95(per_case: pd.DataFrame) -> float:
    """Mean HD95 over classes and cases, NaN (a class missing from prediction or truth) ignored."""
    columns = hd95_columns(per_case)
    values = per_case[columns].to_numpy(dtype=float) if columns else np.array([np.nan])
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def score_intervals(per_case: pd.DataFrame) -> list[dict]:
    """Each final score column, then the per-case mean Dice over classes: its mean over cases with
    a 95% percentile-bootstrap interval, as {"metric", "mean", "low", "high", "n"}."""
    from segflow.metrics.statistics import bootstrap_ci

    series = {c: per_case[c] for c in score_columns(per_case)}
    series["dice (mean over classes, per case)"] = case_dice(per_case)
    return [{"metric": name, **bootstrap_ci(values.to_numpy())} for name, values in series.items()]
