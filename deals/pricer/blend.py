"""Fitting the ensemble's blend: weights per member subset, and a calibrated distribution for each.

    fit = fit_blend({"local": [...], "frontier": [...]}, truths, shapes={"local": [...]})
    report = fit_from_file(settings, "data/eval/validation.jsonl", members=["local", "frontier"], max_usd=0.5)
    save_fit(fit, path); load_fit(path)

**Centre.** In log-price space, for the members M that answered::

    log(centre) = c + sum_i w_i * log(price_i) [+ b * spread]     w_i >= 0, sum_i w_i = 1

where `spread` is the standard deviation of the members' log prices. The weights, the
intercept c and b are LEARNED on a priced file, never set by hand. Two losses are tried:
least squares of the log error (exact: every support of the simplex is solved by its KKT
system and the best feasible one kept) and the mean absolute error in dollars
(Nelder-Mead from the least-squares solution, weights through a softmax). With and
without the spread feature, that is up to four variants per member set; k-fold
cross-validation picks the variant with the lowest out-of-fold MAE and that variant is
refitted on all rows. Every loss and score is weighted so that the file's prices count
with the mix of deals (`deal_prior_weights`).

**Distribution.** Each subset also gets quantiles at `QUANTILE_LEVELS`::

    log q_tau = log(centre) + shape_tau + offset_tau

`shape_tau` is the calibrated local model's own spread around its median for that item
(its log quantile minus its log median) when "local" is in the subset, else 0; the
offsets are the deal-weighted tau-quantiles of the out-of-fold residuals (split
conformal), so the intervals of the blend are as honest as the local model's.

**Subsets.** A fit is made for EVERY non-empty subset of the members (2^m - 1 small fits,
each on the rows where all of its members answered). At run time the subset that
actually answered for an item is looked up; when no fit covers exactly the members that
answered, the largest fitted subset of them is used (ties: lower CV MAE).

**Weights file.** JSON at `ensemble.weights_file`, else `DEALS_HOME/models/ensemble.json`
(written atomically): data file name and sha256, n, fit date, folds, each member's scores,
the ensemble's cross-validated scores, and one entry per subset.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from textwrap import shorten
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deals.framework import paths
from deals.framework.errors import BudgetExhausted, ConfigError, DataError, DealsError, PricingError
from deals.framework.files import atomic_write_text
from deals.framework.models import Estimate, utcnow
from deals.framework.settings import EvaluationSettings
from deals.pricer.base import Pricer, create_pricer
from deals.pricer.intervals import weighted_quantile
from deals.pricer.local_fit import QUANTILE_LEVELS, deal_prior_weights

if TYPE_CHECKING:
    from rich.table import Table

    from deals.framework.settings import Settings

log = logging.getLogger(__name__)

FIT_VERSION = 3  # 3: kNN and ridge estimates are their residual distribution's median (x1.86), not the raw output
DEFAULT_FOLDS = 5
MIN_ROWS = 10  # rows (items every member of a subset answered) needed to fit that subset
FIT_COMMAND = "deals ensemble fit"
SHAPE_MEMBERS = ("local",)  # members whose own calibrated distribution gives a subset its shape

Loss = Literal["log_l2", "mae"]
LOSSES: tuple[Loss, ...] = ("log_l2", "mae")


# --------------------------------------------------------------------------- the fitted model


class Scores(BaseModel):
    """Deal-weighted accuracy of a set of estimates (see deals.pricer.metrics for the definitions)."""

    n: int
    mae: float
    rmsle: float
    hit_rate: float


class SubsetFit(BaseModel):
    """The blend for one set of members, and its distribution."""

    members: list[str] = Field(description="sorted member names")
    weights: dict[str, float] = Field(description="non-negative, summing to 1")
    intercept: float
    spread: float = Field(0.0, description="coefficient of the members' log spread (0 when the feature is not used)")
    uses_spread: bool = False
    loss: Loss = "log_l2"
    n: int = Field(description="rows it was fitted on")
    cv: Scores = Field(description="out-of-fold scores of this variant on those rows")
    shape: str | None = Field(None, description="member whose distribution shapes the quantiles (else none)")
    levels: list[float] = Field(default_factory=lambda: list(QUANTILE_LEVELS))
    offsets: list[float] = Field(default_factory=list, description="conformal log offsets per level")

    def centre_log(self, prices: Mapping[str, float]) -> float:
        """The blended log price for these members' prices (all of `members` must be present)."""
        logs = np.array([math.log(prices[m]) for m in self.members])
        weights = np.array([self.weights[m] for m in self.members])
        value = self.intercept + float(weights @ logs)
        if self.uses_spread:
            value += self.spread * float(logs.std())
        return min(value, 700.0)

    def predict(self, prices: Mapping[str, float]) -> float:
        """The blended price."""
        return math.exp(self.centre_log(prices))

    def log_quantiles(self, prices: Mapping[str, float], shape: Sequence[float] | None) -> list[float] | None:
        """Log-price quantiles at `levels` (None when this fit has no offsets or lacks the shape it needs)."""
        if not self.offsets or (self.shape and shape is None):
            return None
        centre = self.centre_log(prices)
        base = np.asarray(shape, dtype=np.float64) if self.shape else np.zeros(len(self.levels))
        return np.sort(centre + base + np.asarray(self.offsets)).tolist()


