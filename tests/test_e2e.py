"""End to end, offline: `deals run --once` over the real fixture feeds served on 127.0.0.1,
the scanner's LLM calls through the real OpenAI SDK to a fake OpenAI server, the real kNN
pricer over the bundled starter catalogue, and alerts through the real Twilio SDK to a
fake Twilio. The assertions are on what was stored and what was sent."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deals.agents import notifiers
from deals.agents.messenger import alert_body
from deals.pricer.alerts import AlertRule, alert_below, alerts_at
from deals.cli import app
from deals.framework.settings import Settings
from deals.memory.store import Store
from tests.fakes.daemon import REPO, clean_env, copy_home, scanner_reply, seeded_home_template, serve_feeds, write_config
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.llm_server import FakeLLMServer, answer
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ALICE, BOB = "+15551110001", "+15552220002"
FIXTURE_CONFIDENCE = 0.4
SENDER = "+15550000000"
OPENAI_KEY = "sk-test-E2E-0123456789abcdef"
# The deals in the fixture feeds: one product at one stated price each (the rest are
# store-wide sales, roundups, or Australian-dollar deals, which the scanner rejects).
FIXTURE_PRICES = sorted([7.46, 29.0, 26.0, 19.0, 1.99, 69.99, 8.49, 39.99])


@dataclass
class World:
    """The network around the daemon: feeds, an LLM provider and Twilio, all on 127.0.0.1."""

    feeds: FeedServer
    urls: list[str]
    llm: FakeLLMServer
    twilio: FakeTwilio
    config: Path
    home: Path

    def env(self) -> dict[str, str]:
        return clean_env(
            self.home,
            OPENAI_API_KEY=OPENAI_KEY,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=SENDER,
        )

    def run_args(self) -> list[str]:
        args = ["--config", str(self.config), "run", "--once"]
        for url in self.urls:
            args += ["--feed", url]
        return args


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


@pytest.fixture
def world(tmp_path, tmp_path_factory, feed_server, monkeypatch):  # noqa: F811
    home = copy_home(seeded_home_template(tmp_path_factory), tmp_path / "home")
    with FakeLLMServer(answer(scanner_reply)) as llm, FakeTwilio() as twilio:
        config = write_config(
            tmp_path / "deals.yaml",
            {
                # configured feeds that --feed must replace: never requested
                "feeds": {"urls": [feed_server.url("/configured-but-replaced.xml")]},
                "llm": {"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm.url}/v1", "max_retries": 0},
                "messenger": {"to": [ALICE, BOB], "base_url": twilio.url, "retry_base_s": 0},
                # the fake LLM answers as the scanner only: no frontier fit here (tests/test_ensemble.py fits one)
                "ensemble": {"auto_fit": False},
                # the fixture feeds are mostly clothing and groceries, which the catalogue does not know: at the
                # default confidence nothing is alerted (see the issue note); a lower one exercises the alert path
                "planner": {"confidence": FIXTURE_CONFIDENCE},
                "logging": {"level": "INFO"},
            },
        )
        w = World(feed_server, serve_feeds(feed_server), llm, twilio, config, home)
        for name, value in w.env().items():
            monkeypatch.setenv(name, value)
        yield w


def check_stored_and_sent(world: World) -> list[str]:
    """Everything the cycle must have stored and sent; returns the opportunities' deal keys."""
    settings = Settings()
    rule = AlertRule.from_settings(Settings(planner={"confidence": FIXTURE_CONFIDENCE}).planner)
    with Store(world.home / "deals.db") as store:
        deals = store.db.execute("SELECT entry_key, price, description FROM deals ORDER BY entry_key").fetchall()
        assert sorted(row["price"] for row in deals) == FIXTURE_PRICES
        expected_opportunities = set()
        for row in deals:
            assert "$" not in row["description"]  # the LLM's product description, not the deal's terms
            estimate = store.get_estimate(row["entry_key"])
            assert estimate is not None and estimate.pricer == settings.pricing.pricer == "ensemble"  # every deal priced
            assert set(estimate.parts) == {"local", "knn", "ridge"}  # the calibrated offline model; the frontier unfitted
            assert len(estimate.neighbours) == 10 and estimate.low < estimate.price < estimate.high
            decision = store.db.execute("SELECT decision, alert_below FROM estimates WHERE deal_key = ?", (row["entry_key"],)).fetchone()
            assert decision["alert_below"] == alert_below(estimate, rule)
            if alerts_at(estimate, [row["price"]], rule)[0]:
                expected_opportunities.add(row["entry_key"])
                assert decision["decision"] == "deal"
            else:
                assert decision["decision"] in ("not cheap enough", "low confidence", "too good to be true")
        stored = {row[0]: row[1] for row in store.db.execute("SELECT deal_key, id FROM opportunities")}
        assert set(stored) == expected_opportunities and expected_opportunities, "the real feeds hold some bargains"

        # one SMS per opportunity and recipient, with the alert text, through the real SDK
        sent = sorted((m["to"], m["body"]) for m in world.twilio.created)
        wanted = sorted(
            (to, alert_body(store, store.get_opportunity(stored[key]), settings.messenger.max_chars))
            for key in expected_opportunities
            for to in (ALICE, BOB)
        )
        assert sent == wanted
        assert all(post.form["From"] == SENDER and post.user == ACCOUNT_SID for post in world.twilio.posts())
        alerts = store.alerts()
        assert len(alerts) == len(wanted) and {a.state for a in alerts} == {"sent"}
        assert {a.provider_id for a in alerts} == {m["sid"] for m in world.twilio.created}

        run = store.recent_runs(1)[0]
        assert run.status == "ok" and run.stats["deals"] == 8 and run.stats["priced"] == 8
        assert run.stats["opportunities"] == len(expected_opportunities) and run.stats["alerts_sent"] == len(wanted)
        assert run.stats["llm_calls"] >= 1 and run.stats["tokens_in"] > 0
    # the scanner asked for structured output with the key from the environment
    assert world.llm.requests and all(r.response_format == "json_schema" for r in world.llm.requests)
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}" for r in world.llm.requests)
    assert not world.feeds.requests_to("/configured-but-replaced.xml")
    return sorted(expected_opportunities)


