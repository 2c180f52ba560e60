"""The store's part of watchlists and feeds that the CLI and the dashboard edit at run time.

    store.add_watch(number, WatchRule(...)) -> id      a watch (migration m011, table `watches`)
    store.remove_watch(id) -> bool
    store.stored_watches()                             every stored watch, by id
    store.set_recipient(number, daily_cap=, quiet_start=, quiet_end=)
    store.stored_recipients()                          recipients' own cap and quiet hours
    store.save_routes(opportunity_id, [(number, why)]) who an opportunity goes to (decided once)
    store.routes(opportunity_id)                       [(number, why)]
    store.unalerted_routes(since)                      routes without an alert row: crash recovery
    store.opportunities_without_routes(since)          opportunities never routed (older code, tests)
    store.add_feed(url) / store.set_feed_enabled(url, on) / store.feed_controls()
    store.effective_feed_urls(configured)              configured + added - disabled

Watches from `config.yaml` are not stored here: `deals.agents.watchlist` joins both. Rows
are written in the store's transactions; a watch's id comes from `INSERT ... RETURNING id`
(never `cursor.lastrowid`), ids are never reused (AUTOINCREMENT), and the SQL keeps to the
subset SQLite and PostgreSQL run alike (see `deals.memory.history`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from deals.framework.settings import WatchRule

NOBODY = ""  # the recipient of the route row that records "routed, to nobody"


class StoredWatch(BaseModel):
    """A watch added from the CLI or the dashboard."""

    id: int
    recipient: str
    rule: WatchRule
    created_at: datetime


class StoredRecipient(BaseModel):
    """A recipient's own daily cap and quiet hours, set from the CLI or the dashboard."""

    number: str
    daily_cap: int | None = None
    quiet_start: str | None = None
    quiet_end: str | None = None


class FeedControl(BaseModel):
    """A feed added, or a configured feed disabled, at run time."""

    url: str
    added: bool = Field(description="added from the dashboard (not in feeds.urls)")
    enabled: bool
    updated_at: datetime