class EnsembleFit(BaseModel):
    """What `fit_blend` learned, as saved in the weights file."""

    version: int = FIT_VERSION
    method: str = (
        "log(centre) = intercept + sum(w_i log price_i) [+ spread_coef * std(log prices)], w_i >= 0, sum w_i = 1; "
        "loss and spread feature chosen per member subset by k-fold CV MAE (deal-weighted); "
        "log quantiles = log(centre) + local shape + conformal offsets"
    )
    members: list[str]
    data_file: str | None = None
    data_sha256: str | None = None
    n: int = Field(description="items in the fit file")
    folds: int
    seed: int = 0
    fitted_at: datetime = Field(default_factory=utcnow)
    cost_usd: float = Field(0.0, description="what pricing the fit file cost (LLM members)")
    member_scores: dict[str, Scores] = Field(description="each member alone on the fit file")
    ensemble_cv: Scores | None = Field(description="the ensemble's out-of-fold scores (each item blended from the members that answered it)")
    subsets: dict[str, SubsetFit] = Field(description="one fit per member subset, keyed 'a+b' (sorted names)")

    def for_members(self, available: Sequence[str]) -> SubsetFit | None:
        """The fit to use when `available` members answered (see the module docstring)."""
        exact = self.subsets.get(subset_key(available))
        if exact is not None:
            return exact
        have = set(available)
        candidates = [fit for fit in self.subsets.values() if set(fit.members) <= have]
        if not candidates:
            return None
        return min(candidates, key=lambda fit: (-len(fit.members), fit.cv.mae))

    def covers(self, member: str) -> bool:
        """Whether some fitted subset uses `member`."""
        return any(member in fit.members for fit in self.subsets.values())


def subset_key(members: Sequence[str]) -> str:
    return "+".join(sorted(members))


# --------------------------------------------------------------------------- fitting


def _scores(truth: np.ndarray, estimate: np.ndarray, weights: np.ndarray, evaluation: EvaluationSettings) -> Scores:
    from deals.pricer.metrics import classify

    hits = np.array([classify(t, e, evaluation) == "hit" for t, e in zip(truth.tolist(), estimate.tolist(), strict=True)])
    w = weights / weights.sum()
    return Scores(
        n=int(truth.size),
        mae=float(w @ np.abs(estimate - truth)),
        rmsle=float(np.sqrt(w @ (np.log1p(estimate) - np.log1p(truth)) ** 2)),
        hit_rate=float(w @ hits),
    )


def _spread(logs: np.ndarray) -> np.ndarray:
    return logs.std(axis=1)


