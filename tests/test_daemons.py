"""Several daemons on one store (issue 11): claims, a daemon killed mid-cycle, nothing twice.

Three `deals run` processes share one PostgreSQL store (two share one SQLite file, with
`store.exclusive: false`) and read the same feeds. The fakes are at the network edge: a
feed server with generated deal feeds, one OpenAI-compatible fake answering both the
scanner and the specialist pricer (each daemon uses its own API key, so every request
says which daemon made it), and a Twilio fake that takes its Nth message and then holds
the reply. The test finds, in the store, the daemon whose alert that is (the `send`
claim) and SIGKILLs it while its SMS is in flight. The survivors must find it dead, take
over its claimed work, reconcile the held alert with the provider instead of resending
it, and finish: every opportunity texted exactly once to each recipient, no deal priced
by two daemons (except work the dead one never stored), no entry scanned twice.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from deals.memory.store import Store
from tests.fakes.daemon import REPO, TrippingTwilio, clean_env, deal_feed, finished, scanner_reply, write_config
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.llm_server import FakeLLMServer, Recorded, Reply, answer
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN

ALICE, BOB = "+15551110001", "+15552220002"
SENDER = "+15550000000"
WORTH = 999.0  # what the fake specialist says every product is worth
# a real deal at $999 saves >= max($25, 30%): offers up to $699.30 are opportunities
OPPORTUNITY_BELOW = WORTH * 0.7


class World:
    """The fakes and the records of who asked what."""

    def __init__(self, llm: FakeLLMServer, twilio: TrippingTwilio, delay_s: float) -> None:
        self.llm, self.twilio, self.delay_s = llm, twilio, delay_s
        self.priced: dict[str, list[str]] = defaultdict(list)  # description -> daemons (by API key)
        self.scanned: dict[str, list[str]] = defaultdict(list)  # entry title -> daemons

    def respond(self, request: Recorded) -> Reply:
        who = request.headers.get("authorization", "").removeprefix("Bearer ")
        if request.body.get("model") == "pricer":  # the specialist
            self.priced[request.user.strip()[-120:]].append(who)
            reply = answer(f"{WORTH:.2f}")(request)
        else:
            for title in re.findall(r"^Title: (.*)$", request.user, re.M):
                self.scanned[title].append(who)
            reply = answer(scanner_reply)(request)
        reply.delay_s = self.delay_s
        return reply


class HeldTwilio(TrippingTwilio):
    """Remembers the message it holds (taken by the provider, never answered)."""

    held: dict[str, Any] | None = None

    def _reply(self, handler, record, status, payload, headers=None):  # noqa: ANN001
        if self._trip_at == -1 and record.method == "POST" and status == 201:
            self.held = payload
        super()._reply(handler, record, status, payload, headers)


def holder_pid(store: Store, message: dict[str, Any]) -> int | None:
    """The pid of the daemon holding the `send` claim of the alert behind `message`."""
    row = store.db.execute(
        """SELECT w.pid FROM alerts a JOIN claims c ON c.kind = 'send' AND c.key = CAST(a.id AS TEXT)
           JOIN workers w ON w.id = c.worker_id WHERE a.recipient = ? AND a.body = ?""",
        (message["to"], message["body"]),
    ).fetchone()
    return int(row[0]) if row else None


def run_daemons(tmp_path: Path, feed_server: FeedServer, target: str, *, daemons: int, feeds: int = 6, items: int = 12) -> None:  # noqa: F811
    urls = [feed_server.route(f"/feeds/{n}.xml", body=deal_feed(n, items), etag=f'"{n}"') for n in range(feeds)]
    home = tmp_path / "home"
    home.mkdir()
    with FakeLLMServer() as llm, HeldTwilio() as twilio:
        world = World(llm, twilio, delay_s=0.05)
        llm.respond(world.respond)
        config = write_config(
            tmp_path / "deals.yaml",
            {
                "store": {"url": target, "exclusive": False, "worker_timeout_s": 30},
                "feeds": {"urls": urls},
                "llm": {"provider": "openai-compatible", "model": "scanner", "base_url": f"{llm.url}/v1", "max_retries": 0, "api_key_env": "SCANNER_KEY"},
                "pricing": {"pricer": "specialist"},
                "specialist": {"base_url": f"{llm.url}/v1", "model": "pricer", "timeout_s": 10},
                "messenger": {"to": [ALICE, BOB], "base_url": twilio.url, "retry_base_s": 0, "daily_cap": 10_000, "timeout_s": 5},
                "scheduler": {"interval_minutes": 0.02, "jitter_s": 0},
                "planner": {"concurrency": 2},
            },
        )
        twilio.trip(9, "stored")  # the 9th SMS is taken by the provider, its answer held
        processes = []
        logs = []
        for n in range(daemons):
            log = (tmp_path / f"daemon-{n}.log").open("wb")
            env = clean_env(
                home, SCANNER_KEY=f"daemon-{n}", SPECIALIST_API_KEY=f"daemon-{n}",
                TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER=SENDER,
            )  # fmt: skip
            processes.append(subprocess.Popen([sys.executable, "-m", "deals", "--config", str(config), "run"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
            logs.append(log)
        store = Store(target)
        killed: subprocess.Popen[bytes] | None = None
        try:
            deadline = time.monotonic() + 90
            while not twilio.tripped.wait(0.1):
                assert time.monotonic() < deadline, "the 9th SMS never came"
                assert all(p.poll() is None for p in processes), _logs(tmp_path)
            pid = None
            while pid is None and time.monotonic() < deadline:
                pid = holder_pid(store, twilio.held or {})
                time.sleep(0.05)
            [killed] = [p for p in processes if p.pid == pid]
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
            twilio.release.set()
            survivors = [p for p in processes if p is not killed]

            deadline = time.monotonic() + 120
            while not finished(store, feeds * items, recipients=2):
                assert time.monotonic() < deadline, "the survivors did not finish the work\n" + _logs(tmp_path)
                assert all(p.poll() is None for p in survivors), _logs(tmp_path)
                time.sleep(0.3)
            for process in survivors:
                process.send_signal(signal.SIGTERM)
            for process in survivors:
                assert process.wait(60) == 0, _logs(tmp_path)
        finally:
            twilio.release.set()
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(30)
            for log in logs:
                log.close()

        killer_key = f"daemon-{processes.index(killed)}"
        # every opportunity texted exactly once to each recipient
        opportunities = {row[0]: row[1] for row in store.db.execute("SELECT id, deal_key FROM opportunities").fetchall()}
        prices = {row[0]: row[1] for row in store.db.execute("SELECT entry_key, price FROM deals").fetchall()}
        assert set(opportunities.values()) == {key for key, price in prices.items() if price <= OPPORTUNITY_BELOW}
        assert len(prices) == feeds * items
        sent = Counter((m["to"], m["body"]) for m in twilio.created)
        alerts = store.alerts()
        assert {a.state for a in alerts} == {"sent"}
        assert Counter((a.recipient, a.body) for a in alerts) == Counter(dict.fromkeys(sent, 1))
        assert set(sent.values()) == {1}, [k for k, v in sent.items() if v > 1]
        assert len(sent) == 2 * len(opportunities)
        assert {(a.recipient, a.opportunity_id) for a in alerts} == {(to, o) for o in opportunities for to in (ALICE, BOB)}
        assert {a.provider_id for a in alerts} == {m["sid"] for m in twilio.created}
        # no deal priced by two daemons, unless the dead one never stored its work; no entry scanned twice
        for description, who in world.priced.items():
            others = [w for w in who if w != killer_key]
            assert len(others) <= 1, (description, who)
        for title, who in world.scanned.items():
            assert len([w for w in who if w != killer_key]) <= 1, (title, who)
        # the dead daemon's run was closed, its claims returned; the survivors left cleanly
        runs = store.recent_runs(1000)
        assert "interrupted" in {r.status for r in runs} and "running" not in {r.status for r in runs}
        assert store.claims() == [] and store.workers() == []
        assert sum(len(who) for who in world.priced.values()) >= len(prices)
        # the held SMS was settled with the provider, not sent again
        assert any("already delivered" in log.read_text() for log in tmp_path.glob("daemon-*.log"))
        store.close()


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("daemon-*.log")))


def test_three_daemons_on_postgresql_one_killed_mid_cycle_alert_each_opportunity_once(tmp_path, feed_server, pg_url):  # noqa: F811
    run_daemons(tmp_path, feed_server, pg_url, daemons=3)


@pytest.mark.slow
def test_two_daemons_on_one_sqlite_file_one_killed_mid_cycle_alert_each_opportunity_once(tmp_path, feed_server):  # noqa: F811
    run_daemons(tmp_path, feed_server, f"sqlite:///{tmp_path / 'shared.db'}", daemons=2)
