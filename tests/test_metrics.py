"""Metric definitions, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deals.framework.settings import EvaluationSettings
from deals.pricer.metrics import BUCKET_LABELS, bucket_of, classify, compute_metrics

SETTINGS = EvaluationSettings()  # hit_abs 40, hit_rel 0.2, near_factor 2


def test_two_items_by_hand() -> None:
    m = compute_metrics([100, 200], [110, 100], SETTINGS)
    assert m.n == 2
    assert m.mae == pytest.approx(55.0)
    assert m.median_abs_error == pytest.approx(55.0)
    expected_rmsle = math.sqrt(((math.log1p(110) - math.log1p(100)) ** 2 + (math.log1p(100) - math.log1p(200)) ** 2) / 2)
    assert m.rmsle == pytest.approx(expected_rmsle)
    # 100 -> 110: |10| <= 40, a hit. 200 -> 100: |100| > 80 and 0.5 > 0.4, a miss.
    assert classify(100, 110, SETTINGS) == "hit"
    assert classify(200, 100, SETTINGS) == "miss"
    assert m.hit_rate == pytest.approx(0.5)
    assert m.near_rate == pytest.approx(0.0)
    assert m.mape == pytest.approx((10 / 100 + 100 / 200) / 2)
    assert m.bias == pytest.approx((10 - 100) / 2)


@pytest.mark.parametrize(
    ("truth", "estimate", "expected"),
    [
        (100, 140, "hit"),  # exactly hit_abs
        (50, 85, "hit"),  # 35 <= 40 although 70% off: the absolute rule alone
        (1000, 1200, "hit"),  # exactly hit_rel
        (1000, 850, "hit"),  # 150 > 40 but 15%: the relative rule alone
        (100, 180, "near"),  # 80 = 2 x hit_abs
        (1000, 1400, "near"),  # 40% = 2 x hit_rel
        (1000, 1401, "miss"),
        (10, 91, "miss"),  # 81 > 80 and 810%
        (20, 0.5, "hit"),  # 19.5 within 40
    ],
)
def test_classify(truth: float, estimate: float, expected: str) -> None:
    assert classify(truth, estimate, SETTINGS) == expected


def test_classify_follows_the_settings() -> None:
    strict = EvaluationSettings(hit_abs=0, hit_rel=0.1, near_factor=1.5)
    assert classify(50, 85, strict) == "miss"  # the absolute rule is off
    assert classify(100, 110, strict) == "hit"
    assert classify(100, 115, strict) == "near"
    assert classify(100, 116, strict) == "miss"


def test_near_rate_counts_only_near_items() -> None:
    m = compute_metrics([100, 100, 100, 100], [110, 180, 175, 300], SETTINGS)
    assert (m.hit_rate, m.near_rate) == (0.25, 0.5)


def test_bucket_boundaries() -> None:
    cases = {
        0.5: "<$25", 24.99: "<$25", 25: "$25-50", 49.99: "$25-50", 50: "$50-100", 99.99: "$50-100",
        100: "$100-250", 250: "$250-500", 499.99: "$250-500", 500: "$500-1000", 999.99: "$500-1000",
        1000: ">=$1000", 22_473: ">=$1000",
    }  # fmt: skip
    for price, label in cases.items():
        assert bucket_of(price) == label, price
    truths = list(cases)
    m = compute_metrics(truths, truths, SETTINGS)
    by_label = {b.bucket: b for b in m.buckets}
    assert [b.bucket for b in m.buckets] == list(BUCKET_LABELS)  # all present, in price order
    assert {label: by_label[label].n for label in BUCKET_LABELS} == {
        "<$25": 2, "$25-50": 2, "$50-100": 2, "$100-250": 1, "$250-500": 2, "$500-1000": 2, ">=$1000": 2,
    }  # fmt: skip
    assert by_label["$100-250"].low == 100 and by_label["$100-250"].high == 250
    assert by_label[">=$1000"].high is None


def test_bucket_rows_by_hand() -> None:
    # Two items in $50-100, one in >=$1000; empty buckets are left out.
    m = compute_metrics([60, 80, 2000], [90, 70, 1500], SETTINGS)
    assert [b.bucket for b in m.buckets] == ["$50-100", ">=$1000"]
    mid, top = m.buckets
    assert mid.n == 2
    assert mid.mae == pytest.approx((30 + 10) / 2)
    assert mid.bias == pytest.approx((30 - 10) / 2)
    assert mid.hit_rate == pytest.approx(1.0)
    assert mid.rmsle == pytest.approx(math.sqrt(((math.log1p(90) - math.log1p(60)) ** 2 + (math.log1p(70) - math.log1p(80)) ** 2) / 2))
    assert top.n == 1 and top.bias == pytest.approx(-500) and top.hit_rate == 0.0


def test_confidence_intervals_contain_the_estimate_and_are_deterministic() -> None:
    rng = np.random.default_rng(7)
    truths = rng.lognormal(4, 1, 400)
    estimates = truths * rng.lognormal(0, 0.4, 400)
    first = compute_metrics(truths.tolist(), estimates.tolist(), SETTINGS)
    second = compute_metrics(truths.tolist(), estimates.tolist(), SETTINGS)
    assert first.mae_ci95 == second.mae_ci95 and first.rmsle_ci95 == second.rmsle_ci95
    lo, hi = first.mae_ci95
    assert lo < first.mae < hi
    lo, hi = first.rmsle_ci95
    assert lo < first.rmsle < hi
    # The bootstrap half-width agrees with the normal-theory standard error of the mean.
    abs_error = np.abs(estimates - truths)
    half_width = (first.mae_ci95[1] - first.mae_ci95[0]) / 2
    assert half_width == pytest.approx(1.96 * abs_error.std(ddof=1) / math.sqrt(abs_error.size), rel=0.25)


def test_interval_of_one_item_is_the_point() -> None:
    m = compute_metrics([100], [130], SETTINGS)
    assert m.mae_ci95 == pytest.approx((30, 30))
    assert m.rmsle_ci95 == pytest.approx((m.rmsle, m.rmsle))


def test_bootstrap_stays_fast_on_large_sets() -> None:
    rng = np.random.default_rng(1)
    truths = rng.lognormal(4, 1, 20_000)
    m = compute_metrics(truths.tolist(), (truths * 1.1).tolist(), SETTINGS)
    assert m.mae_ci95[0] < m.mae < m.mae_ci95[1]


@pytest.mark.parametrize(
    ("truths", "estimates", "message"),
    [
        ([1.0, 2.0], [1.0], "2 true prices but 1 estimates"),
        ([], [], "no estimates"),
        ([10.0, 0.0], [1.0, 1.0], "true price #1"),
        ([10.0, 5.0], [1.0, float("nan")], "estimate #1"),
        ([10.0], [-3.0], "estimate #0"),
    ],
)
def test_bad_input_is_a_clear_error(truths: list[float], estimates: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(truths, estimates, SETTINGS)
