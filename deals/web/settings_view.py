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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml

from deals.agents.watchlist import mask, mask_numbers_in
from deals.framework.dburl import redact
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
_SECRET_NAME = re.compile(r"(token|secret|password|passwd|api_?key|auth|credential|sid)$", re.I)
_PHONE = re.compile(r"^\+\d{6,16}$")
HIDDEN = "*** (hidden)"


def redact_url(value: str) -> str:
    """The URL with its user info and secret-looking query values (key, token, sig...) as ***."""
    try:
        parts = urlsplit(value)
    except ValueError:  # not a URL urllib can split (a typo in a setting): still no password shown
        return redact(value)
    if not parts.scheme or not parts.netloc:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if _SECRET_NAME.search(k) or k.lower() in ("key", "sig", "signature") else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])  # fmt: skip
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")


def redact_urls_in(text: str) -> str:
    """`text` (an error message, say) with every URL in it through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


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
        if key and _SECRET_NAME.search(key):
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


__all__ = ["HIDDEN", "SECRET_ENV", "error_text", "redact_url", "redacted_settings", "secret_status"]
