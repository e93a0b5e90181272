"""Statistics for reporting and comparing models on the same cases: percentile-bootstrap
confidence intervals of a mean and of a mean paired difference, the paired Wilcoxon signed-rank
test, and Holm's correction when several models are compared with one baseline."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of `values` with a percentile-bootstrap confidence interval (NaNs dropped).

    With fewer than two values there is nothing to resample: low = high = mean (NaN when empty).

    Returns:
        {"mean", "low", "high", "n"}; floats and the number of values used.
    """
    from scipy.stats import bootstrap

    sample = np.asarray(values, dtype=float).ravel()
    sample = sample[~np.isnan(sample)]
    mean = float(sample.mean()) if sample.size else float("nan")
    if sample.size < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": int(sample.size)}
    result = bootstrap((sample,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                       method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return {"mean": mean, "low": float(interval.low), "high": float(interval.high), "n": int(sample.size)}


def paired_bootstrap_difference(a, b, confidence: float = 0.95, n_resamples: int = 10_000,
                                seed: int = 0) -> dict:
    """Mean of `a - b` over paired cases with a bootstrap confidence interval.

    `a[i]` and `b[i]` must be the same case (e.g. challenger and champion Dice); a pair with a
    NaN on either side is dropped. An interval above zero means `a` is better on these cases.
    """
    first, second = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same number of cases, got {first.size} and {second.size}")
    return bootstrap_ci(first - second, confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_wilcoxon(a, b, alternative: str = "two-sided") -> dict:
    """Wilcoxon signed-rank test of `a - b` over paired cases (NaN pairs dropped); two-sided, or
    `alternative="greater"` for "a is better than b".

    Rank-based, so one outlier case cannot carry the verdict the way it can move a mean. All
    differences zero (identical models) gives p = 1.0, where scipy would fail or warn.

    Returns:
        {"statistic", "p_value", "n"}; n is the number of pairs used (zero differences included).
    """
    from scipy.stats import wilcoxon

    first, second = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if first.shape != second.shape:
        raise ValueError(f"paired values need the same number of cases, got {first.size} and {second.size}")
    differences = first - second
    differences = differences[~np.isnan(differences)]
    if not np.any(differences):
        return {"statistic": 0.0, "p_value": 1.0, "n": int(differences.size)}
    result = wilcoxon(differences, alternative=alternative)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "n": int(differences.size)}


def holm_adjust(p_values) -> list[float]:
    """Holm's step-down correction of several p-values (same order as given; NaNs stay NaN).

    Comparing many models with one baseline makes a chance "significant" result likely; Holm keeps
    the family-wise error at the nominal level without assuming the tests are independent.
    """
    values = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(values))
    adjusted = np.full(values.shape, np.nan)
    order = valid[np.argsort(values[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[index]))
        adjusted[index] = running
    return [float(v) for v in adjusted]