def _wmean(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.tensordot(w, values, axes=(0, 0)) / w.sum()


def _solve_log_l2(
    logs: np.ndarray, target: np.ndarray, spread: np.ndarray | None, w: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Weighted least squares of the log error on the simplex, exactly: the best feasible support's KKT solution."""
    m = logs.shape[1]
    root = np.sqrt(w)[:, None]
    best: tuple[float, np.ndarray, float, float] | None = None
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            cols = logs[:, support] if spread is None else np.column_stack([logs[:, support], spread])
            centred = (cols - _wmean(cols, w)) * root
            y = (target - _wmean(target, w)) * root[:, 0]
            p = cols.shape[1]
            ones = np.zeros(p)
            ones[:size] = 1.0
            kkt = np.zeros((p + 1, p + 1))
            kkt[:p, :p] = 2.0 * centred.T @ centred
            kkt[:p, p] = ones
            kkt[p, :p] = ones
            rhs = np.concatenate([2.0 * centred.T @ y, [1.0]])
            theta = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:p]
            weights = theta[:size]
            if (weights < -1e-9).any():
                continue
            weights = np.clip(weights, 0.0, None)
            weights = weights / weights.sum()
            full = np.zeros(m)
            full[list(support)] = weights
            b = float(theta[size]) if spread is not None else 0.0
            fitted = logs @ full + (b * spread if spread is not None else 0.0)
            intercept = float(_wmean(target - fitted, w))
            loss = float(w @ (target - intercept - fitted) ** 2)
            if best is None or loss < best[0] - 1e-12:
                best = (loss, full, intercept, b)
    assert best is not None  # every single-member support is feasible
    return best[1], best[2], best[3]


def _solve_mae(
    logs: np.ndarray, truth: np.ndarray, spread: np.ndarray | None, w: np.ndarray, start: tuple[np.ndarray, float, float]
) -> tuple[np.ndarray, float, float]:
    """Weighted mean absolute dollar error, by Nelder-Mead from `start`; weights = softmax(z) keep them on the simplex."""
    from scipy.optimize import minimize

    m = logs.shape[1]
    w0, c0, b0 = start
    norm = w / w.sum()

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, float, float]:
        z = theta[:m] - theta[:m].max()
        weights = np.exp(z) / np.exp(z).sum()
        return weights, float(theta[m]), float(theta[m + 1]) if spread is not None else 0.0

    def loss(theta: np.ndarray) -> float:
        weights, c, b = unpack(theta)
        value = c + logs @ weights + (b * spread if spread is not None else 0.0)
        return float(norm @ np.abs(np.exp(np.minimum(value, 50.0)) - truth))

    x0 = np.concatenate([np.log(np.maximum(w0, 1e-3)), [c0], [b0] if spread is not None else []])
    result = minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 4000})
    theta = result.x if result.fun <= loss(x0) else x0
    weights, c, b = unpack(theta)
    weights = np.where(weights < 1e-6, 0.0, weights)
    return weights / weights.sum(), c, b


def _fit_variant(logs: np.ndarray, truth: np.ndarray, w: np.ndarray, loss: Loss, use_spread: bool) -> tuple[np.ndarray, float, float]:
    spread = _spread(logs) if use_spread else None
    start = _solve_log_l2(logs, np.log(truth), spread, w)
    if loss == "log_l2":
        return start
    return _solve_mae(logs, truth, spread, w, start)


def _predict_log(logs: np.ndarray, params: tuple[np.ndarray, float, float], use_spread: bool) -> np.ndarray:
    weights, c, b = params
    return np.minimum(c + logs @ weights + (b * _spread(logs) if use_spread else 0.0), 700.0)


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % folds


def _shape_table(shapes: Mapping[str, Sequence[Sequence[float] | None]] | None, name: str, n: int) -> np.ndarray | None:
    if not shapes or name not in shapes:
        return None
    rows = list(shapes[name])
    if len(rows) != n:
        raise ValueError(f"fit_blend: {len(rows)} shapes of {name!r} for {n} true prices")
    table = np.full((n, len(QUANTILE_LEVELS)), np.nan)
    for i, row in enumerate(rows):
        if row is not None:
            table[i] = np.asarray(row, dtype=np.float64)
    return table


