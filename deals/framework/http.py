"""Safe HTTP fetching shared by the agents: clients, size caps, deadlines and the URL guard.

    make_client()      an httpx client with a User-Agent whose every request has ONE
                       wall-clock deadline, its timeout, over connect, headers and body
                       (deals.framework.deadline); no keep-alive for guarded requests,
                       which are pinned to an IP
    fetch()            one streamed GET that never holds more than `max_bytes` in memory:
                       a body that says or turns out to be larger is refused (FetchError),
                       or cut off when `truncate=True`; a server that drips its status
                       line, headers or body is cut off at the deadline; HTTP >= 400 is a
                       FetchError
    check_url()        the URL guard: http(s) only, the host resolved and every address
                       checked; private, loopback, link-local, multicast, reserved,
                       unspecified and other non-global addresses refused unless allowed
    fetch_guarded()    fetch() of an untrusted URL (a deal's page): the guard runs on the
                       URL and on every redirect, and the connection is pinned to the
                       checked address (Host header and TLS SNI keep the name), so a DNS
                       answer that changes between check and connect cannot slip through;
                       one deadline covers the whole chain of redirects

Every failure is a `FetchError` (`UnsafeURLError` and `BodyTooLargeError` are kinds of
it) whose message names the URL and what went wrong.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from deals.framework.deadline import deadline_transport, within
from deals.framework.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the IP addresses the host resolves to, as strings."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class UnsafeURLError(FetchError):
    """The URL guard refused a URL (scheme, or an address that is not public)."""


class BodyTooLargeError(FetchError):
    """A response body is larger than the configured cap."""


@dataclass(frozen=True)
class Fetched:
    """A fetched response: the final URL, status, headers and (capped) body."""

    url: str
    status_code: int
    headers: httpx.Headers
    content: bytes
    truncated: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return None


# --------------------------------------------------------------------------- clients


def make_client(
    *,
    timeout_s: float,
    user_agent: str,
    follow_redirects: bool = True,
    keepalive: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client with a User-Agent, bounded redirects and a deadline per request.

    `timeout_s` is the deadline of each request (connect, headers and body together);
    `transport` replaces the network (tests hand in an `httpx.MockTransport`).
    """
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20 if keepalive else 0)
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": user_agent},
        follow_redirects=follow_redirects,
        max_redirects=MAX_REDIRECTS,
        transport=transport if transport is not None else deadline_transport(httpx, limits=limits),
    )


# --------------------------------------------------------------------------- the URL guard


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (system resolver); FetchError when it does not."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses; False for everything the guard refuses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _parse_url(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeURLError(f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURLError(f"refused {url!r}: only http and https URLs are fetched, not {parsed.scheme or 'no scheme'!r}")
    if not parsed.host:
        raise UnsafeURLError(f"refused {url!r}: no host")
    return parsed


def check_url(
    url: str | httpx.URL, *, allow_private: bool = False, resolve: Resolver | None = None, timeout_s: float | None = None
) -> list[IPAddress]:
    """Check an untrusted URL; return the addresses it may be fetched from (empty when `allow_private`).

    Raises UnsafeURLError for another scheme, no host, or a host with any address that is
    not public (unless `allow_private`), and FetchError when the host does not resolve, or
    not within `timeout_s` (the lookup counts against the request's deadline).
    """
    parsed = _parse_url(url)
    if allow_private:
        return []
    host = parsed.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            raw = within(lambda: (resolve or resolve_host)(host, port), timeout_s, f"resolving {host}")
        except TimeoutError as exc:
            raise FetchError(f"cannot resolve host {host!r}: {exc}") from None
        if not raw:
            raise FetchError(f"cannot resolve host {host!r}: no addresses") from None
        addresses = [ipaddress.ip_address(str(a).split("%", 1)[0]) for a in raw]
    refused = [a for a in addresses if not is_public_address(a)]
    if refused:
        raise UnsafeURLError(
            f"refused {str(url)!r}: {host} resolves to a non-public address ({', '.join(map(str, refused))}); "
            "set feeds.allow_private_addresses to allow it"
        )
    return addresses


# --------------------------------------------------------------------------- fetching


