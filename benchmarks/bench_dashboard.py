#!/usr/bin/env python3
"""Dashboard benchmark: page latency over a big store, and cycle time against the size of history.

    python benchmarks/bench_dashboard.py [--deals 100000] [--opportunities 10000] [--requests 30]
                                         [--cycles 5] [--max-p95-ms 200] [--out reports/bench_dashboard.json]

1. **Pages.** A store is filled with `--deals` feed entries (deals, priced, with decisions
   spread as the planner makes them), `--opportunities` opportunities with routes and
   alerts, 90 days of runs (one per 30 minutes) and LLM calls, all through SQL in one
   transaction (seconds). `deals dashboard`'s app is served by uvicorn on 127.0.0.1 in
   this process, and every page is requested `--requests` times with httpx (after one warm-up
   request): p50/p95/max in milliseconds. Lists are the first page and a deep page; the
   Deals page also with a search, a decision, a feed and a date filter. Charts are timed
   cold (first drawing) and warm (cached).
2. **Cycle time.** `--cycles` real planner cycles (the real reader over the fixture feeds
   served on 127.0.0.1 with fresh entries each cycle, the rule scanner, a fast pricer with
   a predictive distribution, the messenger with the real Twilio SDK against the fake
   Twilio) on an empty store, then on the big store: the median cycle seconds of each.

Prints both tables and writes JSON. Exit status 1 when a page's p95 is over --max-p95-ms,
or a cycle on the big store takes more than twice the empty store's plus 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = ("sony samsung lg apple anker logitech dell hp lenovo bose jbl philips dyson ninja instant cuisinart keurig "
         "wireless bluetooth noise canceling headphones earbuds speaker monitor laptop tablet charger cable ssd "
         "router camera vacuum blender air fryer coffee maker drill saw backpack jacket shoes watch tv oled 4k").split()
DECISIONS = ["not cheap enough"] * 70 + ["low confidence"] * 12 + ["too good to be true"] * 3 + ["not a single product"] * 5
FEEDS = [f"https://feeds.example/{name}/rss" for name in ("electronics", "computers", "home", "automotive", "smart-home")]
ALICE = "+15551110001"


def ts(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(path: Path, deals: int, opportunities: int, seed: int = 7) -> dict[str, object]:
    """The big store, written with plain SQL in one transaction; what the pages will be asked for."""
    from deals.memory.store import Store

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    span = timedelta(days=90)
    with Store(path) as store:
        db = store.db
        db.execute("BEGIN IMMEDIATE")
        entries, deal_rows, estimates, opps, alerts, routes = [], [], [], [], [], []
        neighbours = json.dumps([{"id": f"n{i}", "title": f"Catalogue product {i} " + " ".join(rng.sample(WORDS, 6)),
                                  "price": 20.0 + i * 7, "similarity": 0.9 - i * 0.03} for i in range(10)])  # fmt: skip
        quantiles = json.dumps([{"level": q, "price": 50 + 200 * q} for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)])
        opportunity_every = max(1, deals // max(opportunities, 1))
        oid = 0
        for i in range(deals):
            key = f"https://shop.example/item/{i}"
            seen = ts(now - span + span * (i / deals))
            title = " ".join(rng.sample(WORDS, 7)).title() + f" model X{rng.randrange(5000)} for ${rng.randrange(5, 900)}"
            price = round(rng.uniform(5, 900), 2)
            estimate = round(price * rng.uniform(0.8, 2.5), 2)
            is_opp = i % opportunity_every == 0 and oid < opportunities
            decision = "deal" if is_opp else rng.choice(DECISIONS)
            product = f"title:product {rng.randrange(deals // 4)}"
            rejected = decision == "not a single product"
            entries.append((key, rng.choice(FEEDS), title, key, "Shop", round(price * 1.4, 2) if i % 3 == 0 else None, product,
                            None if rejected else price, "rejected" if rejected else "deal", decision,
                            "a sale or roundup" if rejected else None, seen))  # fmt: skip
            if rejected:
                continue
            deal_rows.append((key, title, price, key, seen))
            estimates.append((key, "ensemble", estimate, '{"local": %s, "knn": %s}' % (estimate, estimate * 0.9), "",
                              neighbours if is_opp else "[]", 0, 0, 0, 0.0, seen, estimate * 0.6, estimate * 1.6, 0.8, quantiles,
                              round(estimate * 0.6, 2), decision))  # fmt: skip
            if is_opp:
                oid += 1
                opps.append((oid, key, price, estimate, round(estimate - price, 2), seen))
                routes.append((oid, ALICE, "general opportunity", seen))
                state = "sent" if oid % 20 else rng.choice(["failed", "skipped"])
                alerts.append((oid, oid, ALICE, f"{title[:80]}: ${price}", state, 1, f"SM{oid:032x}" if state == "sent" else None,
                               None if state == "sent" else "daily cap of 10 reached", seen, seen, seen if state == "sent" else None))  # fmt: skip
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", entries)
        db.executemany("INSERT INTO deals (entry_key, description, price, url, created_at) VALUES (?, ?, ?, ?, ?)", deal_rows)
        db.executemany(
            """INSERT INTO estimates (deal_key, pricer, price, parts, note, neighbours, excluded, tokens_in, tokens_out, cost_usd,
                                      created_at, low, high, interval_level, quantiles, alert_below, decision)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            estimates,
        )
        db.executemany("INSERT INTO opportunities (id, deal_key, price, estimate, discount, created_at) VALUES (?, ?, ?, ?, ?, ?)", opps)
        db.executemany("INSERT INTO routes (opportunity_id, recipient, why, created_at) VALUES (?, ?, ?, ?)", routes)
        db.executemany(
            """INSERT INTO alerts (id, opportunity_id, recipient, body, state, attempts, provider_id, last_error, created_at,
                                   updated_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            alerts,
        )
        db.executemany("INSERT INTO seen_entries (key, feed_url, first_seen) VALUES (?, ?, ?)", [(e[0], e[1], e[11]) for e in entries])
        runs = int(span / timedelta(minutes=30))
        stats = json.dumps({"seconds": 4.2, "feeds": 5, "feeds_ok": 5, "entries_read": 40, "new_entries": 12, "deals": 10,
                            "rejected": 2, "priced": 10, "pricing_failed": 0, "opportunities": 1, "alerts_sent": 1,
                            "cost_usd": 0.0012, "feed_entries": {f: 8 for f in FEEDS}})  # fmt: skip
        db.executemany(
            "INSERT INTO runs (started_at, finished_at, status, stats) VALUES (?, ?, 'ok', ?)",
            [(ts(now - span + timedelta(minutes=30 * r)), ts(now - span + timedelta(minutes=30 * r, seconds=4)), stats) for r in range(runs)],
        )
        db.executemany(
            "INSERT INTO llm_calls (at, agent, provider, model, tokens_in, tokens_out, cost_usd, ok) VALUES (?, ?, 'openai', 'gpt-4o-mini', ?, ?, ?, 1)",
            [(ts(now - span * rng.random()), rng.choice(["scanner", "frontier"]), 1500, 400, 0.0005) for _ in range(20_000)],
        )
        for url in FEEDS:
            db.execute("INSERT INTO feeds (url, error_count, last_success_at) VALUES (?, 0, ?)", (url, ts(now)))
        db.execute("COMMIT")
        db.execute("ANALYZE")
        counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("entries", "deals", "opportunities", "alerts", "runs", "llm_calls")}
    return {"counts": counts, "product": entries[len(entries) // 2][6], "opportunity": max(1, oid // 2), "feed": FEEDS[2]}


def serve(settings: object, db: Path) -> tuple[object, str]:
    import socket

    import uvicorn

    from deals.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store_path=db), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def time_pages(base: str, targets: dict[str, object], requests: int) -> list[dict[str, object]]:
    import httpx
    from urllib.parse import quote

    day = (datetime.now(timezone.utc) - timedelta(days=45)).date().isoformat()
    pages = {
        "opportunities": "/opportunities",
        "opportunities page 100": "/opportunities?page=100",
        "opportunity": f"/opportunities/{targets['opportunity']}",
        "opportunities (htmx rows)": "/opportunities?fragment=1",
        "deals": "/deals",
        "deals page 1000": "/deals?page=1000",
        "deals search": "/deals?q=noise+canceling",
        "deals search (rare)": "/deals?q=model+x4999+for",
        "deals decision": "/deals?decision=low+confidence",
        "deals feed": "/deals?feed=" + quote(str(targets["feed"]), safe=""),
        "deals one day": f"/deals?since={day}&until={day}",
        "product history": "/product?key=" + quote(str(targets["product"]), safe=""),
        "feeds": "/feeds",
        "alerts": "/alerts",
        "alerts failed": "/alerts?state=failed",
        "costs": "/costs?days=90",
        "runs": "/runs",
        "runs page 50": "/runs?page=50",
        "watches": "/watches",
        "settings": "/settings",
    }
    charts = {"chart estimates": "/charts/estimates.svg", "chart costs": "/charts/costs.svg?days=90",
              "chart history": "/charts/history.svg?key=" + quote(str(targets["product"]), safe="")}  # fmt: skip
    out = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for name, path in {**pages, **charts}.items():
            start = time.perf_counter()
            first = client.get(path, headers={"hx-request": "true"})
            cold = (time.perf_counter() - start) * 1000
            assert first.status_code == 200, (path, first.status_code, first.text[:300])
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                response = client.get(path, headers={"hx-request": "true"})
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            out.append({"page": name, "path": path, "first_ms": round(cold, 1), "p50_ms": round(statistics.median(times), 1),
                        "p95_ms": round(p95, 1), "max_ms": round(times[-1], 1), "bytes": len(response.content)})  # fmt: skip
    return out


# --------------------------------------------------------------------------- cycles


_ID = re.compile(r"(<(?:guid|link)[^>]*>\s*)(https?://[^<?\s]+)")


def time_cycles(db: Path, cycles: int, label: str) -> list[float]:
    """Real planner cycles over fresh fixture entries; seconds per cycle."""
    from deals.agents.messenger import Messenger
    from deals.agents.planner import Planner
    from deals.agents.rss_reader import RssReader
    from deals.agents.scanner import Scanner
    from deals.framework.models import Estimate, Quantile
    from deals.framework.settings import Settings
    from deals.memory.store import Store
    from deals.pricer.base import Pricer
    from tests.fakes.daemon import FEEDS as FIXTURES
    from tests.fakes.feed_server import FeedServer
    from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

    class Fast(Pricer):
        name = "fast"
        thread_safe = True

        def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
            value = 40.0 + len(description) % 300
            q = [Quantile(level=level, price=value * f) for level, f in ((0.05, 0.5), (0.25, 0.8), (0.5, 1.0), (0.75, 1.25), (0.95, 2.0))]
            return Estimate(price=value, pricer=self.name, low=value * 0.6, high=value * 1.7, interval_level=0.8, quantiles=q)

    names = ("dealnews-recent-2026-10.xml", "techbargains-2026-10.xml")
    raw = {n: (FIXTURES / n).read_text(encoding="utf-8") for n in names}
    seconds = []
    with FeedServer() as feeds, FakeTwilio() as twilio, Store(db) as store:
        settings = Settings.model_validate({"messenger": {"to": [ALICE], "base_url": twilio.url, "retry_base_s": 0, "daily_cap": 1000}})
        env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": "+15550000000"}
        planner = Planner(settings, store, reader=RssReader(settings), scanner=Scanner(settings), pricer=Fast(),
                          messenger=Messenger(settings, store, environ=env))  # fmt: skip
        try:
            for cycle in range(cycles):
                urls = []
                for name in names:
                    body = _ID.sub(lambda m: f"{m.group(1)}{m.group(2)}/{label}-{cycle}", raw[name]).encode()  # noqa: B023
                    urls.append(feeds.route(f"/{label}/{cycle}/{name}", body=body))
                report = planner.run_cycle(urls)
                assert report.status in ("ok", "partial"), report.error_messages
                seconds.append(report.seconds)
        finally:
            planner.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--opportunities", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--max-p95-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_dashboard.json")
    args = parser.parse_args(argv)

    from deals.framework.settings import Settings

    with tempfile.TemporaryDirectory(prefix="deals-bench-dashboard-") as tmp:
        big = Path(tmp) / "big.db"
        start = time.perf_counter()
        targets = fill(big, args.deals, args.opportunities)
        print(f"store filled in {time.perf_counter() - start:.1f}s: {targets['counts']}; {big.stat().st_size / 1e6:.0f} MB", flush=True)
        server, base = serve(Settings(), big)
        try:
            pages = time_pages(base, targets, args.requests)
        finally:
            server.should_exit = True  # type: ignore[attr-defined]
        print(f"\n{'page':28} {'first':>8} {'p50':>8} {'p95':>8} {'max':>8}  (ms, {args.requests} requests each; 2-core machine: os.cpu_count()={os.cpu_count()})")
        for row in pages:
            print(f"{row['page']:28} {row['first_ms']:8.1f} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['max_ms']:8.1f}")
        empty = Path(tmp) / "empty.db"
        small = time_cycles(empty, args.cycles, "empty")
        large = time_cycles(big, args.cycles, "big")
        print(f"\ncycle seconds (median of {args.cycles}; 2 fixture feeds, fresh entries each cycle):")
        print(f"  empty store: {statistics.median(small):.3f}s {small}")
        print(f"  {args.deals:,} deals / {args.opportunities:,} opportunities: {statistics.median(large):.3f}s {large}")
    slow = [r["page"] for r in pages if r["p95_ms"] > args.max_p95_ms and not str(r["page"]).startswith("chart")]
    grew = statistics.median(large) > 2 * statistics.median(small) + 0.5
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"store": targets["counts"], "pages": pages, "cycle_seconds": {"empty": small, "big": large}}, indent=2))
    print(f"\nwritten to {args.out}")
    if slow:
        print(f"FAIL: p95 over {args.max_p95_ms:g} ms: {', '.join(map(str, slow))}")
    if grew:
        print("FAIL: the cycle time grew with the size of history")
    return 1 if slow or grew else 0


if __name__ == "__main__":
    sys.exit(main())
