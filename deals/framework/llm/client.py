"""`LLMClient`: one small interface over OpenAI, Anthropic and OpenAI-compatible servers.

    client = make_llm(settings.llm)             # None when llm.provider is "none"
    result = client.structured(system, user, MySchema, max_tokens=800)
    result.value, result.tokens_in, result.tokens_out, result.cost_usd

Structured output goes through the providers' own SDK helpers:

- OpenAI: `client.chat.completions.parse(response_format=MySchema)` (strict json_schema);
- Anthropic: `client.messages.parse(output_format=MySchema)` (`output_config.format`);
- OpenAI-compatible servers (Ollama, vLLM, gateways): json_schema first; if the server
  answers 400/422 to it, JSON mode (`response_format={"type": "json_object"}`) with the
  schema in the system prompt; if that is refused too, plain text. The first mode that
  works is remembered for the next calls. In every mode a reply that is not valid for the
  schema is salvaged from its first JSON object (or, for one-number schemas, its first
  number) before giving up.

`llm.timeout_s` is a wall-clock deadline for each HTTP request (connect, headers and the
whole body: a server that drips its reply cannot hold a call longer), through
`deals.framework.deadline`; a shutdown abandons a call in flight (`Cancelled`).
Timeouts and transient errors (connection errors, 408/409/429/5xx) are retried by the
SDK itself, `llm.max_retries` times with its exponential backoff; what still fails, and
refusals, truncated or unusable replies, raise `LLMError` with a message naming the
provider, model and cause. `LLMOutputError` (a subclass) is raised when a reply arrived
but was unusable, and carries the tokens it cost. Keys come from the environment
(`llm.api_key_env`, else OPENAI_API_KEY / ANTHROPIC_API_KEY) and never appear in logs or
error messages. Each `LLMClient` owns its SDK client (no module-level clients); close it
when done.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeVar

import anthropic
import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, ValidationError

from deals.framework.errors import ConfigError, LLMError, LLMOutputError
from deals.framework.llm.costs import ModelPrice, estimate_cost
from deals.framework.llm.parsing import NotParseable, coerce, validation_summary
from deals.framework.llm.usage import METER
from deals.framework.settings import LLMSettings

log = logging.getLogger("deals.framework.llm")

T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)

Mode = Literal["json_schema", "json_object", "text"]
_MODES: tuple[Mode, ...] = ("json_schema", "json_object", "text")

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
PLACEHOLDER_KEY = "no-key-needed"
DEFAULT_MAX_TOKENS = 1024


class LLMResult(BaseModel, Generic[T]):
    """A reply (parsed model or text) and what it cost."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    value: T
    provider: str
    model: str
    mode: Mode = "text"
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    duration_s: float = 0.0


def _schema_instruction(schema: type[BaseModel]) -> str:
    import json

    return (
        "\n\nReply with exactly one JSON object and nothing else. It must be valid for this JSON schema:\n"
        + json.dumps(schema.model_json_schema(), separators=(",", ":"))
    )


