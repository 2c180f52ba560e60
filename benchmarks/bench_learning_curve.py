#!/usr/bin/env python3
"""How the local model's alerts and error improve with more priced products: is it the data?

    python benchmarks/bench_learning_curve.py                   # 1/8, 1/4, 1/2 and all of the catalogue
    python benchmarks/bench_learning_curve.py --shares 2 4 8 --parts 8 --out reports/learning-curve

The starter catalogue is cut into `--parts` parts, whole near-duplicate groups at a time
(`local_fit.duplicate_groups`); for each share the local model is fitted on that many parts
with the shipped fitting code (`fit_local_model`: out-of-fold member features, deal-prior
weighted quantile trees, recalibration on the share's own new-looking products), served as
`deals price` serves it (kNN over the share, its ridge, the text features), and scored on
`data/eval/deal_like.jsonl` with the planner's own alert rule. Prints a table, writes JSON and
a PNG of MAE and alert precision against catalogue size.

The slope per doubling of products is what tells whether the targets of issue 8 are a matter
of modelling or of data. 2-5 minutes per share on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DEALS_HOME", str(ROOT / ".deals-home"))

from rich.table import Table  # noqa: E402

from deals.framework.text import report_console  # noqa: E402

console = report_console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=int, default=8, help="parts the catalogue is cut into")
    parser.add_argument("--shares", type=int, nargs="+", default=[1, 2, 4, 8], help="how many parts each fit uses")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "deal_like.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "learning-curve")
    args = parser.parse_args()

    from deals.framework.models import Estimate
    from deals.framework.settings import Settings
    from deals.memory.embeddings import query_encoder
    from deals.pricer.alerts import AlertRule, simulate_offers
    from deals.pricer.catalogue import STARTER_DIR
    from deals.pricer.data import load_products
    from deals.pricer.intervals import with_quantiles
    from deals.pricer.local_fit import duplicate_groups, fit_local_model, group_folds, held_out_quantiles, new_looking
    from deals.pricer.metrics import compute_metrics

    settings = Settings()
    catalogue = load_products(STARTER_DIR / "products.jsonl.gz")
    vectors = np.load(STARTER_DIR / "embeddings.npy").astype(np.float32)
    encoder = query_encoder(settings.embeddings)
    held_out = load_products(args.data)
    texts = [p.text for p in held_out]
    held_vectors = encoder.encode(texts)
    truth = np.array([p.price for p in held_out])
    part = group_folds(duplicate_groups(vectors), args.parts, seed=7)
    rule = AlertRule.from_settings(settings.planner)
    rows = []
    for share in sorted(set(args.shares)):
        keep = np.flatnonzero(part < share)
        products = [catalogue[i] for i in keep]
        v = vectors[keep]
        prices = np.array([p.price for p in products])
        started = time.perf_counter()
        # recalibrated on the share's own new-looking products: a smaller catalogue has more of them
        model = fit_local_model(products, v, fingerprint=encoder.fingerprint, recalibrate_on=new_looking(products, v), progress=False)
        quantiles = held_out_quantiles(model, products, v, texts, held_vectors, fingerprint=encoder.fingerprint)
        estimates = [with_quantiles(Estimate(price=1.0, pricer="local"), model.levels, q, settings.pricing) for q in quantiles]
        metrics = compute_metrics(truth.tolist(), [e.price for e in estimates], settings.evaluation)
        alerts = simulate_offers(truth, estimates, rule)
        rows.append({
            "parts": share, "products": len(products), "products_over_250": int((prices > 250).sum()),
            "mae": metrics.mae, "rmsle": metrics.rmsle, "alert_precision": alerts.precision, "alert_recall": alerts.recall,
            "coverage": float(np.mean([e.low <= t <= e.high for e, t in zip(estimates, truth, strict=True)])),
            "fit_s": round(time.perf_counter() - started, 1),
        })  # fmt: skip
        console.print(f"{share}/{args.parts} of the catalogue: {len(products)} products, MAE ${metrics.mae:,.2f}")

    table = Table(title=f"local model by catalogue size, scored on {args.data.name} ({len(held_out)} items)")
    for column in ("share", "products", "> $250", "MAE", "RMSLE", "alert P", "alert R", "80% cover", "fit s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['parts']}/{args.parts}", f"{r['products']:,}", f"{r['products_over_250']:,}", f"${r['mae']:,.2f}", f"{r['rmsle']:.3f}",
            f"{100 * (r['alert_precision'] or 0):.1f}%", f"{100 * (r['alert_recall'] or 0):.1f}%", f"{100 * r['coverage']:.1f}%", f"{r['fit_s']:.0f}",
        )  # fmt: skip
    console.print(table)
    if len(rows) >= 2:
        doublings = np.log2(rows[-1]["products"] / rows[0]["products"])
        per_doubling = (rows[0]["mae"] - rows[-1]["mae"]) / doublings
        precision = 100 * ((rows[-1]["alert_precision"] or 0) - (rows[0]["alert_precision"] or 0)) / doublings
        console.print(f"per doubling of products: MAE -${per_doubling:,.2f}, alert precision {precision:+.1f} points")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.json").write_text(json.dumps({"data": str(args.data), "rows": rows}, indent=2) + "\n")
    plot(rows, args.out / "learning_curve.png")
    console.print(f"report and plot in {args.out}")


def plot(rows: list[dict], path: Path) -> None:  # type: ignore[type-arg]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.5))
    FigureCanvasAgg(figure)
    sizes = [r["products"] for r in rows]
    left, right = figure.subplots(1, 2)
    left.plot(sizes, [r["mae"] for r in rows], marker="o")
    left.set(xscale="log", xlabel="catalogue products", ylabel="MAE ($)", title="error")
    right.plot(sizes, [100 * (r["alert_precision"] or 0) for r in rows], marker="o", label="precision")
    right.plot(sizes, [100 * (r["alert_recall"] or 0) for r in rows], marker="s", label="recall")
    right.set(xscale="log", xlabel="catalogue products", ylabel="%", title="alerts (planner's rule)")
    right.legend()
    for axis in (left, right):
        axis.minorticks_off()
        axis.set_xticks(sizes, [f"{n:,}" for n in sizes])
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
