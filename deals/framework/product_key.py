"""Which product a deal is: a canonical key across feeds and days, and the feed's "was" price.

    product_key("Sony WH-1000XM5 Headphones for $248", "https://www.amazon.com/dp/B09XS7JWHH?tag=x")
        -> "amazon:B09XS7JWHH"                        a retailer's product id in the link wins,
    product_key("Sony WH-1000XM5 Headphones for $248 + free shipping", "https://dealnews.com/...")
        -> "model:WH1000XM5"                          then a model number in the title,
    product_key("adidas Men's Samoa Shoes for $29 + free shipping", "https://dealnews.com/...")
        -> "title:adidas mens samoa shoes"            then the title without the deal's terms.

Retailer ids read from links: Amazon (ASIN: /dp/, /gp/product/, /gp/aw/d/), Walmart (/ip/.../ID),
Best Buy (skuId= or /ID.p), Target (/A-ID), eBay (/itm/ID), Newegg (Item=, /p/ID), Home Depot
(/p/.../ID) and B&H (/c/product/ID-REG). A model number is a token of at least four
characters mixing letters and digits that is not a quantity (`65W`, `4K`, `256GB`, `2-Pack`,
`USB3`); hyphens and dots inside it are dropped, so `WH-1000XM5` and `WH1000XM5` are one key.
The title key drops prices, the deal's terms after "for $"/"at"/"+", punctuation and
case, so the same product listed by two feeds with different deal wording meets.

`list_price(text)` reads the feed's own claim of a former price ("down from $50", "was
$179", "$80 list price", "reg. $139.90", "originally $60", "MSRP $99", "drops from $999 to
$499"): shown beside the independent estimate, never used by it.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

MAX_KEY_CHARS = 120

# --------------------------------------------------------------------------- retailer ids in links

_ASIN = re.compile(r"/(?:dp|gp/product|gp/aw/d|exec/obidos/asin|o/asin)/([A-Z0-9]{10})(?:[/?]|$)", re.I)
_RETAILER_PATHS: list[tuple[str, str, re.Pattern[str]]] = [
    ("walmart", "walmart.com", re.compile(r"/ip/(?:[^/]+/)?(\d{5,})(?:[/?]|$)")),
    ("bestbuy", "bestbuy.com", re.compile(r"/(\d{6,8})\.p(?:[/?]|$)")),
    ("target", "target.com", re.compile(r"/A-(\d{6,})(?:[/?#]|$)")),
    ("ebay", "ebay.com", re.compile(r"/itm/(?:[^/]+/)?(\d{9,})(?:[/?]|$)")),
    ("newegg", "newegg.com", re.compile(r"/p/([A-Z0-9]{6,})(?:[/?]|$)", re.I)),
    ("homedepot", "homedepot.com", re.compile(r"/p/(?:[^/]+/)?(\d{9})(?:[/?]|$)")),
    ("bhphoto", "bhphotovideo.com", re.compile(r"/c/product/(\d+)-REG", re.I)),
]
_RETAILER_QUERY = {"bestbuy.com": "skuid", "newegg.com": "item"}


def retailer_id(url: str) -> str | None:
    """'amazon:B09XS7JWHH' and the like, from a retailer's product link; None for other links."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    if not host:
        return None
    if host == "amazon.com" or host.endswith(".amazon.com") or host.startswith("amazon."):
        found = _ASIN.search(parts.path)
        return f"amazon:{found.group(1).upper()}" if found else None
    for name, domain, pattern in _RETAILER_PATHS:
        if host == domain or host.endswith("." + domain):
            query_key = _RETAILER_QUERY.get(domain)
            if query_key:
                values = {k.lower(): v for k, v in parse_qs(parts.query).items()}.get(query_key)
                if values and re.fullmatch(r"[A-Za-z0-9-]{5,24}", values[0]):
                    return f"{name}:{values[0].upper()}"
            found = pattern.search(parts.path)
            return f"{name}:{found.group(1).upper()}" if found else None
    return None


# --------------------------------------------------------------------------- model numbers

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")
_QUANTITY = re.compile(
    r"^\d+(?:\.\d+)?(?:-?(?:k|p|gb|tb|mb|w|v|mah|wh|ft|in|inch|mm|cm|m|hz|khz|ghz|oz|lb|lbs|pk|pack|pc|pcs|ct|count|qt|gal|l|ml|x|"
    r"piece|pieces|port|ports|bit|core|cores|th|st|nd|rd|mp|fps|ah|a|g|kg|d|s|ply|gen|way|speed|day|days|hr|hrs|min|sec)s?)$",
    re.I,
)
_GENERIC = re.compile(r"^(?:usb\d*|usb-?c\d*|wifi\d*|wi-?fi\d*|ddr\d+|gen\d+|pcie\d*|hdmi\d*(?:\.\d)?|ipx?\d|ip\d\d|mp\d|h26\d|x26\d|"
                      r"rtx|gtx|ps\d|xbox|qled|oled|led|lcd|\d+x\d+|[a-z]\d|\d+-in-\d+|\d+in\d+|covid-?19|cat\d+[a-z]?|"
                      r"a\d{1,2}|m\d|i\d|bt\d(?:\.\d)?|\d+th|\d+nd|\d+rd|\d+st|q\d|k\d)$", re.I)


def model_numbers(title: str) -> list[str]:
    """Tokens of `title` that look like model numbers, normalised (upper case, no hyphens, dots or slashes)."""
    out: list[str] = []
    for token in _TOKEN.findall(title):
        if token.startswith(("$", "#")) or "/" in token and not re.search(r"[A-Za-z]", token):
            continue
        if not (re.search(r"[A-Za-z]", token) and re.search(r"\d", token)):
            continue
        if _QUANTITY.match(token) or _GENERIC.match(token):
            continue
        norm = re.sub(r"[\-./]", "", token).upper()
        if len(norm) >= 4 and norm not in out:
            out.append(norm)
    return out


