"""The dashboard's safety: where it may listen, who may use it, and what may write.

- **Binding** (`check_bind`): loopback (127.0.0.0/8, ::1, localhost) by default. Bound to
  any other address the dashboard requires a token in `DEALS_DASHBOARD_TOKEN` (at least
  16 characters) and refuses to start without one (`ConfigError`, exit 2).
- **Token** (`Guard`): when a token is set, every page needs it, either as
  `Authorization: Bearer TOKEN` or as the session cookie the login form sets (an HMAC of
  the token, so the cookie never holds the token itself). Every comparison is
  `hmac.compare_digest` (constant time).
- **Host header**: bound to loopback, only loopback host names are accepted (a DNS-
  rebinding page cannot read the dashboard); elsewhere the bound name and
  `dashboard.allowed_hosts` (any, when bound to a wildcard address without a list).
- **CSRF**: every write is a POST carrying the `csrf` form field (or `X-CSRF-Token`
  header, as htmx sends it) equal to the `deals_csrf` cookie (random, SameSite=Strict,
  HttpOnly), and an `Origin`, when the browser sends one, naming this host.
- **Headers**: a Content-Security-Policy allowing only this origin's scripts and styles
  (no inline script), no framing, no MIME sniffing, no referrer beyond this site.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from deals.framework.errors import ConfigError

if TYPE_CHECKING:
    from starlette.responses import Response

TOKEN_ENV = "DEALS_DASHBOARD_TOKEN"
MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "deals_session"
CSRF_COOKIE = "deals_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make the browser send "Origin: null" on our own forms
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or 'localhost') is the loopback interface."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def dashboard_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The token from `DEALS_DASHBOARD_TOKEN` (None when unset or empty)."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    return value.strip() or None


def check_bind(host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token the dashboard will require, after checking that it may bind to `host`.

    Raises `ConfigError` for a non-loopback address without a (long enough) token.
    """
    token = dashboard_token(environ)
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_CHARS} random characters")
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"the dashboard would listen on {host}, beyond this machine, without a token: "
            f"set {TOKEN_ENV} (at least {MIN_TOKEN_CHARS} random characters), or bind to 127.0.0.1"
        )
    return token


def _host_name(host_header: str) -> str:
    """The name of a Host header without its port ('[::1]:8484' -> '::1')."""
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Guard:
    """Decides who may see and change what (see the module docstring)."""

    def __init__(self, *, bind_host: str, token: str | None, allowed_hosts: Sequence[str] = ()) -> None:
        self.token = token
        self._session = hmac.new(token.encode(), b"deals-dashboard-session", hashlib.sha256).hexdigest() if token else None
        extra = {_host_name(h) for h in allowed_hosts if h.strip()}
        bound = _host_name(bind_host)
        if is_loopback(bind_host):
            self.hosts: set[str] | None = {*LOOPBACK_NAMES, bound, *extra}
        elif bound in ("0.0.0.0", "::") and not extra:  # noqa: S104 - a wildcard bind: the token protects
            self.hosts = None
        else:
            self.hosts = {*LOOPBACK_NAMES, bound, *extra} - {"0.0.0.0", "::"}  # noqa: S104

    # ---------------------------------------------------------------- who

    def host_ok(self, host_header: str | None) -> bool:
        if self.hosts is None:
            return True
        return bool(host_header) and _host_name(host_header or "") in self.hosts

    def authorised(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Whether the request carries the token (always true without one)."""
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        cookie = cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), (self._session or "").encode())

    def login(self, offered: str) -> str | None:
        """The session cookie's value when `offered` is the token, else None."""
        if self.token is None or not hmac.compare_digest(offered.strip().encode(), self.token.encode()):
            return None
        return self._session

    # ---------------------------------------------------------------- writes

    @staticmethod
    def new_csrf() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def csrf_ok(cookie: str | None, offered: str | None) -> bool:
        return bool(cookie) and bool(offered) and hmac.compare_digest(str(cookie).encode(), str(offered).encode())

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """A browser's Origin (when it sends one) must be this dashboard."""
        if not origin:
            return True
        if origin == "null":
            return False
        parts = urlsplit(origin)
        return bool(parts.netloc) and bool(host_header) and parts.netloc.lower() == (host_header or "").lower()


def secured(response: Response) -> Response:
    """`response` with SECURITY_HEADERS (those it does not set itself)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "SECURITY_HEADERS", "SESSION_COOKIE", "TOKEN_ENV", "Guard", "check_bind", "is_loopback", "secured"]
