"""The ensemble pricer agent: a learned blend of whichever member pricers are available.

    pricer = create_pricer("ensemble", settings)        # registered as "ensemble"
    report = fit_from_file(settings, "data/eval/validation.jsonl")   # learn the weights

**Model.** In log-price space, for the members M that answered::

    log(estimate) = c + sum_i w_i * log(price_i) [+ b * spread]     w_i >= 0, sum_i w_i = 1

where `spread` is the standard deviation of the members' log prices (how much they
disagree). The weights, the intercept c and b are LEARNED on a priced file, never set
by hand (`fit_ensemble`, `fit_from_file`). Two losses are tried: least squares of the
log error (exact: every support of the simplex is solved by its KKT system and the
best feasible one kept) and the mean absolute error in dollars (Nelder-Mead from the
least-squares solution, weights through a softmax). With and without the spread
feature, that is up to four variants per member set; k-fold cross-validation on the
fit file picks the variant with the lowest out-of-fold MAE (the number pricers are
judged by) and that variant is refitted on all rows.

**Missing members.** At fit time a model is fitted, as above, for EVERY non-empty
subset of the members (cheap: 2^m - 1 small fits, each on the rows where all of its
members answered), and all are saved. At run time the subset that actually answered
for an item is looked up and its own fit is used: that is the re-weighting when a
member is missing (its creation failed: no LLM key, no trained adapter; or it failed
for this item). When no fit covers exactly the members that answered, the largest
fitted subset of them is used (ties: the lower cross-validated MAE) and the others
are recorded but unused. Every estimate records each member's price in `parts` and
says in `note` which members were missing and which fit weighted the rest.

**No fit.** Without a weights file the ensemble takes the geometric mean of the
members that answered and says so in the note.

**Weights file.** JSON at `ensemble.weights_file`, else `DEALS_HOME/models/ensemble.json`
(written atomically): the data file's name and sha256, n, the fit date, folds, each
member's scores and the ensemble's cross-validated scores on that file, and one entry
per member subset (weights, intercept, spread coefficient, loss, n, CV scores).
`fit_from_file` runs the members over the file through the evaluation harness with
`exclude_exact=True`, so no item is priced from itself.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deals.framework import paths
from deals.framework.files import atomic_write_text
from deals.framework.errors import ConfigError, DataError, DealsError, PricingError
from deals.framework.models import Estimate, Neighbour, utcnow
from deals.framework.settings import EvaluationSettings
from deals.pricer.base import Pricer, clamp, create_pricer, register

if TYPE_CHECKING:
    from rich.table import Table

    from deals.framework.settings import PricingSettings, Settings
    from deals.pricer.evaluate import EvaluationReport

log = logging.getLogger("deals.agents.ensemble")

FIT_VERSION = 1
DEFAULT_FOLDS = 5
MIN_ROWS = 10  # rows (items every member of a subset answered) needed to fit that subset
FIT_COMMAND = "deals evaluate --fit-ensemble --data FILE"

Loss = Literal["log_l2", "mae"]
LOSSES: tuple[Loss, ...] = ("log_l2", "mae")


# --------------------------------------------------------------------------- the fitted model


class Scores(BaseModel):
    """Accuracy of a set of estimates (see deals.pricer.metrics for the definitions)."""

    n: int
    mae: float
    rmsle: float
    hit_rate: float


class SubsetFit(BaseModel):
    """The blend for one set of members."""

    members: list[str] = Field(description="sorted member names")
    weights: dict[str, float] = Field(description="non-negative, summing to 1")
    intercept: float
    spread: float = Field(0.0, description="coefficient of the members' log spread (0 when the feature is not used)")
    uses_spread: bool = False
    loss: Loss = "log_l2"
    n: int = Field(description="rows it was fitted on")
    cv: Scores = Field(description="out-of-fold scores of this variant on those rows")

    def predict(self, prices: Mapping[str, float]) -> float:
        """The blended price for these members' prices (all of `members` must be present)."""
        logs = np.array([math.log(prices[m]) for m in self.members])
        weights = np.array([self.weights[m] for m in self.members])
        value = self.intercept + float(weights @ logs)
        if self.uses_spread:
            value += self.spread * float(logs.std())
        return math.exp(min(value, 700.0))