def _content_length(headers: httpx.Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def fetch(
    client: httpx.Client,
    url: str | httpx.URL,
    *,
    max_bytes: int,
    timeout_s: float | None = None,
    headers: Mapping[str, str] | None = None,
    truncate: bool = False,
    follow_redirects: bool | None = None,
    extensions: dict[str, object] | None = None,
    display_url: str | None = None,
) -> Fetched:
    """GET `url`, streaming at most `max_bytes` of body into memory.

    A larger body raises BodyTooLargeError (refused from its Content-Length when declared,
    before reading it) or, with `truncate=True`, is cut off and marked `truncated`.
    `timeout_s` is the deadline of the whole request: connecting, the status line and
    headers, and the body (with a client from `make_client`; checked between body chunks
    with any client).
    Redirect responses (when not followed) and 304 come back with an empty body.
    """
    shown = display_url or str(url)
    parsed = _parse_url(url)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    kwargs: dict[str, object] = {}
    if timeout_s:
        kwargs["timeout"] = httpx.Timeout(timeout_s)
    if follow_redirects is not None:
        kwargs["follow_redirects"] = follow_redirects
    if extensions:
        kwargs["extensions"] = extensions
    try:
        with client.stream("GET", parsed, headers=dict(headers or {}), **kwargs) as response:  # type: ignore[arg-type]
            status = response.status_code
            if status >= 400:
                raise FetchError(f"HTTP {status} {response.reason_phrase} from {shown}")
            if status == 304 or status in REDIRECT_CODES or 100 <= status < 200 or status == 204:
                return Fetched(display_url or str(response.url), status, response.headers, b"")
            declared = _content_length(response.headers)
            if declared is not None and declared > max_bytes and not truncate:
                raise BodyTooLargeError(f"body of {shown} is {declared} bytes, more than the {max_bytes} allowed")
            body = bytearray()
            truncated = False
            for chunk in _decoded(response, max_bytes):
                room = max_bytes - len(body)
                if len(chunk) > room:
                    if not truncate:
                        raise BodyTooLargeError(f"body of {shown} is larger than the {max_bytes} bytes allowed")
                    body += chunk[:room]
                    truncated = True
                    break
                body += chunk
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchError(f"timed out after {timeout_s:.3g}s reading the body of {shown}")
            return Fetched(display_url or str(response.url), status, response.headers, bytes(body), truncated)
    except httpx.TimeoutException as exc:
        limit = f"{timeout_s:.3g}s" if timeout_s else "the client's timeout"
        raise FetchError(f"timed out after {limit} fetching {shown} ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch {shown}: {type(exc).__name__}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise FetchError(f"cannot fetch {shown}: invalid URL: {exc}") from exc


_RAW_CHUNK = 64 * 1024


def _decoded(response: httpx.Response, limit: int) -> Iterator[bytes]:
    """The body, decoded, in pieces of at most `limit` + 1 bytes.

    httpx decodes gzip and deflate a socket read at a time: 64 KB of a hostile body can
    become 64 MB before a size cap is looked at. These two are decoded here with a bound
    on each step instead; other encodings go through httpx."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("gzip", "x-gzip", "deflate") or response.is_stream_consumed:  # (read already: a test transport)
        yield from response.iter_bytes()
        return
    decoder = None
    try:
        for raw in response.iter_raw(_RAW_CHUNK):
            if decoder is None:
                decoder = zlib.decompressobj(_window_bits(encoding, raw))
            data = raw
            while data:
                piece = decoder.decompress(data, limit + 1)
                if piece:
                    yield piece
                data = decoder.unconsumed_tail
        rest = decoder.flush() if decoder is not None else b""
        if rest:
            yield rest
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode the {encoding} body: {exc}", request=response.request) from exc


def _window_bits(encoding: str, start: bytes) -> int:
    """zlib's wbits for a body: gzip; deflate zlib-wrapped (RFC 1950 header) or, as some
    servers send it, raw."""
    if "gzip" in encoding:
        return 16 + zlib.MAX_WBITS
    zlib_header = len(start) >= 2 and start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _pinned(parsed: httpx.URL, address: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, object]]:
    """The request URL, headers and extensions that connect to `address` but speak to `parsed.host`."""
    default_port = 443 if parsed.scheme == "https" else 80
    name = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    host_header = name if parsed.port in (None, default_port) else f"{name}:{parsed.port}"
    extensions: dict[str, object] = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return parsed.copy_with(host=str(address)), {"Host": host_header}, extensions


def fetch_guarded(
    client: httpx.Client,
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool = False,
    truncate: bool = True,
    headers: Mapping[str, str] | None = None,
    max_redirects: int = MAX_REDIRECTS,
    resolve: Resolver | None = None,
) -> Fetched:
    """fetch() an untrusted URL through the guard, following redirects by hand (each one checked).

    Use a client without keep-alive (`make_client(keepalive=False)`): requests are pinned
    to the checked address and must not reuse a connection opened for another host.
    `timeout_s` bounds the whole chain: every hop gets only the time the earlier ones left.
    """
    current = url
    deadline = time.monotonic() + timeout_s
    for _ in range(max_redirects + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"timed out after {timeout_s:g}s following redirects from {url}")
        addresses = check_url(current, allow_private=allow_private, resolve=resolve, timeout_s=left)
        left = deadline - time.monotonic()  # the lookup took its share
        if left <= 0:
            raise FetchError(f"timed out after {timeout_s:g}s resolving the host of {current}")
        parsed = _parse_url(current)
        request_headers = dict(headers or {})
        extensions: dict[str, object] = {}
        target: httpx.URL = parsed
        if addresses:
            target, host_header, extensions = _pinned(parsed, addresses[0])
            request_headers.update(host_header)
        fetched = fetch(
            client,
            target,
            max_bytes=max_bytes,
            timeout_s=left,
            headers=request_headers,
            truncate=truncate,
            follow_redirects=False,
            extensions=extensions,
            display_url=current,
        )
        location = fetched.headers.get("location")
        if fetched.status_code in REDIRECT_CODES and location:
            current = urljoin(current, location)
            continue
        return fetched
    raise FetchError(f"too many redirects (more than {max_redirects}) fetching {url}")


__all__ = [
    "BodyTooLargeError",
    "Fetched",
    "Resolver",
    "UnsafeURLError",
    "check_url",
    "fetch",
    "fetch_guarded",
    "is_public_address",
    "make_client",
    "resolve_host",
]
