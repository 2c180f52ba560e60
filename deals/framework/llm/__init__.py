"""The LLM client layer shared by the agents (scanner, frontier pricer).

    LLMClient      one configured provider: structured() and text()
    LLMResult      a reply plus tokens in/out, estimated cost, mode and duration
    LLMOutputError an LLMError for replies that arrived but were unusable (carries tokens)
    make_llm       LLMClient from `settings.llm`, or None when the provider is "none"
    estimate_cost  USD estimate from the price table in `costs`
"""

from deals.framework.llm.client import LLMClient, LLMOutputError, LLMResult, make_llm
from deals.framework.llm.costs import PRICES_PER_MTOK, ModelPrice, estimate_cost, price_of
from deals.framework.llm.parsing import coerce, extract_json_object, extract_number

__all__ = [
    "PRICES_PER_MTOK",
    "LLMClient",
    "LLMOutputError",
    "LLMResult",
    "ModelPrice",
    "coerce",
    "estimate_cost",
    "extract_json_object",
    "extract_number",
    "make_llm",
    "price_of",
]
