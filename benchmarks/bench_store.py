#!/usr/bin/env python3
"""The store's numbers (issue 11): daemon throughput on PostgreSQL, write and claim latency on both engines.

    .venv/bin/python benchmarks/bench_store.py                        # everything, a throwaway PostgreSQL
    .venv/bin/python benchmarks/bench_store.py --daemons 1 2 --entries 500 --skip-latency
    .venv/bin/python benchmarks/bench_store.py --url postgresql://deals@db:5432/bench --skip-cycles

1. **Cycle throughput** (`--daemons 1 2 4`, `--entries 2000`): that many real `deals run`
   processes on one PostgreSQL store (a fresh schema each), reading the same
   `--entries / 50` generated deal feeds (50 entries each, `feeds.max_entries_per_feed`)
   from a local feed server, scanning and pricing through one OpenAI-compatible fake that
   answers every call after `--llm-ms` (200) milliseconds (the scanner, 10 entries a call;
   the specialist pricer, one deal a call, worth a flat $300), and texting each
   opportunity to one recipient through the Twilio fake. The daemons run with the default
   planner settings (4 LLM batches at once, 100 deals priced per cycle at most) and a cycle
   every 0.6 s. The clock starts when every daemon has registered and finished a first
   cycle over the still-empty feeds (their start-up is not counted) and the feeds are
   published; it stops when every entry is seen, every deal priced and every alert sent.
   Reported: entries/s, the cycles that did work, their p50 seconds, and the LLM calls;
   every deal must have been priced exactly once.
2. **Latency** (`--n 300` operations each, timed one by one, p50/p99 ms), one process, one
   `Store` per engine: the daemon's writes (a deal, 20 entries marked seen, an estimate
   with its opportunity, an alert queued) and its claims (a feed, a batch of 8 deals to
   price, an alert to send; each released again).
3. **Contention** (`--contended-deals 2000`): 4 threads, each with its own `Store` (as 4
   daemons), claim batches of 8 deals until none is left, pricing nothing: claims/s and
   the claim latency they see; no deal may be claimed twice.

SQLite is a WAL file on local disk (synchronous=NORMAL); PostgreSQL is a local server on
127.0.0.1 started with initdb + pg_ctl (tests/fakes/postgres.py: fsync off, so it
measures the store's code and round trips, not the disk) unless --url names one. Printed
as tables and written as JSON (--out, default reports/bench_store.json).

Measured on the repository's 2-core machine (shared, so +-20%), the default command
(3 min 39 s in all; the first two runs agreed within 3%):

    daemons  entries  seconds  entries/s  cycles with work  cycle p50 s  LLM calls  max in flight  SMS
          1     2000     89.2       22.4                20         3.54       2200              8  435
          2     2000     55.2       36.2                20         4.58       2200             16  435
          4     2000     34.6       57.8                20         6.02       2200             32  435

    engine      op                         p50 ms  p99 ms
    sqlite      save_deal                    0.04    0.11
    sqlite      mark_seen x20                0.11    3.60
    sqlite      save_estimate+opportunity    0.08    0.36
    sqlite      enqueue_alert                0.04    0.27
    sqlite      claim feed (+release)        0.07    0.16
    sqlite      claim 8 deals (+release)     0.79    4.32
    sqlite      claim alert (+release)       0.12    2.80
    postgresql  save_deal                    0.20    0.35
    postgresql  mark_seen x20                0.73    4.91
    postgresql  save_estimate+opportunity    0.75    1.39
    postgresql  enqueue_alert                0.39    0.85
    postgresql  claim feed (+release)        0.53    0.85
    postgresql  claim 8 deals (+release)     5.51   11.05
    postgresql  claim alert (+release)       0.83    1.32
    contention (4 claimers, batches of 8, 2000 deals): sqlite 544 claims/s (p50 0.37 ms,
    p99 14.6 ms); postgresql 120 claims/s (p50 2.9 ms, p99 10.6 ms); none claimed twice

The 200 ms LLM calls dominate: a daemon keeps 8 pricing calls in flight (the remote
specialist prices a batch 8 requests at a time; its batches run one after another), so
one daemon needs about 2000 / 8 x 0.2 s = 50 s of pricing plus 10 s of scanning, and
each added daemon adds its 8. Two daemons are 1.6 times as fast, four 2.6 times: the
rest goes to the 2 CPU cores that 4 daemons, PostgreSQL and the fakes share (the cycle
p50 grows from 3.5 to 6 s) and to the cycle interval. The store's own cost is a few
milliseconds a cycle; claiming 8 deals is the dearest call on PostgreSQL (the
candidates' NOT EXISTS scans plus row locks). The first version of the contention run
found 8 of 2,000 deals claimed twice on PostgreSQL (one run in four): fixed in
`Claims.claim_unpriced_deals`, see tests/test_claims.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_FEED = 50  # feeds.max_entries_per_feed (default)
WORTH = 300.0  # what the fake specialist says every product is worth
RECIPIENT, SENDER = "+15551110001", "+15550000000"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(n: int, op: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


# --------------------------------------------------------------------------- 1. cycle throughput


class SlowLLM:
    """The fake LLM's answers, each after `delay_s`; counts who priced and scanned what."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.priced: Counter[str] = Counter()
        self.scans = 0
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        from tests.fakes.daemon import scanner_reply
        from tests.fakes.llm_server import answer

        if request.body.get("model") == "pricer":
            with self._lock:
                self.priced[request.user.strip()[-120:]] += 1
            reply = answer(f"{WORTH:.2f}")(request)
        else:
            with self._lock:
                self.scans += 1
            reply = answer(scanner_reply)(request)
        reply.delay_s = self.delay_s
        return reply