class EnsembleFit(BaseModel):
    """What `fit_ensemble` learned, as saved in the weights file."""

    version: int = FIT_VERSION
    method: str = (
        "log(estimate) = intercept + sum(w_i log price_i) [+ spread_coef * std(log prices)], w_i >= 0, sum w_i = 1; "
        "loss and spread feature chosen per member subset by k-fold CV MAE"
    )
    members: list[str]
    data_file: str | None = None
    data_sha256: str | None = None
    n: int = Field(description="items in the fit file")
    folds: int
    seed: int = 0
    fitted_at: datetime = Field(default_factory=utcnow)
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


def subset_key(members: Sequence[str]) -> str:
    return "+".join(sorted(members))


# --------------------------------------------------------------------------- fitting


def _scores(truth: np.ndarray, estimate: np.ndarray, evaluation: EvaluationSettings) -> Scores:
    from deals.pricer.metrics import classify

    hits = [classify(t, e, evaluation) == "hit" for t, e in zip(truth.tolist(), estimate.tolist(), strict=True)]
    return Scores(
        n=int(truth.size),
        mae=float(np.abs(estimate - truth).mean()),
        rmsle=float(np.sqrt(np.mean((np.log1p(estimate) - np.log1p(truth)) ** 2))),
        hit_rate=float(np.mean(hits)),
    )


def _spread(logs: np.ndarray) -> np.ndarray:
    return logs.std(axis=1)


def _solve_log_l2(logs: np.ndarray, target: np.ndarray, spread: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """Least squares of the log error on the simplex, exactly: the best feasible support's KKT solution."""
    m = logs.shape[1]
    best: tuple[float, np.ndarray, float, float] | None = None
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            cols = logs[:, support] if spread is None else np.column_stack([logs[:, support], spread])
            centred = cols - cols.mean(axis=0)
            y = target - target.mean()
            p = cols.shape[1]
            ones = np.zeros(p)
            ones[:size] = 1.0
            kkt = np.zeros((p + 1, p + 1))
            kkt[:p, :p] = 2.0 * centred.T @ centred
            kkt[:p, p] = ones
            kkt[p, :p] = ones
            rhs = np.concatenate([2.0 * centred.T @ y, [1.0]])
            theta = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:p]
            w = theta[:size]
            if (w < -1e-9).any():
                continue
            w = np.clip(w, 0.0, None)
            w = w / w.sum()
            weights = np.zeros(m)
            weights[list(support)] = w
            b = float(theta[size]) if spread is not None else 0.0
            fitted = logs @ weights + (b * spread if spread is not None else 0.0)
            intercept = float(np.mean(target - fitted))
            loss = float(np.sum((target - intercept - fitted) ** 2))
            if best is None or loss < best[0] - 1e-12:
                best = (loss, weights, intercept, b)
    assert best is not None  # every single-member support is feasible
    return best[1], best[2], best[3]


def _solve_mae(
    logs: np.ndarray, truth: np.ndarray, spread: np.ndarray | None, start: tuple[np.ndarray, float, float]
) -> tuple[np.ndarray, float, float]:
    """Mean absolute dollar error, by Nelder-Mead from `start`; weights = softmax(z) keeps them on the simplex."""
    from scipy.optimize import minimize

    m = logs.shape[1]
    w0, c0, b0 = start

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, float, float]:
        z = theta[:m] - theta[:m].max()
        w = np.exp(z) / np.exp(z).sum()
        return w, float(theta[m]), float(theta[m + 1]) if spread is not None else 0.0

    def loss(theta: np.ndarray) -> float:
        w, c, b = unpack(theta)
        value = c + logs @ w + (b * spread if spread is not None else 0.0)
        return float(np.mean(np.abs(np.exp(np.minimum(value, 50.0)) - truth)))

    x0 = np.concatenate([np.log(np.maximum(w0, 1e-3)), [c0], [b0] if spread is not None else []])
    result = minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 4000})
    theta = result.x if result.fun <= loss(x0) else x0
    w, c, b = unpack(theta)
    w = np.where(w < 1e-6, 0.0, w)
    return w / w.sum(), c, b


