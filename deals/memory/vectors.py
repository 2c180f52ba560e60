"""The vector store of priced products (Chroma).

Embedded `PersistentClient` under `DEALS_HOME/vectors` by default; an `HttpClient` to a
Chroma server when `vectors.url` is set. Records are keyed by the product's text key, so
writing the same product twice is a no-op (idempotent) and an interrupted build resumes
where it stopped: `index_products` embeds only what the store lacks. Each record keeps
its price, category, source and title as metadata and the text as the document.

The collection remembers which embedding model made its vectors; querying it with a
different model is refused with a message saying how to rebuild.

Chroma is always given `embedding_function=None`: vectors are computed here, never by
Chroma's default function (which would download a model). Telemetry is off.
Note: an embedded store must be used by one process at a time; run a Chroma server
(`deploy/chroma.md`) when several processes need the index.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from deals.framework import paths
from deals.framework.errors import ConfigError, IndexError_
from deals.framework.models import Neighbour, Product

if TYPE_CHECKING:
    from deals.framework.settings import VectorSettings
    from deals.memory.embeddings import Encoder

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What one `index_products` call did."""

    total: int
    added: int
    skipped: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else float("nan")


def make_client(settings: VectorSettings, path: Path | None = None):  # type: ignore[no-untyped-def]
    """A Chroma client: HTTP when `vectors.url` is set, else embedded under DEALS_HOME."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.url:
        parsed = urlparse(settings.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"vectors.url: {settings.url!r} is not an http(s) URL")
        port = parsed.port or (443 if parsed.scheme == "https" else 8000)
        try:
            return chromadb.HttpClient(
                host=parsed.hostname, port=port, ssl=parsed.scheme == "https", settings=chroma_settings
            )
        except Exception as exc:  # noqa: BLE001 - connection problems surface as one clear error
            raise IndexError_(f"cannot reach the Chroma server at {settings.url}: {exc}") from exc
    where = path or paths.vectors_dir()
    try:
        return chromadb.PersistentClient(path=str(where), settings=chroma_settings)
    except Exception as exc:  # noqa: BLE001 - a read-only or damaged folder surfaces as one clear error
        raise IndexError_(
            f"cannot open the vector store in {where}: {type(exc).__name__}: {exc}; check that this user may "
            "read and write that folder (or rebuild it with `deals index --rebuild`)"
        ) from None


def _metadata(product: Product) -> dict[str, str | float]:
    return {
        "price": float(product.price),
        "title": product.title[:500],
        "category": product.category or "",
        "source": product.source or "",
    }


class VectorStore:
    """A collection of priced product vectors."""

    def __init__(self, settings: VectorSettings, fingerprint: str, *, client=None, path: Path | None = None) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.fingerprint = fingerprint
        self.client = client or make_client(settings, path)
        try:
            self.collection = self.client.get_or_create_collection(
                settings.collection,
                embedding_function=None,
                metadata={"embedder": fingerprint},
                configuration={"hnsw": {"space": "cosine"}},
            )
        except Exception as exc:  # noqa: BLE001 - read-only, damaged or unreachable: one clear error
            raise IndexError_(
                f"cannot open the product index {settings.collection!r}: {type(exc).__name__}: {exc}; "
                "check that this user may write the vector store (or rebuild it with `deals index --rebuild`)"
            ) from None
        stored = (self.collection.metadata or {}).get("embedder")
        if stored and stored != fingerprint and self.collection.count() > 0:
            raise IndexError_(
                f"the index was built with embeddings {stored!r} but the configuration uses {fingerprint!r}; "
                "rebuild it with `deals index --rebuild`"
            )

    # ------------------------------------------------------------------ writing

    def count(self) -> int:
        return int(self.collection.count())

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        return set(self.collection.get(ids=list(ids), include=[])["ids"])

    def add(self, products: Sequence[Product], vectors: np.ndarray) -> None:
        """Write products with their vectors (an existing id is overwritten, not duplicated)."""
        if len(products) != len(vectors):
            raise ValueError("one vector per product")
        if not products:
            return
        self.collection.upsert(
            ids=[p.id for p in products],
            embeddings=np.asarray(vectors, dtype=np.float32),
            metadatas=[_metadata(p) for p in products],
            documents=[p.text for p in products],
        )

    def index_products(
        self, products: Iterable[Product], encoder: Encoder, *, progress: bool = True
    ) -> IndexReport:
        """Embed and store the products the store lacks, in batches, with a progress bar."""
        started = time.perf_counter()
        unique: dict[str, Product] = {}
        for product in products:
            unique.setdefault(product.id, product)
        items = list(unique.values())
        added = skipped = 0
        batch = self.settings.batch_size
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
        with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
            task = bar.add_task("index", total=len(items), rate="")
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                present = self.existing_ids([p.id for p in chunk])
                todo = [p for p in chunk if p.id not in present]
                if todo:
                    self.add(todo, encoder.encode([p.text for p in todo]))
                added += len(todo)
                skipped += len(chunk) - len(todo)
                elapsed = time.perf_counter() - started
                bar.update(task, advance=len(chunk), rate=f"{added / elapsed:.0f} new/s" if elapsed else "")
        return IndexReport(len(items), added, skipped, time.perf_counter() - started)

    @property
    def metadata(self) -> dict[str, object]:
        return dict(self.collection.metadata or {})

    def mark_seeded(self, starter: str, count: int) -> None:
        """Record which bundled starter catalogue (by digest) filled this collection, and how many products it had."""
        meta = {k: v for k, v in self.metadata.items() if k != "starter_loading"}
        self.collection.modify(metadata={**meta, "embedder": self.fingerprint, "starter": starter, "starter_count": count})

    def mark_seeding(self, starter: str) -> None:
        """Record that the bundled starter catalogue (by digest) is being written: an index
        left with this mark and without `mark_seeded` was interrupted half-way."""
        self.collection.modify(metadata={**self.metadata, "embedder": self.fingerprint, "starter_loading": starter})

    def reset(self) -> None:
        """Delete every record (keeps the collection)."""
        self.client.delete_collection(self.settings.collection)
        self.collection = self.client.get_or_create_collection(
            self.settings.collection,
            embedding_function=None,
            metadata={"embedder": self.fingerprint},
            configuration={"hnsw": {"space": "cosine"}},
        )

    # ------------------------------------------------------------------ reading

    def prices(self) -> np.ndarray:
        """Every stored price (for the constant pricer and summaries)."""
        out: list[float] = []
        total = self.count()
        for offset in range(0, total, 5000):
            got = self.collection.get(include=["metadatas"], limit=5000, offset=offset)
            out.extend(float(m["price"]) for m in got["metadatas"] or [])
        return np.asarray(out, dtype=np.float64)

    def query(self, vectors: np.ndarray, k: int, *, with_text: bool = False) -> list[list[Neighbour]]:
        """The k nearest products of each vector, closest first (similarity = 1 - cosine distance)."""
        if self.count() == 0:
            raise IndexError_("the product index is empty; run `deals index` (or enable vectors.auto_starter)")
        include = ["metadatas", "distances"] + (["documents"] if with_text else [])
        result = self.collection.query(
            query_embeddings=np.asarray(vectors, dtype=np.float32), n_results=min(k, self.count()), include=include
        )
        out: list[list[Neighbour]] = []
        for row in range(len(result["ids"])):
            docs = result.get("documents") or []
            neighbours = []
            for col, item_id in enumerate(result["ids"][row]):
                meta = result["metadatas"][row][col]
                distance = float(result["distances"][row][col])
                if not math.isfinite(distance):
                    continue
                neighbours.append(
                    Neighbour(
                        id=item_id,
                        title=str(meta.get("title", "")),
                        price=float(meta["price"]),
                        similarity=1.0 - distance,
                        category=str(meta.get("category") or "") or None,
                        text=docs[row][col] if with_text and docs else None,
                    )
                )
            out.append(neighbours)
        return out


__all__ = ["IndexReport", "VectorStore", "make_client"]
