"""Faults at every edge: feeds that time out, fail, are malformed or huge; an LLM that times
out or talks nonsense; Twilio answering 500, 429 or 400. Each is handled, the cycle
completes, and its numbers are in the cycle's log line and its `runs` row.

Real agents throughout (reader, scanner with the real OpenAI SDK, messenger with the real
Twilio SDK), the fakes on 127.0.0.1, and the real constant pricer with a fixed value."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from deals.agents import notifiers
from deals.agents.planner import CycleReport, Planner
from deals.framework.orchestrator import Orchestrator
from deals.framework.settings import Settings
from deals.memory.store import Store
from deals.pricer.constant import ConstantPricer
from tests.fakes.daemon import FEEDS, scanner_reply, serve_feeds
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.llm_server import FakeLLMServer, answer, garbage, hang
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ALICE = "+15551110001"
SENDER = "+15550000000"


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


@pytest.fixture
def store(deals_home):
    with Store(deals_home / "deals.db") as s:
        yield s


@pytest.fixture
def llm():
    with FakeLLMServer(answer(scanner_reply)) as server:
        yield server


@pytest.fixture
def twilio(monkeypatch):
    with FakeTwilio() as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_FROM_NUMBER", SENDER)
        yield fake


def make_settings(llm: FakeLLMServer, twilio: FakeTwilio, **sections: dict) -> Settings:
    data = {
        "llm": {"provider": "openai-compatible", "model": "local", "base_url": f"{llm.url}/v1", "timeout_s": 0.5, "max_retries": 0},
        "messenger": {"to": [ALICE], "base_url": twilio.url, "retry_base_s": 0, "max_attempts": 2, "daily_cap": 100},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


def run_logged(planner: Planner, urls: list[str], caplog: pytest.LogCaptureFixture) -> tuple[CycleReport, str]:
    """One cycle through the orchestrator, as `deals run --once` does; the report and its log line."""
    reports: list[CycleReport] = []
    orchestrator = Orchestrator(lambda: reports.append(planner.run_cycle(urls)) or reports[-1], planner.settings.scheduler)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="deals.framework.orchestrator"):
        assert orchestrator.run_once() == 0  # the cycle completed
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"cycle {reports[-1].run_id} "))
    return reports[-1], line


def planner_for(settings: Settings, store: Store) -> Planner:
    return Planner.from_settings(settings, store, pricer=ConstantPricer(100.0))


# --------------------------------------------------------------------------- feeds


def test_feeds_that_time_out_fail_are_malformed_or_huge_are_counted_and_the_cycle_completes(
    store, llm, twilio, feed_server, caplog  # noqa: F811
):
    good = feed_server.serve_file("/good.xml", FEEDS / "dealnews-recent-2026-10.xml")
    slow = feed_server.route("/slow.xml", body=b"<rss/>", delay_s=5)
    broken = feed_server.route("/500.xml", status=500)
    garbled = feed_server.route("/garbled.xml", body=b"this is not xml at all {{{ <<", content_type="text/plain")
    cut = (FEEDS / "techbargains-2026-10.xml").read_bytes()
    truncated = feed_server.route("/truncated.xml", body=cut[: len(cut) // 2])  # malformed, yet 3 items readable
    huge = feed_server.route("/huge.xml", stream_bytes=20_000_000)
    settings = make_settings(llm, twilio, feeds={"timeout_s": 0.5})

    report, line = run_logged(planner_for(settings, store), [good, slow, broken, garbled, truncated, huge], caplog)

    assert report.feeds == 6 and report.feeds_ok == 2 and report.feeds_failed == 4 and report.feeds_unhealthy == 0
    assert report.entries_read == 3 + 3  # the good feed's three, and the three items before the cut
    assert report.deals == 6 and report.alerts_sent == report.opportunities == 6
    assert report.status == "partial" and report.errors == 4
    messages = " | ".join(report.error_messages)
    for url, cause in [(slow, "time"), (broken, "HTTP 500"), (garbled, "not a readable feed"), (huge, "5000000")]:
        assert url in messages, url
        assert cause in messages.split(url, 1)[1].split("|", 1)[0], (url, messages)
    assert "6 feeds" in line and "4 failed" in line and "4 errors" in line and "6 sent" in line
    assert store.recent_runs(1)[0].stats["feeds_failed"] == 4
    assert feed_server.stats("/huge.xml").bytes_sent < 20_000_000  # the reader stopped reading
    assert {s.url: s.error_count for s in store.feed_states()} == {good: 0, slow: 1, broken: 1, garbled: 1, truncated: 0, huge: 1}


def test_a_feed_failing_again_and_again_is_marked_unhealthy_and_backed_off(store, llm, twilio, feed_server, caplog):  # noqa: F811
    broken = feed_server.route("/500.xml", status=500)
    urls = [*serve_feeds(feed_server, ("dealnews-recent-2026-10.xml",)), broken]
    settings = make_settings(llm, twilio, feeds={"backoff_base_s": 0, "unhealthy_after": 2})
    planner = planner_for(settings, store)
    run_logged(planner, urls, caplog)
    report, line = run_logged(planner, urls, caplog)
    assert report.feeds_failed == 1 and report.feeds_unhealthy == 1 and "1 unhealthy" in line
    assert store.feed_state(broken).unhealthy


# --------------------------------------------------------------------------- the LLM


@pytest.mark.parametrize(("fault", "cause"), [(hang(5), "timed out"), (garbage(), "")], ids=["timeout", "garbage"])
def test_an_llm_that_times_out_or_talks_garbage_leaves_the_entries_to_the_rules(store, llm, twilio, feed_server, caplog, fault, cause):  # noqa: F811
    llm.respond(fault)
    urls = serve_feeds(feed_server)
    report, line = run_logged(planner_for(make_settings(llm, twilio), store), urls, caplog)

    assert report.llm_calls >= 1 and len(llm.requests) >= 1
    assert report.deals == 8 and report.priced == 8 and report.alerts_sent == 8  # the rules found them all
    assert report.status == "partial" and report.errors == report.llm_calls
    assert all(m.startswith("scan: batch") for m in report.error_messages)
    assert cause.lower() in " ".join(report.error_messages).lower()
    assert f"LLM {report.llm_calls} calls" in line and f"{report.errors} errors" in line


# --------------------------------------------------------------------------- Twilio


def sent_bodies(twilio: FakeTwilio) -> Counter:
    return Counter((m["to"], m["body"]) for m in twilio.created)


def test_twilio_500_leaves_alerts_waiting_and_the_next_cycle_sends_each_once(store, llm, twilio, feed_server, caplog):  # noqa: F811
    twilio.fail(500, times=2)  # both attempts of the first alert; then Twilio is back
    urls = serve_feeds(feed_server)
    planner = planner_for(make_settings(llm, twilio), store)
    report, line = run_logged(planner, urls, caplog)

    assert report.opportunities == 8 and report.alerts_sent == 0 and report.alerts_waiting == 8
    assert report.status == "partial" and report.errors >= 1 and "HTTP 500" in report.error_messages[0]
    assert "0 sent" in line and "8 waiting" in line
    assert twilio.created == []

    later, line = run_logged(planner, urls, caplog)
    assert later.alerts_sent == 8 and later.alerts_waiting == 0 and later.status == "ok"
    assert len(twilio.created) == 8 and max(sent_bodies(twilio).values()) == 1
    assert {a.state for a in store.alerts()} == {"sent"}


def test_twilio_429_is_retried_within_the_cycle(store, llm, twilio, feed_server, caplog):  # noqa: F811
    twilio.fail(429)
    report, line = run_logged(planner_for(make_settings(llm, twilio), store), serve_feeds(feed_server), caplog)
    assert report.alerts_sent == 8 and report.alerts_failed == 0 and report.status == "ok"
    assert [r.status for r in twilio.posts()].count(429) == 1 and len(twilio.created) == 8
    assert "8 sent, 0 failed" in line


def test_twilio_400_fails_that_alert_only(store, llm, twilio, feed_server, caplog):  # noqa: F811
    twilio.fail(400)
    report, line = run_logged(planner_for(make_settings(llm, twilio), store), serve_feeds(feed_server), caplog)
    assert report.alerts_sent == 7 and report.alerts_failed == 1 and report.status == "partial"
    assert "HTTP 400" in report.error_messages[0] and "7 sent, 1 failed" in line
    assert [r.status for r in twilio.posts()].count(400) == 1  # not retried
    assert Counter(a.state for a in store.alerts()) == {"sent": 7, "failed": 1}
