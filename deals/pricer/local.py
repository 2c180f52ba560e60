"""The local pricer: a calibrated price distribution from the catalogue, offline, in milliseconds.

    pricer = create_pricer("local", settings)     # registered as "local"
    estimate = pricer.price("Dell Inspiron 15 laptop, 16 GB RAM, 512 GB SSD")
    estimate.price, estimate.low, estimate.high, estimate.quantiles

For each description: one MiniLM vector, its `K_NEIGHBOURS` nearest catalogue products
from the vector store, the ridge model's estimate, and the text features; the quantile
trees of `deals.pricer.local_fit` (shipped fitted in `deals/data/starter/local.npz`) turn
them into log-price quantiles. The estimate is their median, the interval and the
distribution the planner decides on come with it, and `parts` shows the kNN and ridge
estimates the trees started from.

A product unlike anything in the catalogue (a licence key, a gift card) has distant
neighbours that disagree; the trees learned from such rows that the price is then
uncertain, so its interval is wide and the planner's rule declines to alert on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.errors import PricingError
from deals.framework.models import Estimate, text_key
from deals.pricer.base import Pricer, clamp, register
from deals.pricer.features import K_NEIGHBOURS, NEIGHBOUR_FEATURES
from deals.pricer.intervals import with_quantiles
from deals.pricer.knn import nearest
from deals.pricer.local_fit import LocalModel, member_features

if TYPE_CHECKING:
    from deals.framework.settings import PricingSettings, Settings
    from deals.memory.embeddings import Encoder
    from deals.memory.vectors import VectorStore
    from deals.pricer.ridge import RidgeModel

log = logging.getLogger(__name__)

SHOWN_NEIGHBOURS = 10
_KNN_COLUMN = NEIGHBOUR_FEATURES.index("knn_top10")


def model_path() -> Path:
    from deals.pricer.catalogue import STARTER_DIR, STARTER_LOCAL

    return STARTER_DIR / STARTER_LOCAL


def load_model(fingerprint: str, path: Path | None = None) -> LocalModel:
    """The shipped local model; `PricingError` when it is missing, unreadable or made for other vectors."""
    target = path or model_path()
    try:
        model = LocalModel.load(target)
    except FileNotFoundError:
        raise PricingError(f"the local model is missing ({target}); rebuild it with scripts/build_starter.py") from None
    except (OSError, ValueError, KeyError) as exc:
        raise PricingError(f"the local model {target} is unusable: {exc}") from None
    if model.meta.get("fingerprint") != fingerprint:
        raise PricingError(
            f"the local model was fitted on {model.meta.get('fingerprint')!r} vectors, the index uses {fingerprint!r}; "
            "rebuild it with scripts/build_starter.py"
        )
    return model


class LocalPricer(Pricer):
    """kNN + ridge + text features through calibrated quantile trees (see the module docstring)."""

    name = "local"

    def __init__(
        self, store: VectorStore, encoder: Encoder, ridge: RidgeModel, model: LocalModel, pricing: PricingSettings
    ) -> None:
        if ridge.fingerprint != encoder.fingerprint:
            raise PricingError(f"the ridge model was fitted on {ridge.fingerprint!r} vectors, the encoder makes {encoder.fingerprint!r}")
        self.store = store
        self.encoder = encoder
        self.ridge = ridge
        self.model = model
        self.pricing = pricing

    @classmethod
    def from_settings(cls, settings: Settings, *, progress: bool = True) -> LocalPricer:
        from deals.memory.embeddings import query_encoder
        from deals.pricer.catalogue import open_catalogue
        from deals.pricer.ridge import load_or_fit

        store = open_catalogue(settings, progress=progress)
        encoder = query_encoder(settings.embeddings)
        model = load_model(encoder.fingerprint)
        ridge = load_or_fit(settings, encoder, progress=progress)
        return cls(store, encoder, ridge, model, settings.pricing)

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        texts = list(descriptions)
        if not texts:
            return []
        if exclude_exact:
            known = [t for t in texts if text_key(t) in self.ridge.train_keys]
            if known:
                raise PricingError(
                    f"{len(known)} description(s) are catalogue products the local model was fitted on; it cannot price them "
                    f"held-out (first: {known[0][:60]!r})"
                )
        vectors = self.encoder.encode(texts)
        found = nearest(self.store, vectors, texts, K_NEIGHBOURS, exclude_exact=exclude_exact)
        sims = np.full((len(texts), K_NEIGHBOURS), np.nan)
        prices = np.full((len(texts), K_NEIGHBOURS), np.nan)
        for i, (neighbours, _) in enumerate(found):
            if not neighbours:
                raise PricingError("the product index returned no neighbours")
            sims[i, : len(neighbours)] = [n.similarity for n in neighbours]
            prices[i, : len(neighbours)] = [n.price for n in neighbours]
        ridge_log = self.ridge.predict_log(texts, vectors)
        X = member_features(texts, sims, prices, ridge_log)
        quantiles = self.model.predict(X)
        low, high = self.pricing.min_estimate, self.pricing.max_estimate
        out = []
        for i, (neighbours, excluded) in enumerate(found):
            base = Estimate(
                price=1.0,
                pricer=self.name,
                parts={
                    "knn": round(clamp(float(np.exp(X[i, _KNN_COLUMN])), low, high), 2),
                    "ridge": round(clamp(float(np.exp(ridge_log[i])), low, high), 2),
                },
                neighbours=neighbours[:SHOWN_NEIGHBOURS],
                excluded=excluded,
            )
            out.append(with_quantiles(base, self.model.levels, quantiles[i], self.pricing))
        return out

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return self.price_many([description], exclude_exact=exclude_exact)[0]


@register("local")
def _create(settings: Settings, *, progress: bool = True, **_: object) -> LocalPricer:
    return LocalPricer.from_settings(settings, progress=progress)


__all__ = ["LocalPricer", "load_model", "model_path"]
