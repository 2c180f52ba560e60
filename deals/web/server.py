"""Serving the dashboard with uvicorn: alone, or in a thread of the daemon.

    serve(settings, host=None, port=None)           `deals dashboard`: blocks until Ctrl-C/SIGTERM
    server = DashboardThread(settings).start()      `deals run --dashboard`: beside the daemon
    server.stop()

Both check the address first (`deals.web.security.check_bind`): beyond loopback the
token in `DEALS_DASHBOARD_TOKEN` is required, or they refuse to start (`ConfigError`).
A port already in use is a `DealsError` naming it. The dashboard opens its own
connection to the store (WAL: its reads never block the daemon) and takes no daemon lock.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time

from deals.framework.errors import DealsError
from deals.framework.settings import Settings
from deals.web.security import check_bind

log = logging.getLogger("deals.web")


def _config(settings: Settings, host: str, port: int, token: str | None) -> object:
    import uvicorn

    from deals.web.app import create_app

    app = create_app(settings, token=token, bind_host=host)
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False, server_header=False,
        lifespan="on", timeout_graceful_shutdown=3,
    )  # fmt: skip


def _check_port(host: str, port: int) -> None:
    """A clear error now, rather than uvicorn's exit, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DealsError(f"the dashboard cannot listen on {host}:{port}: the port is in use (dashboard.port, --port)") from None
            raise DealsError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_of(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve the dashboard until interrupted; the exit status."""
    import uvicorn

    host = host or settings.dashboard.host
    port = port or settings.dashboard.port
    token = check_bind(host)
    _check_port(host, port)
    server = uvicorn.Server(_config(settings, host, port, token))  # type: ignore[arg-type]
    print(f"deals dashboard on {url_of(host, port)}" + (" (token required)" if token else ""), flush=True)
    server.run()
    return 0


class DashboardThread:
    """The dashboard served from a daemon thread of another process (the daemon's)."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        self.host = host or settings.dashboard.host
        self.port = port or settings.dashboard.port
        self.token = check_bind(self.host)
        self.settings = settings
        self._server: object | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 15.0) -> DashboardThread:
        import uvicorn

        _check_port(self.host, self.port)
        server = uvicorn.Server(_config(self.settings, self.host, self.port, self.token))  # type: ignore[arg-type]
        # uvicorn listens to signals only from the main thread: the daemon keeps its own handlers
        self._server = server
        self._thread = threading.Thread(target=server.run, name="deals-dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise DealsError(f"the dashboard did not start on {self.host}:{self.port}")
        log.info("dashboard on %s%s", url_of(self.host, self.port), " (token required)" if self.token else "")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=5)


__all__ = ["DashboardThread", "serve", "url_of"]
