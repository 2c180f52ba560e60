"""The evaluation harness: run pricers over priced products and report how close they came.

`evaluate()` prices items in batches with `exclude_exact=True` (an item must not be its
own neighbour), shows a progress bar, records one row per item and scores them with
`deals.pricer.metrics`. A `DealsError` while pricing an item is a logged, counted failure,
never the end of the run; any other exception is a bug and propagates.

Beside accuracy it measures what users get: ALERTS. With the planner's own rule
(`deals.pricer.alerts`, the configured thresholds and confidence) each item is offered at
0.4 ... 1.1 times its true price; the report gives alert precision, recall, F1 and false
alerts per 100 offers, overall and per price bucket, the same for a range of confidence
settings (`alert_curve`), and how often the true price fell inside the estimates'
intervals (`interval_coverage`; an 80% interval should cover 77-83%).

Outputs, all built from `EvaluationReport`:

    render_table(reports)    rich table, one row per pricer (side by side)
    render_buckets(report)   rich table, one row per true-price bucket
    render_alerts(report)    rich table: alert quality per true-price bucket
    write_report(reports, p) JSON, written atomically (format below)
    read_report(p)           the reports back from such a file
    plot(reports, p)         PNG: truth vs estimate, log-log, one panel per pricer
    plot_alert_curve(reports, p)  PNG: alert precision against recall as the confidence varies

JSON format of `write_report`: ONE report is written as the report object itself, with
`pricer`, `n`, `mae`, `rmsle`, `hit_rate` at the top level. SEVERAL reports are written
as the FIRST report's object (so a consumer of single reports still finds `pricer`,
`mae`, ... at the top level and reads the first pricer named) plus two extra keys:
`reports` (every report, in order, the first included) and `pricers` (their names).
`read_report` returns `reports` when present, else the single object.

Typical use (what `deals evaluate` does)::

    reports = compare({"knn": knn, "constant": constant}, test_items, settings.evaluation)
    console.print(render_table(reports))
    write_report(reports, paths.reports_dir() / "evaluation.json")
    plot(reports, paths.reports_dir() / "evaluation.png")
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from deals.framework.files import atomic_path, atomic_write_text
from deals.framework.errors import BudgetExhausted, DealsError, PricingError
from deals.framework.models import Estimate, Product, utcnow
from deals.framework.settings import EvaluationSettings, PlannerSettings
from deals.framework.text import money
from deals.pricer.alerts import AlertMetrics, AlertRule, alert_range, simulate_offers
from deals.pricer.base import Pricer
from deals.pricer.intervals import low_confidence
from deals.pricer.metrics import Metrics, Outcome, classify, compute_metrics

log = logging.getLogger(__name__)

COLOURS: dict[str, str] = {"hit": "#2ca02c", "near": "#ff8c00", "miss": "#d62728"}
CURVE_CONFIDENCES: tuple[float, ...] = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


class ItemResult(BaseModel):
    """One priced item. Serialised with the key `class` for the outcome."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    title: str
    truth: float
    estimate: float
    error: float = Field(description="estimate - truth, USD")
    outcome: Outcome = Field(alias="class")
    low: float | None = Field(None, description="lower end of the estimate's interval")
    high: float | None = Field(None, description="upper end of the estimate's interval")
    alert_below: float = Field(0.0, description="highest offer price at which the planner would alert (0: never)")
    alert_from: float = Field(0.0, description="lowest offer price at which it would (deeper 'savings' are judged estimate errors)")


class CurvePoint(BaseModel):
    """Alert quality at one confidence setting."""

    confidence: float
    precision: float | None
    recall: float | None
    f1: float | None
    false_alerts_per_100: float


class Failure(BaseModel):
    """An item the pricer could not price."""

    title: str
    error: str = Field(description="exception type and message")


