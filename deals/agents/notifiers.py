"""Where alerts go: the `Notifier` extension point and its two implementations.

    Notifier          send(to, body) -> provider id; find_sent(to, body, since) -> id | None
    TwilioNotifier    SMS through the official `twilio` client (base URL configurable)
    ConsoleNotifier   prints and logs alerts when Twilio is not configured

`build_notifier` picks one from settings and the environment (TWILIO_ACCOUNT_SID,
TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER); without everything SMS needs it falls back to the
console and logs, once per process, that SMS is not configured. Errors are mapped onto
`TransientNotifyError` (5xx, 429, network failures, timeouts: worth retrying) and
`PermanentNotifyError` (other 4xx: not). The auth token is never logged or repr'd, and
error text from the provider (or a proxy) that echoes it is redacted before it reaches a
log line or the store.

The Twilio SDK talks HTTP through `deals.agents.twilio_http.HttpxTwilioClient`, so
`messenger.timeout_s` is a wall-clock deadline for each API request and a shutdown
abandons a request in flight.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TextIO

from deals.agents.watchlist import mask_numbers_in
from deals.framework.errors import ConfigError, NotifyError, PermanentNotifyError, TransientNotifyError
from deals.framework.settings import MessengerSettings, e164

log = logging.getLogger("deals.agents.messenger")

CONSOLE_RECIPIENT = "console"
SID_ENV = "TWILIO_ACCOUNT_SID"
TOKEN_ENV = "TWILIO_AUTH_TOKEN"  # noqa: S105 - the variable's name, not a secret
FROM_ENV = "TWILIO_FROM_NUMBER"

# Once-per-process notices ("SMS is not configured"); a set so tests can clear it.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str, logger: logging.Logger = log) -> None:
    """Log `message` as a warning the first time `key` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)


