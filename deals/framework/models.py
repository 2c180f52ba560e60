"""The typed records that pass between agents, pricers and the memory store.

    Product      a catalogue item with a known price (training, the vector index)
    FeedEntry    one item read from a deal feed, before interpretation
    FeedState    a feed's conditional-GET validators, error count and backoff
    Deal         a feed entry the scanner understood: a product description and a price
    Neighbour    a catalogue product retrieved as evidence for an estimate
    Estimate     what a pricer thinks a product is worth, with its parts and evidence
    Opportunity  a deal priced well below its estimate, worth an alert
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SPACE = re.compile(r"\s+")


def text_key(text: str) -> str:
    """A stable identity for a text: sha1 of its whitespace-folded, lower-cased form (16 hex)."""
    folded = _SPACE.sub(" ", text).strip().lower()
    return hashlib.sha1(folded.encode("utf-8")).hexdigest()[:16]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class Product(Record):
    """A catalogue product with a known price."""

    title: str
    text: str = Field(description="product description used for embedding, training and prompts")
    price: float = Field(gt=0)
    category: str | None = None
    source: str | None = Field(None, description="which data file or feed it came from")

    @property
    def id(self) -> str:
        return text_key(self.text)


class FeedEntry(Record):
    """One entry of a deal feed as read, before the scanner interprets it."""

    key: str = Field(description="canonical identity: guid, else the URL without tracking parameters")
    feed_url: str
    title: str
    url: str
    summary: str = Field("", description="plain text of the entry's description")
    details: str = Field("", description="plain text of the features/details block or fetched page, if any")
    price: float | None = Field(None, description="price stated by the feed itself (e.g. dealnews:price)")
    retailer: str | None = None
    category: str | None = None
    published: datetime | None = None


class Deal(Record):
    """A feed entry with a clear single product and price."""

    entry_key: str
    product_description: str = Field(min_length=3)
    price: float = Field(gt=0)
    url: str

    @property
    def id(self) -> str:
        return self.entry_key


class FeedState(Record):
    """What the reader remembers about one feed between cycles."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    error_count: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="skip the feed until then (backoff)")
    last_success_at: datetime | None = None
    unhealthy: bool = Field(False, description="failed `feeds.unhealthy_after` times in a row")


class Neighbour(Record):
    """A catalogue product retrieved as evidence."""

    id: str
    title: str
    price: float
    similarity: float
    category: str | None = None
    text: str | None = None


class Quantile(Record):
    """One point of a predictive distribution: the true price is below `price` with probability `level`."""

    level: float = Field(gt=0, lt=1)
    price: float = Field(gt=0)


class Estimate(Record):
    """A pricer's estimate of what a product is worth, with how sure it is.

    `price` is the point estimate (the median of the distribution when there is one);
    `low`..`high` the interval at `interval_level` (0.8: on held-out products the true
    price lies inside 80% of the time); `quantiles` the whole predictive distribution the
    planner decides on. Pricers without a calibrated distribution leave them empty.
    """

    price: float = Field(gt=0)
    pricer: str
    low: float | None = Field(None, gt=0, description="lower end of the interval")
    high: float | None = Field(None, gt=0, description="upper end of the interval")
    interval_level: float | None = Field(None, gt=0, lt=1, description="coverage the interval was calibrated for")
    quantiles: list[Quantile] = Field(default_factory=list, description="predictive distribution, ascending levels")
    parts: dict[str, float] = Field(default_factory=dict, description="member estimates (ensemble)")
    neighbours: list[Neighbour] = Field(default_factory=list)
    note: str | None = Field(None, description="anything the reader should know (e.g. members missing)")
    excluded: int = Field(0, description="neighbours dropped because they were the item itself")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    @field_validator("price")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("estimate must be finite")
        return value

    @field_validator("quantiles")
    @classmethod
    def _ascending(cls, value: list[Quantile]) -> list[Quantile]:
        levels = [q.level for q in value]
        prices = [q.price for q in value]
        if levels != sorted(set(levels)) or prices != sorted(prices):
            raise ValueError("quantiles must have increasing levels and non-decreasing prices")
        return value

    @property
    def interval_text(self) -> str:
        """'$120-$310' or '' without an interval."""
        if self.low is None or self.high is None:
            return ""
        return f"${self.low:,.0f}-${self.high:,.0f}"


class Opportunity(Record):
    """A deal whose price is well below its estimate."""

    deal: Deal
    estimate: Estimate
    discount: float = Field(description="estimate minus price, USD")

    @property
    def discount_rel(self) -> float:
        return self.discount / self.estimate.price if self.estimate.price else 0.0


__all__ = ["Deal", "Estimate", "Quantile", "FeedEntry", "FeedState", "Neighbour", "Opportunity", "Product", "text_key", "utcnow"]
