"""The schema of the memory store as numbered migrations (the simonw/llm habit).

Each migration is a small function `mNNN_what(db)` registered in `MIGRATIONS` in order.
`apply_migrations` runs the ones whose names are not yet in the `migrations` table, each
in its own transaction together with the row that records it, so a crash mid-upgrade
leaves the database at the previous migration. Never edit an applied migration: add the
next one.

Datetimes are ISO-8601 UTC text (`2025-01-31T12:00:00.000000Z`), so text order is time
order.

One list for both engines: a migration receives a connection of either kind (a
`sqlite3.Connection`, or a `deals.memory.dialect.PgConnection`) and writes its SQL in the
portable subset described in `deals.memory.dialect` (TEXT / INTEGER / REAL /
`INTEGER PRIMARY KEY AUTOINCREMENT` in DDL, `?` placeholders, `ON CONFLICT` instead of
`INSERT OR ...`). A migration that must differ per engine asks `dialect_of(db)`.
On PostgreSQL an advisory lock keeps two processes from migrating one schema at once;
on SQLite each migration's `BEGIN IMMEDIATE` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from deals.memory.dialect import dialect_of

Connection = Any  # a sqlite3.Connection or a deals.memory.dialect.PgConnection
Migration = Callable[[Connection], None]

MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration."""
    MIGRATIONS.append(fn)
    return fn


def _run(db: Connection, *statements: str) -> None:
    # One statement per execute(): executescript() would COMMIT the open transaction.
    for statement in statements:
        db.execute(statement)


@migration
def m001_initial(db: Connection) -> None:
    """Feed state, seen entries, deals, estimates, opportunities and cycle runs."""
    _run(
        db,
        """CREATE TABLE feeds (
            url TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            error_count INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_attempt_at TEXT,
            last_success_at TEXT,
            unhealthy INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE seen_entries (
            key TEXT PRIMARY KEY,
            feed_url TEXT NOT NULL,
            first_seen TEXT NOT NULL
        )""",
        """CREATE TABLE deals (
            entry_key TEXT PRIMARY KEY,
            description TEXT NOT NULL,
            price REAL NOT NULL,
            url TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE estimates (
            deal_key TEXT PRIMARY KEY REFERENCES deals(entry_key) ON DELETE CASCADE,
            pricer TEXT NOT NULL,
            price REAL NOT NULL,
            parts TEXT NOT NULL DEFAULT '{}',
            note TEXT,
            neighbours TEXT NOT NULL DEFAULT '[]',
            excluded INTEGER NOT NULL DEFAULT 0,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE opportunities (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            deal_key TEXT NOT NULL UNIQUE REFERENCES deals(entry_key) ON DELETE CASCADE,
            price REAL NOT NULL,
            estimate REAL NOT NULL,
            discount REAL NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            stats TEXT NOT NULL DEFAULT '{}'
        )""",
    )


@migration
def m002_alert_outbox(db: Connection) -> None:
    """The alert outbox: one row per (opportunity, recipient), written before sending.

    States: queued -> sending -> sent | failed, or skipped (daily cap, stale, recipient
    removed). `sending` means "a send was attempted and its outcome is not yet known":
    it is reconciled against the provider before anything is resent.
    """
    _run(
        db,
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            opportunity_id INTEGER NOT NULL REFERENCES opportunities(id) ON DELETE CASCADE,
            recipient TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'skipped')),
            attempts INTEGER NOT NULL DEFAULT 0,
            provider_id TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (opportunity_id, recipient)
        )""",
    )


@migration
def m003_lookup_indexes(db: Connection) -> None:
    """Indexes for the daemon's frequent queries (outbox by state, history by date)."""
    _run(
        db,
        "CREATE INDEX alerts_state ON alerts(state, id)",
        "CREATE INDEX alerts_sent_at ON alerts(sent_at) WHERE state = 'sent'",
        "CREATE INDEX opportunities_created_at ON opportunities(created_at)",
        "CREATE INDEX deals_created_at ON deals(created_at)",
        "CREATE INDEX seen_entries_feed ON seen_entries(feed_url)",
    )


@migration
def m004_llm_calls_and_estimate_cache(db: Connection) -> None:
    """LLM usage (one row per call, paid or failed) and the frontier pricer's estimate cache.

    `estimates_cache.key` is the sha256 of what determines the answer (description,
    model, prompt version; see `deals.agents.frontier.cache_key`), so the same deal is
    never paid for twice.
    """
    _run(
        db,
        """CREATE TABLE llm_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            agent TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            ok INTEGER NOT NULL DEFAULT 1,
            error TEXT
        )""",
        "CREATE INDEX llm_calls_at ON llm_calls(at)",
        """CREATE TABLE estimates_cache (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            price REAL NOT NULL,
            created_at TEXT NOT NULL
        )""",
    )


