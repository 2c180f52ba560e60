"""The memory store: migrations, every method, transactions, threads, on both engines.

Every test that takes `store` or `store_target` runs twice: on a SQLite file and on a
PostgreSQL schema (the session's server, tests/fakes/postgres.py). SQLite-only behaviour
(WAL, a damaged file) and PostgreSQL-only behaviour (URLs, passwords, a lost connection)
have their own tests at the end.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from deals.framework.models import Deal, Estimate, FeedEntry, FeedState, Neighbour, Opportunity
from deals.memory.dialect import PgConnection, dialect_of
from deals.memory.migrations import MIGRATIONS, applied_migrations, apply_migrations
from deals.memory.store import Store, StoreError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_target, clock):
    with Store(store_target, clock=clock) as s:
        yield s


def raw_connection(target):
    """A bare connection to the store's database, as the migrations get it."""
    if isinstance(target, str):
        return PgConnection(target)
    return sqlite3.connect(target, isolation_level=None)


def deal(key: str = "k1", price: float = 50.0, description: str = "Acme cordless drill 20V") -> Deal:
    return Deal(entry_key=key, product_description=description, price=price, url=f"https://example.com/{key}")


def estimate(price: float = 120.0, pricer: str = "knn") -> Estimate:
    return Estimate(
        price=price,
        pricer=pricer,
        parts={"knn": price, "frontier": price + 10},
        neighbours=[Neighbour(id="p1", title="Drill", price=110.0, similarity=0.91, category="Tools")],
        note="frontier missing",
        excluded=1,
        tokens_in=12,
        tokens_out=3,
        cost_usd=0.0004,
    )


def opportunity(key: str = "k1", price: float = 50.0, est: float = 120.0) -> Opportunity:
    return Opportunity(deal=deal(key, price), estimate=estimate(est), discount=est - price)


def entry(key: str, feed: str = "http://feed/a") -> FeedEntry:
    return FeedEntry(key=key, feed_url=feed, title=key, url=f"https://example.com/{key}")


# --------------------------------------------------------------------------- schema


def test_fresh_database_is_migrated(store):
    names = [fn.__name__ for fn in MIGRATIONS]
    assert names[0] == "m001_initial" and names == sorted(names)
    assert applied_migrations(store.db) == names
    tables = set(store.tables())
    assert {"feeds", "seen_entries", "deals", "estimates", "opportunities", "alerts", "runs", "migrations"} <= tables
    assert {"sends", "llm_calls", "estimates_cache", "workers", "claims"} <= tables


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    with Store(tmp_path / "deals.db") as store:
        assert store.engine == "sqlite"
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("foreign_keys") == 1
        assert store.pragma("busy_timeout") >= 1000


def test_reopening_applies_nothing_twice(store_target):
    Store(store_target).close()
    with Store(store_target) as again:
        assert apply_migrations(again.db) == []
        count = again.db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0]
        assert count == len(MIGRATIONS)


def test_database_at_an_older_migration_is_upgraded_and_keeps_its_data(store_target):
    db = raw_connection(store_target)
    assert apply_migrations(db, MIGRATIONS[:1]) == ["m001_initial"]
    db.execute(
        "INSERT INTO deals (entry_key, description, price, url, created_at) VALUES ('old', 'Old deal', 9.5, 'https://x', ?)",
        ("2024-01-01T00:00:00.000000Z",),
    )
    assert "alerts" not in dialect_of(db).tables(db)
    db.close()

    with Store(store_target) as store:
        assert applied_migrations(store.db) == [fn.__name__ for fn in MIGRATIONS]
        assert store.get_deal("old") == Deal(entry_key="old", product_description="Old deal", price=9.5, url="https://x")
        opp_id = store.save_opportunity(Opportunity(deal=store.get_deal("old"), estimate=estimate(40), discount=30.5))
        assert store.enqueue_alert(opp_id, "+15551230000", "hi") > 0


def test_a_failing_migration_is_rolled_back_and_not_recorded(store_target):
    def m999_broken(db):
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    db = raw_connection(store_target)
    with pytest.raises(RuntimeError):
        apply_migrations(db, [*MIGRATIONS, m999_broken])
    assert "m999_broken" not in applied_migrations(db)
    assert "half_done" not in dialect_of(db).tables(db)
    assert len(applied_migrations(db)) == len(MIGRATIONS)
    db.close()