class WatchesMixin:
    """Watches, recipients, routes and feed controls (see the module docstring)."""

    # provided by Store
    def transaction(self) -> Any: ...  # pragma: no cover
    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...  # pragma: no cover
    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...  # pragma: no cover
    def _now(self, at: datetime | None = None) -> str: ...  # pragma: no cover

    # ---------------------------------------------------------------- watches

    def add_watch(self, recipient: str, rule: WatchRule) -> int:
        """Store a watch for `recipient` (an E.164 number, already checked); its id."""
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO watches (recipient, rule, created_at) VALUES (?, ?, ?) RETURNING id",
                (recipient, rule.model_dump_json(exclude_defaults=True), self._now()),
            ).fetchone()
            return int(row[0])

    def remove_watch(self, watch_id: int) -> bool:
        """Delete a stored watch; whether it existed."""
        with self.transaction() as db:
            return db.execute("DELETE FROM watches WHERE id = ?", (int(watch_id),)).rowcount == 1

    def stored_watches(self) -> list[StoredWatch]:
        from deals.memory.store import from_text

        out = []
        for row in self._all("SELECT * FROM watches ORDER BY id"):
            try:
                rule = WatchRule.model_validate_json(row["rule"])
            except ValueError:  # written by a newer version, or edited by hand: left out, not fatal
                continue
            out.append(StoredWatch(id=row["id"], recipient=row["recipient"], rule=rule, created_at=from_text(row["created_at"])))
        return out

    # ---------------------------------------------------------------- recipients

    def set_recipient(
        self, number: str, *, daily_cap: int | None = None, quiet_start: str | None = None, quiet_end: str | None = None
    ) -> None:
        """Set (or clear, with None) a recipient's own daily cap and quiet hours."""
        now = self._now()
        with self.transaction() as db:
            db.execute(
                """INSERT INTO recipients (number, daily_cap, quiet_start, quiet_end, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(number) DO UPDATE SET daily_cap = excluded.daily_cap, quiet_start = excluded.quiet_start,
                     quiet_end = excluded.quiet_end, updated_at = excluded.updated_at""",
                (number, daily_cap, quiet_start, quiet_end, now, now),
            )

    def stored_recipients(self) -> list[StoredRecipient]:
        return [
            StoredRecipient(number=r["number"], daily_cap=r["daily_cap"], quiet_start=r["quiet_start"], quiet_end=r["quiet_end"])
            for r in self._all("SELECT * FROM recipients ORDER BY number")
        ]

    # ---------------------------------------------------------------- routes

    def save_routes(self, opportunity_id: int, routes: Sequence[tuple[str, str]]) -> None:
        """Record who an opportunity goes to and why (idempotent: a recipient's first route stays).

        No routes is recorded too, as the `NOBODY` marker row, so that the decision is not made
        again (and routed differently) by whoever looks at the opportunity next."""
        from deals.memory.store import StoreError

        now = self._now()
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM opportunities WHERE id = ?", (opportunity_id,)).fetchone():
                raise StoreError(f"save_routes: no opportunity {opportunity_id} is stored")
            for recipient, why in routes or [(NOBODY, "nobody")]:
                db.execute(
                    """INSERT INTO routes (opportunity_id, recipient, why, created_at) VALUES (?, ?, ?, ?)
                       ON CONFLICT(opportunity_id, recipient) DO NOTHING""",
                    (opportunity_id, recipient, why[:300], now),
                )

    def routes(self, opportunity_id: int) -> list[tuple[str, str]]:
        """(recipient, why) of an opportunity's routes, without the `NOBODY` marker."""
        rows = self._all(
            "SELECT recipient, why FROM routes WHERE opportunity_id = ? AND recipient <> ? ORDER BY recipient", (opportunity_id, NOBODY)
        )
        return [(r["recipient"], r["why"]) for r in rows]

    def is_routed(self, opportunity_id: int) -> bool:
        """Whether routes were decided for this opportunity (an empty decision is the `NOBODY` row)."""
        return self._one("SELECT 1 FROM routes WHERE opportunity_id = ? LIMIT 1", (opportunity_id,)) is not None

    def unalerted_routes(self, since: datetime | None = None) -> list[tuple[int, str]]:
        """(opportunity id, recipient) of routes newer than `since` that have no alert row yet, oldest first."""
        from deals.memory.store import to_text

        rows = self._all(
            """SELECT r.opportunity_id, r.recipient FROM routes r
               LEFT JOIN alerts a ON a.opportunity_id = r.opportunity_id AND a.recipient = r.recipient
               WHERE a.id IS NULL AND r.recipient <> ? AND r.created_at >= ? ORDER BY r.opportunity_id, r.recipient""",
            (NOBODY, to_text(since) if since else ""),
        )
        return [(int(r["opportunity_id"]), r["recipient"]) for r in rows]

    def opportunities_without_routes(self, since: datetime | None = None) -> list[int]:
        """Ids of opportunities newer than `since` with neither routes nor alerts (stored by code that does not route)."""
        from deals.memory.store import to_text

        rows = self._all(
            """SELECT o.id FROM opportunities o
               WHERE o.created_at >= ?
                 AND NOT EXISTS (SELECT 1 FROM routes r WHERE r.opportunity_id = o.id)
                 AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.opportunity_id = o.id)
               ORDER BY o.id""",
            (to_text(since) if since else "",),
        )
        return [int(r["id"]) for r in rows]

    # ---------------------------------------------------------------- feeds

    def add_feed(self, url: str) -> None:
        """Add a feed to the cycle at run time, enabled (a feed disabled or only read with --feed before, too)."""
        with self.transaction() as db:
            db.execute(
                """INSERT INTO feed_controls (url, added, enabled, updated_at) VALUES (?, 1, 1, ?)
                   ON CONFLICT(url) DO UPDATE SET added = 1, enabled = 1, updated_at = excluded.updated_at""",
                (url, self._now()),
            )

    def set_feed_enabled(self, url: str, enabled: bool) -> None:
        """Enable or disable a feed (configured or added)."""
        with self.transaction() as db:
            db.execute(
                """INSERT INTO feed_controls (url, added, enabled, updated_at) VALUES (?, 0, ?, ?)
                   ON CONFLICT(url) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at""",
                (url, int(enabled), self._now()),
            )

    def feed_controls(self) -> list[FeedControl]:
        from deals.memory.store import from_text

        return [
            FeedControl(url=r["url"], added=bool(r["added"]), enabled=bool(r["enabled"]), updated_at=from_text(r["updated_at"]))
            for r in self._all("SELECT * FROM feed_controls ORDER BY url")
        ]

    def effective_feed_urls(self, configured: Sequence[str]) -> list[str]:
        """The feeds a cycle reads: the configured ones and those added, less those disabled (configured order first)."""
        controls = {c.url: c for c in self.feed_controls()}
        urls = list(dict.fromkeys(list(configured) + [u for u, c in controls.items() if c.added]))
        return [u for u in urls if controls.get(u) is None or controls[u].enabled]


def watch_label(rule: WatchRule) -> str:
    """A short human label for a watch."""
    if rule.name:
        return rule.name
    if rule.keywords:
        return " ".join(rule.keywords)
    return f"/{rule.regex}/"


__all__ = ["FeedControl", "StoredRecipient", "StoredWatch", "WatchesMixin", "watch_label"]
