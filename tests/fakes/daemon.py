"""Test kit for the daemon tests (planner, orchestrator, end to end, crash, faults, soak).

    serve_feeds(server)                the real fixture feeds on a FeedServer, with ETags
    deal_feed(feed, items)             a generated RSS feed of `items` single-product deals
    finished(store, entries, recipients)  every entry read, deal priced and alert sent
    scanner_reply(request)             what a sensible LLM answers to the scanner's prompt
    TrippingTwilio                     the fake Twilio, able to stop at its Nth message and
                                       tell the test (which then kills the daemon)
    seeded_home_template(factory)      a DEALS_HOME whose vector index holds the starter
                                       catalogue, built once per test session by the real
                                       `deals index` command; copy_home() gives each test a copy
    write_config(path, data)           a YAML config file

Everything here is a network-edge fake or plain set-up: the code under test is the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.fakes.feed_server import FeedServer
from tests.fakes.llm_server import Recorded
from tests.fakes.twilio_server import FakeTwilio, RecordedRequest

if TYPE_CHECKING:
    from deals.memory.store import Store

REPO = Path(__file__).resolve().parents[2]
FEEDS = REPO / "tests" / "fixtures" / "feeds"
FEED_FILES = (
    "dealnews-recent-2026-10.xml",
    "dealnews-recent-2026-10-escaped.xml",  # the same three deals: deduplicated by key
    "dealnews-roundups-2026-10.xml",
    "techbargains-2026-10.xml",
    "ozbargain-2023-01.xml",  # Australian dollars: all rejected
)


def serve_feeds(server: FeedServer, files: tuple[str, ...] = FEED_FILES) -> list[str]:
    """Serve the fixture feeds (each with an ETag, so a second read is a 304); their URLs."""
    return [server.serve_file(f"/feeds/{name}", FEEDS / name, etag=f'"{name}-v1"') for name in files]


def deal_feed(feed: int, items: int) -> bytes:
    """An RSS feed of single-product deals ($19 .. $898), some cheap enough to alert and some not."""
    entries = []
    for item in range(items):
        price = 19 + (feed * 37 + item * 53) % 880
        link = f"https://shop.example/f{feed}/deal-{item}"
        entries.append(
            f"<item><title>Acme Gadget {feed}-{item} Pro for ${price}</title><link>{link}</link><guid>{link}</guid>"
            f"<description>Acme Gadget {feed}-{item} Pro, brand new.</description></item>"
        )
    return f"<rss version='2.0'><channel><title>deals {feed}</title>{''.join(entries)}</channel></rss>".encode()


def finished(store: Store, entries: int, *, recipients: int) -> bool:
    """Every entry read, every deal priced, every opportunity's alert sent to each recipient (on a shared store)."""
    db = store.db
    seen = db.execute("SELECT COUNT(*) FROM seen_entries").fetchone()[0]
    unpriced = db.execute(
        "SELECT COUNT(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM estimates e WHERE e.deal_key = d.entry_key)"
    ).fetchone()[0]
    opportunities = db.execute("SELECT COUNT(*) FROM opportunities").fetchone()[0]
    sent = db.execute("SELECT COUNT(*) FROM alerts WHERE state = 'sent'").fetchone()[0]
    return seen >= entries and unpriced == 0 and opportunities > 0 and sent == recipients * opportunities


# --------------------------------------------------------------------------- a sensible LLM for the scanner

_ENTRY = re.compile(r"^### Entry id (\d+)\n(.*?)(?=^### Entry id |\Z)", re.S | re.M)
_DOLLARS = re.compile(r"\$\s?(\d[\d,]*(?:\.\d\d)?)")
_NOT_ONE_PRODUCT = re.compile(r"\b(up to|sale|% off|coupon|gift card|from \$|starting at)\b", re.I)


