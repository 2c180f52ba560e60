"""The planner: one cycle over the real fixture feeds (served on 127.0.0.1), the real reader,
scanner (rules), store and messenger (console notifier), and a small deterministic pricer
registered through the real pricer registry."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

from deals.agents import notifiers
from deals.agents.messenger import Messenger
from deals.agents.notifiers import ConsoleNotifier
from deals.agents.planner import CycleReport, Planner, is_opportunity
from deals.agents.rss_reader import RssReader
from deals.agents.scanner import Scanner
from deals.framework.errors import PricingError
from deals.framework.models import Estimate
from deals.framework.settings import PlannerSettings, Settings
from deals.memory.store import Store
from deals.pricer.base import Pricer, create_pricer, register
from tests.fakes.daemon import serve_feeds
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture

# The rule-based scanner finds these 8 deals in the fixture feeds (prices as the feeds state them).
FIXTURE_PRICES = sorted([7.46, 29.0, 26.0, 19.0, 1.99, 69.99, 8.49, 39.99])


class TablePricer(Pricer):
    """Estimates by keyword (first match wins), else `default`; records how it was called."""

    name = "test-table"

    def __init__(
        self,
        table: dict[str, float] | None = None,
        default: float = 100.0,
        fail: Sequence[str] = (),
        fail_batches: bool = False,
        thread_safe: bool = False,
        delay_s: float = 0.0,
        interrupt_once: bool = False,
    ) -> None:
        self.table = table or {}
        self.default = default
        self.fail = tuple(fail)
        self.fail_batches = fail_batches
        self.thread_safe = thread_safe
        self.delay_s = delay_s
        self.interrupt_once = interrupt_once
        self.calls: list[str] = []
        self.batches: list[int] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        self.calls.append(description)
        if any(word in description for word in self.fail):
            raise PricingError(f"cannot price {description[:30]!r}")
        value = next((v for k, v in self.table.items() if k in description), self.default)
        return Estimate(price=value, pricer=self.name)

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.batches.append(len(descriptions))
        try:
            if self.interrupt_once:
                self.interrupt_once = False
                raise KeyboardInterrupt("the process dies while pricing")
            time.sleep(self.delay_s)
            if self.fail_batches and len(descriptions) > 1:
                raise PricingError("batch endpoint down")
            return [self.price(text) for text in descriptions]
        finally:
            with self._lock:
                self.active -= 1


@register("test-table")
def _create_table_pricer(settings: Settings, **options: object) -> TablePricer:
    return TablePricer(**options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


@pytest.fixture
def urls(feed_server):  # noqa: F811
    return serve_feeds(feed_server)


@pytest.fixture
def store(deals_home):
    with Store(deals_home / "deals.db") as s:
        yield s


class Rig:
    """A planner over real agents, with the console's output captured."""

    def __init__(self, store: Store, settings: Settings | None = None, **pricer: object) -> None:
        self.settings = settings or Settings()
        self.store = store
        self.out = io.StringIO()
        self.pricer = create_pricer("test-table", self.settings, **pricer)
        self.messenger = Messenger(self.settings, store, notifier=ConsoleNotifier(self.out))
        self.stop = threading.Event()
        self.planner = Planner(
            self.settings,
            store,
            reader=RssReader(self.settings),
            scanner=Scanner(self.settings),
            pricer=self.pricer,
            messenger=self.messenger,
            should_stop=self.stop.is_set,
        )

    def alerts_printed(self) -> list[str]:
        return [line for line in self.out.getvalue().splitlines() if line.startswith("[deals alert]")]


def stored_deals(store: Store) -> list[tuple[str, float]]:
    rows = store.db.execute("SELECT entry_key, price FROM deals ORDER BY price").fetchall()
    return [(r[0], r[1]) for r in rows]


def opportunity_keys(store: Store) -> set[str]:
    return {r[0] for r in store.db.execute("SELECT deal_key FROM opportunities")}


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    ("price", "estimate", "expected", "why"),
    [
        (50.0, 100.0, True, "saves $50 and 50%"),
        (70.0, 100.0, True, "exactly $30 and 30%"),
        (71.0, 100.0, False, "saves $29: 29% is under 30%"),
        (5.0, 20.0, False, "75% off but only $15: cheap items need real dollars too"),
        (800.0, 1000.0, False, "$200 off but only 20%: dear items need a real share too"),
        (100.0, 100.0, False, "no discount"),
        (120.0, 100.0, False, "dearer than the estimate"),
    ],
)
def test_opportunities_need_both_the_absolute_and_the_relative_discount(price, estimate, expected, why):
    assert is_opportunity(price, estimate, 25.0, 0.3) is expected, why


