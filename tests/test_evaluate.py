"""The evaluation harness run end to end with small real pricers defined here."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from matplotlib.image import imread
from rich.console import Console

from deals.framework.errors import PricingError
from deals.framework.models import Estimate, Neighbour, Product, text_key
from deals.framework.settings import EvaluationSettings
from deals.pricer.base import Pricer
from deals.pricer.evaluate import (
    EvaluationReport,
    compare,
    evaluate,
    plot,
    read_report,
    render_buckets,
    render_table,
    write_report,
)
from deals.pricer.metrics import compute_metrics

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = EvaluationSettings()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEALS_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def products() -> list[Product]:
    lines = (FIXTURES / "evaluation-products.jsonl").read_text(encoding="utf-8").splitlines()
    return [Product.model_validate_json(line) for line in lines]


class NumberPricer(Pricer):
    """Prices an item at `factor` times the first number in its text; no number is a PricingError."""

    name = "number"

    def __init__(self, factor: float = 1.1, tokens: int = 0) -> None:
        self.factor = factor
        self.tokens = tokens
        self.flags: list[bool] = []

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        self.flags.append(exclude_exact)
        found = re.search(r"\d+(?:\.\d+)?", description)
        if not found:
            raise PricingError(f"no number in {description[:30]!r}")
        return Estimate(
            price=self.factor * float(found.group()),
            pricer=self.name,
            tokens_in=self.tokens,
            tokens_out=self.tokens // 2,
            cost_usd=self.tokens * 1e-6,
        )


class AllOrNothingBatchPricer(NumberPricer):
    """Batches, and fails the whole batch when any item in it fails (as some APIs do)."""

    name = "batching"

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        self.batches.append(len(descriptions))
        return [self.price(text, exclude_exact=exclude_exact) for text in descriptions]


class PriceOnly:
    """Duck-typed pricer with no `price_many` at all."""

    name = "price-only"

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return Estimate(price=len(description), pricer=self.name)


class OverlapPricer(Pricer):
    """A catalogue pricer: similarity-weighted price of the 3 items sharing the most words.

    With `exclude_exact` it drops catalogue items whose text is the item being priced,
    and says how many it dropped, as the real kNN pricer does.
    """

    name = "overlap"

    def __init__(self, catalogue: Sequence[Product]) -> None:
        self.catalogue = [(p, set(p.text.lower().split()), text_key(p.text)) for p in catalogue]

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        words = set(description.lower().split())
        key = text_key(description)
        scored, excluded = [], 0
        for product, their_words, their_key in self.catalogue:
            if exclude_exact and their_key == key:
                excluded += 1
                continue
            scored.append((len(words & their_words) / len(words | their_words), product))
        scored.sort(key=lambda pair: pair[0], reverse=True)
        top = scored[:3]
        weight = sum(s for s, _ in top) or 1.0
        price = sum(s * p.price for s, p in top) / weight if sum(s for s, _ in top) else top[0][1].price
        neighbours = [Neighbour(id=p.id, title=p.title, price=p.price, similarity=s) for s, p in top]
        return Estimate(price=price, pricer=self.name, neighbours=neighbours, excluded=excluded)


def _items() -> list[Product]:
    """Hand-made items: five with a number in the text, two without."""
    specs = [("a", "widget 100", 100.0), ("b", "gadget 200", 150.0), ("c", "no digits here", 30.0),
             ("d", "thing 40", 20.0), ("e", "nothing numeric", 12.0), ("f", "tool 1000", 1100.0),
             ("g", "part 10", 60.0)]  # fmt: skip
    return [Product(title=t, text=text, price=p, source="hand-made") for t, text, p in specs]


def test_evaluate_counts_failures_and_completes(caplog: pytest.LogCaptureFixture) -> None:
    pricer = NumberPricer(factor=1.1)
    with caplog.at_level(logging.WARNING, logger="deals.pricer.evaluate"):
        report = evaluate(pricer, _items(), SETTINGS, batch_size=3, progress=False)
    assert report.pricer == "number"
    assert report.attempted == 7 and report.n == 5 and report.failures == 2
    assert [f.title for f in report.failed] == ["c", "e"]
    assert all("PricingError" in f.error for f in report.failed)
    assert sum("could not price" in r.message for r in caplog.records) == 2
    assert pricer.flags and all(pricer.flags)  # every call asked to exclude the item itself
    truths, estimates = [100, 150, 20, 1100, 60], [110, 220, 44, 1100, 11]
    assert [r.title for r in report.rows] == ["a", "b", "d", "f", "g"]
    assert [r.estimate for r in report.rows] == pytest.approx(estimates)
    assert [r.error for r in report.rows] == pytest.approx([e - t for t, e in zip(truths, estimates, strict=True)])
    # a: 10 off; b: 70 off (<= 80), 47%; d: 24 off; f: 0 off; g: 49 off (<= 80), 82%
    assert [r.outcome for r in report.rows] == ["hit", "near", "hit", "hit", "near"]
    assert report.mae == pytest.approx((10 + 70 + 24 + 0 + 49) / 5)
    expected = compute_metrics(truths, estimates, SETTINGS)
    assert report.rmsle == report.metrics.rmsle == pytest.approx(expected.rmsle)
    assert report.metrics.mae_ci95 == pytest.approx(expected.mae_ci95)
    assert (report.hit_rate, report.metrics.near_rate) == pytest.approx((0.6, 0.4))
    assert report.seconds > 0 and report.items_per_s > 0
    assert report.data_file == "hand-made"


def test_a_failing_batch_is_retried_item_by_item() -> None:
    pricer = AllOrNothingBatchPricer()
    report = evaluate(pricer, _items(), SETTINGS, batch_size=4, progress=False)
    assert pricer.batches == [4, 3]  # both batches held a bad item and fell back
    assert report.n == 5 and report.failures == 2
    assert all(pricer.flags)


def test_batches_go_through_price_many() -> None:
    pricer = AllOrNothingBatchPricer()
    good = [item for item in _items() if any(ch.isdigit() for ch in item.text)]
    report = evaluate(pricer, good, SETTINGS, batch_size=2, progress=False)
    assert pricer.batches == [2, 2]  # the last batch of one is priced directly
    assert len(pricer.flags) == 5 and report.failures == 0


def test_pricer_without_price_many() -> None:
    report = evaluate(PriceOnly(), _items(), SETTINGS, batch_size=3, progress=False)  # type: ignore[arg-type]
    assert report.pricer == "price-only" and report.n == 7
    assert [r.estimate for r in report.rows] == [len(item.text) for item in _items()]


def test_bugs_are_not_swallowed() -> None:
    class Broken(NumberPricer):
        def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
            raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        evaluate(Broken(), _items(), SETTINGS, progress=False)


def test_limit_and_name() -> None:
    report = evaluate(NumberPricer(), _items(), SETTINGS, limit=2, name="first-two", progress=False)
    assert (report.pricer, report.attempted, report.n) == ("first-two", 2, 2)
    report = evaluate(NumberPricer(), _items(), EvaluationSettings(limit=3), progress=False)
    assert report.attempted == 3
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(NumberPricer(), _items(), SETTINGS, batch_size=0)


def test_exact_matches_are_excluded_and_reported(products: list[Product], caplog: pytest.LogCaptureFixture) -> None:
    pricer = OverlapPricer(products)
    with caplog.at_level(logging.INFO, logger="deals.pricer.evaluate"):
        report = evaluate(pricer, products, SETTINGS, progress=False)
    assert report.n == len(products) == 34
    assert report.excluded_neighbours == len(products)  # each item found itself once
    assert f"{len(products)} exact matches of evaluated items were excluded from the neighbours" in caplog.text
    # Had the item not been excluded, it would have been its own best match.
    cheating = pricer.price(products[0].text)
    assert cheating.neighbours[0].similarity == 1.0 and cheating.excluded == 0
    assert report.data_file == "abt-buy-2009, amazon2023-course-train"
    buckets = {b.bucket: b.n for b in report.metrics.buckets}
    assert buckets == {"<$25": 5, "$25-50": 5, "$50-100": 5, "$100-250": 5, "$250-500": 5, "$500-1000": 5, ">=$1000": 4}


def test_tokens_and_cost_are_totalled() -> None:
    report = evaluate(NumberPricer(tokens=100), _items(), SETTINGS, progress=False)
    assert (report.tokens_in, report.tokens_out) == (500, 250)
    assert report.cost_usd == pytest.approx(5 * 100e-6)
    console = Console(record=True, width=200)
    console.print(render_table([report]))
    assert "Cost" in console.export_text()


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    report = evaluate(NumberPricer(), _items(), SETTINGS, batch_size=2, progress=True)
    assert report.attempted == 7
    assert "pricing with number" in capsys.readouterr().err


def test_every_item_failing_still_gives_a_report(tmp_path: Path) -> None:
    items = [item for item in _items() if not any(ch.isdigit() for ch in item.text)]
    report = evaluate(NumberPricer(), items, SETTINGS, progress=False)
    assert (report.n, report.failures, report.mae, report.metrics) == (0, 2, None, None)
    console = Console(record=True, width=200)
    console.print(render_table([report]))
    console.print(render_buckets(report))
    assert "number" in console.export_text()
    assert plot(report, tmp_path / "empty.png").read_bytes().startswith(PNG_SIGNATURE)


def test_compare_runs_every_pricer_on_the_same_items(products: list[Product]) -> None:
    reports = compare(
        {"overlap": OverlapPricer(products), "number": NumberPricer(factor=1.0)}, products, SETTINGS, progress=False
    )
    assert [r.pricer for r in reports] == ["overlap", "number"]
    ok = {r.title for r in reports[1].rows}
    assert [r.title for r in reports[0].rows if r.title in ok] == [r.title for r in reports[1].rows]
    assert all(r.attempted == len(products) for r in reports)
    with pytest.raises(TypeError):
        compare({"a": NumberPricer()}, products, SETTINGS, name="x")


def test_tables(products: list[Product]) -> None:
    reports = compare({"overlap": OverlapPricer(products), "number": NumberPricer()}, products, SETTINGS, progress=False)
    console = Console(record=True, width=200)
    console.print(render_table(reports))
    text = console.export_text()
    for report in reports:
        m = report.metrics
        line = next(line for line in text.splitlines() if f" {report.pricer} " in line)
        assert f"${m.mae:,.2f} (${m.mae_ci95[0]:,.2f}-${m.mae_ci95[1]:,.2f})" in line
        assert f"{m.rmsle:.3f}" in line and f"{100 * m.hit_rate:.1f}" in line and f" {report.failures} " in line
    assert "34 exact matches of evaluated items were excluded" in text
    console = Console(record=True, width=200)
    console.print(render_buckets(reports[0]))
    text = console.export_text()
    for bucket in reports[0].metrics.buckets:
        assert any(line.split("│")[1].strip() == bucket.bucket and f"${bucket.mae:,.2f}" in line for line in text.splitlines() if "│" in line)


def test_report_json_for_one_and_several(products: list[Product], tmp_path: Path) -> None:
    reports = compare({"overlap": OverlapPricer(products), "number": NumberPricer()}, products[:10], SETTINGS, progress=False)
    one = tmp_path / "out" / "one.json"
    write_report(reports[0], one)
    data = json.loads(one.read_text())
    for key in ("pricer", "n", "mae", "rmsle", "hit_rate", "metrics", "failures", "seconds", "items_per_s",
                "excluded_neighbours", "tokens_in", "tokens_out", "cost_usd", "data_file", "rows"):  # fmt: skip
        assert key in data, key
    assert data["pricer"] == "overlap" and data["mae"] == reports[0].mae
    assert set(data["rows"][0]) == {"title", "truth", "estimate", "error", "class", "low", "high", "alert_below", "alert_from"}
    assert data["metrics"]["buckets"] and "mae_ci95" in data["metrics"]

    several = tmp_path / "several.json"
    write_report(reports, several)
    data = json.loads(several.read_text())
    assert data["pricers"] == ["overlap", "number"]
    assert [r["pricer"] for r in data["reports"]] == ["overlap", "number"]
    assert (data["pricer"], data["n"], data["mae"]) == ("overlap", reports[0].n, reports[0].mae)  # one-report readers
    assert read_report(several) == reports
    assert read_report(one) == reports[:1]


def test_report_is_written_atomically(tmp_path: Path) -> None:
    report = evaluate(NumberPricer(), _items(), SETTINGS, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    path = out / "report.json"
    path.write_text("old")
    write_report([report], path)
    assert json.loads(path.read_text())["pricer"] == "number"
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no temporary left behind

    class Unserialisable(EvaluationReport):
        def model_dump(self, **kw: object) -> dict[str, object]:
            raise RuntimeError("disk full, say")

    bad = Unserialisable.model_validate(report.model_dump())
    with pytest.raises(RuntimeError):
        write_report([bad], path)
    assert json.loads(path.read_text())["pricer"] == "number"  # the old report survives
    with pytest.raises(ValueError, match="no reports"):
        write_report([], path)


def test_plot_writes_a_png_with_one_panel_per_pricer(products: list[Product], tmp_path: Path) -> None:
    reports = compare({"overlap": OverlapPricer(products), "number": NumberPricer()}, products, SETTINGS, progress=False)
    single = plot(reports[0], tmp_path / "one.png")
    double = plot(reports, tmp_path / "plots" / "two.png")
    for path in (single, double):
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    height1, width1, _ = imread(single).shape
    height2, width2, _ = imread(double).shape
    assert height1 == height2 and width2 > 1.8 * width1
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["two.png"]


# --------------------------------------------------------------------------- alerts and intervals


class SpreadPricer(Pricer):
    """The true price (read from a table) times a fixed error, with a log-normal distribution of width `sigma`."""

    name = "spread"

    def __init__(self, truths: dict[str, float], error: float, sigma: float) -> None:
        self.truths, self.error, self.sigma = truths, error, sigma

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        import math

        from scipy.stats import norm

        from deals.framework.models import Quantile
        from deals.pricer.local_fit import QUANTILE_LEVELS

        median = self.truths[description] * self.error
        quantiles = [Quantile(level=q, price=median * math.exp(self.sigma * norm.ppf(q))) for q in QUANTILE_LEVELS]
        return Estimate(price=median, pricer=self.name, quantiles=quantiles, low=quantiles[1].price, high=quantiles[-2].price, interval_level=0.8)


def test_alert_quality_and_interval_coverage_are_reported(tmp_path: Path) -> None:
    from deals.pricer.alerts import AlertRule, alerts_at
    from deals.pricer.evaluate import plot_alert_curve, render_alerts

    items = [Product(title=f"item {i}", text=f"item {i}", price=p) for i, p in enumerate([15, 40, 80, 150, 260, 420, 700, 950] * 3)]
    truths = {p.text: p.price for p in items}
    rule = AlertRule()
    right = evaluate(SpreadPricer(truths, 1.0, 0.15), items, SETTINGS, progress=False, rule=rule)
    high = evaluate(SpreadPricer(truths, 1.6, 0.15), items, SETTINGS, progress=False, rule=rule)
    assert right.alert_precision == 1.0 and right.alert_recall > 0.5  # sure and right: every alert real
    assert high.alert_precision < right.alert_precision and high.alerts.false_alerts > 0  # overestimates alert falsely
    assert right.interval_coverage == 1.0 and right.interval_level == 0.8 and high.interval_coverage == 0.0
    assert right.alert_f1 == pytest.approx(2 * right.alert_precision * right.alert_recall / (right.alert_precision + right.alert_recall))
    row = right.rows[3]
    estimate = SpreadPricer(truths, 1.0, 0.15).price(items[3].text)
    assert row.low == estimate.low and row.high == estimate.high and row.alert_below > 0
    assert alerts_at(estimate, [row.alert_below], rule)[0] and not alerts_at(estimate, [row.alert_below * 1.01], rule)[0]
    # the curve runs the same rule: at the configured confidence it is the headline numbers
    at_default = next(p for p in high.alert_curve if p.confidence == rule.confidence)
    assert (at_default.precision, at_default.recall) == (high.alert_precision, high.alert_recall)
    by_confidence = sorted(right.alert_curve, key=lambda p: p.confidence)
    recalls = [p.recall for p in by_confidence]
    assert recalls == sorted(recalls, reverse=True) and recalls[0] > recalls[-1]  # more confidence, fewer alerts

    data = json.loads(write_report([right, high], tmp_path / "r.json").read_text())
    for key in ("alert_precision", "alert_recall", "alert_f1", "alert_curve", "interval_coverage"):
        assert key in data, key
    assert {"low", "high", "alert_below"} <= set(data["rows"][0])
    assert read_report(tmp_path / "r.json")[1].alert_precision == high.alert_precision
    png = plot_alert_curve([right, high], tmp_path / "curve.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE and imread(png).shape[1] > 400
    table = render_alerts(right)
    assert table.row_count == len(right.alerts.buckets) + 1
    Console(file=open(tmp_path / "t.txt", "w"), width=140).print(render_table([right, high]))
    assert "Alert P / R" in (tmp_path / "t.txt").read_text()
