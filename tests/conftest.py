"""Shared test set-up: every test gets its own DEALS_HOME and runs offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True)
def deals_home(tmp_path, monkeypatch):
    """A fresh state directory per test; no real config, keys or phone numbers leak in."""
    home = tmp_path / "deals-home"
    home.mkdir()
    monkeypatch.setenv("DEALS_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("DEALS_") and name != "DEALS_HOME":
            monkeypatch.delenv(name, raising=False)
    for secret in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER"):
        monkeypatch.delenv(secret, raising=False)
    yield home
    # An in-process CLI run installs the `deals` log handler; later tests must not inherit it.
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "deals":
            root.removeHandler(handler)
    # A test that stopped an orchestrator mid-request must not cancel the next test's requests.
    from deals.framework.deadline import allow_requests

    allow_requests()


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (initdb + pg_ctl on 127.0.0.1, tests/fakes/postgres.py).

    Skipped, saying why, where the binaries are not installed; under CI (CI=true) that is a
    failure instead, since .ci/run installs them."""
    from tests.fakes.postgres import PostgresServer, find_binaries

    if find_binaries() is None:
        reason = (
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
            "`apt-get install postgresql` runs these tests"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    """A fresh, empty schema on the session's server, as a store URL."""
    url = postgres.new_schema()
    yield url
    postgres.drop_schema(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """What `Store(...)` opens, once per engine: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return tmp_path / "deals.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def seeded_home_template(tmp_path_factory):
    """A DEALS_HOME with the starter index seeded, the ONNX query encoder exported and the
    ridge member fitted: built once per session by the real CLI (`deals price`)."""
    from tests.fakes.daemon import seeded_home_template as build

    return build(tmp_path_factory)


@pytest.fixture
def seeded_home(seeded_home_template, deals_home):
    """This test's DEALS_HOME, holding a copy of the seeded starter index."""
    import shutil

    shutil.copytree(seeded_home_template, deals_home, dirs_exist_ok=True)
    return deals_home


@pytest.fixture(scope="session")
def embedder():
    """The real sentence-transformers MiniLM encoder (loaded once per session)."""
    from deals.framework.settings import EmbeddingSettings
    from deals.memory.embeddings import Embedder

    return Embedder(EmbeddingSettings())


EXIT_GRACE_S = 120


def pytest_sessionfinish(session, exitstatus):
    """Name what is still running when the session ends, and make sure pytest exits.

    A non-daemon thread or an executor's worker blocked on a socket keeps the interpreter
    from exiting after the summary, and CI then waits until its own limit. The threads and
    child processes still alive are printed now; if pytest has not exited EXIT_GRACE_S
    later, every thread's stack is dumped and the process exits with the session's status."""
    import faulthandler
    import sys
    import threading
    import time

    alive = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    children = _child_processes()
    out = sys.__stderr__
    if alive or children:
        print(f"\nstill running as the session ends: threads {[t.name for t in alive]}, processes {children}", file=out)

    def watch() -> None:
        time.sleep(EXIT_GRACE_S)
        print(f"\npytest has not exited {EXIT_GRACE_S} s after the session ended; the threads' stacks:", file=out, flush=True)
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()
        os._exit(int(exitstatus))

    threading.Thread(target=watch, name="exit-watchdog", daemon=True).start()


def _child_processes() -> list[str]:
    """This process's live children, as 'pid name'."""
    import psutil

    alive = []
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{child.pid} {child.name()}")
        except psutil.NoSuchProcess:
            pass
    return alive
