"""The shared LLM layer, through the real openai and anthropic SDKs against a fake server on 127.0.0.1."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import BaseModel, Field

import deals.framework.llm as llm_pkg
from deals.framework.errors import ConfigError, LLMError
from deals.framework.llm import (
    LLMClient,
    LLMOutputError,
    coerce,
    estimate_cost,
    extract_json_object,
    extract_number,
    make_llm,
    price_of,
)
from deals.framework.llm.costs import PRICES_PER_MTOK
from deals.framework.settings import LLMSettings
from tests.fakes.llm_server import (
    FakeLLMServer,
    Reply,
    answer,
    garbage,
    hang,
    http_error,
    refusal,
    reject_json_schema,
    sequence,
)

OPENAI_KEY = "sk-test-OPENAI-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-ANTHROPIC-0123456789"
ENV = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
PROVIDERS = ["openai", "anthropic", "openai-compatible"]


class Product(BaseModel):
    name: str
    price: float
    tags: list[str] = Field(default_factory=list)


class PriceOnly(BaseModel):
    price: float


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        yield fake


def client_for(server: FakeLLMServer, provider: str, *, environ=ENV, **overrides) -> LLMClient:
    base = {"openai": f"{server.url}/proxy/v1", "anthropic": f"{server.url}/gateway", "openai-compatible": f"{server.url}/v1"}
    model = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "openai-compatible": "llama3.2:3b"}
    values = {"provider": provider, "model": model[provider], "base_url": base[provider], "timeout_s": 5.0, "max_retries": 2}
    values.update(overrides)
    return LLMClient.from_settings(LLMSettings(**values), environ=environ)


# --------------------------------------------------------------------------- requests and replies


def test_openai_parse_request_honours_base_url_and_carries_schema(server):
    server.respond(answer({"name": "Sony WH-1000XM5", "price": 248.0, "tags": ["audio"]}, tokens_in=1000, tokens_out=500))
    with client_for(server, "openai") as client:
        result = client.structured("You price things.", "What is this? Sony headphones.", Product, max_tokens=321)

    assert result.value == Product(name="Sony WH-1000XM5", price=248.0, tags=["audio"])
    assert (result.provider, result.model, result.mode) == ("openai", "gpt-4o-mini", "json_schema")
    assert (result.tokens_in, result.tokens_out) == (1000, 500)
    assert result.cost_usd == pytest.approx(1000 * 0.15 / 1e6 + 500 * 0.60 / 1e6)

    [request] = server.requests
    assert request.path == "/proxy/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == [
        {"role": "system", "content": "You price things."},
        {"role": "user", "content": "What is this? Sony headphones."},
    ]
    assert request.body["max_completion_tokens"] == 321
    fmt = request.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Product" and fmt["json_schema"]["strict"] is True
    assert set(request.schema["properties"]) == {"name", "price", "tags"}
    assert request.schema["additionalProperties"] is False


def test_anthropic_parse_request_honours_base_url_and_carries_schema(server):
    server.respond(answer({"name": "Kindle", "price": 99.99}, tokens_in=2000, tokens_out=100))
    with client_for(server, "anthropic") as client:
        result = client.structured("You price things.", "A Kindle.", Product, max_tokens=400)

    assert result.value == Product(name="Kindle", price=99.99)
    assert (result.provider, result.mode, result.tokens_in, result.tokens_out) == ("anthropic", "json_schema", 2000, 100)
    assert result.cost_usd == pytest.approx(2000 * 1.00 / 1e6 + 100 * 5.00 / 1e6)

    [request] = server.requests
    assert request.path == "/gateway/v1/messages"
    assert ANTHROPIC_KEY in (request.headers.get("x-api-key", "") + request.headers.get("authorization", ""))
    assert request.body["system"] == "You price things."
    assert request.body["messages"] == [{"role": "user", "content": "A Kindle."}]
    assert request.body["max_tokens"] == 400
    assert request.body["output_config"]["format"]["type"] == "json_schema"
    assert set(request.schema["properties"]) == {"name", "price", "tags"}


def test_text_on_every_provider(server):
    server.respond(answer("About $40.", tokens_in=30, tokens_out=4))
    for provider in PROVIDERS:
        with client_for(server, provider) as client:
            result = client.text("Be brief.", "Price of a mouse?")
        assert (result.value, result.mode, result.tokens_in, result.tokens_out) == ("About $40.", "text", 30, 4)
    assert [r.api for r in server.requests] == ["openai", "anthropic", "openai"]
    assert "response_format" not in server.requests[0].body and "output_config" not in server.requests[1].body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_wrapped_in_prose_is_salvaged(server, provider):
    server.respond(answer('Here you go:\n```json\n{"name": "Mouse", "price": 19.5}\n```\nAnything else?'))
    with client_for(server, provider) as client:
        assert client.structured("s", "u", Product).value == Product(name="Mouse", price=19.5)


# --------------------------------------------------------------------------- unusable replies


@pytest.mark.parametrize("provider", PROVIDERS)
def test_garbage_raises_llm_error(server, provider):
    server.respond(garbage())
    with client_for(server, provider) as client, pytest.raises(LLMOutputError) as info:
        client.structured("s", "u", Product)
    message = str(info.value)
    assert provider in message and client.model in message and "no JSON object" in message
    assert len(server.requests) == 1  # an unusable reply is not retried


@pytest.mark.parametrize("provider", PROVIDERS)
def test_schema_invalid_json_raises_llm_error(server, provider):
    server.respond(answer({"name": "Mouse", "price": "cheap"}))
    with client_for(server, provider) as client, pytest.raises(LLMError, match=r"(does not match|Product)"):
        client.structured("s", "u", Product)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_refusal_raises_llm_error(server, provider):
    server.respond(refusal("I can't help with that."))
    with client_for(server, provider) as client, pytest.raises(LLMOutputError, match="refused"):
        client.structured("s", "u", Product)


def test_anthropic_refusal_with_text_raises_llm_error(server):
    server.respond(refusal("I can't help with that.", anthropic_text=True))
    with client_for(server, "anthropic") as client, pytest.raises(LLMError, match="can't help"):
        client.structured("s", "u", Product)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_truncated_reply_raises_llm_error(server, provider):
    finish = "length" if provider == "openai" else "max_tokens"
    server.respond(answer({"name": "Mouse", "price": 3}, finish=finish, tokens_in=50, tokens_out=5))
    with client_for(server, provider) as client, pytest.raises(LLMOutputError, match="cut off at max_tokens=5") as info:
        client.structured("s", "u", Product, max_tokens=5)
    assert (info.value.tokens_in, info.value.tokens_out) == (50, 5)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("body", [Reply(json={"unexpected": True}), Reply(json=[1, 2]), Reply(text="<html>proxy error</html>")])
def test_malformed_response_bodies_raise_llm_error(server, provider, body):
    server.respond(lambda req: body)
    with client_for(server, provider) as client:
        with pytest.raises(LLMOutputError, match="malformed reply|no choices"):
            client.structured("s", "u", Product)
        with pytest.raises(LLMOutputError, match="malformed reply|no choices"):
            client.text("s", "u")


def test_output_error_carries_the_tokens_it_cost(server):
    server.respond(answer("no json here", tokens_in=1000, tokens_out=1000))
    with client_for(server, "openai") as client, pytest.raises(LLMOutputError) as info:
        client.structured("s", "u", Product)
    assert (info.value.tokens_in, info.value.tokens_out) == (1000, 1000)
    assert info.value.cost_usd == pytest.approx((1000 * 0.15 + 1000 * 0.60) / 1e6)


# --------------------------------------------------------------------------- transient errors: the SDK retries


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_is_retried_then_raised(server, provider):
    server.respond(hang(10))
    with client_for(server, provider, timeout_s=0.25, max_retries=1) as client, pytest.raises(LLMError, match="timed out after 0.25s"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 2  # first try + one retry


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_error_is_retried_then_raised(server, provider):
    server.respond(http_error(500))
    with client_for(server, provider, max_retries=2) as client, pytest.raises(LLMError, match=r"HTTP 500.*tried 3 times"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_then_success(server, provider):
    server.respond(sequence(http_error(429), http_error(503), answer({"name": "Mouse", "price": 7})))
    with client_for(server, provider, max_retries=2) as client:
        assert client.structured("s", "u", Product).value.price == 7
    assert len(server.requests) == 3


def test_rate_limit_beyond_retries_raises(server):
    server.respond(http_error(429, "slow down"))
    with client_for(server, "anthropic", max_retries=1) as client, pytest.raises(LLMError, match="HTTP 429 rate limited.*slow down"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 2


def test_bad_request_is_not_retried(server):
    server.respond(http_error(400, "model not found"))
    with client_for(server, "openai", max_retries=3) as client, pytest.raises(LLMError, match="HTTP 400.*model not found"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 1


def test_connection_refused_raises_llm_error(server):
    url = server.url
    server.stop()
    settings = LLMSettings(provider="openai", base_url=f"{url}/v1", timeout_s=1, max_retries=0)
    with LLMClient(settings, environ=ENV) as client, pytest.raises(LLMError, match="cannot connect"):
        client.text("s", "u")


# --------------------------------------------------------------------------- OpenAI-compatible fallbacks


def test_compatible_server_without_json_schema_falls_back_to_json_mode(server):
    server.respond(reject_json_schema(answer('{"name": "Mouse", "price": 12}')))
    with client_for(server, "openai-compatible") as client:
        first = client.structured("Price it.", "A mouse.", Product)
        second = client.structured("Price it.", "A keyboard.", Product)
    assert first.value == Product(name="Mouse", price=12) and first.mode == second.mode == "json_object"
    assert [r.response_format for r in server.requests] == ["json_schema", "json_object", "json_object"]  # remembered
    fallback = server.requests[1]
    assert fallback.system.startswith("Price it.") and '"price"' in fallback.system  # the schema travels in the prompt
    assert json.loads(fallback.system.split("\n")[-1])["title"] == "Product"
    assert fallback.body["max_tokens"] == 1024  # compatible servers get max_tokens, not max_completion_tokens
    assert first.cost_usd == 0.0  # local model: no price


def test_compatible_server_without_json_modes_falls_back_to_text_and_numbers(server):
    server.respond(reject_json_schema(answer("I would say it is worth about $1,299.99 today."), reject_json_object=True))
    with client_for(server, "openai-compatible") as client:
        result = client.structured("Price it.", "A laptop.", PriceOnly)
    assert (result.value.price, result.mode) == (1299.99, "text")
    assert [r.response_format for r in server.requests] == ["json_schema", "json_object", None]


def test_compatible_server_rejecting_everything_raises_llm_error(server):
    server.respond(http_error(400, "context too long", retry_after_ms=None))
    with client_for(server, "openai-compatible") as client, pytest.raises(LLMError, match="rejected every output mode.*context too long"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 3


def test_openai_proper_does_not_fall_back(server):
    server.respond(reject_json_schema(answer('{"name": "Mouse", "price": 12}')))
    with client_for(server, "openai") as client, pytest.raises(LLMError, match="HTTP 400"):
        client.structured("s", "u", Product)
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- keys and construction


def test_compatible_server_gets_a_placeholder_not_the_openai_key(server):
    server.respond(answer("hi"))
    with client_for(server, "openai-compatible") as client:
        client.text("s", "u")
    assert server.requests[0].headers["authorization"] == "Bearer no-key-needed"
    with client_for(server, "openai-compatible", environ={**ENV, "GATEWAY_KEY": "gw-123"}, api_key_env="GATEWAY_KEY") as client:
        client.text("s", "u")
    assert server.requests[1].headers["authorization"] == "Bearer gw-123"


def test_key_env_is_configurable_and_missing_keys_are_config_errors(server):
    server.respond(answer("hi"))
    with client_for(server, "openai", environ={"MY_KEY": "sk-mine"}, api_key_env="MY_KEY") as client:
        client.text("s", "u")
    assert server.requests[0].headers["authorization"] == "Bearer sk-mine"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        LLMClient(LLMSettings(provider="openai"), environ={})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        LLMClient(LLMSettings(provider="anthropic", model="claude-haiku-4-5"), environ={"OPENAI_API_KEY": "x"})
    with pytest.raises(ConfigError, match="OpenAI model"):  # llm.model's default is an OpenAI model
        LLMClient(LLMSettings(provider="anthropic"), environ=ENV)
    with pytest.raises(ConfigError, match="base_url"):
        LLMClient(LLMSettings(provider="openai-compatible"), environ={})


def test_make_llm(server, monkeypatch):
    assert make_llm(LLMSettings()) is None  # provider "none" by default
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    client = make_llm(LLMSettings(provider="openai", base_url=f"{server.url}/v1"))
    assert isinstance(client, LLMClient) and client.provider == "openai"
    client.close()
    with pytest.raises(ConfigError):
        LLMClient(LLMSettings(), environ=ENV)


def test_clients_are_independent(server):
    server.respond(answer("hi"))
    with client_for(server, "openai", model="gpt-4o") as a, client_for(server, "openai", model="gpt-4o-mini") as b:
        a.text("s", "u")
        b.text("s", "u")
    assert [r.body["model"] for r in server.requests] == ["gpt-4o", "gpt-4o-mini"]


def test_the_key_never_appears_in_logs_errors_or_repr(server, caplog):
    caplog.set_level(logging.DEBUG)  # the SDKs' own debug logs included
    server.respond(sequence(answer({"name": "Mouse", "price": 1}), http_error(401, f"Incorrect API key provided: {OPENAI_KEY}")))
    client = client_for(server, "openai", max_retries=0)
    client.structured("s", "u", Product)
    with pytest.raises(LLMError) as info:
        client.structured("s", "u", Product)
    client.close()
    server.respond(http_error(401, f"bad key {ANTHROPIC_KEY}"))
    with client_for(server, "anthropic", max_retries=0) as anthropic_client, pytest.raises(LLMError) as info2:
        anthropic_client.text("s", "u")

    assert "HTTP 401" in str(info.value) and "***" in str(info.value) and "***" in str(info2.value)
    for text in (caplog.text, str(info.value), str(info2.value), repr(client), repr(info.value.__cause__)):
        assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
    assert any(r.name.startswith("deals.framework.llm") for r in caplog.records)  # the layer did log the calls


# --------------------------------------------------------------------------- costs and parsing helpers


def test_price_table_lookup():
    assert price_of("gpt-4o-mini-2024-07-18") == PRICES_PER_MTOK["gpt-4o-mini"]  # longest prefix wins over gpt-4o
    assert price_of("gpt-4o-2024-08-06") == PRICES_PER_MTOK["gpt-4o"]
    assert price_of("openai/gpt-4o-mini") == PRICES_PER_MTOK["gpt-4o-mini"]  # gateway prefix ignored
    assert price_of("claude-sonnet-4-5-20250929") == PRICES_PER_MTOK["claude-sonnet-4"]
    assert price_of("claude-opus-4-5") == PRICES_PER_MTOK["claude-opus-4-5"]
    assert price_of("gpt-4oz") is None and price_of("llama3.2:3b") is None
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert estimate_cost("qwen2.5:7b", 10_000, 10_000) == 0.0
    custom = {"my-model": llm_pkg.ModelPrice(input=1, output=2)}
    assert estimate_cost("my-model", 1_000_000, 500_000, custom) == pytest.approx(2.0)


def test_parsing_helpers():
    assert extract_json_object('noise {"a": {"b": 1}} {"c": 2}') == {"a": {"b": 1}}
    assert extract_json_object("{not json} then {\"ok\": true}") == {"ok": True}
    assert extract_json_object("[1, 2]") is None
    assert extract_number("about $1,299.99 or so") == 1299.99
    assert extract_number("no digits") is None
    assert coerce("The answer: 42", PriceOnly) == PriceOnly(price=42)
    with pytest.raises(ValueError, match="no JSON object"):
        coerce("The answer: 42", Product)


def test_public_api_is_pinned():
    assert sorted(llm_pkg.__all__) == sorted(
        [
            "PRICES_PER_MTOK", "LLMClient", "LLMOutputError", "LLMResult", "ModelPrice", "coerce",
            "estimate_cost", "extract_json_object", "extract_number", "make_llm", "price_of",
        ]
    )  # fmt: skip
