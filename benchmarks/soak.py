#!/usr/bin/env python3
"""Soak benchmark: many daemon cycles in one process; memory (RSS) and cycle latency.

    python benchmarks/soak.py [--cycles 1000] [--out reports/soak.json] [--max-growth-mb 16]

The cycles run in this process exactly as the daemon runs them (`Planner.from_settings`:
the real RSS reader, scanner with the real OpenAI SDK, kNN pricer over the starter
catalogue, messenger with the real Twilio SDK, SQLite store), against the local fakes
(feed server, OpenAI-compatible LLM, Twilio) running in a child process, so that what
the fakes record does not count towards this process's memory. Each cycle the feeds
carry fresh entries (the fixture feeds with per-cycle GUIDs and links and a new ETag), so
every cycle reads, scans, prices, stores and texts for real.

Reported: RSS after the first cycle, at checkpoints, and at the end; the growth from the
end of the warm-up to the end and over the second half of the run, and the least-squares
slope (KB per cycle) after warm-up; cycle latency p50/p99/max. Printed as a table and
written as JSON. Exit status 1 when the RSS grew by more than --max-growth-mb after
warm-up (memory must not grow with cycles).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

FEED_FILES = ("dealnews-recent-2026-10.xml", "techbargains-2026-10.xml")
RECIPIENT = "+15551110001"
SENDER = "+15550000000"
_ID = re.compile(r"(<(?:guid|link)[^>]*>\s*)(https?://[^<?\s]+)")


# --------------------------------------------------------------------------- the fakes' process


def fresh_feed(raw: str, cycle: int) -> bytes:
    """The fixture feed with every GUID and link made unique to `cycle`."""
    return _ID.sub(lambda m: f"{m.group(1)}{m.group(2)}/soak-{cycle}", raw).encode("utf-8")


def serve_fakes(conn: Any) -> None:
    """Child process: start the fakes, send their URLs, then publish fresh feeds on request."""
    from tests.fakes.daemon import FEEDS, scanner_reply
    from tests.fakes.feed_server import FeedServer
    from tests.fakes.llm_server import FakeLLMServer, answer
    from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

    raws = {name: (FEEDS / name).read_text(encoding="utf-8") for name in FEED_FILES}
    with FeedServer() as feeds, FakeLLMServer(answer(scanner_reply)) as llm, FakeTwilio() as twilio:
        urls = [feeds.url(f"/{name}") for name in FEED_FILES]
        conn.send({"feeds": urls, "llm": llm.url, "twilio": twilio.url, "sid": ACCOUNT_SID, "token": AUTH_TOKEN})
        while True:
            command, arg = conn.recv()
            if command == "cycle":
                for name in FEED_FILES:
                    feeds.route(f"/{name}", body=fresh_feed(raws[name], arg), etag=f'"{name}-{arg}"')
                conn.send("ok")
            elif command == "stats":
                conn.send({"sms": len(twilio.created), "llm_calls": len(llm.requests), "feed_requests": len(feeds.requests)})
            else:
                conn.send("bye")
                return


# --------------------------------------------------------------------------- measuring


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


def checkpoints(cycles: int) -> list[int]:
    marks = {1, 10, 50, 100, 250, 500, 750, cycles}
    return sorted(m for m in marks if m <= cycles)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "soak.json")
    parser.add_argument("--warmup", type=int, default=50, help="cycles before growth is measured (caches fill, pools grow)")
    parser.add_argument("--max-growth-mb", type=float, default=16.0, help="fail when RSS grows more than this after warm-up")
    parser.add_argument("--home", type=Path, default=None, help="DEALS_HOME to use (default: a fresh temporary one)")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="deals-soak-"))
    os.environ["DEALS_HOME"] = str(home)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fakes = ctx.Process(target=serve_fakes, args=(child,), daemon=True)
    fakes.start()
    try:
        return soak(args, home, parent)
    finally:
        try:
            parent.send(("stop", None))
            parent.recv()
        except (EOFError, OSError):
            pass
        fakes.join(5)


def soak(args: argparse.Namespace, home: Path, conn: Any) -> int:
    from rich.table import Table

    from deals.agents.planner import Planner
    from deals.framework.logs import setup_logging
    from deals.framework.settings import Settings
    from deals.memory.store import Store

    from deals.framework.text import report_console

    console = report_console()
    urls = conn.recv()
    os.environ.update(TWILIO_ACCOUNT_SID=urls["sid"], TWILIO_AUTH_TOKEN=urls["token"], TWILIO_FROM_NUMBER=SENDER)
    setup_logging("WARNING")
    settings = Settings.model_validate(
        {
            "llm": {"provider": "openai-compatible", "model": "soak", "base_url": f"{urls['llm']}/v1", "max_retries": 0},
            "messenger": {"to": [RECIPIENT], "base_url": urls["twilio"], "daily_cap": 1_000_000},
            "feeds": {"urls": urls["feeds"]},
        }
    )
    console.print(f"DEALS_HOME={home}; preparing the index (first use seeds the starter catalogue)...")
    store = Store.open_default()
    planner = Planner.from_settings(settings, store)

    marks = set(checkpoints(args.cycles))
    samples: list[tuple[int, float]] = []
    latencies: list[float] = []
    totals: dict[str, int] = {"entries_read": 0, "deals": 0, "priced": 0, "opportunities": 0, "alerts_sent": 0, "errors": 0}
    bad_cycles = 0
    started = time.perf_counter()
    try:
        for cycle in range(1, args.cycles + 1):
            conn.send(("cycle", cycle))
            conn.recv()
            t0 = time.perf_counter()
            report = planner.run_cycle()
            latencies.append(time.perf_counter() - t0)
            for key in totals:
                totals[key] += int(getattr(report, key))
            if report.status != "ok":
                bad_cycles += 1
                if bad_cycles <= 3:
                    console.print(f"[yellow]cycle {cycle}: {report.summary()}[/yellow]")
            if cycle % 10 == 0 or cycle in marks:
                samples.append((cycle, rss_mb()))
            if cycle in marks:
                console.print(
                    f"cycle {cycle:>5}: RSS {samples[-1][1]:7.1f} MB, last cycle {latencies[-1] * 1000:6.1f} ms, "
                    f"{totals['alerts_sent']} SMS so far"
                )
    finally:
        planner.close()
        store.close()
    wall = time.perf_counter() - started
    conn.send(("stats", None))
    fake_stats = conn.recv()

    rss = dict(samples)
    after = [(c, m) for c, m in samples if c >= args.warmup] or samples
    base_cycle, base_rss = after[0]
    end_rss = samples[-1][1]
    xs = np.array([c for c, _ in after], dtype=float)
    ys = np.array([m for _, m in after], dtype=float)
    slope_kb = float(np.polyfit(xs, ys, 1)[0] * 1024) if len(after) >= 3 else 0.0
    growth = end_rss - base_rss
    half_cycle = min(rss, key=lambda c: abs(c - args.cycles // 2))
    growth_second_half = end_rss - rss[half_cycle]
    flat = growth <= args.max_growth_mb
    result = {
        "cycles": args.cycles,
        "wall_s": round(wall, 1),
        "rss_mb": {str(c): round(rss[c], 1) for c in checkpoints(args.cycles) if c in rss},
        "rss_start_mb": round(samples[0][1], 1),
        "rss_end_mb": round(end_rss, 1),
        "growth_after_warmup_mb": round(growth, 2),
        "warmup_cycles": base_cycle,
        "growth_second_half_mb": round(growth_second_half, 2),
        "slope_kb_per_cycle": round(slope_kb, 3),
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
            "first": round(latencies[0] * 1000, 2),
        },
        "totals": totals,
        "cycles_not_ok": bad_cycles,
        "fakes": fake_stats,
        "max_growth_mb": args.max_growth_mb,
        "memory_flat": flat,
    }

    table = Table(title=f"soak: {args.cycles} cycles in {wall:.0f}s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for cycle, value in result["rss_mb"].items():
        table.add_row(f"RSS after cycle {cycle}", f"{value:.1f} MB")
    table.add_row(f"RSS growth after cycle {base_cycle}", f"{growth:+.2f} MB")
    table.add_row(f"RSS growth from cycle {half_cycle} to {args.cycles}", f"{growth_second_half:+.2f} MB")
    table.add_row("RSS slope after warm-up", f"{slope_kb:+.2f} KB/cycle")
    for name, value in result["latency_ms"].items():
        table.add_row(f"cycle latency {name}", f"{value:.1f} ms")
    for name, value in totals.items():
        table.add_row(name, str(value))
    table.add_row("cycles not ok", str(bad_cycles))
    table.add_row("SMS received by the fake", str(fake_stats["sms"]))
    console.print(table)
    console.print(("[green]memory flat[/green]" if flat else "[red]memory grew[/red]") + f" (limit {args.max_growth_mb} MB)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"written: {args.out}")
    return 0 if flat and bad_cycles == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