def _fit_variant(
    logs: np.ndarray, truth: np.ndarray, loss: Loss, use_spread: bool
) -> tuple[np.ndarray, float, float]:
    spread = _spread(logs) if use_spread else None
    target = np.log(truth)
    start = _solve_log_l2(logs, target, spread)
    if loss == "log_l2":
        return start
    return _solve_mae(logs, truth, spread, start)


def _predict(logs: np.ndarray, params: tuple[np.ndarray, float, float], use_spread: bool) -> np.ndarray:
    w, c, b = params
    value = c + logs @ w + (b * _spread(logs) if use_spread else 0.0)
    return np.exp(np.minimum(value, 700.0))


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % folds


def _fit_all(
    member_estimates: Mapping[str, Sequence[float | None]],
    truths: Sequence[float],
    *,
    folds: int,
    seed: int,
    losses: Sequence[Loss],
    spread: bool | Literal["auto"],
    evaluation: EvaluationSettings,
) -> tuple[EnsembleFit, np.ndarray]:
    names = list(member_estimates)
    if not names:
        raise ValueError("fit_ensemble: no member estimates given")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    truth = np.asarray(truths, dtype=np.float64)
    if truth.ndim != 1 or not np.all(np.isfinite(truth)) or (truth <= 0).any():
        raise ValueError("fit_ensemble: true prices must be finite and positive")
    n = truth.size
    table = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names):
        values = list(member_estimates[name])
        if len(values) != n:
            raise ValueError(f"fit_ensemble: {len(values)} estimates of {name!r} for {n} true prices")
        column = np.array([np.nan if v is None else float(v) for v in values])
        column[~np.isfinite(column) | (column <= 0)] = np.nan
        table[:, j] = column
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
            y = truth[rows]
            variants = [(loss, s) for loss in losses for s in ((False, True) if spread == "auto" else (bool(spread),))]
            variants = [(loss, s) for loss, s in variants if not (s and size == 1)] or [(losses[0], False)]
            best: tuple[float, Loss, bool, np.ndarray] | None = None
            for loss, use_spread in dict.fromkeys(variants):
                oof = np.empty(rows.size)
                for fold in range(folds):
                    test = fold_of[rows] == fold
                    if not test.any():
                        continue
                    params = _fit_variant(logs[~test], y[~test], loss, use_spread)
                    oof[test] = _predict(logs[test], params, use_spread)
                mae = float(np.abs(oof - y).mean())
                if best is None or mae < best[0] - 1e-9:
                    best = (mae, loss, use_spread, oof)
            assert best is not None
            _, loss, use_spread, oof = best
            w, c, b = _fit_variant(logs, y, loss, use_spread)
            key = subset_key(members)
            order = sorted(range(size), key=lambda i: members[i])
            subsets[key] = SubsetFit(
                members=sorted(members),
                weights={members[i]: round(float(w[i]), 6) for i in order},
                intercept=c,
                spread=b,
                uses_spread=use_spread,
                loss=loss,
                n=int(rows.size),
                cv=_scores(y, oof, evaluation),
            )
            full = np.full(n, np.nan)
            full[rows] = oof
            oof_by_subset[key] = full

    if not subsets:
        raise ValueError(f"fit_ensemble: no member set answered on at least {max(MIN_ROWS, 2 * folds)} items")
    member_scores = {}
    for j, name in enumerate(names):
        rows = answered[:, j]
        if rows.any():
            member_scores[name] = _scores(truth[rows], table[rows, j], evaluation)
    fit = EnsembleFit(
        members=names, n=n, folds=folds, seed=seed, member_scores=member_scores, ensemble_cv=None, subsets=subsets
    )
    # Out-of-fold ensemble: each item from the fit its answering members get at run time.
    oof = np.full(n, np.nan)
    for i in range(n):
        available = [names[j] for j in range(len(names)) if answered[i, j]]
        chosen = fit.for_members(available) if available else None
        if chosen is None:
            continue
        key = subset_key(chosen.members)
        value = oof_by_subset[key][i]
        if not np.isfinite(value):  # fitted with fewer rows than this item's members: predict with the fit itself
            value = chosen.predict({m: table[i, names.index(m)] for m in chosen.members})
        oof[i] = value
    priced = np.isfinite(oof)
    fit.ensemble_cv = _scores(truth[priced], oof[priced], evaluation) if priced.any() else None
    return fit, oof


