"""The scanner agent: new feed entries -> `Deal`s (a product description, one USD price, the URL).

With an LLM (`Scanner(settings, llm=make_llm(settings.llm))`): entries go in batches of
`scanner.batch_size`, one structured-output call per batch, `planner.concurrency` batches
in flight at once (the same bound as the pricers' LLM calls; each batch fills its own
partial result, merged in batch order, so the outcome does not depend on timing). Each entry is shown to the
model under a small integer id (never its URL), and the model answers per id whether it
is a deal on ONE clearly identified product at ONE clear price, the price, its currency,
and a 2-4 sentence description of the product itself. The answers are checked against
the entries given:

- ids the batch did not contain are dropped (and logged); entries the model skipped are
  decided by the rules;
- the URL and key always come from the entry, never from the model;
- the price must be in [scanner.min_price, scanner.max_price]; when the feed stated a
  price (`FeedEntry.price`) that one is used, and a model price far from it is logged;
- non-USD prices, store-wide sales, "up to" roundups, multi-buys and subscriptions are
  rejected (by the model and by the same guards the rules use, which also screen entries
  before they are sent, so they cost no tokens).

A batch whose call fails (timeout, refusal, garbage, HTTP errors after the SDK's retries)
is logged and counted in `errors`, and its entries are decided by the rule-based
extractor (`deal_rules`), so no entry is lost. Without an LLM, every entry goes through
the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError

from deals.agents import deal_rules
from deals.framework.agent import Agent
from deals.framework.errors import LLMError
from deals.framework.models import Deal, FeedEntry

if TYPE_CHECKING:
    from deals.framework.llm import LLMClient
    from deals.framework.settings import Settings

log = logging.getLogger("deals.agents.scanner")

PROMPT_VERSION = "scanner-v1"
SUMMARY_CHARS = 1200
DETAILS_CHARS = 800
MIN_DESCRIPTION_CHARS = 20
PRICE_TOLERANCE_ABS = 1.0
PRICE_TOLERANCE_REL = 0.05

SYSTEM_PROMPT = """\
You read entries from deal feeds (RSS) and decide, for each entry, whether it is a deal on ONE clearly \
identified product at ONE clear price.

Rules:
- Not a single-product deal: store-wide, category or brand sales; "up to X% off" roundups; several products \
or a choice of models at different prices; bundles of different products; coupons, credits or gift cards; \
memberships, subscriptions, services and travel.
- The price is what the buyer pays for that one product, before shipping: not a discount amount, not a \
former or list price, not a "from"/"starting at" price, not a monthly price, not a free-shipping threshold. \
A price cut ("drops from $999 to $499") is one price: the one it ends at. If the entry states a price of its own ("Price stated by the feed"), use it.
- currency: the ISO code of that price. "$" on a US site is USD; "A$", "AU$", "C$", "£", "€" or an \
Australian, Canadian, British or European site is not USD.
- product_description: 2 to 4 sentences describing the product itself, as a catalogue would: brand, model, \
type, size or capacity, key specifications and features. Never mention the deal: no prices, discounts, \
shipping, coupons or promo codes, retailer, stock, dates or "buy now". Empty when it is not a single-product deal.
- reason: a few words saying why it is or is not a single-product deal.
- Answer once for every entry, with its id exactly as given. Do not invent entries or details."""


class EntryVerdict(BaseModel):
    """The model's answer for one entry (kept lenient: the scanner validates every field)."""

    id: int = Field(description="the entry's id, exactly as given")
    reason: str = Field(description="a few words: why it is or is not a single-product deal")
    single_product_deal: bool = Field(description="true only for ONE clearly identified product at ONE clear price")
    currency: str = Field(description="ISO 4217 code of the price (USD for a plain $ on a US site)")
    price: float | None = Field(description="the deal price of that one product; null when there is none")
    product_description: str = Field(description="2-4 sentences on the product itself (brand, model, specs); no deal terms")


class ScanReply(BaseModel):
    """The structured output asked of the LLM for one batch."""

    entries: list[EntryVerdict] = Field(description="one verdict per entry given")