def test_run_once_in_a_subprocess_then_again_in_process_sends_each_alert_once(world):
    done = subprocess.run(
        [sys.executable, "-m", "deals", *world.run_args()],
        env=world.env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    opportunities = check_stored_and_sent(world)
    assert "cycle 1 ok:" in done.stdout + done.stderr and "8 deals" in done.stdout + done.stderr
    sms, llm_calls = len(world.twilio.created), len(world.llm.requests)

    # The same command in-process: feeds answer 304, nothing is scanned, priced or sent again.
    result = CliRunner().invoke(app, world.run_args())
    assert result.exit_code == 0, result.output
    assert len(world.twilio.created) == sms and len(world.llm.requests) == llm_calls
    assert all(r.headers.get("If-None-Match") for r in world.feeds.requests[-len(world.urls) :])
    with Store(world.home / "deals.db") as store:
        second = store.recent_runs(1)[0]
        assert second.status == "ok" and second.stats["entries_read"] == 0 and second.stats["alerts_sent"] == 0

    history = CliRunner().invoke(app, ["history", "--json"])
    assert history.exit_code == 0, history.output
    rows = json.loads(history.stdout)
    assert len(rows) == len(opportunities)
    assert {r["alert_status"] for r in rows} == {"sent 2"}
    assert all(r["estimate"] - r["price"] == pytest.approx(r["discount"], abs=0.011) for r in rows)


def test_run_once_in_process_logs_what_the_cycle_did(world, caplog):
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(app, world.run_args())
    assert result.exit_code == 0, result.output
    opportunities = check_stored_and_sent(world)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle 1 ok:"))
    assert "5/5 feeds ok" in line and "50 entries read, 50 new" in line and "8 deals (42 rejected)" in line
    assert "8 priced (0 failed)" in line and f"{len(opportunities)} opportunities" in line
    assert f"alerts {2 * len(opportunities)} sent, 0 failed" in line and "0 errors" in line