def fit_ensemble(
    member_estimates: Mapping[str, Sequence[float | None]],
    truths: Sequence[float],
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    losses: Sequence[Loss] = LOSSES,
    spread: bool | Literal["auto"] = "auto",
    evaluation: EvaluationSettings | None = None,
    data_file: str | None = None,
    data_sha256: str | None = None,
) -> EnsembleFit:
    """Learn the blend from each member's estimates of the same items (None = no answer) and the true prices.

    `losses` and `spread` name the variants cross-validation chooses from ("auto": with
    and without the spread feature). Raises `ValueError` on inconsistent input.
    """
    fit, _ = _fit_all(
        member_estimates, truths, folds=folds, seed=seed, losses=losses, spread=spread,
        evaluation=evaluation or EvaluationSettings(),
    )  # fmt: skip
    fit.data_file, fit.data_sha256 = data_file, data_sha256
    return fit


# --------------------------------------------------------------------------- the weights file


BUNDLED_FIT = Path(__file__).resolve().parent.parent / "data" / "starter" / "ensemble.json"


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
            missing[name] = reason.splitlines()[0][:200]
            # Not configured (no LLM key, no trained adapter) is the normal embedded default: info, not a warning.
            level = logging.INFO if isinstance(exc, (ConfigError, PricingError)) else logging.WARNING
            log.log(level, "ensemble: member %s is unavailable (%s); the others are re-weighted", name, missing[name])
    return created, missing


# --------------------------------------------------------------------------- the pricer


