"""Safe fetching (deals.framework.http): the URL guard, size caps, deadlines, pinned redirects."""

from __future__ import annotations

import ipaddress
import time
import tracemalloc

import httpx
import pytest

from deals.framework.errors import FetchError
from deals.framework.http import (
    BodyTooLargeError,
    UnsafeURLError,
    check_url,
    fetch,
    fetch_guarded,
    is_public_address,
    make_client,
)
from tests.fakes.feed_server import feed_server  # noqa: F401 - pytest fixture

UA = "deals-test/1.0 (+https://example.invalid)"


@pytest.fixture
def client():
    with make_client(timeout_s=2.0, user_agent=UA) as c:
        yield c


def resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise FetchError(f"cannot resolve host {host!r}")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


# --------------------------------------------------------------------------- the URL guard


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://ftp.example.com/deal.txt",
        "javascript:alert(1)",
        "gopher://example.com/",
        "data:text/html,<b>x</b>",
        "//example.com/no-scheme",
        "http:///no-host",
    ],
)
def test_guard_refuses_other_schemes_even_when_private_is_allowed(url):
    with pytest.raises(UnsafeURLError):
        check_url(url)
    with pytest.raises(UnsafeURLError):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/admin",
        "http://127.8.9.10:8080/",
        "http://10.0.0.1/",
        "https://10.255.1.2/x",
        "http://172.16.5.4/",
        "http://192.168.1.1/router",
        "http://[::1]:8000/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://240.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fc00::1]/",
    ],
)
def test_guard_refuses_non_public_addresses_unless_allowed(url):
    with pytest.raises(UnsafeURLError, match="non-public address"):
        check_url(url)
    assert check_url(url, allow_private=True) == []