def test_two_processes_migrating_one_store_at_once_apply_each_migration_once(store_target):
    """Two daemons starting together on an empty store: the migrations are applied once, not raced."""
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def open_store() -> None:
        try:
            start.wait()
            Store(store_target).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    with Store(store_target) as store:
        assert applied_migrations(store.db) == [fn.__name__ for fn in MIGRATIONS]


def test_open_default_lives_under_deals_home(deals_home):
    with Store.open_default() as store:
        assert store.path == deals_home / "deals.db"
    assert (deals_home / "deals.db").exists()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "deals.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="damaged"):
        Store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100  # left as it was


def test_a_closed_store_says_so(tmp_path):
    store = Store(tmp_path / "deals.db")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.get_deal("k")


# --------------------------------------------------------------------------- feeds and entries


def test_feed_state_round_trip_and_update(store):
    assert store.feed_state("http://feed/a") is None
    state = FeedState(
        url="http://feed/a",
        etag='W/"abc"',
        last_modified="Sat, 01 Mar 2025 10:00:00 GMT",
        error_count=2,
        last_error="HTTP 500",
        next_attempt_at=T0 + timedelta(minutes=10),
        last_success_at=T0 - timedelta(hours=1),
        unhealthy=True,
    )
    store.save_feed_state(state)
    assert store.feed_state("http://feed/a") == state
    healed = state.model_copy(update={"error_count": 0, "last_error": None, "next_attempt_at": None, "unhealthy": False})
    store.save_feed_state(healed)
    store.save_feed_state(FeedState(url="http://feed/0"))
    assert store.feed_states() == [FeedState(url="http://feed/0"), healed]


def test_naive_datetimes_are_taken_as_utc(store):
    store.save_feed_state(FeedState(url="u", next_attempt_at=datetime(2025, 1, 2, 3, 4, 5)))
    assert store.feed_state("u").next_attempt_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_unseen_keeps_order_drops_duplicates_and_handles_many_keys(store):
    store.mark_seen([entry("b"), entry("d", feed="http://feed/b")])
    assert store.unseen(["a", "b", "c", "a", "d", "e"]) == ["a", "c", "e"]
    many = [f"key-{i}" for i in range(1200)]
    store.mark_seen([entry(k) for k in many[::2]])
    assert store.unseen(many) == many[1::2]
    store.mark_seen([entry("b")])  # marking again is harmless
    assert store.unseen([]) == []


# --------------------------------------------------------------------------- deals and estimates


def test_deals_estimates_and_what_is_still_unpriced(store, clock):
    store.save_deal(deal("k1"))
    clock.advance(seconds=1)
    store.save_deal(deal("k2", 20.0))
    clock.advance(seconds=1)
    store.save_deal(deal("k3", 30.0))
    assert store.get_deal("k2") == deal("k2", 20.0)
    assert store.get_deal("nope") is None
    assert [d.entry_key for d in store.unpriced_deals(10)] == ["k1", "k2", "k3"]
    assert [d.entry_key for d in store.unpriced_deals(2)] == ["k1", "k2"]

    store.save_estimate("k2", estimate(99.0))
    assert store.get_estimate("k2") == estimate(99.0)
    assert [d.entry_key for d in store.unpriced_deals(10)] == ["k1", "k3"]
    store.save_estimate("k2", estimate(101.0, pricer="ensemble"))  # replaced, not duplicated
    assert store.get_estimate("k2").pricer == "ensemble"
    assert store.get_estimate("k1") is None

    store.save_deal(deal("k1", 45.0, "Acme drill, new description"))  # update keeps one row
    assert store.get_deal("k1").price == 45.0
    assert len(store.unpriced_deals(10)) == 2


def test_an_estimate_needs_its_deal(store):
    with pytest.raises(StoreError, match="no deal 'ghost'"):
        store.save_estimate("ghost", estimate())


# --------------------------------------------------------------------------- opportunities and history


def test_save_opportunity_is_idempotent_and_stores_deal_and_estimate(store):
    first = store.save_opportunity(opportunity("k1"))
    again = store.save_opportunity(opportunity("k1", price=40.0))
    other = store.save_opportunity(opportunity("k2"))
    assert first == again != other
    assert store.get_deal("k1") == deal("k1")
    assert store.get_estimate("k1") == estimate()
    assert store.get_opportunity(first) == opportunity("k1")
    assert store.get_opportunity(12345) is None