class EnsemblePricer(Pricer):
    """Blends its members' estimates with the learned fit (see the module docstring)."""

    name = "ensemble"
    thread_safe = False

    def __init__(
        self,
        members: Mapping[str, Pricer],
        pricing: PricingSettings,
        *,
        fit: EnsembleFit | None = None,
        missing: Mapping[str, str] | None = None,
        fit_problem: str | None = None,
        weights_file: str | None = None,
        owned: Sequence[str] | None = None,
    ) -> None:
        """`owned`: names of the members this ensemble closes (default: all of them)."""
        if not members:
            reasons = "; ".join(f"{k}: {v}" for k, v in (missing or {}).items()) or "none configured"
            raise PricingError(f"the ensemble has no member that can price ({reasons})")
        self.members = dict(members)
        self.pricing = pricing
        self.fit = fit
        self.missing = dict(missing or {})
        self.fit_problem = fit_problem
        self.weights_file = weights_file or "ensemble.json"
        self._owned = list(self.members) if owned is None else [name for name in owned if name in self.members]

    def _member_estimates(self, name: str, pricer: Pricer, texts: list[str], exclude_exact: bool) -> list[Estimate | str]:
        """One member's estimates, or the reason it failed, per item."""
        try:
            estimates = pricer.price_many(texts, exclude_exact=exclude_exact)
            if len(estimates) != len(texts) or not all(isinstance(e, Estimate) for e in estimates):
                raise PricingError(f"returned {len(estimates)} results for {len(texts)} items")
            return list(estimates)
        except Exception as exc:  # noqa: BLE001 - a member's failure costs only that member
            if len(texts) == 1:
                log.warning("ensemble: %s failed (%s: %s); dropped for this item", name, type(exc).__name__, exc)
                return [f"{type(exc).__name__}: {exc}"]
            log.warning("ensemble: %s failed on a batch of %d (%s); trying its items one by one", name, len(texts), exc)
        out: list[Estimate | str] = []
        for text in texts:
            try:
                out.append(pricer.price(text, exclude_exact=exclude_exact))
            except Exception as exc:  # noqa: BLE001
                out.append(f"{type(exc).__name__}: {exc}")
        failed = sum(isinstance(o, str) for o in out)
        if failed:
            log.warning("ensemble: %s failed on %d of %d items; dropped for those", name, failed, len(texts))
        return out

    def _combine(self, answers: dict[str, Estimate], failures: dict[str, str]) -> Estimate:
        prices = {name: e.price for name, e in answers.items()}
        notes = []
        absent = {**self.missing, **failures}
        if absent:
            notes.append("missing: " + ", ".join(f"{name} ({why[:120]})" for name, why in absent.items()))
        chosen = self.fit.for_members(list(prices)) if self.fit else None
        if chosen is not None:
            value = chosen.predict(prices)
            weights = ", ".join(f"{m} {w:.2f}" for m, w in chosen.weights.items())
            how = f"learned weights {weights} (fit for {subset_key(chosen.members)} from {self.weights_file})"
            if absent:
                how += "; the rest re-weighted by that subset's own fit"
            unused = sorted(set(prices) - set(chosen.members))
            if unused:
                how += f"; not in the fit, recorded but unused: {', '.join(unused)}"
            notes.append(how)
        else:
            value = math.exp(float(np.mean([math.log(p) for p in prices.values()])))
            if self.fit is not None:
                why = f"the fit in {self.weights_file} covers none of {', '.join(prices)}"
            else:
                why = self.fit_problem or f"no fitted weights (run `{FIT_COMMAND}`)"
            notes.append(f"{why}: geometric mean of {', '.join(prices)}")
        neighbours: list[Neighbour] = next((e.neighbours for e in answers.values() if e.neighbours), [])
        return Estimate(
            price=round(clamp(value, self.pricing.min_estimate, self.pricing.max_estimate), 2),
            pricer=self.name,
            parts=prices,
            neighbours=neighbours,
            note="; ".join(notes),
            excluded=max((e.excluded for e in answers.values()), default=0),
            tokens_in=sum(e.tokens_in for e in answers.values()),
            tokens_out=sum(e.tokens_out for e in answers.values()),
            cost_usd=sum(e.cost_usd for e in answers.values()),
        )

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        texts = list(descriptions)
        if not texts:
            return []
        per_member = {name: self._member_estimates(name, p, texts, exclude_exact) for name, p in self.members.items()}
        out: list[Estimate] = []
        problems: list[str] = []
        for i in range(len(texts)):
            answers = {name: r[i] for name, r in per_member.items() if isinstance(r[i], Estimate)}
            failures = {name: r[i] for name, r in per_member.items() if isinstance(r[i], str)}
            if not answers:
                problems.append(f"item #{i}: every member failed ({'; '.join(f'{k}: {v[:100]}' for k, v in failures.items())})")
                continue
            out.append(self._combine(answers, failures))  # type: ignore[arg-type]
        if problems:
            raise PricingError(f"ensemble: {len(problems)} of {len(texts)} items could not be priced; {problems[0]}")
        return out

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return self.price_many([description], exclude_exact=exclude_exact)[0]

    def close(self) -> None:
        for name in self._owned:
            pricer = self.members[name]
            try:
                pricer.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %r failed", pricer, exc_info=True)
        self._owned = []


