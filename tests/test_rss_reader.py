"""The RSS reader agent against real feeds served by a local HTTP server, and its faults."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape

import time

import httpx
import pytest

from deals.agents.feed_parsing import (
    TRACKING_PARAMS,
    canonical_url,
    entry_key,
    html_to_text,
    page_text,
    parse_feed,
    parse_price,
)
from deals.agents.rss_reader import ReadResult, RssReader
from deals.framework.errors import FetchError
from deals.framework.http import make_client
from deals.framework.urls import dedupe_key
from deals.framework.models import FeedEntry, FeedState
from deals.framework.settings import FeedSettings, Settings
from tests.fakes.feed_server import FeedServer, feed_server  # noqa: F401 - pytest fixture

FEEDS = Path(__file__).parent / "fixtures" / "feeds"
RECENT = FEEDS / "dealnews-recent-2026-10.xml"
ROUNDUPS = FEEDS / "dealnews-roundups-2026-10.xml"
ESCAPED = FEEDS / "dealnews-recent-2026-10-escaped.xml"
TECHBARGAINS = FEEDS / "techbargains-2026-10.xml"
OZBARGAIN = FEEDS / "ozbargain-2023-01.xml"
T0 = datetime(2026, 10, 6, 12, 0, tzinfo=timezone.utc)
HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>")


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_settings(**feeds: object) -> Settings:
    return Settings(feeds=FeedSettings(**feeds))


@pytest.fixture
def reader_for():
    readers: list[RssReader] = []

    def make(clock: Clock | None = None, **feeds: object) -> RssReader:
        reader = RssReader(make_settings(**feeds), clock=clock or Clock())
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


def by_key(result: ReadResult) -> dict[str, FeedEntry]:
    return {e.key: e for e in result.entries}


def assert_plain(text: str) -> None:
    assert not HTML_TAG.search(text), text
    assert "&amp;" not in text and "&#" not in text and "&quot;" not in text, text


# --------------------------------------------------------------------------- real feeds


def test_all_real_feeds_read_over_http(feed_server, reader_for):  # noqa: F811
    urls = [
        feed_server.serve_file("/recent.xml", RECENT),
        feed_server.serve_file("/roundups.xml", ROUNDUPS),
        feed_server.serve_file("/techbargains.xml", TECHBARGAINS),
        feed_server.serve_file("/ozbargain.xml", OZBARGAIN),
    ]
    result = reader_for().read(urls, {})

    assert [(r.status, r.entries, r.duplicates) for r in result.feed_results] == [
        ("ok", 3, 0),
        ("ok", 11, 1),  # the Alfani shirt is in both DealNews files
        ("ok", 6, 0),
        ("ok", 30, 0),
    ]
    assert result.feed_results[0].warning is None
    assert "unbound prefix" in (result.feed_results[1].warning or "")
    assert len(result.entries) == 50 == len(by_key(result))
    assert set(result.states) == set(urls)
    for entry in result.entries:
        assert entry.title and entry.summary, entry
        assert_plain(entry.summary)
        assert_plain(entry.details)
        assert_plain(entry.title)
        assert "iref=" not in entry.url and "iref=" not in entry.key
        assert entry.published is not None
    entries = by_key(result)

    shirt = entries["https://dealnews.com/22246961.html"]  # the key ignores www. and http/https
    assert shirt.feed_url == urls[0]
    assert shirt.title == "Alfani Men's Short-Sleeve Solid Textured Shirt for $7 + free shipping w/ $39"
    assert shirt.url == "https://www.dealnews.com/Alfani-Mens-Short-Sleeve-Solid-Textured-Shirt-for-7-free-shipping-w-39/22246961.html"
    assert (shirt.price, shirt.retailer, shirt.category) == (7.46, "Macy's", "Shirts")
    assert shirt.summary.startswith("This Alfani shirt is priced at $7.46, down from $50, a savings of 85%.")
    assert shirt.summary.endswith("Buy Now at Macy's")
    assert shirt.details.splitlines() == [
        "Point collar", "Button-front closure", "Solid textured woven fabric", "100% cotton", "Machine washable",
    ]
    assert shirt.published == datetime(2026, 10, 5, 19, 58, 56, tzinfo=timezone.utc)

    samoa = entries[dedupe_key("https://www.dealnews.com/22246856.html")]
    assert (samoa.price, samoa.retailer, samoa.category) == (29.0, "eBay", "Shoes")
    assert 'promo code "COUNTDOWN20"' in samoa.summary
    run70s = entries[dedupe_key("https://www.dealnews.com/22246844.html")]
    assert run70s.price == 26.0 and "Sold directly by adidas through eBay" in run70s.details

    # roundups: store-wide sales state no price; the two single products do
    roundups = [e for e in result.entries if e.feed_url == urls[1]]
    assert sorted(e.price for e in roundups if e.price is not None) == [19.0]
    assert sum(e.price is None for e in roundups) == 10
    vest = entries[dedupe_key("https://www.dealnews.com/22247016.html")]
    assert vest.title == "Alfani Men's Welded Alfatech Contrast-Trim Full-Zip Vest for $19 + free shipping w/ $39"
    staples = entries[dedupe_key("https://www.dealnews.com/22246010.html")]
    assert (staples.price, staples.retailer, staples.category) == (None, "Staples", "Printers & Scanners")
    assert "HP OfficeJet Pro 9125 wireless all-in-one printer at $189.99, down from $309.99" in staples.details.splitlines()
    lowes = entries[dedupe_key("https://www.dealnews.com/22246959.html")]
    assert lowes.title == "Tools & Outdoor Power Equipment Deals at Lowe's: Up to $230 off + free shipping"

    # TechBargains RSS 0.91: no price field, so no price; the vendor is the retailer
    beef = entries[dedupe_key("https://www.amazon.com/gp/product/B08LJVQSL2")]
    assert (beef.title, beef.price, beef.retailer, beef.category) == (
        "Amazon Grocery 1lb 80/20 Fat Ground Beef $1.99", None, "Amazon", "Food & Restaurants",
    )
    assert beef.summary == "Amazon Grocery 1lb 80/20 Fat Ground Beef $1.99"
    cover = entries[dedupe_key("https://www.amazon.com/gp/product/B0FLK21B27/ref=ox_sc_act_title_1?smid=A33I1DOPZM7RMJ&th=1")]
    assert cover.title == 'Printspree 36" x 36" Larger Mesh Air Conditioner Covers $8.49'
    assert all(e.price is None for e in result.entries if e.feed_url == urls[2])

    # OzBargain: prices are AUD in titles only; the guid is not a URL, so the link is the key
    mouse = entries[dedupe_key("https://www.ozbargain.com.au/node/751576")]
    assert mouse.title == "Razer DeathAdder V2 Ergonomic Wired Gaming Mouse $37 @ eBay with Code"
    assert mouse.category == "Computing" and mouse.price is None
    assert "Currently $69 at JBHIFI, $63 at Amazon." in mouse.summary
    assert "I'm using one now" in mouse.summary
    tv = entries[dedupe_key("https://www.ozbargain.com.au/node/751574")]
    assert tv.title == 'Sharp 70" 4k UHD TV 4T-C70CK3X, $899 + $55 Delivery @ The Good Guys'
    assert tv.category == "Electrical & Electronics"
    assert all(e.price is None for e in result.entries if e.feed_url == urls[3])


def test_entries_are_newest_first_and_capped_per_feed(feed_server, reader_for):  # noqa: F811
    url = feed_server.serve_file("/oz.xml", OZBARGAIN)
    everything = parse_feed(OZBARGAIN.read_bytes(), feed_url=url).entries
    newest = sorted(everything, key=lambda e: e.published, reverse=True)[:5]
    result = reader_for(max_entries_per_feed=5).read([url], {})
    assert [e.key for e in result.entries] == [e.key for e in newest]
    assert [e.published for e in result.entries] == sorted((e.published for e in result.entries), reverse=True)
    assert result.feed_results[0].entries == 5


def test_escaped_fixture_is_the_cdata_feed_with_escaped_descriptions():
    original = RECENT.read_text(encoding="utf-8")
    derived = re.sub(
        r"<description><!\[CDATA\[(.*?)\]\]></description>",
        lambda m: "<description>" + escape(m.group(1)) + "</description>",
        original,
        flags=re.S,
    )
    assert ESCAPED.read_text(encoding="utf-8") == derived
    assert "CDATA" not in derived and "&lt;div class=\"snippet summary\"" in derived


def test_entity_escaped_descriptions_read_like_cdata(feed_server, reader_for):  # noqa: F811
    cdata = reader_for().read([feed_server.serve_file("/cdata.xml", RECENT)], {}).entries
    escaped = reader_for().read([feed_server.serve_file("/escaped.xml", ESCAPED)], {}).entries
    assert len(escaped) == 3
    fields = ("key", "title", "url", "summary", "details", "price", "retailer", "category", "published")
    assert [e.model_dump(include=set(fields)) for e in escaped] == [e.model_dump(include=set(fields)) for e in cdata]
    assert escaped[0].summary.startswith("This Alfani shirt is priced at $7.46")
    assert escaped[0].details.startswith("Point collar\n")


def test_same_deal_in_two_category_feeds_is_one_entry(feed_server, reader_for):  # noqa: F811
    electronics = RECENT.read_bytes().replace(b"?iref=rss<", b"?iref=rss-c142<")
    smart_home = ROUNDUPS.read_bytes().replace(b"?iref=rss<", b"?iref=rss-f1912<")
    assert b"iref=rss-c142" in electronics and b"iref=rss-f1912" in smart_home
    urls = [
        feed_server.route("/c142.xml", body=electronics),
        feed_server.route("/f1912.xml", body=smart_home),
    ]
    result = reader_for().read(urls, {})
    shirts = [e for e in result.entries if "Alfani-Mens-Short-Sleeve" in e.url]
    assert len(shirts) == 1
    assert shirts[0].feed_url == urls[0]  # the first feed that had it
    assert shirts[0].url.endswith("/22246961.html")
    assert len(result.entries) == 3 + 12 - 1
    assert result.feed_results[1].duplicates == 1


def test_canonical_url_and_keys():
    assert (
        canonical_url("HTTPS://WWW.DealNews.com:443/Some-Deal/123.html?iref=rss-c142&b=2&utm_source=x&a=1&UTM_Medium=y#top")
        == "https://www.dealnews.com/Some-Deal/123.html?a=1&b=2"
    )
    assert canonical_url("http://shop.example:8080?fbclid=1&gclid=2&ref=rss") == "http://shop.example:8080/"
    assert canonical_url("https://shop.example/p?q=usb%20c&cmpid=9&color=red") == "https://shop.example/p?color=red&q=usb+c"
    assert {"iref", "ref", "cmpid", "fbclid", "gclid"} <= TRACKING_PARAMS
    with pytest.raises(ValueError):
        canonical_url("ftp://example.com/x")
    assert entry_key("https://www.dealnews.com/22246961.html?iref=rss", "https://www.dealnews.com/x/22246961.html") == (
        "https://dealnews.com/22246961.html"
    )
    assert entry_key("751576 at https://www.ozbargain.com.au", "https://www.ozbargain.com.au/node/751576") == (
        "https://ozbargain.com.au/node/751576"
    )
    # http/https, www. and a trailing slash: one deal (one key), whatever the feed wrote
    variants = ["http://www.shop.example/deal/9/", "https://shop.example/deal/9", "HTTPS://WWW.shop.example/deal/9/?utm_source=x"]
    assert {entry_key(v, None) for v in variants} == {"https://shop.example/deal/9"}
    assert entry_key("urn:uuid:1234", None) == "guid:urn:uuid:1234"
    with pytest.raises(ValueError):
        entry_key(None, None)


@pytest.mark.parametrize(
    ("text", "currency", "price"),
    [
        ("7.46", "USD", 7.46),
        ("$29.99", None, 29.99),
        ("29.99", None, 29.99),
        (" $1,299.00 ", None, 1299.0),
        ("Free", None, 0.0),
        ("FREE", "USD", 0.0),
        ("Up to 60% off", None, None),
        ("from $5", None, None),
        ("", None, None),
        (None, None, None),
        ("29.99", "AUD", None),
    ],
)
def test_parse_price(text, currency, price):
    assert parse_price(text, currency) == price


def test_dealnews_price_without_attributes_and_an_undeclared_store(feed_server, reader_for):  # noqa: F811
    feed = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item><title>Widget for $12</title><link>https://www.dealnews.com/Widget/1.html?iref=rss-c1</link>
    <guid>https://www.dealnews.com/1.html?iref=rss-c1</guid><description>A widget.</description>
    <dealnews:price>$12.50</dealnews:price><dealnews:store>Widgets Inc</dealnews:store></item>
    <item><title>Gadget, free</title><link>https://www.dealnews.com/Gadget/2.html</link>
    <description>&lt;p&gt;A &lt;b&gt;free&lt;/b&gt; gadget &amp;amp; more.&lt;/p&gt;</description>
    <dealnews:price>Free</dealnews:price></item></channel></rss>"""
    result = reader_for().read([feed_server.route("/f.xml", body=feed)], {})
    widget, gadget = sorted(result.entries, key=lambda e: e.title, reverse=True)
    assert (widget.price, widget.retailer, widget.summary) == (12.5, "Widgets Inc", "A widget.")
    assert (gadget.price, gadget.summary, gadget.key) == (0.0, "A free gadget & more.", "https://dealnews.com/Gadget/2.html")
    assert gadget.url == "https://www.dealnews.com/Gadget/2.html"  # the link itself is kept as written


