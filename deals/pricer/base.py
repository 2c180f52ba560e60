"""The `Pricer` interface every pricer implements, and the registry that names them.

A pricer turns a product description into an `Estimate`. Pricers that retrieve
neighbours from the catalogue honour `exclude_exact=True` (evaluation sets it) by
dropping catalogue items whose text is the item being priced.

Pricers register a factory under a name with `@register("name")`; the CLI and the
planner build them with `create_pricer(name, settings)`. Pricers living outside this
subpackage (frontier, specialist, ensemble agents) register when `deals.agents` is
imported.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from deals.framework.errors import PricingError
from deals.framework.models import Estimate

if TYPE_CHECKING:
    from deals.framework.settings import Settings


class Pricer(ABC):
    """Estimates what a product is worth from its description."""

    name: str = "pricer"
    #: True when `price_many` may run from several threads at once (the planner then
    #: prices batches in parallel); pricers sharing one model or client leave it False.
    thread_safe: bool = False
    #: True when pricing costs money (an LLM API): fits cap such members in dollars, and
    #: only them (a $0 budget left by a paid member never stops a free one).
    paid: bool = False

    @abstractmethod
    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        """Estimate one product."""

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        """Estimate several products (pricers that batch override this)."""
        return [self.price(text, exclude_exact=exclude_exact) for text in descriptions]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, models, connections."""


def clamp(value: float, low: float, high: float) -> float:
    """Clamp an estimate into the sane range; non-finite values are a `PricingError`."""
    if not math.isfinite(value):
        raise PricingError(f"non-finite estimate {value!r}")
    return min(max(value, low), high)


PricerFactory = Callable[..., Pricer]
_REGISTRY: dict[str, PricerFactory] = {}
# Pricers defined outside this subpackage; imported on first use so the CLI stays fast.
_LAZY: dict[str, str] = {
    "knn": "deals.pricer.knn",
    "constant": "deals.pricer.constant",
    "ridge": "deals.pricer.ridge",
    "local": "deals.pricer.local",
}


_UNAVAILABLE: dict[str, Callable[[Settings], str | None]] = {}


def register(name: str, *, unavailable: Callable[[Settings], str | None] | None = None) -> Callable[[PricerFactory], PricerFactory]:
    """Register `factory(settings, **options) -> Pricer` under `name`.

    `unavailable(settings)`: why the pricer cannot be made with these settings (a key, a
    trained model missing), or None; cheap, opens and sends nothing (`deals ensemble`).
    """

    def wrap(factory: PricerFactory) -> PricerFactory:
        _REGISTRY[name] = factory
        if unavailable is not None:
            _UNAVAILABLE[name] = unavailable
        return factory

    return wrap


def register_lazy(name: str, module: str) -> None:
    """Name a module that registers pricer `name` when imported."""
    _LAZY.setdefault(name, module)


def pricer_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY))


def _load(name: str) -> None:
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])


def pricer_unavailable(name: str, settings: Settings) -> str | None:
    """Why pricer `name` cannot be made with `settings` (its registered check), or None when it can."""
    _load(name)
    if name not in _REGISTRY:
        return f"unknown pricer {name!r}"
    check = _UNAVAILABLE.get(name)
    return check(settings) if check else None


def create_pricer(name: str, settings: Settings, **options: Any) -> Pricer:
    """Build the pricer registered as `name`."""
    _load(name)
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise PricingError(f"unknown pricer {name!r}; known: {', '.join(pricer_names())}") from None
    return factory(settings, **options)


__all__ = ["Pricer", "clamp", "create_pricer", "pricer_names", "pricer_unavailable", "register", "register_lazy"]
