"""The messenger agent: opportunities become text messages, through an outbox.

Outbox protocol (table `alerts`, see `deals.memory.migrations`), per opportunity and
recipient::

    queued --claim: sending (attempt counted)--> send --> sent (provider SID)
                                                  \\--> failed   (permanent error: other 4xx)
                                                  \\--> sending  (outcome unknown: transient
                                                                  errors until max_attempts)
    queued --> skipped   (daily cap reached, stale, recipient no longer configured)

Who gets an opportunity is decided once, by the planner (`deals.agents.watchlist`), and
stored as its routes; the messenger queues one alert per route (an opportunity stored
without routes, by older code, is routed when it is handed in or recovered). Each
recipient's own daily cap and quiet hours (`messenger.recipients`, `deals watch
recipient`) replace the messenger's for them. Without Twilio the console gets every
opportunity once.

An alert is written before it is sent and marked after, so a crash never loses one. It is
claimed atomically (queued -> sending only while still queued, together with the alert's
`send` claim, `Store.claim_alert`), so two processes can never both send it, and every
hand-over to the provider is recorded (`sends`: started, outcome, provider id), so
`deals history` shows any duplicate. Nothing is ever resent without first asking the
provider whether it already went out: `reconcile()` (run first by every
`notify`/`deliver_pending`) checks each alert left in `sending` against the provider's
message list (`Notifier.find_sent`): found -> sent, not found -> queued (and sent again);
unreachable -> left for the next cycle. Retries inside one delivery check the same way
before resending (a timeout or a 5xx may have gone out).

Several daemons on one store: an alert in `sending` whose `send` claim is held by a live
daemon is being sent right now and is left alone; a reconciler claims the alert first
(`Store.claim_sending`), so only one daemon asks the provider about it, and the claims
of a daemon that died return at once (see `deals.memory.claims`). Just before each
hand-over the sender checks that it still holds the claim (a daemon paused past
`store.worker_timeout_s` has lost it and must not send).

Transient errors (5xx, 429, network) are retried with exponential backoff
(`messenger.retry_base_s`, doubling, `messenger.max_attempts` attempts; `sleep` is
injectable); after the last one the alert stays in `sending` and delivery stops for this
cycle (the provider is down; the rest wait, queued). Permanent errors fail the alert.

Quiet hours (`messenger.quiet_start`..`quiet_end` in `messenger.timezone`, may span
midnight): queued alerts wait and go out on the first call after they end. Daily cap
(`messenger.daily_cap` per recipient per local day; 0 sends nothing): alerts over it are
marked `skipped` with the reason, not held for tomorrow, when the deal may be gone. Alerts
queued for longer than `messenger.max_age_hours` (default one day) are skipped as stale for the same
reason. Opportunities younger than that without an alert row (a crash between the
planner storing them and the messenger queueing them) are queued on the next call.

Messages are GSM-7 text of at most `messenger.max_chars` characters (306 = two SMS
segments, which phones show as one message): the product name (at least 40 characters
of it), the price, the estimate with its interval, the saving in dollars and percent,
and the link; then what price history adds (the feed's "was" price, "lowest seen in 30
days: $X"). The name is shortened first; a link too long to leave room for the name
loses its query string, or is left out (see `format_alert`).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, time as dtime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from deals.agents.notifiers import CONSOLE_RECIPIENT, ConsoleNotifier, Notifier, build_notifier, warn_once
from deals.agents.watchlist import GENERAL, WATCH_REASON, Recipient, Watchlist, mask
from deals.framework.agent import Agent
from deals.framework.errors import ConfigError, DealsError, NotifyError, PermanentNotifyError
from deals.framework.models import Opportunity, utcnow
from deals.framework.text import money
from deals.framework.settings import Settings, quiet_window
from deals.memory.history import PriceContext
from deals.memory.store import AlertRow, Store

# --------------------------------------------------------------------------- message text

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")  # two septets each
_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u201c": '"', "\u201d": '"',
    "\u201e": '"', "\u2033": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...",
    "\u00a0": " ", "\u2022": "-", "\u00d7": "x", "\u2122": "", "\u00ae": "", "\u00a9": "",
    "\t": " ", "\n": " ", "\r": " ", "\u2044": "/", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D",
    "\u0131": "i", "\u0153": "oe", "\u0152": "OE",
}  # fmt: skip
_SPACES = re.compile(r"\s+")
ELLIPSIS = "..."


def to_gsm7(text: str) -> str:
    """`text` in the GSM-7 alphabet: typographic marks replaced, accents dropped, the rest removed."""
    out: list[str] = []
    for char in text:
        for c in _REPLACEMENTS.get(char, char):
            if c in GSM7_BASIC or c in GSM7_EXTENDED:
                out.append(c)
            else:
                parts = "".join(_REPLACEMENTS.get(d, d) for d in unicodedata.normalize("NFKD", c))
                if "/" in parts and out and out[-1].isdigit():
                    out.append(" ")  # 6½ -> "6 1/2", not "61/2"
                out.extend(d for d in parts if d in GSM7_BASIC or d in GSM7_EXTENDED)
    return _SPACES.sub(" ", "".join(out)).strip()


def gsm7_length(text: str) -> int:
    """Length in GSM-7 septets (extension characters count two)."""
    return sum(2 if c in GSM7_EXTENDED else 1 for c in text)


def _cut(text: str, budget: int) -> str:
    """`text` cut to `budget` septets including the ellipsis, at a word boundary if one is near."""
    room = budget - len(ELLIPSIS)
    kept = ""
    for char in text:
        if gsm7_length(kept + char) > room:
            break
        kept += char
    space = kept.rfind(" ")
    if space >= max(1, len(kept) - 12):
        kept = kept[:space]
    return kept.rstrip(" ,;:-/(") + ELLIPSIS


MIN_NAME = 40  # characters of the product name every alert keeps


def _short_link(url: str) -> str:
    """The link without its query string and fragment (tracking, mostly)."""
    return url.split("#", 1)[0].split("?", 1)[0]


def format_alert(opp: Opportunity, max_chars: int = 306, notes: Sequence[str] = (), reason: str | None = None) -> str:
    """The alert text: product name, price, estimate and its interval, saving, link; never over `max_chars`.

    `reason`: why this recipient gets it when a watch sent it ("watch 'tv': at or below
    target $800.00"); it follows the saving. `notes` follow that (the feed's "was" price,
    "lowest seen in 30 days: $X": see `alert_notes`). A deal that saves nothing on the
    estimate (a target-price watch sends whatever the estimate says) has no "save" part.

    The name is shortened (with "...") first, but keeps at least `MIN_NAME` characters.
    When that leaves no room, the rest gives way in this order: the link's query string, the
    notes, the link itself (it stays in `deals history`), the interval, the reason. The
    price, the estimate and the saving are never cut: with a very small `max_chars` the
    name gets what room they leave.
    """
    pct = round(opp.discount_rel * 100)
    estimate = opp.estimate
    interval = f" ({money(estimate.low)}-{money(estimate.high)})" if estimate.low is not None and estimate.high is not None else ""
    core = f"{money(opp.deal.price)}, est {money(estimate.price)}"
    saving = f", save {money(opp.discount)} ({pct}%)" if opp.discount > 0 else ""
    said = f"; {to_gsm7(reason)}" if reason else ""
    noted = "".join(f"; {to_gsm7(note)}" for note in notes if note)
    name = to_gsm7(opp.deal.product_description) or "Deal"
    url, short = to_gsm7(opp.deal.url), to_gsm7(_short_link(opp.deal.url))
    full, bare = core + interval + saving + said, core + saving
    links = [link for link in dict.fromkeys([url, short]) if link]
    tails = [f"{facts} {link}" for facts in dict.fromkeys([full + noted, full]) for link in links]
    tails += [f"{full} (link in deals history)", f"{bare}{said} (link in deals history)", bare + said, bare]
    for tail in tails:
        budget = max_chars - gsm7_length(tail) - 2  # ": "
        if gsm7_length(name) <= budget:
            return f"{name}: {tail}"
        if budget >= min(MIN_NAME, gsm7_length(name)):
            return f"{_cut(name, budget)}: {tail}"
    tail = bare  # the price, estimate and saving alone; the name gets the rest
    budget = max_chars - gsm7_length(tail) - 2
    if budget >= len(ELLIPSIS) + 4:
        return f"{_cut(name, budget)}: {tail}"
    return _cut(f"{name}: {tail}", max_chars)  # max_chars too small even for that: cut, but never over


def alert_notes(context: PriceContext) -> list[str]:
    """What price history adds to an alert: the feed's own 'was' price, the product's 30-day low."""
    notes = []
    if context.list_price:
        notes.append(f"feed says was {money(context.list_price)}")
    if context.lowest is not None:
        notes.append(context.text())
    return notes


def alert_bodies(store: Store, opp: Opportunity, whys: Sequence[str], max_chars: int = 306) -> dict[str, str]:
    """The text of an opportunity's alert for each route reason, with what the store knows of its price history.

    A watch's reason ("watch 'tv': at or below target $800.00") is said in the text, so the
    recipients of one opportunity may get different texts; other reasons share one.
    """
    notes = alert_notes(store.price_context(opp.deal.entry_key))
    texts: dict[str | None, str] = {}
    out = {}
    for why in whys:
        reason = why if why.startswith(WATCH_REASON) else None
        if reason not in texts:
            texts[reason] = format_alert(opp, max_chars, notes, reason)
        out[why] = texts[reason]
    return out


def alert_body(store: Store, opp: Opportunity, max_chars: int = 306, why: str = "") -> str:
    """`alert_bodies` for one route reason (a general opportunity by default)."""
    return alert_bodies(store, opp, [why], max_chars)[why]


# --------------------------------------------------------------------------- agent


class MessengerReport(BaseModel):
    """What one `notify` / `deliver_pending` call did."""

    enqueued: int = Field(0, description="alert rows for the opportunities handed in (and recovered ones)")
    sent: int = 0
    failed: int = Field(0, description="permanent errors")
    skipped: int = Field(0, description="daily cap, stale, or recipient no longer configured")
    waiting: int = Field(0, description="left queued: quiet hours, or the provider is down")
    unknown: int = Field(0, description="left in 'sending': outcome to be reconciled next call")
    reconciled: int = Field(0, description="'sending' alerts found at the provider, marked sent")
    requeued: int = Field(0, description="'sending' alerts not found at the provider, queued again")
    quiet: bool = Field(False, description="the call fell in quiet hours")
    errors: list[str] = Field(default_factory=list)


class Messenger(Agent):
    """Turns opportunities into alerts and delivers them through the outbox."""

    name = "messenger"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings)
        self.config = settings.messenger
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self.max_age = timedelta(hours=self.config.max_age_hours)
        try:
            self.zone = ZoneInfo(self.config.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"messenger.timezone: unknown IANA time zone {self.config.timezone!r}") from exc
        try:
            self.quiet_hours = quiet_window(self.config.quiet_start, self.config.quiet_end)
        except ValueError as exc:
            raise ConfigError(f"messenger quiet hours: {exc}") from exc
        self.notifier = notifier or build_notifier(self.config, environ, timeout_s=self.config.timeout_s, logger=self.log)
        self.console = self.notifier if isinstance(self.notifier, ConsoleNotifier) else ConsoleNotifier()
        self._refresh()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        """Recipients and their watches as they are now (the dashboard and `deals watch` edit them at run time).

        With nobody to text (no `messenger.to`, no `messenger.recipients`, no stored watch)
        alerts go to the console, as they do without Twilio."""
        self.watchlist = Watchlist.load(self.settings, self.store)
        self.recipients = self.notifier.recipients(self.watchlist.numbers)
        if not self.recipients:
            warn_once(
                "no-recipients",
                "nobody to text (messenger.to, messenger.recipients and `deals watch` are all empty): alerts are printed",
                self.log,
            )
            self.recipients = [CONSOLE_RECIPIENT]
        self._quiet_of: dict[str, tuple[dtime, dtime] | None] = {}
        for person in self.watchlist.recipients.values():
            if person.quiet_start and person.quiet_end:
                try:
                    self._quiet_of[person.number] = quiet_window(person.quiet_start, person.quiet_end)
                except ValueError as exc:
                    raise ConfigError(f"quiet hours of {mask(person.number)}: {exc}") from exc

    def _targets(self, opportunity_id: int, opp: Opportunity) -> list[tuple[str, str]]:
        """(recipient, why) for an opportunity: its stored routes, else routed now (and stored)."""
        if self.recipients == [CONSOLE_RECIPIENT]:  # no SMS: the console shows every opportunity, with a watch's reason
            watched = [why for _, why in self.store.routes(opportunity_id) if why.startswith(WATCH_REASON)]
            return [(CONSOLE_RECIPIENT, watched[0] if watched else "console")]
        if self.store.is_routed(opportunity_id):
            routes = self.store.routes(opportunity_id)
        else:  # stored by code that does not route (or before routes existed): a general opportunity
            facts = self.store.entry_facts([opp.deal.entry_key]).get(opp.deal.entry_key)
            routes = self.watchlist.route(
                opp.deal, opp.estimate, general=True, title=facts.title if facts else None, feed_url=facts.feed_url if facts else None
            )
            self.store.save_routes(opportunity_id, routes)
            # what is stored now: another daemon may have routed it meanwhile (the first route of a recipient stays)
            routes = self.store.routes(opportunity_id)
        return routes

    def _enqueue(self, opportunity_id: int, opp: Opportunity, targets: Sequence[tuple[str, str]], report: MessengerReport) -> bool:
        """Queue the alert of one opportunity for each (recipient, why); False when the store refused it."""
        bodies = alert_bodies(self.store, opp, [why for _, why in targets], self.config.max_chars)
        for recipient, why in targets:
            body = bodies[why]
            try:
                self.store.enqueue_alert(opportunity_id, recipient, body, at=self.clock())
            except DealsError as exc:  # e.g. an id the store does not know: skip that one
                report.errors.append(str(exc))
                self.log.error("opportunity %s not queued: %s", opportunity_id, exc)
                return False
            report.enqueued += 1
        return True

    # ---------------------------------------------------------------- public

    def notify(self, opportunities: list[tuple[int, Opportunity]]) -> MessengerReport:
        """Queue an alert per opportunity and recipient, then deliver everything pending."""
        with self._lock:
            self._refresh()
            report = MessengerReport()
            self._reconcile(report)
            for opportunity_id, opp in opportunities:
                try:
                    targets = self._targets(opportunity_id, opp)
                except DealsError as exc:  # e.g. an id the store does not know: skip that one
                    report.errors.append(str(exc))
                    self.log.error("opportunity %s not queued: %s", opportunity_id, exc)
                    continue
                self._enqueue(opportunity_id, opp, targets, report)
            self._recover(report)
            self._deliver(report)
            return report

    def deliver_pending(self) -> MessengerReport:
        """Reconcile, queue alerts for recent opportunities that lack them, send what is queued."""
        with self._lock:
            self._refresh()
            report = MessengerReport()
            self._reconcile(report)
            self._recover(report)
            self._deliver(report)
            return report

    def reconcile(self) -> MessengerReport:
        """Settle alerts left in 'sending' by asking the provider whether they went out."""
        with self._lock:
            self._refresh()
            report = MessengerReport()
            self._reconcile(report)
            return report

    def send_test(self, body: str | None = None) -> list[str]:
        """Send one test message to every recipient now (no outbox, no quiet hours); the provider ids."""
        if body is None:
            local = self.clock().astimezone(self.zone)
            works = "Alerts are printed here: SMS is not set up." if self.recipients == [CONSOLE_RECIPIENT] else "SMS alerts are working."
            body = f"deals: test message, {local:%Y-%m-%d %H:%M %Z}. {works}"
        body = to_gsm7(body)
        return [self.notifier_for(recipient).send(recipient, body) for recipient in self.recipients]

    def notifier_for(self, recipient: str) -> Notifier:
        """The console for the console recipient, the configured notifier for everyone else."""
        return self.console if recipient == CONSOLE_RECIPIENT else self.notifier

    def _quiet_window(self, recipient: str | None) -> tuple[dtime, dtime] | None:
        """The recipient's own quiet hours, if they set some, else the messenger's (None: no quiet hours)."""
        return self._quiet_of[recipient] if recipient in self._quiet_of else self.quiet_hours

    def in_quiet_hours(self, now: datetime | None = None, recipient: str | None = None) -> bool:
        """Whether it is quiet hours now (the recipient's own, if they set some, else messenger's)."""
        window = self._quiet_window(recipient)
        if window is None:
            return False
        start, end = window
        local = (now or self.clock()).astimezone(self.zone).time()
        if start < end:
            return start <= local < end
        return local >= start or local < end  # spans midnight

    def local_day_start(self, now: datetime | None = None) -> datetime:
        """Midnight of the current local day, in UTC."""
        local = (now or self.clock()).astimezone(self.zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)

    def close(self) -> None:
        self.notifier.close()

    # ---------------------------------------------------------------- steps

    def _lookback(self, alert: AlertRow) -> datetime:
        # A day before the alert was written: any copy sent for it is newer than that.
        return alert.created_at - timedelta(days=1)

    def _reconcile(self, report: MessengerReport) -> None:
        for alert in self.store.alerts(["sending"]):
            if alert.recipient not in self.recipients:
                continue  # not ours to settle with this notifier; kept for when it returns
            if not self.store.claim_sending(alert.id):
                continue  # another daemon is sending or reconciling it right now
            try:
                self._reconcile_one(alert, report)
            finally:
                self.store.release_claims("send", [alert.id])

    def _reconcile_one(self, alert: AlertRow, report: MessengerReport) -> None:
        """Ask the provider about one claimed alert left in 'sending': sent, or queued again."""
        try:
            sid = self.notifier_for(alert.recipient).find_sent(alert.recipient, alert.body, self._lookback(alert))
        except NotifyError as exc:
            report.unknown += 1
            report.errors.append(str(exc))
            self.log.warning("alert %d: cannot reconcile yet (%s); it stays pending", alert.id, exc)
            return
        if sid:
            if self.store.mark_alert(alert.id, "sent", provider_id=sid, at=self.clock(), expect="sending"):
                self.store.settle_sends(alert.id, sid, at=self.clock())
                report.reconciled += 1
                self.log.info("alert %d: already delivered as %s, not resending", alert.id, sid)
        elif self.store.mark_alert(alert.id, "queued", at=self.clock(), expect="sending"):
            report.requeued += 1
            self.log.info("alert %d: not found at the provider, queued again", alert.id)

    def _recover(self, report: MessengerReport) -> None:
        """Queue what an interrupted cycle left: routes without alerts, and opportunities never routed."""
        since = self.clock() - self.max_age
        if self.recipients == [CONSOLE_RECIPIENT]:
            pending = self.store.opportunities_without_alerts(self.recipients, since=since)
            for opportunity_id, opp in pending:
                self._enqueue(opportunity_id, opp, self._targets(opportunity_id, opp), report)
            return
        missing: dict[int, list[str]] = {}
        for opportunity_id, recipient in self.store.unalerted_routes(since):
            missing.setdefault(opportunity_id, []).append(recipient)
        for opportunity_id in self.store.opportunities_without_routes(since):
            missing.setdefault(opportunity_id, [])
        for opportunity_id, recipients in missing.items():
            opp = self.store.get_opportunity(opportunity_id)
            if opp is None:
                continue
            if recipients:
                why = dict(self.store.routes(opportunity_id))
                targets = [(r, why.get(r, GENERAL)) for r in recipients]
            else:  # never routed: route it now
                targets = self._targets(opportunity_id, opp)
            if targets and self._enqueue(opportunity_id, opp, targets, report):
                self.log.info("opportunity %d had no alert (interrupted cycle?): queued now", opportunity_id)

    def _deliver(self, report: MessengerReport) -> None:
        queued = self.store.alerts(["queued"])
        if not queued:
            return
        now = self.clock()
        day_start = self.local_day_start(now)
        quiet = 0
        for index, alert in enumerate(queued):
            if self.in_quiet_hours(now, alert.recipient):
                quiet += 1
                report.quiet = True
                report.waiting += 1
                self._note_quiet(alert)
                continue
            if alert.recipient not in self.recipients:
                if alert.recipient in self.watchlist.numbers:  # still a recipient, SMS is just off now
                    report.waiting += 1
                    continue  # kept for when it is back (as _reconcile keeps its 'sending' alerts)
                self._skip(alert, "recipient no longer configured", report)
                continue
            if now - alert.created_at > self.max_age:
                self._skip(alert, f"stale: queued since {alert.created_at:%Y-%m-%d %H:%M} UTC", report)
                continue
            cap = self._daily_cap(self.watchlist.recipients.get(alert.recipient))
            outcome = self._send(alert, report, cap=(cap, day_start))
            if outcome == "unknown":
                report.waiting += len(queued) - index - 1
                self.log.warning("provider unavailable: %d alert(s) wait for the next cycle", len(queued) - index - 1)
                return
        if quiet:
            self.log.info("quiet hours: %d alert(s) wait until they end", quiet)

    def _note_quiet(self, alert: AlertRow) -> None:
        """Say on the waiting alert why it waits (the dashboard's outbox shows it); written once per window."""
        window = self._quiet_window(alert.recipient)
        note = f"quiet hours until {window[1]:%H:%M} {self.zone.key}" if window else "quiet hours"
        if alert.last_error != note:
            self.store.mark_alert(alert.id, "queued", error=note, at=self.clock(), count_attempt=False, expect="queued")

    def _daily_cap(self, person: Recipient | None) -> int:
        return person.daily_cap if person is not None and person.daily_cap is not None else self.config.daily_cap

    def _skip(self, alert: AlertRow, reason: str, report: MessengerReport) -> None:
        if not self.store.mark_alert(alert.id, "skipped", error=reason, at=self.clock(), expect="queued"):
            return  # another daemon claimed it meanwhile (and may have sent it): not ours to skip
        report.skipped += 1
        self.log.warning("alert %d to %s skipped: %s", alert.id, mask(alert.recipient), reason)

    def _send(self, alert: AlertRow, report: MessengerReport, *, cap: tuple[int, datetime]) -> str:
        """Claim and deliver one alert with retries: 'sent', 'failed', 'taken', 'capped' or 'unknown' (left in 'sending').

        `cap` = (the recipient's daily cap, the local day's start): checked by the store in the
        claim itself, so several daemons together keep it."""
        claim = self.store.claim_alert(alert.id, at=self.clock(), cap=cap)
        if claim == "capped":
            self._skip(alert, f"daily cap of {cap[0]} reached", report)
            return "capped"
        if claim != "claimed":
            self.log.info("alert %d: no longer queued (another process took it); not sending", alert.id)
            return "taken"
        try:
            return self._send_claimed(alert, report)
        finally:
            self.store.release_claims("send", [alert.id])

    def _send_claimed(self, alert: AlertRow, report: MessengerReport) -> str:
        attempts = self.config.max_attempts
        last: NotifyError | None = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self.sleep(min(self.config.retry_base_s * 2 ** (attempt - 2), 300.0))
                try:  # the previous attempt may have gone out (timeout, 5xx): look before resending
                    sid = self.notifier_for(alert.recipient).find_sent(alert.recipient, alert.body, self._lookback(alert))
                except NotifyError as exc:
                    last = exc
                    break
                if sid:
                    self.store.mark_alert(alert.id, "sent", provider_id=sid, at=self.clock())
                    self.store.settle_sends(alert.id, sid, at=self.clock())
                    report.sent += 1
                    return "sent"
                self.store.mark_alert(alert.id, "sending", at=self.clock())  # counts this attempt
            if not self.store.holds_claim("send", alert.id):
                # taken for dead while paused: another daemon reconciles it with the provider
                self.log.warning("alert %d: this daemon lost its claim (paused too long?); not sending", alert.id)
                return "taken"
            send_id = self.store.begin_send(alert.id, at=self.clock())
            try:
                sid = self.notifier_for(alert.recipient).send(alert.recipient, alert.body)
            except PermanentNotifyError as exc:
                self.store.end_send(send_id, "failed", error=str(exc), at=self.clock())
                self.store.mark_alert(alert.id, "failed", error=str(exc), at=self.clock())
                report.failed += 1
                report.errors.append(str(exc))
                self.log.error("alert %d to %s failed: %s", alert.id, mask(alert.recipient), exc)
                return "failed"
            except NotifyError as exc:
                last = exc
                self.store.end_send(send_id, "error", error=str(exc), at=self.clock())
                self.store.mark_alert(alert.id, "sending", error=str(exc), at=self.clock(), count_attempt=False)
                self.log.warning("alert %d: attempt %d/%d failed: %s", alert.id, attempt, attempts, exc)
                continue
            self.store.end_send(send_id, "sent", provider_id=sid, at=self.clock())
            self.store.mark_alert(alert.id, "sent", provider_id=sid, at=self.clock())
            report.sent += 1
            self.log.info("alert %d sent to %s (%s)", alert.id, mask(alert.recipient), sid)
            return "sent"
        error = f"{last} (outcome unknown; checked with the provider next cycle)"
        self.store.mark_alert(alert.id, "sending", error=error, at=self.clock(), count_attempt=False)
        report.unknown += 1
        report.errors.append(str(last))
        return "unknown"


__all__ = ["Messenger", "MessengerReport", "alert_bodies", "alert_body", "alert_notes", "format_alert", "gsm7_length", "to_gsm7"]
