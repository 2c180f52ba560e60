"""One daemon per store, where the store is exclusive: an OS lock beside the SQLite file,
or an advisory lock on PostgreSQL.

    lock = StoreLock(paths.database_path())      # <store>.lock
    lock.acquire()              # StoreLockedError naming the holder (pid, host, since)
    lock.acquire(wait=True)     # or wait until the holder lets go
    ...
    lock.release()              # also released by the OS when the process dies, even by SIGKILL

The lock is `fcntl.flock` on `deals.db.lock`: held for as long as the file descriptor is
open, dropped by the kernel with the process, so a crashed daemon never leaves a stale
lock behind. The holder writes who it is into the file (JSON: pid, host, since, command)
so that a second daemon can say whom it is waiting for. `deals run` takes it; readers
(`deals history`) and one-off commands do not need it.

Several daemons may share one store safely: they claim feeds, deals and alerts
(`deals.memory.claims`). Whether they may is `store.exclusive`: by default a SQLite store
is exclusive (one machine, one writer at a time: a second daemon gains nothing and is
more likely a mistake, such as a manual `deals run` beside the service) and a PostgreSQL
store is shared (the point of running it). `daemon_lock(settings)` gives the lock to take,
or None for a shared store.

On PostgreSQL the exclusive lock is `PostgresLock`: a session advisory lock keyed by the
schema, held on its own connection (released by the server when the holder's
connection ends, however the process died); the holder is named by its connection's
`application_name` (`deals run pid 123 on host h`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deals.framework.errors import DealsError
from deals.framework.urls import redact_urls_in
from deals.memory.dialect import DAEMON_LOCK

log = logging.getLogger("deals.memory.lock")


def command_line() -> str:
    """This process's command as the lock and the workers table record it: feed URLs' keys
    and passwords hidden (the lock file is readable by other users; `deals store status` shows it)."""
    return redact_urls_in(" ".join(["deals", *sys.argv[1:]]))[:200]


class StoreLockedError(DealsError):
    """Another process holds the store's daemon lock (the CLI exits 2)."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def describe_holder(holder: dict[str, Any]) -> str:
    """'pid 123 on host h (since ...; deals run --once)' from what the holder wrote."""
    if not holder:
        return "another process (it has not said who it is yet)"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    extras = [str(holder[key]) for key in ("since", "command") if holder.get(key)]
    return text + (f" ({'; '.join(extras)})" if extras else "")


