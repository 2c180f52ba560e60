#!/usr/bin/env python3
"""One daemon cycle under a slow LLM: how long it takes, and how it scales with entries.

    python benchmarks/bench_scanner.py [--entries 50 200] [--llm-delay-s 1.0] [--concurrency 1 4]

Each run is one real cycle (`Planner.from_settings`: the RSS reader over HTTP, the scanner
with the real OpenAI SDK, the default ensemble pricer, i.e. kNN + ridge over the starter
catalogue + the frontier LLM pricer, the messenger with the real Twilio SDK, the SQLite
store) against local fakes on 127.0.0.1: a feed server, an OpenAI-compatible server that
answers EVERY call after `--llm-delay-s` (scanner batches and frontier prices alike), and
Twilio. The feeds are the repository's real fixture items (DealNews, TechBargains), copied
with fresh links until there are N entries, split over two feeds.

For each N and each `planner.concurrency` (the bound on scanner batches in flight, the same
bound the pricers run under) it prints the cycle's wall time, the time until the scan was
done, the LLM calls of each agent, and the deals, prices and alerts. Measured, not asserted.

On the 2-core development machine (1 s per LLM call; frontier.concurrency 4):

    entries  planner.concurrency  cycle s  until scanned s  scanner calls  frontier calls  deals
         50                    1    15.8         4.2              4              40           40
         50                    4    13.5         1.1              4              40           40
        200                    1    62.1        17.1             16             156          156
        200                    4    50.1         4.4             16             156          156

The scan now costs about one LLM round per `planner.concurrency` batches; what remains is
the frontier pricing the deals `frontier.concurrency` at a time (40 deals: ~10 rounds).
With `--frontier-concurrency 8` the 50-entry cycle takes 8.8 s (scan 1.1 s).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

SOURCES = ("dealnews-recent-2026-10.xml", "techbargains-2026-10.xml")  # single-product deals, mostly
RECIPIENT = "+15551110001"
SENDER = "+15550000000"
_ITEM = re.compile(rb"<item>.*?</item>", re.S)
_ID = re.compile(rb"(<(?:guid|link)[^>]*>\s*)(https?://[^<?\s]+)")
_TITLE = re.compile(rb"(<title>)")


def make_feeds(entries: int, run: str) -> list[bytes]:
    """Two RSS documents holding `entries` items between them: copies of the fixture items
    with unique links and a lot number before the title (so each is a product of its own,
    priced afresh rather than from the frontier's cache)."""
    from tests.fakes.daemon import FEEDS

    items: list[bytes] = []
    for name in SOURCES:
        items += _ITEM.findall((FEEDS / name).read_bytes())
    chosen = []
    for index in range(entries):
        item = items[index % len(items)]
        item = _ID.sub(lambda m, i=index: m.group(1) + m.group(2) + f"/{run}-{i}".encode(), item)
        chosen.append(_TITLE.sub(f"<title>Lot {index}: ".encode(), item, count=1))
    head = b'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:dealnews="https://www.dealnews.com/"><channel><title>bench</title>'
    half = (len(chosen) + 1) // 2
    return [head + b"".join(part) + b"</channel></rss>" for part in (chosen[:half], chosen[half:])]


def llm_responder(delay_s: float) -> Any:
    """Scanner prompts get a careful model's verdicts, frontier prompts a price; every call waits `delay_s`."""
    from tests.fakes.daemon import scanner_reply
    from tests.fakes.llm_server import answer

    def content(request: Any) -> Any:
        if "### Entry id" in request.user:
            return scanner_reply(request)
        return {"price": 99.0}

    reply = answer(content, tokens_in=800, tokens_out=40)

    def respond(request: Any) -> Any:
        out = reply(request)
        out.delay_s = delay_s
        return out

    return respond


def one_cycle(entries: int, concurrency: int, delay_s: float, seeded: Path, frontier_concurrency: int | None = None) -> dict[str, Any]:
    import shutil

    from deals.agents.planner import Planner
    from deals.framework.settings import Settings
    from deals.memory.store import Store
    from tests.fakes.feed_server import FeedServer
    from tests.fakes.llm_server import FakeLLMServer
    from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

    home = Path(tempfile.mkdtemp(prefix="deals-bench-scan-"))
    shutil.copytree(seeded, home, dirs_exist_ok=True)
    os.environ["DEALS_HOME"] = str(home)
    os.environ.update(TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER=SENDER)
    with FeedServer() as feeds, FakeLLMServer(llm_responder(delay_s)) as llm, FakeTwilio() as twilio:
        urls = [feeds.route(f"/feed{i}.xml", body=body) for i, body in enumerate(make_feeds(entries, f"c{concurrency}"))]
        settings = Settings.model_validate(
            {
                "llm": {"provider": "openai-compatible", "model": "bench", "base_url": f"{llm.url}/v1", "max_retries": 0,
                        "timeout_s": delay_s * 10},
                "planner": {"concurrency": concurrency, "max_deals_per_cycle": 1000},
                "frontier": {"concurrency": frontier_concurrency or Settings().frontier.concurrency},
                "feeds": {"urls": urls, "max_entries_per_feed": 1000},
                "messenger": {"to": [RECIPIENT], "base_url": twilio.url, "daily_cap": 1_000_000},
            }
        )  # fmt: skip
        scan_done: list[float] = []
        with Store.open_default() as store:
            planner = Planner.from_settings(settings, store)
            scan = planner.scanner.scan

            def timed_scan(*args: Any, **kwargs: Any) -> Any:
                result = scan(*args, **kwargs)
                scan_done.append(time.perf_counter())
                return result

            planner.scanner.scan = timed_scan  # type: ignore[method-assign]  # a stopwatch, not a change
            try:
                started = time.perf_counter()
                report = planner.run_cycle()
                wall = time.perf_counter() - started
            finally:
                planner.close()
        scanner_calls = sum(1 for r in llm.requests if "### Entry id" in r.user)
        return {
            "entries": report.entries_read,
            "concurrency": concurrency,
            "frontier_concurrency": frontier_concurrency or Settings().frontier.concurrency,
            "cycle_s": round(wall, 2),
            "until_scanned_s": round(scan_done[0] - started, 2) if scan_done else None,
            "scanner_calls": scanner_calls,
            "frontier_calls": len(llm.requests) - scanner_calls,
            "max_llm_in_flight": llm.max_in_flight,
            "deals": report.deals,
            "priced": report.priced,
            "alerts": report.alerts_sent,
            "status": report.status,
        }


def seed_home() -> Path:
    """A DEALS_HOME with the starter index seeded and the ONNX encoder exported (built once)."""
    from deals.framework.settings import Settings
    from deals.pricer.base import create_pricer

    home = Path(tempfile.mkdtemp(prefix="deals-bench-seed-"))
    os.environ["DEALS_HOME"] = str(home)
    import deals.agents  # noqa: F401 - registers the ensemble

    pricer = create_pricer("ensemble", Settings())
    try:
        pricer.price("USB-C charging cable, 6 ft, braided")
    finally:
        pricer.close()
    return home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--llm-delay-s", type=float, default=1.0)
    parser.add_argument("--frontier-concurrency", type=int, default=None, help="frontier.concurrency (default: the setting's default)")
    args = parser.parse_args()

    from rich.console import Console
    from deals.framework.text import report_console
    from rich.table import Table

    from deals.framework.logs import setup_logging

    setup_logging("WARNING")
    console = report_console()
    console.print("seeding a DEALS_HOME with the starter catalogue (once) ...")
    seeded = seed_home()
    rows = []
    for entries in args.entries:
        for concurrency in args.concurrency:
            console.print(f"{entries} entries, planner.concurrency={concurrency}, every LLM call {args.llm_delay_s:g}s ...")
            rows.append(one_cycle(entries, concurrency, args.llm_delay_s, seeded, args.frontier_concurrency))
    table = Table(title=f"one cycle, the LLM answering each call in {args.llm_delay_s:g}s")
    for column in rows[0]:
        table.add_column(column.replace("_", " "), justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(str(row[c]) for c in rows[0]))
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
