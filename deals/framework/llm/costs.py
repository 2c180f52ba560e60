"""Estimated cost of LLM calls: a small price table in USD per million tokens.

Prices are list prices for standard (non-batch, non-cached) usage as published by
OpenAI and Anthropic in 2025; they are estimates for the user's information, not a
bill. A model name matches the longest table entry that is a prefix of it at a word
boundary (`gpt-4o-mini-2024-07-18` -> `gpt-4o-mini`); a gateway prefix such as
`openai/` (OpenRouter) is ignored. Unknown and local models (Ollama, vLLM) cost 0.
Callers may pass their own table (same shape) to override or extend this one.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field


class ModelPrice(BaseModel):
    """USD per one million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


PRICES_PER_MTOK: dict[str, ModelPrice] = {
    # OpenAI
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40),
    "gpt-5": ModelPrice(input=1.25, output=10.00),
    "gpt-5-mini": ModelPrice(input=0.25, output=2.00),
    "gpt-5-nano": ModelPrice(input=0.05, output=0.40),
    "o4-mini": ModelPrice(input=1.10, output=4.40),
    # Anthropic
    "claude-3-5-haiku": ModelPrice(input=0.80, output=4.00),
    "claude-haiku-4-5": ModelPrice(input=1.00, output=5.00),
    "claude-3-7-sonnet": ModelPrice(input=3.00, output=15.00),
    "claude-sonnet-4": ModelPrice(input=3.00, output=15.00),
    "claude-opus-4": ModelPrice(input=15.00, output=75.00),
    "claude-opus-4-5": ModelPrice(input=5.00, output=25.00),
}

_BOUNDARY = "-:@."


def price_of(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The table entry for `model` (longest prefix at a boundary), or None when unknown."""
    table = PRICES_PER_MTOK if prices is None else prices
    name = model.strip().lower().rsplit("/", 1)[-1]
    best: str | None = None
    for key in table:
        k = key.lower()
        if name == k or (name.startswith(k) and name[len(k)] in _BOUNDARY):
            if best is None or len(k) > len(best):
                best = key
    return table[best] if best is not None else None


def estimate_cost(model: str, tokens_in: int, tokens_out: int, prices: Mapping[str, ModelPrice] | None = None) -> float:
    """Estimated USD cost of one call; 0.0 for unknown or local models."""
    price = price_of(model, prices)
    if price is None:
        return 0.0
    return round((tokens_in * price.input + tokens_out * price.output) / 1_000_000, 8)


__all__ = ["PRICES_PER_MTOK", "ModelPrice", "estimate_cost", "price_of"]
