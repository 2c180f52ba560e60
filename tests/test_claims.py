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


class OlderSnapshot:
    """B's connection, whose claim query reads the deals as a snapshot taken before A's
    estimate would: the query's "no estimate yet" condition is dropped (and counted)."""

    CONDITION = "NOT EXISTS (SELECT 1 FROM estimates e WHERE e.deal_key = d.entry_key)"

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.rewritten = inner, 0

    def execute(self, sql: str, params=()):  # noqa: ANN001, ANN201
        if self.CONDITION in sql:
            self.rewritten += 1
            sql = sql.replace(self.CONDITION, "1 = 1")
        return self.inner.execute(sql, params)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)


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
