"""Copy one store into another, resumable and verified: `deals store migrate --to postgresql://...`.

    report = copy_store(source, target, progress=print_progress)

`source` and `target` are anything `Store` opens (a SQLite file, a PostgreSQL URL); the
usual move is the SQLite file under DEALS_HOME into a new PostgreSQL database. Both are
opened with their migrations applied, so both have the same schema.

Every table of the schema is copied (whatever migration added it), parents before the
tables that refer to them, except the runtime tables (`workers`, `claims`: who is working
now) and the bookkeeping (`migrations`, `store_copy`). Rows go over in chunks in primary
key order; each chunk is inserted in ONE target transaction together with the table's
progress row in `store_copy` (rows copied, last key), so an interrupted copy (Ctrl-C, a
lost connection, a full disk) resumes after the last chunk committed, never copying a row
twice or skipping one. After the copy, new ids on the target continue after the copied
ones (PostgreSQL identity sequences are moved on).

Verification: per table, the row counts and a checksum (sha256 over every row's values in
primary key order, as canonical JSON) on both sides must agree; the checksums are
recorded in `store_copy`. A mismatch raises `CopyError` naming the table.

Refused, with a message saying why: a target that already holds data but no unfinished
copy (it is someone's store), a target holding a copy of another source, a source that
a daemon is using (its lock is taken for the copy: stop the daemon first), a source and
target that are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, Field

from deals.framework.errors import DealsError
from deals.memory.dialect import quote
from deals.memory.store import Store, to_text

SKIPPED_TABLES = frozenset({"migrations", "store_copy", "workers", "claims"})
CHUNK_ROWS = 1000
_MAX_PARAMS = 900  # per INSERT: far under SQLite's and PostgreSQL's limits


class CopyError(DealsError):
    """The copy was refused, or its verification failed."""


class TableReport(BaseModel):
    """One table's copy."""

    name: str
    rows: int = Field(description="rows in the source")
    copied_now: int = Field(0, description="rows copied by this run (the rest by an earlier, interrupted one)")
    checksum: str = ""
    verified: bool = False


class CopyReport(BaseModel):
    """What `copy_store` did."""

    source: str
    target: str
    tables: list[TableReport] = Field(default_factory=list)
    resumed: bool = Field(False, description="an earlier, unfinished copy was continued")

    @property
    def verified(self) -> bool:
        return bool(self.tables) and all(t.verified for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def copy_order(store: Store) -> list[str]:
    """The tables to copy, each after the tables it refers to (then by name)."""
    with store._lock:
        db = store.db
        tables = [t for t in store.dialect.tables(db) if t not in SKIPPED_TABLES]
        needs = {t: {parent for parent in store.dialect.foreign_keys(db, t) if parent in tables and parent != t} for t in tables}
    order: list[str] = []
    while needs:
        ready = sorted(t for t, parents in needs.items() if parents <= set(order))
        if not ready:
            raise CopyError(f"the tables {sorted(needs)} refer to each other in a cycle; cannot order the copy")
        order += ready
        for t in ready:
            del needs[t]
    return order


def _rows(store: Store, table: str, columns: Sequence[str], key: Sequence[str], after: list[Any] | None, limit: int) -> list[Any]:
    cols = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(k) for k in key)
    where, params = "", []
    if after is not None:
        where = f"WHERE ({keys}) > ({', '.join('?' * len(key))})"
        params = list(after)
    return store._all(f"SELECT {cols} FROM {quote(table)} {where} ORDER BY {keys} LIMIT ?", [*params, limit])


def _walk(
    store: Store, table: str, columns: Sequence[str], key: Sequence[str], chunk: int, after: list[Any] | None = None
) -> Iterator[list[Any]]:
    """The table's rows in primary key order, `chunk` at a time, starting after the key `after`."""
    positions = [list(columns).index(k) for k in key]
    while True:
        rows = _rows(store, table, columns, key, after, chunk)
        if not rows:
            return
        yield rows
        after = [rows[-1][i] for i in positions]


def _canonical(values: Sequence[Any]) -> bytes:
    return json.dumps([v if not isinstance(v, float) else repr(v) for v in values], separators=(",", ":"), ensure_ascii=False).encode()


def checksum(store: Store, table: str, columns: Sequence[str], key: Sequence[str], chunk: int = CHUNK_ROWS) -> tuple[int, str]:
    """(rows, sha256) of a table: every row's values, in primary key order."""
    digest = hashlib.sha256()
    count = 0
    for rows in _walk(store, table, columns, key, chunk):
        for row in rows:
            digest.update(_canonical(list(row)))
            digest.update(b"\n")
            count += 1
    return count, digest.hexdigest()


def _key_of(store: Store, table: str) -> list[str]:
    with store._lock:
        key = store.dialect.primary_key(store.db, table)
    if not key:
        raise CopyError(f"table {table} has no primary key: it cannot be copied resumably")
    return key