def fit_blend(
    member_estimates: Mapping[str, Sequence[float | None]],
    truths: Sequence[float],
    *,
    shapes: Mapping[str, Sequence[Sequence[float] | None]] | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    losses: Sequence[Loss] = LOSSES,
    spread: bool | Literal["auto"] = "auto",
    evaluation: EvaluationSettings | None = None,
    data_file: str | None = None,
    data_sha256: str | None = None,
) -> tuple[EnsembleFit, np.ndarray]:
    """Learn the blend from each member's estimates of the same items (None = no answer) and the true prices.

    `shapes`: for members with a distribution, per item the log quantiles at
    `QUANTILE_LEVELS` minus the log median (None where it did not answer). Returns the
    fit and the ensemble's out-of-fold estimate per item (NaN where no fit applied).
    Raises `ValueError` on inconsistent input.
    """
    evaluation = evaluation or EvaluationSettings()
    names = list(member_estimates)
    if not names:
        raise ValueError("fit_blend: no member estimates given")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    truth = np.asarray(truths, dtype=np.float64)
    if truth.ndim != 1 or not np.all(np.isfinite(truth)) or (truth <= 0).any():
        raise ValueError("fit_blend: true prices must be finite and positive")
    n = truth.size
    weights_all = deal_prior_weights(truth)
    table = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names):
        values = list(member_estimates[name])
        if len(values) != n:
            raise ValueError(f"fit_blend: {len(values)} estimates of {name!r} for {n} true prices")
        column = np.array([np.nan if v is None else float(v) for v in values])
        column[~np.isfinite(column) | (column <= 0)] = np.nan
        table[:, j] = column
    shape_tables = {name: _shape_table(shapes, name, n) for name in SHAPE_MEMBERS if name in names}
    answered = np.isfinite(table)
    fold_of = _folds(n, folds, seed)

    subsets: dict[str, SubsetFit] = {}
    oof_by_subset: dict[str, np.ndarray] = {}
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), size):
            members = [names[j] for j in combo]
            rows = np.flatnonzero(answered[:, list(combo)].all(axis=1))
            if rows.size < max(MIN_ROWS, 2 * folds):
                log.info("ensemble fit: %s answered together on %d items only; not fitted", "+".join(members), rows.size)
                continue
            logs = np.log(table[np.ix_(rows, list(combo))])
            y, w = truth[rows], weights_all[rows]
            variants = [(loss, s) for loss in losses for s in ((False, True) if spread == "auto" else (bool(spread),))]
            variants = [(loss, s) for loss, s in variants if not (s and size == 1)] or [(losses[0], False)]
            best: tuple[float, Loss, bool, np.ndarray] | None = None
            for loss, use_spread in dict.fromkeys(variants):
                oof = np.empty(rows.size)
                for fold in range(folds):
                    test = fold_of[rows] == fold
                    if not test.any():
                        continue
                    params = _fit_variant(logs[~test], y[~test], w[~test], loss, use_spread)
                    oof[test] = _predict_log(logs[test], params, use_spread)
                mae = float((w / w.sum()) @ np.abs(np.exp(oof) - y))
                if best is None or mae < best[0] - 1e-9:
                    best = (mae, loss, use_spread, oof)
            assert best is not None
            _, loss, use_spread, oof_log = best
            wts, c, b = _fit_variant(logs, y, w, loss, use_spread)
            shape_name = next((m for m in SHAPE_MEMBERS if m in members), None)
            shape = shape_tables.get(shape_name) if shape_name else None
            base = shape[rows] if shape is not None else np.zeros((rows.size, len(QUANTILE_LEVELS)))
            usable = np.isfinite(base).all(axis=1)
            residual = np.log(y)[:, None] - oof_log[:, None] - base
            offsets = (
                [round(weighted_quantile(residual[usable, j], w[usable], q), 5) for j, q in enumerate(QUANTILE_LEVELS)]
                if usable.sum() >= MIN_ROWS
                else []
            )
            key = subset_key(members)
            order = sorted(range(size), key=lambda i: members[i])
            subsets[key] = SubsetFit(
                members=sorted(members),
                weights={members[i]: round(float(wts[i]), 6) for i in order},
                intercept=c, spread=b, uses_spread=use_spread, loss=loss, n=int(rows.size),
                cv=_scores(y, np.exp(oof_log), w, evaluation),
                shape=shape_name if shape is not None else None, levels=list(QUANTILE_LEVELS), offsets=offsets,
            )  # fmt: skip
            full = np.full(n, np.nan)
            full[rows] = np.exp(oof_log)
            oof_by_subset[key] = full

    if not subsets:
        raise ValueError(f"fit_blend: no member set answered on at least {max(MIN_ROWS, 2 * folds)} items")
    member_scores = {}
    for j, name in enumerate(names):
        rows = answered[:, j]
        if rows.any():
            member_scores[name] = _scores(truth[rows], table[rows, j], weights_all[rows], evaluation)
    fit = EnsembleFit(
        members=names, n=n, folds=folds, seed=seed, member_scores=member_scores, ensemble_cv=None, subsets=subsets,
        data_file=data_file, data_sha256=data_sha256,
    )  # fmt: skip
    # Out-of-fold ensemble: each item from the fit its answering members get at run time.
    oof = np.full(n, np.nan)
    for i in range(n):
        available = [names[j] for j in range(len(names)) if answered[i, j]]
        chosen = fit.for_members(available) if available else None
        if chosen is None:
            continue
        value = oof_by_subset[subset_key(chosen.members)][i]
        if not np.isfinite(value):  # fitted on fewer rows than this item's members: predict with the fit itself
            value = chosen.predict({m: table[i, names.index(m)] for m in chosen.members})
        oof[i] = value
    priced = np.isfinite(oof)
    fit.ensemble_cv = _scores(truth[priced], oof[priced], weights_all[priced], evaluation) if priced.any() else None
    return fit, oof


