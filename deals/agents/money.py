"""Money in feed text: stated prices and the dollar amounts in titles, read strictly.

    stated_price("$1,299.00")      1299.0   a field that states a price (dealnews:price):
    stated_price("Free")           0.0      the whole field must be one clean amount,
    stated_price("$1e12")          None     else None
    dollar_amounts("Mouse $29.99, free shipping")    [29.99]
    dollar_amounts("Mouse $1e12")                    raises UnclearPrice

`price-parser` reads the amounts (currency signs, thousands and decimal separators,
"free"); on top of it one rule keeps the rule scanner from guessing: a dollar amount is
`$` and digits in US form (`1,299`, `1299`, `29.99`, `2.5`) that END at a word boundary.
Anything glued to it (`$1e12`, `$2.5e3`, `$5x`, `$1/2 price`), commas that are not
thousands separators (`$5,00`, `$12,34,567`) and a dangling point (`$3.`) make the text's
money unclear: `UnclearPrice`, and the entry is rejected rather than priced at $1, $2.50,
$5 or $3 and sent as a 99%-off alert.
"""

from __future__ import annotations

import html
import re

from price_parser import Price

# `$` (optionally "US$"/"US $") and everything glued to the digits after it.
_TOKEN = re.compile(r"(?:\bUS\s?)?\$\s?(?P<number>\d[\w.,/%+-]*)")
_US_NUMBER = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?")
_TRAILING = ",;:!?)]}'\"+"  # punctuation that may follow an amount ("$39+" is a threshold, set aside elsewhere)
_FREE = frozenset({"free", "$0", "0", "$0.00", "0.00"})


class UnclearPrice(ValueError):  # noqa: N818 - reads as a reason
    """Text with money in it that does not read as clean dollar amounts."""


def _amount(number: str) -> float | None:
    if not _US_NUMBER.fullmatch(number):
        return None
    amount = Price.fromstring("$" + number, currency_hint="USD", decimal_separator=".").amount
    return None if amount is None else float(amount)


def dollar_amounts(text: str) -> list[float]:
    """Every dollar amount in `text`, in order; `UnclearPrice` when any `$` amount is not clean."""
    amounts: list[float] = []
    for match in _TOKEN.finditer(text):
        number = match.group("number")
        stripped = number.rstrip(_TRAILING)
        # a trailing comma or point is punctuation only when nothing follows but space or the end
        value = _amount(stripped)
        if value is None:
            raise UnclearPrice(f"unclear price {match.group(0)!r}")
        amounts.append(value)
    return amounts


def stated_price(text: str | None, currency: str | None = None) -> float | None:
    """A price stated in a field: "$29.99", "29.99", "1,299.00", "USD 29.99", "Free" (0.0); else None.

    A currency other than USD (as an attribute or in the text) gives None: prices are USD.
    """
    if text is None:
        return None
    if currency and currency.strip().upper() not in ("USD", "US$", "$"):
        return None
    value = " ".join(html.unescape(text).split())
    if value.lower() in _FREE:
        return 0.0
    parsed = Price.fromstring(value, currency_hint="USD", decimal_separator=".")
    if parsed.amount is None or parsed.amount_text is None:
        return None
    if parsed.currency not in (None, "$", "USD", "US$"):
        return None
    rest = value.replace(parsed.amount_text, "", 1)
    if parsed.currency:
        rest = rest.replace(parsed.currency, "", 1)
    if rest.strip(" ") or not _US_NUMBER.fullmatch(parsed.amount_text):
        return None  # something besides one clean amount: not guessed
    return float(parsed.amount)


__all__ = ["UnclearPrice", "dollar_amounts", "stated_price"]
