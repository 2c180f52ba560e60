"""Gradient-boosted trees as plain arrays: export from scikit-learn, predict with numpy.

The calibrated price model (`deals.pricer.calibrated`) is a set of scikit-learn
`HistGradientBoostingRegressor` models. Pickles of scikit-learn estimators break across
library versions and run code when loaded, so the fitted trees are shipped and cached as
arrays instead (an `.npz`, no pickle) and evaluated here::

    forest = Forest.from_sklearn(model)        # once, after fitting
    arrays = forest.to_arrays("q50")           # into an npz with the other models
    forest = Forest.from_arrays(arrays, "q50")
    forest.predict(X)                          # == model.predict(X) for numeric features

Only numeric splits are supported (the price model has no categorical features); a
missing value (NaN) follows the direction the training chose for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_FIELDS = ("feature", "threshold", "left", "right", "value", "is_leaf", "missing_left")


@dataclass(frozen=True)
class Forest:
    """All trees of one boosted model, flattened: node arrays plus where each tree starts."""

    feature: np.ndarray  # int32, per node
    threshold: np.ndarray  # float64: go left when x <= threshold
    left: np.ndarray  # int32, node index within the flat arrays
    right: np.ndarray
    value: np.ndarray  # float64, leaf values
    is_leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool: NaN goes left
    roots: np.ndarray  # int32, index of each tree's root node
    baseline: float
    depth: int
    n_features: int

    @classmethod
    def from_sklearn(cls, model: Any) -> Forest:
        """The trees of a fitted single-output `HistGradientBoostingRegressor`."""
        if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
            raise ValueError("categorical features are not supported")
        baseline = np.asarray(model._baseline_prediction, dtype=np.float64).ravel()
        if baseline.size != 1:
            raise ValueError("only single-output regressors are supported")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in _FIELDS}
        roots = []
        offset = 0
        depth = 0
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            roots.append(offset)
            parts["feature"].append(nodes["feature_idx"].astype(np.int32))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["left"].append(nodes["left"].astype(np.int32) + offset)
            parts["right"].append(nodes["right"].astype(np.int32) + offset)
            parts["value"].append(nodes["value"].astype(np.float64))
            parts["is_leaf"].append(nodes["is_leaf"].astype(bool))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            depth = max(depth, int(nodes["depth"].max()))
            offset += len(nodes)
        joined = {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}
        return cls(
            **joined, roots=np.asarray(roots, dtype=np.int32), baseline=float(baseline[0]), depth=depth,
            n_features=int(model.n_features_in_),
        )  # fmt: skip

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw predictions (the identity link: log price here), one per row of `X`."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected an (n, {self.n_features}) array, got shape {X.shape}")
        if len(self.roots) == 0:
            return np.full(X.shape[0], self.baseline)
        rows = np.arange(X.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (X.shape[0], len(self.roots))).copy()
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        return self.baseline + self.value[node].sum(axis=1)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for `np.savez`, every key starting with `prefix/`."""
        out = {f"{prefix}/{name}": getattr(self, name) for name in (*_FIELDS, "roots")}
        out[f"{prefix}/meta"] = np.array([self.baseline, self.depth, self.n_features], dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str) -> Forest:
        """The forest saved under `prefix` by `to_arrays` (e.g. from `np.load(path)`)."""
        baseline, depth, n_features = arrays[f"{prefix}/meta"].tolist()
        fields = {name: np.asarray(arrays[f"{prefix}/{name}"]) for name in (*_FIELDS, "roots")}
        return cls(**fields, baseline=float(baseline), depth=int(depth), n_features=int(n_features))


__all__ = ["Forest"]