# --------------------------------------------------------------------------- the weights file


def weights_path(settings: Settings) -> Path:
    """`ensemble.weights_file`, else `DEALS_HOME/models/ensemble.json`."""
    configured = settings.ensemble.weights_file
    return Path(configured).expanduser() if configured else paths.models_dir() / "ensemble.json"


def save_fit(fit: EnsembleFit, path: str | os.PathLike[str]) -> Path:
    """Write the fit as JSON, atomically."""
    return atomic_write_text(path, fit.model_dump_json(indent=2) + "\n")


def load_fit(path: str | os.PathLike[str]) -> EnsembleFit:
    """The fit in a weights file; `DataError` when it is missing or not a valid fit."""
    target = Path(path)
    try:
        fit = EnsembleFit.model_validate_json(target.read_bytes())
    except FileNotFoundError as exc:
        raise DataError(f"{target}: no ensemble weights file") from exc
    except (OSError, ValidationError, ValueError) as exc:
        raise DataError(f"{target}: not a valid ensemble weights file ({str(exc).splitlines()[0]})") from exc
    if fit.version == 2 and not (fit.covers("knn") or fit.covers("ridge")):
        fit = fit.model_copy(update={"version": FIT_VERSION})  # v3 changed only what kNN and ridge estimates mean
    if fit.version != FIT_VERSION:
        raise DataError(f"{target}: weights file version {fit.version}, expected {FIT_VERSION}; refit with `{FIT_COMMAND}`")
    return fit


# --------------------------------------------------------------------------- members


def create_members(
    settings: Settings, names: Sequence[str], pricers: Mapping[str, Pricer] | None = None
) -> tuple[dict[str, Pricer], dict[str, str]]:
    """The members that can be created, and why each other one could not (logged once, here)."""
    created: dict[str, Pricer] = {}
    missing: dict[str, str] = {}
    for name in dict.fromkeys(names):
        if name == "ensemble":
            raise ConfigError("ensemble.members: the ensemble cannot be a member of itself")
        if pricers and name in pricers:
            created[name] = pricers[name]
            continue
        try:
            created[name] = create_pricer(name, settings)
        except (DealsError, ImportError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, ImportError) else str(exc)
            missing[name] = shorten(reason.splitlines()[0], 200, placeholder="...")
            # Not configured (no LLM key, no trained adapter) is the normal embedded default: the estimate's note and
            # `deals ensemble` say so; only an unexpected failure is worth a warning.
            level = logging.DEBUG if isinstance(exc, (ConfigError, PricingError)) else logging.WARNING
            log.log(level, "ensemble: member %s is unavailable (%s); the others are re-weighted", name, missing[name])
    return created, missing


