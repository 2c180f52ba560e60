"""Rule-based deal extraction: a FeedEntry -> a Deal, or the reason it is not one. No LLM.

Used by the scanner when no LLM is configured, and for the entries of a batch whose LLM
call failed; its guards (`foreign_currency`, `offer_problem`) also screen entries before
they are sent to an LLM.

A deal needs ONE product at ONE price in USD:

- the price is the feed's own (`FeedEntry.price`, e.g. `dealnews:price`), else the one
  price left in the title once shipping thresholds ("w/ $39"), shipping costs
  ("+ $5 shipping"), former prices ("was $179"), discounts ("$20 off") and parenthesised
  alternatives ("($53 eBay Plus)") are set aside;
- money is read strictly (`deals.agents.money`): an amount must end at a word boundary,
  and a title whose money does not read cleanly ("$1e12", "$5,00", "$1/2 price", "$3.")
  is rejected, never priced at a guess;
- rejected: "up to" sales, "from $X" prices ("down from $X" is a former price, kept),
  "under $X" caps, "$X/mo" and "$X monthly" subscriptions, price ranges ("$699 - 1,199";
  one price cut, "drops from $999 to $499" or "$1,299 -> $999", is the price it ends at),
  multi-buys ("2 for $5", "Buy 2 ... for $30"; "Pixel 8 for $499" is a model number),
  per-item prices ("$3 each"), prices after a trade-in, store-wide sales ("... Sale:", "... Deals:", "Event:"),
  memberships, several different prices, no price, free, prices outside the configured
  range, and prices in another currency (an .au/.uk/.ca/... site, "A$", "£", "€", ...).

The product description is the title without its deal terms, the summary sentences that
describe the product (sentences about prices, shipping, coupons, retailers, dates and the
like are dropped) and the details/features lines that are not deal terms.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from pydantic import BaseModel

from deals.agents.money import UnclearPrice, dollar_amounts
from deals.framework.models import Deal, FeedEntry
from deals.framework.product_key import price_cuts

MAX_DESCRIPTION_CHARS = 1000

# --------------------------------------------------------------------------- currency

_FOREIGN_TLDS = {
    "au": "AUD", "nz": "NZD", "uk": "GBP", "ca": "CAD", "ie": "EUR", "de": "EUR", "fr": "EUR", "es": "EUR",
    "it": "EUR", "nl": "EUR", "in": "INR", "sg": "SGD", "hk": "HKD", "jp": "JPY", "mx": "MXN", "br": "BRL", "tw": "TWD",
}  # fmt: skip
_FOREIGN_MARKS = [
    (re.compile(r"(?<![A-Za-z])(?:A|AU)\$|\bAUD\b"), "AUD"),
    (re.compile(r"(?<![A-Za-z])NZ\$|\bNZD\b"), "NZD"),
    (re.compile(r"(?<![A-Za-z])(?:C|CA|CDN)\$|\bCAD\b|\$\s?[\d,.]+\s*(?:CDN|CAD)\b"), "CAD"),
    (re.compile(r"(?<![A-Za-z])HK\$|\bHKD\b"), "HKD"),
    (re.compile(r"(?<![A-Za-z])S\$|\bSGD\b"), "SGD"),
    (re.compile(r"(?<![A-Za-z])NT\$|\bTWD\b"), "TWD"),
    (re.compile(r"(?<![A-Za-z])(?:MX|M)\$|\bMXN\b"), "MXN"),
    (re.compile(r"(?<![A-Za-z])R\$|\bBRL\b"), "BRL"),
    (re.compile(r"£|\bGBP\b"), "GBP"),
    (re.compile(r"€|\bEUR\b"), "EUR"),
    (re.compile(r"₹|\bINR\b|\bRs\.?\s?\d"), "INR"),
]


def _tld(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host.rsplit(".", 1)[-1] if "." in host else ""


def foreign_currency(entry: FeedEntry) -> str | None:
    """The non-USD currency an entry's prices are in (by site or by sign), or None for USD."""
    for url in (entry.feed_url, entry.url):
        code = _FOREIGN_TLDS.get(_tld(url))
        if code:
            return code
    text = f"{entry.title} {entry.summary}"
    for pattern, code in _FOREIGN_MARKS:
        if pattern.search(text):
            return code
    return None


