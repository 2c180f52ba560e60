"""THE prompt of the specialist pricer: one format, used by training and serving alike.

A product is priced as a short chat, rendered with the model's own chat template::

    system     You estimate what products cost. Reply with the price in whole US dollars only.
    user       How much does this cost to the nearest dollar?

               <description, truncated to fit the token budget>
    assistant  Price is $<answer>

The assistant turn is *pre-filled* with `ANSWER_PREFIX` ("Price is $"): the prompt the
model sees ends inside the assistant message, and the model only writes the number and
the end of its turn. Training masks everything before the answer, so the loss covers
only the price tokens and the end-of-turn token (see `PricePrompt.example`). Serving renders
exactly the same text (`PricePrompt.prompt`); a remote OpenAI-compatible server (vLLM) gets
the same messages with the assistant pre-fill and `continue_final_message`
(`remote_messages`, `REMOTE_EXTRA_BODY`), so its chat template renders the same string.

Prices are **whole dollars** (`format_price`: 123.45 -> "123", rounded half up, at least
1), as the course did: the answer is 1-3 tokens instead of 4-6, the cents of a list price
carry almost no signal (mostly .99/.00) and under $0.50 of error; and on tokenizers whose
number tokens hold up to three digits (Llama 3) every price below $1,000 is ONE token,
which makes the probability-weighted (expected) decoding of `deals.pricer.decoding`
exact over the first answer token.

Tokenizers without a chat template (many base models) get `FALLBACK_CHAT_TEMPLATE`, a
plain-text layout like the course's ("<system>\\n\\n<question>\\n\\n<description>\\n\\n
Price is $<answer><eos>");
`ensure_chat_template` installs it and the tokenizer saved with a trained adapter keeps
it, so serving renders the same text (vLLM: `--chat-template ADAPTER/chat_template.jinja`).

Bump `PROMPT_VERSION` whenever any of this changes: a trained adapter records the version
it was trained with and the specialist refuses to serve a different one.
"""

from __future__ import annotations

import math
import re
from typing import Any

PROMPT_VERSION = "pricer-chat-v1"
SYSTEM_PROMPT = "You estimate what products cost. Reply with the price in whole US dollars only."
QUESTION = "How much does this cost to the nearest dollar?"
ANSWER_PREFIX = "Price is $"
MAX_DESCRIPTION_CHARS = 4000  # descriptions are cut to this before tokenising (cheap guard)
ANSWER_TOKEN_BUDGET = 8  # tokens kept free for the answer and the end of turn
CHARS_PER_TOKEN = 4  # for truncation without a tokenizer (remote serving)

# vLLM (and other servers following its chat API) continue the pre-filled assistant turn
# instead of opening a new one when asked with these extra request fields.
REMOTE_EXTRA_BODY: dict[str, Any] = {"continue_final_message": True, "add_generation_prompt": False}

FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{ message['content'] }}{{ eos_token }}"
    "{%- else -%}{{ message['content'] + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def format_price(price: float) -> str:
    """The answer text for a price: whole dollars, rounded half up, at least 1 ("123")."""
    if not math.isfinite(price) or price <= 0:
        raise ValueError(f"cannot format price {price!r}")
    return str(max(1, math.floor(price + 0.5)))


def clean_description(text: str) -> str:
    """Whitespace folded, blank-line runs collapsed, cut to `MAX_DESCRIPTION_CHARS`."""
    text = _SPACES.sub(" ", text.replace("\r", "")).strip()
    return _BLANK_LINES.sub("\n\n", text)[:MAX_DESCRIPTION_CHARS]


def user_message(description: str) -> str:
    return f"{QUESTION}\n\n{description}"