def test_zero_thresholds_still_require_a_saving():
    assert is_opportunity(9.99, 10.0, 0, 0)
    assert not is_opportunity(10.0, 10.0, 0, 0)


# --------------------------------------------------------------------------- a full cycle


def test_a_cycle_reads_scans_prices_decides_stores_and_notifies(store, urls, feed_server):  # noqa: F811
    # $100 for everything except the vest, worth $30: $19 saves $11 (37%) but not $25.
    rig = Rig(store, table={"Vest": 30.0})
    report = rig.planner.run_cycle(urls)

    assert isinstance(report, CycleReport) and report.status == "ok" and report.errors == 0
    assert report.feeds == report.feeds_ok == 5 and report.feeds_failed == 0
    # the escaped copy of the DealNews feed repeats its three entries: read once
    assert report.entries_read == report.new_entries == 50
    assert report.deals == 8 and report.rejected == 42
    assert sorted(p for _, p in stored_deals(store)) == FIXTURE_PRICES
    assert report.priced == 8 and all(store.get_estimate(k) for k, _ in stored_deals(store))
    expected = {k for k, p in stored_deals(store) if is_opportunity(p, 30.0 if "Vest" in store.get_deal(k).product_description else 100.0, 25, 0.3)}
    assert len(expected) == 7 and opportunity_keys(store) == expected
    assert report.opportunities == 7 and report.alerts_sent == 7
    assert len(rig.alerts_printed()) == 7
    assert store.unseen([k for k, _ in stored_deals(store)]) == []
    # the run row holds the same numbers
    run = store.recent_runs(1)[0]
    assert run.id == report.run_id and run.status == "ok" and run.finished_at is not None
    assert run.stats["deals"] == 8 and run.stats["opportunities"] == 7 and run.stats["alerts_sent"] == 7
    # the cycle line says what happened
    line = report.summary()
    assert "50 entries read, 50 new" in line and "8 deals" in line and "7 opportunities" in line and "7 sent" in line


def test_a_second_cycle_uses_conditional_gets_and_repeats_nothing(store, urls, feed_server):  # noqa: F811
    rig = Rig(store)
    first = rig.planner.run_cycle(urls)
    calls = len(rig.pricer.calls)
    second = rig.planner.run_cycle(urls)

    assert first.opportunities == 8 and second.status == "ok"
    assert second.entries_read == 0 and second.deals == 0 and second.priced == 0 and second.alerts_sent == 0
    assert len(rig.pricer.calls) == calls  # nothing re-priced
    assert len(rig.alerts_printed()) == 8  # nothing re-sent
    last = feed_server.requests[-len(urls) :]
    assert all(r.headers.get("If-None-Match") for r in last)  # the ETags were saved and sent


def test_feed_urls_default_to_the_configured_feeds(store, urls):
    settings = Settings()
    settings.feeds.urls = urls[:1]
    report = Rig(store, settings).planner.run_cycle()
    assert report.feeds == 1 and report.deals == 3


def test_a_failing_feed_is_counted_and_the_others_are_read(store, urls, feed_server):  # noqa: F811
    broken = feed_server.route("/broken.xml", status=500)
    report = Rig(store).planner.run_cycle([broken, *urls])
    assert report.status == "partial" and report.feeds_failed == 1 and report.feeds_ok == 5
    assert report.deals == 8 and report.alerts_sent == 8
    assert report.errors == 1 and "HTTP 500" in report.error_messages[0]
    assert store.feed_state(broken).error_count == 1
    # when no feed at all can be read, the cycle failed (`run --once` exits 1), and says why
    gone = feed_server.route("/gone.xml", status=404)
    rig = Rig(store)
    report = rig.planner.run_cycle([broken, gone])
    assert report.status == "failed" and not report.ok and report.feeds_failed == 1 and report.feeds_skipped == 1  # broken: in backoff
    assert "no feed could be read" in report.error_messages
    report = rig.planner.run_cycle([broken, gone])  # both in backoff now: still nothing read
    assert report.status == "failed" and report.feeds_skipped == 2 and report.feeds_failed == 0


