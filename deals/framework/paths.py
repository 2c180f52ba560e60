"""Where `deals` keeps its state: one directory, moved entirely by `DEALS_HOME`.

Layout under the home directory::

    config.yaml        optional user config (read when no --config/DEALS_CONFIG is given)
    deals.db           SQLite memory store (feeds, deals, estimates, alerts, runs)
    vectors/           Chroma persistent store (the product index)
    models/            trained adapters and fitted ensemble weights
    reports/           evaluation reports and plots
    cache/             converted models and other rebuildable caches
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "DEALS_HOME"


def home() -> Path:
    """The state directory: `$DEALS_HOME` if set, else the platform data directory."""
    raw = os.environ.get(HOME_ENV)
    path = Path(raw).expanduser() if raw else Path(platformdirs.user_data_dir("deals", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sub(name: str) -> Path:
    """A sub-directory of the home directory, created on demand."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return home() / "deals.db"


def vectors_dir() -> Path:
    return sub("vectors")


def models_dir() -> Path:
    return sub("models")


def reports_dir() -> Path:
    return sub("reports")


def cache_dir() -> Path:
    return sub("cache")