class LLMClient:
    """A configured LLM: `structured()` for pydantic-validated replies, `text()` for prose."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        environ: Mapping[str, str] | None = None,
        http_client: Any | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        """Build the SDK client. `http_client` (an `httpx2.Client`) is handed to the SDK as is."""
        if settings.provider == "none":
            raise ConfigError("llm.provider is 'none': there is no LLM to build (use make_llm, which returns None)")
        if settings.provider == "openai-compatible" and not settings.base_url:
            raise ConfigError(
                "llm.base_url is required when llm.provider is 'openai-compatible' (e.g. http://localhost:11434/v1)"
            )
        if settings.provider == "anthropic" and settings.model.lower().startswith(("gpt-", "o1", "o3", "o4")):
            raise ConfigError(
                f"llm.model {settings.model!r} is an OpenAI model; set a Claude model for Anthropic, e.g. claude-haiku-4-5"
            )
        self.settings = settings
        self.provider: str = settings.provider
        self.model: str = settings.model
        self._prices = prices
        self._key = self._api_key(settings, os.environ if environ is None else environ)
        self._mode: Mode = "json_schema"
        common: dict[str, Any] = {
            "api_key": self._key,
            "timeout": settings.timeout_s,
            "max_retries": settings.max_retries,
        }
        common["http_client"] = http_client if http_client is not None else self._http_client(settings.provider)
        if settings.base_url:
            common["base_url"] = settings.base_url
        self._client: Any
        if settings.provider == "anthropic":
            self._client = anthropic.Anthropic(**common)
        else:
            self._client = openai.OpenAI(**common)

    @staticmethod
    def _http_client(provider: str) -> Any:
        """The SDK's own default HTTP client, on a transport with a deadline per request."""
        import httpx2

        from deals.framework.deadline import deadline_transport

        sdk: Any = anthropic if provider == "anthropic" else openai
        limits = httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        return sdk.DefaultHttpxClient(transport=deadline_transport(httpx2, limits=limits))

    @classmethod
    def from_settings(cls, settings: LLMSettings, **kwargs: Any) -> LLMClient:
        return cls(settings, **kwargs)

    @staticmethod
    def _api_key(settings: LLMSettings, environ: Mapping[str, str]) -> str:
        if settings.provider == "openai-compatible":
            # Never send a provider's key to a third-party server unless told to.
            if settings.api_key_env:
                return environ.get(settings.api_key_env) or PLACEHOLDER_KEY
            return PLACEHOLDER_KEY
        name = settings.api_key_env or DEFAULT_KEY_ENV[settings.provider]
        key = environ.get(name)
        if not key:
            raise ConfigError(f"llm.provider is {settings.provider!r} but the environment variable {name} is not set")
        return key

    def __repr__(self) -> str:
        return f"LLMClient(provider={self.provider!r}, model={self.model!r}, base_url={self.settings.base_url!r})"

    def close(self) -> None:
        """Close the SDK's HTTP connections."""
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- public calls

    def structured(self, system: str, user: str, schema: type[S], *, max_tokens: int = DEFAULT_MAX_TOKENS) -> LLMResult[S]:
        """Ask for a reply valid for `schema`; the parsed model and the usage come back."""
        if self.provider == "anthropic":
            return self._call(self._anthropic_structured, system, user, schema, max_tokens)
        return self._call(self._openai_structured, system, user, schema, max_tokens)

    def text(self, system: str, user: str, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> LLMResult[str]:
        """Ask for free text."""
        if self.provider == "anthropic":
            return self._call(self._anthropic_text, system, user, max_tokens)
        return self._call(self._openai_text, system, user, max_tokens)

    def _call(self, method: Callable[..., LLMResult[Any]], *args: Any) -> LLMResult[Any]:
        """Run one call; SDK errors and malformed replies become LLMError, usage is logged."""
        start = time.monotonic()
        try:
            try:
                result = method(*args)
            except (openai.OpenAIError, anthropic.AnthropicError) as exc:
                raise LLMError(self._describe(exc)) from None
            except ValidationError as exc:  # a reply too malformed for the SDK's own models
                raise self._output_error(f"malformed reply: {validation_summary(exc)}", 0, 0) from None
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # not JSON, or odd JSON
                log.debug("%s: malformed reply", self.model, exc_info=True)
                raise self._output_error(f"malformed reply ({type(exc).__name__}: {exc})", 0, 0) from None
        except LLMOutputError as exc:
            METER.add(tokens_in=exc.tokens_in, tokens_out=exc.tokens_out, cost_usd=exc.cost_usd, ok=False)
            raise
        except LLMError:
            METER.add(ok=False)
            raise
        METER.add(tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost_usd=result.cost_usd)
        result.duration_s = round(time.monotonic() - start, 3)
        log.debug(
            "%s %s (%s): %d tokens in, %d out, ~$%.6f, %.2fs",
            self.provider, self.model, result.mode, result.tokens_in, result.tokens_out, result.cost_usd, result.duration_s,
        )  # fmt: skip
        return result

    # ----------------------------------------------------------------- OpenAI and compatible

    @staticmethod
    def _messages(system: str, user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _limit(self, max_tokens: int) -> dict[str, int]:
        # OpenAI's newer models only take max_completion_tokens; compatible servers know max_tokens.
        return {"max_completion_tokens": max_tokens} if self.provider == "openai" else {"max_tokens": max_tokens}

    def _openai_text(self, system: str, user: str, max_tokens: int) -> LLMResult[str]:
        completion = self._client.chat.completions.create(
            model=self.model, messages=self._messages(system, user), **self._limit(max_tokens)
        )
        content, tokens_in, tokens_out = self._openai_content(completion, max_tokens)
        return self._result(content, "text", tokens_in, tokens_out)

    def _openai_structured(self, system: str, user: str, schema: type[S], max_tokens: int) -> LLMResult[S]:
        if self.provider != "openai-compatible":
            return self._openai_mode("json_schema", system, user, schema, max_tokens)
        rejected: list[str] = []
        for mode in _MODES[_MODES.index(self._mode) :]:
            try:
                result = self._openai_mode(mode, system, user, schema, max_tokens)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                rejected.append(f"{mode}: {self._describe(exc, prefix=False)}")
                if mode == _MODES[-1]:
                    raise LLMError(self._prefix("the server rejected every output mode: " + "; ".join(rejected))) from None
                log.info("%s at %s does not accept %s output; falling back", self.model, self.settings.base_url, mode)
                continue
            if mode != self._mode:
                log.info("%s at %s: using %s output from now on", self.model, self.settings.base_url, mode)
                self._mode = mode
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _openai_mode(self, mode: Mode, system: str, user: str, schema: type[S], max_tokens: int) -> LLMResult[S]:
        if mode == "json_schema":
            raw = self._client.chat.completions.with_raw_response.parse(
                model=self.model, messages=self._messages(system, user), response_format=schema, **self._limit(max_tokens)
            )
            try:
                completion = raw.parse()
            except (ValidationError, openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError):
                # Invalid for the schema, cut off or filtered: keep the raw reply (and its usage);
                # it is checked and, where possible, salvaged below.
                completion = ChatCompletion.model_validate(raw.http_response.json())
        else:
            extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if mode == "json_object" else {}
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=self._messages(system + _schema_instruction(schema), user),
                **self._limit(max_tokens),
                **extra,
            )
        content, tokens_in, tokens_out = self._openai_content(completion, max_tokens)
        parsed = getattr(completion.choices[0].message, "parsed", None)
        if isinstance(parsed, schema):
            return self._result(parsed, mode, tokens_in, tokens_out)
        return self._result(self._coerce(content, schema, tokens_in, tokens_out), mode, tokens_in, tokens_out)

    def _openai_content(self, completion: Any, max_tokens: int) -> tuple[str, int, int]:
        usage = getattr(completion, "usage", None)
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        if not completion.choices:
            raise self._output_error("the reply has no choices", tokens_in, tokens_out)
        choice = completion.choices[0]
        if choice.message.refusal:
            raise self._output_error(f"the model refused: {choice.message.refusal[:200]!r}", tokens_in, tokens_out)
        if choice.finish_reason == "length":
            raise self._output_error(f"the reply was cut off at max_tokens={max_tokens}", tokens_in, tokens_out)
        if choice.finish_reason == "content_filter":
            raise self._output_error("the reply was blocked by the provider's content filter", tokens_in, tokens_out)
        return choice.message.content or "", tokens_in, tokens_out

    # ----------------------------------------------------------------- Anthropic

    def _anthropic_structured(self, system: str, user: str, schema: type[S], max_tokens: int) -> LLMResult[S]:
        try:
            message = self._client.messages.parse(
                model=self.model,
                max_tokens=max_tokens,
                system=system,
                messages=[{"role": "user", "content": user}],
                output_format=schema,
            )
        except ValidationError as exc:
            # The SDK validates inside `parse`; the usage of this reply is not available then.
            text = next((e["input"] for e in exc.errors() if e["type"] == "json_invalid" and isinstance(e["input"], str)), None)
            if text is None:
                raise self._output_error(f"the reply does not match {schema.__name__}: {validation_summary(exc)}", 0, 0) from exc
            return self._result(self._coerce(text, schema, 0, 0), "json_schema", 0, 0)
        tokens_in, tokens_out = self._anthropic_usage(message)
        self._anthropic_check(message, max_tokens, tokens_in, tokens_out)
        parsed = message.parsed_output
        if isinstance(parsed, schema):
            return self._result(parsed, "json_schema", tokens_in, tokens_out)
        text = "".join(block.text for block in message.content if block.type == "text")
        return self._result(self._coerce(text, schema, tokens_in, tokens_out), "json_schema", tokens_in, tokens_out)

    def _anthropic_text(self, system: str, user: str, max_tokens: int) -> LLMResult[str]:
        message = self._client.messages.create(
            model=self.model, max_tokens=max_tokens, system=system, messages=[{"role": "user", "content": user}]
        )
        tokens_in, tokens_out = self._anthropic_usage(message)
        self._anthropic_check(message, max_tokens, tokens_in, tokens_out)
        text = "".join(block.text for block in message.content if block.type == "text")
        return self._result(text, "text", tokens_in, tokens_out)

    @staticmethod
    def _anthropic_usage(message: Any) -> tuple[int, int]:
        usage = getattr(message, "usage", None)
        return int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0)

    def _anthropic_check(self, message: Any, max_tokens: int, tokens_in: int, tokens_out: int) -> None:
        if message.stop_reason == "refusal":
            text = "".join(block.text for block in message.content if block.type == "text")
            raise self._output_error(f"the model refused{': ' + repr(text[:200]) if text else ''}", tokens_in, tokens_out)
        if message.stop_reason == "max_tokens":
            raise self._output_error(f"the reply was cut off at max_tokens={max_tokens}", tokens_in, tokens_out)

    # ----------------------------------------------------------------- shared helpers

    def _coerce(self, text: str, schema: type[S], tokens_in: int, tokens_out: int) -> S:
        try:
            value = coerce(text, schema)
        except NotParseable as exc:
            raise self._output_error(f"unusable reply: {exc}", tokens_in, tokens_out) from None
        log.debug("%s: salvaged a %s from a reply that was not clean JSON", self.model, schema.__name__)
        return value

    def _result(self, value: Any, mode: Mode, tokens_in: int, tokens_out: int) -> LLMResult[Any]:
        cost = estimate_cost(self.model, tokens_in, tokens_out, self._prices)
        return LLMResult(
            value=value, provider=self.provider, model=self.model, mode=mode,
            tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost,
        )  # fmt: skip

    def _output_error(self, message: str, tokens_in: int, tokens_out: int) -> LLMOutputError:
        return LLMOutputError(
            self._prefix(message),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=estimate_cost(self.model, tokens_in, tokens_out, self._prices),
        )

    def _prefix(self, message: str) -> str:
        return self._redact(f"{self.provider} model {self.model!r}: {message}")

    def _redact(self, text: str) -> str:
        if self._key and self._key != PLACEHOLDER_KEY and self._key in text:
            text = text.replace(self._key, "***")
        return text

    def _describe(self, exc: Exception, *, prefix: bool = True) -> str:
        retries = self.settings.max_retries
        where = self.settings.base_url or "the provider's default URL"
        if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError)):
            text = f"timed out after {self.settings.timeout_s:g}s (tried {retries + 1} times)"
        elif isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError)):
            text = f"cannot connect to {where} (tried {retries + 1} times): {exc}"
        elif isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError)):
            status = exc.status_code
            retried = f" (tried {retries + 1} times)" if status in (408, 409, 429) or status >= 500 else ""
            kind = "rate limited" if status == 429 else "error"
            text = f"HTTP {status} {kind} from {where}{retried}: {_api_message(exc)}"
        elif isinstance(exc, openai.LengthFinishReasonError):
            text = "the reply was cut off at max_tokens"
        elif isinstance(exc, openai.ContentFilterFinishReasonError):
            text = "the reply was blocked by the provider's content filter"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return self._prefix(text) if prefix else self._redact(text)


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


def make_llm(settings: LLMSettings, **kwargs: Any) -> LLMClient | None:
    """The configured client, or None when `llm.provider` is "none"."""
    if settings.provider == "none":
        return None
    return LLMClient.from_settings(settings, **kwargs)


__all__ = ["LLMClient", "LLMOutputError", "LLMResult", "make_llm"]
