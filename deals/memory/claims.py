"""Several daemons on one store: workers, heartbeats and claims (a mixin of `Store`).

A **worker** is a `Store` that claims work: one row in `workers` (host identity, pid, the
process's start time, and a heartbeat on the database's clock). It is registered on its
first claim (or by `register_worker`, as the daemon does) and removed by `close()`.

A **claim** is a row in `claims`, (kind, key) -> worker, taken in one short write
transaction and released when the work is stored (in the same transaction where it
matters) or abandoned:

    feed    a feed URL being read, scanned and stored      claim_feeds / release_claims
    price   a deal being priced                            claim_unpriced_deals
    send    an alert being sent, or reconciled with the    claim_alert (queued -> sending),
            provider                                       claim_sending

Claim queries are write transactions: `BEGIN IMMEDIATE` on SQLite admits one claimer at a
time; on PostgreSQL they pick candidate rows `FOR UPDATE ... SKIP LOCKED`, so concurrent
claimers take different rows instead of queueing behind each other, and the claims
table's primary key settles any remaining race (`ON CONFLICT DO NOTHING`).

**Dead workers' claims return to the pool.** A claim lives as long as its worker: a
worker whose heartbeat is older than `worker_timeout_s`, or whose process on this host
is gone (same host identity, pid not running or started at another time), is deleted by
the next claimer, and its claims with it (ON DELETE CASCADE); its work is then picked up
like any other, and the cycle it was running is recorded as 'interrupted'. The daemon heartbeats from a thread (`start_heartbeat`) every quarter of
the timeout, so slow work (a long LLM call, Twilio retries) never looks dead. The host
identity is the host name, the kernel's boot id and the pid namespace, so containers
that share a host name are told apart. A worker that finds its own row gone (it was
paused longer than the timeout) registers again and has lost its claims; the messenger
re-checks its claim just before each hand-over to the provider (`holds_claim`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from deals.framework.models import Deal
from deals.memory.dialect import in_chunks
from deals.memory.lock import command_line

log = logging.getLogger("deals.memory.claims")

CLAIM_KINDS = ("feed", "price", "send")
_REAP_EVERY_S = 1.0  # claimers look for dead workers at most this often
_ROWS_PER_INSERT = 200


def host_identity() -> str:
    """'hostname|boot id|pid namespace': equal only for processes that can see each other's pids."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            parts.append(handle.read().strip())
    except OSError:
        parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return "|".join(parts)


def process_start(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), None if it is not running (or a zombie)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class WorkerRow(BaseModel):
    """A registered worker (a daemon using the store)."""

    id: int
    host: str
    pid: int
    command: str | None = None
    started_at: datetime
    seconds_since_heartbeat: float

    @property
    def hostname(self) -> str:
        return self.host.split("|", 1)[0]


