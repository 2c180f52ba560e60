"""In-process price prediction with a (fine-tuned) causal LM: batched, left-padded, decoded.

`PricePredictor(model, tokenizer, max_length=...)` prices descriptions with the shared
prompt (`deals.pricer.prompts`): it tokenises a batch of prompts, pads them on the left
(so every row ends where the answer starts), and reads the answer with
`deals.pricer.decoding`:

- greedy: `model.generate` (no sampling, stopping at EOS / end of turn), then the first
  number of the answer;
- expected: the numeric search of `decoding.search_numbers` on the model's next-token
  distribution, one forward pass per digit step over a KV cache that is re-indexed as
  prefixes branch (`_CachedStepper`); items whose numeric answers hold too little
  probability fall back to greedy.

`predict()` returns, per description, a price or the `PricingError` that explains why
there is none, so one bad item never sinks a batch. `PredictorPricer` puts a predictor
behind the `Pricer` interface. Used by the trainer (evaluation during training) and by
the specialist agent (serving).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from deals.framework.errors import PricingError
from deals.framework.models import Estimate
from deals.pricer.base import Pricer, clamp
from deals.pricer.decoding import NumericVocab, check_price, expected_prices, parse_price, search_numbers
from deals.pricer.prompts import PricePrompt

log = logging.getLogger(__name__)

Decoding = Literal["greedy", "expected"]


def _cache_argument(model: Any) -> str:
    """The name of the KV-cache argument: `cache` (transformers >= 5.2x) or `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class _CachedStepper:
    """Next-token log-probs of growing prefixes, reusing one KV cache (see `decoding.Stepper`)."""

    def __init__(self, model: Any, input_ids: Any, attention_mask: Any) -> None:
        self.model = model
        self.cache_arg = _cache_argument(model)
        self.input_ids = input_ids
        self.mask = attention_mask
        self.cache: Any = None
        self.positions: Any = None

    def _logprobs(self, logits: Any) -> np.ndarray:
        import torch

        return torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu().numpy()

    def start(self) -> np.ndarray:
        import torch

        positions = (self.mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=self.input_ids,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
        self.cache = _cache_of(out)
        self.positions = positions[:, -1]
        return self._logprobs(out.logits)

    def extend(self, parents: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        import torch

        device = self.mask.device
        index = torch.tensor(list(parents), dtype=torch.long, device=device)
        self.cache.reorder_cache(index)
        mask = torch.cat([self.mask.index_select(0, index), torch.ones((len(parents), 1), dtype=self.mask.dtype, device=device)], 1)
        positions = self.positions.index_select(0, index) + 1
        new = torch.tensor(list(tokens), dtype=torch.long, device=device).unsqueeze(1)
        with torch.inference_mode():
            out = self.model(
                input_ids=new,
                attention_mask=mask,
                position_ids=positions.unsqueeze(1),
                use_cache=True,
                **{self.cache_arg: self.cache},
            )
        self.cache, self.mask, self.positions = _cache_of(out), mask, positions
        return self._logprobs(out.logits)


class PricePredictor:
    """Prices descriptions with a causal LM and the shared prompt (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int,
        decoding: Decoding = "expected",
        low: float = 0.5,
        high: float = 10_000.0,
        batch_size: int = 8,
        beam: int = 6,
        min_mass: float = 0.5,
    ) -> None:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = PricePrompt(tokenizer, max_length)
        self.decoding: Decoding = decoding
        self.low, self.high = low, high
        self.batch_size = batch_size
        self.beam = beam
        self.min_mass = min_mass
        self.max_new_tokens = len(str(int(high))) + 2
        self._vocab: NumericVocab | None = None

    @property
    def vocab(self) -> NumericVocab:
        if self._vocab is None:
            size = int(self.model.get_output_embeddings().weight.shape[0])
            self._vocab = NumericVocab.from_tokenizer(self.tokenizer, size)
        return self._vocab

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def _batch(self, descriptions: Sequence[str]) -> tuple[Any, Any]:
        import torch

        rows = [self.prompt.prompt_ids(text) for text in descriptions]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate_text(self, descriptions: Sequence[str]) -> list[str]:
        """The greedy answers (text after "Price is $"), special tokens removed."""
        import torch

        ids, mask = self._batch(descriptions)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self.prompt.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    def _greedy(self, descriptions: Sequence[str]) -> list[float | PricingError]:
        results: list[float | PricingError] = []
        for text in self.generate_text(descriptions):
            try:
                results.append(parse_price(text, self.low, self.high))
            except PricingError as exc:
                results.append(exc)
        return results

    def _expected(self, descriptions: Sequence[str]) -> list[float | PricingError]:
        if len(self.vocab) == 0:
            return self._greedy(descriptions)
        ids, mask = self._batch(descriptions)
        stepper = _CachedStepper(self.model, ids, mask)
        found = search_numbers(stepper, self.vocab, len(descriptions), low=self.low, high=self.high, beam=self.beam)
        values = expected_prices(found, min_mass=self.min_mass)
        results: list[float | PricingError] = [0.0] * len(descriptions)
        fallback = [i for i, v in enumerate(values) if v is None]
        for i, value in enumerate(values):
            if value is not None:
                try:
                    results[i] = check_price(value, self.low, self.high)
                except PricingError as exc:
                    results[i] = exc
        if fallback:
            log.debug("expected decoding: %d of %d items fall back to greedy", len(fallback), len(descriptions))
            for i, result in zip(fallback, self._greedy([descriptions[i] for i in fallback]), strict=True):
                results[i] = result
        return results

    def predict(self, descriptions: Sequence[str], *, decoding: Decoding | None = None) -> list[float | PricingError]:
        """A price or a `PricingError` per description, in batches of `batch_size`."""
        mode = decoding or self.decoding
        was_training = self.model.training
        self.model.eval()
        try:
            results: list[float | PricingError] = []
            for start in range(0, len(descriptions), self.batch_size):
                batch = list(descriptions[start : start + self.batch_size])
                results.extend(self._expected(batch) if mode == "expected" else self._greedy(batch))
            return results
        finally:
            if was_training:
                self.model.train()


class PredictorPricer(Pricer):
    """A `PricePredictor` as a `Pricer`.

    `price_many` prices a batch in one go; if any item of it cannot be priced it raises a
    `PricingError` (the batch contract) but keeps the batch's results, so the per-item
    `price()` calls that callers (the evaluation harness) fall back to cost nothing.
    """

    def __init__(self, predictor: PricePredictor, *, name: str = "specialist", low: float = 0.5, high: float = 10_000.0) -> None:
        self.predictor = predictor
        self.name = name
        self.low, self.high = low, high
        self._last: dict[str, float | PricingError] = {}

    def _estimate(self, value: float | PricingError) -> Estimate:
        if isinstance(value, PricingError):
            raise value
        return Estimate(price=clamp(value, self.low, self.high), pricer=self.name)

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        results = self.predictor.predict(list(descriptions))
        self._last = dict(zip(descriptions, results, strict=True))
        failed = [r for r in results if isinstance(r, PricingError)]
        if failed:
            raise PricingError(f"{len(failed)} of {len(results)} descriptions could not be priced; first: {failed[0]}")
        return [self._estimate(r) for r in results]

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        if description in self._last:
            return self._estimate(self._last.pop(description))
        return self._estimate(self.predictor.predict([description])[0])


__all__ = ["Decoding", "PredictorPricer", "PricePredictor"]
