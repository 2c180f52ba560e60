"""The orchestrator (APScheduler, signals, one cycle at a time) and the daemon's CLI commands
(`deals run`, `deals history`, `deals notify-test`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deals.agents import notifiers
from deals.agents.watchlist import mask
from deals.cli import app
from deals.framework.models import Deal, Estimate, FeedEntry, Opportunity
from deals.framework.orchestrator import Orchestrator, describe
from deals.framework.settings import SchedulerSettings
from deals.memory.store import Store
from tests.fakes.daemon import REPO, clean_env, copy_home, seeded_home_template, serve_feeds, write_config
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ALICE = "+15551110001"


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


class Result:
    """What a fake cycle returns: the orchestrator logs its summary() and reads its ok."""

    def __init__(self, n: int, ok: bool = True) -> None:
        self.n, self.ok = n, ok

    def summary(self) -> str:
        return f"fake cycle {self.n} done"


class Cycles:
    """A cycle function that counts its calls and how many ran at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.started = threading.Event()
        self.finished: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> Result:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            n = self.calls
        self.started.set()
        time.sleep(self.seconds)
        with self._lock:
            self.active -= 1
            self.finished.append(time.monotonic())
        return Result(n)


def fast(interval_s: float = 0.1, **kwargs: object) -> SchedulerSettings:
    return SchedulerSettings(interval_minutes=interval_s / 60, jitter_s=0, **kwargs)


def run_in_thread(orchestrator: Orchestrator) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(orchestrator.run_forever()), daemon=True)
    thread.start()
    return thread, codes


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# --------------------------------------------------------------------------- one cycle


def test_run_once_runs_one_cycle_logs_its_summary_and_exits_0(caplog):
    cycles = Cycles()
    with caplog.at_level(logging.INFO, logger="deals.framework.orchestrator"):
        assert Orchestrator(cycles, fast()).run_once() == 0
    assert cycles.calls == 1
    assert "fake cycle 1 done" in caplog.text


def test_a_crashing_cycle_is_logged_and_run_once_exits_1(caplog):
    def boom() -> None:
        raise RuntimeError("disk on fire")

    orchestrator = Orchestrator(boom, fast())
    with caplog.at_level(logging.ERROR, logger="deals.framework.orchestrator"):
        assert orchestrator.run_once() == 1
    assert "cycle crashed" in caplog.text and "disk on fire" in caplog.text
    assert orchestrator.failures == 1


def test_a_cycle_that_reports_failure_exits_1():
    assert Orchestrator(lambda: Result(1, ok=False), fast()).run_once() == 1


def test_describe_uses_the_cycle_summary():
    assert describe(Result(7)) == "fake cycle 7 done"
    assert describe(None) == "cycle finished"


# --------------------------------------------------------------------------- the schedule


def test_the_daemon_runs_a_first_cycle_at_start_then_on_the_interval_until_stopped():
    cycles = Cycles()
    orchestrator = Orchestrator(cycles, fast(0.15), install_signals=False, poll_s=0.02)
    started = time.monotonic()
    thread, codes = run_in_thread(orchestrator)
    wait_for(lambda: cycles.calls >= 3)
    orchestrator.stop()
    thread.join(10)
    assert codes == [0] and not thread.is_alive()
    assert cycles.finished[0] - started < 1.0  # the first cycle did not wait for the interval
    gaps = [b - a for a, b in zip(cycles.finished, cycles.finished[1:])]
    assert all(gap > 0.1 for gap in gaps), gaps  # then one per interval, not a burst


def test_without_run_at_start_the_first_cycle_waits_one_interval():
    cycles = Cycles()
    orchestrator = Orchestrator(cycles, fast(0.5, run_at_start=False), install_signals=False, poll_s=0.02)
    started = time.monotonic()
    thread, _ = run_in_thread(orchestrator)
    wait_for(lambda: cycles.calls >= 1)
    orchestrator.stop()
    thread.join(10)
    assert cycles.finished[0] - started >= 0.45


def test_cycles_longer_than_the_interval_never_overlap_and_do_not_pile_up(caplog):
    cycles = Cycles(seconds=0.35)
    orchestrator = Orchestrator(cycles, fast(0.05), install_signals=False, poll_s=0.02)
    thread, _ = run_in_thread(orchestrator)
    time.sleep(1.3)
    orchestrator.stop()
    thread.join(10)
    assert cycles.max_active == 1
    assert 2 <= cycles.calls <= 5  # ~1.3 s / 0.35 s, not 1.3 s / 0.05 s


def test_stop_waits_for_the_running_cycle_to_finish():
    cycles = Cycles(seconds=0.5)
    orchestrator = Orchestrator(cycles, fast(60), install_signals=False, poll_s=0.02)
    thread, codes = run_in_thread(orchestrator)
    assert cycles.started.wait(10)
    orchestrator.stop()
    thread.join(10)
    assert codes == [0] and cycles.calls == 1 and len(cycles.finished) == 1


