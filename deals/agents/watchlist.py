"""Who gets which deal: recipients, their watches, and the routing of opportunities.

Recipients come from three places, joined by number: `messenger.to` (no rules of their
own), `messenger.recipients` in the configuration (a daily cap, quiet hours and watches),
and the store (watches and caps added with `deals watch` or the dashboard).

A **watch** matches a deal when ALL its keywords appear in the deal's title or product
description (any case; a keyword may be a phrase) and its regex, if any, is found there;
and the deal is from one of its feeds (if it names feeds) at or below its `max_price` (if
set). What a matching deal needs to be sent:

- a **target-price watch** (`target_price`): the price is at or below the target, whatever
  the estimate says ("text me when X is at or below $Y");
- a watch with `min_saving_abs`/`min_saving_rel`: the planner's rule (`deals.pricer.alerts`)
  with those thresholds instead of the global ones;
- otherwise: the planner's general decision (the deal is an opportunity).

**Routing** (`Watchlist.route`): a recipient with no watches gets the general
opportunities; a recipient with watches gets only what one of them sends. The planner
routes each priced deal once and stores the opportunity with its routes (who, and why) in
one transaction; the messenger queues one alert per route, exactly once per (opportunity,
recipient) as the outbox guarantees. A deal that is not a general opportunity but that a
watch sends becomes an opportunity too (routed only to that watch's recipient).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deals.framework.models import Deal, Estimate
from deals.framework.settings import RecipientSettings, Settings, WatchRule, quiet_window
from deals.memory.watches import watch_label
from deals.pricer.alerts import AlertRule, alerts_at

if TYPE_CHECKING:
    from deals.memory.store import Store

GENERAL = "general opportunity"
WATCH_REASON = "watch '"  # how every reason a watch gives starts (the messenger says it in the text)


@dataclass(frozen=True)
class Watch:
    """A watch, wherever it was defined."""

    recipient: str
    rule: WatchRule
    source: str  # "config" or "store"
    id: int | None = None  # the store's id (None for the configuration's)

    @property
    def label(self) -> str:
        return watch_label(self.rule)

    def matches_text(self, text: str) -> bool:
        """Every keyword as a whole word (a plural 's'/'es' allowed: "tv" finds "TVs", "vest"
        never finds "Harvest"), case-insensitive, and the regex if there is one."""
        if not all(_keyword_pattern(keyword).search(text) for keyword in self.rule.keywords):
            return False
        if self.rule.regex and not re.search(self.rule.regex, text, re.IGNORECASE):
            return False
        return True

    def sends(self, deal: Deal, estimate: Estimate, *, general: bool, text: str, feed_url: str | None, rule: AlertRule) -> str | None:
        """Why this watch sends the deal, or None."""
        r = self.rule
        if r.feeds and feed_url not in r.feeds:
            return None
        if r.max_price is not None and deal.price > r.max_price + 1e-9:
            return None
        if not self.matches_text(text):
            return None
        if r.target_price is not None:
            if deal.price <= r.target_price + 1e-9:
                return f"{WATCH_REASON}{self.label}': at or below target ${r.target_price:,.2f}"
            return None
        if r.min_saving_abs is not None or r.min_saving_rel is not None:
            own = rule.model_copy(
                update={
                    "min_abs": rule.min_abs if r.min_saving_abs is None else r.min_saving_abs,
                    "min_rel": rule.min_rel if r.min_saving_rel is None else r.min_saving_rel,
                }
            )
            return f"{WATCH_REASON}{self.label}' (own saving thresholds)" if bool(alerts_at(estimate, [deal.price], own)[0]) else None
        return f"{WATCH_REASON}{self.label}'" if general else None


@dataclass
class Recipient:
    """One recipient with everything that applies to them."""

    number: str
    daily_cap: int | None = None
    quiet_start: str | None = None
    quiet_end: str | None = None
    watches: list[Watch] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # "to", "config", "store"

    @property
    def general(self) -> bool:
        """Gets the general opportunities (has no watches)."""
        return not self.watches


class Watchlist:
    """Every recipient and watch, and the routing of deals to them (see the module docstring)."""

    def __init__(self, recipients: Iterable[Recipient], rule: AlertRule) -> None:
        self.recipients: dict[str, Recipient] = {r.number: r for r in recipients}
        self.rule = rule

    @classmethod
    def load(cls, settings: Settings, store: Store | None = None) -> Watchlist:
        """The configuration's recipients and watches, joined with the store's."""
        people: dict[str, Recipient] = {}

        def person(number: str) -> Recipient:
            return people.setdefault(number, Recipient(number=number))

        for number in settings.messenger.to:
            person(number).sources.add("to")
        for configured in settings.messenger.recipients:
            _apply(person(configured.number), configured)
        if store is not None:
            for stored in store.stored_recipients():
                p = person(stored.number)
                p.sources.add("store")
                if stored.daily_cap is not None:
                    p.daily_cap = stored.daily_cap
                if stored.quiet_start and stored.quiet_end:
                    p.quiet_start, p.quiet_end = stored.quiet_start, stored.quiet_end
            for watch in store.stored_watches():
                p = person(watch.recipient)
                p.sources.add("store")
                p.watches.append(Watch(recipient=watch.recipient, rule=watch.rule, source="store", id=watch.id))
        return cls(people.values(), AlertRule.from_settings(settings.planner))

    @property
    def numbers(self) -> list[str]:
        return list(self.recipients)

    def watches(self) -> list[Watch]:
        return [w for r in self.recipients.values() for w in r.watches]

    def route(
        self, deal: Deal, estimate: Estimate, *, general: bool, title: str | None = None, feed_url: str | None = None
    ) -> list[tuple[str, str]]:
        """(recipient, why) for everyone this deal goes to; `general`: the planner's rule alerts on it."""
        text = f"{title or ''}\n{deal.product_description}"
        out: list[tuple[str, str]] = []
        for recipient in self.recipients.values():
            if recipient.general:
                if general:
                    out.append((recipient.number, GENERAL))
                continue
            for watch in recipient.watches:
                why = watch.sends(deal, estimate, general=general, text=text, feed_url=feed_url, rule=self.rule)
                if why:
                    out.append((recipient.number, why))
                    break
        return out