def test_guard_accepts_public_addresses_and_resolves_names():
    assert check_url("https://93.184.216.34/deal") == [ipaddress.ip_address("93.184.216.34")]
    resolve = resolver({"shop.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    addresses = check_url("https://Shop.Example/item?id=1", resolve=resolve)
    assert [str(a) for a in addresses] == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert resolve.calls == ["shop.example"]


def test_guard_checks_every_resolved_address():
    resolve = resolver({"rebind.example": ["93.184.216.34", "10.0.0.7"], "inner.example": ["192.168.0.2"]})
    with pytest.raises(UnsafeURLError, match="10.0.0.7"):
        check_url("http://rebind.example/", resolve=resolve)
    with pytest.raises(UnsafeURLError):
        check_url("http://inner.example/", resolve=resolve)
    # allowed: no resolution needed at all
    assert check_url("http://inner.example/", allow_private=True, resolve=resolve) == []


def test_guard_resolves_localhost_with_the_system_resolver():
    with pytest.raises(UnsafeURLError, match="localhost"):
        check_url("http://localhost:9/")


def test_guard_reports_unresolvable_hosts():
    with pytest.raises(FetchError, match="cannot resolve"):
        check_url("http://nowhere.example/", resolve=resolver({}))


def test_is_public_address():
    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert not is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public_address(ipaddress.ip_address("192.0.2.1"))  # documentation range


# --------------------------------------------------------------------------- fetch


def test_fetch_sends_user_agent_and_returns_body(feed_server, client):  # noqa: F811
    url = feed_server.route("/a", body=b"hello", content_type="text/plain; charset=latin-1")
    got = fetch(client, url, max_bytes=1024, headers={"Accept": "text/plain"})
    assert (got.status_code, got.content, got.truncated) == (200, b"hello", False)
    assert got.content_type == "text/plain" and got.charset == "latin-1"
    request = feed_server.requests_to("/a")[0]
    assert request.headers["User-Agent"] == UA
    assert request.headers["Accept"] == "text/plain"


def test_fetch_http_error_is_a_fetch_error(feed_server, client):  # noqa: F811
    url = feed_server.route("/boom", status=500, body=b"oops")
    with pytest.raises(FetchError, match="HTTP 500"):
        fetch(client, url, max_bytes=1024)


def test_fetch_refuses_other_schemes(client):
    with pytest.raises(UnsafeURLError):
        fetch(client, "file:///etc/passwd", max_bytes=1024)


def test_fetch_times_out(feed_server, client):  # noqa: F811
    url = feed_server.route("/slow", body=b"late", delay_s=10)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(client, url, max_bytes=1024, timeout_s=0.3)
    assert time.monotonic() - started < 3


def test_fetch_deadline_stops_a_dripping_body(feed_server, client):  # noqa: F811
    # each byte arrives well within the read timeout; the whole body would take 10 s
    url = feed_server.route("/drip", body=b"x" * 200, drip_s=0.05)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(client, url, max_bytes=10_000, timeout_s=0.5)
    assert time.monotonic() - started < 3


def test_fetch_refuses_a_declared_oversized_body_before_reading_it(feed_server, client):  # noqa: F811
    url = feed_server.route("/huge", stream_bytes=20_000_000, declare_length=True)
    with pytest.raises(BodyTooLargeError, match="20000000 bytes"):
        fetch(client, url, max_bytes=1_000_000)
    stats = feed_server.stats("/huge")
    assert stats.done.wait(5)
    assert stats.aborted and stats.bytes_sent < 20_000_000


def test_fetch_stops_streaming_an_undeclared_oversized_body(feed_server, client):  # noqa: F811
    url = feed_server.route("/huge", stream_bytes=20_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLargeError, match="larger than the 1000000 bytes"):
            fetch(client, url, max_bytes=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6_000_000, f"peak memory {peak} while refusing a 20 MB body"
    stats = feed_server.stats("/huge")
    assert stats.done.wait(5)
    assert stats.aborted and stats.bytes_sent < 20_000_000


def test_fetch_truncates_when_asked(feed_server, client):  # noqa: F811
    url = feed_server.route("/big", stream_bytes=500_000, declare_length=True)
    got = fetch(client, url, max_bytes=4096, truncate=True)
    assert got.truncated and len(got.content) == 4096
    assert got.content.startswith(b"<!-- xxx")


# --------------------------------------------------------------------------- fetch_guarded


def test_guarded_fetch_refuses_loopback_without_sending_anything(feed_server):  # noqa: F811
    url = feed_server.route("/page", body=b"<html><title>x</title></html>", content_type="text/html")
    with make_client(timeout_s=2, user_agent=UA, follow_redirects=False, keepalive=False) as c:
        with pytest.raises(UnsafeURLError):
            fetch_guarded(c, url, max_bytes=10_000, timeout_s=2)
        assert feed_server.requests == []
        got = fetch_guarded(c, url, max_bytes=10_000, timeout_s=2, allow_private=True)
    assert got.content.startswith(b"<html>") and got.url == url


def test_guarded_fetch_follows_redirects_and_checks_each_hop(feed_server):  # noqa: F811
    final = feed_server.route("/final", body=b"done", content_type="text/plain")
    feed_server.route("/hop", status=302, headers={"Location": "/final"})
    with make_client(timeout_s=2, user_agent=UA, follow_redirects=False, keepalive=False) as c:
        got = fetch_guarded(c, feed_server.url("/hop"), max_bytes=1000, timeout_s=2, allow_private=True)
    assert (got.content, got.url) == (b"done", final)


def test_guarded_fetch_pins_the_checked_address_and_refuses_a_private_redirect():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/deal":
            return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        return httpx.Response(200, text="secret")

    resolve = resolver({"shop.example": ["93.184.216.34"]})
    with make_client(timeout_s=2, user_agent=UA, follow_redirects=False, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(UnsafeURLError, match="169.254.169.254"):
            fetch_guarded(c, "https://shop.example/deal", max_bytes=1000, timeout_s=2, resolve=resolve)
    assert len(seen) == 1  # the redirect target was never requested
    request = seen[0]
    assert request.url.host == "93.184.216.34"  # connected to the address that was checked ...
    assert request.headers["Host"] == "shop.example"  # ... while speaking to the name
    assert request.extensions["sni_hostname"] == "shop.example"  # and verifying its certificate


def test_guarded_fetch_gives_up_after_too_many_redirects(feed_server):  # noqa: F811
    feed_server.route("/loop", status=302, headers={"Location": "/loop"})
    with make_client(timeout_s=2, user_agent=UA, follow_redirects=False, keepalive=False) as c:
        with pytest.raises(FetchError, match="too many redirects"):
            fetch_guarded(c, feed_server.url("/loop"), max_bytes=1000, timeout_s=2, allow_private=True, max_redirects=3)
    assert len(feed_server.requests_to("/loop")) == 4


def test_a_dns_lookup_that_hangs_counts_against_the_deadline_and_a_shutdown_ends_it():
    """getaddrinfo honours no timeout: a silent DNS server held a 2 s feed read for 10 s."""
    import threading

    from deals.framework import deadline
    from deals.framework.errors import Cancelled
    from deals.framework.http import check_url, fetch_guarded, make_client

    def silent_dns(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["93.184.215.14"]

    started = time.monotonic()
    with pytest.raises(FetchError, match="cannot resolve host 'slow.example'"):
        check_url("https://slow.example/rss", resolve=silent_dns, timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    with make_client(timeout_s=1, user_agent="t", keepalive=False) as client:
        started = time.monotonic()
        with pytest.raises(FetchError):
            fetch_guarded(client, "https://slow.example/rss", max_bytes=1000, timeout_s=0.5, resolve=silent_dns)
        assert time.monotonic() - started < 1.5
    # a shutdown does not wait for the lookup either
    threading.Timer(0.3, deadline.cancel_requests).start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            check_url("https://slow.example/rss", resolve=silent_dns, timeout_s=None)
    finally:
        deadline.allow_requests()
    assert time.monotonic() - started < 1.5


def test_a_connection_given_up_while_it_resolves_is_closed_when_it_arrives():
    import httpcore

    from deals.framework.deadline import _Backend

    closed = []

    class Slow:
        def close(self) -> None:
            closed.append(True)

    class Inner:
        def connect_tcp(self, host, port, timeout=None, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(1.0)  # the lookup inside create_connection
            return Slow()

    started = time.monotonic()
    with pytest.raises(httpcore.ConnectTimeout):
        _Backend(Inner(), httpcore).connect_tcp("api.example", 443, timeout=0.3)
    assert time.monotonic() - started < 0.9
    time.sleep(1.2)
    assert closed == [True]


def test_a_gzip_bomb_is_refused_without_inflating_it_in_memory():
    """httpx inflates a socket read at a time (64 KB of zeros -> 64 MB) before a cap can look."""
    import gzip
    import threading
    import zlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from deals.framework.http import BodyTooLargeError, fetch, make_client

    plain = b"<rss>" + b"x" * 100_000 + b"</rss>"
    raw_deflate = zlib.compressobj(wbits=-15)
    bodies = {
        "/bomb": (gzip.compress(b"\0" * 50_000_000), "gzip"),
        "/gz": (gzip.compress(plain), "gzip"),
        "/zlib": (zlib.compress(plain), "deflate"),
        "/raw": (raw_deflate.compress(plain) + raw_deflate.flush(), "deflate"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, encoding = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Encoding", encoding)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with make_client(timeout_s=5, user_agent="t") as client:
            for path in ("/gz", "/zlib", "/raw"):
                assert fetch(client, base + path, max_bytes=1_000_000, timeout_s=5).content == plain, path
            tracemalloc.start()
            try:
                with pytest.raises(BodyTooLargeError):
                    fetch(client, base + "/bomb", max_bytes=1_000_000, timeout_s=5, truncate=False)
                cut = fetch(client, base + "/bomb", max_bytes=1_000_000, timeout_s=5, truncate=True)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert cut.truncated and len(cut.content) == 1_000_000
            assert peak < 10_000_000, peak  # 50 MB of zeros behind it; httpx's own decoding peaked at 131 MB
    finally:
        server.shutdown()
