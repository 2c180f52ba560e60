"""The dashboard without a browser: safety (binding, token, host, CSRF, escaping, masking),
bad input, pagination, live-update fragments, writes, and the vendored htmx.

The app runs in-process (Starlette's TestClient) over a real store: the SQLite file in the
test's DEALS_HOME, and for the tests that read or write the store through the pages, a
PostgreSQL schema too (`engine_store`: the app opens it from `store.url`, as `deals dashboard`
does with DEALS_STORE__URL).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from deals.cli import run_cli
from deals.framework.errors import ConfigError
from deals.framework.models import Deal, Estimate, FeedEntry, FeedState, Neighbour, Opportunity
from deals.framework.settings import Settings, StoreSettings, WatchRule
from deals.memory.store import Store
from deals.web.app import create_app, feed_id
from deals.web.settings_view import redacted_settings
from deals.web.security import SESSION_COOKIE, Guard, check_bind, is_loopback

STATIC = Path(__file__).resolve().parents[1] / "deals" / "web" / "static"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> Sony headphones'
ALICE, BOB = "+15551110001", "+15552220002"
TOKEN = "a-very-long-dashboard-token-0123456789"
BASE = "http://127.0.0.1:8484"
PAGES = ["/opportunities", "/deals", "/feeds", "/alerts", "/costs", "/runs", "/settings", "/watches"]


def fill(store: Store, n: int = 1, description: str = "Logitech MX Master 3S wireless mouse", url: str = "https://shop.example/m") -> list[int]:
    ids = []
    for i in range(n):
        key = f"k{i}"
        d = Deal(entry_key=key, product_description=description, price=40.0 + i, url=url)
        store.save_deal(d)
        store.record_entries([FeedEntry(key=key, feed_url="https://feed.example/rss", title=description, url=url, summary="was $99")], [d])
        est = Estimate(price=100.0, pricer="ensemble", low=70.0, high=140.0, parts={"local": 100.0, "knn": 90.0},
                       neighbours=[Neighbour(id="n1", title=f"{description} (catalogue)", price=95.0, similarity=0.91)],
                       note="frontier: similar mice sell for about $100")  # fmt: skip
        store.save_estimate(key, est, alert_below=60.0, decision="deal")
        store.set_decision(key, "deal")
        oid = store.save_opportunity(Opportunity(deal=d, estimate=est, discount=60.0 - i))
        store.save_routes(oid, [(ALICE, "general opportunity")])
        alert = store.enqueue_alert(oid, ALICE, "body")
        store.mark_alert(alert, "sent", provider_id=f"SM{i:032d}")
        ids.append(oid)
    return ids


@pytest.fixture
def store(deals_home):
    with Store(deals_home / "deals.db") as s:
        yield s


@pytest.fixture
def engine_store(store_target, deals_home, monkeypatch):
    """The store on each engine; on PostgreSQL the app finds it through store.url (DEALS_STORE__URL)."""
    if str(store_target).startswith("postgresql"):
        monkeypatch.setenv("DEALS_STORE__URL", str(store_target))
    else:
        store_target = deals_home / "deals.db"
    with Store(store_target) as s:
        yield s


def client(settings: Settings | None = None, **options: object) -> TestClient:
    settings = settings or Settings()
    if os.environ.get("DEALS_STORE__URL"):  # as load_settings would read it
        settings = settings.model_copy(update={"store": StoreSettings(url=os.environ["DEALS_STORE__URL"])})
    return TestClient(create_app(settings, **options), base_url=BASE)


def csrf_of(c: TestClient) -> str:
    c.get("/watches")
    return c.cookies["deals_csrf"]


# --------------------------------------------------------------------------- binding and the token


def test_loopback_by_default_and_a_token_required_anywhere_else(monkeypatch):
    assert Settings().dashboard.host == "127.0.0.1" and Settings().dashboard.port == 8484
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.5.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.com"))
    assert check_bind("127.0.0.1", {}) is None
    with pytest.raises(ConfigError, match="DEALS_DASHBOARD_TOKEN"):
        check_bind("0.0.0.0", {})
    with pytest.raises(ConfigError, match="too short"):
        check_bind("0.0.0.0", {"DEALS_DASHBOARD_TOKEN": "short"})
    assert check_bind("0.0.0.0", {"DEALS_DASHBOARD_TOKEN": TOKEN}) == TOKEN


def test_the_command_refuses_to_listen_beyond_loopback_without_a_token(deals_home, capsys):
    assert run_cli(["dashboard", "--host", "0.0.0.0", "--port", "8999"]) == 2
    assert "DEALS_DASHBOARD_TOKEN" in capsys.readouterr().err


def test_with_a_token_every_page_needs_it_by_header_or_login_cookie(store):
    fill(store)
    c = client(token=TOKEN)
    assert c.get("/opportunities", headers={"accept": "text/html"}, follow_redirects=False).headers["location"] == "/login"
    assert c.get("/opportunities").status_code == 401
    assert c.get("/opportunities", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/opportunities", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/static/style.css").status_code == 200 and c.get("/healthz").text == "ok"
    csrf = csrf_of(c)
    bad = c.post("/login", data={"token": "nope", "csrf": csrf})
    assert bad.status_code == 401 and "not the dashboard" in bad.text
    good = c.post("/login", data={"token": TOKEN, "csrf": csrf}, follow_redirects=False)
    assert good.status_code == 303 and TOKEN not in good.headers["set-cookie"]
    assert c.get("/opportunities").status_code == 200  # the session cookie now


def test_the_guard_compares_in_constant_time(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    guard = Guard(bind_host="0.0.0.0", token=TOKEN)
    assert guard.authorised({"authorization": f"Bearer {TOKEN}"}, {}) and calls
    assert not guard.authorised({}, {SESSION_COOKIE: "forged"})


def test_unknown_host_names_are_refused_on_loopback(store):
    c = client()
    assert c.get("/opportunities", headers={"host": "evil.example:8484"}).status_code == 421
    assert c.get("/opportunities", headers={"host": "localhost:8484"}).status_code == 200


# --------------------------------------------------------------------------- CSRF


def test_every_write_needs_the_csrf_token_and_our_origin(engine_store):
    app = client().app
    posts = [r.path for r in app.routes if "POST" in (getattr(r, "methods", None) or ())]
    assert set(posts) == {"/feeds/add", "/feeds/toggle", "/watches/add", "/watches/{id}/remove", "/recipients", "/login", "/logout"}
    c = TestClient(app, base_url=BASE)
    csrf = csrf_of(c)
    for path in posts:
        path = path.replace("{id}", "1")
        assert c.post(path, data={"url": "https://a.example/rss", "number": BOB, "keywords": "x"}).status_code == 403, path
        assert c.post(path, data={"csrf": "forged", "number": BOB, "keywords": "x"}).status_code == 403, path
        refused = c.post(path, data={"csrf": csrf, "number": BOB, "keywords": "x"}, headers={"origin": "https://evil.example"})
        assert refused.status_code == 403, path
    assert engine_store.stored_watches() == [] and engine_store.feed_controls() == []
    ok = c.post("/watches/add", data={"csrf": csrf, "number": BOB, "keywords": "x"}, headers={"x-csrf-token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and len(engine_store.stored_watches()) == 1


# --------------------------------------------------------------------------- escaping and masking


def test_hostile_text_is_escaped_everywhere_and_javascript_links_are_not_links(engine_store):
    [oid] = fill(engine_store, description=HOSTILE, url="javascript:alert(document.cookie)")
    c = client()
    for path in [*PAGES, f"/opportunities/{oid}", "/deals?q=script", "/product?key=" + engine_store.entry_facts(["k0"])["k0"].product_key]:
        page = c.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        assert 'href="javascript:' not in page.text, path
        if path in ("/opportunities", "/deals?q=script"):
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text, path
        assert "content-security-policy" in page.headers and "script-src 'self'" in page.headers["content-security-policy"]


def test_no_secret_or_full_phone_number_is_rendered(engine_store, monkeypatch):
    fill(engine_store, 3)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tw-secret-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-0123456789")
    monkeypatch.setenv("DEALS_DASHBOARD_TOKEN", TOKEN)
    engine_store.add_watch(BOB, WatchRule(keywords=["tv"]))
    settings = Settings.model_validate(
        {"messenger": {"to": [ALICE], "from_number": "+15550009999", "base_url": "https://user:hunter2@proxy.example/twilio?api_key=abc123"},
         "llm": {"base_url": "https://gw.example/v1?token=t0k3n"}}  # fmt: skip
    )
    # errors name what failed: a keyed feed's URL, the recipient Twilio refused
    keyed = "https://feeds.example/rss?api_key=FEEDKEY123"
    engine_store.add_watch(BOB, WatchRule(keywords=["mouse"], feeds=[keyed]))
    run = engine_store.start_run()
    engine_store.finish_run(run, "ok", {"error_messages": [f"feed {keyed}: HTTP 503 (to {BOB})"]})
    refused = engine_store.enqueue_alert(1, BOB, "body")
    engine_store.mark_alert(refused, "failed", error=f"Twilio send: HTTP 400 (code 21211): The 'To' number {BOB} is not valid")
    c = client(settings, token=TOKEN)
    c.headers["authorization"] = f"Bearer {TOKEN}"
    for path in [*PAGES, "/opportunities/1"]:
        text = c.get(path).text
        for secret in ("tw-secret", "sk-secret", TOKEN, "hunter2", "abc123", "t0k3n", ALICE, BOB, "+15550009999", "5551110001", "FEEDKEY123"):
            assert secret not in text, (path, secret)
    assert "********0002 is not valid" in c.get("/alerts").text and "feeds.example/rss" in c.get("/runs").text
    settings_page = c.get("/settings").text
    assert "********0001" in settings_page and "***@proxy.example" in settings_page
    assert re.search(r"TWILIO_AUTH_TOKEN</code></td><td><span class=\"badge s-sent\">set", settings_page)
    # a PostgreSQL store's password (store.url) is never shown either
    shown = redacted_settings(Settings.model_validate({"store": {"url": "postgresql://deals:pg-s3cr3t@db.example:5432/deals"}}))
    assert "pg-s3cr3t" not in shown and "db.example:5432/deals" in shown
    # nor a password in a URL urllib cannot even split (a typo)
    assert "s3cr3tpw" not in redacted_settings(Settings.model_validate({"vectors": {"url": "http://chroma:s3cr3tpw@[fd00::1/"}}))


# --------------------------------------------------------------------------- pages, bad input, pagination


def test_opportunity_page_shows_why(engine_store):
    [oid] = fill(engine_store)
    text = client().get(f"/opportunities/{oid}").text
    assert "0.910" in text and "(catalogue)" in text  # the nearest catalogue product and its similarity
    assert "knn" in text and "$90" in text and "similar mice sell for about $100" in text  # members and the frontier's reasoning
    assert "the feed says was $99" in text and "alerts at or below $60" in text and "********0001" in text


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/deals?page=0", 400, "page must be a whole number"),
        ("/deals?page=abc", 400, "page must be a whole number"),
        ("/deals?since=yesterday", 400, "since must be a date"),
        ("/deals?decision=bogus", 400, "unknown decision"),
        ("/alerts?state=bogus", 400, "unknown alert state"),
        ("/opportunities/abc", 404, "no opportunity"),
        ("/opportunities/%C2%B2", 404, "no opportunity"),  # '²'.isdigit() is true; int('²') is not a number
        ("/opportunities/99999", 404, "no opportunity"),
        ("/product", 400, "which product"),
        ("/costs?days=0", 400, "days must be"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_bad_input_gets_a_clear_error_page(store, path, status, message):
    page = client().get(path)
    assert page.status_code == status and message in page.text and "<h1>" in page.text


def test_lists_are_paginated_and_filterable(engine_store):
    fill(engine_store, 12)
    settings = Settings.model_validate({"dashboard": {"page_size": 5}})
    c = client(settings)
    first = c.get("/opportunities").text
    assert first.count('class="product"') == 5 and 'rel="next"' in first
    third = c.get("/opportunities?page=3").text
    assert third.count('class="product"') == 2 and 'rel="next"' not in third
    assert c.get("/deals?decision=deal&q=LOGITECH").text.count("<tr>") == 1 + 5  # header + a page
    today = datetime.now(timezone.utc).date().isoformat()
    assert "No deals match" in c.get("/deals?decision=too+good+to+be+true").text
    assert "No deals match" in c.get("/deals?until=2000-01-01").text and "No deals match" not in c.get(f"/deals?since={today}").text


def test_live_updates_return_only_the_rows(engine_store):
    fill(engine_store, 2)
    c = client()
    fragment = c.get("/opportunities?fragment=1", headers={"hx-request": "true"}).text
    assert fragment.lstrip().startswith('<tbody id="opportunity-rows"') and "<html" not in fragment
    assert 'hx-trigger="every 30s"' in c.get("/opportunities").text
    assert c.get("/runs?fragment=1", headers={"hx-request": "true"}).text.lstrip().startswith("<tbody")


def test_feeds_added_and_disabled_in_the_dashboard_change_what_a_cycle_reads(engine_store):
    configured = "https://configured.example/rss"
    c = client(Settings.model_validate({"feeds": {"urls": [configured]}}))
    csrf = csrf_of(c)
    assert "not added" in c.post("/feeds/add", data={"csrf": csrf, "url": "ftp://x.example/rss"}).text
    c.post("/feeds/add", data={"csrf": csrf, "url": "https://added.example/rss"})
    c.post("/feeds/toggle", data={"csrf": csrf, "url": configured, "enabled": "0"})
    assert engine_store.effective_feed_urls([configured]) == ["https://added.example/rss"]
    page = c.get("/feeds").text
    assert "added.example" in page and "disabled" in page


def test_a_feed_only_read_with_the_feed_option_is_offered_to_the_cycle_not_shown_disabled(engine_store):
    configured, once, stale = "https://configured.example/rss", "https://once.example/rss", "https://stale.example/rss"
    engine_store.save_feed_state(FeedState(url=once, last_success_at=datetime.now(timezone.utc)))  # `deals run --feed` read it
    engine_store.save_feed_state(FeedState(url=stale))
    engine_store.set_feed_enabled(stale, False)  # disabled while it was configured, then dropped from feeds.urls
    c = client(Settings.model_validate({"feeds": {"urls": [configured]}}))
    csrf = csrf_of(c)

    def row(url: str) -> str:
        return next(r for r in re.findall(r"<tr>.*?</tr>", c.get("/feeds").text, re.S) if url in r)

    assert "add to the cycle" in row(once) and "disabled" not in row(once) and ">disable<" in row(configured)
    assert engine_store.effective_feed_urls([configured]) == [configured]
    for url in (once, stale):
        answer = c.post("/feeds/toggle", data={"csrf": csrf, "url": url, "enabled": "1"})
        assert "added to the cycle" in answer.text
    assert engine_store.effective_feed_urls([configured]) == [configured, once, stale]
    assert ">disable<" in row(once) and "added here" in row(once) and "add to the cycle" not in row(stale)
    c.post("/feeds/toggle", data={"csrf": csrf, "url": once, "enabled": "0"})
    assert engine_store.effective_feed_urls([configured]) == [configured, stale] and "disabled" in row(once) and ">enable<" in row(once)
    c.post("/feeds/toggle", data={"csrf": csrf, "url": configured, "enabled": "0"})
    assert "already in feeds.urls" in c.post("/feeds/add", data={"csrf": csrf, "url": configured}).text
    assert engine_store.effective_feed_urls([configured]) == [configured, stale] and "added here" not in row(configured)
    assert "no such feed" in c.post("/feeds/toggle", data={"csrf": csrf, "url": "https://unknown.example/rss", "enabled": "1"}).text


def test_a_feed_url_with_a_key_is_never_shown_and_its_controls_still_work(engine_store):
    keyed, with_user = "https://feeds.example/rss?api_key=FEEDKEY123", "https://reader:pw-s3cr3t@feeds2.example/rss"
    engine_store.save_feed_state(FeedState(url=keyed, error_count=1, last_error=f"HTTP 503 from {keyed}"))
    d = Deal(entry_key="k", product_description="Logitech MX Master 3S wireless mouse", price=40.0, url="https://shop.example/m")
    engine_store.save_deal(d)
    engine_store.record_entries([FeedEntry(key="k", feed_url=keyed, title=d.product_description, url=d.url)], [d])
    c = client(Settings.model_validate({"feeds": {"urls": [keyed, with_user]}}))
    for path in ("/feeds", "/deals", f"/deals?feed={feed_id(keyed)}", "/product?key=" + quote(engine_store.entry_facts(["k"])["k"].product_key), "/settings"):
        text = c.get(path).text
        assert "FEEDKEY123" not in text and "pw-s3cr3t" not in text, path
    assert "feeds.example/rss" in c.get("/feeds").text and "HTTP 503 from" in c.get("/feeds").text
    assert "Logitech" in c.get(f"/deals?feed={feed_id(keyed)}").text and "Logitech" not in c.get(f"/deals?feed={feed_id(with_user)}").text
    c.post("/feeds/toggle", data={"csrf": csrf_of(c), "feed": feed_id(keyed), "enabled": "0"})  # as the page's form posts it
    assert engine_store.effective_feed_urls([keyed, with_user]) == [with_user]


def test_costs_page_and_charts(engine_store):
    for agent, cost in (("scanner", 0.0012), ("frontier", 0.0031), ("frontier", 0.0009)):
        engine_store.record_llm_call(agent=agent, provider="openai", model="gpt-4o-mini", tokens_in=1000, tokens_out=50, cost_usd=cost)
    c = client()
    page = c.get("/costs").text
    assert "$0.0052" in page and "frontier" in page and "scanner" in page
    for chart in ("/charts/costs.svg", "/charts/estimates.svg", "/charts/history.svg?key=none"):
        svg = c.get(chart)
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content


def test_htmx_is_vendored_with_its_licence_and_nothing_is_fetched_from_elsewhere(store):
    assert hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert "Zero-Clause BSD" in (STATIC / "htmx.LICENSE").read_text() and HTMX_SHA256 in (STATIC / "NOTICE.md").read_text()
    page = client().get("/opportunities").text
    assert re.findall(r'<script[^>]*src="([^"]+)"', page) == ["/static/htmx.min.js"]
    assert not re.search(r'(src|href)="(https?:)?//', page)


# --------------------------------------------------------------------------- serving beside the daemon


def test_the_dashboard_thread_serves_and_stops_and_a_taken_port_is_a_clear_error(store):
    import httpx

    from deals.framework.errors import DealsError
    from deals.web.server import DashboardThread
    from tests.fakes.browser import free_port

    port = free_port()
    server = DashboardThread(Settings(), port=port).start()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok"
        with pytest.raises(DealsError, match=f"127.0.0.1:{port}: the port is in use"):
            DashboardThread(Settings(), port=port).start()
    finally:
        server.stop()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_run_with_dashboard_hands_the_dashboard_to_the_daemon(deals_home, monkeypatch):
    import deals.agents.daemon as daemon
    from deals.web.server import DashboardThread

    seen = {}

    def fake_run_daemon(settings, **options):
        seen.update(options)
        return 0

    monkeypatch.setattr(daemon, "run_daemon", fake_run_daemon)
    assert run_cli(["run", "--once", "--dashboard"]) == 0
    assert [type(s) for s in seen["services"]] == [DashboardThread]
    monkeypatch.setenv("DEALS_DASHBOARD__HOST", "0.0.0.0")
    assert run_cli(["run", "--once", "--dashboard"]) == 2  # refused before the daemon starts: no token


def test_requests_arriving_together_open_the_store_once(store, monkeypatch):
    """The handlers run on a thread pool; the first requests of a fresh server arrive at once."""
    import threading
    import time

    from deals.web import app as web

    opened: list[Store] = []
    real_init = Store.__init__

    def counting_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(self)
        time.sleep(0.05)  # opening takes a while (migrations, a network round trip): the others arrive meanwhile
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Store, "__init__", counting_init)
    dashboard = web.Dashboard(Settings(), store.path, Guard(bind_host="127.0.0.1", token=None))
    start = threading.Barrier(8)
    seen: list[Store] = []

    def first_request() -> None:
        start.wait()
        seen.append(dashboard.store)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1 and len({id(s) for s in seen}) == 1
    dashboard.close()


def test_odd_form_numbers_are_refused_with_a_message_and_a_crash_page_keeps_the_headers(store, monkeypatch):
    c = client()
    token = csrf_of(c)
    assert c.post("/watches/%C2%B2/remove", data={"csrf": token}).status_code in (200, 303)
    for cap in ("\u00b2", "99999999999999999999999", "-1"):
        page = c.post("/recipients", data={"csrf": token, "number": ALICE, "daily_cap": cap}, follow_redirects=True)
        assert page.status_code == 200 and "is not a whole number" in page.text, cap
    assert store.stored_recipients() == []  # nothing half-saved

    from deals.web import app as web

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    monkeypatch.setattr(web.Dashboard, "opportunities", broken)
    crash = TestClient(create_app(Settings()), base_url=BASE, raise_server_exceptions=False).get("/opportunities")
    assert crash.status_code == 500 and "content-security-policy" in crash.headers and "x-frame-options" in crash.headers