@migration
def m005_pricing_attempts(db: Connection) -> None:
    """Failed pricing attempts per deal, so a deal that never prices is given up across restarts."""
    _run(
        db,
        "ALTER TABLE deals ADD COLUMN pricing_attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deals ADD COLUMN last_pricing_error TEXT",
    )


@migration
def m006_send_attempts(db: Connection) -> None:
    """Every attempt to hand an alert to the provider, so that a duplicate SMS is never invisible."""
    _run(
        db,
        """CREATE TABLE sends (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            outcome TEXT NOT NULL DEFAULT 'pending',
            provider_id TEXT,
            error TEXT,
            pid INTEGER
        )""",
        "CREATE INDEX sends_alert ON sends(alert_id)",
    )


@migration
def m007_dedupe_keys(db: Connection) -> None:
    """Seen entries under the new dedupe key as well (http/https, www. and a trailing slash ignored).

    Entries seen before keep matching, so nothing already seen (and texted) comes back as new.
    """
    from deals.framework.urls import dedupe_key

    rows = db.execute("SELECT key, feed_url, first_seen FROM seen_entries WHERE key LIKE 'http%'").fetchall()
    added = []
    for key, feed_url, first_seen in rows:
        try:
            added.append((dedupe_key(key), feed_url, first_seen))
        except ValueError:
            continue
    db.executemany("INSERT INTO seen_entries (key, feed_url, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", added)


@migration
def m008_estimate_intervals(db: Connection) -> None:
    """Each estimate's interval and distribution, and the planner's decision with its reason."""
    _run(
        db,
        "ALTER TABLE estimates ADD COLUMN low REAL",
        "ALTER TABLE estimates ADD COLUMN high REAL",
        "ALTER TABLE estimates ADD COLUMN interval_level REAL",
        "ALTER TABLE estimates ADD COLUMN quantiles TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE estimates ADD COLUMN alert_below REAL",
        "ALTER TABLE estimates ADD COLUMN decision TEXT",
    )


