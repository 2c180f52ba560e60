"""One daemon per store: an exclusive OS lock beside the SQLite file.

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

Two daemons on one store would both read the same new entries, price the same deals and
race each other through the alert outbox; the outbox claims alerts atomically as well
(see `Store.claim_alert`), but one daemon per store is the design (DESIGN.md).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deals.framework.errors import DealsError

log = logging.getLogger("deals.memory.lock")


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
        self.command = command or " ".join(["deals", *sys.argv[1:]])[:200]
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


__all__ = ["StoreLock", "StoreLockedError", "describe_holder"]
