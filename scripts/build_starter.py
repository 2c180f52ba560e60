#!/usr/bin/env python3
"""Rebuild the bundled starter catalogue and the held-out evaluation files.

    python scripts/build_starter.py --source ../shared/data

Reads the real priced product files under SOURCE/products, curates them with the
default rules, splits them deterministically (seed 42), and writes

    deals/data/starter/products.jsonl.gz   the train split: the catalogue the index starts with
    deals/data/starter/embeddings.npy      its MiniLM vectors (float16), so a fresh install
                                           seeds the index in seconds instead of minutes
    deals/data/starter/manifest.json       counts, hashes, embedding fingerprint, provenance
    data/eval/validation.jsonl             held-out validation split (tuning, ensemble fits)
    data/eval/test.jsonl                   held-out test split (reporting)
    data/eval/deal_like.jsonl              held-out items resampled to the price distribution
                                           of 67 real DealNews deals (median ~$240)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from deals.framework.settings import Settings  # noqa: E402
from deals.memory.embeddings import Embedder, embedder_fingerprint  # noqa: E402
from deals.pricer.catalogue import STARTER_DIR, STARTER_MANIFEST, STARTER_PRODUCTS, STARTER_VECTORS  # noqa: E402
from deals.pricer.data import (  # noqa: E402
    curate,
    deal_like_sample,
    load_many,
    load_reference_prices,
    save_products,
    split,
    summary_dict,
)

CATALOGUE_FILES = [
    "amazon2023-train-mixed.jsonl",
    "amazon2023-appliances.jsonl",
    "amazon2023-instruments-appliances.jsonl",
    "amazon2020-promptcloud.jsonl",
    "abt-buy-2009.jsonl",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    settings = Settings()
    files = [args.source / "products" / name for name in CATALOGUE_FILES]
    curated = curate(load_many(files), settings.data)
    splits = split(curated.products, settings.data)
    reference = load_reference_prices(args.source / "feeds" / "dealnews-selected-deals.jsonl")
    held_out = splits.validation + splits.test
    deal_like = deal_like_sample(held_out, reference, n=min(400, len(held_out) // 3), seed=settings.data.seed)

    STARTER_DIR.mkdir(parents=True, exist_ok=True)
    save_products(splits.train, STARTER_DIR / STARTER_PRODUCTS)
    eval_dir = ROOT / "data" / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    save_products(splits.validation, eval_dir / "validation.jsonl")
    save_products(splits.test, eval_dir / "test.jsonl")
    save_products(deal_like, eval_dir / "deal_like.jsonl")

    embedder = Embedder(settings.embeddings)
    vectors = embedder.encode([p.text for p in splits.train], progress=True)
    np.save(STARTER_DIR / STARTER_VECTORS, vectors.astype(np.float16))
    manifest = {
        "fingerprint": embedder_fingerprint(settings.embeddings),
        "count": len(splits.train),
        "dimension": int(vectors.shape[1]),
        "products_sha256": sha256(STARTER_DIR / STARTER_PRODUCTS),
        "vectors_sha256": sha256(STARTER_DIR / STARTER_VECTORS),
        "sources": {name: sha256(path) for name, path in zip(CATALOGUE_FILES, files, strict=True)},
        "curation": settings.data.model_dump(),
        "dropped": curated.dropped,
        "summary": summary_dict({"train": splits.train, "validation": splits.validation, "test": splits.test, "deal_like": deal_like}),
        "built_by": "python scripts/build_starter.py --source ../shared/data",
        "provenance": "see deals/data/starter/NOTICE.md",
    }
    (STARTER_DIR / STARTER_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(manifest["summary"], indent=2))


if __name__ == "__main__":
    main()
