"""The specialist pricer agent: the fine-tuned price model, served in-process or remotely.

Registered as pricer "specialist" (`create_pricer("specialist", settings, adapter=DIR)`).

In-process (the default): the trained output directory of `deals train`
(`adapter=`, else `specialist.adapter`, else DEALS_HOME/models/specialist) is loaded
with transformers + peft on `specialist.device` (CUDA when present, else CPU), lazily on
the first estimate, and descriptions are priced in left-padded batches of
`specialist.batch_size` with `specialist.decoding` (greedy digits, or the
probability-weighted "expected" price; see `deals.pricer.decoding`).

Remote: with `specialist.base_url`, an OpenAI-compatible server that serves the adapter
as model `specialist.model`, e.g. vLLM::

    vllm serve Qwen/Qwen2.5-7B --enable-lora --lora-modules pricer=/path/to/output --max-lora-rank 32

Each description is sent as the shared prompt's messages with the assistant turn
pre-filled ("Price is $") and vLLM's `continue_final_message` (see deploy/vllm.md), so
the server renders exactly the training prompt. With "expected" decoding the request
asks for the top log-probabilities of the answer and, where the model answers with one
multi-digit number token (Llama 3 style tokenizers), averages over them; otherwise the
answer is read greedily. An API key, if the server wants one, comes from the
environment variable SPECIALIST_API_KEY.

Without a trained output the pricer raises a `PricingError` that says how to train one
(the ensemble drops it and re-weights the rest).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deals.framework import paths
from deals.framework.errors import PricingError
from deals.framework.models import Estimate
from deals.framework.settings import Settings
from deals.pricer.base import Pricer, clamp, register
from deals.pricer.decoding import expected_from_top_logprobs, is_digits, parse_price
from deals.pricer.prompts import ANSWER_TOKEN_BUDGET, PROMPT_VERSION, REMOTE_EXTRA_BODY, remote_messages, truncate_description

log = logging.getLogger(__name__)

API_KEY_ENV = "SPECIALIST_API_KEY"
DEFAULT_REMOTE_MAX_LENGTH = 182
TOP_LOGPROBS = 20
HOW_TO_TRAIN = (
    "train one with `deals train --preset cpu` (SmolLM2-135M on CPU; `--preset tiny` for a smoke test, "
    "`--preset qwen2.5-7b` on a GPU), or point specialist.adapter (or --adapter) at a trained output directory"
)


def default_adapter(settings: Settings) -> Path:
    """Where the specialist looks for its trained output directory."""
    configured = settings.specialist.adapter
    return Path(configured).expanduser() if configured else paths.home() / "models" / "specialist"


def read_adapter_metadata(adapter: Path) -> dict[str, Any]:
    """The metadata of a trained output directory; `PricingError` when there is none or its prompt is not this version's."""
    from deals.pricer.modeling import METADATA_FILE, read_metadata

    if not (adapter / METADATA_FILE).exists():
        raise PricingError(f"no trained specialist at {adapter}: {HOW_TO_TRAIN}")
    metadata = read_metadata(adapter)
    if metadata.get("prompt_version") != PROMPT_VERSION:
        raise PricingError(
            f"the specialist at {adapter} was trained with prompt {metadata.get('prompt_version')!r} "
            f"but this version of deals uses {PROMPT_VERSION!r}: retrain it ({HOW_TO_TRAIN})"
        )
    return metadata


def unavailable(settings: Settings) -> str | None:
    """Why the specialist cannot serve with these settings, or None: a configured server, or a usable trained adapter.

    Reads the adapter's metadata only; loads no model and contacts no server.
    """
    if settings.specialist.base_url:
        return None
    try:
        read_adapter_metadata(default_adapter(settings))
    except (PricingError, OSError, ValueError) as exc:
        return str(exc)
    return None


