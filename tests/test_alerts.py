"""The planner's alert rule (deals.pricer.alerts): the threshold, "too good to be true", the
point-rule fallback, and the simulated offers that measure it, checked against a brute-force
count; and the planner's decisions with their reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deals.agents.planner import Planner
from deals.framework.models import Deal, Estimate, Quantile
from deals.framework.settings import Settings
from deals.pricer.alerts import (
    OFFER_FRACTIONS,
    AlertRule,
    alert_below,
    alert_range,
    alerts_at,
    distribution_samples,
    is_real_deal,
    plausible_from,
    point_alert_below,
    simulate_offers,
)
from deals.pricer.local_fit import QUANTILE_LEVELS
from scipy.stats import norm

RULE = AlertRule()


def lognormal(median: float, sigma: float) -> Estimate:
    """An estimate whose distribution is log-normal: median `median`, log standard deviation `sigma`."""
    quantiles = [Quantile(level=q, price=round(median * math.exp(sigma * norm.ppf(q)), 2)) for q in QUANTILE_LEVELS]
    return Estimate(price=median, pricer="test", quantiles=quantiles, low=quantiles[1].price, high=quantiles[-2].price, interval_level=0.8)


def test_real_deals_need_both_thresholds():
    assert is_real_deal(70, 100, 25, 0.3) and not is_real_deal(71, 100, 25, 0.3)  # 30% of 100
    assert not is_real_deal(10, 30, 25, 0.3)  # 67% off, but $20 saved
    assert is_real_deal(600, 1000, 25, 0.3) and not is_real_deal(701, 1000, 25, 0.3)
    assert point_alert_below(100, 25, 0.3) == 70 and point_alert_below(30, 25, 0.3) == 5 and point_alert_below(20, 25, 0.3) == 0


def test_without_a_distribution_the_point_rule_decides():
    bare = Estimate(price=200.0, pricer="knn")
    assert distribution_samples(bare) is None and plausible_from(bare, RULE) == 0
    assert alert_below(bare, RULE) == 140.0 and alert_range(bare, RULE) == (0.0, 140.0)
    assert list(alerts_at(bare, [1.0, 140.0, 141.0], RULE)) == [True, True, False]


def test_samples_follow_the_quantiles():
    estimate = lognormal(100, 0.5)
    draws = distribution_samples(estimate)
    assert draws is not None and len(draws) == 200 and np.all(np.diff(draws) >= 0)
    for q in estimate.quantiles:
        assert np.mean(draws <= q.price * 1.0001) == pytest.approx(q.level, abs=0.01)


def test_a_sure_estimate_alerts_near_the_point_rule_and_an_unsure_one_asks_for_more():
    sure = alert_below(lognormal(300, 0.05), RULE)
    assert sure == pytest.approx(210, rel=0.06)
    by_spread = [alert_below(lognormal(300, sigma), RULE) for sigma in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert sure > by_spread[0] and by_spread == sorted(by_spread, reverse=True)  # the less sure, the deeper the cut asked
    assert 0 < by_spread[-2] < 0.7 * sure  # sigma 0.8: roughly 0.45 to 2.2 times the median covers 80%


def test_more_confidence_means_a_lower_threshold():
    estimate = lognormal(250, 0.6)
    thresholds = [alert_below(estimate, RULE.model_copy(update={"confidence": c})) for c in (0.3, 0.5, 0.7, 0.9)]
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1]


def test_an_item_that_may_well_be_cheap_never_alerts():
    # median $40, wide: most of the mass is where no offer can save $25 and 30%
    assert alert_below(lognormal(40, 0.9), RULE) == 0.0
    assert alert_range(lognormal(40, 0.9), RULE) == (0.0, 0.0)


def test_a_saving_deeper_than_any_deal_is_too_good_to_be_true():
    estimate = lognormal(185, 0.7)  # a vest the model thinks is worth ~$185
    floor = plausible_from(estimate, RULE)
    assert floor == pytest.approx(0.4 * estimate.quantiles[0].price, abs=0.01)
    low, high = alert_range(estimate, RULE)
    assert (low, high) == (floor, alert_below(estimate, RULE)) and low < high
    assert list(alerts_at(estimate, [19.0, (low + high) / 2, high * 1.01], RULE)) == [False, True, False]


def test_simulated_offers_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    truths = np.exp(rng.uniform(np.log(5), np.log(2000), 60))
    estimates = [lognormal(t * math.exp(rng.normal(0, 0.5)), 0.6) for t in truths]
    metrics = simulate_offers(truths, estimates, RULE)
    tp = fp = fn = 0
    for t, e in zip(truths, estimates, strict=True):
        for f in OFFER_FRACTIONS:
            offer = t * f
            real = is_real_deal(offer, t, RULE.min_abs, RULE.min_rel)
            alerted = bool(alerts_at(e, [offer], RULE)[0])
            tp += alerted and real
            fp += alerted and not real
            fn += real and not alerted
    assert (metrics.true_alerts, metrics.false_alerts, metrics.real_deals - metrics.true_alerts) == (tp, fp, fn)
    assert metrics.precision == pytest.approx(tp / (tp + fp)) and metrics.recall == pytest.approx(tp / (tp + fn))
    assert metrics.offers == 60 * len(OFFER_FRACTIONS) and metrics.false_alerts_per_100 == pytest.approx(100 * fp / metrics.offers)
    assert sum(b.true_alerts for b in metrics.buckets) == tp and sum(b.n for b in metrics.buckets) == 60


def test_perfect_estimates_alert_on_every_real_deal_and_nothing_else():
    truths = np.array([50.0, 120.0, 400.0, 900.0, 15.0])
    metrics = simulate_offers(truths, [Estimate(price=t, pricer="oracle") for t in truths], RULE)
    assert metrics.precision == 1.0 and metrics.recall == 1.0 and metrics.false_alerts == 0


def test_the_rule_comes_from_the_planner_settings():
    settings = Settings(planner={"confidence": 0.7, "min_discount_abs": 10, "min_discount_rel": 0.2, "deal_depth": [0.3, 1.2]})
    rule = AlertRule.from_settings(settings.planner)
    assert (rule.confidence, rule.min_abs, rule.min_rel, rule.deal_depth) == (0.7, 10, 0.2, (0.3, 1.2))


def test_the_planner_decides_by_the_rule_and_says_why():
    settings = Settings()
    planner = Planner(settings, store=None, reader=None, scanner=None, pricer=None, messenger=None)  # type: ignore[arg-type]
    estimate = lognormal(300, 0.3)
    top = alert_below(estimate, planner.rule)

    def deal(price: float) -> Deal:
        return Deal(entry_key=f"k{price}", product_description="a product", price=price, url="https://example.com/x")

    yes = planner.judge(deal(top * 0.9), estimate)
    assert yes.alert and yes.reason == "deal" and yes.alert_below == top
    assert planner.decide(deal(top * 0.9), estimate).discount == pytest.approx(300 - top * 0.9, abs=0.01)
    assert planner.judge(deal(299), estimate).reason == "not cheap enough"
    assert planner.judge(deal(min(209, top * 1.05)), estimate).reason == "low confidence"  # the point estimate alone would alert
    assert planner.judge(deal(5), estimate).reason == "too good to be true" and planner.decide(deal(5), estimate) is None


def test_a_residual_interval_moves_the_price_to_its_median():
    """kNN and ridge get their shipped residual distribution; the price the alert states and
    the distribution the planner decides on must be one estimate, not two."""
    from deals.framework.settings import PricingSettings
    from deals.pricer.intervals import residual_quantiles, with_residual_interval

    for pricer in ("knn", "ridge"):
        levels, residuals = residual_quantiles(pricer)
        raw = Estimate(price=100.0, pricer=pricer)
        shown = with_residual_interval(raw, pricer, PricingSettings())
        median = next(q.price for q in shown.quantiles if abs(q.level - 0.5) < 1e-9)
        assert shown.price == median and shown.low <= shown.price <= shown.high
        assert abs(shown.price - 100.0 * math.exp(float(np.interp(0.5, levels, residuals)))) < 0.02


def test_low_confidence_is_an_interval_wider_than_the_ratio():
    from deals.pricer.intervals import LOW_CONFIDENCE_RATIO, low_confidence

    assert low_confidence(Estimate(price=50.0, pricer="t", low=4.0, high=4.0 * LOW_CONFIDENCE_RATIO + 1))
    assert not low_confidence(Estimate(price=50.0, pricer="t", low=20.0, high=90.0))
    assert not low_confidence(Estimate(price=50.0, pricer="t"))
