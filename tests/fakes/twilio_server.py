"""A fake Twilio REST API on 127.0.0.1, for the real `twilio` SDK to talk to.

Enough of the 2010-04-01 Messages resource::

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   create (To, From, Body; form-encoded)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json   list, newest first, filtered by To,
                                                           From, DateSent, DateSent<, DateSent>
                                                           (YYYY-MM-DD or ...THH:MM:SSZ), paged
                                                           by PageSize/Page with next_page_uri

HTTP Basic auth is checked against the account SID and auth token given to the server
(401 otherwise, Twilio's error 20003). Create validates like Twilio: a missing To/From/Body
or a To that is not E.164 is a 400 with Twilio's error code. Messages get an `SM...` SID,
`num_segments` computed from their GSM-7/UCS-2 length, and status `sent` with a date_sent
(or, with `hold=True`, status `queued` and no date_sent, like a message not yet handed to
the carrier).

Scripting and inspection:

    server.fail(500, times=2)          the next 2 matching requests get a 500 (also 429 with
                                       Retry-After, 400/401/404 ...); method="GET" for lists
    server.add_message(to, body)       a message that "already exists" (sent earlier)
    server.requests                    every request: method, path, query, form, status
    server.created                     messages created through the API, in order
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ACCOUNT_SID = "AC" + "f" * 32
AUTH_TOKEN = "fake-auth-token-do-not-log"  # noqa: S105 - a test value
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# GSM 03.38, written out independently of deals.agents.messenger so the fake judges it.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("^{}\\[~]|€\f")


def segments(body: str) -> int:
    """SMS segments Twilio would bill for `body`."""
    if all(c in _GSM_BASIC or c in _GSM_EXT for c in body):
        septets = sum(2 if c in _GSM_EXT else 1 for c in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    user: str | None
    status: int = 0


@dataclass
class _Failure:
    status: int
    method: str | None
    code: int | None
    message: str


@dataclass
class FakeTwilio:
    """The fake server; use as a context manager or call start()/stop()."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    hold: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-twilio", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---------------------------------------------------------------- scripting

    def fail(self, status: int, *, times: int = 1, method: str | None = "POST", code: int | None = None, message: str = "") -> None:
        """The next `times` requests (of `method`; None = any) are answered with `status`."""
        defaults = {
            400: (21211, "The 'To' number is not a valid phone number."),
            429: (20429, "Too Many Requests"),
            500: (20500, "Internal Server Error"),
            503: (20503, "Service Unavailable"),
        }
        default_code, default_message = defaults.get(status, (status, f"scripted failure {status}"))
        code = default_code if code is None else code
        text = message or default_message
        with self._lock:
            self._failures += [_Failure(status, method, code, text) for _ in range(times)]

    def add_message(
        self,
        to: str,
        body: str,
        *,
        from_: str = "+15550000000",
        created: datetime | None = None,
        sent: bool = True,
    ) -> str:
        """Store a message as if it had been created earlier; returns its SID."""
        when = created or self.clock()
        with self._lock:
            return self._store(to, from_, body, when, sent)["sid"]

    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # ---------------------------------------------------------------- internals

    def _store(self, to: str, from_: str, body: str, when: datetime, sent: bool) -> dict[str, Any]:
        sid = "SM" + uuid.uuid4().hex
        stamp = format_datetime(when.astimezone(timezone.utc), usegmt=True)
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": from_,
            "body": body,
            "status": "sent" if sent else "queued",
            "direction": "outbound-api",
            "num_segments": str(segments(body)),
            "num_media": "0",
            "date_created": stamp,
            "date_updated": stamp,
            "date_sent": stamp if sent else None,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "api_version": "2010-04-01",
            "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            "_created": when,  # stripped before sending
            "_seq": len(self.messages),
        }
        self.messages.append(message)
        return message

    def _reply(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        record.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, status: int, code: int, message: str) -> None:
        headers = {"Retry-After": "1"} if status == 429 else None
        payload = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
        self._reply(handler, record, status, payload, headers)

    def _user(self, handler: BaseHTTPRequestHandler) -> tuple[str | None, bool]:
        header = handler.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None, False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None, False
        return user, (user == self.account_sid and password == self.auth_token)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        user, authorized = self._user(handler)
        record = RecordedRequest(method, parts.path, query, form, user)
        with self._lock:
            self.requests.append(record)
            match = _PATH.match(parts.path)
            if not match:
                return self._error(handler, record, 404, 20404, "The requested resource was not found")
            if not authorized:
                return self._error(handler, record, 401, 20003, "Authenticate")
            if match["sid"] != self.account_sid:
                return self._error(handler, record, 403, 20003, "Permission denied")
            for failure in self._failures:
                if failure.method in (None, method):
                    self._failures.remove(failure)
                    return self._error(handler, record, failure.status, failure.code or failure.status, failure.message)
            if method == "POST":
                return self._create(handler, record, form)
            return self._list(handler, record, query, match["sid"])

    def _create(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, form: dict[str, str]) -> None:
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            return self._error(handler, record, 400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to):
            return self._error(handler, record, 400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_:
            return self._error(handler, record, 400, 21603, "A 'From' phone number is required.")
        if not body:
            return self._error(handler, record, 400, 21602, "Message body is required.")
        if len(body) > 1600:
            return self._error(handler, record, 400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        message = self._store(to, from_, body, self.clock(), sent=not self.hold)
        self.created.append(message)
        self._reply(handler, record, 201, _public(message))

    def _list(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, query: dict[str, str], sid: str) -> None:
        def day_of(message: dict[str, Any]) -> str | None:
            sent = message["date_sent"]
            return message["_created"].astimezone(timezone.utc).strftime("%Y-%m-%d") if sent else None

        def bound(value: str) -> str:
            return value[:10]  # Twilio compares dates (YYYY-MM-DD); a datetime's date part

        chosen = []
        for message in self.messages:
            if "To" in query and message["to"] != query["To"]:
                continue
            if "From" in query and message["from"] != query["From"]:
                continue
            day = day_of(message)
            if "DateSent" in query and day != bound(query["DateSent"]):
                continue
            if "DateSent<" in query and (day is None or day > bound(query["DateSent<"])):
                continue
            if "DateSent>" in query and (day is None or day < bound(query["DateSent>"])):
                continue
            chosen.append(message)
        chosen.sort(key=lambda m: (m["_created"], m["_seq"]), reverse=True)
        size = max(1, min(int(query.get("PageSize", 50)), 1000))
        page = int(query.get("Page", 0))
        items = chosen[page * size : (page + 1) * size]
        base = f"/2010-04-01/Accounts/{sid}/Messages.json"
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}

        def uri(number: int) -> str:
            return f"{base}?{urlencode({**keep, 'PageSize': size, 'Page': number, 'PageToken': f'PA{number}'})}"

        payload = {
            "messages": [_public(m) for m in items],
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + max(len(items) - 1, 0),
            "uri": uri(page),
            "first_page_uri": uri(0),
            "previous_page_uri": uri(page - 1) if page else None,
            "next_page_uri": uri(page + 1) if (page + 1) * size < len(chosen) else None,
        }
        self._reply(handler, record, 200, payload)


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


__all__ = ["ACCOUNT_SID", "AUTH_TOKEN", "FakeTwilio", "RecordedRequest", "segments"]