def test_sigterm_stops_the_daemon_after_the_running_cycle(caplog):
    cycles = Cycles(seconds=0.4)
    orchestrator = Orchestrator(cycles, fast(60), poll_s=0.02)
    before = signal.getsignal(signal.SIGTERM)

    def terminate_when_running() -> None:
        cycles.started.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_running)
    killer.start()
    with caplog.at_level(logging.INFO, logger="deals.framework.orchestrator"):
        assert orchestrator.run_forever() == 0  # in the main thread, where signals arrive
    killer.join()
    assert cycles.calls == 1 and len(cycles.finished) == 1  # the cycle ran to its end
    assert "SIGTERM received" in caplog.text and "daemon stopped after 1 cycles" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_no_logging_handler_is_added_per_cycle():
    root = logging.getLogger()
    before = list(root.handlers)
    orchestrator = Orchestrator(Cycles(), fast(0.05), install_signals=False, poll_s=0.02)
    thread, _ = run_in_thread(orchestrator)
    wait_for(lambda: orchestrator.cycles >= 5)
    orchestrator.stop()
    thread.join(10)
    assert root.handlers == before


def test_the_job_is_configured_for_one_instance_coalesced_with_jitter_that_does_not_drift(monkeypatch):
    orchestrator = Orchestrator(Cycles(), SchedulerSettings(interval_minutes=30, jitter_s=60))
    scheduler = orchestrator.build_scheduler()
    job = scheduler.get_job("deals-cycle")
    assert job.max_instances == 1 and job.coalesce is True and job.misfire_grace_time == 1800
    # the ticks stay on the 30-minute grid: a week of them is a week (APScheduler's jitter drifts)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ticks, previous = [], None
    for _ in range(336):
        previous = job.trigger.get_next_fire_time(previous, previous or start)
        ticks.append(previous)
    assert ticks[-1] - ticks[0] == timedelta(minutes=30 * 335)
    # the delay is taken inside the job (not by the cycle at start), and a stop ends it without a cycle
    waits: list[float] = []
    monkeypatch.setattr(orchestrator.stopping, "wait", lambda s: waits.append(s) or True)
    assert orchestrator._jittered_cycle() is not None and waits == [] and orchestrator.cycles == 1
    assert orchestrator._jittered_cycle() is None and 0 <= waits[0] <= 60 and orchestrator.cycles == 1


# --------------------------------------------------------------------------- CLI: history and notify-test


def seed_history(home: Path) -> None:
    with Store(home / "deals.db") as store:
        for n, (price, estimate) in enumerate([(40.0, 100.0), (10.0, 60.0)], start=1):
            deal = Deal(entry_key=f"k{n}", product_description=f"Product number {n}, a thing", price=price, url=f"https://shop.example/{n}")
            opp = Opportunity(deal=deal, estimate=Estimate(price=estimate, pricer="knn"), discount=estimate - price)
            oid = store.save_opportunity(opp)
            alert = store.enqueue_alert(oid, ALICE, f"alert {n}")
            if n == 1:
                store.mark_alert(alert, "sending")
                store.mark_alert(alert, "sent", provider_id="SM1")