def _apply(person: Recipient, configured: RecipientSettings) -> None:
    person.sources.add("config")
    if configured.daily_cap is not None:
        person.daily_cap = configured.daily_cap
    if configured.quiet_start and configured.quiet_end:
        person.quiet_start, person.quiet_end = configured.quiet_start, configured.quiet_end
    person.watches += [Watch(recipient=person.number, rule=rule, source="config") for rule in configured.watches]


@functools.lru_cache(maxsize=1024)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(keyword.strip())}(?:e?s)?(?!\w)", re.IGNORECASE)


_NUMBER_IN_TEXT = re.compile(r"\+\d{7,15}\b")


def mask_numbers_in(text: str) -> str:
    """`text` (a provider's error message, say) with every E.164 number in it masked."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


def parse_quiet(text: str) -> tuple[str, str]:
    """'22:00-07:00' -> ('22:00', '07:00'); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d\d:\d\d)\s*-\s*(\d\d:\d\d)\s*", text or "")
    if not match:
        raise ValueError(f"{text!r} is not quiet hours (HH:MM-HH:MM, e.g. 22:00-07:00)")
    start, end = match.groups()
    quiet_window(start, end)
    return start, end


def mask(number: str | None) -> str:
    """A phone number with all but its last 4 digits hidden ('********0001'), for pages and
    logs; a recipient that is no phone number (the console) is shown as it is."""
    text = str(number or "")
    if not text.lstrip("+").isdigit():
        return text
    return "*" * len(text) if len(text) <= 4 else "*" * (len(text) - 4) + text[-4:]


__all__ = ["GENERAL", "WATCH_REASON", "Recipient", "Watch", "Watchlist", "mask", "mask_numbers_in", "parse_quiet"]
