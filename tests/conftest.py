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
    return home


@pytest.fixture(scope="session")
def seeded_home_template(tmp_path_factory):
    """A DEALS_HOME with the starter index seeded and the ONNX query encoder exported (built once)."""
    from deals.framework.settings import Settings
    from deals.memory.embeddings import query_encoder
    from deals.pricer.catalogue import open_catalogue

    home = tmp_path_factory.mktemp("seeded-home")
    previous = os.environ.get("DEALS_HOME")
    os.environ["DEALS_HOME"] = str(home)
    try:
        settings = Settings()
        store = open_catalogue(settings, progress=False)
        query_encoder(settings.embeddings)
        del store
    finally:
        if previous is None:
            os.environ.pop("DEALS_HOME", None)
        else:
            os.environ["DEALS_HOME"] = previous
    return home


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