# --------------------------------------------------------------------------- offers that are not one product at one price

_MONEY = r"(?:US\s?)?\$\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?"

_COUNT = r"(?:\d{1,2}|two|three|four|five|six|ten)"
_OFFER_PROBLEMS: list[tuple[re.Pattern[str], str]] = [
    # "up to 60% off", "up to $200 off": a sale; "up to 1,050MB/s" is a spec, not a sale
    (re.compile(r"\bup\s+to\s+(?:\d+\s*%|\$)", re.I), "a sale with 'up to' discounts, not one product at one price"),
    # "from $X" (a starting price), but not "down from $X" / "reduced from $X" (a former price)
    (
        re.compile(rf"(?<!down\s)(?<!reduced\s)(?<!drops\s)(?<!dropped\s)\b(?:from|starting\s+at|starts\s+at|as\s+low\s+as)\s*:?\s*{_MONEY}", re.I),
        "a 'from' price, not one price",
    ),
    (re.compile(rf"\b(?:under|below|less\s+than)\s+{_MONEY}", re.I), "a price cap ('under $X'), not one price"),
    (
        re.compile(
            rf"{_MONEY}\s*(?:/\s*|per\s+|a\s+|an\s+|each\s+)(?:mo|mth|month|yr|year|annum|wk|week|day|night|hour|hr)\b"
            rf"|{_MONEY}\s*(?:monthly|yearly|annually|weekly|nightly)\b",
            re.I,
        ),
        "a subscription or rental price",
    ),
    # "$10 - $40", "$699 - 1,199"; not "$499 - 2024 model", "$15 - 2 Pack", "$189 - 24 hours only"
    (re.compile(rf"{_MONEY}\s*(?:-|–|—|to)\s*(?:{_MONEY}|\d{{1,3}}(?:,\d{{3}})+(?:\.\d{{2}})?\b)", re.I), "a price range"),
    # "2 for $5", "Buy 2 ... for $30", "two for $50"; not "Google Pixel 8 for $499" (a model number)
    (
        re.compile(rf"(?:^|[,;:(\-–—|]\s*|\b(?:buy|get|any|pick)\s+)\b{_COUNT}\s*(?:for|/)\s*{_MONEY}|\bbuy\s+{_COUNT}\b[^$]*\bfor\s+{_MONEY}", re.I),
        "a multi-buy price",
    ),
    # "jeans 2 for $60", "12-packs 3 for $12": a count after a plural noun (a model number follows a name: "Switch 2")
    (re.compile(rf"\b[0-9]*-?[a-z]+s\s+{_COUNT}\s+for\s+{_MONEY}"), "a multi-buy price"),
    (re.compile(rf"{_MONEY}\s*(?:each|ea\.?|apiece|per\s+(?:item|unit|piece|can|bottle|pack))\b", re.I), "a per-item price, not the offer's"),
    (re.compile(r"\b(?:w/|with)\s+(?:eligible\s+|qualifying\s+)?trade[- ]?in\b", re.I), "a price after a trade-in"),
    (re.compile(r"\b(?:buy\s+\d+\s*,?\s*get|bogo\b|b\dg\d\b)", re.I), "a multi-buy offer"),
    (re.compile(r"\b(?:site|store)[- ]?wide\b", re.I), "a store-wide sale"),
    (re.compile(r"\b(?:sale|sales|deals|event|clearance|savings|blowout|markdowns)\s*:", re.I), "a store-wide or category sale"),
    (re.compile(r"\b(?:membership|subscription|free\s+trial)\b", re.I), "a membership or subscription, not a product"),
]


def _without_cut(text: str) -> str:
    """`text` with its price cut ("drops from $999 to $499") replaced by the price it ends at.

    Only a title with exactly one cut: two are two products ("Echo Dot drops to $22.99
    from $49.99, Echo Pop ..."), and the rules below then reject it.
    """
    cuts = price_cuts(text)
    if len(cuts) != 1:
        return text
    cut = cuts[0]
    return f"{text[: cut.start]} ${cut.price:.2f} {text[cut.end :]}"


