"""Wall-clock deadlines for every HTTP request, and shutdown that does not wait for the network.

httpx (and its fork httpx2, which the OpenAI and Anthropic SDKs use) apply a timeout to
each socket operation, not to the request: a server that sends its status line, headers
or body one byte a second never trips a 5 s read timeout and can hold a request forever.
This module closes that gap at the bottom of the stack, where every byte passes:

    deadline_transport(httpx, **kw)    an `httpx.HTTPTransport` (or `httpx2.HTTPTransport`)
                                       whose requests each get ONE deadline: the request's
                                       own timeout (the largest of connect/read/write/pool),
                                       counted from the start of the request over connect,
                                       TLS, sending, the headers and the whole body

The transport's network backend hands every socket operation only the time left before
the deadline, so a request ends by its deadline (plus one scheduler tick) whatever the
server does, and it raises the library's own `ReadTimeout`/`WriteTimeout`/`ConnectTimeout`,
which callers already handle.

Shutdown: `cancel_requests()` (the orchestrator calls it on SIGTERM/SIGINT) makes every
request in flight, and every new one, raise `Cancelled` within `CANCEL_POLL_S`;
`allow_requests()` clears it. `Cancelled` derives from BaseException (as
asyncio.CancelledError does), so the `except Exception` handlers that keep one bad item
from stopping a cycle do not swallow it: it unwinds the cycle to the planner, which
records the run as stopped. Nothing is half-written: every store write is a transaction.

The backend is installed through the connection pool's `_network_backend` attribute
(httpcore 1.x and httpcore2 both have it); `install()` raises at construction if a
future version renames it, so an upgrade fails loudly in the tests instead of silently
losing the deadlines.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from deals.framework.errors import Cancelled

T = TypeVar("T")

CANCEL_POLL_S = 0.2
"""Longest a blocked read waits before looking at the shutdown flag again."""

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deals_http_deadline", default=None)
_shutdown = threading.Event()


# --------------------------------------------------------------------------- shutdown


def cancel_requests() -> None:
    """Make every HTTP request in flight (and every new one) raise `Cancelled` (process-wide)."""
    _shutdown.set()


def allow_requests() -> None:
    """Undo `cancel_requests()` (the orchestrator does this when it starts)."""
    _shutdown.clear()


def cancelled() -> bool:
    """True while requests are being cancelled (a shutdown is in progress)."""
    return _shutdown.is_set()


def check_cancelled(what: str = "request") -> None:
    """Raise `Cancelled` when a shutdown is in progress."""
    if _shutdown.is_set():
        raise Cancelled(f"{what} cancelled: shutting down")


def within(call: Callable[[], T], timeout: float | None, what: str, *, discard: Callable[[T], None] | None = None) -> T:
    """`call()`, given at most `timeout` seconds and cancelled by a shutdown, for calls that
    honour neither: the system resolver's getaddrinfo (a silent DNS server holds it ~10 s).

    The call runs on a daemon thread; when it is given up (TimeoutError, or `Cancelled`) it
    is left to finish on its own, and what it returns then goes to `discard` (a socket to
    close)."""
    box: dict[str, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        with lock:
            done.set()
            late = box.get("abandoned") and "value" in box
        if late and discard is not None:
            discard(box["value"])

    threading.Thread(target=run, name=f"deals-{what}", daemon=True).start()
    end = None if timeout is None else time.monotonic() + timeout
    while not done.wait(CANCEL_POLL_S if end is None else max(0.0, min(CANCEL_POLL_S, end - time.monotonic()))):
        stop = _shutdown.is_set()
        if stop or (end is not None and time.monotonic() >= end):
            with lock:
                if not done.is_set():
                    box["abandoned"] = True
                    if stop:
                        raise Cancelled(f"{what} cancelled: shutting down")
                    raise TimeoutError(f"{what} took longer than {timeout:g}s")
            break
    if "error" in box:
        raise box["error"]
    return box["value"]


# --------------------------------------------------------------------------- the network backend


def _total(timeout: Any) -> float | None:
    """The deadline length of a request from its `timeout` extension (a dict of phases) or a number."""
    if isinstance(timeout, dict):
        values = [float(v) for v in timeout.values() if v is not None]
        return max(values) if values else None
    return float(timeout) if isinstance(timeout, (int, float)) else None


def _bounded(timeout: float | None) -> float | None:
    """`timeout` cut to the time left before this request's deadline (None: no limit at all)."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    return left if timeout is None else min(timeout, left)


