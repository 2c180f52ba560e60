"""When an offer is worth an alert: the planner's rule, and how well it does on known prices.

**A real deal.** An offer at price p on a product worth t is a real deal when it saves at
least `min_discount_abs` dollars AND at least `min_discount_rel` of t
(`is_real_deal`). Neither cheap nor dear items are favoured: a $12 item can never save
$25, and a $1,000 item must save $300.

**The rule.** The planner does not know t, only the estimate's predictive distribution.
It alerts on an offer when the offer is a real deal with probability at least
`planner.confidence` under that distribution, where the probability also uses what
offers look like: deals come at a fraction of what a product is worth, spread evenly
over `planner.deal_depth` (default 40% to 110%). That second part matters. A $12 item
the model thinks might be worth $60 offered at $12 looks like an 80% saving; offers that
deep are rare, so most of the probability that such an offer exists lies on the cheap
side of the distribution, and the rule declines. Point estimates cannot see this; the
issue's measurements of "cautious end of the interval" rules stayed near 60% precision.

Concretely, two tests, both of which an offer must pass:

1. **the threshold** `alert_below(estimate, rule)`: the price A that maximises

       sum over offers p <= A of  [P(real | p) - c / (1 - c) * P(not real | p)]

   with offers drawn from the deal-depth range and t from the distribution (so the last
   offers inside the threshold are real deals with probability about c);
2. **not too good to be true** `plausible_from(estimate, rule)`: the offer is at least
   `deal_depth[0]` (40%) of the distribution's lowest quantile (5%). A deeper "saving"
   than the deepest deals, even against the cautious end of the estimate, says more
   about the estimate than about the price: this is what stops a $19 vest "worth $185"
   (5% quantile $60: the offer would be 68% off even then).

`alert_range` gives the prices at which both hold. An estimate without a distribution
(a pricer that is not calibrated) falls back to the point rule: alert when the offer is
a real deal at t = the estimate.

**Measuring it** (`simulate_offers`): for each held-out product with true price t, offer
it at t x f for f in `OFFER_FRACTIONS` (0.4 ... 1.1); each offer is alerted or not by the
rule above (`alerts_at`, the planner's own), and "real" by `is_real_deal` at the true
price. Alert precision = real among alerted, recall = alerted among real.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from deals.framework.models import Estimate

OFFER_FRACTIONS: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
_DEPTH_POINTS = 15  # offers per item the rule integrates over (evenly over the deal-depth range)
_SAMPLES = 200  # draws from an estimate's predictive distribution


class AlertRule(BaseModel):
    """What the planner needs to decide: the thresholds of a real deal and how sure it must be."""

    min_abs: float = Field(25.0, ge=0, description="a real deal saves at least this many dollars ...")
    min_rel: float = Field(0.3, ge=0, lt=1, description="... and at least this share of what the product is worth")
    confidence: float = Field(0.5, gt=0, lt=1, description="probability an alerted offer must have of being a real deal")
    deal_depth: tuple[float, float] = Field((0.4, 1.1), description="offers come at this range of fractions of the value")

    @classmethod
    def from_settings(cls, planner: object) -> AlertRule:
        """The rule of a `PlannerSettings`."""
        return cls(
            min_abs=planner.min_discount_abs,  # type: ignore[attr-defined]
            min_rel=planner.min_discount_rel,  # type: ignore[attr-defined]
            confidence=planner.confidence,  # type: ignore[attr-defined]
            deal_depth=tuple(planner.deal_depth),  # type: ignore[attr-defined]
        )


def real_deals(prices: np.ndarray, values: np.ndarray, min_abs: float, min_rel: float) -> np.ndarray:
    """Elementwise (broadcasting): the offer at `prices` on a product worth `values` saves
    something, at least `min_abs` dollars AND at least `min_rel` of the value."""
    discount = values - prices
    return (discount > 0) & (discount >= np.maximum(min_abs, min_rel * values))


def is_real_deal(price: float, value: float, min_abs: float, min_rel: float) -> bool:
    """`real_deals` for one offer."""
    return bool(real_deals(np.float64(price), np.float64(value), min_abs, min_rel))


def point_alert_below(value: float, min_abs: float, min_rel: float) -> float:
    """The highest price that is a real deal on a product worth exactly `value` (0: none)."""
    return max(0.0, min(value - min_abs, (1.0 - min_rel) * value))


def distribution_samples(estimate: Estimate, n: int = _SAMPLES) -> np.ndarray | None:
    """`n` evenly spaced draws (inverse CDF) from the estimate's quantiles, log-linear between them.

    Beyond the outermost quantiles the log price continues at the slope of the nearest
    pair, for half the remaining probability mass; None without quantiles.
    """
    if len(estimate.quantiles) < 2:
        return None
    levels = np.array([q.level for q in estimate.quantiles])
    logs = np.log([q.price for q in estimate.quantiles])
    low_slope = (logs[1] - logs[0]) / (levels[1] - levels[0])
    high_slope = (logs[-1] - logs[-2]) / (levels[-1] - levels[-2])
    x = np.concatenate([[0.0], levels, [1.0]])
    y = np.concatenate([[logs[0] - 1.5 * low_slope * levels[0]], logs, [logs[-1] + 1.5 * high_slope * (1 - levels[-1])]])
    u = (np.arange(n) + 0.5) / n
    return np.exp(np.interp(u, x, y))


def alert_below(estimate: Estimate, rule: AlertRule) -> float:
    """The highest offer price at which the planner alerts for this estimate (0: never)."""
    values = distribution_samples(estimate)
    if values is None:
        return point_alert_below(estimate.price, rule.min_abs, rule.min_rel)
    depth = np.linspace(rule.deal_depth[0], rule.deal_depth[1], _DEPTH_POINTS)
    grid = values[:, None] * depth[None, :]
    real = real_deals(grid, values[:, None], rule.min_abs, rule.min_rel).ravel()
    offers = grid.ravel()
    order = np.argsort(offers, kind="stable")
    penalty = rule.confidence / (1.0 - rule.confidence)
    gain = np.cumsum(np.where(real[order], 1.0, -penalty))
    best = int(np.argmax(gain))
    if gain[best] <= 0:
        return 0.0
    # The threshold sits between the last offer taken and the next one.
    taken = float(offers[order][best])
    following = float(offers[order][best + 1]) if best + 1 < len(offers) else taken
    return round(math.sqrt(taken * following) if following > taken else taken, 2)


def plausible_from(estimate: Estimate, rule: AlertRule) -> float:
    """The lowest offer price that is not "too good to be true": `deal_depth[0]` x the lowest quantile (0 without one)."""
    if not estimate.quantiles:
        return 0.0
    return round(rule.deal_depth[0] * estimate.quantiles[0].price, 2)


def alerts_at(estimate: Estimate, prices: Sequence[float] | np.ndarray, rule: AlertRule, below: float | None = None) -> np.ndarray:
    """Whether the planner alerts on each offer price (both tests of the module docstring)."""
    p = np.asarray(prices, dtype=np.float64)
    threshold = alert_below(estimate, rule) if below is None else below
    return (p <= threshold + 1e-9) & (p >= plausible_from(estimate, rule) - 1e-9)


def alert_range(estimate: Estimate, rule: AlertRule) -> tuple[float, float]:
    """(lowest, highest) offer price the planner alerts on; (0, 0) when it never does."""
    top = alert_below(estimate, rule)
    bottom = plausible_from(estimate, rule)
    if top <= 0 or bottom > top:
        return 0.0, 0.0
    return bottom, top


# --------------------------------------------------------------------------- measuring


class AlertBucket(BaseModel):
    """Alert quality for the products of one true-price bucket."""

    bucket: str
    n: int
    true_alerts: int
    false_alerts: int
    missed: int
    precision: float | None
    recall: float | None


class AlertMetrics(BaseModel):
    """How the alert rule does on simulated offers (see the module docstring)."""

    offers: int
    real_deals: int
    alerts: int
    true_alerts: int
    false_alerts: int
    precision: float | None = Field(description="real deals among alerts (null: no alert)")
    recall: float | None = Field(description="alerted among real deals (null: no real deal)")
    f1: float | None
    false_alerts_per_100: float = Field(description="false alerts per 100 offers")
    fractions: list[float]
    buckets: list[AlertBucket] = Field(default_factory=list)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def simulate_offers(
    truths: Sequence[float], estimates: Sequence[Estimate], rule: AlertRule, fractions: Sequence[float] = OFFER_FRACTIONS
) -> AlertMetrics:
    """Offer each product at each fraction of its true price; the planner's rule alerts or not; count against real deals."""
    t = np.asarray(truths, dtype=np.float64)
    if t.size != len(estimates):
        raise ValueError(f"{t.size} true prices but {len(estimates)} estimates")
    f = np.asarray(fractions, dtype=np.float64)
    offers = t[:, None] * f[None, :]
    alerted = np.array([alerts_at(e, row, rule) for e, row in zip(estimates, offers, strict=True)]).reshape(offers.shape)
    return score_offers(t, alerted, rule, f)