def _load_fit_quietly(path: Path) -> tuple[EnsembleFit | None, str | None]:
    if not path.exists():
        return None, None
    try:
        return load_fit(path), None
    except DataError as exc:
        log.warning("ensemble: %s; using the geometric mean of the members", exc)
        return None, f"weights file {path.name} unusable"


@register("ensemble")
def _create(
    settings: Settings,
    *,
    members: Sequence[str] | None = None,
    pricers: Mapping[str, Pricer] | None = None,
    weights_file: str | os.PathLike[str] | None = None,
    **_: object,
) -> EnsemblePricer:
    """The ensemble of `members` (default `ensemble.members`) that can be created, with the saved fit if any.

    `pricers`: ready member instances by name (used instead of creating them; not closed
    with the ensemble).
    """
    names = list(members) if members is not None else list(settings.ensemble.members)
    path = Path(weights_file) if weights_file else weights_path(settings)
    if not path.exists() and not weights_file and not settings.ensemble.weights_file and BUNDLED_FIT.exists():
        path = BUNDLED_FIT  # the fit shipped with the starter catalogue (kNN + ridge on data/eval/validation.jsonl)
    created, missing = create_members(settings, names, pricers)
    fit, problem = _load_fit_quietly(path)
    if fit is None and problem is None:
        log.info("ensemble: no fitted weights at %s; using the geometric mean (fit with `%s`)", path, FIT_COMMAND)
    owned = [name for name in created if not (pricers and name in pricers)]
    return EnsemblePricer(
        created, settings.pricing, fit=fit, missing=missing, fit_problem=problem, weights_file=path.name, owned=owned
    )


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
        if self.missing:
            caption.append("missing members: " + ", ".join(f"{k} ({v[:60]})" for k, v in self.missing.items()))
        table.caption = "\n".join(caption)
        return table


class _Recording(Pricer):
    """Passes calls to a member and remembers each description's estimate."""

    def __init__(self, inner: Pricer) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: dict[str, float] = {}

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        estimates = self.inner.price_many(descriptions, exclude_exact=exclude_exact)
        for text, estimate in zip(descriptions, estimates, strict=False):
            if isinstance(estimate, Estimate):
                self.seen[text] = estimate.price
        return estimates

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        estimate = self.inner.price(description, exclude_exact=exclude_exact)
        self.seen[description] = estimate.price
        return estimate


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
    progress: bool = True,
) -> FitReport:
    """Run the members over a priced file (held out: `exclude_exact=True`), fit, save, and report.

    `members` default `ensemble.members`; `pricers` ready member instances by name (not
    closed here). The weights go to `weights_file`, else `ensemble.weights_file`, else
    `DEALS_HOME/models/ensemble.json`.
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
        raise PricingError("no ensemble member could be created: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    try:
        reports: list[EvaluationReport] = []
        estimates: dict[str, list[float | None]] = {}
        for name, pricer in created.items():
            recorder = _Recording(pricer)
            reports.append(
                evaluate(recorder, items, settings.evaluation, name=name, limit=len(items), progress=progress, data_file=str(source))
            )
            estimates[name] = [recorder.seen.get(item.text) for item in items]
    finally:
        for name, pricer in created.items():
            if not (pricers and name in pricers):
                pricer.close()

    fit, oof = _fit_all(
        estimates, [item.price for item in items], folds=folds, seed=seed, losses=LOSSES, spread="auto",
        evaluation=settings.evaluation,
    )  # fmt: skip
    fit.data_file, fit.data_sha256 = str(source), _sha256(source)
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
    "FIT_VERSION",
    "EnsembleFit",
    "EnsemblePricer",
    "FitReport",
    "Scores",
    "SubsetFit",
    "create_members",
    "fit_ensemble",
    "fit_from_file",
    "load_fit",
    "save_fit",
    "subset_key",
    "weights_path",
]