class EvaluationReport(BaseModel):
    """How one pricer did on one set of items."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    pricer: str
    n: int = Field(description="items priced (failures excluded)")
    mae: float | None = Field(description="null when no item could be priced")
    rmsle: float | None
    hit_rate: float | None = Field(description="0..1")
    metrics: Metrics | None = Field(description="every metric, CIs and price buckets; null when n = 0")
    attempted: int = Field(description="items the pricer was asked to price")
    failures: int
    failed: list[Failure] = Field(default_factory=list)
    seconds: float = Field(description="wall time of the run")
    items_per_s: float = Field(description="attempted items per second")
    excluded_neighbours: int = Field(description="neighbours dropped because they were the evaluated item itself")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    alert_precision: float | None = Field(None, description="real deals among simulated alerts, at the configured confidence")
    alert_recall: float | None = Field(None, description="real deals alerted")
    alert_f1: float | None = None
    alerts: AlertMetrics | None = Field(None, description="the simulated offers in full, per bucket too")
    alert_rule: AlertRule | None = Field(None, description="the planner's rule the alerts were decided by")
    alert_curve: list[CurvePoint] = Field(default_factory=list, description="alert quality as the confidence varies")
    interval_level: float | None = Field(None, description="the coverage the intervals claim")
    interval_coverage: float | None = Field(None, description="share of items whose true price lay in [low, high]")
    low_confidence: int = Field(0, description="items whose interval spans more than a factor of LOW_CONFIDENCE_RATIO (high / low)")
    data_file: str | None = Field(None, description="where the items came from")
    settings: EvaluationSettings = Field(default_factory=EvaluationSettings)
    created_at: datetime = Field(default_factory=utcnow)
    rows: list[ItemResult] = Field(default_factory=list)

    @property
    def exclusion_note(self) -> str:
        return f"{self.excluded_neighbours} exact matches of evaluated items were excluded from the neighbours"


# --------------------------------------------------------------------------- running


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} items/s" if speed else "- items/s", style="progress.data.speed")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _SpeedColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _price_one(pricer: Pricer, item: Product) -> Estimate:
    estimate = pricer.price(item.text, exclude_exact=True)
    if not isinstance(estimate, Estimate):
        raise PricingError(f"pricer returned {type(estimate).__name__}, not an Estimate")
    return estimate


def _price_batch(pricer: Pricer, batch: Sequence[Product]) -> list[Estimate | DealsError]:
    """Estimates for `batch`, or the error of each item that failed.

    The batch goes through `price_many` when the pricer has it; if the batch as a whole
    fails (or returns the wrong count), its items are priced one by one so a single bad
    item cannot sink its neighbours.
    """
    price_many = getattr(pricer, "price_many", None)
    if callable(price_many) and len(batch) > 1:
        try:
            estimates = price_many([item.text for item in batch], exclude_exact=True)
            if len(estimates) != len(batch) or not all(isinstance(e, Estimate) for e in estimates):
                raise PricingError(f"price_many returned {len(estimates)} results for {len(batch)} items")
            return list(estimates)
        except DealsError as exc:
            log.debug("batch of %d failed (%s); pricing its items one by one", len(batch), exc)
    results: list[Estimate | DealsError] = []
    for item in batch:
        try:
            results.append(_price_one(pricer, item))
        except DealsError as exc:
            results.append(exc)
    return results


def _data_file(items: Sequence[Product]) -> str | None:
    sources = sorted({item.source for item in items if item.source})
    return ", ".join(sources) or None


def evaluate(
    pricer: Pricer,
    items: Sequence[Product],
    settings: EvaluationSettings,
    *,
    name: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    data_file: str | None = None,
    rule: AlertRule | None = None,
) -> EvaluationReport:
    """Price the first `limit` items (default `settings.limit`, else all) and score the estimates.

    `data_file` names where the items came from in the report; by default the items'
    distinct `source` values. `rule`: the planner's alert rule (default: the default
    planner settings).
    """
    rule = rule or AlertRule.from_settings(PlannerSettings())
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = settings.limit if limit is None else limit
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    chosen = list(items[:limit] if limit is not None else items)
    label = name or getattr(pricer, "name", None) or type(pricer).__name__

    rows: list[ItemResult] = []
    estimates: list[Estimate] = []
    failed: list[Failure] = []
    excluded = tokens_in = tokens_out = 0
    cost = 0.0
    started = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"pricing with {label}", total=len(chosen))
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start : start + batch_size]
            for item, result in zip(batch, _price_batch(pricer, batch), strict=True):
                if isinstance(result, DealsError):
                    level = logging.DEBUG if isinstance(result, BudgetExhausted) else logging.WARNING
                    log.log(level, "%s could not price %r: %s", label, item.title[:80], result)
                    failed.append(Failure(title=item.title, error=f"{type(result).__name__}: {result}"))
                    continue
                rows.append(
                    ItemResult(
                        title=item.title,
                        truth=item.price,
                        estimate=result.price,
                        error=result.price - item.price,
                        outcome=classify(item.price, result.price, settings),
                        low=result.low,
                        high=result.high,
                        **_alert_range(result, rule),
                    )
                )
                estimates.append(result)
                excluded += result.excluded
                tokens_in += result.tokens_in
                tokens_out += result.tokens_out
                cost += result.cost_usd
            bar.advance(task, len(batch))
    seconds = time.perf_counter() - started

    metrics = compute_metrics([r.truth for r in rows], [r.estimate for r in rows], settings) if rows else None
    report = EvaluationReport(
        **alert_fields(rows, estimates, rule),
        pricer=label,
        n=len(rows),
        mae=metrics.mae if metrics else None,
        rmsle=metrics.rmsle if metrics else None,
        hit_rate=metrics.hit_rate if metrics else None,
        metrics=metrics,
        attempted=len(chosen),
        failures=len(failed),
        failed=failed,
        seconds=seconds,
        items_per_s=len(chosen) / seconds if seconds > 0 else 0.0,
        excluded_neighbours=excluded,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        data_file=data_file or _data_file(chosen),
        settings=settings,
        rows=rows,
    )
    _log_summary(report)
    return report


def _alert_range(estimate: Estimate, rule: AlertRule) -> dict[str, float]:
    low, high = alert_range(estimate, rule)
    return {"alert_from": low, "alert_below": high}


def alert_fields(rows: Sequence[ItemResult], estimates: Sequence[Estimate], rule: AlertRule) -> dict[str, Any]:
    """The alert and interval fields of a report, from its rows and the estimates behind them."""
    if not rows:
        return {"alert_rule": rule}
    truths = [r.truth for r in rows]
    alerts = simulate_offers(truths, estimates, rule)
    curve = []
    for confidence in CURVE_CONFIDENCES:
        varied = rule.model_copy(update={"confidence": confidence})
        point = simulate_offers(truths, estimates, varied)
        curve.append(
            CurvePoint(
                confidence=confidence, precision=point.precision, recall=point.recall, f1=point.f1,
                false_alerts_per_100=point.false_alerts_per_100,
            )  # fmt: skip
        )
    with_interval = [r for r in rows if r.low is not None and r.high is not None]
    levels = {e.interval_level for e in estimates if e.interval_level is not None}
    return {
        "alert_precision": alerts.precision,
        "alert_recall": alerts.recall,
        "alert_f1": alerts.f1,
        "alerts": alerts,
        "alert_rule": rule,
        "alert_curve": curve,
        "interval_level": levels.pop() if len(levels) == 1 else None,
        "interval_coverage": (
            sum(1 for r in with_interval if r.low <= r.truth <= r.high) / len(with_interval) if with_interval else None  # type: ignore[operator]
        ),
        "low_confidence": sum(low_confidence(e) for e in estimates),
    }


def _log_summary(report: EvaluationReport) -> None:
    if report.metrics is None:
        log.error("%s priced none of %d items (%d failures)", report.pricer, report.attempted, report.failures)
    else:
        log.info(
            "%s: n=%d MAE $%.2f RMSLE %.3f hits %.1f%% failures %d (%.1f items/s)",
            report.pricer, report.n, report.metrics.mae, report.metrics.rmsle,
            100 * report.metrics.hit_rate, report.failures, report.items_per_s,
        )  # fmt: skip
    if report.alert_precision is not None or report.alert_recall is not None:
        log.info(
            "%s: alerts precision %s recall %s; interval coverage %s",
            report.pricer, _pct(report.alert_precision), _pct(report.alert_recall), _pct(report.interval_coverage),
        )  # fmt: skip
    log.info("%s: %s", report.pricer, report.exclusion_note)
    if report.tokens_in or report.tokens_out or report.cost_usd:
        log.info("%s: %d tokens in, %d out, $%.4f", report.pricer, report.tokens_in, report.tokens_out, report.cost_usd)


def compare(
    pricers: dict[str, Pricer], items: Sequence[Product], settings: EvaluationSettings, **kw: Any
) -> list[EvaluationReport]:
    """Evaluate several pricers on the same items, in the order given; `kw` as for `evaluate`."""
    if "name" in kw:
        raise TypeError("compare() names each report after its key in `pricers`")
    return [evaluate(pricer, items, settings, name=name, **kw) for name, pricer in pricers.items()]


# --------------------------------------------------------------------------- tables


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_table(reports: Sequence[EvaluationReport]) -> Table:
    """One row per pricer: n, MAE with its 95% CI, RMSLE, hit rate, failures, speed (and cost if any)."""
    show_cost = any(r.tokens_in or r.tokens_out or r.cost_usd for r in reports)
    table = Table(title="Pricer evaluation")
    table.add_column("Pricer", style="bold")
    for column in ("n", "MAE (95% CI)", "RMSLE", "Hit %", "Alert P / R", "Interval cover", "Failures", "Items/s"):
        table.add_column(column, justify="right")
    if show_cost:
        table.add_column("Tokens in/out", justify="right")
        table.add_column("Cost", justify="right")
    scored = [r.metrics.mae for r in reports if r.metrics]
    best = min(scored) if len(scored) > 1 else None
    for report in reports:
        m = report.metrics
        if m is None:
            cells = [str(report.n), "-", "-", "-"]
        else:
            lo, hi = m.mae_ci95
            mae = f"{money(m.mae)} ({money(lo)}-{money(hi)})"
            cells = [str(m.n), f"[green]{mae}[/]" if m.mae == best else mae, f"{m.rmsle:.3f}", f"{100 * m.hit_rate:.1f}"]
        cover = "-" if report.interval_coverage is None else f"{_pct(report.interval_coverage)} of {_pct(report.interval_level)}"
        cells += [f"{_pct(report.alert_precision)} / {_pct(report.alert_recall)}", cover]
        cells += [str(report.failures), f"{report.items_per_s:,.1f}"]
        if show_cost:
            cells += [f"{report.tokens_in:,}/{report.tokens_out:,}", f"${report.cost_usd:.4f}"]
        table.add_row(report.pricer, *cells)
    notes = [f"{r.pricer}: {r.exclusion_note}" for r in reports if r.excluded_neighbours]
    rule = next((r.alert_rule for r in reports if r.alert_rule), None)
    if rule is not None:
        notes.append(
            f"alerts: each item offered at 0.4-1.1 x its true price; the planner's rule (saves >= ${rule.min_abs:g} and "
            f">= {rule.min_rel:.0%}, confidence {rule.confidence:g}, deal depth {rule.deal_depth[0]:g}-{rule.deal_depth[1]:g})"
        )
    if notes:
        table.caption = "\n".join(notes)
    return table


def render_alerts(report: EvaluationReport) -> Table:
    """One row per bucket of the true price: real deals alerted, false alerts, missed, precision, recall."""
    table = Table(title=f"{report.pricer}: alerts by true price")
    table.add_column("True price", style="bold")
    for column in ("n", "True alerts", "False alerts", "Missed", "Precision", "Recall"):
        table.add_column(column, justify="right")
    if report.alerts is None:
        return table
    for b in report.alerts.buckets:
        table.add_row(b.bucket, str(b.n), str(b.true_alerts), str(b.false_alerts), str(b.missed), _pct(b.precision), _pct(b.recall))
    a = report.alerts
    table.add_row(
        "all", str(report.n), str(a.true_alerts), str(a.false_alerts), str(a.real_deals - a.true_alerts),
        _pct(a.precision), _pct(a.recall), style="bold",
    )  # fmt: skip
    table.caption = f"F1 {_pct(a.f1)}; {a.false_alerts_per_100:.2f} false alerts per 100 offers"
    return table


def render_buckets(report: EvaluationReport) -> Table:
    """One row per bucket of the true price: n, MAE, RMSLE, hit rate, bias."""
    table = Table(title=f"{report.pricer} by true price")
    table.add_column("True price", style="bold")
    for column in ("n", "MAE", "RMSLE", "Hit %", "Bias"):
        table.add_column(column, justify="right")
    for b in report.metrics.buckets if report.metrics else []:
        bias = f"{'+' if b.bias >= 0 else '-'}{money(abs(b.bias))}"
        table.add_row(b.bucket, str(b.n), money(b.mae), f"{b.rmsle:.3f}", f"{100 * b.hit_rate:.1f}", bias)
    return table


# --------------------------------------------------------------------------- files


def report_json(reports: Sequence[EvaluationReport]) -> dict[str, Any]:
    """The JSON object `write_report` writes (see the module docstring)."""
    if not reports:
        raise ValueError("no reports to write")
    dumped = [r.model_dump(mode="json") for r in reports]
    if len(dumped) == 1:
        return dumped[0]
    return {**dumped[0], "reports": dumped, "pricers": [r.pricer for r in reports]}


def write_report(reports: Sequence[EvaluationReport] | EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write the reports as JSON, atomically; returns the path."""
    if isinstance(reports, EvaluationReport):
        reports = [reports]
    target = Path(path)
    payload = json.dumps(report_json(reports), indent=2, ensure_ascii=False)
    return atomic_write_text(target, payload + "\n")