def cycles(url: str, daemons: int, entries: int, delay_s: float, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """`daemons` deals-run processes over `entries` new entries on the store at `url`: the measurements."""
    from deals.memory.store import Store
    from tests.fakes.daemon import REPO, clean_env, deal_feed, finished, write_config
    from tests.fakes.feed_server import FeedServer
    from tests.fakes.llm_server import FakeLLMServer
    from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

    feeds = math.ceil(entries / PER_FEED)
    sizes = [min(PER_FEED, entries - n * PER_FEED) for n in range(feeds)]
    llm_replies = SlowLLM(delay_s)
    home = workdir / "home"
    home.mkdir(parents=True)
    with FeedServer() as feed_server, FakeLLMServer(llm_replies) as llm, FakeTwilio() as twilio, Store(url) as store:
        urls = [feed_server.route(f"/feeds/{n}.xml", body=deal_feed(n, 0), etag='"empty"') for n in range(feeds)]
        config = write_config(
            workdir / "deals.yaml",
            {
                "store": {"url": url, "exclusive": False},
                "feeds": {"urls": urls},
                "llm": {"provider": "openai-compatible", "model": "scanner", "base_url": f"{llm.url}/v1", "max_retries": 0},
                "pricing": {"pricer": "specialist"},
                "specialist": {"base_url": f"{llm.url}/v1", "model": "pricer", "timeout_s": 30},
                "messenger": {"to": [RECIPIENT], "base_url": twilio.url, "daily_cap": 1_000_000, "timeout_s": 10},
                "scheduler": {"interval_minutes": 0.01, "jitter_s": 0},
                "logging": {"level": "WARNING"},
            },
        )
        env = clean_env(home, OPENAI_API_KEY="bench", SPECIALIST_API_KEY="bench", TWILIO_ACCOUNT_SID=ACCOUNT_SID,
                        TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_FROM_NUMBER=SENDER)  # fmt: skip
        logs = [(workdir / f"daemon-{n}.log").open("wb") for n in range(daemons)]
        processes = [
            subprocess.Popen([sys.executable, "-m", "deals", "--config", str(config), "run"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            for log in logs
        ]

        def check(deadline: float, what: str) -> None:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                tail = "\n".join((workdir / f"daemon-{n}.log").read_text(errors="replace")[-2000:] for n in range(daemons))
                raise RuntimeError(f"{daemons} daemon(s): {what} (a daemon exited or time ran out)\n{tail}")

        try:
            deadline = time.monotonic() + 120
            while len(store.workers()) < daemons or store._one("SELECT COUNT(*) FROM runs WHERE status <> 'running'")[0] < daemons:
                check(deadline, "not started")
                time.sleep(0.1)
            first_run = store._one("SELECT MAX(id) FROM runs")[0]
            for n, size in enumerate(sizes):
                feed_server.route(f"/feeds/{n}.xml", body=deal_feed(n, size), etag='"full"')
            start = time.perf_counter()
            deadline = time.monotonic() + timeout_s
            while not finished(store, entries, recipients=1):
                check(deadline, "the work was not finished")
                time.sleep(0.05)
            seconds = time.perf_counter() - start
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)
            for log in logs:
                log.close()
        runs = [r for r in store.recent_runs(100_000) if r.id > first_run and (r.stats.get("new_entries") or r.stats.get("priced"))]
        deals = store._one("SELECT COUNT(*) FROM deals")[0]
        opportunities = store._one("SELECT COUNT(*) FROM opportunities")[0]
    twice = sum(1 for count in llm_replies.priced.values() if count > 1)
    assert len(llm_replies.priced) == deals == entries, (len(llm_replies.priced), deals, entries)
    assert twice == 0, f"{twice} deals priced more than once"
    assert len(twilio.created) == opportunities, (len(twilio.created), opportunities)
    return {
        "daemons": daemons,
        "entries": entries,
        "feeds": feeds,
        "llm_ms": round(delay_s * 1000),
        "seconds": round(seconds, 2),
        "entries_per_s": round(entries / seconds, 1),
        "cycles_with_work": len(runs),
        "cycle_p50_s": round(statistics.median(r.stats["seconds"] for r in runs), 2) if runs else None,
        "llm_calls": llm_replies.scans + sum(llm_replies.priced.values()),
        "llm_max_in_flight": llm.max_in_flight,
        "opportunities": opportunities,
        "sms": len(twilio.created),
        "deals_priced_twice": twice,
    }


# --------------------------------------------------------------------------- 2. latency


def measure(target: str, n: int) -> list[tuple[str, list[float]]]:
    from deals.framework.models import Deal, Estimate, FeedEntry, Opportunity
    from deals.memory.store import Store

    results = []
    with Store(target) as store:
        deal = lambda i: Deal(entry_key=f"d{i}", product_description=f"Acme thing {i}", price=10.0 + i % 50, url=f"https://x/{i}")  # noqa: E731
        results.append(("save_deal", timed(n, lambda i: store.save_deal(deal(i)))))
        results.append(("mark_seen x20", timed(n, lambda i: store.mark_seen(
            [FeedEntry(key=f"s{i}-{j}", feed_url="http://f", title="t", url="u") for j in range(20)]))))  # fmt: skip

        def estimate(i: int) -> None:
            with store.transaction():
                est = Estimate(price=100.0, pricer="bench")
                store.save_estimate(f"d{i}", est, alert_below=60.0, decision="deal")
                store.save_opportunity(Opportunity(deal=deal(i), estimate=est, discount=90.0 - i % 50))

        results.append(("save_estimate+opportunity", timed(n, estimate)))
        opportunities = [row[0] for row in store.db.execute("SELECT id FROM opportunities ORDER BY id").fetchall()]
        results.append(("enqueue_alert", timed(n, lambda i: store.enqueue_alert(opportunities[i % len(opportunities)], RECIPIENT, "x"))))

        def claim_feed(i: int) -> None:
            mine, _ = store.claim_feeds([f"http://feed/{i}"], 1)
            assert mine, "the feed was not claimed"
            store.release_claims("feed", mine)

        results.append(("claim feed (+release)", timed(n, claim_feed)))
        with store.transaction():
            for i in range(n, n + 8 * n):
                store.save_deal(deal(i))

        def claim_deals(i: int) -> None:
            got = store.claim_unpriced_deals(8)
            assert len(got) == 8, len(got)
            store.release_claims("price", [d.entry_key for d in got])
            with store.transaction():  # priced: the next claim takes the next 8
                for d in got:
                    store.save_estimate(d.entry_key, Estimate(price=1.0, pricer="bench"))

        results.append(("claim 8 deals (+release)", timed(n, claim_deals)))
        alerts = [a.id for a in store.alerts(["queued"])]

        def claim_alert(i: int) -> None:
            alert = alerts[i % len(alerts)]
            assert store.claim_alert(alert) == "claimed", "the alert was not claimed"
            store.mark_alert(alert, "queued")  # back, for the next round
            store.release_claims("send", [alert])

        results.append(("claim alert (+release)", timed(n, claim_alert)))
    return results


# --------------------------------------------------------------------------- 3. contention


def contention(target: str, deals: int, claimers: int = 4) -> dict[str, Any]:
    from deals.framework.models import Deal, Estimate
    from deals.memory.store import Store

    with Store(target) as store:
        with store.transaction():
            for i in range(deals):
                store.save_deal(Deal(entry_key=f"c{i:06d}", product_description=f"Contended {i}", price=5.0, url=f"https://c/{i}"))
    latencies: list[float] = []
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(claimers)

    def work() -> None:
        with Store(target) as mine:
            mine.register_worker()  # before the clock starts
            barrier.wait()
            while True:
                start = time.perf_counter()
                got = mine.claim_unpriced_deals(8)
                took = (time.perf_counter() - start) * 1000
                if not got:
                    return
                with mine.transaction():
                    for d in got:
                        mine.save_estimate(d.entry_key, Estimate(price=1.0, pricer="bench"))
                mine.release_claims("price", [d.entry_key for d in got])
                with lock:
                    latencies.append(took)
                    claimed.extend(d.entry_key for d in got)

    threads = [threading.Thread(target=work) for _ in range(claimers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    twice = len(claimed) - len(set(claimed))
    assert twice == 0 and len(claimed) == deals, (len(claimed), twice, deals)
    return {
        "claimers": claimers,
        "deals": deals,
        "claims_per_s": round(len(latencies) / seconds, 1),
        "claim_p50_ms": round(statistics.median(latencies), 2),
        "claim_p99_ms": round(percentile(latencies, 0.99), 2),
        "claimed_twice": twice,
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 4], help="daemon counts to run the throughput with")
    parser.add_argument("--entries", type=int, default=2000, help="new feed entries per throughput run")
    parser.add_argument("--llm-ms", type=float, default=200.0, help="the fake LLM's answer time")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a throughput run may take")
    parser.add_argument("--n", type=int, default=300, help="operations per latency measurement")
    parser.add_argument("--contended-deals", type=int, default=2000)
    parser.add_argument("--url", help="a PostgreSQL database to use (default: start a throwaway server)")
    parser.add_argument("--skip-cycles", action="store_true", help="no throughput runs")
    parser.add_argument("--skip-latency", action="store_true", help="no latency or contention measurements")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_store.json")
    args = parser.parse_args(argv)
    console = Console(width=140)

    server = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    counter = iter(range(1000))
    postgresql: Callable[[], str] | None = None
    if args.url:
        postgresql = lambda: args.url  # noqa: E731
    else:
        from tests.fakes.postgres import PostgresServer, find_binaries

        if find_binaries() is None:
            console.print("PostgreSQL is not installed (apt-get install postgresql): measuring SQLite only")
        else:
            server = PostgresServer.start()
            postgresql = server.new_schema
    targets: list[tuple[str, Callable[[], str]]] = [("sqlite", lambda: str(tmp / f"bench-{next(counter)}.db"))]
    if postgresql is not None:
        targets.append(("postgresql", postgresql))
    result: dict[str, Any] = {"machine_cores": os.cpu_count(), "cycles": [], "latency": [], "contention": {}}
    try:
        if not args.skip_cycles and postgresql is not None:
            table = Table(title=f"cycle throughput on PostgreSQL: {args.entries} new entries, LLM answers in {args.llm_ms:g} ms")
            for column in ("daemons", "entries", "seconds", "entries/s", "cycles with work", "cycle p50 s", "LLM calls", "max in flight", "SMS"):
                table.add_column(column, justify="right")
            for daemons in args.daemons:
                console.print(f"throughput: {daemons} daemon(s) ...")
                row = cycles(postgresql(), daemons, args.entries, args.llm_ms / 1000, tmp / f"cycles-{next(counter)}", args.timeout)
                result["cycles"].append(row)
                table.add_row(*(str(row[k]) for k in ("daemons", "entries", "seconds", "entries_per_s", "cycles_with_work", "cycle_p50_s", "llm_calls", "llm_max_in_flight", "sms")))
            console.print(table)
        if not args.skip_latency:
            table = Table(title=f"store latency, {args.n} operations each")
            for column, justify in (("engine", "left"), ("op", "left"), ("p50 ms", "right"), ("p99 ms", "right")):
                table.add_column(column, justify=justify)  # type: ignore[arg-type]
            for name, make in targets:
                for op, values in measure(make(), args.n):
                    p50, p99 = round(statistics.median(values), 2), round(percentile(values, 0.99), 2)
                    result["latency"].append({"engine": name, "op": op, "p50_ms": p50, "p99_ms": p99})
                    table.add_row(name, op, f"{p50:.2f}", f"{p99:.2f}")
            console.print(table)
            table = Table(title=f"contention: 4 claimers, batches of 8, {args.contended_deals} deals")
            for column in ("engine", "claims/s", "claim p50 ms", "claim p99 ms", "claimed twice"):
                table.add_column(column, justify="right")
            for name, make in targets:
                row = contention(make(), args.contended_deals)
                result["contention"][name] = row
                table.add_row(name, f"{row['claims_per_s']:,.0f}", f"{row['claim_p50_ms']:.2f}", f"{row['claim_p99_ms']:.2f}", str(row["claimed_twice"]))
            console.print(table)
    finally:
        if server is not None:
            server.stop()
    result["command"] = " ".join(["benchmarks/bench_store.py", *argv])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