# --------------------------------------------------------------------------- conditional GET


def test_conditional_get_with_etag_and_last_modified(feed_server, reader_for):  # noqa: F811
    stamp = "Mon, 05 Oct 2026 20:00:00 GMT"
    url = feed_server.serve_file("/recent.xml", RECENT, etag='"v1"', last_modified=stamp)
    clock = Clock()
    reader = reader_for(clock)
    first = reader.read([url], {})
    state = first.states[url]
    assert first.feed_results[0].status == "ok" and len(first.entries) == 3
    assert (state.etag, state.last_modified, state.last_success_at) == ('"v1"', stamp, T0)

    clock.advance(1800)
    second = reader.read([url], first.states)
    assert second.feed_results[0].status == "not_modified"
    assert second.entries == [] and second.feed_results[0].entries == 0
    sent = feed_server.requests_to("/recent.xml")[1].headers
    assert sent["If-None-Match"] == '"v1"' and sent["If-Modified-Since"] == stamp
    again = second.states[url]
    assert (again.etag, again.last_modified, again.error_count) == ('"v1"', stamp, 0)
    assert again.last_success_at == T0 + timedelta(seconds=1800)

    # a changed feed (new validator) is read again
    feed_server.serve_file("/recent.xml", RECENT, etag='"v2"')
    third = reader.read([url], second.states)
    assert third.feed_results[0].status == "ok" and third.states[url].etag == '"v2"'


