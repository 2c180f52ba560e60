"""Predictive distributions on estimates: from log-price quantiles to `Estimate` fields.

    with_quantiles(estimate, levels, log_quantiles, settings)   -> a copy carrying the
        distribution, its median as the price and the interval at `pricing.interval_level`
    quantile_at(levels, log_quantiles, level)                   -> one level, interpolated
    weighted_quantile(values, weights, q)                       -> the q-quantile of weighted
        samples (how every conformal shift and residual quantile is fitted)
    residual_quantiles(pricer)                                  -> the shipped validation
        residuals of a pricer that has no distribution of its own (kNN, ridge): its estimate
        times exp(residual quantile) is a split-conformal interval
    low_confidence(estimate)                                    -> its interval spans more
        than a factor of `LOW_CONFIDENCE_RATIO`: a rough guess (`deals price` says so,
        `deals evaluate` counts them)

Every pricer that knows how sure it is goes through `with_quantiles`, so intervals mean
the same everywhere: on held-out new products, deal-like prices, the true price falls in
[low, high] `interval_level` of the time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.models import Estimate, Quantile

if TYPE_CHECKING:
    from deals.framework.settings import PricingSettings

LOW_CONFIDENCE_RATIO = 12.0  # an 80% interval wider than this factor (high / low): ~10% of new in-domain products


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `values` with sample `weights` (the lowest value whose cumulative
    weight reaches q)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(int(np.searchsorted(cumulative, q)), len(values) - 1)])


def quantile_at(levels: Sequence[float], log_quantiles: Sequence[float], level: float) -> float:
    """The log price at `level`, linear between the given levels, clamped at the ends."""
    return float(np.interp(level, np.asarray(levels, dtype=np.float64), np.asarray(log_quantiles, dtype=np.float64)))


def with_quantiles(
    estimate: Estimate, levels: Sequence[float], log_quantiles: Sequence[float], pricing: PricingSettings
) -> Estimate:
    """`estimate` with the distribution given by `log_quantiles` (ascending) at `levels`.

    Prices are clamped to the sane range; the point estimate becomes the median.
    """
    low_bound, high_bound = pricing.min_estimate, pricing.max_estimate
    logs = np.maximum.accumulate(np.asarray(log_quantiles, dtype=np.float64))
    prices = np.clip(np.exp(np.minimum(logs, 50.0)), low_bound, high_bound)
    quantiles = [Quantile(level=float(lv), price=round(float(p), 2)) for lv, p in zip(levels, prices, strict=True)]
    half = pricing.interval_level / 2
    update = {
        "quantiles": quantiles,
        "low": round(float(np.clip(np.exp(quantile_at(levels, logs, 0.5 - half)), low_bound, high_bound)), 2),
        "high": round(float(np.clip(np.exp(quantile_at(levels, logs, 0.5 + half)), low_bound, high_bound)), 2),
        "interval_level": pricing.interval_level,
        "price": round(float(np.clip(np.exp(quantile_at(levels, logs, 0.5)), low_bound, high_bound)), 2),
    }
    return estimate.model_copy(update=update)


@functools.lru_cache(maxsize=1)
def _shipped_residuals() -> dict[str, list[float]]:
    from deals.pricer.catalogue import starter_manifest

    return dict(starter_manifest().get("residual_quantiles") or {})


def residual_quantiles(pricer: str) -> tuple[list[float], list[float]] | None:
    """(levels, log residual quantiles) measured for `pricer` on the shipped validation split, if any."""
    table = _shipped_residuals()
    if pricer not in table or "levels" not in table:
        return None
    return list(table["levels"]), list(table[pricer])


def with_residual_interval(estimate: Estimate, pricer: str, pricing: PricingSettings) -> Estimate:
    """`estimate` with the split-conformal distribution of `pricer` around it (unchanged when none is known).

    The price becomes that distribution's median, the raw output times its median
    residual: what the decision uses and what the alert says are then one number (a raw
    ridge output of $100 has a median of about $187 on deal-like prices)."""
    known = residual_quantiles(pricer)
    if known is None:
        return estimate
    levels, residuals = known
    centre = float(np.log(estimate.price))
    return with_quantiles(estimate, levels, [centre + r for r in residuals], pricing)


def low_confidence(estimate: Estimate) -> bool:
    """The estimate's interval spans more than a factor of `LOW_CONFIDENCE_RATIO` (False without an interval)."""
    return estimate.low is not None and estimate.high is not None and estimate.high > LOW_CONFIDENCE_RATIO * estimate.low


__all__ = ["LOW_CONFIDENCE_RATIO", "low_confidence", "quantile_at", "residual_quantiles", "with_quantiles", "with_residual_interval"]