def log_shape(estimate: Estimate) -> list[float] | None:
    """An estimate's log quantiles at `QUANTILE_LEVELS` minus its log median (None without a distribution)."""
    if [q.level for q in estimate.quantiles] != list(QUANTILE_LEVELS):
        return None
    logs = np.log([q.price for q in estimate.quantiles])
    return (logs - logs[QUANTILE_LEVELS.index(0.5)]).tolist()


# --------------------------------------------------------------------------- fitting from a file


class FitReport(BaseModel):
    """What `fit_from_file` did: the fit, where it went, and the members' and ensemble's scores."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    fit: EnsembleFit
    path: Path
    reports: list[Any] = Field(description="EvaluationReport per member, then the ensemble's cross-validated one")
    missing: dict[str, str] = Field(default_factory=dict, description="members that could not be created, and why")

    def table(self) -> Table:
        """The side-by-side table: each member, then the ensemble (k-fold CV on the same file)."""
        from deals.pricer.evaluate import render_table

        table = render_table(self.reports)
        table.title = f"Ensemble fit on {Path(self.fit.data_file or '?').name} (n={self.fit.n})"
        caption = [table.caption] if table.caption else []
        caption.append(
            f"ensemble row: {self.fit.folds}-fold cross-validation on the fit file (each item priced by a model that did not see it)"
        )
        if self.fit.cost_usd:
            caption.append(f"pricing the fit file cost ${self.fit.cost_usd:.4f}")
        if self.missing:
            caption.append("missing members: " + ", ".join(f"{k} ({v[:60]})" for k, v in self.missing.items()))
        table.caption = "\n".join(caption)
        return table


class _Recording(Pricer):
    """Passes calls to a member, remembers each description's estimate, and stops at a cost or item cap."""

    def __init__(self, inner: Pricer, *, max_usd: float | None = None, max_items: int | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: dict[str, Estimate] = {}
        self.spent = 0.0
        self.max_usd = max_usd
        self.max_items = max_items

    def _room(self, wanted: int) -> int:
        """How many more items fit under the caps (the cost of the next ones estimated from those so far)."""
        room = wanted
        if self.max_items is not None:
            room = min(room, self.max_items - len(self.seen))
        if self.max_usd is not None and self.inner.paid:
            if self.spent >= self.max_usd:
                return 0
            paid = sum(1 for e in self.seen.values() if e.cost_usd > 0)
            if paid:
                room = min(room, int((self.max_usd - self.spent) / (self.spent / paid)))
            elif not self.seen:
                room = min(room, 1)  # learn what one costs first
        return max(room, 0)

    def _take(self, texts: Sequence[str], estimates: Sequence[Estimate]) -> None:
        for text, estimate in zip(texts, estimates, strict=False):
            if isinstance(estimate, Estimate) and text not in self.seen:
                self.seen[text] = estimate
                self.spent += estimate.cost_usd

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        texts = list(descriptions)
        out: list[Estimate] = []
        while len(out) < len(texts):
            room = self._room(len(texts) - len(out))
            if room <= 0:
                raise BudgetExhausted(f"{self.name}: fit budget reached after {len(self.seen)} items (${self.spent:.4f})")
            chunk = texts[len(out) : len(out) + room]
            estimates = self.inner.price_many(chunk, exclude_exact=exclude_exact)
            self._take(chunk, estimates)
            out.extend(estimates)
        return out

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        if description in self.seen:
            return self.seen[description]
        return self.price_many([description], exclude_exact=exclude_exact)[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_from_file(
    settings: Settings,
    data_path: str | os.PathLike[str],
    limit: int | None = None,
    members: Sequence[str] | None = None,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    weights_file: str | os.PathLike[str] | None = None,
    pricers: Mapping[str, Pricer] | None = None,
    max_usd: float | None = None,
    max_items: int | None = None,
    progress: bool = True,
) -> FitReport:
    """Run the members over a priced file (held out: `exclude_exact=True`), fit, save, and report.

    `members` default `ensemble.members`; `pricers` ready member instances by name (not
    closed here). Members that cost money stop at `max_usd` (all of them together are
    held to it, each given what the others left) and every member at `max_items`; the
    rest of the file is fitted without them. The weights go to `weights_file`, else
    `ensemble.weights_file`, else `DEALS_HOME/models/ensemble.json`.
    """
    from deals.pricer.data import load_products
    from deals.pricer.evaluate import EvaluationReport, ItemResult, evaluate
    from deals.pricer.metrics import classify, compute_metrics

    source = Path(data_path)
    items = load_products(source)
    if limit is not None:
        items = items[:limit]
    if len(items) < max(MIN_ROWS, 2 * folds):
        raise DataError(f"{source}: {len(items)} priced items; fitting the ensemble needs at least {max(MIN_ROWS, 2 * folds)}")
    names = list(members) if members is not None else list(settings.ensemble.members)
    created, missing = create_members(settings, names, pricers)
    if not created:
        raise ConfigError("no ensemble member could be created: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    spent = 0.0
    try:
        reports: list[EvaluationReport] = []
        estimates: dict[str, list[float | None]] = {}
        shapes: dict[str, list[list[float] | None]] = {}
        for name, pricer in created.items():
            capped = max_items if name not in SHAPE_MEMBERS else None
            budget = None if max_usd is None else max(max_usd - spent, 0.0)
            recorder = _Recording(pricer, max_usd=budget, max_items=capped)
            reports.append(
                evaluate(recorder, items, settings.evaluation, name=name, limit=len(items), progress=progress, data_file=str(source))
            )
            spent += recorder.spent
            if budget is not None and recorder.spent > 0:
                log.info("ensemble fit: %s priced %d of %d items for $%.4f (cap $%.4f)", name, len(recorder.seen), len(items), recorder.spent, budget)
            found = [recorder.seen.get(item.text) for item in items]
            estimates[name] = [e.price if e is not None else None for e in found]
            if name in SHAPE_MEMBERS:
                shapes[name] = [log_shape(e) if e is not None else None for e in found]
    finally:
        for name, pricer in created.items():
            if not (pricers and name in pricers):
                pricer.close()

    fit, oof = fit_blend(
        estimates, [item.price for item in items], shapes=shapes, folds=folds, seed=seed, evaluation=settings.evaluation,
        data_file=str(source), data_sha256=_sha256(source),
    )  # fmt: skip
    fit.cost_usd = round(spent, 6)
    target = save_fit(fit, Path(weights_file) if weights_file else weights_path(settings))
    log.info("ensemble weights saved to %s", target)

    rows = [
        ItemResult(
            title=item.title, truth=item.price, estimate=float(value), error=float(value) - item.price,
            outcome=classify(item.price, float(value), settings.evaluation),
        )  # fmt: skip
        for item, value in zip(items, oof.tolist(), strict=True)
        if math.isfinite(value)
    ]
    metrics = compute_metrics([r.truth for r in rows], [r.estimate for r in rows], settings.evaluation) if rows else None
    ensemble_report = EvaluationReport(
        pricer=f"ensemble ({folds}-fold CV)",
        n=len(rows),
        mae=metrics.mae if metrics else None,
        rmsle=metrics.rmsle if metrics else None,
        hit_rate=metrics.hit_rate if metrics else None,
        metrics=metrics,
        attempted=len(items),
        failures=len(items) - len(rows),
        seconds=sum(r.seconds for r in reports),
        items_per_s=len(items) / max(sum(r.seconds for r in reports), 1e-9),
        excluded_neighbours=max((r.excluded_neighbours for r in reports), default=0),
        tokens_in=sum(r.tokens_in for r in reports),
        tokens_out=sum(r.tokens_out for r in reports),
        cost_usd=sum(r.cost_usd for r in reports),
        data_file=str(source),
        settings=settings.evaluation,
        rows=rows,
    )
    return FitReport(fit=fit, path=target, reports=[*reports, ensemble_report], missing=missing)


__all__ = [
    "FIT_COMMAND",
    "FIT_VERSION",

    "EnsembleFit",
    "FitReport",
    "Scores",
    "SubsetFit",
    "create_members",
    "fit_blend",
    "fit_from_file",
    "load_fit",
    "log_shape",
    "save_fit",
    "subset_key",
    "weights_path",
]