def offer_problem(title: str) -> str | None:
    """Why a title is not an offer on one product at one price, or None."""
    text = _without_cut(_clean(title))
    for pattern, reason in _OFFER_PROBLEMS:
        if pattern.search(text):
            return reason
    return None


# --------------------------------------------------------------------------- prices in titles

_NOT_THE_PRICE = [
    re.compile(r"\(\s*[^()]*\$[^()]*\)"),  # ($124.18 eBay Plus), (Was $179), ($0 C&C)
    re.compile(rf"\bw/\s*{_MONEY}\+?", re.I),  # free shipping w/ $39
    re.compile(rf"\b(?:orders?|spend(?:ing)?|purchases?|min(?:imum)?\.?)\s+(?:of\s+|over\s+|above\s+)?{_MONEY}\+?", re.I),
    re.compile(rf"\b(?:over|above)\s+{_MONEY}", re.I),
    re.compile(rf"{_MONEY}\s+(?:minimum|min\.?)\b", re.I),  # $30 minimum spend
    re.compile(rf"{_MONEY}\s*off\s+(?:(?:orders?|purchases?)\s+(?:of\s+|over\s+)?)?{_MONEY}\+?", re.I),  # $5 off $50
    re.compile(rf"\+\s*{_MONEY}\s*(?:shipping|s&h|s/h|delivery|del\b|ship)", re.I),
    re.compile(
        rf"(?:\b(?:was|reg\.?|regularly|orig\.?|originally|rrp|msrp|compare\s+at|retail|value|valued\s+at|list\s+price)"
        rf"|(?:^|[,;:(\-–])\s*list)\s*:?\s*{_MONEY}",  # "Schindler's List $9.99": a name, not a former price
        re.I,
    ),
    re.compile(rf"\bsave\s+{_MONEY}", re.I),
    re.compile(
        rf"{_MONEY}\s*(?:off|discount|savings?|credit|back|cash\s*back|gift\s+card|rebate|coupon|in\s+rewards|bonus)\b", re.I
    ),
]
_FREE = re.compile(
    r"\bfree\b(?!\s+(?:shipping|delivery|store\s+pickup|pickup|returns|s&h|ship|w/|with|on|after|for\s+members))", re.I
)


def title_price(title: str) -> tuple[float | None, str]:
    """The single price a title states, or None and the reason there is none."""
    text = _clean(title)
    try:
        dollar_amounts(text)  # every amount in the title, set aside or not, must read cleanly
    except UnclearPrice as exc:
        return None, str(exc)
    text = _without_cut(text)
    for pattern in _NOT_THE_PRICE:
        text = pattern.sub(" ", text)
    values = sorted({round(value, 2) for value in dollar_amounts(text)})
    if not values:
        if _FREE.search(text):
            return None, "free, not a price"
        if re.search(r"\d\s*%\s*off", text, re.I):
            return None, "a percentage discount, no price"
        return None, "no price in the title"
    if len(values) > 1:
        return None, "several different prices: " + ", ".join(f"${v:g}" for v in values)
    return values[0], "price from the title"


# --------------------------------------------------------------------------- product descriptions