class ScanResult(BaseModel):
    """What one scan made of the entries it was given."""

    deals: list[Deal] = Field(default_factory=list)
    rejected: int = Field(0, description="entries that are not single-product deals in USD within the price range")
    rejections: dict[str, str] = Field(
        default_factory=dict, description="entry key -> why it was rejected (second copies of a key are only counted)"
    )
    errors: list[str] = Field(default_factory=list, description="failed LLM batches (their entries went to the rules)")
    rule_based: int = Field(0, description="entries decided by the rule-based extractor")
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class Scanner(Agent):
    """Feed entries -> deals: LLM structured output in batches, rule-based without one."""

    name = "scanner"

    def __init__(self, settings: Settings, *, llm: LLMClient | None = None) -> None:
        super().__init__(settings)
        self.llm = llm
        self.batch_size = settings.scanner.batch_size
        self.concurrency = settings.planner.concurrency
        self.min_price = settings.scanner.min_price
        self.max_price = settings.scanner.max_price

    def scan(self, entries: Sequence[FeedEntry]) -> ScanResult:
        """Deals from `entries`; every entry ends up either a deal or a counted rejection."""
        result = ScanResult()
        unique: list[FeedEntry] = []
        seen: set[str] = set()
        for entry in entries:
            if entry.key in seen:
                result.rejected += 1  # counted, but the key's reason (or deal) is the first copy's
                self.log.debug("rejected %s: a second copy in this scan", entry.key)
                continue
            seen.add(entry.key)
            unique.append(entry)

        if self.llm is None:
            for entry in unique:
                self._by_rules(result, entry)
        else:
            candidates: list[FeedEntry] = []
            for entry in unique:
                problem = self._screen(entry)
                if problem:
                    self._reject(result, entry, problem)
                else:
                    candidates.append(entry)
            batches = [candidates[i : i + self.batch_size] for i in range(0, len(candidates), self.batch_size)]
            for part in self._scan_batches(batches):
                _merge(result, part)

        order = {entry.key: index for index, entry in enumerate(unique)}
        result.deals.sort(key=lambda deal: order[deal.entry_key])  # feed order, however they were decided
        result.cost_usd = round(result.cost_usd, 8)
        self.log.info(
            "scanned %d entries: %d deals, %d rejected, %d by rules, %d LLM calls (%d/%d tokens, ~$%.4f), %d errors",
            len(entries), len(result.deals), result.rejected, result.rule_based, result.llm_calls,
            result.tokens_in, result.tokens_out, result.cost_usd, len(result.errors),
        )
        return result

    # ----------------------------------------------------------------- LLM batches

    def _scan_batches(self, batches: list[list[FeedEntry]]) -> list[ScanResult]:
        """One partial result per batch, in batch order; up to `concurrency` LLM calls at once."""

        def scan(numbered: tuple[int, list[FeedEntry]]) -> ScanResult:
            part = ScanResult()
            self._scan_batch(part, numbered[1], numbered[0])
            return part

        numbered = list(enumerate(batches, start=1))
        workers = min(self.concurrency, len(batches))
        if workers <= 1:
            return [scan(item) for item in numbered]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deals-scan") as pool:
            return list(pool.map(scan, numbered))

    @staticmethod
    def _screen(entry: FeedEntry) -> str | None:
        currency = deal_rules.foreign_currency(entry)
        if currency:
            return f"prices in {currency}, not USD"
        return deal_rules.offer_problem(entry.title)

    def _scan_batch(self, result: ScanResult, batch: list[FeedEntry], number: int) -> None:
        assert self.llm is not None
        by_id = {index: entry for index, entry in enumerate(batch, start=1)}
        result.llm_calls += 1
        try:
            reply = self.llm.structured(
                SYSTEM_PROMPT, render_entries(by_id), ScanReply, max_tokens=max_tokens_for(len(batch))
            )
        except LLMError as exc:
            result.tokens_in += getattr(exc, "tokens_in", 0)
            result.tokens_out += getattr(exc, "tokens_out", 0)
            result.cost_usd += getattr(exc, "cost_usd", 0.0)
            message = f"batch {number} ({len(batch)} entries): {exc}"
            result.errors.append(message)
            self.log.warning("LLM failed on %s; using the rule-based extractor for these entries", message)
            for entry in batch:
                self._by_rules(result, entry)
            return
        result.tokens_in += reply.tokens_in
        result.tokens_out += reply.tokens_out
        result.cost_usd += reply.cost_usd

        decided: set[int] = set()
        for verdict in reply.value.entries:
            entry = by_id.get(verdict.id)
            if entry is None:
                self.log.warning("batch %d: the model answered for id %d, which was not given; ignored", number, verdict.id)
                continue
            if verdict.id in decided:
                self.log.warning("batch %d: a second answer for id %d; ignored", number, verdict.id)
                continue
            decided.add(verdict.id)
            try:
                self._judge(result, entry, verdict)
            except (ValidationError, ValueError) as exc:
                self.log.warning("batch %d: unusable answer for %s (%s); using the rules", number, entry.key, exc)
                self._by_rules(result, entry)
        for index, entry in by_id.items():
            if index not in decided:
                self.log.info("batch %d: no answer for %s; using the rules", number, entry.key)
                self._by_rules(result, entry)

    def _judge(self, result: ScanResult, entry: FeedEntry, verdict: EntryVerdict) -> None:
        if not verdict.single_product_deal:
            self._reject(result, entry, f"not a single-product deal: {verdict.reason.strip() or 'no reason given'}")
            return
        currency = verdict.currency.strip().upper()
        if currency not in ("USD", "US$", "$", ""):
            self._reject(result, entry, f"price in {currency}, not USD")
            return
        price = verdict.price
        if entry.price is not None:
            if price is None or not _close(price, entry.price):
                self.log.info("%s: the model said %s, the feed says $%.2f; using the feed's price", entry.key, price, entry.price)
            price = entry.price
        if price is None or price <= 0:
            self._reject(result, entry, "no price" if price is None else "free, not a price")
            return
        if not self.min_price <= price <= self.max_price:
            self._reject(result, entry, f"price ${price:g} outside ${self.min_price:g}-${self.max_price:g}")
            return
        description = " ".join(verdict.product_description.split())
        if len(description) < MIN_DESCRIPTION_CHARS:
            self.log.info("%s: the model gave no usable description; describing it from the entry", entry.key)
            description = deal_rules.product_description(entry)
        result.deals.append(Deal(entry_key=entry.key, product_description=description, price=round(price, 2), url=entry.url))

    # ----------------------------------------------------------------- rules and bookkeeping

    def _by_rules(self, result: ScanResult, entry: FeedEntry) -> None:
        result.rule_based += 1
        outcome = deal_rules.extract(entry, min_price=self.min_price, max_price=self.max_price)
        if outcome.deal is not None:
            result.deals.append(outcome.deal)
        else:
            self._reject(result, entry, outcome.reason)

    def _reject(self, result: ScanResult, entry: FeedEntry, reason: str) -> None:
        result.rejected += 1
        result.rejections.setdefault(entry.key, reason)
        self.log.debug("rejected %s (%s): %s", entry.key, entry.title[:80], reason)