def read_report(path: str | os.PathLike[str]) -> list[EvaluationReport]:
    """The reports in a file written by `write_report`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    objects = data["reports"] if isinstance(data, dict) and "reports" in data else [data]
    return [EvaluationReport.model_validate(obj) for obj in objects]


# --------------------------------------------------------------------------- plots


def _hit_band(settings: EvaluationSettings, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest estimate that still count as a hit for true price x."""
    low = np.minimum(x - settings.hit_abs, x * (1 - settings.hit_rel))
    high = np.maximum(x + settings.hit_abs, x * (1 + settings.hit_rel))
    return np.maximum(low, x * 1e-3), high


def plot(reports: Sequence[EvaluationReport] | EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write a PNG: truth vs estimate on log-log axes, one panel per pricer; returns the path."""
    # The object-oriented API with the Agg canvas: no pyplot, no display, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    if isinstance(reports, EvaluationReport):
        reports = [reports]
    if not reports:
        raise ValueError("no reports to plot")
    values = [v for r in reports for row in r.rows for v in (row.truth, row.estimate) if v > 0]
    low, high = (min(values) / 1.5, max(values) * 1.5) if values else (1.0, 1000.0)

    fig = Figure(figsize=(5.6 * len(reports), 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(reports), squeeze=False)[0]
    dollars = FuncFormatter(lambda v, _pos: f"\\${v:,.0f}" if v >= 1 else f"\\${v:g}")
    for ax, report in zip(axes, reports, strict=True):
        x = np.geomspace(low, high, 200)
        band_low, band_high = _hit_band(report.settings, x)
        ax.fill_between(x, band_low, band_high, color=COLOURS["hit"], alpha=0.08, linewidth=0)
        ax.plot([low, high], [low, high], color="0.3", linewidth=1, linestyle="--")
        size = 28 if len(report.rows) <= 500 else 8
        counts = {}
        for outcome in ("miss", "near", "hit"):
            chosen = [r for r in report.rows if r.outcome == outcome]
            counts[outcome] = len(chosen)
            if chosen:
                ax.scatter(
                    [r.truth for r in chosen],
                    [max(r.estimate, low) for r in chosen],
                    s=size,
                    c=COLOURS[outcome],
                    alpha=0.75,
                    edgecolors="none",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")
        ax.xaxis.set_major_formatter(dollars)
        ax.yaxis.set_major_formatter(dollars)
        ax.grid(True, which="major", color="0.9")
        ax.set_xlabel("true price")
        ax.set_ylabel("estimate")
        m = report.metrics
        summary = f"MAE \\${m.mae:,.2f}   hits {100 * m.hit_rate:.1f}%   n = {m.n}" if m else "no item priced"
        if report.failures:
            summary += f"   failures {report.failures}"
        ax.set_title(report.pricer.replace("$", r"\$") + "\n" + summary, fontsize=11)
        handles = [
            Line2D([], [], marker="o", linestyle="", color=COLOURS[o], label=f"{o} ({counts[o]})")
            for o in ("hit", "near", "miss")
        ]
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="estimate = truth"))
        handles.append(Patch(color=COLOURS["hit"], alpha=0.15, label="hit zone"))
        ax.legend(handles=handles, loc="upper left", fontsize=9, framealpha=0.9)

    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return target


def plot_alert_curve(reports: Sequence[EvaluationReport] | EvaluationReport, path: str | os.PathLike[str]) -> Path:
    """Write a PNG of alert precision against recall as the confidence setting varies; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(reports, EvaluationReport):
        reports = [reports]
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for report in reports:
        points = [p for p in report.alert_curve if p.precision is not None and p.recall is not None]
        if not points:
            continue
        line = ax.plot([100 * p.recall for p in points], [100 * p.precision for p in points], marker="o", label=report.pricer)
        for p in points[:: max(1, len(points) // 6)]:
            ax.annotate(f"{p.confidence:g}", (100 * p.recall, 100 * p.precision), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if report.alert_precision is not None and report.alert_recall is not None:
            ax.plot([100 * report.alert_recall], [100 * report.alert_precision], marker="*", markersize=16, color=line[0].get_color())
    ax.set_xlabel("recall: real deals alerted (%)")
    ax.set_ylabel("precision: alerts that are real deals (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(True, color="0.9")
    ax.set_title("Alert quality as planner.confidence varies (star: configured)", fontsize=11)
    if any(r.alert_curve for r in reports):
        ax.legend(loc="lower left", fontsize=9)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return target


__all__ = [
    "CurvePoint",
    "EvaluationReport",
    "Failure",
    "ItemResult",
    "compare",
    "evaluate",
    "alert_fields",
    "plot",
    "plot_alert_curve",
    "read_report",
    "render_alerts",
    "render_buckets",
    "render_table",
    "report_json",
    "write_report",
]
