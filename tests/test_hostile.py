"""The daemon in a hostile world (issue 9): each test here failed before its fix.

Real components throughout; the fakes are at the network edge, on 127.0.0.1 only (feed
server, raw-socket server, OpenAI-compatible LLM, Twilio). Address-guard tests give the
reader a stand-in resolver and an in-process transport, and assert that the refused
request was never made: nothing is ever sent outside loopback. Exit codes are checked
through real `python -m deals` subprocesses.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from deals.agents import notifiers
from deals.agents.deal_rules import extract, title_price
from deals.agents.feed_parsing import page_text, parse_feed
from deals.agents.messenger import Messenger
from deals.agents.rss_reader import RssReader
from deals.cli import run_cli
from deals.framework.errors import ConfigError, LLMError, TransientNotifyError
from deals.framework.http import make_client
from deals.framework.llm.client import LLMClient
from deals.framework.logs import setup_logging
from deals.framework.models import Deal, Estimate, FeedEntry, Opportunity, utcnow
from deals.framework.settings import LLMSettings, Settings, load_settings
from deals.memory.lock import StoreLock
from deals.memory.store import Store, StoreError, explain
from tests.fakes.daemon import FEEDS, REPO, clean_env, serve_feeds, write_config
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture
from tests.fakes.raw_server import RawServer, http_response, trickle
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ALICE = "+15551110001"
SENDER = "+15550000000"
ESC = "\x1b"


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


def deals(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m deals ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deals", *args],
        capture_output=True, text=True, env=clean_env(home, COLUMNS="200", **(env or {})), cwd=REPO, timeout=timeout,
    )  # fmt: skip


def opportunity(store: Store, key: str, description: str = "Logitech MX Master 3S mouse", url: str | None = None) -> int:
    deal = Deal(entry_key=key, product_description=description, price=40.0, url=url or f"https://shop.example/{key}")
    return store.save_opportunity(Opportunity(deal=deal, estimate=Estimate(price=100.0, pricer="constant"), discount=60.0))


@pytest.fixture
def twilio(monkeypatch):
    with FakeTwilio() as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_FROM_NUMBER", SENDER)
        yield fake


def messenger_settings(twilio: FakeTwilio, **messenger: object) -> Settings:
    values = {"to": [ALICE], "base_url": twilio.url, "retry_base_s": 0, "max_attempts": 2, "daily_cap": 100, **messenger}
    return Settings.model_validate({"messenger": values})


# =========================================================================== High 1: two daemons, one store


def test_two_messengers_on_one_store_claim_each_alert_once(deals_home, twilio):
    """Two processes' outboxes (two connections to one file) delivering at once: every alert
    is claimed by exactly one of them, so each SMS goes out once and each send is recorded."""
    path = deals_home / "deals.db"
    with Store(path) as first, Store(path) as second:
        for n in range(12):
            for recipient in (ALICE,):
                first.enqueue_alert(opportunity(first, f"k{n}"), recipient, f"deal {n}")
        settings = messenger_settings(twilio)
        senders = [Messenger(settings, first), Messenger(settings, second)]
        barrier = threading.Barrier(2)

        def deliver(messenger: Messenger) -> None:
            barrier.wait()
            messenger.deliver_pending()

        threads = [threading.Thread(target=deliver, args=(m,)) for m in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for messenger in senders:
            messenger.close()
        bodies = Counter(m["body"] for m in twilio.created)
        assert len(bodies) == 12 and max(bodies.values()) == 1  # no duplicate SMS
        assert {a.state for a in first.alerts()} == {"sent"}
        sends = first.sends()
        assert len(sends) == 12 and {s["outcome"] for s in sends} == {"sent"}
        assert all(row.alert_status == "sent 1" and row.sms_sent == 1 for row in first.history(50))


class LaggingTwilio(FakeTwilio):
    """Takes the first message yet answers 503 (a proxy timing out), and its message list
    lags behind (shows nothing): a resend is then unavoidable, and must not be invisible."""

    def _reply(self, handler, record, status, payload, headers=None):  # noqa: ANN001
        if record.method == "POST" and status == 201 and len(self.created) == 1:
            status, payload = 503, {"code": 20503, "message": "Service Unavailable", "status": 503}
        if record.method == "GET" and status == 200:
            payload = {**payload, "messages": []}
        super()._reply(handler, record, status, payload, headers)


def test_a_possible_duplicate_sms_is_visible_in_history(deals_home, monkeypatch):
    """The provider took a message but answered 503 and its list lags: the resend cannot be
    avoided, and history shows both hand-overs instead of a plain "sent 1"."""
    with LaggingTwilio() as twilio:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_FROM_NUMBER", SENDER)
        with Store(deals_home / "deals.db") as store:
            store.enqueue_alert(opportunity(store, "dup"), ALICE, "a deal")
            messenger = Messenger(messenger_settings(twilio), store, sleep=lambda s: None)
            report = messenger.deliver_pending()
            messenger.close()
            assert report.sent == 1 and len(twilio.created) == 2  # the provider took it twice
            [row] = store.history(5)
            assert (row.sms_sent, row.send_attempts, row.alert_status) == (1, 2, "sent 1")
            assert [s["outcome"] for s in store.sends()] == ["error", "sent"]
    done = deals("history", home=deals_home)
    assert done.returncode == 0 and "1 (2 tries)" in done.stdout


def test_confirmed_duplicate_sends_are_flagged_in_history(deals_home):
    with Store(deals_home / "deals.db") as store:
        alert = store.enqueue_alert(opportunity(store, "twice"), ALICE, "a deal")
        for sid in ("SM1", "SM2"):  # two processes that both sent it (what claims now prevent)
            store.end_send(store.begin_send(alert), "sent", provider_id=sid)
        store.mark_alert(alert, "sent", provider_id="SM2")
        [row] = store.history(5)
    assert row.sms_sent == 2 and row.alert_status == "sent 1 (2 SMS!)"


def test_a_second_daemon_exits_2_naming_the_holder_and_wait_waits(seeded_home, feed_server, tmp_path, twilio):  # noqa: F811
    """`deals run --once` while another daemon holds the store: exit 2 with its pid and host;
    with --wait it runs after the holder exits. Every SMS goes out once."""
    urls = serve_feeds(feed_server, ("dealnews-recent-2026-10.xml", "techbargains-2026-10.xml"))
    slow = feed_server.route("/slow.xml", body=b"<rss version='2.0'><channel><title>s</title></channel></rss>", delay_s=12)  # holds the lock long enough for two process starts under load
    config = write_config(
        tmp_path / "c.yaml",
        {"pricing": {"pricer": "constant"}, "messenger": {"to": [ALICE], "base_url": twilio.url, "daily_cap": 100},
         "feeds": {"urls": [*urls, slow]}},
    )  # fmt: skip
    env = clean_env(seeded_home, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER=SENDER)
    command = [sys.executable, "-m", "deals", "--config", str(config), "run", "--once"]
    first = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not feed_server.requests_to("/slow.xml") and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        waiter = subprocess.Popen([*command, "--wait"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first_out, _ = first.communicate(timeout=120)
        waiter_out, _ = waiter.communicate(timeout=120)
    finally:
        for process in (first,):
            if process.poll() is None:
                process.kill()
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid} on host" in second.stderr and "--wait" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, first_out
    assert waiter.returncode == 0, waiter_out
    assert "waiting for the store's daemon lock" in waiter_out
    assert twilio.created and max(Counter(m["body"] for m in twilio.created).values()) == 1
    with Store(seeded_home / "deals.db") as store:
        assert [r.status for r in store.recent_runs(5)] == ["ok", "ok"]  # the holder's cycle, then the waiter's
        assert all(row.sms_sent == 1 and row.alert_status == "sent 1" for row in store.history(50))


def test_runs_left_running_by_a_killed_process_are_marked_interrupted(deals_home):
    with Store(deals_home / "deals.db") as store:
        killed = store.start_run()
        assert store.interrupt_unfinished_runs() == 1
        assert store.recent_runs(1)[0].status == "interrupted" and store.recent_runs(1)[0].id == killed


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "deals.db"
    code = f"from deals.memory.lock import StoreLock; StoreLock({str(path)!r}).acquire(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    with StoreLock(path) as lock:
        assert lock.held


# =========================================================================== High 2: deadlines


HEADERS_BY_THE_BYTE = http_response((FEEDS / "dealnews-recent-2026-10.xml").read_bytes())


def test_a_feed_that_trickles_its_headers_is_cut_off_at_the_deadline():
    """Status line and headers at one byte per 0.05 s (minutes in all): the fetch ends at
    feeds.timeout_s, the feed is counted as failed, and the reader goes on."""
    with RawServer(trickle(HEADERS_BY_THE_BYTE, every_s=0.05)) as server:
        settings = Settings.model_validate({"feeds": {"timeout_s": 1.0}})
        with RssReader(settings) as reader:
            started = time.monotonic()
            result = reader.read([server.url("/feed.xml")], {})
            elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # the server would take over 30 s
    [feed] = result.feed_results
    assert feed.status == "error" and "timed out" in (feed.error or "")


def test_an_llm_that_trickles_its_reply_is_cut_off_at_the_deadline():
    reply = http_response(json.dumps({"id": "x", "choices": []}).encode(), content_type="application/json")
    with RawServer(trickle(reply, every_s=0.05)) as server:
        settings = LLMSettings(provider="openai-compatible", base_url=server.url("/v1"), timeout_s=1.0, max_retries=0)
        with LLMClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(LLMError, match="timed out"):
                client.text("system", "user")
    assert time.monotonic() - started < 5  # the server would take over 10 s


def test_a_twilio_that_trickles_its_reply_is_a_transient_error_at_the_deadline():
    reply = http_response(b'{"sid": "SM1"}', status="201 Created", content_type="application/json")
    with RawServer(trickle(reply, every_s=0.05)) as server:
        notifier = notifiers.TwilioNotifier(ACCOUNT_SID, AUTH_TOKEN, SENDER, base_url=server.url(""), timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(TransientNotifyError, match="timed out"):
            notifier.send(ALICE, "hello")
        notifier.close()
    assert time.monotonic() - started < 5  # the server would take over 10 s


def test_a_page_that_trickles_is_skipped_at_the_deadline(feed_server):  # noqa: F811
    with RawServer(trickle(http_response(b"<html><title>x</title></html>", content_type="text/html"), every_s=0.05)) as pages:
        body = (FEEDS / "dealnews-recent-2026-10.xml").read_bytes().replace(b"https://www.dealnews.com/", pages.url("/").encode())
        url = feed_server.route("/recent.xml", body=body)
        settings = Settings.model_validate(
            {"feeds": {"fetch_pages": True, "allow_private_addresses": True, "page_timeout_s": 1.0, "page_concurrency": 4}}
        )
        with RssReader(settings) as reader:
            started = time.monotonic()
            result = reader.read([url], {})
    assert time.monotonic() - started < 6  # the pages would take over 10 s each
    assert len(result.entries) == 3  # the pages were skipped, the entries kept


# =========================================================================== Medium 3: exit codes, in real processes


def test_documented_exit_codes(deals_home, tmp_path):
    assert deals("config", home=deals_home).returncode == 0
    for args in (["--bogus-option"], ["no-such-command"], ["run", "--no-such-option"], ["price"], ["price", "  "]):
        done = deals(*args, home=deals_home)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr, args
    done = deals(home=deals_home)
    assert done.returncode == 2 and "Usage" in done.stdout + done.stderr
    bad = write_config(tmp_path / "bad.yaml", {"messenger": {"to": ["not-a-phone", "12"]}})
    done = deals("--config", str(bad), "config", home=deals_home)
    assert done.returncode == 2 and "messenger.to" in done.stderr and "Traceback" not in done.stderr


def test_a_damaged_store_exits_1_with_a_clear_message(deals_home):
    path = deals_home / "deals.db"
    with Store(path) as store:
        store.mark_seen([_entry(f"https://shop.example/{n}", "x" * 200) for n in range(2000)])
        for n in range(50):
            opportunity(store, f"k{n}")
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page, len(data), page):  # every page but the first (the header and schema)
        data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    for args in (["history"], ["run", "--once", "--feed", "http://127.0.0.1:9/none.xml"]):
        done = deals(*args, home=deals_home)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "damaged" in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
        assert "move it away to start afresh" not in done.stderr


def test_ctrl_c_exits_130(seeded_home, feed_server, tmp_path):  # noqa: F811
    slow = feed_server.route("/slow.xml", body=b"<rss/>", delay_s=60)
    config = write_config(tmp_path / "c.yaml", {"pricing": {"pricer": "constant"}, "scheduler": {"interval_minutes": 60, "jitter_s": 0}})
    process = subprocess.Popen(
        [sys.executable, "-m", "deals", "--config", str(config), "run", "--feed", slow],
        env=clean_env(seeded_home), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not feed_server.requests_to("/slow.xml") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    with Store(seeded_home / "deals.db") as store:
        assert [r.status for r in store.recent_runs(5)] == ["stopped"]


def test_a_read_only_store_is_not_called_damaged(tmp_path):
    """(The tests run as root, so file modes cannot make a store read-only; SQLite's own
    read-only mode produces the same error the daemon meets on a read-only file.)"""
    path = tmp_path / "deals.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as error:
        ro.execute("INSERT INTO t VALUES (1)")
    ro.close()
    text = explain(path, error.value)
    assert "cannot be written" in text and "may write the file" in text
    assert "damaged" not in text and "move it away" not in text


def test_a_file_that_is_not_a_store_is_a_store_error(tmp_path):
    path = tmp_path / "deals.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="damaged"):
        Store(path)


# =========================================================================== Medium 4: prices cut short


@pytest.mark.parametrize("title", [
    "Logitech MX Master 3S mouse $1e12", "Logitech MX Master 3S mouse $2.5e3", "Logitech MX Master 3S mouse $5,00",
    "Logitech MX Master 3S mouse $12,34,567", "Logitech MX Master 3S mouse $1/2 price", "Logitech MX Master 3S mouse $5x",
    "Logitech MX Master 3S mouse $3.",
])  # fmt: skip
def test_money_that_does_not_read_cleanly_is_rejected_not_guessed(title):
    price, reason = title_price(title)
    assert price is None and "unclear price" in reason
    outcome = extract(_entry("https://shop.example/mouse", title), min_price=1, max_price=10_000)
    assert outcome.deal is None


@pytest.mark.parametrize(("title", "price"), [
    ("Mouse for $29.99, free shipping", 29.99), ("TV $1,299.99 + free shipping", 1299.99),
    ("Shoes for $29 + free shipping w/ $39", 29.0), ("Samsung TV for $499 (was $799)", 499.0),
])  # fmt: skip
def test_clean_prices_still_read(title, price):
    assert title_price(title)[0] == price


def test_a_stated_price_field_must_be_one_clean_amount():
    from deals.agents.money import stated_price

    assert [stated_price(t) for t in ("$1,299.00", "7.46", "Free", "USD 29.99")] == [1299.0, 7.46, 0.0, 29.99]
    assert [stated_price(t) for t in ("$1e12", "$5,00", "A$20", "3 for $10")] == [None, None, None, None]


# =========================================================================== Medium 5: hostile text on the terminal


HOSTILE = f"Mouse [/red] [bold]{ESC}]0;pwned{ESC}\\ {ESC}[2J\u202eevil\u202c bidi"


def test_history_shows_hostile_titles_literally(deals_home):
    with Store(deals_home / "deals.db") as store:
        opportunity(store, "evil", description=HOSTILE, url=f"https://shop.example/x{ESC}[31m")
    done = deals("history", home=deals_home)
    assert done.returncode == 0, done.stderr
    assert "[/red]" in done.stdout and ESC not in done.stdout and "\u202e" not in done.stdout
    done = deals("history", "--json", home=deals_home)
    assert done.returncode == 0 and json.loads(done.stdout)[0]["description"] == HOSTILE  # the record itself, escaped by JSON


def test_feed_text_is_stored_without_controls_or_bidi():
    feed = f"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item>
    <title>{HOSTILE} for $20</title><link>https://shop.example/a</link>
    <description>&lt;p&gt;{ESC}[31mred{ESC}[0m text &lt;/p&gt;</description></item></channel></rss>""".encode()
    [entry] = parse_feed(feed, feed_url="http://127.0.0.1/f").entries
    for text in (entry.title, entry.summary):
        assert ESC not in text and "\u202e" not in text
    assert "[/red]" in entry.title and "red text" in entry.summary


