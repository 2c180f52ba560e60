"""deals: an autonomous multi-agent deal-discovery daemon.

Public API (pinned by a test):

    Settings, load_settings          configuration
    Product, Deal, Estimate, ...     the typed records passed between agents
    Pricer, create_pricer            pricers by name ("knn", "constant", ...)
    DealsError, ConfigError, ...     the exception hierarchy

Importing it turns off what libraries underneath would send home (set before they load;
an explicit value in the environment wins): ONNX Runtime's telemetry, which otherwise
looks up a Microsoft host seconds after the query encoder starts, and Chroma's.
"""

import os

for _name, _value in (("ORT_DISABLE_TELEMETRY", "1"), ("ORT_TELEMETRY_DISABLED", "1"), ("ANONYMIZED_TELEMETRY", "False")):
    os.environ.setdefault(_name, _value)

from deals.framework.errors import ConfigError, DataError, DealsError, PricingError  # noqa: E402 - after the telemetry switches
from deals.framework.models import Deal, Estimate, FeedEntry, Neighbour, Opportunity, Product  # noqa: E402
from deals.framework.settings import Settings, load_settings  # noqa: E402
from deals.pricer.base import Pricer, create_pricer, pricer_names  # noqa: E402

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
