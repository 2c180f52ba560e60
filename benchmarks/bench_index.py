#!/usr/bin/env python3
"""Index and kNN benchmark: throughput, latency and accuracy, printed and saved as JSON.

    python benchmarks/bench_index.py [--items 2000] [--queries 200] [--out reports/bench_index.json]

Measures, on the same texts from the starter catalogue:
  1. raw sentence-transformers encode throughput (items/s);
  2. index build throughput through `VectorStore.index_products` into a fresh embedded
     Chroma store (encode + write); target: at least 80% of (1);
  3. seeding a fresh store from the bundled vectors (what a fresh install does);
  4. top-5 query latency p50/p99: ONNX query encoding + Chroma query, one text at a time;
  5. accuracy of `knn` against `constant` on the held-out validation and deal-like splits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=2000, help="texts encoded/indexed for throughput")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_index.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="deals-bench-"))
    os.environ["DEALS_HOME"] = str(home)

    from rich.table import Table

    from deals.framework.settings import Settings
    from deals.memory.embeddings import Embedder, embedder_fingerprint, query_encoder
    from deals.memory.vectors import VectorStore
    from deals.pricer.catalogue import seed_starter, starter_products
    from deals.pricer.constant import ConstantPricer
    from deals.pricer.data import load_products
    from deals.pricer.evaluate import compare, render_table
    from deals.pricer.knn import KnnPricer

    from deals.framework.text import report_console

    console = report_console()
    settings = Settings()
    products = starter_products()
    sample = products[: args.items]
    texts = [p.text for p in sample]
    results: dict[str, object] = {"items": len(sample)}

    embedder = Embedder(settings.embeddings)
    embedder.encode(texts[:64])  # warm-up
    t0 = time.perf_counter()
    embedder.encode(texts)
    raw = len(texts) / (time.perf_counter() - t0)
    results["raw_encode_items_per_s"] = raw

    fingerprint = embedder_fingerprint(settings.embeddings)
    bench_store = VectorStore(settings.vectors.model_copy(update={"collection": "bench"}), fingerprint)
    report = bench_store.index_products(sample, embedder, progress=False)
    results["index_build_items_per_s"] = report.items_per_s
    results["index_vs_raw"] = report.items_per_s / raw
    rerun = bench_store.index_products(sample, embedder, progress=False)
    results["index_rerun_seconds"] = rerun.seconds
    results["index_rerun_added"] = rerun.added

    store = VectorStore(settings.vectors, fingerprint)
    t0 = time.perf_counter()
    seeded = seed_starter(store, settings, progress=False)
    results["starter_seed_seconds"] = time.perf_counter() - t0
    results["starter_items"] = seeded

    t0 = time.perf_counter()
    encoder = query_encoder(settings.embeddings)
    results["query_encoder_ready_seconds"] = time.perf_counter() - t0
    queries = [p.text for p in products[-args.queries :]]
    latencies = []
    for text in queries:
        t0 = time.perf_counter()
        store.query(encoder.encode([text]), 5)
        latencies.append((time.perf_counter() - t0) * 1000)
    results["query_top5_ms_p50"] = float(np.percentile(latencies, 50))
    results["query_top5_ms_p99"] = float(np.percentile(latencies, 99))

    knn = KnnPricer(store, encoder, settings.knn, settings.pricing)
    constant = ConstantPricer(float(np.median(store.prices())))
    accuracy = {}
    for split in ("validation", "deal_like"):
        items = load_products(ROOT / "data" / "eval" / f"{split}.jsonl")
        reports = compare({"constant": constant, "knn": knn}, items, settings.evaluation, progress=False)
        console.print(render_table(reports))
        accuracy[split] = {r.pricer: {"n": r.n, "mae": r.mae, "rmsle": r.rmsle, "hit_rate": r.hit_rate, "items_per_s": r.items_per_s} for r in reports}
    results["accuracy"] = accuracy

    table = Table(title="index benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if key != "accuracy":
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    console.print(f"saved {args.out}")


if __name__ == "__main__":
    main()
