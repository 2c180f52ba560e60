"""The priced catalogue behind retrieval: open the vector store, seeding it on first use.

The package ships a starter catalogue (`deals/data/starter/`): curated, real Amazon
products with their prices AND their MiniLM vectors, computed once when the starter was
built (`scripts/build_starter.py`). Seeding a fresh store therefore only writes vectors
(seconds) instead of encoding ~8,000 texts (minutes on two cores). When the configured
embedding model differs from the one the starter vectors were made with, the texts are
encoded instead, with a progress bar.

    open_catalogue(settings)                 the store, seeded when empty
    build_index(settings, files, ...)        what `deals index` does: seed the starter, or
                                             curate and add priced product files
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.errors import IndexError_
from deals.framework.models import Product

if TYPE_CHECKING:
    from deals.framework.settings import Settings
    from deals.memory.vectors import VectorStore

log = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).resolve().parent.parent / "data" / "starter"
STARTER_PRODUCTS = "products.jsonl.gz"
STARTER_VECTORS = "embeddings.npy"
STARTER_MANIFEST = "manifest.json"
STARTER_LOCAL = "local.npz"
STARTER_VALIDATION = "validation.jsonl.gz"


def starter_manifest(directory: Path = STARTER_DIR) -> dict:
    path = directory / STARTER_MANIFEST
    if not path.exists():
        raise IndexError_(f"the starter catalogue is missing ({path}); reinstall deals or run `deals index --data FILE`")
    return json.loads(path.read_text(encoding="utf-8"))


def starter_products(directory: Path = STARTER_DIR) -> list[Product]:
    with gzip.open(directory / STARTER_PRODUCTS, "rt", encoding="utf-8") as handle:
        return [Product.model_validate_json(line) for line in handle if line.strip()]


def seed_starter(store: VectorStore, settings: Settings, *, directory: Path = STARTER_DIR, progress: bool = True) -> int:
    """Write the starter catalogue into `store`; returns the number of products written."""
    manifest = starter_manifest(directory)
    products = starter_products(directory)
    store.mark_seeding(manifest["products_sha256"])
    if manifest.get("fingerprint") == store.fingerprint:
        vectors = np.load(directory / STARTER_VECTORS).astype(np.float32)
        if len(vectors) != len(products):
            raise IndexError_(f"starter catalogue is inconsistent: {len(products)} products, {len(vectors)} vectors")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        from rich.console import Console
        from rich.progress import Progress

        batch = settings.vectors.batch_size
        with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
            task = bar.add_task("loading the starter catalogue", total=len(products))
            for start in range(0, len(products), batch):
                store.add(products[start : start + batch], vectors[start : start + batch])
                bar.update(task, advance=len(products[start : start + batch]))
        store.mark_seeded(manifest["products_sha256"], len(products))
        return len(products)
    log.info("starter vectors were made with %s; encoding with %s", manifest.get("fingerprint"), store.fingerprint)
    from deals.memory.embeddings import Embedder

    added = store.index_products(products, Embedder(settings.embeddings), progress=progress).added
    store.mark_seeded(manifest["products_sha256"], store.count())
    return added


def open_catalogue(settings: Settings, *, progress: bool = True, seed: bool | None = None) -> VectorStore:
    """The product vector store; seeded with the starter catalogue when empty (unless disabled)."""
    from deals.memory.embeddings import embedder_fingerprint
    from deals.memory.vectors import VectorStore

    store = VectorStore(settings.vectors, embedder_fingerprint(settings.embeddings))
    auto = settings.vectors.auto_starter if seed is None else seed
    if auto and store.count() > 0:
        _refresh_starter(store, settings, progress=progress)
    if store.count() == 0 and auto:
        log.info("the product index is empty: loading the bundled starter catalogue")
        written = seed_starter(store, settings, progress=progress)
        log.info("starter catalogue ready: %d products", written)
    return store


def _refresh_starter(store: VectorStore, settings: Settings, *, progress: bool) -> None:
    """Re-seed an index that holds only an older bundled starter (the models shipped with this one expect it)."""
    seeded = store.metadata.get("starter")
    current = starter_manifest().get("products_sha256")
    if seeded == current:
        return
    if not seeded and store.metadata.get("starter_loading"):  # stopped or killed while loading it
        log.warning("the bundled starter catalogue was only partly loaded (the load was interrupted); loading it again")
        store.reset()
        return
    if seeded and store.count() == store.metadata.get("starter_count"):
        log.warning("the bundled starter catalogue changed since the index was seeded; re-seeding it")
        store.reset()
        return
    log.warning(
        "the product index holds products other than this version's bundled starter catalogue; the calibrated "
        "local model expects that catalogue: rebuild with `deals index --rebuild` (then re-add your own files)"
    )


@dataclass
class IndexBuild:
    """What `build_index` did."""

    count: int = 0
    """products in the index afterwards"""
    seeded: int = 0
    """starter products written (only when the index was empty and no files were given)"""
    added: int = 0
    skipped: int = 0
    """products already present"""
    seconds: float = 0.0
    items_per_s: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    """curation drops by reason"""


def build_index(
    settings: Settings,
    files: Sequence[str | os.PathLike[str]] | None = None,
    *,
    rebuild: bool = False,
    curate: bool = True,
    progress: bool = True,
) -> IndexBuild:
    """Embed priced products into the vector store (resumable and idempotent).

    Without `files`, makes sure the bundled starter catalogue is indexed; with them, loads,
    curates (unless `curate=False`) and adds the products the store lacks. `rebuild`
    deletes the index first.
    """
    from deals.memory.embeddings import Embedder, embedder_fingerprint
    from deals.memory.vectors import VectorStore

    result = IndexBuild()
    store = VectorStore(settings.vectors, embedder_fingerprint(settings.embeddings)) if rebuild else None
    if store is not None:
        store.reset()
    if not files:
        store = store or open_catalogue(settings, seed=False, progress=progress)
        if store.count() == 0:
            result.seeded = seed_starter(store, settings, progress=progress)
        result.count = store.count()
        return result
    from deals.pricer.data import curate as curate_products
    from deals.pricer.data import load_many

    products = load_many(files)
    if curate:
        curated = curate_products(products, settings.data)
        products = curated.products
        result.dropped = {k: v for k, v in curated.dropped.items() if v}
    store = store or open_catalogue(settings, seed=False, progress=progress)
    report = store.index_products(products, Embedder(settings.embeddings), progress=progress)
    result.added, result.skipped = report.added, report.skipped
    result.seconds, result.items_per_s = report.seconds, report.items_per_s
    result.count = store.count()
    return result