def test_conditional_get_with_last_modified_only(feed_server, reader_for):  # noqa: F811
    stamp = "Tue, 06 Oct 2026 21:05:00 GMT"
    url = feed_server.serve_file("/tb.xml", TECHBARGAINS, last_modified=stamp)
    reader = reader_for()
    first = reader.read([url], {})
    assert first.states[url].etag is None
    second = reader.read([url], first.states)
    assert second.feed_results[0].status == "not_modified"
    assert "If-None-Match" not in feed_server.requests_to("/tb.xml")[1].headers


# --------------------------------------------------------------------------- faults


def test_faulty_feeds_fail_alone(feed_server, reader_for, caplog):  # noqa: F811
    good = feed_server.serve_file("/good.xml", RECENT)
    slow = feed_server.serve_file("/slow.xml", TECHBARGAINS, delay_s=10)
    broken = feed_server.route("/500.xml", status=500, body=b"Internal Server Error")
    malformed = feed_server.route("/bad.xml", body=b"<rss><channel><<<title>>>& not xml at all</")
    huge = feed_server.route("/huge.xml", stream_bytes=20_000_000)
    page = feed_server.route("/page.xml", body=b"<html><body><p>Hello</p></body></html>", content_type="text/html")
    late = feed_server.serve_file("/late.xml", OZBARGAIN)
    urls = [slow, broken, good, malformed, huge, page, late, "file:///etc/passwd"]
    reader = reader_for(timeout_s=0.3, max_bytes=1_000_000, backoff_base_s=60)
    with caplog.at_level(logging.WARNING, logger="deals.agents.rss_reader"):
        result = reader.read(urls, {})

    statuses = {r.url: r.status for r in result.feed_results}
    assert statuses == {good: "ok", late: "ok"} | {u: "error" for u in (slow, broken, malformed, huge, page, urls[-1])}
    assert {e.feed_url for e in result.entries} == {good, late} and len(result.entries) == 33
    errors = {r.url: r.error or "" for r in result.feed_results}
    assert "timed out" in errors[slow]
    assert "HTTP 500" in errors[broken]
    assert "not a readable feed" in errors[malformed]
    assert "larger than the 1000000 bytes" in errors[huge]
    assert "not a readable feed" in errors[page] or "not an RSS or Atom feed" in errors[page]
    assert "http and https" in errors[urls[-1]]
    for url in (slow, broken, malformed, huge, page):
        state = result.states[url]
        assert state.error_count == 1 and state.last_error == errors[url]
        assert state.next_attempt_at == T0 + timedelta(seconds=60)
        assert not state.unhealthy
    assert result.states[good].error_count == 0 and result.states[good].next_attempt_at is None
    assert result.errors == 6
    assert all(r.seconds < 3 for r in result.feed_results)
    assert any("HTTP 500" in rec.getMessage() for rec in caplog.records)
    stats = feed_server.stats("/huge.xml")
    assert stats.done.wait(5) and stats.aborted and stats.bytes_sent < 20_000_000


