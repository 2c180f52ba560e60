"""The daemon's wiring: the store's lock where it is exclusive, the configured planner, the orchestrator.

    run_daemon(settings)                       `deals run`: cycles until SIGTERM/SIGINT
    run_daemon(settings, once=True)            `deals run --once`: one cycle
    run_daemon(settings, feeds=[...], wait=True)

Returns the exit status (see `deals.framework.orchestrator`). Where the store is exclusive
(`store.exclusive`; by default a SQLite store is, a PostgreSQL store is not; see
`deals.memory.lock`) it first takes the store's daemon lock: a second daemon raises
`StoreLockedError` naming the holder (the CLI exits 2), or with `wait=True` waits until
the holder exits. On a shared store `wait` has nothing to wait for.

It then registers as a worker of the store, heartbeating from a thread, so that other
daemons can tell it is alive (`deals.memory.claims`), and closes the runs that daemons
which died left 'running' as 'interrupted'. On exit it unregisters: whatever it had
claimed returns to the pool at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

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
    """Lock the store if it is exclusive, build the planner and run the orchestrator; the exit status.

    `services` (the dashboard, handed in by the CLI) are started once the lock (if any) is held and
    stopped when the daemon stops.
    """
    from deals.agents.planner import Planner
    from deals.framework.orchestrator import Orchestrator
    from deals.memory.lock import daemon_lock
    from deals.memory.store import Store

    urls = None
    if feeds:
        urls = []
        for url in feeds:
            try:
                urls.append(check_feed_url(url))
            except ValueError as exc:
                raise ConfigError(f"--feed {url!r}: {exc}") from None
    lock = daemon_lock(settings)
    if lock is not None:
        lock.acquire(wait=wait)
    started: list[Service] = []
    try:
        for service in services:
            service.start()
            started.append(service)
        with Store.open_default(settings) as store:
            store.register_worker()
            store.start_heartbeat()
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
        if lock is not None:
            lock.release()


def health(settings: Settings) -> tuple[bool, str]:
    """`deals health` (a container's health check): is the store reachable, and has a daemon
    on this host (this container) heartbeated within `store.worker_timeout_s`?"""
    from deals.memory.claims import host_identity
    from deals.memory.store import Store

    with Store.open_default(settings) as store:
        mine = [w for w in store.workers() if w.host == host_identity()]
    alive = [w for w in mine if w.seconds_since_heartbeat <= settings.store.worker_timeout_s]
    if alive:
        best = min(alive, key=lambda w: w.seconds_since_heartbeat)
        return True, f"ok: daemon pid {best.pid} heartbeat {best.seconds_since_heartbeat:.0f}s ago ({store.engine} store)"
    if mine:
        return False, f"the daemon on this host has not heartbeated for {min(w.seconds_since_heartbeat for w in mine):.0f}s"
    return False, "no daemon is running on this host (none is registered with the store)"


__all__ = ["Service", "health", "run_daemon"]
