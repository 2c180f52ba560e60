"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl on 127.0.0.1.

    server = PostgresServer.start()           # a temp data dir, a free port, trust auth
    url = server.new_schema()                 # a fresh schema (search_path in the URL)
    ...
    server.stop()                             # pg_ctl stop, data dir removed

The binaries come from PATH, else the Debian package's /usr/lib/postgresql/<version>/bin
(`find_binaries`; None when PostgreSQL is not installed: the tests then skip, saying why).
initdb refuses to run as root: as root the server runs as the `postgres` user (the Debian
package creates it), else as `nobody`, through `setpriv`, in a data directory it owns. It
listens on 127.0.0.1 only, without a Unix socket, with durability off (fsync) for speed.
Each test gets its own schema rather than its own database: creating a schema takes a
millisecond, a database a quarter of a second.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

USER = "deals"
DATABASE = "deals"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(candidates):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> list[str]:
    """The command prefix that drops root (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


@dataclass
class PostgresServer:
    """One running server (see the module docstring)."""

    bindir: Path
    root: Path
    port: int
    prefix: list[str] = field(default_factory=list)
    running: bool = False

    @classmethod
    def start(cls, bindir: Path | None = None) -> PostgresServer:
        bindir = bindir or find_binaries()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
        root = Path(tempfile.mkdtemp(prefix="deals-pg-"))
        prefix = _run_as()
        if prefix:
            uid, gid = int(prefix[1].split("=")[1]), int(prefix[2].split("=")[1])
            os.chown(root, uid, gid)
        server = cls(bindir=bindir, root=root, port=free_port(), prefix=prefix)
        try:
            server._initdb()
            server._pg_ctl("start")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        server.running = True
        atexit.register(server.stop)
        server.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        return server

    def _initdb(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--locale=C", "-N"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        command = [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w", "-t", "60"]
        if action in ("start", "restart"):
            command += ["-o", options]
        subprocess.run([*command, *extra, action], check=True, capture_output=True, timeout=90)

    def restart(self) -> None:
        """Stop and start again (fast shutdown: connections are cut)."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._pg_ctl("stop", "-m", "immediate")
            except (subprocess.SubprocessError, OSError):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        base = f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"
        return f"{base}?options=-csearch_path%3D{schema}" if schema else base

    def sql(self, statement: str, *, database: str = DATABASE) -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def new_schema(self, name: str | None = None) -> str:
        """Create a fresh schema; a URL whose search_path is that schema."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def drop_schema(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        self.sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""


__all__ = ["DATABASE", "USER", "PostgresServer", "find_binaries", "free_port"]
