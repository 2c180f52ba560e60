"""The planner agent: one daemon cycle, wiring reader -> scanner -> pricer -> messenger.

    Planner(settings, store, reader=..., scanner=..., pricer=..., messenger=...).run_cycle()

One cycle, each step writing to the memory store before the next begins, so that a crash
(or SIGKILL) at any point loses nothing and repeats nothing visible to the user:

1. **read**: feed states from the store -> `reader.read` (conditional GET, backoff) over
   `feeds.urls` plus the feeds added from the dashboard, less those disabled;
2. **scan**: the entries never seen before -> `scanner.scan` -> deals;
3. **store**: in ONE transaction, the deals, the entries marked seen (and recorded with
   what the scanner made of them: the Deals page and price history, `deals.memory.history`),
   and the feeds' new states (ETag / Last-Modified). Committing the validators together with the entries
   they covered matters: saved earlier, a crash during the scan would turn the next
   fetch into a 304 and the entries would never be read again. A crash before this
   commit re-reads and re-scans the same entries next cycle; after it, nothing is redone;
4. **price**: the oldest stored deals without an estimate (`store.claim_unpriced_deals`: new
   ones and any left by an interrupted cycle, stored in the last `planner.price_within_days`
   days, an index range, so the step does not slow down as history grows), at most
   `planner.max_deals_per_cycle`,
   batched through `pricer.price_many` (a batch that fails is retried item by item, so
   one bad deal costs only itself); pricers that declare `thread_safe = True` run
   `planner.concurrency` batches at once on a thread pool, the others (the kNN pricer:
   a shared embedding model and Chroma client) run their batches one after another.
   A deal whose pricing failed `planner.max_pricing_attempts` times is given up (the
   count lives in the store, so it survives restarts);
5. **decide** (`deals.pricer.alerts`): an opportunity is an offer that is a real deal
   (saves at least `planner.min_discount_abs` dollars AND at least
   `planner.min_discount_rel` of what the product is worth) with probability at least
   `planner.confidence` under the estimate's predictive distribution. Each estimate is
   stored with the decision and its reason ("deal", "not cheap enough", "low
   confidence": the point estimate alone would have alerted, "too good to be true": a
   saving so deep the estimate is the likelier error) and its opportunity, in one
   transaction: a deal with an estimate but a lost opportunity cannot happen. The deal is
   routed to recipients there too (`deals.agents.watchlist`: general opportunities to those
   without watches, watch and target-price matches to their recipient, whatever the
   general decision); a deal some watch wants is an opportunity, and its routes are stored
   with it;
6. **notify**: the new opportunities go to `messenger.notify`, which also delivers
   whatever an earlier cycle left pending (its outbox reconciles, recovers opportunities
   without alerts and resends nothing already sent).

The cycle's LLM calls, tokens and dollars are counted for every agent that made them
(scanner, frontier pricer, ...) from the process-wide meter of `deals.framework.llm.usage`.

Several daemons on one store share the work through claims (`deals.memory.claims`): a
feed is read, scanned and stored by one daemon at a time (steps 1-3 run per group of
claimed feeds; each daemon claims its share, the feeds not yet claimed divided by the
live daemons, and comes back for more), a deal is priced by one daemon at a time
(step 4 claims its deals; a deal whose pricing failed stays claimed until the step
ends, so it is retried next cycle, not at once), and an alert is sent by one (the
messenger). Alone, a daemon claims everything in one go: the cycle is the one above.

A failure in one feed, batch, deal or step is logged, counted in the `CycleReport` and
skipped; the cycle goes on and completes. `should_stop()` (the daemon's shutdown flag) is
checked between steps and between pricing batches: the cycle then ends early with
status "stopped", everything done so far stored, the rest picked up next time. On
shutdown the network requests in flight raise `Cancelled` (deals.framework.deadline):
the step they were in is abandoned before its transaction (its work is redone next
cycle) and the run is recorded as "stopped" at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from deals.framework.agent import Agent
from deals.framework.errors import Cancelled
from deals.framework.llm.usage import METER
from deals.framework.models import Deal, Estimate, FeedState, Opportunity, utcnow
from deals.agents.watchlist import Watchlist
from deals.memory.history import PRICING_FAILED
from deals.pricer.alerts import AlertRule, alert_below, alerts_at, is_real_deal, point_alert_below

if TYPE_CHECKING:
    from deals.agents.messenger import Messenger
    from deals.agents.rss_reader import ReadResult, RssReader
    from deals.agents.scanner import Scanner
    from deals.framework.settings import Settings
    from deals.memory.store import Store
    from deals.pricer.base import Pricer

MAX_ERROR_MESSAGES = 20
ERROR_CHARS = 200
MAX_BATCH = 32

CycleStatus = Literal["ok", "partial", "failed", "stopped"]


class CycleReport(BaseModel):
    """What one cycle did: the numbers the cycle log line and the `runs` table show."""

    run_id: int | None = None
    status: CycleStatus = "ok"
    started_at: datetime | None = None
    seconds: float = 0.0
    feeds: int = Field(0, description="feeds asked for this cycle")
    feeds_ok: int = Field(0, description="read, or not modified since last time")
    feeds_failed: int = 0
    feeds_skipped: int = Field(0, description="left alone: in backoff after earlier failures")
    feeds_unhealthy: int = 0
    feeds_elsewhere: int = Field(0, description="being read by another daemon on the same store (not counted above)")
    feed_entries: dict[str, int] = Field(default_factory=dict, description="entries read per feed this cycle")
    entries_read: int = 0
    new_entries: int = Field(0, description="entries never seen before")
    deals: int = Field(0, description="new deals the scanner found")
    rejected: int = Field(0, description="new entries that are not single-product deals")
    priced: int = 0
    pricing_failed: int = 0
    opportunities: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0
    alerts_waiting: int = Field(0, description="queued or outcome unknown: delivered by a later cycle")
    alerts_skipped: int = 0
    llm_calls: int = Field(0, description="LLM calls of this cycle, every agent (failed ones too)")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    error_messages: list[str] = Field(default_factory=list, description=f"the first {MAX_ERROR_MESSAGES}, shortened")

    def add_error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_messages) < MAX_ERROR_MESSAGES:
            text = " ".join(str(message).split())
            self.error_messages.append(text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "...")

    @property
    def ok(self) -> bool:
        """The cycle ran to its end (item errors allowed)."""
        return self.status in ("ok", "partial", "stopped")

    def summary(self) -> str:
        """One line for the cycle log."""
        feeds = f"{self.feeds_ok}/{self.feeds} feeds ok"
        if self.feeds_failed or self.feeds_skipped or self.feeds_unhealthy:
            feeds += f" ({self.feeds_failed} failed, {self.feeds_skipped} in backoff, {self.feeds_unhealthy} unhealthy)"
        if self.feeds_elsewhere:
            feeds += f", {self.feeds_elsewhere} read by another daemon"
        text = (
            f"cycle {self.run_id} {self.status}: {feeds}; {self.entries_read} entries read, {self.new_entries} new; "
            f"{self.deals} deals ({self.rejected} rejected); {self.priced} priced ({self.pricing_failed} failed); "
            f"{self.opportunities} opportunities; alerts {self.alerts_sent} sent, {self.alerts_failed} failed, "
            f"{self.alerts_waiting} waiting, {self.alerts_skipped} skipped; "
            f"LLM {self.llm_calls} calls {self.tokens_in}/{self.tokens_out} tokens ${self.cost_usd:.4f}; "
            f"{self.errors} errors; {self.seconds:.2f}s"
        )
        if self.error_messages:
            text += " | first error: " + self.error_messages[0]
        return text

    def stats(self) -> dict[str, Any]:
        """What is stored in the `runs` row."""
        return self.model_dump(mode="json", exclude={"run_id", "started_at"})


is_opportunity = is_real_deal  # the thresholds, at a known value


class Decision(BaseModel):
    """What the planner made of a priced deal."""

    alert: bool
    alert_below: float = Field(description="highest price at which this estimate makes the deal an alert (0: none)")
    reason: Literal["deal", "not cheap enough", "low confidence", "too good to be true"]


class Planner(Agent):
    """Runs cycles: read, scan, store, price, decide, notify."""

    name = "planner"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        reader: RssReader,
        scanner: Scanner,
        pricer: Pricer,
        messenger: Messenger,
        clock: Callable[[], datetime] = utcnow,
        should_stop: Callable[[], bool] | None = None,
        max_pricing_attempts: int | None = None,
    ) -> None:
        super().__init__(settings)
        self.config = settings.planner
        self.rule = AlertRule.from_settings(settings.planner)
        self.store = store
        self.reader = reader
        self.scanner = scanner
        self.pricer = pricer
        self.messenger = messenger
        self.clock = clock
        self.should_stop = should_stop or (lambda: False)
        self.max_pricing_attempts = max_pricing_attempts or settings.planner.max_pricing_attempts
        self._fresh: list[tuple[int, Opportunity]] = []  # this cycle's new opportunities, for notify
        self._lock = threading.Lock()  # one cycle at a time
        self._owned: list[Any] = []  # clients built by from_settings, closed by close()
        self._watchlist = Watchlist([], self.rule)  # reloaded by every pricing step
        self._facts: dict[str, Any] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: Store,
        *,
        should_stop: Callable[[], bool] | None = None,
        pricer: Pricer | None = None,
        **kwargs: Any,
    ) -> Planner:
        """The daemon's planner: the configured reader, scanner (LLM or rules), pricer and messenger."""
        from deals.agents.messenger import Messenger
        from deals.agents.rss_reader import RssReader
        from deals.agents.scanner import Scanner
        from deals.pricer.base import create_pricer

        built: list[Any] = []
        try:
            llm = None
            if settings.llm.provider != "none":  # the SDKs take seconds to import: only when used
                from deals.framework.llm import make_llm

                llm = make_llm(settings.llm)
            if llm is not None:
                built.append(llm)
            reader = RssReader(settings)
            built.append(reader)
            scanner = Scanner(settings, llm=llm)
            messenger = Messenger(settings, store)
            built.append(messenger)
            if pricer is None:
                pricer = create_pricer(settings.pricing.pricer, settings)
        except BaseException:
            for part in built:
                part.close()
            raise
        planner = cls(
            settings, store, reader=reader, scanner=scanner, pricer=pricer, messenger=messenger, should_stop=should_stop, **kwargs
        )
        if llm is not None:
            planner._owned.append(llm)
        return planner

    # ------------------------------------------------------------------ the cycle

    def run_cycle(self, feed_urls: Sequence[str] | None = None) -> CycleReport:
        """Run one cycle over `feed_urls` (default: `feeds.urls`); never raises for item failures.

        An unexpected error in a step is logged and counted and the cycle goes on with
        the next step; `Cancelled` (shutdown) ends it as "stopped"; only
        `KeyboardInterrupt`/`SystemExit` escape (the run is recorded as failed first).
        """
        if feed_urls is None:  # the configured feeds, with those added or disabled from the dashboard
            feed_urls = self.store.effective_feed_urls(self.settings.feeds.urls)
        urls = list(dict.fromkeys(feed_urls))
        with self._lock:
            started = time.perf_counter()
            usage_before = METER.snapshot()
            report = CycleReport(started_at=self.clock(), feeds=len(urls))
            report.run_id = self.store.start_run()
            crashed = False
            try:
                self._cycle(urls, report)
            except Cancelled:
                report.status = "stopped"
                self.log.info("cycle %s: shutdown requested; the step in progress was abandoned", report.run_id)
            except BaseException as exc:
                crashed = True
                report.status = "failed"
                report.add_error(f"cycle interrupted: {type(exc).__name__}: {exc}")
                raise
            finally:
                if not crashed and report.status == "ok":
                    if report.feeds and not (report.feeds_ok or report.feeds_elsewhere):
                        report.status = "failed"  # no feed could be read (failed, or in backoff): `run --once` exits 1
                        report.add_error("no feed could be read")
                    elif report.errors:
                        report.status = "partial"
                report.seconds = round(time.perf_counter() - started, 3)
                used = METER.snapshot() - usage_before
                report.llm_calls, report.tokens_in, report.tokens_out = used.calls, used.tokens_in, used.tokens_out
                report.cost_usd = round(used.cost_usd, 6)
                try:
                    self.store.finish_run(report.run_id, report.status, report.stats())
                except Exception:  # noqa: BLE001 - the report still goes back to the caller
                    self.log.exception("cycle %s: could not record the run", report.run_id)
        return report

    def _cycle(self, urls: list[str], report: CycleReport) -> None:
        steps: list[tuple[str, Callable[[CycleReport], Any]]] = [
            ("ingest", lambda r: self._ingest(urls, r)),
            ("price", self._price),
            ("notify", self._notify),
        ]
        self._fresh = []
        for name, step in steps:
            if self.should_stop():
                if report.status != "failed":
                    report.status = "stopped"
                self.log.info("cycle %s: stopping before %s (shutdown requested)", report.run_id, name)
                return
            try:
                step(report)
            except Exception as exc:  # noqa: BLE001 - one step must not stop the others
                report.status = "failed"
                report.add_error(f"{name}: {type(exc).__name__}: {exc}")
                self.log.exception("cycle %s: step %s failed; going on with the next", report.run_id, name)

    # ------------------------------------------------------------------ read, scan, store

    def _is_new(self, key: str) -> bool:
        return bool(self.store.unseen([key]))

    def _ingest(self, urls: list[str], report: CycleReport) -> None:
        """Read, scan and store the feeds, a claimed group at a time (all of them when this daemon is alone)."""
        remaining = list(urls)
        while remaining:
            if self.should_stop():
                return
            share = math.ceil(len(remaining) / self.store.live_workers())
            mine, others = self.store.claim_feeds(remaining, share)
            report.feeds_elsewhere += sum(1 for url in remaining if url in others)
            remaining = [url for url in remaining if url not in others and url not in mine]
            if not mine:
                return
            try:
                self._ingest_feeds(mine, report)
            finally:
                self.store.release_claims("feed", mine)

    def _ingest_feeds(self, urls: list[str], report: CycleReport) -> None:
        states: dict[str, FeedState] = {s.url: s for s in self.store.feed_states() if s.url in urls}
        read: ReadResult = self.reader.read(urls, states, is_new=self._is_new)
        self._count_feeds(read, report)
        report.entries_read += len(read.entries)
        unseen = set(self.store.unseen([e.key for e in read.entries]))
        new = [e for e in read.entries if e.key in unseen]
        report.new_entries += len(new)
        deals: list[Deal] = []
        rejections: dict[str, str] = {}
        if new:
            try:
                scan = self.scanner.scan(new)
            except Exception as exc:  # noqa: BLE001
                # Entries stay unseen and the feeds' validators unsaved: all of it is read
                # and scanned again next cycle. Failed feeds still count their failure.
                report.add_error(f"scan: {type(exc).__name__}: {exc}")
                self.log.exception("cycle %s: the scanner failed; %d entries wait for the next cycle", report.run_id, len(new))
                failed = {r.url for r in read.feed_results if r.status == "error"}
                with self.store.transaction():
                    for url in failed:
                        self.store.save_feed_state(read.states[url])
                return
            deals = scan.deals
            rejections = scan.rejections
            report.deals += len(deals)
            report.rejected += scan.rejected
            for message in scan.errors:
                report.add_error(f"scan: {message}")
        with self.store.transaction():
            for deal in deals:
                self.store.save_deal(deal)
            self.store.mark_seen(new)
            self.store.record_entries(new, deals, rejections)  # what each entry was: the Deals page, price history
            for state in read.states.values():
                self.store.save_feed_state(state)
        if deals:
            self.log.info("cycle %s: %d new deals stored from %d new entries", report.run_id, len(deals), len(new))

    @staticmethod
    def _count_feeds(read: ReadResult, report: CycleReport) -> None:
        for result in read.feed_results:
            report.feed_entries[result.url] = result.entries
            if result.status in ("ok", "not_modified"):
                report.feeds_ok += 1
            elif result.status == "skipped_backoff":
                report.feeds_skipped += 1
            else:
                report.feeds_failed += 1
                report.add_error(f"feed {result.url}: {result.error}")
            if result.unhealthy:
                report.feeds_unhealthy += 1

    # ------------------------------------------------------------------ price and decide

    def _price_since(self) -> datetime:
        """Deals stored before this (by the store's clock) are no longer priced: `planner.price_within_days`.

        Older offers are likely gone, and looking at them would make every cycle as slow as the
        whole history is long."""
        return self.store.clock() - timedelta(days=self.config.price_within_days)

    def _price(self, report: CycleReport) -> None:
        """Price the deals this daemon claims (its share at a time), at most `planner.max_deals_per_cycle`.

        Only deals stored in the last `planner.price_within_days` days are claimed (see `_price_since`).
        """
        budget = self.config.max_deals_per_cycle
        since = self._price_since()
        claimed: list[str] = []
        try:
            while budget > 0 and not self.should_stop():
                chunk = math.ceil(budget / self.store.live_workers())
                todo = self.store.claim_unpriced_deals(chunk, since=since, max_attempts=self.max_pricing_attempts)
                if not todo:
                    return
                if not claimed:
                    self._watchlist = Watchlist.load(self.settings, self.store)  # watches added since the last cycle count
                claimed += [deal.entry_key for deal in todo]
                budget -= len(todo)
                self._price_deals(todo, report)
        finally:
            # priced deals gave their claims up when stored; failed ones wait for the next cycle
            self.store.release_claims("price", claimed)

    def _price_deals(self, todo: list[Deal], report: CycleReport) -> None:
        self._facts = self.store.entry_facts([deal.entry_key for deal in todo])
        safe = self.pricer.thread_safe
        workers = min(self.config.concurrency, len(todo)) if safe else 1
        size = max(1, min(MAX_BATCH, math.ceil(len(todo) / max(workers, 1))))
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        if workers <= 1:
            for index, batch in enumerate(batches):
                if self.should_stop():
                    left = sum(len(b) for b in batches[index:])
                    self.log.info("cycle %s: shutdown requested; %d deals left unpriced for next time", report.run_id, left)
                    break
                self._record(self._price_batch(batch), report)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deals-price") as pool:
            futures = [pool.submit(self._price_batch, batch) for batch in batches]
            for future in as_completed(futures):
                self._record(future.result(), report)

    def _price_batch(self, batch: list[Deal]) -> list[tuple[Deal, Estimate | Exception]]:
        """Estimates for a batch; when the batch call fails, each deal alone (so one bad deal costs only itself)."""
        if self.should_stop():
            return []
        texts = [d.product_description for d in batch]
        try:
            estimates = self.pricer.price_many(texts)
            if len(estimates) != len(batch):
                raise ValueError(f"the pricer returned {len(estimates)} estimates for {len(batch)} deals")
            return list(zip(batch, estimates, strict=True))
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                return [(batch[0], exc)]
            self.log.warning("pricing a batch of %d failed (%s); pricing them one by one", len(batch), exc)
        out: list[tuple[Deal, Estimate | Exception]] = []
        for deal in batch:
            try:
                out.append((deal, self.pricer.price(deal.product_description)))
            except Exception as exc:  # noqa: BLE001
                out.append((deal, exc))
        return out

    def _record(self, results: list[tuple[Deal, Estimate | Exception]], report: CycleReport) -> None:
        """Store each estimate with its opportunity (one transaction per deal)."""
        for deal, outcome in results:
            if isinstance(outcome, Exception):
                self._pricing_failed(deal, f"{type(outcome).__name__}: {outcome}", report)
                continue
            decision = self.judge(deal, outcome)
            facts = self._facts.get(deal.entry_key)
            routes = self._watchlist.route(
                deal, outcome, general=decision.alert, title=facts.title if facts else None, feed_url=facts.feed_url if facts else None
            )
            opportunity = (
                Opportunity(deal=deal, estimate=outcome, discount=round(outcome.price - deal.price, 2))
                if decision.alert or routes
                else None
            )
            try:
                with self.store.transaction():
                    self.store.save_estimate(deal.entry_key, outcome, alert_below=decision.alert_below, decision=decision.reason)
                    self.store.set_decision(deal.entry_key, decision.reason)
                    opportunity_id = self.store.save_opportunity(opportunity) if opportunity else None
                    if opportunity_id is not None:
                        self.store.save_routes(opportunity_id, routes)
            except Exception as exc:  # noqa: BLE001
                self._pricing_failed(deal, f"not stored: {type(exc).__name__}: {exc}", report)
                continue
            report.priced += 1
            if opportunity is not None and opportunity_id is not None:
                report.opportunities += 1
                self._fresh.append((opportunity_id, opportunity))
                self.log.info(
                    "opportunity %d: %s at $%.2f, estimated $%.2f %s(saves $%.2f, %.0f%%) %s",
                    opportunity_id, deal.product_description[:60], deal.price, outcome.price,
                    f"[{outcome.interval_text}] " if outcome.interval_text else "",
                    opportunity.discount, 100 * opportunity.discount_rel, deal.url,
                )

    def _pricing_failed(self, deal: Deal, error: str, report: CycleReport) -> None:
        try:
            attempts = self.store.record_pricing_failure(deal.entry_key, error)
            self.store.set_decision(deal.entry_key, PRICING_FAILED, error)
        except Exception as exc:  # noqa: BLE001 - the count is best effort; the cycle goes on
            self.log.warning("could not record the pricing failure of %s: %s", deal.entry_key, exc)
            attempts = 1
        report.pricing_failed += 1
        report.add_error(f"price {deal.entry_key}: {error}")
        final = attempts >= self.max_pricing_attempts
        self.log.warning(
            "pricing %s failed (attempt %d/%d%s): %s",
            deal.entry_key, attempts, self.max_pricing_attempts, ", giving up" if final else "", error,
        )

    def judge(self, deal: Deal, estimate: Estimate) -> Decision:
        """The decision on a priced deal, and why (see the module docstring)."""
        below = alert_below(estimate, self.rule)
        if deal.price <= below:
            if alerts_at(estimate, [deal.price], self.rule, below=below)[0]:
                return Decision(alert=True, alert_below=below, reason="deal")
            return Decision(alert=False, alert_below=below, reason="too good to be true")
        point = point_alert_below(estimate.price, self.rule.min_abs, self.rule.min_rel)
        return Decision(alert=False, alert_below=below, reason="low confidence" if deal.price <= point else "not cheap enough")

    def decide(self, deal: Deal, estimate: Estimate) -> Opportunity | None:
        """An `Opportunity` when the deal is worth an alert, else None."""
        if not self.judge(deal, estimate).alert:
            return None
        return Opportunity(deal=deal, estimate=estimate, discount=round(estimate.price - deal.price, 2))

    # ------------------------------------------------------------------ notify

    def _notify(self, report: CycleReport) -> None:
        fresh, self._fresh = self._fresh, []
        result = self.messenger.notify(fresh)  # also delivers what earlier cycles left pending
        report.alerts_sent = result.sent
        report.alerts_failed = result.failed
        report.alerts_waiting = result.waiting + result.unknown
        report.alerts_skipped = result.skipped
        for message in result.errors:
            report.add_error(f"notify: {message}")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the agents and the pricer this planner was given (not the store)."""
        for part in (self.reader, self.scanner, self.pricer, self.messenger, *self._owned):
            try:
                part.close()
            except Exception:  # noqa: BLE001
                self.log.exception("closing %s failed", type(part).__name__)


__all__ = ["CycleReport", "Decision", "Planner", "is_opportunity"]