def scanner_reply(request: Recorded) -> dict[str, Any]:
    """Verdicts for the entries in the scanner's prompt, the way a careful model would answer.

    A single-product deal unless the title reads like a sale or roundup; the price is the
    one the feed states, else the first dollar amount in the title; the description is the
    product's name plus its listed details (features), without deal terms.
    """
    verdicts = []
    for number, block in _ENTRY.findall(request.user):
        fields = dict(re.findall(r"^(Title|Price stated by the feed|Details|Retailer): (.*)$", block, re.M))
        title = fields.get("Title", "")
        stated = fields.get("Price stated by the feed")
        found = _DOLLARS.search(title)
        price = float(stated.lstrip("$")) if stated else (float(found.group(1).replace(",", "")) if found else None)
        name = re.split(r"\s+(?:for|at|from)\s+\$|\s+\$|\s+-\s+", title)[0].strip(" ,.")
        details = "; ".join(
            part.strip() for part in fields.get("Details", "").split(";") if part.strip() and not _DOLLARS.search(part)
        )
        one = price is not None and not _NOT_ONE_PRODUCT.search(title)
        verdicts.append(
            {
                "id": int(number),
                "reason": "one product at one price" if one else "a sale or roundup, or no price",
                "single_product_deal": one,
                "currency": "USD",
                "price": price,
                "product_description": f"{name}. {details[:300]}".strip() if one else "",
            }
        )
    return {"entries": verdicts}


# --------------------------------------------------------------------------- a Twilio that trips


class TrippingTwilio(FakeTwilio):
    """The fake Twilio, which can hold its Nth message request until the test has acted.

    `trip(n, stage)`: when the Nth message request (POST) arrives, `tripped` is set and the
    request is held until `release` is set; with stage "received" nothing has been stored
    (the message was never sent), with stage "stored" the message is stored (sent) but the
    reply is held (the daemon never learns it went out). The test kills the daemon while
    the request is held, then sets `release`. Nothing in the code under test knows.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tripped = threading.Event()
        self.release = threading.Event()
        self._trip_at: int | None = None
        self._stage = "received"
        self._posts = 0

    def trip(self, n: int, stage: str = "received") -> None:
        assert stage in ("received", "stored")
        self._trip_at, self._stage, self._posts = n, stage, 0
        self.tripped.clear()
        self.release.clear()

    def _hold(self) -> None:
        self.tripped.set()
        self.release.wait(30)

    def _create(self, handler: Any, record: RecordedRequest, form: dict[str, str]) -> None:
        self._posts += 1
        if self._trip_at == self._posts:
            self._trip_at = None if self._stage == "received" else -1  # -1: trip in _reply
            if self._stage == "received":
                self._hold()
                return  # never stored; the connection dies with the daemon
        super()._create(handler, record, form)

    def _reply(self, handler: Any, record: RecordedRequest, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if self._trip_at == -1 and record.method == "POST" and status == 201:
            self._trip_at = None
            self._hold()
            return  # stored, never answered
        super()._reply(handler, record, status, payload, headers)


# --------------------------------------------------------------------------- homes and configs

_TEMPLATE: dict[str, Path] = {}
_TEMPLATE_LOCK = threading.Lock()


def seeded_home_template(tmp_path_factory: Any) -> Path:
    """A DEALS_HOME whose vector index holds the starter catalogue (built once per session).

    Built by the real CLI in a subprocess (`deals price`, which seeds the index on first
    use and exports the query encoder to ONNX under the home's cache), so the Chroma files
    are complete and closed before they are copied.
    """
    with _TEMPLATE_LOCK:
        if "home" not in _TEMPLATE:
            home = tmp_path_factory.mktemp("seeded-home")
            env = clean_env(home)
            subprocess.run(
                [sys.executable, "-m", "deals", "price", "USB-C charging cable, 6 ft, braided"], env=env, cwd=REPO, check=True, capture_output=True, timeout=300
            )
            _TEMPLATE["home"] = home
        return _TEMPLATE["home"]


def copy_home(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a `deals` subprocess: offline, its own home, no inherited settings or secrets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEALS_", "TWILIO_", "OPENAI_", "ANTHROPIC_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        DEALS_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


__all__ = [
    "FEEDS",
    "FEED_FILES",
    "REPO",
    "TrippingTwilio",
    "clean_env",
    "copy_home",
    "deal_feed",
    "finished",
    "scanner_reply",
    "seeded_home_template",
    "serve_feeds",
    "write_config",
]