def test_a_bozo_feed_with_entries_is_read_with_a_warning(feed_server, reader_for, caplog):  # noqa: F811
    url = feed_server.serve_file("/roundups.xml", ROUNDUPS)
    with caplog.at_level(logging.WARNING, logger="deals.agents.rss_reader"):
        result = reader_for().read([url], {})
    assert result.feed_results[0].status == "ok" and len(result.entries) == 12
    assert any("not well-formed" in rec.getMessage() and "12 entries" in rec.getMessage() for rec in caplog.records)


def test_an_empty_but_valid_feed_is_fine(feed_server, reader_for):  # noqa: F811
    url = feed_server.route("/empty.xml", body=b'<?xml version="1.0"?><rss version="2.0"><channel><title>none</title></channel></rss>')
    result = reader_for().read([url], {})
    assert (result.feed_results[0].status, result.entries, result.states[url].error_count) == ("ok", [], 0)


def test_a_body_naming_a_local_file_is_not_read_as_that_file(feed_server, reader_for, tmp_path):  # noqa: F811
    local = tmp_path / "local.xml"
    local.write_bytes(RECENT.read_bytes())
    url = feed_server.route("/path.xml", body=str(local).encode())
    result = reader_for().read([url], {})
    assert result.feed_results[0].status == "error" and result.entries == []


