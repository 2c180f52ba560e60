"""Crash safety: the daemon process is SIGKILLed at four points of a cycle and restarted;
in the end every opportunity was texted to every recipient exactly once.

The kill points are found at the network edge, never by hooks in the code under test: the
fake feed server and the fake LLM hold a request and tell the test it arrived; the fake
Twilio holds its Nth message request either before storing it (never sent) or after
storing it but before answering (sent, yet the daemon never learns so). The test kills
the process while the request is held.

    1. while a feed is being fetched          nothing stored yet
    2. while the scanner waits for the LLM    entries read, not yet stored
    3. at the first SMS, before Twilio has it deals, estimates, opportunities stored;
                                              an alert in 'sending'
    4. at the next start's second SMS, after  a message Twilio sent that the outbox
       Twilio stored it, before it answered   does not know about
    5. a clean run                            reconciles, sends the rest, nothing twice
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from deals.agents.messenger import alert_body
from deals.pricer.alerts import AlertRule, alerts_at
from deals.framework.settings import Settings
from deals.memory.store import Store
from tests.fakes.daemon import FEEDS, REPO, TrippingTwilio, clean_env, copy_home, scanner_reply, seeded_home_template, serve_feeds, write_config
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.llm_server import FakeLLMServer, Recorded, Reply, Responder, answer
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN

ALICE, BOB = "+15551110001", "+15552220002"
FIXTURE_CONFIDENCE = 0.4
SENDER = "+15550000000"


class Gate:
    """An LLM responder that holds the request until released, and says when it arrived."""

    def __init__(self, then: Responder) -> None:
        self.then = then
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Recorded) -> Reply:
        self.reached.set()
        self.release.wait(60)
        return self.then(request)


class Daemon:
    """`deals run --once` in its own process, output to a file."""

    def __init__(self, home: Path, config: Path, urls: list[str], log_dir: Path) -> None:
        self.home, self.config, self.urls, self.log_dir = home, config, urls, log_dir
        self.starts = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        args = [sys.executable, "-m", "deals", "--config", str(self.config), "run", "--once"]
        for url in self.urls:
            args += ["--feed", url]
        env = clean_env(
            self.home, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER=SENDER
        )
        self.log = self.log_dir / f"run-{self.starts}.log"
        with self.log.open("wb") as out:
            return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def kill_when(self, process: subprocess.Popen[bytes], reached: threading.Event, release: threading.Event) -> None:
        """SIGKILL the process once `reached` is set (it is held at the edge meanwhile)."""
        deadline = time.monotonic() + 90
        while not reached.wait(0.05):
            assert process.poll() is None, f"the daemon exited before the kill point:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, "the kill point was never reached"
        process.kill()
        process.wait(30)
        release.set()
        assert process.returncode == -9


def test_sigkill_at_four_points_of_a_cycle_loses_no_opportunity_and_sends_no_sms_twice(tmp_path, tmp_path_factory, feed_server):  # noqa: F811
    home = copy_home(seeded_home_template(tmp_path_factory), tmp_path / "home")
    urls = serve_feeds(feed_server)
    slow_feed = urls[0].split(str(feed_server.port), 1)[1]
    with FakeLLMServer(answer(scanner_reply)) as llm, TrippingTwilio() as twilio:
        config = write_config(
            tmp_path / "deals.yaml",
            {
                "llm": {"provider": "openai-compatible", "model": "local-model", "base_url": f"{llm.url}/v1", "max_retries": 0},
                "messenger": {"to": [ALICE, BOB], "base_url": twilio.url, "retry_base_s": 0},
                "ensemble": {"auto_fit": False},
                # the fixture feeds are mostly clothing and groceries, which the catalogue does not know: at the
                # default confidence nothing is alerted (see the issue note); a lower one exercises the alert path
                "planner": {"confidence": FIXTURE_CONFIDENCE},  # the fake LLM answers as the scanner only
            },
        )
        daemon = Daemon(home, config, urls, tmp_path)
        db = home / "deals.db"

        # 1. killed while fetching a feed
        arrived, release = threading.Event(), threading.Event()
        feed_server.serve_file(slow_feed, FEEDS / slow_feed.rsplit("/", 1)[1], etag='"v1"', delay_s=60)
        process = daemon.start()
        watcher = threading.Thread(target=lambda: _wait_for_request(feed_server, slow_feed, arrived), daemon=True)
        watcher.start()
        daemon.kill_when(process, arrived, release)
        serve_feeds(feed_server)  # the feed answers promptly again
        with Store(db) as store:
            assert store.db.execute("SELECT COUNT(*) FROM deals").fetchone()[0] == 0
            assert [r.status for r in store.recent_runs()] == ["running"]  # the killed cycle

        # 2. killed while the scanner waits for the LLM
        gate = Gate(answer(scanner_reply))
        llm.respond(gate)
        daemon.kill_when(daemon.start(), gate.reached, gate.release)
        llm.respond(answer(scanner_reply))
        with Store(db) as store:
            assert store.db.execute("SELECT COUNT(*) FROM deals").fetchone()[0] == 0
            assert store.db.execute("SELECT COUNT(*) FROM seen_entries").fetchone()[0] == 0
            # the feeds' validators were not saved without their entries: no 304 next time
            assert all(state.etag is None for state in store.feed_states())

        # 3. killed at the first SMS, before Twilio has it
        twilio.trip(1, "received")
        daemon.kill_when(daemon.start(), twilio.tripped, twilio.release)
        assert twilio.created == []
        with Store(db) as store:
            expected = expected_opportunities(store)
            assert expected, "the fixture feeds hold some bargains"
            assert len(store.unpriced_deals(100)) == 0
            assert [a.state for a in store.alerts(["sending"])] == ["sending"]

        # 4. killed at the second SMS of the next start, after Twilio stored it, before it answered
        twilio.trip(2, "stored")
        daemon.kill_when(daemon.start(), twilio.tripped, twilio.release)
        assert len(twilio.created) == 2  # the first alert again (it had not gone out), then one more

        # 5. a clean run
        process = daemon.start()
        assert process.wait(120) == 0, daemon.log.read_text()

        with Store(db) as store:
            assert expected_opportunities(store) == expected  # nothing lost, nothing new
            settings = Settings()
            ids = {row[0]: row[1] for row in store.db.execute("SELECT deal_key, id FROM opportunities")}
            wanted = Counter(
                (to, alert_body(store, store.get_opportunity(ids[key]), settings.messenger.max_chars)) for key in expected for to in (ALICE, BOB)
            )
            sent = Counter((m["to"], m["body"]) for m in twilio.created)
            assert sent == wanted  # every alert exactly once
            assert {a.state for a in store.alerts()} == {"sent"} and len(store.alerts()) == sum(wanted.values())
            assert {a.provider_id for a in store.alerts()} == {m["sid"] for m in twilio.created}
            assert store.db.execute("SELECT COUNT(*) FROM deals").fetchone()[0] == 8
            runs = store.recent_runs(10)
            assert [r.status for r in runs] == ["ok", "interrupted", "interrupted", "interrupted", "interrupted"]  # killed runs closed at the next start
            assert runs[0].stats["alerts_sent"] == sum(wanted.values()) - 2  # the one held at kill 4 was reconciled, not resent
        log = daemon.log.read_text()
        assert "already delivered" in log


def expected_opportunities(store: Store) -> set[str]:
    """Deals whose stored estimate makes them alerts by the planner's rule (computed here, not read from the planner)."""
    rule = AlertRule.from_settings(Settings(planner={"confidence": FIXTURE_CONFIDENCE}).planner)
    keys = set()
    for key, price in store.db.execute("SELECT entry_key, price FROM deals"):
        estimate = store.get_estimate(key)
        assert estimate is not None, f"deal {key} was never priced"
        if alerts_at(estimate, [price], rule)[0]:
            keys.add(key)
    stored = {row[0] for row in store.db.execute("SELECT deal_key FROM opportunities")}
    assert stored == keys
    return keys


def _wait_for_request(server: FeedServer, path: str, arrived: threading.Event) -> None:
    deadline = time.monotonic() + 90
    while not server.requests_to(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    arrived.set()
