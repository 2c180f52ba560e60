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

from deals.framework.errors import ConfigError

HOME_ENV = "DEALS_HOME"


def _directory(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path} exists but is not a directory") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be created: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise ConfigError(f"{what} {path} is not a directory")
    return path


def home() -> Path:
    """The state directory: `$DEALS_HOME` if set, else the platform data directory (created; ConfigError if it cannot be)."""
    raw = os.environ.get(HOME_ENV)
    if raw:
        return _directory(Path(raw).expanduser(), f"the state directory (${HOME_ENV})")
    return _directory(Path(platformdirs.user_data_dir("deals", appauthor=False)), "the state directory")


def sub(name: str) -> Path:
    """A sub-directory of the home directory, created on demand."""
    return _directory(home() / name, f"the {name} directory")


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
