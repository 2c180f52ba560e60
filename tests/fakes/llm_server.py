"""A fake LLM provider on 127.0.0.1: enough of OpenAI Chat Completions and Anthropic Messages.

Routes (any path prefix is accepted, so tests can prove that a `base_url` with a path is
honoured; the path actually requested is recorded):

    POST .../chat/completions   OpenAI Chat Completions (incl. `response_format` json_schema /
                                json_object, as sent by `client.chat.completions.parse`)
    POST .../messages           Anthropic Messages (incl. `output_config.format` json_schema,
                                as sent by `client.messages.parse`)

Every request is recorded (`server.requests`) with its path, headers and parsed JSON body;
`server.max_in_flight` is the most requests it was answering at once.
What the server answers is scriptable: a *responder* is a function from the recorded
request to a `Reply`. `server.respond(responder)` sets the default; `server.queue(...)`
adds one-shot responders used first, in order. Canned responders, each answering in the
dialect of the API that was called:

    answer(content)          a normal reply; content is a str, a JSON-able object, or a
                             function of the request returning either
    garbage()                prose instead of JSON
    refusal()                OpenAI `message.refusal` / Anthropic `stop_reason: "refusal"`
    http_error(status)       an API error body with that status (`retry-after-ms: 1`, so
                             SDK retries are fast)
    hang(seconds)            sleeps longer than the client's timeout before answering
    sequence(a, b, ...)      a for the first call, b for the second, ...; the last repeats
    reject_json_schema(then) 400 for `response_format: json_schema` (like a server that
                             does not support it), `then` for everything else
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL_REPLY = "ok"


@dataclass
class Recorded:
    """One request received by the fake server."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def api(self) -> str:
        return "anthropic" if self.path.rstrip("/").endswith("/messages") else "openai"

    @property
    def system(self) -> str:
        """The system prompt, whichever API carried it."""
        if self.api == "anthropic":
            system = self.body.get("system", "")
            if isinstance(system, list):
                return "\n".join(block.get("text", "") for block in system)
            return system or ""
        return "\n".join(_text(m.get("content")) for m in self.body.get("messages", []) if m.get("role") == "system")

    @property
    def user(self) -> str:
        """The user messages' text, joined."""
        return "\n".join(_text(m.get("content")) for m in self.body.get("messages", []) if m.get("role") == "user")

    @property
    def response_format(self) -> str | None:
        """'json_schema', 'json_object' or None: what structured output the request asked for."""
        if self.api == "anthropic":
            fmt = (self.body.get("output_config") or {}).get("format") or {}
            return fmt.get("type")
        return (self.body.get("response_format") or {}).get("type")

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the request asked the model to follow, if any."""
        if self.api == "anthropic":
            return ((self.body.get("output_config") or {}).get("format") or {}).get("schema")
        fmt = self.body.get("response_format") or {}
        return (fmt.get("json_schema") or {}).get("schema")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


@dataclass
class Reply:
    """What the server sends back."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Responder = Callable[[Recorded], Reply]


# --------------------------------------------------------------------------- canned replies


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def answer(
    content: str | Any | Callable[[Recorded], Any],
    *,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    finish: str | None = None,
) -> Responder:
    """A normal reply whose text is `content` (JSON-encoded unless it is a str)."""

    def respond(req: Recorded) -> Reply:
        value = content(req) if callable(content) else content
        text = value if isinstance(value, str) else json.dumps(value)
        t_in = tokens_in if tokens_in is not None else _estimate_tokens(req.raw.decode("utf-8", "replace"))
        t_out = tokens_out if tokens_out is not None else _estimate_tokens(text)
        model = req.body.get("model", "fake-model")
        if req.api == "anthropic":
            return Reply(json=_anthropic_message(model, [{"type": "text", "text": text}], finish or "end_turn", t_in, t_out))
        message = {"role": "assistant", "content": text, "refusal": None}
        return Reply(json=_openai_completion(model, message, finish or "stop", t_in, t_out))

    return respond


def garbage(text: str = "Sure! These all look like great deals to me, happy shopping :)") -> Responder:
    """Prose where JSON was asked for."""
    return answer(text)