def test_network_errors_and_unexpected_exceptions_stay_inside_read():
    recent = RECENT.read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.headers["host"]  # requests to public feeds are pinned to the checked address
        if host == "dns.invalid":
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        if host == "weird.example":
            raise RuntimeError("transport bug")
        return httpx.Response(200, content=recent, headers={"Content-Type": "application/rss+xml"})

    client = make_client(timeout_s=1, user_agent="t", transport=httpx.MockTransport(handler))
    # a stand-in resolver (no DNS query leaves the machine); the transport answers, nothing connects
    reader = RssReader(make_settings(), client=client, clock=Clock(), resolve=lambda host, port: ["93.184.215.14"])
    result = reader.read(["https://dns.invalid/rss", "https://weird.example/rss", "https://ok.example/rss"], {})
    by_url = {r.url: r for r in result.feed_results}
    assert "Name or service not known" in (by_url["https://dns.invalid/rss"].error or "")
    assert "RuntimeError: transport bug" == by_url["https://weird.example/rss"].error
    assert by_url["https://ok.example/rss"].status == "ok" and len(result.entries) == 3
    reader.close()
    assert not client.is_closed  # an injected client belongs to the caller
    client.close()


def test_one_dns_question_per_host_for_a_feed_and_its_redirect():
    """The guard's check and the pinned fetch share one answer (and so cannot disagree)."""
    recent = RECENT.read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "old.example":
            return httpx.Response(301, headers={"Location": "https://new.example/rss"})
        return httpx.Response(200, content=recent, headers={"Content-Type": "application/rss+xml"})

    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.215.14"]

    client = make_client(timeout_s=1, user_agent="t", transport=httpx.MockTransport(handler))
    reader = RssReader(make_settings(), client=client, clock=Clock(), resolve=resolve)
    result = reader.read(["https://old.example/rss"], {})
    assert result.feed_results[0].status == "ok" and len(result.entries) == 3
    assert sorted(asked) == ["new.example", "old.example"]
    reader.close()
    client.close()


