"""Confidence intervals for reporting: percentile bootstrap of a mean over cases, and of the
mean paired difference between two models evaluated on the same cases."""

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
