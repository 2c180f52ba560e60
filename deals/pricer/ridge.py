"""The ridge pricer: a linear model of log price over a product's words, characters and MiniLM vector.

    log(price) = b + w . [ tf-idf of words and word pairs ; tf-idf of character 3-5-grams ;
                           EMBEDDING_WEIGHT x MiniLM embedding ]

fitted by ridge regression (scikit-learn) on the priced starter catalogue
(`deals/data/starter`: the texts, their prices and the MiniLM vectors shipped with
them). Words and character n-grams are hashed (`HashingVectorizer`, 2^18 buckets each,
so there is no vocabulary to store) and weighted by sublinear tf times smoothed idf,
each block L2-normalised; buckets seen in fewer than `MIN_DF` products get no weight.
Character n-grams catch model numbers, sizes and brand spellings that whole words miss.
`ALPHA` and `EMBEDDING_WEIGHT` were chosen by 5-fold cross-validation on the catalogue
(never on the held-out evaluation files): words + characters + 2 x MiniLM at alpha 3
gave a deal-like-weighted MAE of $123.9 against $127.2 for words + MiniLM alone.

It is a cheap, second opinion next to the kNN pricer: it sees brand names, model
numbers and sizes as words, where kNN sees only the nearest whole descriptions, so
their errors differ and the learned ensemble gains from combining them.

The model is fitted at first use (seconds) and cached under `DEALS_HOME/models/ridge/`
as a compressed `.npz` (no pickle), named after what it depends on (starter catalogue
digest, embedding model, this module's `MODEL_VERSION`); a stale file is refitted.

`exclude_exact=True` cannot make a fitted model forget an item, so for a description
that IS one of its training products the pricer refuses (`PricingError`) rather than
leak its own answer; the held-out splits in `data/eval/` share no product with the
starter catalogue.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.files import atomic_path
from deals.framework import paths
from deals.framework.errors import PricingError
from deals.framework.models import Estimate, Product, text_key
from deals.pricer.base import Pricer, clamp, register
from deals.pricer.intervals import with_residual_interval

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

    from deals.framework.settings import PricingSettings, Settings
    from deals.memory.embeddings import Encoder

log = logging.getLogger(__name__)

MODEL_VERSION = 2
N_FEATURES = 2**18
ALPHA = 3.0
MIN_DF = 2
EMBEDDING_WEIGHT = 2.0
BLOCKS = ("words", "chars")


def _hasher(block: str):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import HashingVectorizer

    if block == "words":
        return HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True)
    return HashingVectorizer(
        n_features=N_FEATURES, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False, norm=None, lowercase=True
    )


def _counts(texts: Sequence[str], block: str) -> csr_matrix:
    counts = _hasher(block).transform(list(texts)).tocsr()
    counts.data = 1.0 + np.log(counts.data)  # sublinear tf
    return counts


class RidgeModel:
    """A fitted ridge model: idf weights, coefficients and the training items' keys."""

    def __init__(self, idf: np.ndarray, coef: np.ndarray, intercept: float, train_keys: set[str], fingerprint: str) -> None:
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.train_keys = train_keys
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------ features

    @staticmethod
    def _features(counts: Sequence[csr_matrix], idf: np.ndarray, vectors: np.ndarray) -> csr_matrix:
        """[idf-weighted, L2-normalised counts per block ; EMBEDDING_WEIGHT x unit embedding].

        `counts`: the hashed counts of the texts, one matrix per block of BLOCKS."""
        from scipy.sparse import csr_matrix, diags, hstack
        from sklearn.preprocessing import normalize

        blocks = [
            normalize(block_counts @ diags(idf[i * N_FEATURES : (i + 1) * N_FEATURES]), norm="l2", copy=False)
            for i, block_counts in enumerate(counts)
        ]
        dense = np.asarray(vectors, dtype=np.float64)
        dense = EMBEDDING_WEIGHT * dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
        return hstack([*blocks, csr_matrix(dense)]).tocsr()

    @classmethod
    def fit(cls, texts: Sequence[str], prices: Sequence[float], vectors: np.ndarray, *, fingerprint: str, alpha: float = ALPHA) -> RidgeModel:
        """Fit log(price) on the texts and their vectors."""
        from sklearn.linear_model import Ridge

        if len(texts) != len(prices) or len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts, {len(prices)} prices and {len(vectors)} vectors: need one of each per product")
        if len(texts) < 2:
            raise ValueError("need at least two products to fit the ridge pricer")
        counts = [_counts(list(texts), block) for block in BLOCKS]  # hashed once: for the idf and the features
        idf_parts = []
        for block_counts in counts:
            df = np.bincount(block_counts.indices, minlength=N_FEATURES)
            idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
            idf[df < MIN_DF] = 0.0
            idf_parts.append(idf)
        idf = np.concatenate(idf_parts)
        model = Ridge(alpha=alpha).fit(cls._features(counts, idf, vectors), np.log(np.asarray(prices, dtype=np.float64)))
        return cls(idf, model.coef_, float(model.intercept_), {text_key(t) for t in texts}, fingerprint)

    def predict_log(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """Predicted log prices."""
        if not texts:
            return np.zeros(0)
        texts = list(texts)
        return self._features([_counts(texts, block) for block in BLOCKS], self.idf, vectors) @ self.coef + self.intercept

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> Path:
        """Write the model as a compressed .npz, atomically."""
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(
                tmp,
                idf=self.idf.astype(np.float32),
                coef=self.coef.astype(np.float32),
                intercept=np.array([self.intercept]),
                train_keys=np.array(sorted(self.train_keys)),
                meta=np.array(json.dumps({"version": MODEL_VERSION, "fingerprint": self.fingerprint})),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> RidgeModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != MODEL_VERSION:
                raise ValueError(f"model version {meta.get('version')} is not {MODEL_VERSION}")
            return cls(data["idf"], data["coef"], float(data["intercept"][0]), set(data["train_keys"].tolist()), meta["fingerprint"])


def model_file(fingerprint: str, directory: Path | None = None) -> Path:
    """Where the model fitted on the starter catalogue with this embedding model is cached."""
    from deals.pricer.catalogue import starter_manifest

    manifest = starter_manifest()
    digest = hashlib.sha256(
        f"{manifest.get('products_sha256')}|{fingerprint}|v{MODEL_VERSION}|{N_FEATURES}|{ALPHA}|{MIN_DF}|{EMBEDDING_WEIGHT}".encode()
    ).hexdigest()[:16]
    return (directory or paths.models_dir() / "ridge") / f"ridge-{digest}.npz"


def load_or_fit(settings: Settings, encoder: Encoder | None = None, *, directory: Path | None = None, progress: bool = True) -> RidgeModel:
    """The cached model for the configured embeddings, fitted on the starter catalogue when missing."""
    from deals.memory.embeddings import embedder_fingerprint
    from deals.pricer.catalogue import STARTER_DIR, STARTER_VECTORS, starter_manifest, starter_products

    fingerprint = embedder_fingerprint(settings.embeddings)
    target = model_file(fingerprint, directory)
    if target.exists():
        try:
            return RidgeModel.load(target)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ridge model %s is unreadable (%s); refitting it", target, exc)
    products: list[Product] = starter_products()
    if starter_manifest().get("fingerprint") == fingerprint:
        vectors = np.load(STARTER_DIR / STARTER_VECTORS).astype(np.float64)
    else:
        if encoder is None:
            from deals.memory.embeddings import Embedder

            encoder = Embedder(settings.embeddings)
        log.info("encoding the starter catalogue with %s for the ridge pricer", fingerprint)
        vectors = encoder.encode([p.text for p in products], progress=progress)
    log.info("fitting the ridge pricer on %d starter products", len(products))
    model = RidgeModel.fit([p.text for p in products], [p.price for p in products], vectors, fingerprint=fingerprint)
    model.save(target)
    return model


class RidgePricer(Pricer):
    """Prices a description with the ridge model (see the module docstring)."""

    name = "ridge"

    def __init__(self, model: RidgeModel, encoder: Encoder, pricing: PricingSettings) -> None:
        if encoder.fingerprint != model.fingerprint:
            raise PricingError(f"the ridge model was fitted on {model.fingerprint!r} vectors, the encoder makes {encoder.fingerprint!r}")
        self.model = model
        self.encoder = encoder
        self.pricing = pricing

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        if not descriptions:
            return []
        if exclude_exact:
            known = [d for d in descriptions if text_key(d) in self.model.train_keys]
            if known:
                raise PricingError(
                    f"{len(known)} description(s) are training products of the ridge pricer; it cannot price them held-out "
                    f"(first: {known[0][:60]!r})"
                )
        logs = self.model.predict_log(list(descriptions), self.encoder.encode(list(descriptions)))
        low, high = self.pricing.min_estimate, self.pricing.max_estimate
        return [
            with_residual_interval(Estimate(price=round(clamp(float(np.exp(v)), low, high), 2), pricer=self.name), self.name, self.pricing)
            for v in logs
        ]

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return self.price_many([description], exclude_exact=exclude_exact)[0]


@register("ridge")
def _create(settings: Settings, *, progress: bool = True, directory: Path | None = None, **_: object) -> RidgePricer:
    from deals.memory.embeddings import query_encoder

    encoder = query_encoder(settings.embeddings)
    return RidgePricer(load_or_fit(settings, encoder, directory=directory, progress=progress), encoder, settings.pricing)


__all__ = ["ALPHA", "EMBEDDING_WEIGHT", "MIN_DF", "MODEL_VERSION", "N_FEATURES", "RidgeModel", "RidgePricer", "load_or_fit", "model_file"]
