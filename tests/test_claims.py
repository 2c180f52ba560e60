"""Claims of deals to price (deals/memory/claims.py), on both engines: never one deal to two workers.

Each worker is its own `Store` (its own connection and worker row), as each daemon is.
Four claimers on threads price every deal exactly once, on a real SQLite file and a real
PostgreSQL schema. The race that benchmarks/bench_store.py found on PostgreSQL (a claim
query whose snapshot predates another worker's whole claim-price-release wins the deal
just priced: 8 of 2,000 deals claimed twice, one run in four) is replayed
deterministically by a connection whose claim query reads without that worker's estimate.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from deals.framework.models import Deal, Estimate
from deals.memory.store import Store

DEALS = 240


def seed(target, n: int) -> None:
    with Store(target) as store, store.transaction():
        for i in range(n):
            store.save_deal(Deal(entry_key=f"c{i:04d}", product_description=f"Contended {i}", price=5.0, url=f"https://c/{i}"))


def priced(store: Store, key: str) -> None:
    store.save_estimate(key, Estimate(price=1.0, pricer="test"))


def test_four_claimers_price_every_deal_exactly_once(store_target):
    seed(store_target, DEALS)
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer() -> None:
        with Store(store_target) as mine:
            mine.register_worker()
            start.wait(60)
            while got := mine.claim_unpriced_deals(4):
                with mine.transaction():
                    for d in got:
                        priced(mine, d.entry_key)
                with lock:
                    claimed.extend(d.entry_key for d in got)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(claimer) for _ in range(4)]:
            future.result(120)  # a claimer's error fails the test
    twice = [key for key, count in Counter(claimed).items() if count > 1]
    assert twice == [] and len(claimed) == DEALS
    with Store(store_target) as store:
        assert store.unpriced_deals(10) == [] and store.claims() == [] and store.workers() == []


class Recording:
    """A connection that keeps the SQL it runs (after `rewrite`)."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.queries = inner, []

    def rewrite(self, sql: str) -> str:
        return sql

    def execute(self, sql: str, params=()):  # noqa: ANN001, ANN201
        sql = self.rewrite(sql)
        self.queries.append((sql, list(params)))
        return self.inner.execute(sql, params)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)


class OlderSnapshot(Recording):
    """B's connection, whose claim query reads the deals as a snapshot taken before A's
    estimate would: the query's "no estimate yet" condition is dropped (and counted)."""

    CONDITION = "NOT EXISTS (SELECT 1 FROM estimates e WHERE e.deal_key = d.entry_key)"
    rewritten = 0

    def rewrite(self, sql: str) -> str:
        if self.CONDITION in sql:
            self.rewritten += 1
            sql = sql.replace(self.CONDITION, "1 = 1")
        return sql


def test_a_deal_priced_after_the_claim_query_read_it_is_not_claimed(store_target, monkeypatch):
    """On PostgreSQL a claim query reads its candidates from the statement's snapshot, taken
    before it locks them: worker A can claim deal c0000, price it and release it (storing
    the estimate releases the claim) between B's snapshot and B's claim insert, which then
    meets no conflict. Replayed here by B reading without A's estimate: B must still not
    get the priced deal, nor keep a claim on it."""
    seed(store_target, 2)
    with Store(store_target) as a, Store(store_target) as b:
        assert [d.entry_key for d in a.claim_unpriced_deals(1)] == ["c0000"]
        priced(a, "c0000")
        assert a.claims() == []
        older = OlderSnapshot(b.db)
        monkeypatch.setattr(b, "_db", older)
        got = b.claim_unpriced_deals(2)
        assert older.rewritten == 1
        assert [d.entry_key for d in got] == ["c0001"]
        assert [(c["kind"], c["key"], c["worker_id"]) for c in b.claims()] == [("price", "c0001", b.worker_id)]


def test_a_claimed_deal_goes_to_no_other_worker_until_released(store_target):
    seed(store_target, 3)
    with Store(store_target) as a, Store(store_target) as b:
        assert [d.entry_key for d in a.claim_unpriced_deals(1)] == ["c0000"]
        assert [d.entry_key for d in b.claim_unpriced_deals(1)] == ["c0001"]
        assert b.claim_unpriced_deals(1)[0].entry_key == "c0002"
        assert b.claim_unpriced_deals(5) == []
        a.release_claims("price", ["c0000"])
        assert [d.entry_key for d in b.claim_unpriced_deals(5)] == ["c0000"]