def test_a_validator_that_cannot_be_sent_back_never_stops_the_feed():
    """A server sending a non-ASCII ETag must not leave a value stored that no request can carry."""
    recent = RECENT.read_bytes()
    sent: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(dict(request.headers))
        return httpx.Response(
            200, content=recent, headers=[(b"Content-Type", b"application/rss+xml"), (b"ETag", b'W/"r\xc3\xa9v-1"'), (b"Last-Modified", b"Mon, 01 Dec 2026 07:00:00 GMT")]
        )

    client = make_client(timeout_s=1, user_agent="t", transport=httpx.MockTransport(handler))
    reader = RssReader(make_settings(), client=client, clock=Clock(), resolve=lambda host, port: ["93.184.215.14"])
    url = "https://ok.example/rss"
    first = reader.read([url], {})
    state = first.states[url]
    assert first.feed_results[0].status == "ok" and state.etag is None and state.last_modified == "Mon, 01 Dec 2026 07:00:00 GMT"
    stored_before = state.model_copy(update={"etag": 'W/"r\u00e9v-1"'})  # kept by an older version
    again = reader.read([url], {url: stored_before})
    assert again.feed_results[0].status == "ok" and again.states[url].error_count == 0
    assert "if-none-match" not in sent[-1] and sent[-1]["if-modified-since"] == "Mon, 01 Dec 2026 07:00:00 GMT"
    reader.close()
    client.close()


def test_the_dns_lookup_and_the_fetch_share_one_deadline():
    """A slow lookup leaves the fetch only what is left of `feeds.timeout_s`, not a second one."""
    recent = RECENT.read_bytes()

    def slow_server(request: httpx.Request) -> httpx.Response:
        time.sleep(0.5)
        return httpx.Response(200, content=recent, headers={"Content-Type": "application/rss+xml"})

    def slow_dns(host: str, port: int) -> list[str]:
        time.sleep(0.7)
        return ["93.184.215.14"]

    client = make_client(timeout_s=5, user_agent="t", transport=httpx.MockTransport(slow_server))
    reader = RssReader(make_settings(timeout_s=1.0), client=client, clock=Clock(), resolve=slow_dns)
    started = time.monotonic()
    result = reader.read(["https://slow.example/rss"], {})
    assert result.feed_results[0].status == "error" and "timed out" in (result.feed_results[0].error or "")
    assert time.monotonic() - started < 1.6
    reader.close()
    client.close()


