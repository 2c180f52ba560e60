"""The effective configuration as the Settings page shows it: nothing secret, no full phone number.

Settings hold no secrets by design (keys and tokens come only from the environment), but a
URL can carry credentials (`https://user:pass@proxy/`, `?api_key=...`), and phone numbers
are personal. So: passwords in URLs and secret-looking query values become `***`, phone
numbers keep their last 4 digits, and any key whose name says token/secret/password/key
is hidden whatever its value. `secret_status()` says which secret variables are set, never
their values.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from deals.agents.watchlist import mask, mask_numbers_in
from deals.framework.urls import SECRET_NAME, redact_url, redact_urls_in
from deals.framework.settings import Settings

SECRET_ENV = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "DEALS_DASHBOARD_TOKEN",
    "PGPASSWORD",  # the PostgreSQL store's password, when store.url does not carry it
)
_PHONE = re.compile(r"^\+\d{6,16}$")
HIDDEN = "*** (hidden)"


def error_text(text: str | None) -> str:
    """An error message as the dashboard shows it: URLs redacted, phone numbers masked
    (a feed's error names its URL, keys and all; a provider's names the recipient)."""
    return mask_numbers_in(redact_urls_in(text or ""))


def _clean(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _clean(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    if isinstance(value, str):
        if key and SECRET_NAME.search(key):
            return HIDDEN
        if _PHONE.match(value):
            return mask(value)
        if "://" in value:
            return redact_url(value)
    return value


def redacted_settings(settings: Settings) -> str:
    """The effective settings as YAML, with secrets and phone numbers hidden."""
    return yaml.safe_dump(_clean(settings.model_dump(mode="json")), sort_keys=False, allow_unicode=True, width=120)


def secret_status(environ: dict[str, str] | None = None) -> list[tuple[str, bool]]:
    """(variable, set?) for each secret the daemon reads from the environment."""
    env = os.environ if environ is None else environ
    return [(name, bool(env.get(name, "").strip())) for name in SECRET_ENV]


__all__ = ["HIDDEN", "SECRET_ENV", "error_text", "redacted_settings", "secret_status"]
