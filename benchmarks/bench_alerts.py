#!/usr/bin/env python3
"""Alert quality, the estimate's bias by price band, intervals and speed: the numbers issue 8 asks for.

    python benchmarks/bench_alerts.py                 # default pricers, data/eval files
    python benchmarks/bench_alerts.py --pricer ensemble --pricer knn --out reports/alerts

For each held-out file it runs `deals evaluate`'s harness (the planner's own alert rule and
settings) and prints:

1. per pricer: MAE, RMSLE, alert precision / recall / F1, false alerts per 100 offers,
   80% interval coverage, items/s;
2. per true-price bucket of the default pricer: n, MAE, bias and |bias| as a share of the
   bucket's middle price (the target: no bucket above 35%);
3. the precision/recall curve as `planner.confidence` varies;
4. on test.jsonl (its natural cheap-skewed mix), the same numbers deal-weighted, so that
   1,209 items rather than 344 stand behind them;
5. on off_domain.jsonl (Walmart/Amazon 2013 listings: a source the catalogue does not
   use), the default pricer against the constant pricer, as drawn and deal-weighted, and
   how many items are flagged low-confidence (interval wider than LOW_CONFIDENCE_RATIO);
6. the time of a first `deals price` on an empty DEALS_HOME (a subprocess).

Reports (JSON) and plots (PNG) go to --out (default reports/bench-alerts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DEALS_HOME", str(ROOT / ".deals-home"))

from rich.table import Table  # noqa: E402

from deals.framework.text import report_console  # noqa: E402

MIDDLES = {"<$25": 12.5, "$25-50": 37.5, "$50-100": 75.0, "$100-250": 175.0, "$250-500": 375.0, "$500-1000": 750.0, ">=$1000": 1500.0}
console = report_console()


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(title: str, reports: list) -> Table:  # type: ignore[type-arg]
    table = Table(title=title)
    for column in ("pricer", "n", "MAE", "RMSLE", "alert P", "alert R", "F1", "false/100", "80% cover", "items/s"):
        table.add_column(column, justify="right")
    for r in reports:
        m = r.metrics
        table.add_row(
            r.pricer, str(r.n), f"${m.mae:,.2f}" if m else "-", f"{m.rmsle:.3f}" if m else "-", pct(r.alert_precision),
            pct(r.alert_recall), pct(r.alert_f1), f"{r.alerts.false_alerts_per_100:.2f}" if r.alerts else "-",
            pct(r.interval_coverage), f"{r.items_per_s:,.1f}",
        )  # fmt: skip
    return table


def bias_table(report) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title=f"{report.pricer}: error by true price")
    for column in ("true price", "n", "MAE", "bias", "|bias| / middle"):
        table.add_column(column, justify="right")
    for b in report.metrics.buckets:
        share = abs(b.bias) / MIDDLES[b.bucket]
        flag = "" if share <= 0.35 else " [red](over 35%)[/red]"
        table.add_row(b.bucket, str(b.n), f"${b.mae:,.2f}", f"{b.bias:+,.2f}", f"{100 * share:.0f}%{flag}")
    return table


def curve_table(report) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title=f"{report.pricer}: alerts as planner.confidence varies")
    for column in ("confidence", "precision", "recall", "F1", "false/100"):
        table.add_column(column, justify="right")
    for p in report.alert_curve:
        table.add_row(f"{p.confidence:g}", pct(p.precision), pct(p.recall), pct(p.f1), f"{p.false_alerts_per_100:.2f}")
    return table


def weighted(report, estimates, rule) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """MAE, RMSLE, bias by bucket and alert precision/recall with deal-prior weights."""
    from deals.pricer.alerts import OFFER_FRACTIONS, alerts_at, real_deals
    from deals.pricer.local_fit import deal_prior_weights
    from deals.pricer.metrics import bucket_of

    t = np.array([r.truth for r in report.rows])
    e = np.array([r.estimate for r in report.rows])
    w = deal_prior_weights(t)
    w = w / w.sum()
    offers = t[:, None] * np.array(OFFER_FRACTIONS)[None, :]
    real = real_deals(offers, t[:, None], rule.min_abs, rule.min_rel)
    alerted = np.array([alerts_at(est, row, rule) for est, row in zip(estimates, offers, strict=True)])
    tp, fp, fn = (w[:, None] * (alerted & real)).sum(), (w[:, None] * (alerted & ~real)).sum(), (w[:, None] * (~alerted & real)).sum()
    out = {
        "mae": float(w @ np.abs(e - t)),
        "rmsle": float(np.sqrt(w @ (np.log1p(e) - np.log1p(t)) ** 2)),
        "alert_precision": float(tp / (tp + fp)) if tp + fp else float("nan"),
        "alert_recall": float(tp / (tp + fn)) if tp + fn else float("nan"),
    }
    buckets = np.array([bucket_of(x) for x in t])
    for label, middle in MIDDLES.items():
        mask = buckets == label
        if mask.any():
            out[f"bias {label}"] = float((w[mask] @ (e[mask] - t[mask])) / w[mask].sum())
            out[f"|bias|/middle {label}"] = abs(out[f"bias {label}"]) / middle
    return out


class Keeping:
    """Wraps a pricer and keeps its estimates, in order (for the deal-weighted numbers)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.name, self.kept = inner, inner.name, []

    def price_many(self, texts, *, exclude_exact=False):  # type: ignore[no-untyped-def]
        out = self.inner.price_many(texts, exclude_exact=exclude_exact)
        self.kept.extend(out)
        return out

    def price(self, text, *, exclude_exact=False):  # type: ignore[no-untyped-def]
        out = self.inner.price(text, exclude_exact=exclude_exact)
        self.kept.append(out)
        return out


