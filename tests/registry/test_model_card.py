"""The model card: the metrics table (one row per class score with its 95% interval, from
per_case.csv) and the postprocessing verdict with its evidence."""

from __future__ import annotations

import pandas as pd

from segflow.registry.model_card import metric_rows, postprocessing_lines


def test_metric_rows_list_final_class_scores_and_the_per_case_mean_not_raw_dice():
    per_case = pd.DataFrame({"case_id": ["a", "b"], "fold": 0, "dice_anterior": [0.5, 0.7], "hd95_anterior": 2.0,
                             "dice_anterior_raw": 0.1, "dice_posterior": [0.7, 0.9], "dice_posterior_raw": 0.1})
    names = [line.split("|")[1].strip() for line in metric_rows(per_case).splitlines()]
    assert names == ["dice_anterior", "hd95_anterior", "dice_posterior", "dice (mean over classes, per case)"]
    assert metric_rows(per_case).splitlines()[-1].startswith("| dice (mean over classes, per case) | 0.7000 |")


def test_the_card_gives_each_class_its_postprocessing_verdict_and_evidence():
    entry = {"postprocessing": "none",
             "postprocessing_evidence": ["membrane: not kept: gain +0.0022 ... removes 25.2% of the predicted "
                                         "foreground; removes more than evaluate.postprocess_max_removed 10.0%"]}
    assert postprocessing_lines(entry) == f"- {entry['postprocessing_evidence'][0]}"
    assert postprocessing_lines({"postprocessing": "largest component kept for classes [1]"}) == (
        "- largest component kept for classes [1]")  # an entry from before the evidence was kept
