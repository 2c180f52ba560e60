"""Logging set-up for the CLI and the daemon: one handler, installed once.

    setup_logging(level, json_logs)

Three shapes, one record per line where a machine reads them:

- a terminal on stderr: rich (colours, wrapped to the terminal's width);
- stderr not a terminal (systemd, a file, a pipe): plain `time level logger: message`
  lines, never wrapped; newlines inside a message or traceback are written as "\\n",
  so every record is exactly one line;
- `json_logs`: one JSON object per line.

Messages carry text from the outside world (feed titles, URLs, provider errors): control
characters (ANSI/OSC escape sequences) and bidi overrides are stripped in every shape
(deals.framework.text), so a feed cannot drive the terminal that reads the log; and every
URL in them is redacted (deals.framework.urls.redact_urls_in), so a feed's API key or a
password in a link never reaches a log file.
"""

from __future__ import annotations

import json
import logging
import sys

from deals.framework.text import strip_controls
from deals.framework.urls import redact_urls_in

_HANDLER_NAME = "deals"


def _shown(text: str) -> str:
    return redact_urls_in(strip_controls(text))


class _SafeFormatter(logging.Formatter):
    """Strips control and bidi characters; with `one_line`, writes newlines as "\\n"."""

    def __init__(self, fmt: str, *, one_line: bool, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.one_line = one_line

    def format(self, record: logging.LogRecord) -> str:
        text = _shown(super().format(record))
        return text.replace("\n", "\\n") if self.one_line else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": _shown(record.getMessage()),
        }
        if record.exc_info:
            payload["exception"] = _shown(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    """Install (or replace) the single `deals` handler on the root logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler: logging.Handler
    if json_logs:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
    elif not _is_terminal(sys.stderr):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            _SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", one_line=True, datefmt="%Y-%m-%dT%H:%M:%S")
        )
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True, markup=False)
        handler.setFormatter(_SafeFormatter("%(name)s: %(message)s", one_line=False))
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "chromadb", "urllib3", "sentence_transformers", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False
