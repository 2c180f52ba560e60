"""The memory store: everything the daemon remembers, in SQLite or PostgreSQL.

Feed state, seen entries, deals, estimates (with each pricer's part), opportunities, the
alert outbox with every send attempt, and cycle runs; the schema lives in
`deals.memory.migrations`. `Store(path)` opens a SQLite file (the default, under
DEALS_HOME); `Store("postgresql://user@host/db")` a PostgreSQL database (psycopg 3), with
the same schema, the same migrations and the same SQL: the differences between the two
engines live in `deals.memory.dialect`. Several daemons may share one store: they claim
their work (`deals.memory.claims`, mixed in here).

Alerts are claimed atomically (`claim_alert`: queued -> sending only if still queued), so
two processes can never both send one alert; every hand-over to the provider is a row in
`sends` (`begin_send`/`end_send`), and `history()` counts the SMS the provider accepted
per opportunity, so a duplicate can never be invisible.

A database that cannot be read or written (corrupt pages, a read-only file or folder, a
full disk, a PostgreSQL server that is down or refuses the login) raises `StoreError`
naming the file or the URL (its password hidden) and what to do, never a raw driver error.
On PostgreSQL a connection lost between calls is opened again on the next call.

SQLite runs in WAL mode (readers such as `deals history` never block the daemon) with a
`busy_timeout` and foreign keys on. Concurrency: ONE connection per `Store`, guarded by a
re-entrant lock, so a `Store` may be shared by a small thread pool; every method holds
the lock for its duration and `transaction()` holds it until the block ends. Every write
is a write transaction (`BEGIN IMMEDIATE` on SQLite, `BEGIN` on PostgreSQL; a method
alone, or a `with store.transaction():` block grouping several calls, which nest). Other
processes use their own `Store`; the busy timeout lets them wait for each other.

Datetimes are stored as ISO-8601 UTC text; naive datetimes are taken to be UTC.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from deals.framework import paths
from deals.framework.errors import DealsError
from deals.framework.models import Deal, Estimate, FeedEntry, FeedState, Neighbour, Opportunity, Quantile, utcnow
from deals.framework.dburl import is_postgresql, password_of, redact, sqlite_path
from deals.memory.claims import Claims
from deals.memory.dialect import POSTGRESQL, RECIPIENT_LOCK, SQLITE, Dialect, PgConnection, in_chunks
from deals.memory.history import EntriesMixin
from deals.memory.migrations import apply_migrations
from deals.memory.views import ViewsMixin
from deals.memory.watches import WatchesMixin

ALERT_STATES = ("queued", "sending", "sent", "failed", "skipped")
log = logging.getLogger("deals.memory.store")



def _enable_wal(db: sqlite3.Connection, wait_s: float) -> None:
    """Switch the file to WAL. SQLite answers "database is locked" at once, without its busy
    handler, while another connection is switching it too (several daemons starting together),
    so wait here as busy_timeout would."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)

class StoreError(DealsError):
    """The memory store was misused (closed, an unknown row) or its file cannot be used."""