_DEAL_TERMS = re.compile(
    r"\$\s?\d|\d\s?%\s*(?:off|savings?|discount|back|less)|"
    r"\b(?:free\s+)?shipping\b|\bships?\b|\bshipped\b|\bdeliver(?:y|ed)\b|\bpromo\b|\bcoupons?\b|\bcode\b|"
    r"\bbuy\s+now\b|\bshop\s+now\b|\bpre-?orders?\b|\bsav(?:e|es|ed|ings?)\b|\blist\s+price\b|\bdeals?\b|"
    r"\bsale\b|\bclearance\b|\bexpires?\b|\bends?\b|\bprice[ds]?\b|\bpricing\b|\bpick-?up\b|\breturns?\b|"
    r"\bexchanges?\b|\bmembers?(?:hip)?\b|\brewards?\b|\bprime\b|\bin\s+stock\b|\bstock\b|\bcheckout\b|"
    r"\bcart\b|\bclip\b|\brebate\b|\bdiscount\w*\b|\blowest\b|\bcheapest\b|\bvalid\b|\btoday\s+only\b|"
    r"\blimited\s+time\b|\bwhile\s+supplies\b|\bin-?store\b|\bretailer\b|\bsold\b|\bordering\b|\borders?\b|"
    r"\bpurchases?\b|\bmarked\s+down\b|\bdrops?\s+to\b|\bdown\s+from\b|\bfree\s+to\s+join\b",
    re.I,
)
_TITLE_CUT = re.compile(
    rf"\s+(?:dropped|slashed|reduced|marked\s+down)\s+(?:from|to)\s+{_MONEY}"
    rf"|\s*[:,;]\s*(?:was|reg\.?|regularly|list|msrp)\s*:?\s*{_MONEY}"
    rf"|\s+(?:for|at|now|only|just|from|is|@|-|–)?\s*{_MONEY}|\s+\+\s*free\b|\s+@\s|\s+w/\s|\s+-\s+\d+%|\s*\(\d+%\s*off\)",
    re.I,
)
_DANGLING = re.compile(r"(?:\s+(?:to|from))+\s*$", re.I)  # "Samsung TV drops to" -> "Samsung TV drops"
_LEADING_TAGS = re.compile(r"^(?:\s*\[[^\]]*\])+\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“(])")


def _clean(text: str) -> str:
    return " ".join(html.unescape(html.unescape(text or "")).split())


def product_name(title: str) -> str:
    """The title without tags like "[PC, Steam]" and without the deal terms after the name."""
    text = _LEADING_TAGS.sub("", _clean(title))
    match = _TITLE_CUT.search(text)
    name = text[: match.start()] if match else text
    name = _DANGLING.sub("", name).strip(" -–—:,;|+")
    return name if len(name) >= 3 else text


def product_description(entry: FeedEntry) -> str:
    """The product in plain words: name, product sentences of the summary, product details."""
    parts = [product_name(entry.title)]
    summary = _clean(entry.summary)
    parts += [s for s in _SENTENCE_END.split(summary) if s and not _DEAL_TERMS.search(s) and len(s) > 12]
    details = [_clean(line) for line in re.split(r"[\n•·]+", entry.details or "")]
    kept = [line for line in details if line and not _DEAL_TERMS.search(line)]
    text = ". ".join(p.rstrip(". ") for p in parts if p)
    if kept:
        text = f"{text}. " + "; ".join(kept)
    text = text.strip()
    if text and text[-1] not in ".!?":
        text += "."
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text


# --------------------------------------------------------------------------- the extractor


class RuleOutcome(BaseModel):
    """What the rules made of one entry: a deal, or the reason there is none."""

    entry_key: str
    deal: Deal | None = None
    reason: str


def extract(entry: FeedEntry, *, min_price: float, max_price: float) -> RuleOutcome:
    """A Deal from one entry by rule, or the reason it is not one."""

    def reject(reason: str) -> RuleOutcome:
        return RuleOutcome(entry_key=entry.key, reason=reason)

    currency = foreign_currency(entry)
    if currency:
        return reject(f"prices in {currency}, not USD")
    problem = offer_problem(entry.title)
    if problem:
        return reject(problem)
    if entry.price is not None:
        price, source = entry.price, "price stated by the feed"
    else:
        found, source = title_price(entry.title)
        if found is None:
            return reject(source)
        price = found
    if price <= 0:
        return reject("free, not a price")
    if not min_price <= price <= max_price:
        return reject(f"price ${price:g} outside ${min_price:g}-${max_price:g}")
    description = product_description(entry)
    if len(description) < 3:
        return reject("no product description")
    deal = Deal(entry_key=entry.key, product_description=description, price=round(price, 2), url=entry.url)
    return RuleOutcome(entry_key=entry.key, deal=deal, reason=source)


__all__ = [
    "RuleOutcome",
    "extract",
    "foreign_currency",
    "offer_problem",
    "product_description",
    "product_name",
    "title_price",
]