class _Stream:
    """A network stream whose every operation ends by the request's deadline or at shutdown."""

    def __init__(self, inner: Any, core: ModuleType) -> None:
        self._inner = inner
        self._core = core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        started = time.monotonic()
        while True:
            check_cancelled()
            limit = _bounded(timeout)
            if limit is not None and limit <= 0:
                raise self._core.ReadTimeout("the request's deadline passed while reading the response")
            step = CANCEL_POLL_S if limit is None else min(limit, CANCEL_POLL_S)
            try:
                return self._inner.read(max_bytes, step)
            except self._core.ReadTimeout:
                # Only this slice timed out: go round again unless the caller's own
                # timeout or the deadline is used up (checked at the top).
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        check_cancelled()
        limit = _bounded(timeout)
        if limit is not None and limit <= 0:
            raise self._core.WriteTimeout("the request's deadline passed while sending the request")
        self._inner.write(buffer, limit)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> _Stream:
        check_cancelled()
        limit = _bounded(timeout)
        if limit is not None and limit <= 0:
            raise self._core.ConnectTimeout("the request's deadline passed during the TLS handshake")
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, limit), self._core)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _close(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - a late connection nobody waits for
        pass


class _Backend:
    """Wraps a sync network backend: connections and their streams honour the deadline."""

    def __init__(self, inner: Any, core: ModuleType) -> None:
        self._inner = inner
        self._core = core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> _Stream:
        check_cancelled()
        limit = _bounded(timeout)
        if limit is not None and limit <= 0:
            raise self._core.ConnectTimeout("the request's deadline passed before connecting")
        try:  # the host's DNS lookup happens in there too, and only `within` bounds that
            inner = within(lambda: self._inner.connect_tcp(host, port, limit, **kwargs), limit, "connect", discard=_close)
        except TimeoutError as exc:
            raise self._core.ConnectTimeout(f"connecting to {host}: {exc}") from None
        return _Stream(inner, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kwargs: Any) -> _Stream:
        check_cancelled()
        return _Stream(self._inner.connect_unix_socket(path, _bounded(timeout), **kwargs), self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# --------------------------------------------------------------------------- transports


def install(transport: Any, core: ModuleType) -> Any:
    """Put the deadline backend under an httpx/httpx2 `HTTPTransport`; returns the transport."""
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"{type(transport).__module__}.{type(transport).__name__} has no connection pool backend to wrap: "
            "the HTTP library changed; deals.framework.deadline needs updating"
        )
    if not isinstance(pool._network_backend, _Backend):
        pool._network_backend = _Backend(pool._network_backend, core)
    return transport


def deadline_transport(http: ModuleType, **kwargs: Any) -> Any:
    """An `http.HTTPTransport(**kwargs)` (http = httpx or httpx2) with a deadline per request."""
    core = __import__("httpcore2" if http.__name__ == "httpx2" else "httpcore")
    base = http.HTTPTransport

    class DeadlineTransport(base):  # type: ignore[misc, valid-type]
        def handle_request(self, request: Any) -> Any:
            check_cancelled()
            total = _total(request.extensions.get("timeout"))
            # Set, and deliberately left set after returning: the body is read later, on this
            # thread, by the caller; the next request on this thread sets its own deadline.
            _deadline.set(time.monotonic() + total if total is not None else None)
            return super().handle_request(request)

    DeadlineTransport.__name__ = DeadlineTransport.__qualname__ = f"Deadline{base.__name__}"
    return install(DeadlineTransport(**kwargs), core)


__all__ = [
    "CANCEL_POLL_S",
    "allow_requests",
    "cancel_requests",
    "cancelled",
    "check_cancelled",
    "deadline_transport",
    "install",
]
