"""The daemon's wiring: one daemon per store, the configured planner, the orchestrator.

    run_daemon(settings)                       `deals run`: cycles until SIGTERM/SIGINT
    run_daemon(settings, once=True)            `deals run --once`: one cycle
    run_daemon(settings, feeds=[...], wait=True)

Returns the exit status (see `deals.framework.orchestrator`). Before the first cycle it
takes the store's daemon lock (`deals.memory.lock`): a second daemon on the same store
raises `StoreLockedError` naming the holder (the CLI exits 2), or with `wait=True` waits
until the holder exits. Holding the lock, it closes runs that a killed process left
'running' as 'interrupted'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from deals.framework import paths
from deals.framework.errors import ConfigError
from deals.framework.settings import Settings, check_feed_url

log = logging.getLogger("deals.agents.daemon")


class Service(Protocol):
    """Something served beside the daemon in its process (the dashboard: deals.web.server.DashboardThread)."""

    def start(self) -> object: ...
    def stop(self) -> None: ...


def run_daemon(
    settings: Settings,
    *,
    feeds: Sequence[str] | None = None,
    once: bool = False,
    wait: bool = False,
    services: Sequence[Service] = (),
) -> int:
    """Lock the store, build the planner and run the orchestrator; the exit status.

    `services` (the dashboard, handed in by the CLI) are started once the lock is held and
    stopped when the daemon stops.
    """
    from deals.agents.planner import Planner
    from deals.framework.orchestrator import Orchestrator
    from deals.memory.lock import StoreLock
    from deals.memory.store import Store

    urls = None
    if feeds:
        urls = []
        for url in feeds:
            try:
                urls.append(check_feed_url(url))
            except ValueError as exc:
                raise ConfigError(f"--feed {url!r}: {exc}") from None
    lock = StoreLock(paths.database_path())
    lock.acquire(wait=wait)
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        with Store.open_default() as store:
            interrupted = store.interrupt_unfinished_runs()
            if interrupted:
                log.warning("%d run(s) left 'running' by a process that died were marked interrupted", interrupted)
            orchestrator: Orchestrator | None = None
            planner = Planner.from_settings(
                settings, store, should_stop=lambda: orchestrator is not None and orchestrator.stopping.is_set()
            )
            try:
                orchestrator = Orchestrator(lambda: planner.run_cycle(urls), settings.scheduler)
                return orchestrator.run_once() if once else orchestrator.run_forever()
            finally:
                planner.close()
    finally:
        for service in reversed(started):
            service.stop()
        lock.release()


__all__ = ["Service", "run_daemon"]