def test_opportunities_without_alerts_for_crash_recovery(store, clock):
    a = store.save_opportunity(opportunity("a"))
    clock.advance(hours=1)
    b = store.save_opportunity(opportunity("b"))
    clock.advance(hours=1)
    c = store.save_opportunity(opportunity("c"))
    store.enqueue_alert(a, "+1", "x")
    store.enqueue_alert(a, "+2", "x")
    store.enqueue_alert(b, "+1", "x")

    assert [i for i, _ in store.opportunities_without_alerts(["+1", "+2"])] == [b, c]
    assert [i for i, _ in store.opportunities_without_alerts(["+1"])] == [c]
    assert [i for i, _ in store.opportunities_without_alerts(["+1", "+2"], since=T0 + timedelta(minutes=90))] == [c]
    assert store.opportunities_without_alerts([]) == []
    (_, recovered), *_ = store.opportunities_without_alerts(["+3"])
    assert recovered == opportunity("a")


def test_history_lists_newest_first_with_alert_status(store, clock):
    a = store.save_opportunity(opportunity("a", 50.0, 200.0))
    clock.advance(minutes=5)
    b = store.save_opportunity(opportunity("b", 10.0, 40.0))
    clock.advance(minutes=5)
    c = store.save_opportunity(opportunity("c", 10.0, 40.0))
    store.mark_alert(store.enqueue_alert(a, "+1", "x"), "sent", provider_id="SM1")
    store.enqueue_alert(a, "+2", "x")
    store.mark_alert(store.enqueue_alert(b, "+1", "x"), "failed", error="HTTP 400")

    rows = store.history(limit=2)
    assert [r.description for r in rows] == ["Acme cordless drill 20V"] * 2
    assert [r.id for r in rows] == [c, b]
    assert rows[0].alert_status == "none" and rows[0].alerts == {}
    assert rows[1].alert_status == "failed 1"
    oldest = store.history()[-1]
    assert oldest.id == a
    assert (oldest.price, oldest.estimate, oldest.discount) == (50.0, 200.0, 150.0)
    assert oldest.discount_rel == pytest.approx(0.75)
    assert oldest.url == "https://example.com/a" and oldest.pricer == "knn"
    assert oldest.alerts == {"queued": 1, "sent": 1}
    assert oldest.alert_status == "queued 1, sent 1"
    assert oldest.created_at == T0


# --------------------------------------------------------------------------- outbox


def test_outbox_enqueue_mark_and_count(store, clock):
    opp = store.save_opportunity(opportunity("k1"))
    alert_id = store.enqueue_alert(opp, "+15550001", "body one")
    assert store.enqueue_alert(opp, "+15550001", "another body") == alert_id  # idempotent
    second = store.enqueue_alert(opp, "+15550002", "body two")
    assert [a.id for a in store.alerts(["queued"])] == [alert_id, second]

    clock.advance(minutes=1)
    store.mark_alert(alert_id, "sending")
    store.mark_alert(alert_id, "sending", error="HTTP 503")
    store.mark_alert(alert_id, "sending", error="HTTP 503 again", count_attempt=False)
    row = store.get_alert(alert_id)
    assert (row.state, row.attempts, row.last_error, row.body) == ("sending", 2, "HTTP 503 again", "body one")
    assert row.updated_at == T0 + timedelta(minutes=1) and row.created_at == T0

    sent_at = T0 + timedelta(minutes=2)
    store.mark_alert(alert_id, "sent", provider_id="SMabc", at=sent_at)
    row = store.get_alert(alert_id)
    assert (row.state, row.provider_id, row.sent_at, row.attempts) == ("sent", "SMabc", sent_at, 2)
    store.mark_alert(second, "skipped", error="daily cap")
    assert [a.id for a in store.alerts(["sent", "skipped"])] == [alert_id, second]
    assert store.alerts("sent")[0].id == alert_id
    assert store.alerts(["failed"]) == []

    assert store.count_sent_since(sent_at) == 1
    assert store.count_sent_since(sent_at + timedelta(microseconds=1)) == 0
    assert store.count_sent_since(T0, recipient="+15550001") == 1
    assert store.count_sent_since(T0, recipient="+15550002") == 0