def score_offers(truths: np.ndarray, alerted: np.ndarray, rule: AlertRule, fractions: np.ndarray) -> AlertMetrics:
    """Alert quality of an (items x fractions) matrix of alert decisions on offers at truth x fraction."""
    from deals.pricer.metrics import BUCKET_EDGES, BUCKET_LABELS

    t, f = truths, fractions
    offers = t[:, None] * f[None, :]
    real = real_deals(offers, t[:, None], rule.min_abs, rule.min_rel)

    def counts(mask: np.ndarray) -> tuple[int, int, int]:
        return int((alerted & real)[mask].sum()), int((alerted & ~real)[mask].sum()), int((~alerted & real)[mask].sum())

    every = np.ones(t.size, dtype=bool)
    tp, fp, fn = counts(every)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    buckets = []
    which = np.searchsorted(BUCKET_EDGES, t, side="right")
    for b, label in enumerate(BUCKET_LABELS):
        mask = which == b
        if mask.any():
            btp, bfp, bfn = counts(mask)
            buckets.append(
                AlertBucket(
                    bucket=label, n=int(mask.sum()), true_alerts=btp, false_alerts=bfp, missed=bfn,
                    precision=_ratio(btp, btp + bfp), recall=_ratio(btp, btp + bfn),
                )  # fmt: skip
            )
    return AlertMetrics(
        offers=int(offers.size), real_deals=int(real.sum()), alerts=int(alerted.sum()), true_alerts=tp, false_alerts=fp,
        precision=precision, recall=recall, f1=f1, false_alerts_per_100=100.0 * fp / max(offers.size, 1),
        fractions=[float(x) for x in f], buckets=buckets,
    )  # fmt: skip


__all__ = [
    "OFFER_FRACTIONS",
    "AlertBucket",
    "AlertMetrics",
    "AlertRule",
    "alert_below",
    "alert_range",
    "alerts_at",
    "distribution_samples",
    "is_real_deal",
    "real_deals",
    "plausible_from",
    "point_alert_below",
    "score_offers",
    "simulate_offers",
]