def test_backoff_skips_failing_feeds_until_due_and_marks_them_unhealthy(feed_server, reader_for):  # noqa: F811
    url = feed_server.route("/flaky.xml", status=500)
    clock = Clock()
    reader = reader_for(clock, backoff_base_s=60, backoff_max_s=200, unhealthy_after=3)
    assert [reader.backoff_s(n) for n in range(6)] == [0, 60, 120, 200, 200, 200]

    states: dict[str, FeedState] = {}
    expected = [(1, 60, False), (2, 120, False), (3, 200, True), (4, 200, True)]
    for count, wait, unhealthy in expected:
        result = reader.read([url], states)
        states = result.states
        state = states[url]
        assert result.feed_results[0].status == "error"
        assert (state.error_count, state.unhealthy, result.feed_results[0].unhealthy) == (count, unhealthy, unhealthy)
        assert state.next_attempt_at == clock.now + timedelta(seconds=wait)
        # just before it is due: skipped, and nothing is requested
        requests = len(feed_server.requests)
        clock.now = state.next_attempt_at - timedelta(seconds=1)
        skipped = reader.read([url], states)
        assert skipped.feed_results[0].status == "skipped_backoff"
        assert skipped.feed_results[0].error == state.last_error
        assert skipped.states[url] == state and len(feed_server.requests) == requests
        clock.now = state.next_attempt_at

    feed_server.serve_file("/flaky.xml", RECENT)
    healed = reader.read([url], states).states[url]
    assert (healed.error_count, healed.unhealthy, healed.last_error, healed.next_attempt_at) == (0, False, None, None)
    assert healed.last_success_at == clock.now


def test_read_does_not_mutate_the_given_states(feed_server, reader_for):  # noqa: F811
    url = feed_server.route("/x.xml", status=503)
    before = FeedState(url=url, etag='"e"', error_count=1)
    states = {url: before}
    result = reader_for().read([url], states)
    assert states[url] is before and before.error_count == 1
    assert result.states[url].error_count == 2 and result.states[url].etag == '"e"'


# --------------------------------------------------------------------------- deal pages

PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>Alfani Shirt | Store</title>
<meta name="description" content="A cotton shirt with a point collar &amp; buttons.">
<script>var tracking = "SECRET-SCRIPT";</script><style>.x{color:red}</style></head>
<body><nav>Home | Deals | Account</nav><header>Store header</header>
<main><h1>Alfani Short-Sleeve Shirt</h1><p>Made of 100% cotton.</p><ul><li>Machine washable</li></ul>
<p>""" + b"long text " * 400 + b"""</p></main><footer>Copyright footer</footer></body></html>"""


def _pages_feed(feed_server: FeedServer) -> str:  # noqa: F811
    body = ROUNDUPS.read_bytes().replace(b"https://www.dealnews.com/", feed_server.url("/").encode())
    return feed_server.route("/local.xml", body=body)


def test_page_fetch_with_bounded_concurrency(feed_server, reader_for):  # noqa: F811
    url = _pages_feed(feed_server)
    feed_server.route("*", body=PAGE, content_type="text/html; charset=utf-8", delay_s=0.1)
    skip_key = dedupe_key(feed_server.url("/22246010.html"))  # the planner has seen this one already
    reader = reader_for(fetch_pages=True, allow_private_addresses=True, page_concurrency=2)
    result = reader.read([url], {}, is_new=lambda key: key != skip_key)

    page_requests = [r for r in feed_server.requests if r.path != "/local.xml"]
    assert len(page_requests) == 11
    assert feed_server.max_in_flight == 2
    assert all(r.headers["User-Agent"] == reader.feeds.user_agent for r in page_requests)
    entries = by_key(result)
    assert entries[skip_key].details == parse_feed(ROUNDUPS.read_bytes(), feed_url=url).entries[0].details
    shirt = entries[dedupe_key(feed_server.url("/22246961.html"))]
    features, page = shirt.details.split("\n\n", 1)
    assert features.startswith("Point collar\n")
    lines = page.splitlines()
    assert lines[:5] == [
        "Alfani Shirt | Store",
        "A cotton shirt with a point collar & buttons.",
        "Alfani Short-Sleeve Shirt",
        "Made of 100% cotton.",
        "Machine washable",
    ]
    assert len(page) <= 2000 and page.endswith("…")
    for unwanted in ("SECRET-SCRIPT", "color:red", "Home | Deals", "Copyright footer", "Store header"):
        assert unwanted not in page
    assert_plain(page)


def test_page_fetch_refused_for_loopback_without_the_flag(feed_server, reader_for, caplog):  # noqa: F811
    url = _pages_feed(feed_server)
    feed_server.route("*", body=PAGE, content_type="text/html")
    reader = reader_for(fetch_pages=True)  # allow_private_addresses defaults to False
    with caplog.at_level(logging.WARNING, logger="deals.agents.rss_reader"):
        result = reader.read([url], {})
    assert [r.path for r in feed_server.requests] == ["/local.xml"]
    assert len(result.entries) == 12
    local = ROUNDUPS.read_bytes().replace(b"https://www.dealnews.com/", feed_server.url("/").encode())
    plain = {e.key: e.details for e in parse_feed(local, feed_url=url).entries}
    assert all(e.details == plain[e.key] for e in result.entries)
    assert sum("non-public address" in rec.getMessage() for rec in caplog.records) == 12


def test_page_failures_are_skipped_and_big_pages_cut_off(feed_server, reader_for):  # noqa: F811
    body = RECENT.read_bytes().replace(b"https://www.dealnews.com/", feed_server.url("/").encode())
    url = feed_server.route("/recent.xml", body=body)
    shirt, samoa, run70s = (dedupe_key(feed_server.url(f"/{n}.html")) for n in (22246961, 22246856, 22246844))
    feed_server.route("/Alfani-Mens-Short-Sleeve-Solid-Textured-Shirt-for-7-free-shipping-w-39/22246961.html", status=500)
    feed_server.route("/adidas-Mens-Samoa-Shoes-for-29-free-shipping/22246856.html", body=PAGE, delay_s=5, content_type="text/html")
    big = b"<html><head><title>Run 70s</title></head><body><p>" + b"word " * 100_000 + b"</p></body></html>"
    feed_server.route("/adidas-Mens-Run-70-s-2-0-Shoes-for-26-free-shipping/22246844.html", body=big, content_type="text/html")
    reader = reader_for(fetch_pages=True, allow_private_addresses=True, page_timeout_s=0.3, page_max_bytes=4096)
    entries = by_key(reader.read([url], {}))
    original = by_key(ReadResult(entries=parse_feed(body, feed_url=url).entries))
    assert entries[shirt].details == original[shirt].details  # 500: skipped
    assert entries[samoa].details == original[samoa].details  # timed out: skipped
    assert entries[run70s].details.startswith(original[run70s].details + "\n\nRun 70s\nword word")


def test_page_text_and_html_to_text_helpers():
    assert html_to_text("<p>One &amp; two</p><ul><li>a</li><li>b<li>c</ul>tail<br>end") == "One & two\na\nb\nc\ntail\nend"
    assert html_to_text("<div>" * 5000 + "deep" + "</div>" * 5000) == "deep"  # no recursion limit
    latin = "<html><head><title>Caf\xe9</title></head><body>na\xefve</body></html>".encode("latin-1")
    assert page_text(latin, charset="iso-8859-1") == "Caf\xe9\nna\xefve"
    assert page_text(b"<p>" + b"abc " * 1000 + b"</p>", limit=50).endswith("…")
    assert len(page_text(b"<p>" + b"abc " * 1000 + b"</p>", limit=50)) <= 50


def test_parse_feed_rejects_what_is_not_a_feed():
    with pytest.raises(FetchError, match="not"):
        parse_feed(b"<html><body><p>Hello</p></body></html>", feed_url="http://x/")
    with pytest.raises(FetchError):
        parse_feed(b"", feed_url="http://x/")
    with pytest.raises(FetchError):
        parse_feed(b"\x00\xff garbage \x01", feed_url="http://x/")