def test_history_lists_opportunities_as_json(deals_home):
    seed_history(deals_home)
    result = CliRunner().invoke(app, ["history", "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["url"] for r in rows] == ["https://shop.example/2", "https://shop.example/1"]  # newest first
    first = rows[1]
    assert first["price"] == 40.0 and first["estimate"] == 100.0 and first["discount"] == 60.0
    assert first["alert_status"] == "sent 1" and rows[0]["alert_status"] == "queued 1"
    assert len(json.loads(CliRunner().invoke(app, ["history", "--json", "--limit", "1"]).stdout)) == 1


def test_history_prints_a_table(deals_home):
    seed_history(deals_home)
    result = CliRunner().invoke(app, ["history"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "https://shop.example/1" in result.output and "$40.00" in result.output and "$100.00" in result.output
    assert "$60.00 (60%)" in result.output and "sent 1" in result.output and "queued 1" in result.output


def test_history_on_an_empty_store(deals_home):
    result = CliRunner().invoke(app, ["history"])
    assert result.exit_code == 0 and "no opportunities yet" in result.output and "--entries" in result.output


def test_history_entries_shows_every_entry_read_and_what_became_of_it(deals_home):
    feed = "https://feed.example/rss"
    taken = FeedEntry(key="e1", feed_url=feed, title="Sony WH-1000XM5 Headphones for $248", url="https://shop.example/1")
    refused = FeedEntry(key="e2", feed_url=feed, title="Kettle for £20", url="https://shop.example/2")
    with Store(deals_home / "deals.db") as store:
        deal = Deal(entry_key="e1", product_description="Sony WH-1000XM5 headphones", price=248.0, url=taken.url)
        store.save_deal(deal)
        store.record_entries([taken, refused], [deal], {"e2": "prices in GBP, not USD"})
    result = CliRunner().invoke(app, ["history", "--entries"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "Kettle for £20" in result.output and "prices in GBP, not USD" in result.output
    assert "$248.00" in result.output and "waiting" in result.output  # stored, not priced yet
    rows = json.loads(CliRunner().invoke(app, ["history", "--entries", "--json", "-n", "1"]).stdout)
    assert len(rows) == 1 and rows[0]["key"] in ("e1", "e2")


def test_notify_test_sends_through_the_real_twilio_sdk_to_the_base_url_from_the_environment(deals_home, monkeypatch):
    with FakeTwilio() as fake:
        monkeypatch.setenv("DEALS_MESSENGER__BASE_URL", fake.url)  # no config file: env overrides only
        monkeypatch.setenv("DEALS_MESSENGER__TO", f"['{ALICE}']")
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15550000000")
        result = CliRunner().invoke(app, ["notify-test"], env={"COLUMNS": "250"})
        url = fake.url
    assert result.exit_code == 0, result.output
    assert len(fake.created) == 1 and fake.created[0]["to"] == ALICE
    assert fake.created[0]["body"].startswith("deals: test message")
    assert f"via twilio ({url})" in result.output and ALICE in result.output and fake.created[0]["sid"] in result.output
    assert AUTH_TOKEN not in result.output


def test_notify_test_without_twilio_prints_to_the_console(deals_home, monkeypatch):
    monkeypatch.setenv("DEALS_MESSENGER__TO", f"['{ALICE}']")
    result = CliRunner().invoke(app, ["notify-test"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "[deals alert] deals: test message" in result.output and "via console" in result.output
    # it does not say SMS works, and says who would have been texted (masked)
    assert "SMS alerts are working" not in result.output and "Alerts are printed here: SMS is not set up" in result.output
    assert "SMS is not set up (missing: TWILIO_ACCOUNT_SID" in result.output and "nothing was texted" in result.output
    assert f"1 recipient(s) would get texts: {mask(ALICE)}" in result.output and ALICE not in result.output
    monkeypatch.delenv("DEALS_MESSENGER__TO")
    # Twilio configured but nobody to text: printed, and said so (not "via twilio")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15550000000")
    result = CliRunner().invoke(app, ["notify-test"])
    assert result.exit_code == 0 and "via console" in result.output and "twilio" not in result.output, result.output


def test_notify_test_reports_a_rejected_number(deals_home, monkeypatch, tmp_path, capsys):
    from deals.cli import main

    with FakeTwilio() as fake:
        fake.fail(400)
        config = write_config(tmp_path / "c.yaml", {"messenger": {"to": [ALICE], "base_url": fake.url}})
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15550000000")
        monkeypatch.setattr(sys, "argv", ["deals", "--config", str(config), "notify-test"])
        with pytest.raises(SystemExit) as exit_:
            main()
    assert exit_.value.code == 1
    assert "HTTP 400" in capsys.readouterr().err


# --------------------------------------------------------------------------- CLI: the daemon in a real process


def test_deals_run_stops_cleanly_on_sigterm_mid_cycle(tmp_path, tmp_path_factory, feed_server):  # noqa: F811
    """SIGTERM while a feed answers slowly: the request is abandoned, the cycle stops within
    seconds (not when the feed answers), the run row is closed as stopped, nothing is
    half-stored, the process exits 0, and the next start reads everything again."""
    home = copy_home(seeded_home_template(tmp_path_factory), tmp_path / "home")
    urls = serve_feeds(feed_server)
    slow = feed_server.route("/slow.xml", body=(REPO / "tests/fixtures/feeds/techbargains-2026-10.xml").read_bytes(), delay_s=60)
    config = write_config(tmp_path / "c.yaml", {"pricing": {"pricer": "knn"}, "scheduler": {"interval_minutes": 60, "jitter_s": 0}})
    args = [sys.executable, "-m", "deals", "--config", str(config), "run"]
    for url in [*urls[:3], slow]:
        args += ["--feed", url]
    process = subprocess.Popen(args, env=clean_env(home), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: feed_server.requests_to("/slow.xml") or process.poll() is not None, timeout=60)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        stopped_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert stopped_after < 10, stopped_after  # not the 60 s the feed takes
    assert "SIGTERM received" in output and "daemon stopped" in output
    with Store(home / "deals.db") as store:
        runs = store.recent_runs(5)
        assert [r.status for r in runs] == ["stopped"]  # closed, not left 'running'
        assert runs[0].stats["deals"] == 0 and store.unpriced_deals(100) == []  # the read step was abandoned whole
        assert store.feed_states() == []  # no validators saved: the next start reads every feed again


def test_a_cycle_cancelled_by_shutdown_counts_as_stopped_not_crashed():
    from deals.framework.errors import Cancelled

    def cycle() -> None:
        raise Cancelled("request cancelled: shutting down")

    orchestrator = Orchestrator(cycle, fast(), install_signals=False)
    assert orchestrator.run_once() == 0 and orchestrator.failures == 0