def first_price_seconds() -> float:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, DEALS_HOME=home)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deals", "price", "Sony WH-1000XM5 wireless headphones"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pricer", action="append", help="pricers to compare (default: ensemble, knn, ridge, constant)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-alerts")
    parser.add_argument("--skip-first-price", action="store_true")
    args = parser.parse_args()
    names = args.pricer or ["ensemble", "knn", "ridge", "constant"]

    import deals.agents  # noqa: F401 - registers the agent pricers
    from deals.framework.settings import load_settings
    from deals.pricer.alerts import AlertRule
    from deals.pricer.base import create_pricer
    from deals.pricer.data import load_products
    from deals.pricer.evaluate import evaluate, plot, plot_alert_curve, write_report
    from deals.pricer.intervals import LOW_CONFIDENCE_RATIO

    settings = load_settings()
    rule = AlertRule.from_settings(settings.planner)
    args.out.mkdir(parents=True, exist_ok=True)
    eval_dir = ROOT / "data" / "eval"
    pricers = {name: create_pricer(name, settings) for name in names}
    results: dict[str, object] = {"rule": rule.model_dump(mode="json")}
    try:
        for file in ("deal_like", "test", "off_domain"):
            items = load_products(eval_dir / f"{file}.jsonl")
            reports, kept = [], {}
            for name, pricer in pricers.items():
                keeping = Keeping(pricer)
                reports.append(evaluate(keeping, items, settings.evaluation, name=name, rule=rule, data_file=f"{file}.jsonl"))
                kept[name] = keeping.kept
            console.print(summary_table(f"{file}.jsonl ({len(items)} items)", reports))
            write_report(reports, args.out / f"{file}.json")
            plot(reports, args.out / f"{file}.png")
            plot_alert_curve(reports, args.out / f"{file}-alerts.png")
            main_report = reports[0]
            results[file] = {r.pricer: {"mae": r.mae, "rmsle": r.rmsle, "alert_precision": r.alert_precision, "alert_recall": r.alert_recall,
                                        "alert_f1": r.alert_f1, "interval_coverage": r.interval_coverage, "items_per_s": r.items_per_s,
                                        "low_confidence": r.low_confidence} for r in reports}  # fmt: skip
            if file == "deal_like":
                console.print(bias_table(main_report))
                console.print(curve_table(main_report))
            if file == "test":
                w = weighted(main_report, kept[names[0]], rule)
                results["test_deal_weighted"] = w
                table = Table(title=f"test.jsonl, deal-weighted ({main_report.n} items): {names[0]}")
                table.add_column("measure")
                table.add_column("value", justify="right")
                for key, value in w.items():
                    table.add_row(key, f"{100 * value:.1f}%" if "alert" in key or "/middle" in key else f"{value:,.3f}")
                console.print(table)
            if file == "off_domain":
                console.print(f"off-domain: {main_report.low_confidence} of {main_report.n} items flagged low-confidence "
                              f"(interval wider than x{LOW_CONFIDENCE_RATIO:g}); items/s {main_report.items_per_s:.1f}")  # fmt: skip
                for r in reports:  # the same items with the price mix of deals
                    w = weighted(r, kept[r.pricer], rule)
                    results.setdefault("off_domain_deal_weighted", {})[r.pricer] = w
                    console.print(f"off-domain, deal-weighted: {r.pricer} MAE ${w['mae']:,.2f} RMSLE {w['rmsle']:.3f}")
    finally:
        for pricer in pricers.values():
            pricer.close()
    if not args.skip_first_price:
        results["first_price_s"] = first_price_seconds()
        console.print(f"first `deals price` on an empty DEALS_HOME: {results['first_price_s']:.1f} s")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print(f"reports and plots in {args.out}")


if __name__ == "__main__":
    main()