class StoreLock:
    """The exclusive daemon lock of one store (see the module docstring)."""

    def __init__(self, store_path: str | os.PathLike[str], *, command: str | None = None) -> None:
        self.path = Path(f"{store_path}.lock")
        self.command = command or command_line()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """What the current holder wrote about itself ({} when unknown)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self, *, wait: bool = False, poll_s: float = 0.5, should_stop: Callable[[], bool] | None = None) -> None:
        """Take the lock, or raise StoreLockedError naming its holder (with `wait`, wait for it)."""
        if self._fd is not None:
            return
        import fcntl  # POSIX; imported here so that the CLI still loads where it is missing

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DealsError(f"cannot open the daemon lock {self.path}: {exc.strerror or exc}") from exc
        announced = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    who = describe_holder(self.holder())
                    if not wait:
                        raise StoreLockedError(
                            f"another deals daemon is using the store {self.path.with_suffix('')}: {who}. "
                            "Stop it first, or pass --wait to start when it exits.",
                            self.holder(),
                        ) from None
                    if not announced:
                        log.info("waiting for the store's daemon lock, held by %s", who)
                        announced = True
                    if should_stop is not None and should_stop():
                        raise StoreLockedError(f"gave up waiting for the daemon lock held by {who}") from None
                    time.sleep(poll_s)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)

    def release(self) -> None:
        """Let go (the file stays; its content is stale until the next holder writes)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PostgresLock:
    """The exclusive daemon lock of a PostgreSQL store: an advisory lock (see the module docstring)."""

    def __init__(self, url: str, *, command: str | None = None) -> None:
        from deals.framework.dburl import redact

        self.url = url
        self.where = redact(url)
        self.command = command or command_line()
        self._db: Any = None

    @property
    def held(self) -> bool:
        return self._db is not None

    def _connect(self) -> Any:
        import psycopg

        from deals.memory.dialect import PgConnection
        from deals.memory.store import StoreError, explain_postgresql

        name = f"deals run pid {os.getpid()} on host {socket.gethostname()}"
        try:
            return PgConnection(self.url, application_name=name)
        except psycopg.Error as exc:
            raise StoreError(explain_postgresql(self.url, exc)) from None

    def holder(self) -> dict[str, Any]:
        """Who holds the lock, from its connection ({} when unknown)."""
        db = self._db or self._connect()
        try:
            row = db.execute(
                """SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ?::bigint::oid
                     AND l.objid = (hashtext(current_schema())::bigint & 4294967295)::oid AND l.objsubid = 2""",
                (DAEMON_LOCK,),
            ).fetchone()
        finally:
            if db is not self._db:
                db.close()
        if row is None:
            return {}
        found = re.match(r"deals run pid (\d+) on host (.*)", row[0] or "")
        since = row[1].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if row[1] else None
        if found:
            return {"pid": int(found.group(1)), "host": found.group(2), "since": since}
        return {"command": row[0], "since": since}

    def acquire(self, *, wait: bool = False, poll_s: float = 0.5, should_stop: Callable[[], bool] | None = None) -> None:
        """Take the lock, or raise StoreLockedError naming its holder (with `wait`, wait for it)."""
        if self._db is not None:
            return
        db = self._connect()
        announced = False
        try:
            while True:
                got = db.execute("SELECT pg_try_advisory_lock(?, hashtext(current_schema()))", (DAEMON_LOCK,)).fetchone()[0]
                if got:
                    break
                self._db = db  # (for holder(): one connection)
                who = describe_holder(self.holder())
                self._db = None
                if not wait:
                    raise StoreLockedError(
                        f"another deals daemon is using the store {self.where}: {who}. "
                        "Stop it first, pass --wait to start when it exits, or set store.exclusive: false "
                        "to let several daemons share it.",
                    )
                if not announced:
                    log.info("waiting for the store's daemon lock, held by %s", who)
                    announced = True
                if should_stop is not None and should_stop():
                    raise StoreLockedError(f"gave up waiting for the daemon lock held by {who}")
                time.sleep(poll_s)
        except BaseException:
            db.close()
            raise
        self._db = db

    def release(self) -> None:
        if self._db is None:
            return
        db, self._db = self._db, None
        try:
            db.execute("SELECT pg_advisory_unlock(?, hashtext(current_schema()))", (DAEMON_LOCK,))
        except Exception:  # noqa: BLE001 - closing the connection releases it anyway
            pass
        db.close()

    def __enter__(self) -> PostgresLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_exclusive(settings: Any) -> bool:
    """Whether the configured store admits one daemon only (`store.exclusive`, by default: SQLite yes, PostgreSQL no)."""
    from deals.framework.dburl import is_postgresql

    config = settings.store
    if config.exclusive is not None:
        return bool(config.exclusive)
    return not (config.url and is_postgresql(config.url))


def daemon_lock(settings: Any) -> StoreLock | PostgresLock | None:
    """The lock `deals run` takes on the configured store, or None when daemons share it."""
    from deals.framework import paths
    from deals.framework.dburl import is_postgresql, sqlite_path

    if not is_exclusive(settings):
        return None
    url = settings.store.url
    if url and is_postgresql(url):
        return PostgresLock(url)
    return StoreLock(sqlite_path(url) if url else paths.database_path())


__all__ = ["PostgresLock", "StoreLock", "StoreLockedError", "daemon_lock", "describe_holder", "is_exclusive"]
