"""The store's record of feed entries: what each feed said, what became of it, and price history.

Table `entries` (migration m010): one row per new feed entry, written by the planner in the
same transaction as the deals and the entries marked seen. A deal's row is a *sighting* of
its product (`product_key`, see `deals.framework.product_key`) at its price and time, so

    store.price_context(deal_key)       the feed's "was" price, and the lowest price this
                                        product was seen at in the last 30 days (other entries)
    store.price_history(product_key)    every sighting, oldest first (the dashboard's chart)

The planner's decision is copied onto the entry (`set_decision`) so that lists filter by it
through an index; a rejection by the scanner is stored as "not a single product" with the
scanner's reason.

`EntriesMixin` is mixed into `deals.memory.store.Store` and uses its connection, lock and
transactions, on SQLite or PostgreSQL. Its SQL, like that of `views` and `watches`, keeps to
the subset both engines run alike (`deals.memory.dialect`): `?` placeholders, `ON CONFLICT`
(never `INSERT OR ...`), order by columns (never `rowid`), no `? IS NULL` (PostgreSQL
cannot type a bare NULL parameter: the SQL is built with or without the condition), no
SQLite-only functions, `lower(column) LIKE` for search; times are compared as ISO-8601 text.
tests/test_watchlist.py checks the SQL of these modules, and their tests run on both engines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from deals.framework.models import Deal, FeedEntry
from deals.framework.text import money
from deals.memory.dialect import in_chunks

NOT_SINGLE = "not a single product"
PRICING_FAILED = "pricing failed"
DECISIONS = ("deal", "not cheap enough", "low confidence", "too good to be true", NOT_SINGLE, PRICING_FAILED)
WINDOW_DAYS = 30


class EntryFacts(BaseModel):
    """What the feed said about one entry."""

    key: str
    feed_url: str
    title: str
    url: str
    retailer: str | None = None
    list_price: float | None = Field(None, description="the feed's own 'was/list' claim")
    product_key: str
    price: float | None = None
    seen_at: datetime


class Sighting(BaseModel):
    """One sighting of a product: an entry that was a deal on it."""

    key: str
    feed_url: str
    title: str
    url: str
    price: float
    list_price: float | None = None
    seen_at: datetime


class PriceContext(BaseModel):
    """What history says about a deal's price."""

    product_key: str | None = None
    list_price: float | None = Field(None, description="the feed's 'was/list' claim for this entry")
    lowest: float | None = Field(None, description=f"lowest price of the product's other sightings in {WINDOW_DAYS} days")
    lowest_at: datetime | None = None
    sightings: int = Field(0, description=f"other sightings in {WINDOW_DAYS} days")

    def text(self) -> str:
        """'lowest seen in 30 days: $X' (or '' with no other sighting)."""
        if self.lowest is None:
            return ""
        return f"lowest seen in {WINDOW_DAYS} days: {money(self.lowest)}"


