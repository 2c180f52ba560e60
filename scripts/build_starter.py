#!/usr/bin/env python3
"""Rebuild the bundled starter catalogue, its calibrated local model and the held-out files.

    python scripts/build_starter.py --source ../shared/data

Reads the real priced product files under SOURCE/products, curates them with the
default rules (products up to $10,000 are kept), embeds them with MiniLM, and holds out
NEW products: Amazon Reviews 2023 items whose nearest other product in the pool has a
cosine similarity below 0.8, the kind of item a deal feed brings (items with a near-copy
in the catalogue would flatter every number). Then it writes

    deals/data/starter/products.jsonl.gz   the catalogue the index starts with
    deals/data/starter/embeddings.npy      its MiniLM vectors (float16): seeding a fresh
                                           index takes seconds instead of minutes
    deals/data/starter/local.npz           the calibrated local model (quantile trees over
                                           kNN, ridge and text features; see
                                           deals/pricer/local_fit.py)
    deals/data/starter/validation.jsonl.gz the validation split, inside the package (ensemble
                                           auto fits run on it)
    deals/data/starter/manifest.json       counts, hashes, fingerprint, the residual
                                           quantiles that give kNN and ridge their intervals
    data/eval/validation.jsonl             held-out new products: ensemble fits (the local model is
                                           recalibrated on the catalogue's own new products, out of fold)
    data/eval/test.jsonl                   held-out new products: reporting only
    data/eval/deal_like.jsonl              test.jsonl drawn per price bucket in the mix of deals
                                           (DEAL_PRICE_SHARES: median ~$175)
    data/eval/off_domain.jsonl             Walmart/Amazon 2013 listings (short lower-case
                                           titles, 2013 prices): a source the catalogue
                                           does not use, for "does it know what it does
                                           not know"

Walmart-Amazon 2013 is not in the catalogue: with it, the calibrated model's held-out
MAE was $108.0 against $107.4 without, with the same alert precision/recall curve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from deals.framework.models import Product  # noqa: E402
from deals.framework.settings import Settings  # noqa: E402
from deals.memory.embeddings import Embedder, embedder_fingerprint  # noqa: E402
from deals.pricer.catalogue import (  # noqa: E402
    STARTER_DIR,
    STARTER_LOCAL,
    STARTER_MANIFEST,
    STARTER_PRODUCTS,
    STARTER_VALIDATION,
    STARTER_VECTORS,
)
from deals.pricer.curation import _unit_hash  # noqa: E402
from deals.pricer.data import curate, load_many, save_products, summary_dict  # noqa: E402
from deals.pricer.features import K_NEIGHBOURS, neighbour_features  # noqa: E402
from deals.pricer.intervals import weighted_quantile  # noqa: E402
from deals.pricer.local_fit import (  # noqa: E402
    DEAL_PRICE_SHARES,
    QUANTILE_LEVELS,
    deal_prior_weights,
    exact_neighbours,
    NEW_PRODUCT_SOURCE,
    NOVEL_SIMILARITY,
    fit_local_model,
    new_looking,
)
from deals.pricer.metrics import BUCKET_EDGES, BUCKET_LABELS  # noqa: E402
from deals.pricer.ridge import RidgeModel  # noqa: E402

CATALOGUE_FILES = [
    "amazon2023-train-mixed.jsonl",
    "amazon2023-appliances.jsonl",
    "amazon2023-instruments-appliances.jsonl",
    "amazon2020-promptcloud.jsonl",
    "abt-buy-2009.jsonl",
]
OFF_DOMAIN_FILE = "walmart-amazon-2013.jsonl"
TEST_SHARE, VALIDATION_SHARE = 0.24, 0.09  # of the new products
DEAL_LIKE_SIZE = 600
OFF_DOMAIN_SIZE = 800


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weighted_sample(products: list[Product], weights: np.ndarray, n: int, seed: int) -> list[Product]:
    """n products without replacement, probability ~ weight (seeded keys: deterministic), input order."""
    u = np.array([_unit_hash(seed, p.id) for p in products])
    keys = np.log(np.maximum(u, 1e-300)) / np.maximum(weights, 1e-12)
    chosen = np.sort(np.argsort(-keys, kind="stable")[: min(n, len(products))])
    return [products[i] for i in chosen]


def deal_like_sample(products: list[Product], most: int, seed: int) -> list[Product]:
    """As many products as the bucket mix of DEAL_PRICE_SHARES allows (at most `most`), drawn per bucket; input order."""
    buckets = np.searchsorted(BUCKET_EDGES, [p.price for p in products], side="right")
    shares = np.array([DEAL_PRICE_SHARES[label] for label in BUCKET_LABELS])
    available = np.bincount(buckets, minlength=len(shares))
    shares = np.where(available > 0, shares, 0.0)
    shares /= shares.sum()
    n = min(most, int(min(available[b] / shares[b] for b in range(len(shares)) if shares[b] > 0)))
    chosen: list[int] = []
    for b, share in enumerate(shares):
        members = [i for i in range(len(products)) if buckets[i] == b]
        members.sort(key=lambda i: _unit_hash(seed, products[i].id))
        chosen += members[: round(n * share)]
    return [products[i] for i in sorted(chosen)]


def residual_quantiles(log_estimates: np.ndarray, prices: np.ndarray) -> list[float]:
    """Deal-weighted quantiles of log(true / estimate) at QUANTILE_LEVELS: a pricer's conformal interval."""
    residual = np.log(prices) - log_estimates
    weights = deal_prior_weights(prices)
    return [round(weighted_quantile(residual, weights, q), 4) for q in QUANTILE_LEVELS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--vectors-cache", type=Path, default=None, help="reuse vectors from an .npz of (keys, vectors)")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = Settings()
    seed = settings.data.seed
    files = [args.source / "products" / name for name in CATALOGUE_FILES]
    curated = curate(load_many(files), settings.data)
    pool = curated.products
    fingerprint = embedder_fingerprint(settings.embeddings)

    embedder = Embedder(settings.embeddings)
    cache: dict[str, np.ndarray] = {}
    if args.vectors_cache and args.vectors_cache.exists():
        with np.load(args.vectors_cache) as data:
            cache = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    missing = [p for p in pool if p.id not in cache]
    if missing:
        for p, v in zip(missing, embedder.encode([p.text for p in missing], progress=True), strict=True):
            cache[p.id] = v
    if args.vectors_cache:
        np.savez(args.vectors_cache, keys=np.array(list(cache)), vectors=np.array(list(cache.values())))
    # The vectors as the index will hold them (float16 on disk), so that fitting sees what serving sees.
    vectors = np.array([cache[p.id] for p in pool], dtype=np.float16).astype(np.float32)

    # New products: no near neighbour anywhere in the pool.
    novel = new_looking(pool, vectors)
    u = np.array([_unit_hash(seed, p.id) for p in pool])
    is_test = novel & (u < TEST_SHARE)
    is_validation = novel & (u >= TEST_SHARE) & (u < TEST_SHARE + VALIDATION_SHARE)
    is_catalogue = ~(is_test | is_validation)
    catalogue = [p for p, keep in zip(pool, is_catalogue, strict=True) if keep]
    validation = [p for p, keep in zip(pool, is_validation, strict=True) if keep]
    test = [p for p, keep in zip(pool, is_test, strict=True) if keep]
    cat_vectors, val_vectors = vectors[is_catalogue], vectors[is_validation]
    deal_like = deal_like_sample(test, DEAL_LIKE_SIZE, seed)

    off_settings = settings.data.model_copy(update={"min_chars": 20})
    off_pool = curate(load_many([args.source / "products" / OFF_DOMAIN_FILE]), off_settings).products
    off_domain = weighted_sample(off_pool, np.ones(len(off_pool)), OFF_DOMAIN_SIZE, seed)

    STARTER_DIR.mkdir(parents=True, exist_ok=True)
    save_products(catalogue, STARTER_DIR / STARTER_PRODUCTS)
    np.save(STARTER_DIR / STARTER_VECTORS, cat_vectors.astype(np.float16))
    eval_dir = ROOT / "data" / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    for name, items in {"validation": validation, "test": test, "deal_like": deal_like, "off_domain": off_domain}.items():
        save_products(items, eval_dir / f"{name}.jsonl")
    save_products(validation, STARTER_DIR / STARTER_VALIDATION)  # inside the package: automatic ensemble fits

    cat_novel = novel[is_catalogue]
    model = fit_local_model(
        catalogue, cat_vectors, fingerprint=fingerprint, recalibrate_on=cat_novel, validation=validation,
        validation_vectors=val_vectors, seed=seed,
    )  # fmt: skip
    model.save(STARTER_DIR / STARTER_LOCAL)

    # Conformal intervals for the kNN and ridge pricers on their own (deal-weighted validation residuals).
    cat_prices = np.array([p.price for p in catalogue])
    val_prices = np.array([p.price for p in validation])
    sims, index = exact_neighbours(val_vectors, cat_vectors, K_NEIGHBOURS)
    knn_log = neighbour_features(sims, cat_prices[index])[:, 2]  # the kNN pricer's default: top 10, softmax(sim/0.05)
    ridge = RidgeModel.fit([p.text for p in catalogue], cat_prices, cat_vectors, fingerprint=fingerprint)
    ridge_log = ridge.predict_log([p.text for p in validation], val_vectors)

    manifest = {
        "fingerprint": fingerprint,
        "count": len(catalogue),
        "dimension": int(cat_vectors.shape[1]),
        "products_sha256": sha256(STARTER_DIR / STARTER_PRODUCTS),
        "vectors_sha256": sha256(STARTER_DIR / STARTER_VECTORS),
        "local_model_sha256": sha256(STARTER_DIR / STARTER_LOCAL),
        "sources": {name: sha256(path) for name, path in zip(CATALOGUE_FILES, files, strict=True)},
        "off_domain_source": {OFF_DOMAIN_FILE: sha256(args.source / "products" / OFF_DOMAIN_FILE)},
        "curation": settings.data.model_dump(),
        "dropped": curated.dropped,
        "held_out": {
            "rule": f"{NEW_PRODUCT_SOURCE}* products whose nearest other pool product has cosine < {NOVEL_SIMILARITY}",
            "new_products": int(novel.sum()),
            "test": len(test),
            "validation": len(validation),
        },
        "residual_quantiles": {
            "levels": list(QUANTILE_LEVELS),
            "knn": residual_quantiles(knn_log, val_prices),
            "ridge": residual_quantiles(ridge_log, val_prices),
        },
        "local_model": model.meta,
        "summary": summary_dict(
            {"catalogue": catalogue, "validation": validation, "test": test, "deal_like": deal_like, "off_domain": off_domain}
        ),
        "built_by": "python scripts/build_starter.py --source ../shared/data",
        "provenance": "see deals/data/starter/NOTICE.md",
    }
    (STARTER_DIR / STARTER_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(manifest["summary"], indent=2))
    print(f"built in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