class Claims:
    """Workers and claims; mixed into `deals.memory.store.Store` (see the module docstring)."""

    # provided by Store
    _lock: threading.RLock
    worker_timeout_s: float

    def _claims_init(self, worker_timeout_s: float) -> None:
        self.worker_timeout_s = float(worker_timeout_s)
        self._worker_id: int | None = None
        self._worker_command: str | None = None
        self._last_reap = 0.0
        self._host = host_identity()
        self._heartbeat_stop: threading.Event | None = None
        self._heartbeat_thread: threading.Thread | None = None

    # ---------------------------------------------------------------- workers

    @property
    def worker_id(self) -> int:
        """This store's worker id, registered on first use."""
        with self._lock:
            if self._worker_id is None:
                self.register_worker()
            assert self._worker_id is not None
            return self._worker_id

    def _alive_worker(self) -> int:
        """Before a claim: the dead reaped, then this worker registered and alive (one heartbeat,
        which registers again a worker taken for dead while this process was paused or cut off)."""
        self.reap_workers()
        with self._lock:
            if self._worker_id is None:
                self.register_worker()
            else:
                self.heartbeat()
            assert self._worker_id is not None
            return self._worker_id

    def register_worker(self, command: str | None = None) -> int:
        """Register this process as a worker of the store (again, if it was taken for dead); its id."""
        command = (command or self._worker_command or command_line())[:200]
        self._worker_command = command
        with self.transaction() as db:
            row = db.execute(
                f"""INSERT INTO workers (host, pid, process_start, command, started_at, heartbeat)
                    VALUES (?, ?, ?, ?, ?, {self.dialect.epoch_now}) RETURNING id""",
                (self._host, os.getpid(), process_start(os.getpid()), command, self._now()),
            ).fetchone()
            self._worker_id = int(row[0])
        return self._worker_id

    def heartbeat(self) -> None:
        """Say this worker is alive; registers again if it was taken for dead meanwhile."""
        with self._lock:
            if self._worker_id is None:
                return
            with self.transaction() as db:
                moved = db.execute(
                    f"UPDATE workers SET heartbeat = {self.dialect.epoch_now} WHERE id = ?", (self._worker_id,)
                ).rowcount
            if moved == 0:
                log.warning("worker %d was taken for dead (no heartbeat for %.0f s); registering again", self._worker_id, self.worker_timeout_s)
                self.register_worker()

    def start_heartbeat(self, interval_s: float | None = None) -> None:
        """Heartbeat from a background thread until `close()` (the daemon does this)."""
        if self._heartbeat_thread is not None:
            return
        self.worker_id  # noqa: B018 - registers
        every = interval_s if interval_s is not None else max(0.5, self.worker_timeout_s / 4)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.heartbeat()
                except Exception as exc:  # noqa: BLE001 - the store may be down for a while; keep trying
                    log.warning("heartbeat failed: %s", exc)

        self._heartbeat_stop = stop
        self._heartbeat_thread = threading.Thread(target=beat, name="deals-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_stop is not None:
            self._heartbeat_stop.set()
        if self._heartbeat_thread is not None and self._heartbeat_thread is not threading.current_thread():
            self._heartbeat_thread.join(timeout=5)
        self._heartbeat_stop = self._heartbeat_thread = None

    def unregister_worker(self) -> None:
        """Leave: this worker's row and all its claims are deleted (close() does this)."""
        self._stop_heartbeat()
        with self._lock:
            if self._worker_id is None:
                return
            worker, self._worker_id = self._worker_id, None
            with self.transaction() as db:
                db.execute("DELETE FROM workers WHERE id = ?", (worker,))

    def workers(self) -> list[WorkerRow]:
        """The registered workers, oldest first, with the seconds since each one's heartbeat."""
        rows = self._all(f"SELECT *, {self.dialect.epoch_now} - heartbeat AS silent FROM workers ORDER BY id")
        return [
            WorkerRow(
                id=row["id"], host=row["host"], pid=row["pid"], command=row["command"],
                started_at=datetime.fromisoformat(row["started_at"]), seconds_since_heartbeat=max(0.0, float(row["silent"])),
            )  # fmt: skip
            for row in rows
        ]

    def live_workers(self) -> int:
        """How many workers heartbeated within the timeout (at least 1: this one)."""
        row = self._one(f"SELECT COUNT(*) FROM workers WHERE heartbeat >= {self.dialect.epoch_now} - ?", (self.worker_timeout_s,))
        return max(1, int(row[0]) if row else 1)

    def reap_workers(self, *, force: bool = False) -> int:
        """Delete the workers found dead, their claims with them; how many (at most once a second unless `force`)."""
        now = time.monotonic()
        if not force and now - self._last_reap < _REAP_EVERY_S:
            return 0
        self._last_reap = now
        me = self._worker_id if self._worker_id is not None else -1
        with self.transaction() as db:
            stale = db.execute(
                f"DELETE FROM workers WHERE id <> ? AND heartbeat < {self.dialect.epoch_now} - ? RETURNING id, pid",
                (me, self.worker_timeout_s),
            ).fetchall()
            dead = [int(row[0]) for row in stale]
            local = db.execute("SELECT id, pid, process_start FROM workers WHERE host = ? AND id <> ?", (self._host, me)).fetchall()
            for row in local:
                started = process_start(int(row["pid"]))
                if started is None or (row["process_start"] is not None and abs(started - float(row["process_start"])) > 0.5):
                    db.execute("DELETE FROM workers WHERE id = ?", (row["id"],))
                    dead.append(int(row["id"]))
            for worker in dead:  # the cycles they were running will not finish
                db.execute(
                    "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running' AND worker_id = ?",
                    (self._now(), worker),
                )
        if dead:
            log.info("worker(s) %s stopped heartbeating or died; their claimed work returns to the pool", sorted(dead))
        return len(dead)

    # ---------------------------------------------------------------- claims

    def _insert_claims(self, db: Any, kind: str, keys: Sequence[str]) -> list[str]:
        """Claim `keys` for this worker inside the open transaction; the keys actually won."""
        won: list[str] = []
        now = self._now()
        worker = self._worker_id  # made alive by the claim's `_alive_worker()`
        assert worker is not None
        for chunk, _ in in_chunks(keys, _ROWS_PER_INSERT):
            values = ", ".join("(?, ?, ?, ?)" for _ in chunk)
            params: list[Any] = []
            for key in chunk:
                params += [kind, key, worker, now]
            rows = db.execute(
                f"INSERT INTO claims (kind, key, worker_id, claimed_at) VALUES {values} ON CONFLICT DO NOTHING RETURNING key",
                params,
            ).fetchall()
            won += [row[0] for row in rows]
        return won

    def claim_feeds(self, urls: Sequence[str], limit: int) -> tuple[list[str], set[str]]:
        """Claim up to `limit` of `urls` (in order) to read now; (mine, the ones other workers are reading)."""
        urls = list(dict.fromkeys(urls))
        if not urls or limit <= 0:
            return [], set()
        self._alive_worker()  # before the transaction
        with self.transaction() as db:
            others: set[str] = set()
            for chunk, marks in in_chunks(urls, _ROWS_PER_INSERT):
                rows = db.execute(
                    f"SELECT key, worker_id FROM claims WHERE kind = 'feed' AND key IN ({marks})", chunk
                ).fetchall()
                others.update(row[0] for row in rows if row[1] != self._worker_id)
            wanted = [url for url in urls if url not in others][:limit]
            won = set(self._insert_claims(db, "feed", wanted))
        return [url for url in wanted if url in won], others

    def claim_unpriced_deals(self, limit: int, *, since: datetime | None = None, max_attempts: int | None = None) -> list[Deal]:
        """Claim up to `limit` of the oldest stored deals that nobody priced or is pricing; the deals.

        With `since`, only deals stored since then (a range of the created_at index: the
        planner's `planner.price_within_days`, so a claim does not scan the whole history);
        given-up deals (`max_attempts` failed pricings) are left out, as in `unpriced_deals`.
        The claim ends when the estimate is saved (`save_estimate` releases it in its own
        transaction) or with `release_claims("price", keys)`.
        """
        from deals.memory.store import unpriced_conditions

        if limit <= 0:
            return []
        self._alive_worker()  # before the transaction
        where, params = unpriced_conditions(since, max_attempts)
        with self.transaction() as db:
            rows = db.execute(
                f"""SELECT d.* FROM deals d
                    WHERE NOT EXISTS (SELECT 1 FROM estimates e WHERE e.deal_key = d.entry_key) {where}
                      AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.kind = 'price' AND c.key = d.entry_key)
                    ORDER BY d.created_at, d.entry_key LIMIT ?{self.dialect.skip_locked("d")}""",
                [*params, int(limit)],
            ).fetchall()
            won = set(self._insert_claims(db, "price", [row["entry_key"] for row in rows]))
            won -= self._drop_priced(db, sorted(won))
        return [self._deal(row) for row in rows if row["entry_key"] in won]  # type: ignore[attr-defined]

    def _drop_priced(self, db: Any, keys: list[str]) -> set[str]:
        """Of the deals just claimed, those priced meanwhile: their claims are dropped again.

        On PostgreSQL the candidates are read from the claim query's snapshot: another
        worker can claim a deal, price it and release its claim (the estimate's
        transaction) after that snapshot, and the claim insert then wins, the other claim
        being gone. A new statement (a new snapshot in READ COMMITTED) sees the estimate.
        On SQLite (one writer at a time) this finds nothing.
        """
        priced: set[str] = set()
        for chunk, marks in in_chunks(keys, _ROWS_PER_INSERT):
            rows = db.execute(f"SELECT deal_key FROM estimates WHERE deal_key IN ({marks})", chunk).fetchall()
            priced.update(row[0] for row in rows)
        if priced:
            self.release_claims("price", sorted(priced))
        return priced

    def claim_sending(self, alert_id: int) -> bool:
        """Claim an alert left in 'sending' (to reconcile it with the provider); False if it is not, or another worker has it."""
        self._alive_worker()  # before the transaction
        with self.transaction() as db:
            row = db.execute(f"SELECT state FROM alerts a WHERE id = ?{self.dialect.skip_locked('a')}", (alert_id,)).fetchone()
            if row is None or row[0] != "sending":
                return False
            return bool(self._insert_claims(db, "send", [str(alert_id)]))

    def holds_claim(self, kind: str, key: str | int) -> bool:
        """Whether this worker still holds the claim (it may have been taken for dead meanwhile)."""
        if self._worker_id is None:
            return False
        row = self._one("SELECT 1 FROM claims WHERE kind = ? AND key = ? AND worker_id = ?", (kind, str(key), self._worker_id))
        return row is not None

    def release_claims(self, kind: str, keys: Sequence[str | int]) -> None:
        """Let go of this worker's claims on `keys` (those it does not hold are left alone)."""
        if self._worker_id is None or not keys:
            return
        texts = [str(key) for key in keys]
        with self.transaction() as db:
            for chunk, marks in in_chunks(texts, _ROWS_PER_INSERT):
                db.execute(
                    f"DELETE FROM claims WHERE kind = ? AND worker_id = ? AND key IN ({marks})", [kind, self._worker_id, *chunk]
                )

    def claims(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The claims held now (of one kind, or all), as plain dicts."""
        if kind is None:
            rows = self._all("SELECT * FROM claims ORDER BY kind, key")
        else:
            rows = self._all("SELECT * FROM claims WHERE kind = ? ORDER BY key", (kind,))
        return [dict(row) for row in rows]


__all__ = ["CLAIM_KINDS", "Claims", "WorkerRow", "host_identity", "process_start"]