def test_only_deals_stored_since_the_bound_are_claimed(store_target, monkeypatch):
    """The planner claims only deals stored in the last `planner.price_within_days` days (an index
    range on deals.created_at, so a claim does not scan the whole history); given-up ones stay out."""
    day0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    now = [day0]
    with Store(store_target, clock=lambda: now[0]) as store:
        for day in range(6):
            now[0] = day0 + timedelta(days=day)
            store.save_deal(Deal(entry_key=f"d{day}", product_description=f"Day {day}", price=5.0, url=f"https://d/{day}"))
        for _ in range(3):
            store.record_pricing_failure("d5", "HTTP 500")  # given up
        since = now[0] - timedelta(days=2)
        assert [d.entry_key for d in store.unpriced_deals(10, since=since, max_attempts=3)] == ["d3", "d4"]
        seen = Recording(store.db)
        monkeypatch.setattr(store, "_db", seen)
        assert [d.entry_key for d in store.claim_unpriced_deals(10, since=since, max_attempts=3)] == ["d3", "d4"]
        monkeypatch.setattr(store, "_db", seen.inner)
        assert store.claim_unpriced_deals(10, since=since) == [store.get_deal("d5")]  # no attempts bound: tried again
        assert [d.entry_key for d in store.claim_unpriced_deals(10)] == ["d0", "d1", "d2"]  # no time bound: the old ones too
        if store.engine == "sqlite":  # the claim query reads a range of the created_at index
            [(sql, params)] = [(q, p) for q, p in seen.queries if "FROM deals d" in q]
            plan = " ".join(str(row[-1]) for row in store.db.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "deals_created_at (created_at>?)" in plan, plan


def test_several_senders_together_keep_one_daily_cap(store_target):
    """Four workers claim one recipient's 12 queued alerts at once under a cap of 5: five are
    claimed in all (sent or being sent both count), not five each; another recipient is not
    held back, and yesterday's sends do not count."""
    from deals.framework.models import Opportunity

    day_start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    with Store(store_target) as store:
        seed(store_target, 13)
        ids = []
        for i in range(13):
            deal = store.get_deal(f"c{i:04d}")
            opp = store.save_opportunity(Opportunity(deal=deal, estimate=Estimate(price=50.0, pricer="test"), discount=45.0))
            ids.append(store.enqueue_alert(opp, "+15550001" if i < 12 else "+15550002", f"alert {i}"))
        old = ids[0]  # sent yesterday: outside today's count
        assert store.claim_alert(old, at=day_start - timedelta(hours=3)) == "claimed"
        store.mark_alert(old, "sent", provider_id="SMold", at=day_start - timedelta(hours=2), expect="sending")
        store.release_claims("send", [old])
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def sender(share: list[int]) -> None:
        with Store(store_target) as mine:
            mine.register_worker()
            start.wait(60)
            for alert_id in share:
                got = mine.claim_alert(alert_id, cap=(5, day_start))
                with lock:
                    outcomes.append((alert_id, got))

    today = ids[1:12]
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(sender, today[k::4]) for k in range(4)]:
            future.result(120)
    assert Counter(o for _, o in outcomes) == {"claimed": 5, "capped": 6}
    with Store(store_target) as store:
        assert store.claim_alert(ids[12], cap=(5, day_start)) == "claimed"  # the other recipient
        assert store.claim_alert(ids[12], cap=(5, day_start)) == "taken"  # already sending
        assert store.claim_alert(ids[1], cap=(0, day_start)) in {"capped", "taken"}


def test_a_worker_taken_for_dead_registers_again_on_its_next_claim(store_target):
    """A daemon paused past worker_timeout_s (a laptop lid, SIGSTOP) has its row reaped by
    another; its next claim must register it again, not fail on the foreign key."""
    with Store(store_target) as a, Store(store_target) as b:
        first = a.worker_id
        with a.transaction() as db:  # a's heartbeat is long past
            db.execute("UPDATE workers SET heartbeat = heartbeat - 100000 WHERE id = ?", (first,))
        assert b.reap_workers(force=True) == 1
        mine, _ = a.claim_feeds(["https://feed.example/a.xml"], limit=1)
        assert mine == ["https://feed.example/a.xml"] and a.worker_id != first
        ids = {a.worker_id, b.worker_id}
        assert {w.id for w in b.workers()} == ids and len(ids) == 2