def messages(description: str) -> list[dict[str, str]]:
    """System and user messages for one (already truncated) description."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_message(description)}]


def remote_messages(description: str) -> list[dict[str, str]]:
    """What a remote server is sent: the messages plus the pre-filled assistant turn."""
    return [*messages(description), {"role": "assistant", "content": ANSWER_PREFIX}]


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the fallback one; True if it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def _render(tokenizer: Any, description: str) -> str:
    return tokenizer.apply_chat_template(remote_messages(description), tokenize=False, continue_final_message=True)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_description(description: str, max_tokens: int, tokenizer: Any | None = None) -> str:
    """The description cut to at most `max_tokens` tokens (about 4 characters a token without a tokenizer)."""
    text = clean_description(description)
    if max_tokens <= 0:
        return ""
    if tokenizer is None:
        limit = max_tokens * CHARS_PER_TOKEN
        if len(text) <= limit:
            return text
        cut = text[:limit]
        space = cut.rfind(" ")
        return (cut[:space] if space > limit // 2 else cut).rstrip()
    ids = _encode(tokenizer, text)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).rstrip()


class PricePrompt:
    """The prompt format bound to one tokenizer and sequence length (what training and serving share).

    `prompt(description)` is the exact text the model continues; `example(description,
    price)` the token ids and loss labels of one training example.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        ensure_chat_template(tokenizer)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.overhead = len(_encode(tokenizer, _render(tokenizer, "")))
        self.budget = max_length - self.overhead - ANSWER_TOKEN_BUDGET
        if self.budget < 8:
            raise ValueError(
                f"max_length={max_length} leaves {self.budget} tokens for the description "
                f"(the prompt itself takes {self.overhead}); raise max_length"
            )
        self._end = self._end_of_turn()
        self.stop_ids = self._stop_ids()

    def _end_of_turn(self) -> str:
        """The text after the answer: the template's end of turn up to its first special token, or EOS."""
        tokenizer = self.tokenizer
        full = tokenizer.apply_chat_template(
            [*messages("x"), {"role": "assistant", "content": ANSWER_PREFIX + "1"}], tokenize=False
        )
        prefix = _render(tokenizer, "x") + "1"
        if not full.startswith(prefix):
            raise ValueError("the chat template renders the pre-filled answer inconsistently; set a chat template")
        tail = full[len(prefix) :]
        specials = sorted((s for s in tokenizer.all_special_tokens if s and s in tail), key=tail.find)
        if specials:
            return tail[: tail.find(specials[0]) + len(specials[0])]
        return tail.rstrip() + (tokenizer.eos_token or "")

    def _stop_ids(self) -> list[int]:
        ids: list[int] = []
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        end = _encode(self.tokenizer, self._end)
        if end and end[-1] not in ids:
            ids.append(int(end[-1]))
        return ids

    def prompt(self, description: str, *, budget: int | None = None) -> str:
        """The text the model continues: chat template, truncated description, "Price is $"."""
        budget = self.budget if budget is None else budget
        return _render(self.tokenizer, truncate_description(description, budget, self.tokenizer))

    def prompt_ids(self, description: str) -> list[int]:
        """`prompt()` tokenised, guaranteed to leave room for the answer within `max_length`."""
        budget = self.budget
        for _ in range(4):  # decode/encode round trips can add a token or two
            ids = _encode(self.tokenizer, self.prompt(description, budget=budget))
            if len(ids) <= self.max_length - ANSWER_TOKEN_BUDGET:
                return ids
            budget -= len(ids) - (self.max_length - ANSWER_TOKEN_BUDGET)
        raise ValueError(f"cannot fit the description into max_length={self.max_length}")

    def completion(self, price: float) -> str:
        """What the model must write after the prompt: the answer and the end of its turn."""
        return format_price(price) + self._end

    def example(self, description: str, price: float) -> dict[str, list[int]]:
        """Token ids and labels of one training example; labels are -100 except on the answer.

        Prompt and completion are tokenised separately, as at inference (where the model
        continues the tokenised prompt), so the labelled tokens are exactly the tokens the
        model must generate: the price digits and the end of turn.
        """
        prompt_ids = self.prompt_ids(description)
        answer_ids = _encode(self.tokenizer, self.completion(price))
        return {"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids}


__all__ = [
    "ANSWER_PREFIX",
    "ANSWER_TOKEN_BUDGET",
    "FALLBACK_CHAT_TEMPLATE",
    "PROMPT_VERSION",
    "QUESTION",
    "REMOTE_EXTRA_BODY",
    "SYSTEM_PROMPT",
    "PricePrompt",
    "clean_description",
    "ensure_chat_template",
    "format_price",
    "messages",
    "remote_messages",
    "truncate_description",
    "user_message",
]
