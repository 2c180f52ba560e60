"""Fitting the calibrated local model: member features out of fold, quantile trees, recalibration.

    model = fit_local_model(catalogue, vectors, calibration, calibration_vectors, fingerprint=...)
    model.save(path)                      # an .npz of arrays, no pickle
    LocalModel.load(path).predict(X)      # (n, len(levels)) log-price quantiles

**What is learned.** For every level tau in `QUANTILE_LEVELS` a gradient-boosted
quantile regression (scikit-learn `HistGradientBoostingRegressor`, pinball loss) maps
the features of `deals.pricer.features` (several kNN estimates and how similar the
neighbours are, the ridge estimate, numbers and cues in the text) to the tau-quantile of
the log price. Together the levels are a predictive distribution: its median is the
estimate, its 10% and 90% quantiles the 80% interval, and the planner decides on the
whole of it (`deals.pricer.alerts`).

**Out of fold.** The features of a catalogue product must be made without that product,
or the trees would learn to trust neighbours that are the item itself. The catalogue is
split into `folds` folds by near-duplicate group (products at cosine >= 0.95 always
share a fold: matched listings of one product would otherwise leak); each fold's
features come from the kNN and ridge of the other folds.

**Deal-like prices.** The catalogue is skewed cheap (median ~$35); deals are not (median
~$175-240). Rows are weighted so that the price mix the trees learn from is
`DEAL_PRICE_SHARES`, which matches 2,000 Amazon products sampled ~price^0.9 (median
$174) and the 67 real DealNews deals in the shared data (median $240, a few above
$1,000). This is the prior the model's estimates and intervals are calibrated for.

**Recalibration.** Quantile trees fitted on all catalogue rows are too narrow for new
products (most catalogue rows have a near relative; a deal's product often has none).
The catalogue products that have no near-copy (`recalibrate_on`) get their quantiles
out of fold: trees fitted without their fold, on features made without it. Each level
gets the shift that makes its deal-weighted coverage of them equal to tau
(cross-conformal per level); the shifts are saved with the trees. Using the catalogue's
own new-looking products (~2,900) rather than a separate split keeps them in the
catalogue, where they widen what kNN and ridge know.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deals.framework.files import atomic_path
from deals.framework.models import Product
from deals.pricer.features import FEATURE_NAMES, K_NEIGHBOURS, neighbour_features, text_features
from deals.pricer.intervals import weighted_quantile
from deals.pricer.metrics import BUCKET_EDGES, BUCKET_LABELS
from deals.pricer.trees import Forest

log = logging.getLogger(__name__)

MODEL_VERSION = 1
QUANTILE_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# The price mix of deals, per bucket of deals.pricer.metrics (see the module docstring).
DEAL_PRICE_SHARES: dict[str, float] = {
    "<$25": 0.07, "$25-50": 0.08, "$50-100": 0.14, "$100-250": 0.35, "$250-500": 0.24, "$500-1000": 0.09, ">=$1000": 0.03,
}  # fmt: skip
TREE_PARAMS: dict[str, Any] = {"max_iter": 300, "learning_rate": 0.05, "min_samples_leaf": 40}
DUPLICATE_SIMILARITY = 0.95
NOVEL_SIMILARITY = 0.8  # a new-looking product has no other product at or above this cosine
NEW_PRODUCT_SOURCE = "amazon2023"  # ... and comes from the sources whose text is the deals' kind


# --------------------------------------------------------------------------- the model


@dataclass
class LocalModel:
    """Quantile trees over `FEATURE_NAMES`, one per level, plus the recalibration shifts."""

    levels: tuple[float, ...]
    forests: list[Forest]
    shifts: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Log-price quantiles, one row per item, one column per level, non-decreasing."""
        raw = np.column_stack([forest.predict(X) for forest in self.forests]) + self.shifts[None, :]
        return np.sort(raw, axis=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        arrays: dict[str, np.ndarray] = {}
        for i, forest in enumerate(self.forests):
            arrays.update(forest.to_arrays(f"q{i}"))
        arrays["levels"] = np.asarray(self.levels, dtype=np.float64)
        arrays["shifts"] = np.asarray(self.shifts, dtype=np.float64)
        arrays["meta"] = np.array(json.dumps({**self.meta, "version": MODEL_VERSION, "features": list(FEATURE_NAMES)}))
        target = Path(path)
        with atomic_path(target, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalModel:
        """The model in `path`; `ValueError` when it is not one this version can use."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != MODEL_VERSION:
                raise ValueError(f"local model version {meta.get('version')}, expected {MODEL_VERSION}")
            if meta.get("features") != list(FEATURE_NAMES):
                raise ValueError("local model was fitted on other features; rebuild it")
            levels = tuple(float(v) for v in data["levels"])
            forests = [Forest.from_arrays(data, f"q{i}") for i in range(len(levels))]
            return cls(levels=levels, forests=forests, shifts=np.asarray(data["shifts"]), meta=meta)


# --------------------------------------------------------------------------- pieces


def deal_prior_weights(prices: Sequence[float] | np.ndarray) -> np.ndarray:
    """Row weights (mean 1) that give `prices` the bucket mix of `DEAL_PRICE_SHARES`."""
    p = np.asarray(prices, dtype=np.float64)
    bucket = np.searchsorted(BUCKET_EDGES, p, side="right")
    counts = np.bincount(bucket, minlength=len(BUCKET_LABELS)).astype(np.float64)
    shares = np.array([DEAL_PRICE_SHARES[label] for label in BUCKET_LABELS])
    present = counts > 0
    shares = np.where(present, shares, 0.0)
    shares /= shares.sum()
    weights = shares[bucket] / np.maximum(counts[bucket], 1.0)
    return weights / weights.mean()


def exact_neighbours(
    queries: np.ndarray, catalogue: np.ndarray, k: int, *, exclude: np.ndarray | None = None, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and indices of the k nearest catalogue rows, nearest first.

    `exclude`: a boolean (n_queries, n_catalogue) mask is too big, so instead an array
    giving each query's own catalogue row (-1 for none) that must not be its neighbour.
    """
    q = _unit(queries)
    c = _unit(catalogue)
    k = min(k, len(c))
    sims = np.empty((len(q), k), dtype=np.float32)
    index = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk] @ c.T
        if exclude is not None:
            own = exclude[start : start + chunk]
            rows = np.flatnonzero(own >= 0)
            block[rows, own[rows]] = -np.inf
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        index[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(part_sims, order, axis=1)
    return sims, index


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def duplicate_groups(vectors: np.ndarray, threshold: float = DUPLICATE_SIMILARITY) -> np.ndarray:
    """A group id per row: rows joined by a chain of cosine >= `threshold` share one."""
    sims, index = exact_neighbours(vectors, vectors, 20, exclude=np.arange(len(vectors)))
    parent = np.arange(len(vectors))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in zip(*np.nonzero(sims >= threshold), strict=True):
        a, b = find(i), find(int(index[i, j]))
        if a != b:
            parent[a] = b
    return np.array([find(i) for i in range(len(vectors))])


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold per row, whole groups at a time, balanced by a seeded shuffle of the groups."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = dict(zip(unique.tolist(), (order % folds).tolist(), strict=True))
    return np.array([fold_of_group[g] for g in groups.tolist()])


def new_looking(products: Sequence[Product], vectors: np.ndarray) -> np.ndarray:
    """Which products look new among `products`: no other at cosine >= `NOVEL_SIMILARITY`, from `NEW_PRODUCT_SOURCE`."""
    nearest, _ = exact_neighbours(vectors, vectors, 1, exclude=np.arange(len(vectors)))
    return (nearest[:, 0] < NOVEL_SIMILARITY) & np.array([(p.source or "").startswith(NEW_PRODUCT_SOURCE) for p in products])


def held_out_quantiles(
    model: LocalModel, catalogue: Sequence[Product], vectors: np.ndarray, texts: Sequence[str], text_vectors: np.ndarray, *, fingerprint: str
) -> np.ndarray:
    """Log-price quantiles of products outside `catalogue`, made as `LocalPricer` makes them (kNN over the
    catalogue, a ridge fitted on it, the text features)."""
    from deals.pricer.ridge import RidgeModel

    prices = np.array([p.price for p in catalogue])
    ridge = RidgeModel.fit([p.text for p in catalogue], prices, vectors, fingerprint=fingerprint)
    sims, index = exact_neighbours(text_vectors, vectors, K_NEIGHBOURS)
    return model.predict(member_features(texts, sims, prices[index], ridge.predict_log(texts, text_vectors)))


def member_features(texts: Sequence[str], sims: np.ndarray, prices: np.ndarray, ridge_log: np.ndarray) -> np.ndarray:
    """The model's input rows (`FEATURE_NAMES` order) from neighbours, the ridge estimate and the texts."""
    return np.column_stack([neighbour_features(sims, prices), np.asarray(ridge_log, dtype=np.float64), text_features(texts)])


# --------------------------------------------------------------------------- fitting


def out_of_fold_features(
    catalogue: Sequence[Product], vectors: np.ndarray, *, fingerprint: str, fold: np.ndarray, progress: bool = True
) -> np.ndarray:
    """Features of every catalogue product made without its own fold (see the module docstring)."""
    from deals.pricer.ridge import RidgeModel

    texts = [p.text for p in catalogue]
    prices = np.array([p.price for p in catalogue])
    folds = int(fold.max()) + 1
    X = np.full((len(catalogue), len(FEATURE_NAMES)), np.nan)
    with _progress(progress) as bar:
        task = bar.add_task("member features out of fold", total=folds)
        for k in range(folds):
            test = np.flatnonzero(fold == k)
            train = np.flatnonzero(fold != k)
            sims, index = exact_neighbours(vectors[test], vectors[train], K_NEIGHBOURS)
            ridge = RidgeModel.fit([texts[i] for i in train], prices[train], vectors[train], fingerprint=fingerprint)
            ridge_log = ridge.predict_log([texts[i] for i in test], vectors[test])
            X[test] = member_features([texts[i] for i in test], sims, prices[train][index], ridge_log)
            bar.advance(task)
    return X


def _quantile_forests(X: np.ndarray, y: np.ndarray, weights: np.ndarray, seed: int) -> list[Forest]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return [
        Forest.from_sklearn(
            HistGradientBoostingRegressor(loss="quantile", quantile=level, random_state=seed, **TREE_PARAMS).fit(X, y, sample_weight=weights)
        )
        for level in QUANTILE_LEVELS
    ]


def fit_local_model(
    catalogue: Sequence[Product],
    vectors: np.ndarray,
    *,
    fingerprint: str,
    recalibrate_on: np.ndarray,
    validation: Sequence[Product] = (),
    validation_vectors: np.ndarray | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> LocalModel:
    """Fit the quantile trees on the catalogue (out of fold) and recalibrate them.

    `recalibrate_on`: a boolean mask of the catalogue products that stand for new ones
    (no near-copy in the catalogue). Their quantiles are predicted out of fold (trees
    fitted without their fold, on features made without it) and each level is shifted
    to cover its share of them, deal-weighted. `validation` (held out, optional) is only
    scored: its coverage per level goes into the model's metadata.
    """
    if len(catalogue) != len(vectors):
        raise ValueError("one vector per product is needed")
    mask = np.asarray(recalibrate_on, dtype=bool)
    if mask.shape != (len(catalogue),) or mask.sum() < 50:
        raise ValueError(f"recalibration needs at least 50 products marked in recalibrate_on, got {int(mask.sum())}")
    prices = np.array([p.price for p in catalogue])
    fold = group_folds(duplicate_groups(vectors), folds, seed)
    X = out_of_fold_features(catalogue, vectors, fingerprint=fingerprint, fold=fold, progress=progress)
    y = np.log(prices)
    weights = deal_prior_weights(prices)
    raw = np.full((len(catalogue), len(QUANTILE_LEVELS)), np.nan)
    with _progress(progress) as bar:
        task = bar.add_task("quantile trees (out of fold, then all)", total=folds + 1)
        for k in range(folds):
            test = (fold == k) & mask
            train = fold != k
            if test.any():
                forests = _quantile_forests(X[train], y[train], weights[train], seed)
                raw[test] = np.column_stack([f.predict(X[test]) for f in forests])
            bar.advance(task)
        forests = _quantile_forests(X, y, weights, seed)
        bar.advance(task)
    cal_prices = prices[mask]
    cal_weights = deal_prior_weights(cal_prices)
    residual = y[mask][:, None] - raw[mask]
    shifts = np.array([weighted_quantile(residual[:, j], cal_weights, level) for j, level in enumerate(QUANTILE_LEVELS)])
    model = LocalModel(levels=QUANTILE_LEVELS, forests=forests, shifts=shifts)
    model.meta = {
        "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "catalogue_products": len(catalogue),
        "catalogue_sha256": catalogue_digest(catalogue),
        "recalibrated_on": int(mask.sum()),
        "folds": folds,
        "seed": seed,
        "tree_params": TREE_PARAMS,
        "deal_price_shares": DEAL_PRICE_SHARES,
        "shifts": [round(float(v), 4) for v in shifts],
    }
    if len(validation):
        if validation_vectors is None or len(validation_vectors) != len(validation):
            raise ValueError("one vector per validation product is needed")
        val_prices = np.array([p.price for p in validation])
        quantiles = held_out_quantiles(model, catalogue, vectors, [p.text for p in validation], validation_vectors, fingerprint=fingerprint)
        val_weights = deal_prior_weights(val_prices)
        model.meta["validation_products"] = len(validation)
        model.meta["validation_coverage"] = {
            f"{level:g}": round(float(val_weights @ (np.log(val_prices) <= quantiles[:, j]) / val_weights.sum()), 4)
            for j, level in enumerate(QUANTILE_LEVELS)
        }
    log.info("local model fitted on %d catalogue products, recalibrated on %d (shifts %s)", len(catalogue), int(mask.sum()), model.meta["shifts"])
    return model


def catalogue_digest(products: Sequence[Product]) -> str:
    """sha256 over the products' text keys and prices, in order."""
    digest = hashlib.sha256()
    for p in products:
        digest.update(f"{p.id}\t{p.price:.2f}\n".encode())
    return digest.hexdigest()


def _progress(enabled: bool):  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled,
    )  # fmt: skip


__all__ = [
    "DEAL_PRICE_SHARES",
    "QUANTILE_LEVELS",
    "LocalModel",
    "deal_prior_weights",
    "duplicate_groups",
    "exact_neighbours",
    "fit_local_model",
    "group_folds",
    "held_out_quantiles",
    "member_features",
    "new_looking",
    "out_of_fold_features",
]
