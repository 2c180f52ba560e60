"""A local HTTP server on 127.0.0.1 for feed and page tests: routes, validators, faults.

    server = FeedServer().start()          # or the `feed_server` pytest fixture
    server.route("/a.xml", body=b"...", etag='"v1"', last_modified="...")   # 304 on a match
    server.route("/slow", body=b"...", delay_s=5)                     # answers late
    server.route("/drip", body=b"...", drip_s=0.05)                   # one byte at a time
    server.route("/boom", status=500)
    server.route("/huge", stream_bytes=20_000_000)                    # generated, never held
    server.route("*", body=b"<html>...")                              # any other path
    server.url("/a.xml"); server.requests; server.max_in_flight; server.stats("/huge")

Every request is recorded (path, headers). Streamed bodies are generated chunk by chunk
and count the bytes actually written, so a test can see that a client stopped reading.
`close()` wakes delayed handlers, so a test never waits for a slow route to finish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHUNK = 64 * 1024


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    delay_s: float = 0.0
    drip_s: float = 0.0
    stream_bytes: int | None = None
    declare_length: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RouteStats:
    bytes_sent: int = 0
    aborted: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    at: float


class FeedServer:
    """A threaded HTTP/1.0 server with scriptable routes."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._stats: dict[str, RouteStats] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ set-up

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, **kwargs: object) -> str:
        """Serve `path` as described (see Route); returns its URL."""
        self.routes[path] = Route(**kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def serve_file(self, path: str, file: Path, **kwargs: object) -> str:
        return self.route(path, body=Path(file).read_bytes(), **kwargs)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def stats(self, path: str) -> RouteStats:
        with self._lock:
            return self._stats.setdefault(path, RouteStats())

    def start(self) -> FeedServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="feed-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ serving

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                with server._lock:
                    server.requests.append(RecordedRequest(self.path, dict(self.headers.items()), time.monotonic()))
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    server._serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server._in_flight -= 1

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        route = self.routes.get(handler.path) or self.routes.get(path) or self.routes.get("*")
        if route is None:
            self._send(handler, 404, b"not found", "text/plain")
            return
        if route.delay_s and self._stop.wait(route.delay_s):
            return  # the server is closing
        if route.status == 200 and self._not_modified(handler, route):
            handler.send_response(304)
            if route.etag:
                handler.send_header("ETag", route.etag)
            handler.end_headers()
            return
        if route.stream_bytes is not None:
            self._stream(handler, path, route)
            return
        extra = dict(route.headers)
        if route.etag:
            extra["ETag"] = route.etag
        if route.last_modified:
            extra["Last-Modified"] = route.last_modified
        if route.drip_s:
            handler.send_response(route.status)
            handler.send_header("Content-Type", route.content_type)
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.end_headers()
            for i in range(len(route.body)):
                if self._stop.wait(route.drip_s):
                    return
                handler.wfile.write(route.body[i : i + 1])
                handler.wfile.flush()
            return
        self._send(handler, route.status, route.body, route.content_type, extra)

    @staticmethod
    def _not_modified(handler: BaseHTTPRequestHandler, route: Route) -> bool:
        inm = handler.headers.get("If-None-Match")
        ims = handler.headers.get("If-Modified-Since")
        if route.etag and inm is not None:
            return route.etag in [tag.strip() for tag in inm.split(",")]
        return bool(route.last_modified and ims == route.last_modified)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _stream(self, handler: BaseHTTPRequestHandler, path: str, route: Route) -> None:
        """Write `stream_bytes` of generated XML-ish filler without ever holding it."""
        stats = self.stats(path)
        total = int(route.stream_bytes or 0)
        handler.send_response(route.status)
        handler.send_header("Content-Type", route.content_type)
        if route.declare_length:
            handler.send_header("Content-Length", str(total))
        handler.end_headers()
        chunk = b"<!-- " + b"x" * (CHUNK - 9) + b" -->\n"
        try:
            for piece in _pieces(total, chunk):
                if self._stop.is_set():
                    stats.aborted = True
                    return
                handler.wfile.write(piece)
                stats.bytes_sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, OSError):
            stats.aborted = True
        finally:
            stats.done.set()


def _pieces(total: int, chunk: bytes) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = chunk if left >= len(chunk) else chunk[:left]
        left -= len(piece)
        yield piece


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A started FeedServer on 127.0.0.1 (ephemeral port), closed after the test."""
    with FeedServer() as server:
        yield server


__all__ = ["FeedServer", "RecordedRequest", "Route", "RouteStats", "feed_server"]
