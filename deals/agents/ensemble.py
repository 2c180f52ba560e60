"""The ensemble pricer agent: the calibrated local model, joined by the LLM pricers that are fitted.

    pricer = create_pricer("ensemble", settings)        # registered as "ensemble"

**Members** (`ensemble.members`, default local, frontier, specialist). The local model
(`deals.pricer.local`) always answers offline and carries its own calibrated
distribution; the frontier (an LLM with retrieved neighbours) and the specialist (the
fine-tuned model) join when they are configured. How they are blended, and how wide the
blend's interval is, was LEARNED on a priced file (`deals.pricer.blend`); the weights
file lives at `ensemble.weights_file`, else `DEALS_HOME/models/ensemble.json`.

**No member is paid for and ignored.** A configured member that no fitted subset uses
is fitted on first use: with `ensemble.auto_fit` the members price the bundled
validation split (held-out new products), the paid ones stopping at
`ensemble.auto_fit_max_usd` dollars and `ensemble.auto_fit_max_items` items, and the fit
is saved and used (the log says what it cost). With auto fit off (or when the fit
fails) such a member is not called at all, and a warning says so once. Only when no
member is fitted or calibrated at all (say, `members: [knn, ridge]` and no weights file)
are the members averaged (geometric mean), with a warning.

**Run time.** For each item the members that answered are looked up in the fit: the
subset's blend gives the centre and its conformal offsets (around the local model's own
shape) the distribution. Only the local model answered (the offline default, or the
others failed for this item): its estimate is used as is. A member that fails for one
item costs only itself for that item; the note says which members were missing. Every
estimate records each member's price in `parts` (with the kNN and ridge estimates the
local model started from) and what the LLM calls behind it cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from textwrap import shorten
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deals.framework.errors import DataError, DealsError, PricingError
from deals.framework.files import atomic_write_text
from deals.framework.models import Estimate, Neighbour
from deals.pricer.base import Pricer, clamp, register
from deals.pricer.blend import (
    FIT_COMMAND,
    SHAPE_MEMBERS,
    EnsembleFit,
    create_members,
    fit_from_file,
    load_fit,
    log_shape,
    subset_key,
    weights_path,
)
from deals.pricer.intervals import with_quantiles

if TYPE_CHECKING:
    from deals.framework.settings import PricingSettings, Settings

log = logging.getLogger("deals.agents.ensemble")

_warned: set[str] = set()


def validation_file() -> Path:
    """The held-out split bundled with the package (auto fits run on it)."""
    from deals.pricer.catalogue import STARTER_DIR, STARTER_VALIDATION

    return STARTER_DIR / STARTER_VALIDATION


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
        parts = dict(prices)
        for estimate in answers.values():
            for key, value in estimate.parts.items():
                parts.setdefault(key, value)
        notes = []
        absent = {**self.missing, **failures}
        if absent:
            notes.append("missing: " + ", ".join(f"{name} ({shorten(why, 200, placeholder='...')})" for name, why in absent.items()))
        shape_member = next((m for m in SHAPE_MEMBERS if m in answers), None)
        chosen = None
        if self.fit is not None and set(answers) - set(SHAPE_MEMBERS):
            chosen = self.fit.for_members(list(prices))
        base: Estimate
        if chosen is not None:
            weights = ", ".join(f"{m} {w:.2f}" for m, w in chosen.weights.items())
            how = f"learned weights {weights} (fit for {subset_key(chosen.members)} from {self.weights_file})"
            if absent:
                how += "; the rest re-weighted by that subset's own fit"
            unused = sorted(set(prices) - set(chosen.members))
            if unused:
                how += f"; not in the fit, recorded but unused: {', '.join(unused)}"
            notes.append(how)
            shape = log_shape(answers[chosen.shape]) if chosen.shape and chosen.shape in answers else None
            logs = chosen.log_quantiles(prices, shape)
            base = Estimate(price=round(clamp(chosen.predict(prices), self.pricing.min_estimate, self.pricing.max_estimate), 2), pricer=self.name)
            if logs is not None:
                base = with_quantiles(base, chosen.levels, logs, self.pricing)
        elif shape_member is not None:
            own = answers[shape_member]
            base = own.model_copy(update={"pricer": self.name, "note": None})
            others = sorted(set(answers) - {shape_member})
            if others:
                notes.append(f"no fit covers {', '.join(others)}: recorded but unused (fit with `{FIT_COMMAND}`)")
        else:
            value = math.exp(float(np.mean([math.log(p) for p in prices.values()])))
            notes.append(f"no fitted weights (fit with `{FIT_COMMAND}`): geometric mean of {', '.join(prices)}")
            base = Estimate(price=round(clamp(value, self.pricing.min_estimate, self.pricing.max_estimate), 2), pricer=self.name)
        neighbours: list[Neighbour] = next((e.neighbours for e in answers.values() if e.neighbours), [])
        return base.model_copy(
            update={
                "pricer": self.name,
                "parts": parts,
                "neighbours": neighbours,
                "note": "; ".join(notes) or None,
                "excluded": max((e.excluded for e in answers.values()), default=0),
                "tokens_in": sum(e.tokens_in for e in answers.values()),
                "tokens_out": sum(e.tokens_out for e in answers.values()),
                "cost_usd": sum(e.cost_usd for e in answers.values()),
            }
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


def _load_fit_quietly(path: Path) -> EnsembleFit | None:
    if not path.exists():
        return None
    try:
        return load_fit(path)
    except DataError as exc:
        log.warning("ensemble: %s; it will be refitted or ignored", exc)
        return None


def _uncovered(fit: EnsembleFit | None, members: Sequence[str]) -> list[str]:
    """Members no fitted subset uses (the calibrated local model needs no fit of its own)."""
    return [m for m in members if m not in SHAPE_MEMBERS and (fit is None or not fit.covers(m))]


def auto_fit(settings: Settings, members: Mapping[str, Pricer], path: Path) -> EnsembleFit | None:
    """Fit `members` on the bundled validation split under the configured caps; None when that fails.

    Tried once per (members, data): an attempt that leaves a member uncovered (its calls
    failed, or the cost cap came first) is recorded beside the weights file, so that every
    later start does not pay for the same fit again; `deals ensemble fit` refits by hand.
    """
    config = settings.ensemble
    data = Path(config.auto_fit_data) if config.auto_fit_data else validation_file()
    tried = path.with_name(path.stem + ".auto-fit-tried.json")
    attempt = {"members": sorted(members), "data": str(data), "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest() if data.exists() else None}
    try:
        if json.loads(tried.read_text()) == attempt:
            log.warning("ensemble: the automatic fit of %s on %s was tried before and left members unfitted; not paying again (fit with `%s`)",
                        ", ".join(members), data.name, FIT_COMMAND)  # fmt: skip
            return None
    except (OSError, ValueError):
        pass  # never tried (or an unreadable record): try
    fit = _auto_fit(settings, members, path, data)
    if _uncovered(fit, list(members)):
        atomic_write_text(tried, json.dumps(attempt))
    return fit


def _auto_fit(settings: Settings, members: Mapping[str, Pricer], path: Path, data: Path) -> EnsembleFit | None:
    config = settings.ensemble
    log.warning(
        "ensemble: fitting %s on %s first (at most %d items and $%.2f for the LLM members; set ensemble.auto_fit: false to skip)",
        ", ".join(members), data.name, config.auto_fit_max_items, config.auto_fit_max_usd,
    )  # fmt: skip
    try:
        report = fit_from_file(
            settings, data, members=list(members), pricers=members, weights_file=path,
            max_usd=config.auto_fit_max_usd, max_items=config.auto_fit_max_items, progress=False,
        )  # fmt: skip
    except (DealsError, ValueError, OSError) as exc:
        log.warning("ensemble: the automatic fit failed (%s)", exc)
        return None
    fitted = ", ".join(f"{key} (n={fit.n}, MAE ${fit.cv.mae:,.2f})" for key, fit in sorted(report.fit.subsets.items()))
    log.warning("ensemble: fitted %s for $%.4f; saved to %s", fitted, report.fit.cost_usd, report.path)
    return report.fit


@register("ensemble")
def _create(
    settings: Settings,
    *,
    members: Sequence[str] | None = None,
    pricers: Mapping[str, Pricer] | None = None,
    weights_file: str | os.PathLike[str] | None = None,
    **_: object,
) -> EnsemblePricer:
    """The ensemble of `members` (default `ensemble.members`) that can be created, with its fit.

    `pricers`: ready member instances by name (used instead of creating them; not closed
    with the ensemble).
    """
    names = list(members) if members is not None else list(settings.ensemble.members)
    path = Path(weights_file) if weights_file else weights_path(settings)
    created, missing = create_members(settings, names, pricers)
    fit = _load_fit_quietly(path)
    uncovered = _uncovered(fit, list(created))
    if uncovered and settings.ensemble.auto_fit:
        fit = auto_fit(settings, created, path) or fit
        uncovered = _uncovered(fit, list(created))
    if uncovered and len(uncovered) < len(created):  # something fitted or calibrated remains: the rest is not called
        for name in uncovered:
            reason = "no fitted weights use it" + ("" if settings.ensemble.auto_fit else " and ensemble.auto_fit is off") + "; not called"
            if name not in _warned:
                _warned.add(name)
                log.warning("ensemble: member %s is configured but %s (fit with `%s`)", name, reason, FIT_COMMAND)
            missing[name] = reason
            pricer = created.pop(name)
            if not (pricers and name in pricers):
                pricer.close()
    elif uncovered:
        log.warning("ensemble: no fitted weights for %s; their geometric mean is used (fit with `%s`)", ", ".join(uncovered), FIT_COMMAND)
    owned = [name for name in created if not (pricers and name in pricers)]
    return EnsemblePricer(created, settings.pricing, fit=fit, missing=missing, weights_file=path.name, owned=owned)


__all__ = ["EnsemblePricer", "auto_fit", "validation_file"]
