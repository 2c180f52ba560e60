"""A raw TCP server on 127.0.0.1 for hostile-world tests: it speaks bytes, not HTTP.

    with RawServer(trickle(b"HTTP/1.1 200 OK\\r\\n...", every_s=0.2)) as server:
        server.url("/feed.xml")          # http://127.0.0.1:PORT/feed.xml
        server.connections               # how many clients connected

A behaviour is a function of the accepted socket; it runs on its own thread and should
return when `server.stopping` is set (close() sets it), so no test waits on it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

Behaviour = Callable[["RawServer", socket.socket], None]


class RawServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.connections = 0
        self.received: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> RawServer:
        thread = threading.Thread(target=self._accept, name="raw-server", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """Read the request head (up to the blank line) and remember it."""
        conn.settimeout(2)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        with self._lock:
            self.received.append(data)
        return data

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.behaviour(self, conn)
        except OSError:
            pass
        finally:
            conn.close()


def trickle(response: bytes, every_s: float = 0.2) -> Behaviour:
    """Read the request, then send `response` one byte every `every_s` seconds."""

    def behave(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        for i in range(len(response)):
            if server.stopping.wait(every_s):
                return
            conn.sendall(response[i : i + 1])

    return behave


def silent() -> Behaviour:
    """Read the request and never answer."""

    def behave(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.stopping.wait(60)

    return behave


def http_response(body: bytes, status: str = "200 OK", content_type: str = "application/rss+xml", extra: str = "") -> bytes:
    """The bytes of a complete HTTP/1.1 response."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    return head.encode() + body


__all__ = ["RawServer", "http_response", "silent", "trickle"]
