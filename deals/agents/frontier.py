"""The frontier pricer agent: an LLM prices a product with similar priced products as context (RAG).

    pricer = create_pricer("frontier", settings)   # registered as "frontier"
    estimate = pricer.price("Sony WH-1000XM5 wireless noise cancelling headphones")

For each description:

1. **retrieve** the `frontier.k` most similar catalogue products with their prices from
   the vector store (the kNN pricer's `neighbours`, honouring `exclude_exact`);
2. **ask** the LLM (`frontier.llm`, else the shared `llm` section: OpenAI, Anthropic or
   any OpenAI-compatible `base_url`) through `LLMClient.structured` for a `PriceAnswer`
   (one number): the providers' structured output where supported, JSON mode or
   number parsing where not. Timeouts and retries of transient errors (with the SDK's
   exponential backoff) come from those LLM settings;
3. **validate**: a finite price within `pricing.min_estimate`..`pricing.max_estimate`,
   else `PricingError` (never a clamp: an answer out of range is a wrong answer);
4. **record** every call, paid or failed, in the memory store's `llm_calls` table
   (tokens in/out, estimated cost, error) and put the tokens and cost on the `Estimate`.

**Cache.** Answers are cached under `cache_key(...)`: the sha256 of the whitespace-
folded description, the model (`provider:model`) and the prompt version
(`PROMPT_VERSION` plus k and whether exact matches were excluded: everything that
changes the prompt). With a memory store the cache is its `estimates_cache` table, so
the same deal is never paid for twice, across runs and pricer instances; without one
(evaluation), a dict in the pricer. A cached answer costs nothing and says so in the
estimate's note. Failures are not cached. Bump `PROMPT_VERSION` whenever the prompt
changes. (The neighbours themselves are not in the key: re-indexing the catalogue does
not invalidate cached answers.)

`price_many` retrieves for the whole batch at once, then asks the LLM for the items not
cached, `concurrency` at a time; if any item fails it raises `PricingError` after the
others were priced (and cached). Callers (the evaluation harness, the planner, the
ensemble) then retry item by item: the good items come from the cache, and a failed
item's error is replayed once, within `REPLAY_S`, instead of paying for the same
failure again. Any later request for it asks the LLM again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from deals.framework.errors import ConfigError, DealsError, LLMError, LLMOutputError, PricingError
from deals.framework.models import Estimate, Neighbour
from deals.pricer.base import Pricer, register

if TYPE_CHECKING:
    from deals.framework.llm import LLMClient, LLMResult
    from deals.framework.settings import PricingSettings, Settings
    from deals.memory.store import Store

log = logging.getLogger("deals.agents.frontier")

PROMPT_VERSION = "frontier-v1"
MAX_DESCRIPTION_CHARS = 2000
MAX_TITLE_CHARS = 160
DEFAULT_CONCURRENCY = 4
REPLAY_S = 120.0  # a batch's failure is replayed to an item-by-item retry within this many seconds

SYSTEM_PROMPT = (
    "You are an expert at pricing products. Estimate the typical retail price in US dollars of a new "
    "product from its description. You are shown similar products with their known prices as evidence: "
    "they are similar, not necessarily the same product, so adjust for differences in brand, model, size "
    "and features. Answer with the price only."
)

_SPACE = re.compile(r"\s+")


class PriceAnswer(BaseModel):
    """What the LLM is asked for: one number (so a prose reply can still be salvaged from its first number)."""

    price: float = Field(description="the estimated retail price of the product in US dollars")


class Retriever(Protocol):
    """Where the neighbours come from (the kNN pricer has this method)."""

    def neighbours(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[tuple[list[Neighbour], int]]: ...


# --------------------------------------------------------------------------- prompt and cache key


def _fold(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def build_prompt(description: str, neighbours: Sequence[Neighbour]) -> tuple[str, str]:
    """The system and user messages for one description (`PROMPT_VERSION` names this format)."""
    text = _fold(description)
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[:MAX_DESCRIPTION_CHARS].rstrip() + " ..."
    parts = []
    if neighbours:
        lines = []
        for n in neighbours:
            title = _fold(n.title) or _fold(n.text or "") or "(untitled product)"
            if len(title) > MAX_TITLE_CHARS:
                title = title[:MAX_TITLE_CHARS].rstrip() + "..."
            lines.append(f"- {title} — ${n.price:,.2f}")
        parts.append("Similar products and their prices:\n" + "\n".join(lines))
    parts.append(f"Product to price:\n{text}")
    parts.append("What is this product's price in US dollars?")
    return SYSTEM_PROMPT, "\n\n".join(parts)


def prompt_version(k: int, exclude_exact: bool) -> str:
    """`PROMPT_VERSION` with what else changes the prompt: k and whether exact matches were excluded."""
    return f"{PROMPT_VERSION}|k={k}|{'held-out' if exclude_exact else 'all'}"


def cache_key(description: str, model: str, version: str) -> str:
    """sha256 of the whitespace-folded description, the model and the prompt version."""
    payload = "\x1f".join((_fold(description), model, version))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the pricer


class FrontierPricer(Pricer):
    """RAG pricing by an LLM; see the module docstring."""

    name = "frontier"
    thread_safe = False  # price_many already runs `concurrency` LLM calls at once
    paid = True

    def __init__(
        self,
        llm: LLMClient,
        retriever: Retriever | None,
        pricing: PricingSettings,
        *,
        k: int = 5,
        max_tokens: int = 64,
        cache: bool = True,
        store: Store | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        owned: Sequence[Any] = (),
    ) -> None:
        """`store` None: the cache lives in this object and calls are only counted here.

        `owned`: things to close with the pricer (the store or retriever it opened).
        """
        if k > 0 and retriever is None:
            raise ConfigError(f"frontier.k is {k} but there is no retriever to find neighbours with")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.llm = llm
        self.retriever = retriever
        self.pricing = pricing
        self.k = k
        self.max_tokens = max_tokens
        self.cache = cache
        self.store = store
        self.concurrency = concurrency
        self.model = f"{llm.provider}:{llm.model}"
        self._owned = list(owned)
        self._memory: dict[str, float] = {}
        self._replay: dict[str, tuple[float, PricingError]] = {}
        self._lock = threading.Lock()
        self.calls = 0  # LLM calls made by this pricer (paid or failed)

    # ----------------------------------------------------------------- cache and records

    def _cached(self, key: str) -> float | None:
        if not self.cache:
            return None
        if self.store is not None:
            return self.store.cached_estimate(key)
        with self._lock:
            return self._memory.get(key)

    def _remember(self, key: str, version: str, price: float) -> None:
        if not self.cache:
            return
        if self.store is not None:
            self.store.cache_estimate(key, model=self.model, prompt_version=version, price=price)
        else:
            with self._lock:
                self._memory[key] = price

    def _record(self, *, tokens_in: int = 0, tokens_out: int = 0, cost: float = 0.0, error: str | None = None) -> None:
        with self._lock:
            self.calls += 1
        if self.store is None:
            return
        try:
            self.store.record_llm_call(
                agent=self.name, provider=self.llm.provider, model=self.llm.model, tokens_in=tokens_in,
                tokens_out=tokens_out, cost_usd=cost, ok=error is None, error=error,
            )  # fmt: skip
        except DealsError as exc:  # the estimate matters more than its bookkeeping
            log.warning("could not record an LLM call in the memory store: %s", exc)

    # ----------------------------------------------------------------- one LLM call

    def _ask(self, description: str, neighbours: list[Neighbour], excluded: int, key: str, version: str) -> Estimate:
        system, user = build_prompt(description, neighbours)
        try:
            result: LLMResult[PriceAnswer] = self.llm.structured(system, user, PriceAnswer, max_tokens=self.max_tokens)
        except LLMOutputError as exc:
            self._record(tokens_in=exc.tokens_in, tokens_out=exc.tokens_out, cost=exc.cost_usd, error=str(exc))
            raise PricingError(f"frontier ({self.model}) gave no usable price: {exc}") from exc
        except LLMError as exc:
            self._record(error=str(exc))
            raise PricingError(f"frontier ({self.model}) failed: {exc}") from exc
        value = result.value.price
        low, high = self.pricing.min_estimate, self.pricing.max_estimate
        if not math.isfinite(value) or not low <= value <= high:
            problem = f"answered {value!r}, outside the sane range ${low:,.2f}-${high:,.2f}"
            self._record(tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost=result.cost_usd, error=problem)
            raise PricingError(f"frontier ({self.model}) {problem}")
        self._record(tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost=result.cost_usd)
        price = round(value, 2)
        self._remember(key, version, price)
        return Estimate(
            price=max(price, low),
            pricer=self.name,
            neighbours=neighbours,
            excluded=excluded,
            note=f"{self.model}, {len(neighbours)} similar products as context",
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost_usd=result.cost_usd,
        )

    # ----------------------------------------------------------------- Pricer

    def _retrieve(self, descriptions: Sequence[str], exclude_exact: bool) -> list[tuple[list[Neighbour], int]]:
        if self.k == 0 or not descriptions:
            return [([], 0) for _ in descriptions]
        assert self.retriever is not None
        try:
            found = self.retriever.neighbours(list(descriptions), exclude_exact=exclude_exact)
        except DealsError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken index must not look like a crash of the pricer
            raise PricingError(f"frontier: retrieving similar products failed: {type(exc).__name__}: {exc}") from exc
        return [(list(neighbours[: self.k]), excluded) for neighbours, excluded in found]

    def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
        descriptions = list(descriptions)
        for i, text in enumerate(descriptions):
            if not isinstance(text, str) or not text.strip():
                raise PricingError(f"frontier: description #{i} is empty")
        version = prompt_version(self.k, exclude_exact)
        keys = [cache_key(text, self.model, version) for text in descriptions]
        out: list[Estimate | PricingError | None] = [None] * len(descriptions)
        todo: list[int] = []
        first_of: dict[str, int] = {}  # the same description twice in a batch is asked once
        replayed: set[int] = set()
        now = time.monotonic()
        for i, key in enumerate(keys):
            if key in first_of:
                continue
            with self._lock:
                replay = self._replay.pop(key, None)
            if replay is not None and now - replay[0] < REPLAY_S:
                out[i] = replay[1]
                replayed.add(i)
                first_of[key] = i
                continue
            cached = self._cached(key)
            if cached is not None:
                out[i] = Estimate(price=cached, pricer=self.name, note=f"cached answer of {self.model} (no new LLM call)")
            else:
                first_of[key] = i
                todo.append(i)
        if todo:
            found = self._retrieve([descriptions[i] for i in todo], exclude_exact)

            def run(job: tuple[int, tuple[list[Neighbour], int]]) -> tuple[int, Estimate | PricingError]:
                i, (neighbours, excluded) = job
                try:
                    return i, self._ask(descriptions[i], neighbours, excluded, keys[i], version)
                except PricingError as exc:
                    return i, exc

            jobs = list(zip(todo, found, strict=True))
            if self.concurrency > 1 and len(jobs) > 1:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)), thread_name_prefix="frontier") as pool:
                    results = list(pool.map(run, jobs))
            else:
                results = [run(job) for job in jobs]
            for i, result in results:
                out[i] = result
        for i, key in enumerate(keys):
            if out[i] is None:
                out[i] = out[first_of[key]]
        errors = [(i, e) for i, e in enumerate(out) if isinstance(e, PricingError)]
        if errors and len(descriptions) > 1:
            with self._lock:
                self._replay = {k: v for k, v in self._replay.items() if now - v[0] < REPLAY_S}
                self._replay.update((keys[i], (now, e)) for i, e in errors if i not in replayed)
        if errors:
            i, first = errors[0]
            if len(descriptions) == 1:
                raise first
            raise PricingError(f"frontier: {len(errors)} of {len(descriptions)} items failed; item #{i}: {first}") from first
        return [e for e in out if isinstance(e, Estimate)]

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        return self.price_many([description], exclude_exact=exclude_exact)[0]

    def close(self) -> None:
        self.llm.close()
        for part in self._owned:
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %r failed", part, exc_info=True)
        self._owned.clear()


def _llm_client(settings: Settings) -> LLMClient:
    """The frontier's LLM client; `ConfigError` when no provider is set or its key is missing (no request is made)."""
    llm_settings = settings.frontier.llm or settings.llm
    if llm_settings.provider == "none":
        raise ConfigError(
            "the frontier pricer needs an LLM: set llm.provider (or frontier.llm.provider) to openai, anthropic "
            "or openai-compatible, and its key in the environment"
        )
    from deals.framework.llm import LLMClient  # the SDKs take seconds to import: only when used

    return LLMClient(llm_settings)  # ConfigError when the key is missing


