"""Turning the specialist model's output into a price, robustly, or refusing.

Two ways to read a price after the prompt's "Price is $":

greedy
    The model writes its most likely answer; `parse_price` takes the first number in it
    (thousands separators allowed) and refuses nonsense with a `PricingError`: no number,
    a non-finite value, a value outside the configured range.

expected
    A probability-weighted average over the numeric answers the model considers. The
    answers are enumerated as a small search over *number tokens* (tokens made only of
    ASCII digits, `NumericVocab`): at each step every live prefix of digits is either
    finished (probability of any non-digit token next: the end of turn) or extended by
    its most likely digit tokens; prefixes are pruned to a beam per item. This works
    whatever the tokenizer does with numbers:

    - Llama 3 style (tokens of up to three digits): "149" is one token, so the first
      step already holds whole prices and the search is an average over the first
      answer token;
    - Qwen / SmolLM2 style (one digit a token): "149" is "1", "4", "9", and the search
      walks the digits, so "1..." is not mistaken for $1.

    The average is taken over the finished candidates inside the price range, weighted by
    their probabilities renormalised to sum to one (a beam never holds all of a spread-out
    distribution: it is the average of the likeliest prices, pulled from the mode towards
    where the probability lies). When the model puts less than `min_mass` on a number
    token as the first answer token (it is not answering with a number), when no
    candidate is found, or when the vocabulary has no number tokens, the caller falls
    back to greedy.

The search is model-agnostic: it asks a `Stepper` for next-token log-probabilities
(`start()` for the prompts, `extend(parents, tokens)` for prefixes grown by one token),
so it is tested on crafted distributions and run on a real model by
`deals.pricer.predict` (with a KV cache).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from deals.framework.errors import PricingError

_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_ASCII_DIGITS = re.compile(r"^[0-9]+$")


def parse_price(text: str, low: float, high: float) -> float:
    """The first number in `text` as a price in [low, high], else a `PricingError`."""
    match = _NUMBER.search(text or "")
    if not match:
        raise PricingError(f"the model answered no number: {text[:60]!r}")
    whole, fraction = match.group(1).replace(",", ""), match.group(2) or ""
    value = float(whole + fraction)
    if match.group(0).lstrip().startswith("-"):
        value = -value
    return check_price(value, low, high, text)


def check_price(value: float, low: float, high: float, text: str | None = None) -> float:
    """`value` if it is a finite price within [low, high], else a `PricingError`."""
    shown = f" (answer {text[:60]!r})" if text is not None else ""
    if not math.isfinite(value):
        raise PricingError(f"the model's price is not finite{shown}")
    if not low <= value <= high:
        raise PricingError(f"the model's price ${value:,.2f} is outside ${low:,.2f}-${high:,.2f}{shown}")
    return value


def is_digits(token: str) -> bool:
    """A number token: one or more ASCII digits and nothing else (no spaces, no superscripts)."""
    return bool(_ASCII_DIGITS.match(token))


class NumericVocab:
    """The tokens of a vocabulary that are made of ASCII digits only, as (ids, strings)."""

    def __init__(self, ids: Sequence[int], texts: Sequence[str], vocab_size: int) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.texts = list(texts)
        self.vocab_size = vocab_size
        self.max_digits = max((len(t) for t in self.texts), default=0)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> NumericVocab:
        """From the decoded text of every token id (index = id)."""
        pairs = [(i, t) for i, t in enumerate(tokens) if is_digits(t)]
        return cls([i for i, _ in pairs], [t for _, t in pairs], len(tokens))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, vocab_size: int | None = None) -> NumericVocab:
        """From a transformers tokenizer: vocabulary entries that decode to digits only.

        Raw vocabulary strings are screened first (byte-level BPE and SentencePiece keep
        ASCII digits as they are), then each candidate is confirmed by decoding it.
        """
        size = vocab_size or len(tokenizer)
        ids, texts = [], []
        for raw, index in tokenizer.get_vocab().items():
            if index >= size or not is_digits(raw.lstrip("▁Ġ")):
                continue
            decoded = tokenizer.decode([index])
            if is_digits(decoded):
                ids.append(index)
                texts.append(decoded)
        order = np.argsort(ids)
        return cls([ids[i] for i in order], [texts[i] for i in order], size)


class Stepper(Protocol):
    """Next-token log-probabilities for growing prefixes of the answer."""

    def start(self) -> np.ndarray:
        """Log-probs after each prompt: shape (items, vocab)."""
        ...

    def extend(self, parents: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """Log-probs after row `parents[i]` of the previous call grown by `tokens[i]`: (len(parents), vocab)."""
        ...


@dataclass
class SearchResult:
    """The finished numeric answers of one item and what they add up to."""

    candidates: list[tuple[float, float]] = field(default_factory=list)  # (value, probability)
    mass: float = 0.0  # probability of all finished candidates within the range
    numeric_mass: float = 0.0  # probability that the first answer token is a number token

    def expected(self) -> float:
        return sum(v * p for v, p in self.candidates) / self.mass

    def best(self) -> float:
        return max(self.candidates, key=lambda c: c[1])[0]


@dataclass
class _Beam:
    item: int
    row: int  # its row in the last log-probs (for a child: its parent's row)
    digits: str
    logp: float
    token: int = -1  # the token that grew it (children only)


def search_numbers(
    stepper: Stepper,
    vocab: NumericVocab,
    n_items: int,
    *,
    low: float,
    high: float,
    beam: int = 6,
    min_prob: float = 1e-4,
) -> list[SearchResult]:
    """Enumerate the likely numeric answers of each item (see the module docstring)."""
    results = [SearchResult() for _ in range(n_items)]
    if len(vocab) == 0 or n_items == 0:
        return results
    max_digits = len(str(int(high)))
    beams = [_Beam(item=i, row=i, digits="", logp=0.0) for i in range(n_items)]
    logprobs = stepper.start()
    while beams:
        children: list[_Beam] = []
        for b in beams:
            row = logprobs[b.row]
            numeric = row[vocab.ids]
            digit_mass = float(np.exp(numeric).sum())
            if not b.digits:
                results[b.item].numeric_mass = digit_mass
            else:
                finish = math.log(max(1.0 - digit_mass, 1e-12)) + b.logp
                value = float(int(b.digits))
                if low <= value <= high and finish > math.log(min_prob):
                    results[b.item].candidates.append((value, math.exp(finish)))
            for k in np.argsort(-numeric)[:beam]:
                text = vocab.texts[k]
                digits = b.digits + text
                logp = b.logp + float(numeric[k])
                if logp < math.log(min_prob) or len(digits) > max_digits:
                    continue
                if digits.startswith("0"):  # prices never start with 0 in training
                    continue
                children.append(_Beam(item=b.item, row=b.row, digits=digits, logp=logp, token=int(vocab.ids[k])))
        kept: list[_Beam] = []
        for item in range(n_items):
            mine = sorted((c for c in children if c.item == item), key=lambda c: -c.logp)[:beam]
            kept.extend(mine)
        if not kept:
            break
        logprobs = stepper.extend([c.row for c in kept], [c.token for c in kept])
        beams = [_Beam(item=c.item, row=j, digits=c.digits, logp=c.logp) for j, c in enumerate(kept)]
    for r in results:
        r.mass = sum(p for _, p in r.candidates)
    return results


def expected_prices(results: Sequence[SearchResult], *, min_mass: float = 0.5) -> list[float | None]:
    """The expected price per item, or None where the first answer token is a number with less
    than `min_mass` probability, or no candidate was found."""
    return [r.expected() if r.candidates and r.numeric_mass >= min_mass else None for r in results]


def expected_from_top_logprobs(
    top: Sequence[tuple[str, float]], *, low: float, high: float, min_mass: float = 0.5
) -> float | None:
    """Expected price from the alternatives of a ONE-token answer (an OpenAI-style `top_logprobs`).

    Only meaningful where a whole price is one token (multi-digit number tokens, Llama 3
    style): so it answers None unless some alternative has several digits, and None when
    the numeric alternatives in range hold less than `min_mass`.
    """
    numeric = [(t, math.exp(lp)) for t, lp in top if is_digits(t) and not t.startswith("0")]
    if not any(len(t) > 1 for t, _ in numeric):
        return None
    inside = [(float(int(t)), p) for t, p in numeric if low <= int(t) <= high]
    mass = sum(p for _, p in inside)
    if not inside or mass < min_mass:
        return None
    return sum(v * p for v, p in inside) / mass


__all__ = [
    "NumericVocab",
    "SearchResult",
    "Stepper",
    "check_price",
    "expected_from_top_logprobs",
    "expected_prices",
    "is_digits",
    "parse_price",
    "search_numbers",
]