class EntriesMixin:
    """Entries, decisions and sightings (see the module docstring)."""

    # provided by Store
    def transaction(self) -> Any: ...  # pragma: no cover
    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...  # pragma: no cover
    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...  # pragma: no cover
    def _now(self, at: datetime | None = None) -> str: ...  # pragma: no cover

    def record_entries(
        self, entries: Sequence[FeedEntry], deals: Sequence[Deal], rejections: Mapping[str, str] | None = None
    ) -> int:
        """Record new feed entries with what the scanner made of them; returns rows added (known keys are kept)."""
        from deals.framework.product_key import list_price, product_key

        by_key = {deal.entry_key: deal for deal in deals}
        rejections = rejections or {}
        now = self._now()
        added = 0
        with self.transaction() as db:
            for entry in dict((e.key, e) for e in entries).values():
                deal = by_key.get(entry.key)
                reason = None if deal else (rejections.get(entry.key) or "not taken by the scanner")
                cursor = db.execute(
                    """INSERT INTO entries (key, feed_url, title, url, retailer, list_price, product_key, price, outcome,
                                            decision, reason, seen_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING""",
                    (
                        entry.key, entry.feed_url, entry.title[:500], entry.url, entry.retailer,
                        list_price(entry.summary, entry.details, entry.title, price=deal.price if deal else None),
                        product_key(entry.title, entry.url),
                        deal.price if deal else None, "deal" if deal else "rejected",
                        None if deal else NOT_SINGLE, reason[:500] if reason else None, now,
                    ),
                )  # fmt: skip
                added += max(cursor.rowcount, 0)
        return added

    def set_decision(self, key: str, decision: str, reason: str | None = None) -> None:
        """Copy the planner's decision (or a pricing failure) onto the entry, when there is one."""
        with self.transaction() as db:
            db.execute(
                "UPDATE entries SET decision = ?, reason = ? WHERE key = ?",
                (decision, reason[:500] if reason else None, key),
            )

    @staticmethod
    def _facts(row: Any) -> EntryFacts:
        from deals.memory.store import from_text

        return EntryFacts(
            key=row["key"], feed_url=row["feed_url"], title=row["title"], url=row["url"], retailer=row["retailer"],
            list_price=row["list_price"], product_key=row["product_key"], price=row["price"], seen_at=from_text(row["seen_at"]),
        )  # fmt: skip

    def entry_facts(self, keys: Sequence[str]) -> dict[str, EntryFacts]:
        """The recorded entries among `keys` (missing keys are left out)."""
        out: dict[str, EntryFacts] = {}
        ordered = list(dict.fromkeys(keys))
        for chunk, marks in in_chunks(ordered):
            for row in self._all(f"SELECT * FROM entries WHERE key IN ({marks})", chunk):
                out[row["key"]] = self._facts(row)
        return out

    def price_context(self, key: str, *, now: datetime | None = None, days: int = WINDOW_DAYS) -> PriceContext:
        """The feed's 'was' price of entry `key` and the lowest of its product's other sightings in `days` days."""
        from deals.memory.store import from_text, to_text

        row = self._one("SELECT product_key, list_price, seen_at FROM entries WHERE key = ?", (key,))
        if row is None:
            return PriceContext()
        since = to_text((now or from_text(row["seen_at"])) - timedelta(days=days))
        low = self._one(
            """SELECT price, seen_at FROM entries WHERE product_key = ? AND key <> ? AND price IS NOT NULL AND seen_at >= ?
               ORDER BY price, seen_at DESC LIMIT 1""",
            (row["product_key"], key, since),
        )
        count = self._one(
            "SELECT COUNT(*) FROM entries WHERE product_key = ? AND key <> ? AND price IS NOT NULL AND seen_at >= ?",
            (row["product_key"], key, since),
        )
        return PriceContext(
            product_key=row["product_key"],
            list_price=row["list_price"],
            lowest=low["price"] if low else None,
            lowest_at=from_text(low["seen_at"]) if low else None,
            sightings=int(count[0]) if count else 0,
        )

    def price_history(self, product_key: str, limit: int = 500) -> list[Sighting]:
        """Every sighting of a product (newest `limit`), oldest first."""
        from deals.memory.store import from_text

        rows = self._all(
            """SELECT key, feed_url, title, url, price, list_price, seen_at FROM entries
               WHERE product_key = ? AND price IS NOT NULL ORDER BY seen_at DESC, key DESC LIMIT ?""",
            (product_key, limit),
        )
        return [
            Sighting(key=r["key"], feed_url=r["feed_url"], title=r["title"], url=r["url"], price=r["price"],
                     list_price=r["list_price"], seen_at=from_text(r["seen_at"]))  # fmt: skip
            for r in reversed(rows)
        ]


__all__ = ["DECISIONS", "NOT_SINGLE", "PRICING_FAILED", "WINDOW_DAYS", "EntriesMixin", "EntryFacts", "PriceContext", "Sighting"]
