"""deals: an autonomous multi-agent deal-discovery daemon.

Public API (pinned by a test):

    Settings, load_settings          configuration
    Product, Deal, Estimate, ...     the typed records passed between agents
    Pricer, create_pricer            pricers by name ("knn", "constant", ...)
    DealsError, ConfigError, ...     the exception hierarchy
"""

from deals.framework.errors import ConfigError, DataError, DealsError, PricingError
from deals.framework.models import Deal, Estimate, FeedEntry, Neighbour, Opportunity, Product
from deals.framework.settings import Settings, load_settings
from deals.pricer.base import Pricer, create_pricer, pricer_names

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Deal",
    "DealsError",
    "Estimate",
    "FeedEntry",
    "Neighbour",
    "Opportunity",
    "Pricer",
    "PricingError",
    "Product",
    "Settings",
    "__version__",
    "create_pricer",
    "load_settings",
    "pricer_names",
]