class Notifier(ABC):
    """Delivers one text to one recipient."""

    name: str = "notifier"

    @abstractmethod
    def send(self, to: str, body: str) -> str:
        """Send `body` to `to`; return the provider's message id.

        Raises `TransientNotifyError` when a retry may succeed, `PermanentNotifyError`
        when it will not.
        """

    @abstractmethod
    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        """The id of a message with this body already sent to `to` since `since`, if any.

        Used to reconcile alerts whose send outcome is unknown (a crash, a timeout).
        Raises `NotifyError` when the provider cannot be asked.
        """

    def recipients(self, configured: Sequence[str]) -> list[str]:
        """Who this notifier delivers to, given the configured recipients."""
        return list(dict.fromkeys(configured))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ConsoleNotifier(Notifier):
    """Prints alerts (and logs them) instead of texting: the default without Twilio."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._ids = itertools.count(1)

    def send(self, to: str, body: str) -> str:
        stream = self.stream or sys.stdout
        print(f"[deals alert] {body}", file=stream, flush=True)
        log.info("alert (console): %s", body)
        return f"console-{os.getpid()}-{next(self._ids)}"

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        return None  # the console keeps no record; an unknown outcome is printed again

    def recipients(self, configured: Sequence[str]) -> list[str]:
        return [CONSOLE_RECIPIENT]


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    for arg in getattr(exc, "args", ()):  # TwilioException("Unable to fetch page", response)
        code = getattr(arg, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def translate_error(exc: BaseException, action: str, redact: Callable[[str], str] = str) -> NotifyError:
    """Map a twilio/httpx exception to a transient or permanent `NotifyError` (text passed through
    `redact`, and every phone number in it masked: Twilio's messages name the recipient)."""
    import httpx
    from twilio.base.exceptions import TwilioException

    def clean(text: str) -> str:
        return mask_numbers_in(redact(text))

    if isinstance(exc, httpx.TimeoutException):
        return TransientNotifyError(clean(f"Twilio {action}: timed out ({type(exc).__name__}: {exc})"))
    if isinstance(exc, httpx.HTTPError):
        return TransientNotifyError(clean(f"Twilio {action}: network error: {type(exc).__name__}: {exc}"))
    if isinstance(exc, TwilioException):
        status = _status_of(exc)
        detail = getattr(exc, "msg", None) or getattr(exc, "title", None) or (exc.args[0] if exc.args else "")
        code = getattr(exc, "code", None)
        text = clean(f"Twilio {action}: HTTP {status}" + (f" (code {code})" if code else "") + f": {detail}")
        if status is None or status >= 500 or status == 429:
            return TransientNotifyError(text)
        return PermanentNotifyError(text)
    return TransientNotifyError(clean(f"Twilio {action}: {type(exc).__name__}: {exc}"))


def redactor(*secrets: str) -> Callable[[str], str]:
    """A function replacing each secret (and the Basic-auth encoding of the first two) with ***."""
    values = [s for s in secrets if s]
    if len(secrets) >= 2 and secrets[0] and secrets[1]:
        values.append(base64.b64encode(f"{secrets[0]}:{secrets[1]}".encode()).decode())
    values.sort(key=len, reverse=True)

    def redact(text: str) -> str:
        for value in values:
            text = text.replace(value, "***")
        return text

    return redact


class TwilioNotifier(Notifier):
    """SMS through `twilio.rest.Client`; `base_url` points it at a proxy or a fake."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        base_url: str | None = None,
        timeout_s: float = 15.0,
        lookback: int = 100,
    ) -> None:
        from twilio.rest import Client

        from deals.agents.twilio_http import HttpxTwilioClient

        self.from_number = from_number
        self.lookback = lookback
        self._redact = redactor(account_sid, auth_token)
        self.http = HttpxTwilioClient(timeout_s)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        if base_url:
            # Every API-domain request is built from Domain.base_url (twilio/base/domain.py).
            self.client.api.base_url = base_url.rstrip("/")
        self.base_url = self.client.api.base_url

    def send(self, to: str, body: str) -> str:
        try:
            message = self.client.messages.create(to=to, from_=self.from_number, body=body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a NotifyError
            raise translate_error(exc, "send", self._redact) from None
        if not message.sid:
            raise TransientNotifyError("Twilio send: the response carried no message SID")
        return str(message.sid)

    def find_sent(self, to: str, body: str, since: datetime) -> str | None:
        # No DateSent filter on purpose: a message Twilio accepted but has not yet handed to
        # the carrier has no date_sent and would be missed (and resent). We read the newest
        # messages to this recipient (newest first) and compare date_created instead.
        try:
            messages = self.client.messages.list(to=to, limit=self.lookback)
        except Exception as exc:  # noqa: BLE001
            raise translate_error(exc, "list messages", self._redact) from None
        for message in messages:
            created = message.date_created or message.date_sent
            if isinstance(created, datetime) and created < since:
                continue
            text = message.body or ""
            # Trial accounts prefix the body ("Sent from your Twilio trial account - ").
            if text == body or text.endswith(body):
                return str(message.sid)
        return None

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"TwilioNotifier(from={self.from_number!r}, base_url={self.base_url!r})"


def missing_sms_config(settings: MessengerSettings, environ: Mapping[str, str]) -> list[str]:
    """What SMS still needs: names of settings/variables, never their values."""
    missing = [name for name in (SID_ENV, TOKEN_ENV) if not environ.get(name)]
    if not (environ.get(FROM_ENV) or settings.from_number):
        missing.append(f"{FROM_ENV} or messenger.from_number")
    return missing  # who receives is the watchlist's business (messenger.to, recipients, `deals watch`)


def build_notifier(
    settings: MessengerSettings,
    environ: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 15.0,
    logger: logging.Logger = log,
) -> Notifier:
    """A `TwilioNotifier` when SMS is fully configured, else a `ConsoleNotifier` (warned once)."""
    environ = os.environ if environ is None else environ
    missing = missing_sms_config(settings, environ)
    if missing:
        warn_once(
            "sms-not-configured",
            f"SMS is not configured (missing: {', '.join(missing)}); alerts are printed and logged instead",
            logger,
        )
        return ConsoleNotifier()
    sender = environ.get(FROM_ENV) or settings.from_number or ""
    if environ.get(FROM_ENV):
        try:
            sender = e164(sender)
        except ValueError as exc:
            raise ConfigError(f"environment variable {FROM_ENV}: {exc}") from None
    return TwilioNotifier(
        environ[SID_ENV],
        environ[TOKEN_ENV],
        sender,
        base_url=settings.base_url,
        timeout_s=timeout_s,
    )


__all__ = [
    "CONSOLE_RECIPIENT",
    "ConsoleNotifier",
    "Notifier",
    "TwilioNotifier",
    "build_notifier",
    "missing_sms_config",
    "redactor",
    "translate_error",
    "warn_once",
]