def unavailable(settings: Settings) -> str | None:
    """Why the frontier pricer cannot be made with these settings, or None; opens nothing, sends nothing."""
    try:
        _llm_client(settings).close()
    except ConfigError as exc:
        return str(exc)
    return None


@register("frontier", unavailable=unavailable)
def _create(
    settings: Settings,
    *,
    store: Store | None = None,
    use_store: bool = True,
    llm: LLMClient | None = None,
    retriever: Retriever | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    **_: object,
) -> FrontierPricer:
    """The configured frontier pricer; opens the default memory store unless one is given or `use_store=False`."""
    made_llm = llm is None
    if llm is None:
        llm = _llm_client(settings)
    owned: list[Any] = []
    try:
        k = settings.frontier.k
        if retriever is None and k > 0:
            from deals.pricer.knn import KnnPricer

            wide = settings.model_copy(update={"knn": settings.knn.model_copy(update={"k": k})})
            retriever = KnnPricer.from_settings(wide, progress=progress)
        if store is None and use_store:
            from deals.memory.store import Store

            try:
                store = Store.open_default(settings)
                owned.append(store)
            except DealsError as exc:
                log.warning("frontier: memory store unavailable (%s); caching in memory only", exc)
        return FrontierPricer(
            llm, retriever, settings.pricing, k=k, max_tokens=settings.frontier.max_tokens, cache=settings.frontier.cache,
            store=store, concurrency=concurrency or settings.frontier.concurrency, owned=owned,
        )  # fmt: skip
    except BaseException:
        if made_llm:
            llm.close()
        for part in owned:
            part.close()
        raise


__all__ = ["PROMPT_VERSION", "SYSTEM_PROMPT", "FrontierPricer", "PriceAnswer", "Retriever", "build_prompt", "cache_key", "prompt_version", "unavailable"]
