"""The kNN pricer: a similarity-weighted mean of the nearest catalogue prices, in log space.

estimate = exp( sum_i w_i * log(price_i) / sum_i w_i ) over the k nearest products, with
w_i = softmax(similarity_i / temperature) (default), 1 / (1 - similarity_i) ("inverse")
or 1 ("uniform"). Log space makes a $20 and a $2,000 neighbour count as a factor, not a
sum, which suits prices spread over three orders of magnitude.

With `exclude_exact=True` (evaluation) neighbours that are the item itself are dropped:
the same text key, or a cosine similarity of at least `EXACT_SIMILARITY` (the same
product text curated slightly differently). The estimate says how many were dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.models import Estimate, Neighbour, text_key
from deals.pricer.base import Pricer, clamp, register
from deals.pricer.intervals import with_residual_interval

if TYPE_CHECKING:
    from deals.framework.settings import KnnSettings, PricingSettings, Settings
    from deals.memory.embeddings import Encoder
    from deals.memory.vectors import VectorStore

EXACT_SIMILARITY = 0.995
_EXTRA = 5  # neighbours fetched beyond k so that exclusions still leave k


def weights(similarities: np.ndarray, method: str, temperature: float) -> np.ndarray:
    """Neighbour weights for the configured method (non-negative, not normalised)."""
    sims = np.asarray(similarities, dtype=np.float64)
    if method == "uniform":
        return np.ones_like(sims)
    if method == "inverse":
        return 1.0 / np.maximum(1.0 - sims, 1e-3)
    scaled = (sims - sims.max()) / temperature
    return np.exp(scaled)


def combine(neighbours: Sequence[Neighbour], method: str, temperature: float) -> float:
    """The weighted geometric mean of the neighbours' prices."""
    sims = np.array([n.similarity for n in neighbours])
    logs = np.log(np.array([n.price for n in neighbours]))
    w = weights(sims, method, temperature)
    return float(np.exp((w * logs).sum() / w.sum()))


class KnnPricer(Pricer):
    """Prices a description from its nearest priced products."""

    name = "knn"

    def __init__(self, store: VectorStore, encoder: Encoder, knn: KnnSettings, pricing: PricingSettings) -> None:
        self.store = store
        self.encoder = encoder
        self.knn = knn
        self.pricing = pricing
        # The shipped interval was measured for the default settings only.
        self._calibrated = (knn.k, knn.weighting, knn.temperature) == (10, "softmax", 0.05)

    @classmethod
    def from_settings(cls, settings: Settings, *, progress: bool = True) -> KnnPricer:
        from deals.memory.embeddings import query_encoder
        from deals.pricer.catalogue import open_catalogue

        store = open_catalogue(settings, progress=progress)
        return cls(store, query_encoder(settings.embeddings), settings.knn, settings.pricing)

    def neighbours(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[tuple[list[Neighbour], int]]:
        """The k nearest products per description, and how many were excluded as the item itself."""
        if not descriptions:
            return []
        return nearest(self.store, self.encoder.encode(list(descriptions)), descriptions, self.knn.k, exclude_exact=exclude_exact)

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        estimates = []
        for neighbours, excluded in self.neighbours(descriptions, exclude_exact=exclude_exact):
            value = combine(neighbours, self.knn.weighting, self.knn.temperature)
            estimate = Estimate(
                price=round(clamp(value, self.pricing.min_estimate, self.pricing.max_estimate), 2),
                pricer=self.name,
                neighbours=neighbours,
                excluded=excluded,
            )
            estimates.append(with_residual_interval(estimate, self.name, self.pricing) if self._calibrated else estimate)
        return estimates

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return self.price_many([description], exclude_exact=exclude_exact)[0]


def nearest(
    store: VectorStore, vectors: np.ndarray, texts: Sequence[str], k: int, *, exclude_exact: bool = False
) -> list[tuple[list[Neighbour], int]]:
    """The k nearest catalogue products per text (its vector in `vectors`), and how many were
    left out as the item itself (same text key, or similarity >= EXACT_SIMILARITY) when
    `exclude_exact`: held-out evaluation must not find the answer in the catalogue."""
    found = store.query(vectors, k + (_EXTRA if exclude_exact else 0))
    out = []
    for text, candidates in zip(texts, found, strict=True):
        excluded = 0
        if exclude_exact:
            own = text_key(text)
            kept = [n for n in candidates if n.id != own and n.similarity < EXACT_SIMILARITY]
            excluded = len(candidates) - len(kept)
            candidates = kept
        out.append((candidates[:k], excluded))
    return out


@register("knn")
def _create(settings: Settings, **options: object) -> KnnPricer:
    return KnnPricer.from_settings(settings, **options)  # type: ignore[arg-type]