def _merge(result: ScanResult, part: ScanResult) -> None:
    """Add a batch's partial result to the scan's."""
    result.deals.extend(part.deals)
    result.rejected += part.rejected
    for key, reason in part.rejections.items():
        result.rejections.setdefault(key, reason)
    result.errors.extend(part.errors)
    result.rule_based += part.rule_based
    result.llm_calls += part.llm_calls
    result.tokens_in += part.tokens_in
    result.tokens_out += part.tokens_out
    result.cost_usd += part.cost_usd


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(PRICE_TOLERANCE_ABS, PRICE_TOLERANCE_REL * abs(b))


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def render_entries(by_id: dict[int, FeedEntry]) -> str:
    """The user message: each entry under its id, without its URL."""
    blocks = []
    for index, entry in by_id.items():
        lines = [f"### Entry id {index}", f"Title: {' '.join(entry.title.split())}"]
        if entry.price is not None:
            lines.append(f"Price stated by the feed: ${entry.price:.2f}")
        if entry.retailer:
            lines.append(f"Retailer: {entry.retailer}")
        if entry.category:
            lines.append(f"Category: {entry.category}")
        if entry.summary.strip():
            lines.append(f"Summary: {_cut(entry.summary, SUMMARY_CHARS)}")
        if entry.details.strip():
            lines.append(f"Details: {_cut(entry.details.replace(chr(10), '; '), DETAILS_CHARS)}")
        blocks.append("\n".join(lines))
    return f"Decide for each of these {len(by_id)} entries.\n\n" + "\n\n".join(blocks)


def max_tokens_for(entries: int) -> int:
    """Output budget of one batch: room for a verdict with a 4-sentence description per entry."""
    return 300 + 250 * entries


__all__ = ["PROMPT_VERSION", "SYSTEM_PROMPT", "EntryVerdict", "ScanReply", "ScanResult", "Scanner", "render_entries"]