class Specialist(Pricer):
    """Prices descriptions with the fine-tuned model (see the module docstring)."""

    name = "specialist"

    def __init__(self, settings: Settings, *, adapter: str | os.PathLike[str] | None = None, base_url: str | None = None) -> None:
        self.settings = settings
        self.options = settings.specialist
        self.low = settings.pricing.min_estimate
        self.high = settings.pricing.max_estimate
        self.adapter = Path(adapter).expanduser() if adapter else default_adapter(settings)
        self.base_url = base_url if base_url is not None else self.options.base_url
        self.metadata: dict[str, Any] | None = None
        self._predictor: Any = None
        self._client: Any = None
        self._tokenizer: Any = None
        self._last: dict[str, Estimate | PricingError] = {}
        self._lock = threading.Lock()
        if self.base_url:
            self._init_remote()
        else:
            self.metadata = read_adapter_metadata(self.adapter)

    # ----------------------------------------------------------------- set-up

    def _init_remote(self) -> None:
        import openai

        from deals.pricer.modeling import METADATA_FILE, load_tokenizer

        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(API_KEY_ENV) or "no-key-needed",
            timeout=self.options.timeout_s,
            max_retries=2,
        )
        # Truncate descriptions as in training when the trained output is at hand (its tokenizer).
        if (self.adapter / METADATA_FILE).exists():
            try:
                self.metadata = read_adapter_metadata(self.adapter)
                self._tokenizer = load_tokenizer(self.adapter)
            except Exception as exc:  # noqa: BLE001 - the server may be all we need
                log.warning("specialist: cannot use the local output %s for truncation: %s", self.adapter, exc)
                self.metadata = self._tokenizer = None

    def _load(self) -> Any:
        if self._predictor is None:
            from deals.pricer.modeling import load_trained
            from deals.pricer.predict import PricePredictor

            assert self.metadata is not None
            log.info("specialist: loading %s on %s", self.adapter, self.options.device)
            model, tokenizer, metadata = load_trained(self.adapter, device=self.options.device)
            self._predictor = PricePredictor(
                model,
                tokenizer,
                max_length=int(metadata["max_length"]),
                decoding=self.options.decoding,
                low=self.low,
                high=self.high,
                batch_size=self.options.batch_size,
            )
        return self._predictor

    # ----------------------------------------------------------------- pricing

    def _estimate(self, value: float, tokens_in: int = 0, tokens_out: int = 0) -> Estimate:
        return Estimate(price=clamp(value, self.low, self.high), pricer=self.name, tokens_in=tokens_in, tokens_out=tokens_out)

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        """Price a batch; raises `PricingError` if any item fails (`price()` then prices the rest from memory)."""
        if not descriptions:
            return []
        if self._client is not None:
            workers = min(len(descriptions), self.options.batch_size)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(pool.map(self._remote_outcome, descriptions))
        else:
            with self._lock:
                outcomes = [
                    r if isinstance(r, PricingError) else self._estimate(r)
                    for r in self._load().predict(list(descriptions))
                ]
        self._last = dict(zip(descriptions, outcomes, strict=True))
        failed = [o for o in outcomes if isinstance(o, PricingError)]
        if failed:
            raise PricingError(f"{len(failed)} of {len(outcomes)} descriptions could not be priced; first: {failed[0]}")
        return list(outcomes)  # type: ignore[arg-type]

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        remembered = self._last.pop(description, None)
        if remembered is None:
            if self._client is not None:
                remembered = self._remote_outcome(description)
            else:
                with self._lock:
                    value = self._load().predict([description])[0]
                remembered = value if isinstance(value, PricingError) else self._estimate(value)
        if isinstance(remembered, PricingError):
            raise remembered
        return remembered

    # ----------------------------------------------------------------- remote

    def _remote_description(self, description: str) -> str:
        max_length = int((self.metadata or {}).get("max_length", DEFAULT_REMOTE_MAX_LENGTH))
        if self._tokenizer is not None:
            from deals.pricer.prompts import PricePrompt

            prompt = PricePrompt(self._tokenizer, max_length)
            return truncate_description(description, prompt.budget, self._tokenizer)
        return truncate_description(description, max_length - 64, None)

    def _remote_outcome(self, description: str) -> Estimate | PricingError:
        try:
            return self._remote(description)
        except PricingError as exc:
            return exc

    def _remote(self, description: str) -> Estimate:
        import openai

        expected = self.options.decoding == "expected"
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if expected else {}
        try:
            completion = self._client.chat.completions.create(
                model=self.options.model,
                messages=remote_messages(self._remote_description(description)),
                max_tokens=ANSWER_TOKEN_BUDGET,
                temperature=0.0,
                extra_body=dict(REMOTE_EXTRA_BODY),
                **extra,
            )
        except openai.APIStatusError as exc:
            raise PricingError(f"specialist server {self.base_url} answered {exc.status_code}: {_brief(exc)}") from None
        except openai.OpenAIError as exc:
            raise PricingError(f"specialist server {self.base_url}: {type(exc).__name__}: {_brief(exc)}") from None
        if not completion.choices:
            raise PricingError(f"specialist server {self.base_url} returned no choices")
        choice = completion.choices[0]
        text = choice.message.content or ""
        usage = completion.usage
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        value = self._remote_expected(choice) if expected else None
        if value is None:
            value = parse_price(text, self.low, self.high)
        return self._estimate(value, tokens_in, tokens_out)

    def _remote_expected(self, choice: Any) -> float | None:
        """Expected price over the first answer token's alternatives, when the answer is one number token."""
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if not content:
            return None
        numeric = [part for part in content if is_digits(part.token)]
        if len(numeric) != 1 or content[0] is not numeric[0]:
            return None
        top = [(alt.token, alt.logprob) for alt in content[0].top_logprobs or []]
        return expected_from_top_logprobs(top, low=self.low, high=self.high)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._predictor = None


def _brief(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:200]


@register("specialist", unavailable=unavailable)
def create_specialist(settings: Settings, *, adapter: str | os.PathLike[str] | None = None, **options: Any) -> Specialist:
    """The specialist pricer; `adapter=DIR` serves that trained output directory, `base_url=` a server."""
    unknown = set(options) - {"base_url"}
    if unknown:
        raise TypeError(f"unknown specialist options: {', '.join(sorted(unknown))}")
    return Specialist(settings, adapter=adapter, base_url=options.get("base_url"))


__all__ = ["HOW_TO_TRAIN", "Specialist", "create_specialist", "default_adapter", "read_adapter_metadata", "unavailable"]