def test_outbox_rejects_bad_input(store):
    opp = store.save_opportunity(opportunity())
    alert_id = store.enqueue_alert(opp, "+1", "x")
    with pytest.raises(ValueError, match="unknown alert state"):
        store.mark_alert(alert_id, "delivered")
    with pytest.raises(ValueError, match="unknown alert state"):
        store.alerts(["bogus"])
    with pytest.raises(StoreError, match="no alert 999"):
        store.mark_alert(999, "sent")
    with pytest.raises(StoreError, match="no opportunity 999"):
        store.enqueue_alert(999, "+1", "x")
    with pytest.raises(store.dialect.IntegrityError):  # the CHECK constraint backs the validation
        store.db.execute("UPDATE alerts SET state = 'lost'")


# --------------------------------------------------------------------------- runs and transactions


def test_runs(store, clock):
    first = store.start_run()
    clock.advance(seconds=42)
    store.finish_run(first, "ok", {"entries": 12, "deals": 3, "errors": []})
    second = store.start_run()
    runs = store.recent_runs(5)
    assert [r.id for r in runs] == [second, first]
    assert runs[0].status == "running" and runs[0].finished_at is None
    assert runs[1].stats == {"entries": 12, "deals": 3, "errors": []}
    assert runs[1].finished_at - runs[1].started_at == timedelta(seconds=42)
    assert len(store.recent_runs(1)) == 1
    with pytest.raises(StoreError):
        store.finish_run(999, "ok", {})


def test_transaction_is_atomic_and_nests(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.save_deal(deal("a"))
            with store.transaction():
                store.save_deal(deal("b"))
            raise RuntimeError("crash mid-way")
    assert store.get_deal("a") is None and store.get_deal("b") is None
    with store.transaction():
        store.save_deal(deal("a"))
        store.save_estimate("a", estimate())
    assert store.get_estimate("a") is not None


def test_a_failed_write_leaves_earlier_state_intact(store):
    store.save_opportunity(opportunity("k1"))
    with pytest.raises(StoreError):
        with store.transaction():
            store.save_deal(deal("k2"))
            store.save_estimate("missing", estimate())
    assert store.get_deal("k2") is None
    assert store.get_deal("k1") is not None


# --------------------------------------------------------------------------- concurrency


def test_threads_share_one_store_and_another_connection_reads_meanwhile(store_target):
    store = Store(store_target)
    reader = Store(store_target)  # another connection, as `deals history` in another process
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def writer(worker: int) -> None:
        try:
            start.wait()
            for i in range(25):
                key = f"w{worker}-{i}"
                store.mark_seen([entry(key)])
                opp = store.save_opportunity(opportunity(key))
                alert = store.enqueue_alert(opp, "+1", key)
                store.mark_alert(alert, "sending")
                store.mark_alert(alert, "sent", provider_id=f"SM{key}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def read() -> None:
        try:
            start.wait()
            for _ in range(50):
                reader.history(limit=5)
                reader.unseen(["w0-0", "w1-1"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert store.count_sent_since(datetime(2000, 1, 1, tzinfo=timezone.utc)) == 100
    assert len(reader.history(limit=1000)) == 100
    assert reader.unseen([f"w{w}-{i}" for w in range(4) for i in range(25)]) == []
    store.close()
    reader.close()


def test_a_postgresql_restart_costs_one_failed_call_and_loses_nothing(postgres, pg_url, clock):
    """The daemon runs for weeks; the server it writes to restarts under it (an upgrade, a
    failover). The call that meets the dead connection fails with a clear StoreError, the
    next one opens a new connection, and everything written before the restart is there."""
    with Store(pg_url, clock=clock) as store:
        before = store.save_opportunity(opportunity("before"))
        postgres.restart()
        try:  # the old connection may or may not notice at once; either way no crash, no loss
            store.save_opportunity(opportunity("during"))
        except StoreError as exc:
            assert "connection to PostgreSQL was lost" in str(exc) and "opened again" in str(exc)
        after = store.save_opportunity(opportunity("after"))
        assert {before, after} <= {row.id for row in store.history(limit=10)}