# --------------------------------------------------------------------------- pricing


def test_a_deal_that_cannot_be_priced_is_skipped_and_given_up_after_three_attempts(store, urls):
    rig = Rig(store, fail=["Samoa"])
    reports, samoa_calls = [], []
    for _ in range(4):
        reports.append(rig.planner.run_cycle(urls))
        samoa_calls.append(sum("Samoa" in c for c in rig.pricer.calls))

    assert [r.pricing_failed for r in reports] == [1, 1, 1, 0]  # then no longer tried
    assert reports[0].priced == 7 and reports[0].opportunities == 7 and reports[0].status == "partial"
    assert "cannot price" in reports[0].error_messages[0]
    # cycle 1: in its batch, then alone; cycles 2 and 3: alone; cycle 4: not at all
    assert samoa_calls == [2, 3, 4, 4]
    assert len(store.unpriced_deals(10)) == 1  # still stored, never lost


def test_the_give_up_count_survives_a_restart(store, urls, deals_home):
    rig = Rig(store, fail=["Samoa"])
    rig.planner.run_cycle(urls)
    rig.planner.run_cycle(urls)
    assert [d.entry_key for d in store.unpriced_deals(10, max_attempts=3)]  # two failures so far: still pending
    with Store(deals_home / "deals.db") as reopened:  # a new process: a fresh planner, the same database
        again = Rig(reopened, fail=["Samoa"])
        assert again.planner.run_cycle(urls).pricing_failed == 1  # the third and last attempt
        assert again.planner.run_cycle(urls).pricing_failed == 0
        assert reopened.unpriced_deals(10, max_attempts=3) == []
        [(attempts, error)] = reopened.db.execute(
            "SELECT pricing_attempts, last_pricing_error FROM deals WHERE pricing_attempts > 0"
        ).fetchall()
        assert attempts == 3 and "cannot price" in error


def test_a_failed_batch_is_retried_deal_by_deal(store, urls):
    rig = Rig(store, fail_batches=True, fail=["Ground Beef"])
    report = rig.planner.run_cycle(urls)
    assert report.priced == 7 and report.pricing_failed == 1
    assert rig.pricer.batches == [8]  # one batch call, then the deals one by one
    assert len(rig.pricer.calls) == 8


def test_a_crash_between_scanning_and_pricing_loses_no_deal(store, urls):
    rig = Rig(store, interrupt_once=True)
    with pytest.raises(KeyboardInterrupt):
        rig.planner.run_cycle(urls)
    run = store.recent_runs(1)[0]
    assert run.status == "failed" and "KeyboardInterrupt" in run.stats["error_messages"][-1]
    assert len(stored_deals(store)) == 8 and len(store.unpriced_deals(100)) == 8
    assert opportunity_keys(store) == set()

    # After a restart the feeds are 304 and the entries seen, yet the stored deals get priced.
    restarted = Rig(store)
    report = restarted.planner.run_cycle(urls)
    assert report.entries_read == 0 and report.deals == 0
    assert report.priced == 8 and report.opportunities == 8 and report.alerts_sent == 8


def test_deals_stored_longer_ago_than_price_within_days_are_not_priced(deals_home, urls):
    now = [datetime.now(timezone.utc)]
    with Store(deals_home / "deals.db", clock=lambda: now[0]) as store:
        with pytest.raises(KeyboardInterrupt):
            Rig(store, interrupt_once=True).planner.run_cycle(urls)  # 8 deals stored, none priced
        now[0] += timedelta(days=8)  # a week later (planner.price_within_days: 7): the offers are likely gone
        assert Rig(store).planner.run_cycle(urls).priced == 0 and len(store.unpriced_deals(100)) == 8
        longer = Settings.model_validate({"planner": {"price_within_days": 10}})
        assert Rig(store, longer).planner.run_cycle(urls).priced == 8


def test_at_most_max_deals_per_cycle_are_priced_and_the_rest_wait(store, urls):
    settings = Settings(planner=PlannerSettings(max_deals_per_cycle=3))
    rig = Rig(store, settings)
    counts = [rig.planner.run_cycle(urls).priced for _ in range(4)]
    assert counts == [3, 3, 2, 0]
    assert len(rig.alerts_printed()) == 8