def test_log_lines_are_one_line_each_and_free_of_escapes_when_not_a_terminal(capsys):
    setup_logging("INFO")
    logging.getLogger("deals.test").warning("line one\nline two %s", f"{ESC}[2J\u202e")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("deals.test").exception("with a traceback")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(len(line) > 0 for line in lines)
    assert "line one\\nline two" in lines[0] and ESC not in lines[0] and "\u202e" not in lines[0]
    assert "Traceback" in lines[1] and "ValueError: boom" in lines[1]


def test_feed_keys_and_passwords_in_urls_never_reach_the_log(capsys):
    keyed = "https://feeds.example.com/rss?api_key=SECRET123&cat=tech"
    for json_logs in (False, True):
        setup_logging("INFO", json_logs=json_logs)
        logging.getLogger("deals.test").info("feed %s: ok, 6 entries", keyed)
        logging.getLogger("deals.test").warning("fetch failed: https://reader:pw-s3cr3t@feeds2.example/rss")
        err = capsys.readouterr().err
        assert "SECRET123" not in err and "pw-s3cr3t" not in err and "feeds.example.com/rss" in err, err


# =========================================================================== Medium 6: quadratic HTML


def test_a_feed_of_unclosed_comments_parses_in_linear_time():
    body = "&lt;!--" * (1_000_000 // 7)
    feed = f"""<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item><title>Mouse $20</title>
    <link>https://shop.example/a</link><description>{body}</description></item></channel></rss>""".encode()
    started = time.monotonic()
    parsed = parse_feed(feed, feed_url="http://127.0.0.1/f")
    assert time.monotonic() - started < 10  # 69 s with the html.parser tree
    assert len(parsed.entries) == 1
    started = time.monotonic()
    page_text(b"<html><body>" + b"<!--" * 60_000)
    assert time.monotonic() - started < 5  # 37 s before


# =========================================================================== Medium 7: phone numbers, strings as strings


def test_readme_phone_example_and_times_read_as_strings(tmp_path, monkeypatch):
    monkeypatch.setenv("DEALS_MESSENGER__TO", "[+15551234567]")
    monkeypatch.setenv("DEALS_MESSENGER__FROM_NUMBER", "+15550000000")
    config = write_config(tmp_path / "c.yaml", {})
    config.write_text("messenger:\n  quiet_start: 22:00\n  quiet_end: 07:00\n")
    settings = load_settings(config)
    assert settings.messenger.to == ["+15551234567"] and settings.messenger.from_number == "+15550000000"
    assert (settings.messenger.quiet_start, settings.messenger.quiet_end) == ("22:00", "07:00")
    monkeypatch.setenv("DEALS_KNN__K", "7")
    assert load_settings(config).knn.k == 7


@pytest.mark.parametrize("numbers", [["not-a-phone"], ["12"], ["+1 555"]])
def test_recipients_must_be_e164(numbers, monkeypatch):
    monkeypatch.setenv("DEALS_MESSENGER__TO", json.dumps(numbers))
    with pytest.raises(ConfigError, match="messenger.to"):
        load_settings()


def test_a_bad_twilio_sender_is_a_config_error(monkeypatch):
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": "not-a-phone"}
    with pytest.raises(ConfigError, match="TWILIO_FROM_NUMBER"):
        notifiers.build_notifier(Settings.model_validate({"messenger": {"to": [ALICE]}}).messenger, env)


# =========================================================================== Low: configuration errors exit 2


@pytest.mark.parametrize("case", ["not-utf8", "directory", "yaml-error-in-markup-path", "huge-interval", "min-above-max", "ftp-feed"])
def test_config_errors_exit_2_without_a_traceback(case, tmp_path, capsys):
    folder = tmp_path / "[" / "x]"  # the path's text contains the markup "[/x]"
    folder.mkdir(parents=True)
    path = folder / "c.yaml"
    contents = {
        "not-utf8": b"knn:\n  k: \xff\xfe\n",
        "yaml-error-in-markup-path": b"knn: [unclosed\n",
        "huge-interval": b"scheduler:\n  interval_minutes: 1e308\n",
        "min-above-max": b"scanner:\n  min_price: 500\n  max_price: 10\n",
        "ftp-feed": b"feeds:\n  urls: [ftp://example.com/feed]\n",
    }
    if case == "directory":
        path = folder
    else:
        path.write_bytes(contents[case])
    assert run_cli(["--config", str(path), "config"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "Traceback" not in err
    if case == "yaml-error-in-markup-path":
        assert "[/x]" in err


def test_an_unknown_environment_key_is_named(monkeypatch, capsys):
    monkeypatch.setenv("DEALS_BOGUS__X", "1")
    assert run_cli(["config"]) == 2
    assert "DEALS_BOGUS__X" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_a_deals_home_that_cannot_be_a_directory_exits_2(kind, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("DEALS_HOME", str(blocker if kind == "file" else blocker / "home"))
    assert run_cli(["history"]) == 2
    err = capsys.readouterr().err
    assert "DEALS_HOME" in err and "Traceback" not in err


def test_price_and_evaluate_arguments_are_validated(deals_home, tmp_path, capsys):
    assert run_cli(["price", ""]) == 2
    assert run_cli(["price", "a mouse", "--pricer", "nope"]) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"title": "no price", "price": null}\n{"title": "a range", "price": "$10 - $20"}\n')
    for limit in ("0", "-5"):
        assert run_cli(["evaluate", "--data", str(bad_rows), "--pricer", "constant", "--limit", limit]) == 2
    capsys.readouterr()
    assert run_cli(["evaluate", "--data", str(empty), "--pricer", "constant"]) == 1
    assert "no usable products" in capsys.readouterr().err
    assert run_cli(["evaluate", "--data", str(bad_rows), "--pricer", "constant"]) == 1
    err = capsys.readouterr().err
    assert "no usable products" in err and "2 rows skipped" in err


# =========================================================================== Low: redirects, dedupe, charset, secrets


def test_a_public_feed_may_not_redirect_to_loopback_or_link_local(feed_server):  # noqa: F811
    internal = feed_server.route("/internal.xml", body=(FEEDS / "dealnews-recent-2026-10.xml").read_bytes())
    asked: list[str] = []

    def transport(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.headers['host']}{request.url.path}")
        target = internal if request.url.path == "/to-loopback" else "http://169.254.169.254/latest/meta-data"
        return httpx.Response(302, headers={"Location": target})

    client = make_client(timeout_s=2, user_agent="t", follow_redirects=False, transport=httpx.MockTransport(transport))
    # A public name (a stand-in resolver: no DNS query leaves the machine); the in-process
    # transport answers its first hop, so no connection is made to anything.
    reader = RssReader(Settings(), client=client, resolve=lambda host, port: ["93.184.215.14"])
    result = reader.read(["http://feeds.example/to-loopback", "http://feeds.example/to-metadata"], {})
    assert [r.status for r in result.feed_results] == ["error", "error"]
    assert all("non-public address" in (r.error or "") for r in result.feed_results)
    assert asked == ["feeds.example/to-loopback", "feeds.example/to-metadata"]  # refused before any request
    assert feed_server.requests_to("/internal.xml") == []
    client.close()


def test_a_feed_configured_on_loopback_may_redirect_on_loopback(feed_server):  # noqa: F811
    target = feed_server.serve_file("/real.xml", FEEDS / "dealnews-recent-2026-10.xml")
    feed_server.route("/moved.xml", status=301, headers={"Location": target})
    with RssReader(Settings()) as reader:
        result = reader.read([feed_server.url("/moved.xml")], {})
    assert result.feed_results[0].status == "ok" and len(result.entries) == 3


def test_link_variants_of_one_deal_are_one_entry(feed_server):  # noqa: F811
    items = "".join(
        f"<item><title>Mouse for $20</title><link>{link}</link><guid>{link}</guid></item>"
        for link in ("http://www.shop.example/deal/1/", "https://shop.example/deal/1", "https://www.shop.example/deal/1?utm_source=rss")
    )
    url = feed_server.route("/f.xml", body=f"<rss version='2.0'><channel><title>t</title>{items}</channel></rss>".encode())
    with RssReader(Settings()) as reader:
        result = reader.read([url], {})
    assert len(result.entries) == 1 and result.feed_results[0].duplicates == 2


def test_seen_entries_stored_under_the_old_keys_stay_seen(tmp_path):
    from deals.memory.migrations import MIGRATIONS, apply_migrations

    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    apply_migrations(db, [m for m in MIGRATIONS if m.__name__ < "m007"])
    db.execute("INSERT INTO seen_entries VALUES ('https://www.dealnews.com/22246961.html', 'f', '2026-01-01')")
    db.close()
    with Store(tmp_path / "old.db") as store:
        assert store.unseen(["https://dealnews.com/22246961.html"]) == []


def test_an_unknown_charset_keeps_the_feed_and_its_prices(caplog):
    body = (FEEDS / "dealnews-recent-2026-10.xml").read_bytes().replace(b'encoding="UTF-8"', b'encoding="x-bogus"', 1)
    with caplog.at_level(logging.WARNING):
        parsed = parse_feed(body, feed_url="http://127.0.0.1/f")
    assert [e.price for e in parsed.entries] == [7.46, 29.0, 26.0]
    assert not [r for r in caplog.records if r.exc_info]


def test_twilio_error_text_that_echoes_credentials_is_redacted(deals_home, twilio, caplog):
    import base64

    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    twilio.fail(400, message=f"bad request; you sent token {AUTH_TOKEN} and Basic {basic}")
    with Store(deals_home / "deals.db") as store:
        store.enqueue_alert(opportunity(store, "a"), ALICE, "a deal")
        messenger = Messenger(messenger_settings(twilio), store)
        with caplog.at_level(logging.DEBUG):
            report = messenger.deliver_pending()
        messenger.close()
        error = store.alerts()[0].last_error or ""
    assert report.failed == 1 and "***" in error
    for text in (error, " ".join(report.errors), caplog.text, json.dumps(store_sends_text(deals_home))):
        assert AUTH_TOKEN not in text and basic not in text


def store_sends_text(home: Path) -> list[dict]:
    with Store(home / "deals.db") as store:
        return store.sends()


def _entry(url: str, title: str) -> FeedEntry:
    return FeedEntry(key=url, feed_url="http://127.0.0.1/f", title=title, url=url, published=utcnow() - timedelta(hours=1))


def test_a_damaged_vector_store_is_a_clear_error_not_a_chromadb_traceback(deals_home, capsys):
    (deals_home / "vectors").mkdir()
    (deals_home / "vectors" / "chroma.sqlite3").write_bytes(b"not a database" * 1000)
    assert run_cli(["price", "USB-C cable", "--pricer", "knn"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the vector store" in err and "Traceback" not in err