def copy_store(
    source: Store,
    target: Store,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Copy `source` into `target` (see the module docstring); `progress(table, copied, total)` after each chunk."""
    where_from = str(source.path)
    if where_from == str(target.path):
        raise CopyError("the source and the target are the same store")
    tables = copy_order(source)
    report = CopyReport(source=where_from, target=str(target.path))
    done = {row["name"]: row for row in target._all("SELECT * FROM store_copy")}
    others = {row["source"] for row in done.values()} - {where_from}
    if others:
        raise CopyError(f"{target.path} holds a copy of another store ({sorted(others)[0]}); copy into an empty database")
    if not done:
        busy = [t for t in tables if target._one(f"SELECT 1 FROM {quote(t)} LIMIT 1") is not None]
        if busy:
            raise CopyError(
                f"{target.path} is not empty (table {busy[0]} has rows) and holds no unfinished copy: "
                "copy into an empty database (createdb), so that nothing there is mixed up or overwritten"
            )
    report.resumed = bool(done)
    for table in tables:
        columns = [c for c in source.dialect.columns(source.db, table)]
        missing = set(columns) - set(target.dialect.columns(target.db, table))
        if missing:
            raise CopyError(f"the target's table {table} lacks the columns {sorted(missing)}: is it at an older version of deals?")
        key = _key_of(source, table)
        total = int(source._one(f"SELECT COUNT(*) FROM {quote(table)}")[0])
        entry = TableReport(name=table, rows=total)
        state = done.get(table)
        if state is None or not state["done"]:
            entry.copied_now = _copy_table(source, target, table, columns, key, state, where_from, chunk_rows, total, progress)
        used = source.dialect.highest_id_used(source.db, table)
        for column in target.dialect.identity_columns(target.db, table):
            with target.transaction() as db:
                target.dialect.reset_identity(db, table, column, used)
        report.tables.append(entry)
    for entry in report.tables:
        columns = source.dialect.columns(source.db, entry.name)
        key = _key_of(source, entry.name)
        rows_source, sum_source = checksum(source, entry.name, columns, key, chunk_rows)
        rows_target, sum_target = checksum(target, entry.name, columns, key, chunk_rows)
        if (rows_source, sum_source) != (rows_target, sum_target):
            raise CopyError(
                f"verification failed for table {entry.name}: source {rows_source} rows (sha256 {sum_source[:12]}), "
                f"target {rows_target} rows (sha256 {sum_target[:12]}): the source changed since the copy began (a daemon "
                "ran on it between two runs of the copy?), or the target was written meanwhile. Stop every daemon, empty "
                "the target (DROP SCHEMA ... CASCADE, or a new database) and run the copy again"
            )
        entry.rows, entry.checksum, entry.verified = rows_source, sum_source, True
        with target.transaction() as db:
            db.execute("UPDATE store_copy SET checksum = ?, updated_at = ? WHERE name = ?", (sum_source, target._now(), entry.name))
    return report


def _copy_table(
    source: Store,
    target: Store,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    state: Any,
    where_from: str,
    chunk_rows: int,
    total: int,
    progress: Callable[[str, int, int], None] | None,
) -> int:
    copied = int(state["copied"]) if state is not None else 0
    after = json.loads(state["last_key"]) if state is not None and state["last_key"] else None
    now = to_text(target.clock())
    if state is None:
        with target.transaction() as db:
            db.execute(
                "INSERT INTO store_copy (name, source, copied, done, updated_at) VALUES (?, ?, 0, 0, ?)", (table, where_from, now)
            )
    cols = ", ".join(quote(c) for c in columns)
    per_insert = max(1, _MAX_PARAMS // len(columns))
    positions = [list(columns).index(k) for k in key]
    copied_now = 0
    for rows in _walk(source, table, columns, key, chunk_rows, after):
        last = [rows[-1][i] for i in positions]
        try:
            with target.transaction() as db:
                for start in range(0, len(rows), per_insert):
                    part = rows[start : start + per_insert]
                    marks = ", ".join("(" + ", ".join("?" * len(columns)) + ")" for _ in part)
                    db.execute(
                        f"INSERT INTO {quote(table)} ({cols}) VALUES {marks} ON CONFLICT DO NOTHING",
                        [value for row in part for value in row],
                    )
                db.execute(
                    "UPDATE store_copy SET copied = ?, last_key = ?, updated_at = ? WHERE name = ?",
                    (copied + len(rows), json.dumps(last), to_text(target.clock()), table),
                )
        except target.dialect.IntegrityError as exc:
            raise CopyError(
                f"table {table}: a row up to key {last} is refused by the target ({' '.join(str(exc).split())[:300]}). "
                "SQLite enforces foreign keys only when asked, so the source may hold rows that refer to missing ones "
                "(after a manual edit or a recovery): repair or delete them, then run the copy again"
            ) from None
        after = last
        copied += len(rows)
        copied_now += len(rows)
        if progress is not None:
            progress(table, copied, total)
    with target.transaction() as db:
        db.execute("UPDATE store_copy SET done = 1, updated_at = ? WHERE name = ?", (to_text(target.clock()), table))
    return copied_now


__all__ = ["CHUNK_ROWS", "CopyError", "CopyReport", "TableReport", "checksum", "copy_order", "copy_store"]


def migrate_store(
    to: str,
    *,
    source: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> CopyReport:
    """`deals store migrate`: copy the SQLite store under DEALS_HOME (or `source`) into `to`, holding the source's daemon lock."""
    from pathlib import Path

    from deals.framework import paths
    from deals.framework.dburl import is_postgresql, sqlite_path
    from deals.memory.lock import StoreLock

    lock = None
    if source is None or not is_postgresql(source):
        try:
            path = Path(sqlite_path(source)) if source else paths.database_path()
        except ValueError as exc:
            raise CopyError(str(exc)) from None
        if not path.is_file():
            raise CopyError(f"there is no store to copy at {path}")
        lock = StoreLock(path, command="deals store migrate")
        lock.acquire()  # StoreLockedError while a daemon uses it: stop the daemon first
        source = str(path)
    try:
        with Store(source) as src, Store(to) as dst:
            return copy_store(src, dst, chunk_rows=chunk_rows, progress=progress)
    finally:
        if lock is not None:
            lock.release()


__all__ += ["migrate_store"]