@migration
def m009_workers_and_claims(db: Connection) -> None:
    """Several daemons on one store (see `deals.memory.claims`).

    `workers`: one row per live store user that claims work (a daemon), with its host
    identity, pid and the database's clock at its last heartbeat (epoch seconds).
    `claims`: who is working on what now: a feed being read (`feed`, url), a deal being
    priced (`price`, entry key), an alert being sent or reconciled (`send`, alert id).
    A worker's claims go with it (ON DELETE CASCADE) when it stops or is found dead.
    `runs.worker_id`: which daemon ran the cycle, so a starting daemon closes only the
    runs of daemons that died. `store_copy`: progress of `deals store migrate` into this
    store (resumable, verified).
    """
    _run(
        db,
        """CREATE TABLE workers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            process_start REAL,
            command TEXT,
            started_at TEXT NOT NULL,
            heartbeat REAL NOT NULL
        )""",
        """CREATE TABLE claims (
            kind TEXT NOT NULL CHECK (kind IN ('feed', 'price', 'send')),
            key TEXT NOT NULL,
            worker_id INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
            claimed_at TEXT NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
        "CREATE INDEX claims_worker ON claims(worker_id)",
        "ALTER TABLE runs ADD COLUMN worker_id INTEGER",
        """CREATE TABLE store_copy (
            name TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            copied INTEGER NOT NULL DEFAULT 0,
            last_key TEXT,
            done INTEGER NOT NULL DEFAULT 0,
            checksum TEXT,
            updated_at TEXT NOT NULL
        )""",
    )


@migration
def m010_entries(db: Connection) -> None:
    """Every new feed entry with what the feed claimed and what became of it; price history by product.

    One row per entry key (the key of `seen_entries` and `deals`): the feed, title, link,
    the feed's own "was/list" price, the canonical product key (`deals.framework.product_key`),
    the deal price when the scanner took it (a sighting of that product), and the decision:
    the scanner's rejection ("not a single product", with its reason), the planner's
    ("deal", "not cheap enough", "low confidence", "too good to be true"), "pricing failed",
    or null while it waits to be priced. The decision is kept here as well as in `estimates`
    so that the dashboard filters by it through an index. Deals stored before this migration
    are copied in (title = description, outcome "deal").
    """
    _run(
        db,
        """CREATE TABLE entries (
            key TEXT PRIMARY KEY,
            feed_url TEXT NOT NULL,
            title TEXT NOT NULL,
            url TEXT NOT NULL,
            retailer TEXT,
            list_price REAL,
            product_key TEXT NOT NULL,
            price REAL,
            outcome TEXT NOT NULL CHECK (outcome IN ('deal', 'rejected')),
            decision TEXT,
            reason TEXT,
            seen_at TEXT NOT NULL
        )""",
        "CREATE INDEX entries_seen_at ON entries(seen_at, key)",
        "CREATE INDEX entries_feed ON entries(feed_url, seen_at)",
        "CREATE INDEX entries_decision ON entries(decision, seen_at)",
        "CREATE INDEX entries_product ON entries(product_key, seen_at)",
    )
    from deals.framework.product_key import product_key  # the same key new sightings get

    old = db.execute(
        """SELECT d.entry_key, COALESCE(s.feed_url, ''), d.description, d.url, d.price, e.decision, d.created_at
           FROM deals d LEFT JOIN seen_entries s ON s.key = d.entry_key LEFT JOIN estimates e ON e.deal_key = d.entry_key"""
    ).fetchall()
    db.executemany(
        """INSERT INTO entries (key, feed_url, title, url, product_key, price, outcome, decision, seen_at)
           VALUES (?, ?, ?, ?, ?, ?, 'deal', ?, ?)""",
        [(key, feed, title, url, product_key(title, url), price, decision, at) for key, feed, title, url, price, decision, at in old],
    )


@migration
def m011_watches(db: Connection) -> None:
    """Recipients' own settings and watches added from the CLI or the dashboard; who each opportunity is for.

    `routes` is decided once, when the opportunity is stored (by `deals.agents.watchlist`):
    one row per recipient it goes to, with why. The outbox (`alerts`) then holds one alert
    per route, exactly once. A watch's id comes from `INSERT ... RETURNING id`.
    """
    _run(
        db,
        """CREATE TABLE recipients (
            number TEXT PRIMARY KEY,
            daily_cap INTEGER,
            quiet_start TEXT,
            quiet_end TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE watches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient TEXT NOT NULL,
            rule TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX watches_recipient ON watches(recipient)",
        """CREATE TABLE routes (
            opportunity_id INTEGER NOT NULL REFERENCES opportunities(id) ON DELETE CASCADE,
            recipient TEXT NOT NULL,
            why TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (opportunity_id, recipient)
        )""",
        "CREATE INDEX routes_created_at ON routes(created_at)",
    )


@migration
def m012_feed_controls(db: Connection) -> None:
    """Feeds added or disabled from the dashboard, on top of `feeds.urls` in the configuration."""
    _run(
        db,
        """CREATE TABLE feed_controls (
            url TEXT PRIMARY KEY,
            added INTEGER NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1,
            updated_at TEXT NOT NULL
        )""",
    )


@migration
def m013_dashboard_indexes(db: Connection) -> None:
    """Indexes for the dashboard's lists: opportunities and runs newest first, the outbox by time, costs by day."""
    _run(
        db,
        "CREATE INDEX opportunities_created_id ON opportunities(created_at, id)",
        "CREATE INDEX alerts_opportunity ON alerts(opportunity_id)",
        "CREATE INDEX alerts_created ON alerts(created_at, id)",
        "CREATE INDEX alerts_state_created ON alerts(state, created_at)",
        "CREATE INDEX llm_calls_agent_at ON llm_calls(agent, at)",
        "CREATE INDEX estimates_created_at ON estimates(created_at)",
    )


@migration
def m014_alerts_by_recipient(db: Connection) -> None:
    """The daily cap, counted in every alert claim: a recipient's alerts by state and time."""
    _run(db, "CREATE INDEX alerts_recipient_state ON alerts(recipient, state, sent_at)")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def applied_migrations(db: Connection) -> list[str]:
    """Names of the migrations already applied, in the order they were applied."""
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    # applied_at has microseconds and migrations apply one after another; the name breaks a tie
    return [row[0] for row in db.execute("SELECT name FROM migrations ORDER BY applied_at, name").fetchall()]


def apply_migrations(db: Connection, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the pending migrations in order; return the names applied now.

    `db` must be in autocommit mode (`isolation_level=None` for sqlite3): each migration
    runs in its own write transaction (`BEGIN IMMEDIATE` on SQLite; on PostgreSQL under an
    advisory lock), so two processes opening the same store at once do not both apply it.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    dialect = dialect_of(db)
    applied_now: list[str] = []
    with dialect.migration_lock(db):
        done_before = set(applied_migrations(db))
        for fn in migrations:
            if fn.__name__ in done_before:  # opening an up-to-date store writes nothing
                continue
            db.execute(dialect.begin)
            try:
                done = db.execute("SELECT 1 FROM migrations WHERE name = ?", (fn.__name__,)).fetchone()
                if not done:
                    fn(db)
                    db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (fn.__name__, _now()))
                    applied_now.append(fn.__name__)
                db.execute("COMMIT")
            except BaseException:
                try:
                    db.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
                    pass
                raise
    return applied_now


__all__ = ["MIGRATIONS", "Migration", "applied_migrations", "apply_migrations", "migration"]