def explain_postgresql(url: str, exc: BaseException) -> str:
    """What went wrong with a PostgreSQL store, and what to do; the URL's password never shown."""
    text = " ".join(str(exc).split())
    secret = password_of(url)
    if secret:
        text = text.replace(secret, "***")
    where = redact(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered or "authentication failed" in lowered:
        return f"{where}: PostgreSQL refused the login ({text}); check the user, and the password in PGPASSWORD or DEALS_STORE__URL"
    if "does not exist" in lowered and "database" in lowered:
        return f"{where}: {text}; create it first (createdb), or fix store.url"
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered or "connection failed" in lowered:
        return f"{where}: cannot reach PostgreSQL ({text}); is the server running and store.url right?"
    if "read-only" in lowered or "permission denied" in lowered:
        return f"{where}: the memory store cannot be written ({text}); grant this user write access"
    if "no space left" in lowered or "disk full" in lowered:
        return f"{where}: the server's disk is full ({text}); nothing was lost, free some space"
    if "terminat" in lowered or "server closed the connection" in lowered or "connection is lost" in lowered or "closed" in lowered:
        return f"{where}: the connection to PostgreSQL was lost ({text}); it is opened again on the next call"
    return f"{where}: memory store error: {text}"


def explain(path: Path | str, exc: BaseException) -> str:
    """What went wrong with the database file, and what to do: never 'delete it' for a permission problem."""
    if is_postgresql(str(path)):
        return explain_postgresql(str(path), exc)
    text = str(exc)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered or "permission" in lowered:
        return (
            f"{path}: the memory store cannot be written ({text}); check that this user may write the file "
            "and its folder (and the -wal/-shm files beside it)"
        )
    if "disk is full" in lowered or "database or disk is full" in lowered:
        return f"{path}: the disk is full ({text}); nothing was lost, free some space"
    if "locked" in lowered or "busy" in lowered:
        return f"{path}: the memory store is busy ({text}); another process holds it too long"
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return (
            f"{path}: the memory store is damaged ({text}); restore it from a backup, or try "
            f"`sqlite3 {path} .recover`; moving it away starts afresh but forgets what was seen and sent"
        )
    return f"{path}: memory store error: {text}"


# --------------------------------------------------------------------------- rows


class AlertRow(BaseModel):
    """One row of the alert outbox."""

    id: int
    opportunity_id: int
    recipient: str
    body: str
    state: str
    attempts: int
    provider_id: str | None = Field(None, description="the provider's message id (Twilio SID)")
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None


class HistoryRow(BaseModel):
    """One opportunity as `deals history` shows it."""

    id: int
    created_at: datetime
    description: str
    price: float
    estimate: float
    discount: float
    discount_rel: float
    url: str
    pricer: str | None = None
    low: float | None = Field(None, description="lower end of the estimate's interval")
    high: float | None = Field(None, description="upper end of the estimate's interval")
    parts: dict[str, float] = Field(default_factory=dict, description="the members' estimates")
    alerts: dict[str, int] = Field(default_factory=dict, description="alert count per outbox state")
    alert_status: str = Field("none", description="e.g. 'sent 2' or 'queued 1, failed 1'; '(3 SMS!)' when the provider took more")
    sms_sent: int = Field(0, description="messages the provider accepted for this opportunity (all recipients, every attempt)")
    send_attempts: int = Field(0, description="hand-overs to the provider, whatever their outcome")


class RunRow(BaseModel):
    """One daemon cycle."""

    id: int
    started_at: datetime
    finished_at: datetime | None = None
    status: str
    stats: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- time


def to_text(value: datetime | None) -> str | None:
    """ISO-8601 UTC text with microseconds and a Z, so text order is time order."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def upsert(table: str, columns: Sequence[str], *, key: Sequence[str]) -> str:
    """`INSERT INTO table (columns) VALUES (?, ...) ON CONFLICT (key) DO UPDATE SET` every other column:
    the portable form of `INSERT OR REPLACE` (the row keeps its identity; SQLite and PostgreSQL alike)."""
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column not in key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) {action}"


def unpriced_conditions(since: datetime | None, max_attempts: int | None) -> tuple[str, list[Any]]:
    """The optional conditions on deals `d` of `unpriced_deals` and `claim_unpriced_deals`: SQL and parameters.

    Each is in the SQL only when it applies (never `? IS NULL`, which PostgreSQL cannot type)."""
    where, params = "", []
    if since is not None:
        where += " AND d.created_at >= ?"
        params.append(to_text(since))
    if max_attempts is not None:
        where += " AND d.pricing_attempts < ?"
        params.append(max_attempts)
    return where, params


_STATE_COUNTS = ", ".join(
    f"(SELECT COUNT(*) FROM alerts a WHERE a.opportunity_id = o.id AND a.state = '{state}') AS n_{state}" for state in ALERT_STATES
)


# --------------------------------------------------------------------------- store


class Store(Claims, EntriesMixin, WatchesMixin, ViewsMixin):
    """The memory store on SQLite or PostgreSQL (see the module docstring for threading and transactions).

    Claims of several daemons (`deals.memory.claims`), entries and price history
    (`deals.memory.history`), watches, routes and feed controls (`deals.memory.watches`)
    and the dashboard's read model (`deals.memory.views`) are mixed in from their own modules.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout_s: float = 10.0,
        worker_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._db: Any = None
        self._closed = False
        self._connect_timeout_s = connect_timeout_s
        self._claims_init(worker_timeout_s)
        if is_postgresql(str(path)):
            self.url: str | None = str(path)
            self.path: Path | str = redact(self.url)
            self.dialect: Dialect = POSTGRESQL
            self._db = self._connect_postgresql(migrate=True)
            return
        self.url = None
        self.dialect = SQLITE
        try:
            target = sqlite_path(path)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        self.path = Path(target)
        if str(target) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(str(target), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        except sqlite3.Error as exc:
            raise StoreError(explain(self.path, exc)) from None
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            _enable_wal(db, busy_timeout_s)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            apply_migrations(db)
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(explain(self.path, exc)) from None
        self._db = db

    def _connect_postgresql(self, *, migrate: bool) -> PgConnection:
        import psycopg

        assert self.url is not None
        try:
            db = PgConnection(self.url, connect_timeout_s=self._connect_timeout_s, application_name=f"deals pid {os.getpid()}")
        except psycopg.Error as exc:
            raise StoreError(explain_postgresql(self.url, exc)) from None
        if migrate:
            try:
                apply_migrations(db)
            except psycopg.Error as exc:
                db.close()
                raise StoreError(explain_postgresql(self.url, exc)) from None
        return db

    @classmethod
    def open_default(cls, settings: Any = None, **kwargs: Any) -> Store:
        """The configured store: `store.url` (PostgreSQL, or a SQLite URL), else `$DEALS_HOME/deals.db`.

        `settings` is the `Settings` (or its `store` section); None reads them as the CLI does.
        """
        if settings is None:
            from deals.framework.settings import load_settings

            settings = load_settings()
        config = getattr(settings, "store", settings)
        kwargs.setdefault("worker_timeout_s", config.worker_timeout_s)
        return cls(config.url or paths.database_path(), **kwargs)

    @property
    def engine(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.dialect.name

    def migrations(self) -> list[str]:
        """The names of the migrations applied to this store, oldest first."""
        from deals.memory.migrations import applied_migrations

        with self._lock:
            return applied_migrations(self.db)

    # ---------------------------------------------------------------- plumbing

    @property
    def db(self) -> Any:
        """The connection: a `sqlite3.Connection`, or a `PgConnection` taking the same SQL."""
        if self._db is None or self._closed:
            raise StoreError(f"the memory store {self.path} is closed")
        if self.url is not None and self._depth == 0 and self._db.broken:
            with self._lock:  # the server restarted or the network dropped: open again
                if self._db.broken:
                    self._db = self._connect_postgresql(migrate=False)
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group writes atomically; nested blocks join the outermost transaction."""
        with self._lock:
            db = self.db
            with self._errors():
                if self._depth == 0:
                    db.execute(self.dialect.begin)
            self._depth += 1
            try:
                with self._errors():
                    yield db
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        db.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001 - the transaction may already be gone (disk I/O error, lost connection)
                        pass
                raise
            else:
                self._depth -= 1
                if self._depth == 0:
                    with self._errors():
                        db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors about the database become a StoreError naming it (programming errors stay as they are)."""
        try:
            yield
        except self.dialect.error_types() as exc:
            if isinstance(exc, self.dialect.passthrough_types()):
                raise
            raise StoreError(explain(self.url or self.path, exc)) from None if self.url else exc

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._errors():
            return self.db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock, self._errors():
            return self.db.execute(sql, params).fetchone()

    def _now(self, at: datetime | None = None) -> str:
        return to_text(at or self.clock())  # type: ignore[return-value]

    def pragma(self, name: str) -> Any:
        """The value of a SQLite PRAGMA (journal_mode, foreign_keys, busy_timeout...); None on PostgreSQL."""
        if self.dialect.is_postgresql:
            return None
        row = self._one(f"PRAGMA {name}")
        return row[0] if row else None

    def tables(self) -> list[str]:
        """The names of the store's tables."""
        with self._lock, self._errors():
            return self.dialect.tables(self.db)

    def close(self) -> None:
        """Leave as a worker (its claims return to the pool) and close the connection; twice is fine."""
        with self._lock:
            if self._db is None or self._closed:
                return
            try:
                if self._worker_id is not None:
                    self.unregister_worker()
            except Exception as exc:  # noqa: BLE001 - closing must not fail; a dead worker is reaped later
                log.warning("could not unregister from the store: %s", exc)
            self._closed = True
            try:
                self._db.close()
            finally:
                self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"  # a PostgreSQL URL without its password

    # ---------------------------------------------------------------- feeds

    @staticmethod
    def _feed(row: Any) -> FeedState:
        return FeedState(
            url=row["url"],
            etag=row["etag"],
            last_modified=row["last_modified"],
            error_count=row["error_count"],
            last_error=row["last_error"],
            next_attempt_at=from_text(row["next_attempt_at"]),
            last_success_at=from_text(row["last_success_at"]),
            unhealthy=bool(row["unhealthy"]),
        )

    def feed_state(self, url: str) -> FeedState | None:
        row = self._one("SELECT * FROM feeds WHERE url = ?", (url,))
        return self._feed(row) if row else None

    def feed_states(self) -> list[FeedState]:
        return [self._feed(row) for row in self._all("SELECT * FROM feeds ORDER BY url")]

    def save_feed_state(self, state: FeedState) -> None:
        with self.transaction() as db:
            db.execute(
                """INSERT INTO feeds (url, etag, last_modified, error_count, last_error,
                                      next_attempt_at, last_success_at, unhealthy)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(url) DO UPDATE SET
                     etag = excluded.etag, last_modified = excluded.last_modified,
                     error_count = excluded.error_count, last_error = excluded.last_error,
                     next_attempt_at = excluded.next_attempt_at,
                     last_success_at = excluded.last_success_at, unhealthy = excluded.unhealthy""",
                (
                    state.url,
                    state.etag,
                    state.last_modified,
                    state.error_count,
                    state.last_error,
                    to_text(state.next_attempt_at),
                    to_text(state.last_success_at),
                    int(state.unhealthy),
                ),
            )

    # ---------------------------------------------------------------- seen entries

    def unseen(self, keys: Sequence[str]) -> list[str]:
        """The keys never marked seen, in the order given, duplicates dropped."""
        ordered = list(dict.fromkeys(keys))
        seen: set[str] = set()
        for chunk, marks in in_chunks(ordered):
            seen.update(row[0] for row in self._all(f"SELECT key FROM seen_entries WHERE key IN ({marks})", chunk))
        return [key for key in ordered if key not in seen]

    def mark_seen(self, entries: Sequence[FeedEntry]) -> None:
        now = self._now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO seen_entries (key, feed_url, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(entry.key, entry.feed_url, now) for entry in entries],
            )

    # ---------------------------------------------------------------- deals and estimates

    def save_deal(self, deal: Deal) -> None:
        """Insert or update a deal (its first `created_at` is kept)."""
        with self.transaction() as db:
            db.execute(
                """INSERT INTO deals (entry_key, description, price, url, created_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(entry_key) DO UPDATE SET
                     description = excluded.description, price = excluded.price, url = excluded.url""",
                (deal.entry_key, deal.product_description, deal.price, deal.url, self._now()),
            )

    @staticmethod
    def _deal(row: Any) -> Deal:
        return Deal(entry_key=row["entry_key"], product_description=row["description"], price=row["price"], url=row["url"])

    def get_deal(self, key: str) -> Deal | None:
        row = self._one("SELECT * FROM deals WHERE entry_key = ?", (key,))
        return self._deal(row) if row else None

    def unpriced_deals(self, limit: int, *, since: datetime | None = None, max_attempts: int | None = None) -> list[Deal]:
        """Stored deals without an estimate, oldest first (so a crash between scan and price loses nothing).

        With `since`, only deals stored since then (a range of the created_at index, so the
        cost follows the recent deals, not the whole history); with `max_attempts`, deals
        whose pricing already failed that often are left out (given up).
        """
        where, params = unpriced_conditions(since, max_attempts)
        rows = self._all(
            f"""SELECT d.* FROM deals d LEFT JOIN estimates e ON e.deal_key = d.entry_key
                WHERE e.deal_key IS NULL {where}
                ORDER BY d.created_at, d.entry_key LIMIT ?""",
            (*params, limit),
        )
        return [self._deal(row) for row in rows]

    def record_pricing_failure(self, deal_key: str, error: str) -> int:
        """Count one failed pricing attempt of a stored deal; returns the attempts so far."""
        with self.transaction() as db:
            db.execute(
                "UPDATE deals SET pricing_attempts = pricing_attempts + 1, last_pricing_error = ? WHERE entry_key = ?",
                (error[:500], deal_key),
            )
            row = db.execute("SELECT pricing_attempts FROM deals WHERE entry_key = ?", (deal_key,)).fetchone()
        return int(row[0]) if row else 0

    def save_estimate(
        self, deal_key: str, estimate: Estimate, *, alert_below: float | None = None, decision: str | None = None
    ) -> None:
        """Store (or replace) the estimate of a stored deal, with the planner's decision if made."""
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM deals WHERE entry_key = ?", (deal_key,)).fetchone():
                raise StoreError(f"save_estimate: no deal {deal_key!r} is stored; save_deal() first")
            db.execute(
                upsert(
                    "estimates",
                    ("deal_key", "pricer", "price", "parts", "note", "neighbours", "excluded", "tokens_in", "tokens_out",
                     "cost_usd", "created_at", "low", "high", "interval_level", "quantiles", "alert_below", "decision"),
                    key=("deal_key",),
                ),  # fmt: skip
                (
                    deal_key,
                    estimate.pricer,
                    estimate.price,
                    json.dumps(estimate.parts),
                    estimate.note,
                    json.dumps([n.model_dump() for n in estimate.neighbours]),
                    estimate.excluded,
                    estimate.tokens_in,
                    estimate.tokens_out,
                    estimate.cost_usd,
                    self._now(),
                    estimate.low,
                    estimate.high,
                    estimate.interval_level,
                    json.dumps([q.model_dump() for q in estimate.quantiles]),
                    alert_below,
                    decision,
                ),
            )
            db.execute("DELETE FROM claims WHERE kind = 'price' AND key = ?", (deal_key,))  # priced: nobody's work any more

    @staticmethod
    def _estimate(row: Any) -> Estimate:
        return Estimate(
            price=row["price"],
            pricer=row["pricer"],
            parts=json.loads(row["parts"]),
            neighbours=[Neighbour.model_validate(n) for n in json.loads(row["neighbours"])],
            note=row["note"],
            excluded=row["excluded"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            cost_usd=row["cost_usd"],
            low=row["low"],
            high=row["high"],
            interval_level=row["interval_level"],
            quantiles=[Quantile.model_validate(q) for q in json.loads(row["quantiles"] or "[]")],
        )

    def get_estimate(self, deal_key: str) -> Estimate | None:
        row = self._one("SELECT * FROM estimates WHERE deal_key = ?", (deal_key,))
        return self._estimate(row) if row else None

    # ---------------------------------------------------------------- opportunities

    def save_opportunity(self, opp: Opportunity) -> int:
        """Store an opportunity (and its deal and estimate if missing); idempotent on the deal.

        Returns the opportunity's id, the existing one if the deal already has one.
        """
        key = opp.deal.entry_key
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM deals WHERE entry_key = ?", (key,)).fetchone():
                self.save_deal(opp.deal)
            if not db.execute("SELECT 1 FROM estimates WHERE deal_key = ?", (key,)).fetchone():
                self.save_estimate(key, opp.estimate)
            db.execute(
                """INSERT INTO opportunities (deal_key, price, estimate, discount, created_at)
                   VALUES (?, ?, ?, ?, ?) ON CONFLICT(deal_key) DO NOTHING""",
                (key, opp.deal.price, opp.estimate.price, opp.discount, self._now()),
            )
            return int(db.execute("SELECT id FROM opportunities WHERE deal_key = ?", (key,)).fetchone()[0])

    def _opportunity(self, row: Any) -> Opportunity:
        deal = self.get_deal(row["deal_key"])
        assert deal is not None  # foreign key
        estimate = self.get_estimate(row["deal_key"]) or Estimate(price=row["estimate"], pricer="unknown")
        if estimate.price != row["estimate"]:
            estimate = estimate.model_copy(update={"price": row["estimate"]})
        return Opportunity(deal=deal, estimate=estimate, discount=row["discount"])

    def get_opportunity(self, opportunity_id: int) -> Opportunity | None:
        row = self._one("SELECT * FROM opportunities WHERE id = ?", (opportunity_id,))
        return self._opportunity(row) if row else None

    def opportunities_without_alerts(
        self, recipients: Sequence[str], since: datetime | None = None
    ) -> list[tuple[int, Opportunity]]:
        """Opportunities (newer than `since`) lacking an alert row for some recipient: crash recovery."""
        recipients = list(dict.fromkeys(recipients))
        if not recipients:
            return []
        marks = ",".join("?" * len(recipients))
        rows = self._all(
            f"""SELECT o.* FROM opportunities o
                WHERE o.created_at >= ?
                  AND (SELECT COUNT(DISTINCT a.recipient) FROM alerts a
                       WHERE a.opportunity_id = o.id AND a.recipient IN ({marks})) < ?
                ORDER BY o.id""",
            (to_text(since) if since else "", *recipients, len(recipients)),
        )
        with self._lock:
            return [(int(row["id"]), self._opportunity(row)) for row in rows]

    def history(self, limit: int = 20) -> list[HistoryRow]:
        """The most recent opportunities, newest first, with their alert states."""
        rows = self._all(
            f"""SELECT o.*, d.description, d.url, e.pricer, e.low, e.high, e.parts, {_STATE_COUNTS},
                      (SELECT COUNT(*) FROM sends s JOIN alerts a ON a.id = s.alert_id
                       WHERE a.opportunity_id = o.id AND s.outcome = 'sent') AS sms,
                      (SELECT COUNT(*) FROM sends s JOIN alerts a ON a.id = s.alert_id
                       WHERE a.opportunity_id = o.id) AS attempts
               FROM opportunities o JOIN deals d ON d.entry_key = o.deal_key
               LEFT JOIN estimates e ON e.deal_key = o.deal_key
               ORDER BY o.created_at DESC, o.id DESC LIMIT ?""",
            (limit,),
        )
        out = []
        for row in rows:
            counts = Counter({state: row[f"n_{state}"] for state in ALERT_STATES if row[f"n_{state}"]})
            summary = ", ".join(f"{state} {counts[state]}" for state in ALERT_STATES if counts[state]) or "none"
            if row["sms"] > counts["sent"]:
                summary += f" ({row['sms']} SMS!)"  # the provider took more messages than alerts were sent
            out.append(
                HistoryRow(
                    id=row["id"],
                    created_at=from_text(row["created_at"]),
                    description=row["description"],
                    price=row["price"],
                    estimate=row["estimate"],
                    discount=row["discount"],
                    discount_rel=row["discount"] / row["estimate"] if row["estimate"] else 0.0,
                    url=row["url"],
                    pricer=row["pricer"],
                    low=row["low"],
                    high=row["high"],
                    parts=json.loads(row["parts"]) if row["parts"] else {},
                    alerts={state: counts[state] for state in ALERT_STATES if counts[state]},
                    alert_status=summary,
                    sms_sent=row["sms"],
                    send_attempts=row["attempts"],
                )
            )
        return out

    # ---------------------------------------------------------------- alert outbox

    def enqueue_alert(self, opportunity_id: int, recipient: str, body: str, *, at: datetime | None = None) -> int:
        """Queue an alert; idempotent on (opportunity, recipient): returns the existing id."""
        now = self._now(at)
        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM opportunities WHERE id = ?", (opportunity_id,)).fetchone():
                raise StoreError(f"enqueue_alert: no opportunity {opportunity_id} is stored")
            db.execute(
                """INSERT INTO alerts (opportunity_id, recipient, body, state, created_at, updated_at)
                   VALUES (?, ?, ?, 'queued', ?, ?) ON CONFLICT(opportunity_id, recipient) DO NOTHING""",
                (opportunity_id, recipient, body, now, now),
            )
            row = db.execute(
                "SELECT id FROM alerts WHERE opportunity_id = ? AND recipient = ?", (opportunity_id, recipient)
            ).fetchone()
            return int(row[0])

    @staticmethod
    def _alert(row: Any) -> AlertRow:
        return AlertRow(
            id=row["id"],
            opportunity_id=row["opportunity_id"],
            recipient=row["recipient"],
            body=row["body"],
            state=row["state"],
            attempts=row["attempts"],
            provider_id=row["provider_id"],
            last_error=row["last_error"],
            created_at=from_text(row["created_at"]),
            updated_at=from_text(row["updated_at"]),
            sent_at=from_text(row["sent_at"]),
        )

    @staticmethod
    def _check_states(states: Sequence[str]) -> None:
        bad = [state for state in states if state not in ALERT_STATES]
        if bad:
            raise ValueError(f"unknown alert state(s) {bad}; expected some of {list(ALERT_STATES)}")

    def alerts(self, states: Sequence[str] = ALERT_STATES) -> list[AlertRow]:
        """Alerts in the given states, oldest first."""
        states = [states] if isinstance(states, str) else list(states)
        self._check_states(states)
        if not states:
            return []
        marks = ",".join("?" * len(states))
        return [self._alert(r) for r in self._all(f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY id", states)]

    def get_alert(self, alert_id: int) -> AlertRow | None:
        row = self._one("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return self._alert(row) if row else None

    def mark_alert(
        self,
        alert_id: int,
        state: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        at: datetime | None = None,
        count_attempt: bool | None = None,
        expect: str | None = None,
    ) -> bool:
        """Move an alert to `state`; with `expect`, only if it is in that state now (returns whether it moved).

        `provider_id` and `error` are recorded when given (an alert marked sent without an
        error keeps its last error for the record). Marking `sending` counts one attempt
        unless `count_attempt=False`; marking `sent` records `sent_at`.
        """
        self._check_states([state] + ([expect] if expect else []))
        now = self._now(at)
        counted = int(state == "sending" if count_attempt is None else count_attempt)
        only = " AND state = ?" if expect is not None else ""
        with self.transaction() as db:
            cursor = db.execute(
                f"""UPDATE alerts SET state = ?, updated_at = ?, attempts = attempts + ?,
                           provider_id = COALESCE(?, provider_id), last_error = COALESCE(?, last_error),
                           sent_at = COALESCE(?, sent_at)
                    WHERE id = ?{only}""",
                (state, now, counted, provider_id, error[:1000] if error else None, now if state == "sent" else None,
                 alert_id, *([expect] if expect is not None else [])),
            )  # fmt: skip
            if cursor.rowcount == 0:
                if expect is not None and db.execute("SELECT 1 FROM alerts WHERE id = ?", (alert_id,)).fetchone():
                    return False
                raise StoreError(f"mark_alert: no alert {alert_id}")
            return True

    def claim_alert(self, alert_id: int, *, at: datetime | None = None, cap: tuple[int, datetime] | None = None) -> str:
        """Move a queued alert to 'sending' (one attempt counted) if it is still queued, and claim it.

        Returns 'claimed', 'taken' (another worker has it, or it is no longer queued) or
        'capped'. Atomic: of two processes claiming one alert, exactly one gets 'claimed'. The
        winner holds the alert's `send` claim until `release_claims("send", [alert_id])`;
        meanwhile no other worker reconciles it (see `deals.memory.claims`).

        `cap` = (limit, day start): the recipient's alerts sent or being sent since the day
        start are counted in the same transaction, under a per-recipient lock, and at the
        limit the alert is 'capped' (left queued for the caller to skip). So several daemons
        together keep one daily cap, not one each.
        """
        self._alive_worker()  # before the transaction
        with self.transaction() as db:
            if cap is not None:
                row = db.execute("SELECT recipient FROM alerts WHERE id = ?", (alert_id,)).fetchone()
                if row is None:
                    return "taken"
                self.dialect.lock_in_transaction(db, RECIPIENT_LOCK, row[0])
                used = db.execute(
                    "SELECT COUNT(*) FROM alerts WHERE recipient = ? AND id <> ? AND "
                    "((state = 'sent' AND sent_at >= ?) OR (state = 'sending' AND updated_at >= ?))",
                    (row[0], alert_id, to_text(cap[1]), to_text(cap[1])),
                ).fetchone()[0]
                if int(used) >= cap[0]:
                    return "capped"
            if not self._insert_claims(db, "send", [str(alert_id)]):
                return "taken"  # another worker is reconciling or sending it
            cursor = db.execute(
                "UPDATE alerts SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ? AND state = 'queued'",
                (self._now(at), alert_id),
            )
            if cursor.rowcount != 1:
                db.execute("DELETE FROM claims WHERE kind = 'send' AND key = ?", (str(alert_id),))
                return "taken"
            return "claimed"

    def begin_send(self, alert_id: int, *, at: datetime | None = None) -> int:
        """Record that an alert is being handed to the provider now; returns the attempt's id."""
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO sends (alert_id, started_at, outcome, pid) VALUES (?, ?, 'pending', ?) RETURNING id",
                (alert_id, self._now(at), os.getpid()),
            ).fetchone()
            return int(row[0])

    def end_send(
        self, send_id: int, outcome: str, *, provider_id: str | None = None, error: str | None = None, at: datetime | None = None
    ) -> None:
        """Record how a send attempt ended: 'sent' (accepted, with the provider's id), 'failed' or 'error' (unknown)."""
        if outcome not in ("sent", "failed", "error"):
            raise ValueError(f"unknown send outcome {outcome!r}")
        with self.transaction() as db:
            db.execute(
                "UPDATE sends SET outcome = ?, provider_id = COALESCE(?, provider_id), error = ?, finished_at = ? WHERE id = ?",
                (outcome, provider_id, error[:500] if error else None, self._now(at), send_id),
            )

    def settle_sends(self, alert_id: int, provider_id: str, *, at: datetime | None = None) -> None:
        """The provider has `provider_id` for this alert: its unfinished attempt (if any) is the one that went out."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM sends WHERE alert_id = ? AND outcome IN ('pending', 'error') ORDER BY id DESC LIMIT 1",
                (alert_id,),
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE sends SET outcome = 'sent', provider_id = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
                    (provider_id, self._now(at), row[0]),
                )

    def sends(self, alert_id: int | None = None) -> list[dict[str, Any]]:
        """Send attempts (of one alert, or all), oldest first, as plain dicts."""
        if alert_id is None:
            rows = self._all("SELECT * FROM sends ORDER BY id")
        else:
            rows = self._all("SELECT * FROM sends WHERE alert_id = ? ORDER BY id", (alert_id,))
        return [dict(row) for row in rows]

    def count_sent_since(self, when: datetime, recipient: str | None = None) -> int:
        """Alerts sent at or after `when` (to `recipient` only, if given)."""
        sql = "SELECT COUNT(*) FROM alerts WHERE state = 'sent' AND sent_at >= ?"
        params: list[Any] = [to_text(when)]
        if recipient is not None:
            sql += " AND recipient = ?"
            params.append(recipient)
        row = self._one(sql, params)
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- runs

    def start_run(self) -> int:
        """Record a cycle starting now, by this worker; its id."""
        worker = self.worker_id
        with self.transaction() as db:
            row = db.execute(
                "INSERT INTO runs (started_at, status, worker_id) VALUES (?, 'running', ?) RETURNING id", (self._now(), worker)
            ).fetchone()
            return int(row[0])

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any]) -> None:
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, stats = ? WHERE id = ?",
                (self._now(), status, json.dumps(stats, default=str), run_id),
            )
            if cursor.rowcount == 0:
                raise StoreError(f"finish_run: no run {run_id}")

    def interrupt_unfinished_runs(self) -> int:
        """Close runs left 'running' by a process that died (SIGKILL, power cut) as 'interrupted'.

        Dead workers are looked for first (`reap_workers`); then the runs of workers that
        are gone, this store's own and those recorded by no worker are closed, while the
        runs of live daemons are left alone. Returns how many were closed.
        """
        self.reap_workers(force=True)
        me = self._worker_id if self._worker_id is not None else -1
        with self.transaction() as db:
            cursor = db.execute(
                """UPDATE runs SET status = 'interrupted', finished_at = ?
                   WHERE status = 'running'
                     AND (worker_id IS NULL OR worker_id = ? OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = runs.worker_id))""",
                (self._now(), me),
            )
            return int(cursor.rowcount)

    def recent_runs(self, limit: int = 10, offset: int = 0) -> list[RunRow]:
        """Cycle reports, newest first (`offset` pages through them)."""
        rows = self._all("SELECT * FROM runs ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))
        return [
            RunRow(
                id=row["id"],
                started_at=from_text(row["started_at"]),
                finished_at=from_text(row["finished_at"]),
                status=row["status"],
                stats=json.loads(row["stats"] or "{}"),
            )
            for row in rows
        ]


    # ================================================================ LLM usage and the estimate cache
    # (added for the frontier pricer, deals/agents/frontier.py; tables from migration m004)

    def record_llm_call(
        self,
        *,
        agent: str,
        provider: str,
        model: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_usd: float = 0.0,
        ok: bool = True,
        error: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Record one LLM call (paid or failed); returns its id."""
        with self.transaction() as db:
            row = db.execute(
                """INSERT INTO llm_calls (at, agent, provider, model, tokens_in, tokens_out, cost_usd, ok, error)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (self._now(at), agent, provider, model, int(tokens_in), int(tokens_out), float(cost_usd), int(ok),
                 error[:500] if error else None),
            ).fetchone()  # fmt: skip
            return int(row[0])

    def cached_estimate(self, key: str) -> float | None:
        """The cached price under `key`, or None."""
        row = self._one("SELECT price FROM estimates_cache WHERE key = ?", (key,))
        return float(row[0]) if row else None

    def cache_estimate(self, key: str, *, model: str, prompt_version: str, price: float) -> None:
        """Remember a price under `key` (an existing entry is replaced)."""
        with self.transaction() as db:
            db.execute(
                upsert("estimates_cache", ("key", "model", "prompt_version", "price", "created_at"), key=("key",)),
                (key, model, prompt_version, float(price), self._now()),
            )

    def llm_usage(self, since: datetime | None = None) -> LLMUsage:
        """LLM calls, tokens and estimated cost since `since` (all time when None), per agent/provider/model."""
        rows = self._all(
            """SELECT agent, provider, model, COUNT(*) AS calls, SUM(1 - ok) AS failures,
                      SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out, SUM(cost_usd) AS cost_usd
               FROM llm_calls WHERE at >= ? GROUP BY agent, provider, model ORDER BY agent, provider, model""",
            (to_text(since) if since else "",),
        )
        usage = [
            LLMUsageRow(
                agent=row["agent"], provider=row["provider"], model=row["model"], calls=row["calls"],
                failures=row["failures"] or 0, tokens_in=row["tokens_in"] or 0, tokens_out=row["tokens_out"] or 0,
                cost_usd=round(row["cost_usd"] or 0.0, 8),
            )  # fmt: skip
            for row in rows
        ]
        return LLMUsage(
            since=since,
            calls=sum(r.calls for r in usage),
            failures=sum(r.failures for r in usage),
            tokens_in=sum(r.tokens_in for r in usage),
            tokens_out=sum(r.tokens_out for r in usage),
            cost_usd=round(sum(r.cost_usd for r in usage), 8),
            rows=usage,
        )


class LLMUsageRow(BaseModel):
    """LLM usage of one agent with one provider and model."""

    agent: str
    provider: str
    model: str
    calls: int
    failures: int = Field(description="calls that raised or returned an unusable answer")
    tokens_in: int
    tokens_out: int
    cost_usd: float = Field(description="estimated, from deals.framework.llm.costs")


class LLMUsage(BaseModel):
    """Totals of `Store.llm_usage`, and one row per agent/provider/model."""

    since: datetime | None = None
    calls: int = 0
    failures: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    rows: list[LLMUsageRow] = Field(default_factory=list)


__all__ = ["ALERT_STATES", "AlertRow", "HistoryRow", "RunRow", "Store", "StoreError"]
__all__ += ["LLMUsage", "LLMUsageRow"]  # the LLM usage block
# ================================================================ end of the LLM usage block
