"""Accuracy metrics of price estimates: the numbers every pricer is judged by.

Owns the definitions, so the CLI, the benchmarks and the ensemble weighting agree:

    error          estimate - truth (signed, USD)
    mae            mean |error|;  median_abs_error: median |error|
    rmsle          sqrt(mean((log1p(estimate) - log1p(truth))^2))
    mape           mean |error| / truth, as a FRACTION (0.25 means 25%)
    hit            |error| <= hit_abs  OR  |error| / truth <= hit_rel
    near           not a hit, but within `near_factor` times either threshold
    miss           neither
    hit_rate, near_rate   shares of items classified hit / near (0..1; hit + near + miss = 1)
    *_ci95         95% percentile-bootstrap interval (1000 resamples, fixed seed: deterministic)
    buckets        the same numbers per bucket of the TRUE price (lower bound inclusive):
                   <$25, $25-50, $50-100, $100-250, $250-500, $500-1000, >=$1000;
                   `bias` is the mean signed error (positive = overestimates)

Empty buckets are left out of `Metrics.buckets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from deals.framework.settings import EvaluationSettings

Outcome = Literal["hit", "near", "miss"]

BUCKET_EDGES: tuple[float, ...] = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
BUCKET_LABELS: tuple[str, ...] = ("<$25", "$25-50", "$50-100", "$100-250", "$250-500", "$500-1000", ">=$1000")

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240607
# Resampled values held in memory at once (resamples x items), so huge test sets stay bounded.
_BOOTSTRAP_CHUNK = 4_000_000


class BucketMetrics(BaseModel):
    """Metrics of the items whose true price falls in one bucket."""

    bucket: str
    low: float = Field(description="lower bound of the true price, inclusive")
    high: float | None = Field(description="upper bound of the true price, exclusive (null = none)")
    n: int
    mae: float
    rmsle: float
    hit_rate: float
    bias: float = Field(description="mean signed error (estimate - truth); positive = overestimates")


class Metrics(BaseModel):
    """Accuracy of a set of estimates against their true prices."""

    n: int
    mae: float
    median_abs_error: float
    rmsle: float
    hit_rate: float = Field(description="share of items that are hits (0..1)")
    near_rate: float = Field(description="share of items that are near but not hits (0..1)")
    mape: float = Field(description="mean absolute percentage error as a fraction (0.25 = 25%)")
    bias: float = Field(description="mean signed error (estimate - truth)")
    mae_ci95: tuple[float, float]
    rmsle_ci95: tuple[float, float]
    buckets: list[BucketMetrics] = Field(default_factory=list)


def classify(truth: float, estimate: float, settings: EvaluationSettings) -> Outcome:
    """Whether one estimate is a hit, near or a miss (see the module docstring)."""
    error = abs(estimate - truth)
    relative = error / truth if truth > 0 else math.inf
    if error <= settings.hit_abs or relative <= settings.hit_rel:
        return "hit"
    factor = settings.near_factor
    if error <= settings.hit_abs * factor or relative <= settings.hit_rel * factor:
        return "near"
    return "miss"


def bucket_of(truth: float) -> str:
    """The label of the price bucket `truth` falls in."""
    return BUCKET_LABELS[int(np.searchsorted(BUCKET_EDGES, truth, side="right"))]


def _validate(truths: Sequence[float], estimates: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(truths) != len(estimates):
        raise ValueError(f"{len(truths)} true prices but {len(estimates)} estimates")
    if len(truths) == 0:
        raise ValueError("no estimates to score")
    truth = np.asarray(truths, dtype=float)
    estimate = np.asarray(estimates, dtype=float)
    bad_truth = np.flatnonzero(~np.isfinite(truth) | (truth <= 0))
    if bad_truth.size:
        i = int(bad_truth[0])
        raise ValueError(f"true price #{i} is {truths[i]!r}; true prices must be finite and positive")
    bad_estimate = np.flatnonzero(~np.isfinite(estimate) | (estimate < 0))
    if bad_estimate.size:
        i = int(bad_estimate[0])
        raise ValueError(f"estimate #{i} is {estimates[i]!r}; estimates must be finite and non-negative")
    return truth, estimate


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of `values` (vectorised, in bounded chunks)."""
    n = values.size
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOTSTRAP_CHUNK // n)
    means = np.empty(resamples)
    for start in range(0, resamples, per_chunk):
        stop = min(start + per_chunk, resamples)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[index].mean(axis=1)
    return means


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def _bucket_rows(truth: np.ndarray, estimate: np.ndarray, hits: np.ndarray) -> list[BucketMetrics]:
    which = np.searchsorted(BUCKET_EDGES, truth, side="right")
    lows = (0.0, *BUCKET_EDGES)
    highs: tuple[float | None, ...] = (*BUCKET_EDGES, None)
    rows = []
    for b, label in enumerate(BUCKET_LABELS):
        mask = which == b
        if not mask.any():
            continue
        error = estimate[mask] - truth[mask]
        log_error = np.log1p(estimate[mask]) - np.log1p(truth[mask])
        rows.append(
            BucketMetrics(
                bucket=label,
                low=lows[b],
                high=highs[b],
                n=int(mask.sum()),
                mae=float(np.abs(error).mean()),
                rmsle=float(np.sqrt(np.mean(log_error**2))),
                hit_rate=float(hits[mask].mean()),
                bias=float(error.mean()),
            )
        )
    return rows


def compute_metrics(
    truths: Sequence[float],
    estimates: Sequence[float],
    settings: EvaluationSettings,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Metrics:
    """Score `estimates` against `truths` (same order). Raises `ValueError` on bad input."""
    truth, estimate = _validate(truths, estimates)
    error = estimate - truth
    abs_error = np.abs(error)
    squared_log = (np.log1p(estimate) - np.log1p(truth)) ** 2
    outcomes = [classify(t, e, settings) for t, e in zip(truth.tolist(), estimate.tolist(), strict=True)]
    hits = np.array([o == "hit" for o in outcomes])
    nears = np.array([o == "near" for o in outcomes])
    mae_samples = _bootstrap_means(abs_error, resamples, seed)
    rmsle_samples = np.sqrt(_bootstrap_means(squared_log, resamples, seed + 1))
    return Metrics(
        n=int(truth.size),
        mae=float(abs_error.mean()),
        median_abs_error=float(np.median(abs_error)),
        rmsle=float(math.sqrt(squared_log.mean())),
        hit_rate=float(hits.mean()),
        near_rate=float(nears.mean()),
        mape=float((abs_error / truth).mean()),
        bias=float(error.mean()),
        mae_ci95=_interval(mae_samples),
        rmsle_ci95=_interval(rmsle_samples),
        buckets=_bucket_rows(truth, estimate, hits),
    )


__all__ = [
    "BUCKET_EDGES",
    "BUCKET_LABELS",
    "BucketMetrics",
    "Metrics",
    "Outcome",
    "bucket_of",
    "classify",
    "compute_metrics",
]