# --------------------------------------------------------------------------- titles

_DEAL_TERMS = re.compile(
    r"\s+(?:(?:dropped|slashed|reduced|marked\s+down)\s+)?(?:for|at|from|to|only|just|now|under|starting at)\s+(?:US)?\$.*$"
    r"|\s+(?:US)?\$\d.*$|\s+\+\s+.*$|\s+-\s+.*$|\s*\((?:was|reg|list)\b.*$|\s*[:,;]\s*(?:was|reg|list|msrp)\b.*$",
    re.I,
)
_NOT_WORD = re.compile(r"[^a-z0-9 ]+")


def normalised_title(title: str) -> str:
    """The product part of a deal title: lower case, no prices or deal terms, words only."""
    text = " ".join(str(title).split())
    text = _DEAL_TERMS.sub("", text)
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = _NOT_WORD.sub(" ", text)
    return " ".join(text.split())[:MAX_KEY_CHARS]


def product_key(title: str, url: str = "") -> str:
    """The canonical product key of a deal (see the module docstring)."""
    found = retailer_id(url) if url else None
    if found:
        return found
    models = model_numbers(_DEAL_TERMS.sub("", " ".join(str(title).split())))
    if models:
        return "model:" + models[0]
    text = normalised_title(title)
    return "title:" + (text or "untitled")


# --------------------------------------------------------------------------- the feed's "was" price


def _money(name: str) -> str:
    return rf"(?:US)?\$\s?(?P<{name}>\d{{1,3}}(?:,\d{{3}})+(?:\.\d{{1,2}})?|\d+(?:\.\d{{1,2}})?)(?![\d,.]*\d)"


_AMOUNT = _money("amount")
_LIST_PATTERNS = [
    re.compile(r"\bdown from (?:the |its |a |an )?(?:list (?:price )?(?:of )?|regular (?:price )?(?:of )?)?" + _AMOUNT, re.I),
    re.compile(r"\b(?:was|reg\.?|regularly|regular price|originally|orig\.?|list(?: price)?|msrp|rrp)\s*(?:of\s*|is\s*|:\s*)?" + _AMOUNT, re.I),
    re.compile(_AMOUNT + r"\s+(?:list(?: price)?|msrp|regular price|value)\b", re.I),
]


def _amount(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if 0 < value < 1_000_000 else None


def list_price(*texts: str | None, price: float | None = None) -> float | None:
    """The former/list price a feed claims in `texts` (the first text that has one), or None.

    `price`: the offer's price, when known. A claim at or below it is not a former price
    (the "List" of "Schindler's List $9.99" is a title, not a claim), and a price cut counts
    only when it ends at it ("Echo Pop also drops from $39.99 to $17.99" says nothing of
    the Echo Dot at $22.99).
    """
    for text in texts:
        if not text:
            continue
        found = [m.group("amount") for pattern in _LIST_PATTERNS for m in pattern.finditer(text)]
        cuts = [cut.former for cut in price_cuts(text) if price is None or abs(cut.price - price) < 0.005]
        for value in [_amount(v) for v in found] + cuts:
            if value is not None and (price is None or value > price):
                return value
    return None


# --------------------------------------------------------------------------- price cuts

_CUT_VERB = r"(?:drops?|dropped|falls?|fell|cut|slashed|reduced|marked\s+down|down|price\s+drop)"
_NOT_A_PRICE_AFTER = r"(?!\s*(?:off|back|shipping|s&h|delivery|credit|rebate|cash|bonus|value|gift|in\s+rewards)\b)"


_CUT_PATTERNS = [
    # "drops from $999 to $499"
    re.compile(rf"\b{_CUT_VERB}\s+from\s+{_money('former')}\s+to\s+{_money('price')}{_NOT_A_PRICE_AFTER}", re.I),
    # "drops to $499 from $999", "drops to $499 (from $999)", "falls to $499, down from $999"
    re.compile(
        rf"\b{_CUT_VERB}\s+to\s+{_money('price')}{_NOT_A_PRICE_AFTER}\s*,?\s*\(?\s*(?:down\s+)?from\s+(?:the\s+|its\s+)?{_money('former')}\)?",
        re.I,
    ),
    # "$1,299 -> $999"
    re.compile(rf"{_money('former')}\s*(?:→|->|⇒)\s*{_money('price')}{_NOT_A_PRICE_AFTER}", re.I),
]


class PriceCut(NamedTuple):
    """A price cut a text states: from `former` down to `price`, at text[start:end]."""

    former: float
    price: float
    start: int
    end: int


def price_cuts(text: str) -> list[PriceCut]:
    """The price cuts `text` states, in order: a cut verb or an arrow, and a price that goes down.

    "drops from $999 to $499", "drops to $499 (from $999)", "$1,299 -> $999" are cuts;
    "from $10 to $40" (a range), "TVs $999 to $499" (models, no cut verb) and
    "$10 to $5 shipping" / "$100 to $50 back" (not what the product costs) are not.
    """
    cuts: list[PriceCut] = []
    for pattern in _CUT_PATTERNS:
        for m in pattern.finditer(text):
            former, price = _amount(m.group("former")), _amount(m.group("price"))
            overlaps = any(m.start() < c.end and c.start < m.end() for c in cuts)
            if former is not None and price is not None and price < former and not overlaps:
                cuts.append(PriceCut(former, price, m.start(), m.end()))
    return sorted(cuts, key=lambda c: c.start)


__all__ = ["PriceCut", "list_price", "model_numbers", "normalised_title", "price_cuts", "product_key", "retailer_id"]
