"""The exception hierarchy of `deals`, in one place.

    DealsError                      anything this package raises on purpose
    ├── ConfigError                 a bad setting: names the key and where it came from
    ├── DataError                   a product file that cannot be read or curated
    ├── IndexError_                 the vector store is missing, corrupt or unreachable
    ├── FetchError                  a feed or page could not be fetched or parsed
    ├── LLMError                    an LLM call failed or answered nonsense
    │   └── LLMOutputError          a reply arrived but was unusable (carries its token cost)
    ├── PricingError                a pricer could not produce a sane estimate
    └── NotifyError                 an alert could not be delivered
        ├── TransientNotifyError    worth retrying (5xx, 429, timeouts)
        └── PermanentNotifyError    not worth retrying (other 4xx, bad numbers)

    Cancelled (a BaseException)     the daemon is shutting down: an HTTP request in
                                    flight was abandoned (see deals.framework.deadline)

The CLI turns a `ConfigError` (and a `StoreLockedError`, in deals.memory.lock) into exit
code 2 and any other `DealsError` into exit code 1 with its message; the daemon logs and
skips them, one item at a time. `Cancelled` is not an `Exception`, so the handlers that
skip one bad item do not swallow it: it unwinds the cycle, which is recorded as stopped.
"""

from __future__ import annotations


class DealsError(Exception):
    """Base class of every error `deals` raises on purpose."""


class ConfigError(DealsError):
    """A configuration value is invalid; the message names the key and its source."""


class DataError(DealsError):
    """A product data file cannot be read, parsed or curated."""


class IndexError_(DealsError):  # noqa: N801 - avoid shadowing the builtin IndexError
    """The vector index is missing, incompatible or unreachable."""


class FetchError(DealsError):
    """A feed or page could not be fetched or parsed."""


class LLMError(DealsError):
    """An LLM call failed, timed out, refused or returned unusable output."""


class LLMOutputError(LLMError):
    """A reply arrived but was refused, cut off or unusable; carries the tokens it cost."""

    def __init__(self, message: str, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.cost_usd = cost_usd


class PricingError(DealsError):
    """A pricer could not produce a sane estimate."""


class BudgetExhausted(PricingError):
    """An item deliberately not priced: a member's spending or item cap for this run was reached."""


class Cancelled(BaseException):  # noqa: N818 - named like asyncio.CancelledError's role
    """Shutdown was requested while waiting on the network; the work in progress is abandoned."""


class NotifyError(DealsError):
    """An alert could not be delivered."""


class TransientNotifyError(NotifyError):
    """Delivery failed for a reason that may pass (5xx, 429, network); retry later."""


class PermanentNotifyError(NotifyError):
    """Delivery failed for a reason that will not pass (4xx other than 429)."""


__all__ = [
    "BudgetExhausted",
    "Cancelled",
    "ConfigError",
    "DataError",
    "DealsError",
    "FetchError",
    "IndexError_",
    "LLMError",
    "LLMOutputError",
    "NotifyError",
    "PermanentNotifyError",
    "PricingError",
    "TransientNotifyError",
]