def refusal(message: str = "I'm sorry, but I can't help with that request.", *, anthropic_text: bool = False) -> Responder:
    """A refusal: OpenAI puts it in `message.refusal`; Anthropic stops with `refusal`."""

    def respond(req: Recorded) -> Reply:
        model = req.body.get("model", "fake-model")
        if req.api == "anthropic":
            content = [{"type": "text", "text": message}] if anthropic_text else []
            return Reply(json=_anthropic_message(model, content, "refusal", 20, 5))
        return Reply(json=_openai_completion(model, {"role": "assistant", "content": None, "refusal": message}, "stop", 20, 5))

    return respond


def http_error(status: int, message: str | None = None, *, retry_after_ms: int | None = 1) -> Responder:
    """An error response in the API's own error format."""

    def respond(req: Recorded) -> Reply:
        text = message or f"fake server error {status}"
        headers = {"retry-after-ms": str(retry_after_ms)} if retry_after_ms is not None else {}
        if req.api == "anthropic":
            kinds = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}
            kind = kinds.get(status, "api_error")
            return Reply(status=status, json={"type": "error", "error": {"type": kind, "message": text}}, headers=headers)
        kind = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status, "server_error")
        return Reply(status=status, json={"error": {"message": text, "type": kind, "param": None, "code": kind}}, headers=headers)

    return respond


def hang(seconds: float, then: Responder | None = None) -> Responder:
    """Wait `seconds` (longer than the client's timeout) before answering."""

    def respond(req: Recorded) -> Reply:
        reply = (then or garbage())(req)
        reply.delay_s = seconds
        return reply

    return respond


def sequence(*responders: Responder) -> Responder:
    """The first responder for the first call, the second for the second, ...; the last repeats."""
    lock = threading.Lock()
    calls = [0]

    def respond(req: Recorded) -> Reply:
        with lock:
            index = min(calls[0], len(responders) - 1)
            calls[0] += 1
        return responders[index](req)

    return respond


def reject_json_schema(then: Responder, *, reject_json_object: bool = False) -> Responder:
    """Like an OpenAI-compatible server without json_schema support: 400 for it, `then` otherwise."""

    def respond(req: Recorded) -> Reply:
        if req.response_format == "json_schema" or (reject_json_object and req.response_format == "json_object"):
            message = f"response_format {req.response_format!r} is not supported by this server"
            return http_error(400, message, retry_after_ms=None)(req)
        return then(req)

    return respond


def _openai_completion(model: str, message: dict[str, Any], finish: str, t_in: int, t_out: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": t_in, "completion_tokens": t_out, "total_tokens": t_in + t_out},
    }


def _anthropic_message(model: str, content: list[dict[str, Any]], stop: str, t_in: int, t_out: int) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": t_in, "output_tokens": t_out},
    }


# --------------------------------------------------------------------------- the server


class FakeLLMServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) speaking both dialects."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._default: Responder = responder or answer(DEFAULT_MODEL_REPLY)
        self._queue: list[Responder] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm-server", daemon=True
        )

    # -- scripting
    def respond(self, responder: Responder) -> None:
        """Set the default responder."""
        self._default = responder

    def queue(self, *responders: Responder) -> None:
        """Responders used once each, before the default."""
        with self._lock:
            self._queue.extend(responders)

    def _next(self) -> Responder:
        with self._lock:
            return self._queue.pop(0) if self._queue else self._default

    # -- lifecycle
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = None
                recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw)
                with server._lock:
                    server.requests.append(recorded)
                if not (self.path.endswith("/chat/completions") or self.path.endswith("/messages")) or body is None:
                    reply = Reply(status=404, json={"error": {"message": f"no route for {self.path}"}})
                else:
                    reply = server._next()(recorded)
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                payload = reply.text.encode() if reply.text is not None else json.dumps(reply.json).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


__all__ = [
    "FakeLLMServer",
    "Recorded",
    "Reply",
    "Responder",
    "answer",
    "garbage",
    "hang",
    "http_error",
    "refusal",
    "reject_json_schema",
    "sequence",
]
