#!/usr/bin/env python3
"""Grid-search the kNN pricer's k, weighting and temperature on a held-out split.

    python benchmarks/tune_knn.py [--data data/eval/validation.jsonl] [--also data/eval/deal_like.jsonl]

Encodes each file once, retrieves 50 neighbours per item (exact matches excluded as in
evaluation), then scores every setting in numpy. Prints a table sorted by MAE; the
defaults in deals/framework/settings.py were chosen from the validation split only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "validation.jsonl")
    parser.add_argument("--also", type=Path, action="append", default=[])
    args = parser.parse_args()

    from rich.table import Table

    from deals.framework.settings import EvaluationSettings, Settings
    from deals.pricer.catalogue import open_catalogue
    from deals.pricer.data import load_products
    from deals.pricer.knn import KnnPricer, combine
    from deals.pricer.metrics import compute_metrics
    from deals.memory.embeddings import query_encoder

    settings = Settings()
    store = open_catalogue(settings)
    wide = settings.knn.model_copy(update={"k": 50})
    pricer = KnnPricer(store, query_encoder(settings.embeddings), wide, settings.pricing)
    grid = list(itertools.product([3, 5, 8, 10, 15, 20, 30], ["softmax", "inverse", "uniform"], [0.01, 0.02, 0.05, 0.1]))
    files = [args.data, *args.also]
    scores: dict[tuple, list[tuple[float, float]]] = {g: [] for g in grid}
    for path in files:
        items = load_products(path)
        found = []
        for start in range(0, len(items), 64):
            found += pricer.neighbours([p.text for p in items[start : start + 64]], exclude_exact=True)
        truths = [p.price for p in items]
        for k, method, temp in grid:
            if method != "softmax" and temp != 0.05:
                continue
            estimates = [combine(n[:k], method, temp) for n, _ in found]
            m = compute_metrics(truths, estimates, EvaluationSettings(), resamples=10)
            scores[(k, method, temp)].append((m.mae, m.hit_rate))
    table = Table(title="kNN settings (MAE / hit rate per file: " + ", ".join(f.name for f in files) + ")")
    table.add_column("k")
    table.add_column("weighting")
    table.add_column("temperature")
    for f in files:
        table.add_column(f.stem, justify="right")
    ranked = sorted((g for g in grid if scores[g]), key=lambda g: scores[g][0][0])
    for g in ranked:
        table.add_row(str(g[0]), g[1], str(g[2]), *[f"${mae:.2f} / {hit:.1%}" for mae, hit in scores[g]])
    from deals.framework.text import report_console

    report_console().print(table)


if __name__ == "__main__":
    main()
