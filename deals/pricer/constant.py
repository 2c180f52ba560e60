"""The constant pricer: every product is worth the catalogue's median price.

The baseline any real pricer must beat. The median is taken from the priced catalogue
in the vector index (or given explicitly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deals.framework.errors import PricingError
from deals.framework.models import Estimate
from deals.pricer.base import Pricer, register

if TYPE_CHECKING:
    from deals.framework.settings import Settings


class ConstantPricer(Pricer):
    name = "constant"

    def __init__(self, value: float) -> None:
        if not value > 0:
            raise PricingError(f"constant price must be positive, got {value!r}")
        self.value = float(value)

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return Estimate(price=round(self.value, 2), pricer=self.name, note="catalogue median")


@register("constant")
def _create(settings: Settings, *, value: float | None = None, progress: bool = True, **_: object) -> ConstantPricer:
    if value is None:
        from deals.pricer.catalogue import open_catalogue

        prices = open_catalogue(settings, progress=progress).prices()
        if prices.size == 0:
            raise PricingError("the catalogue is empty: nothing to take a median of")
        value = float(np.median(prices))
    return ConstantPricer(value)
