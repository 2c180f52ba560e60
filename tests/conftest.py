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