def test_thread_safe_pricers_run_batches_concurrently_up_to_the_limit(store, urls):
    settings = Settings(planner=PlannerSettings(concurrency=3))
    rig = Rig(store, settings, thread_safe=True, delay_s=0.2)
    report = rig.planner.run_cycle(urls)
    assert report.priced == 8
    assert rig.pricer.batches and sum(rig.pricer.batches) == 8 and len(rig.pricer.batches) == 3
    assert rig.pricer.max_active == 3


def test_pricers_that_are_not_thread_safe_are_called_one_batch_at_a_time(store, urls):
    settings = Settings(planner=PlannerSettings(concurrency=4))
    rig = Rig(store, settings, delay_s=0.05)
    assert rig.planner.run_cycle(urls).priced == 8
    assert rig.pricer.max_active == 1 and rig.pricer.batches == [8]


# --------------------------------------------------------------------------- stopping and notifying


def test_a_stop_request_ends_the_cycle_between_steps_and_the_next_cycle_resumes(store, urls, feed_server):  # noqa: F811
    rig = Rig(store)
    slow = feed_server.route("/slow.xml", body=b"<rss version='2.0'><channel><title>t</title></channel></rss>", delay_s=0.3)

    def stop_when_the_slow_feed_is_asked_for():  # SIGTERM arrives while the feeds are being read
        deadline = time.monotonic() + 10
        while not feed_server.requests_to("/slow.xml") and time.monotonic() < deadline:
            time.sleep(0.01)
        rig.stop.set()

    watcher = threading.Thread(target=stop_when_the_slow_feed_is_asked_for)
    watcher.start()
    report = rig.planner.run_cycle([*urls, slow])
    watcher.join()
    assert report.status == "stopped" and report.deals == 8 and report.priced == 0 and report.alerts_sent == 0
    assert store.recent_runs(1)[0].status == "stopped"
    assert len(store.unpriced_deals(100)) == 8 and store.unseen([k for k, _ in stored_deals(store)]) == []

    rig.stop.clear()
    resumed = rig.planner.run_cycle([*urls, slow])
    assert resumed.entries_read == 0 and resumed.priced == 8 and resumed.alerts_sent == 8


def test_alerts_left_pending_by_an_earlier_cycle_go_out_even_without_new_deals(store, urls):
    rig = Rig(store)
    rig.planner.run_cycle(urls)
    # an opportunity stored by a cycle that died before it queued its alerts
    key = stored_deals(store)[0][0]
    store.db.execute("DELETE FROM alerts WHERE opportunity_id = (SELECT id FROM opportunities WHERE deal_key = ?)", (key,))
    report = rig.planner.run_cycle(urls)
    assert report.deals == 0 and report.opportunities == 0 and report.alerts_sent == 1
    assert len(rig.alerts_printed()) == 9


class LLMPricer(Pricer):
    """Asks a real LLM client (through the real SDK, to a fake server) for every price, as the frontier does."""

    name = "test-llm"

    def __init__(self, llm) -> None:  # type: ignore[no-untyped-def]
        self.llm = llm

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        from pydantic import BaseModel

        class Answer(BaseModel):
            price: float

        result = self.llm.structured("price it", description, Answer)
        return Estimate(price=result.value.price, pricer=self.name, tokens_in=result.tokens_in, cost_usd=result.cost_usd)


def test_the_cycle_counts_every_llm_call_whichever_agent_made_it(store, urls, monkeypatch):
    from deals.framework.llm import LLMClient
    from deals.framework.settings import LLMSettings
    from tests.fakes.llm_server import FakeLLMServer, answer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-planner")
    settings = Settings()  # the scanner works by rules: its LLM calls are zero, the pricer's are all of them
    with FakeLLMServer(answer({"price": 500.0}, tokens_in=400, tokens_out=5)) as server:
        llm = LLMClient.from_settings(LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0))
        messenger = Messenger(settings, store, notifier=ConsoleNotifier(io.StringIO()))
        planner = Planner(
            settings, store, reader=RssReader(settings), scanner=Scanner(settings), pricer=LLMPricer(llm), messenger=messenger
        )
        try:
            report = planner.run_cycle(urls)
        finally:
            llm.close()
        calls = len(server.requests)
    assert report.priced == 8 and calls == 8
    assert report.llm_calls == calls and report.tokens_in == 400 * calls and report.cost_usd > 0
    assert store.recent_runs(1)[0].stats["llm_calls"] == calls
    assert f"LLM {calls} calls" in report.summary()
