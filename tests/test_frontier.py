"""The frontier RAG pricer through the real openai and anthropic SDKs against a fake server on 127.0.0.1.

Retrieval is real: the kNN pricer's neighbours from the seeded starter index (one copy
per module), so the prompts carry real catalogue products and prices.
"""

from __future__ import annotations

import math
import shutil
import time

import pytest

from deals.agents.frontier import (
    PROMPT_VERSION,
    FrontierPricer,
    PriceAnswer,
    build_prompt,
    cache_key,
    prompt_version,
)
from deals.framework.errors import ConfigError, PricingError
from deals.framework.llm import LLMClient, estimate_cost
from deals.framework.models import Neighbour
from deals.framework.settings import LLMSettings, PricingSettings, Settings
from deals.memory.store import Store
from deals.pricer.base import create_pricer
from tests.fakes.llm_server import FakeLLMServer, answer, garbage, hang, http_error, refusal, reject_json_schema, sequence

ENV = {"OPENAI_API_KEY": "sk-test-OPENAI-frontier", "ANTHROPIC_API_KEY": "sk-ant-test-frontier"}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "openai-compatible": "llama3.2:3b"}
HEADPHONES = (
    "Title: Sony WH-1000XM4 Wireless Noise Canceling Overhead Headphones\nCategory: Headphones\n"
    "Description: Industry-leading noise cancellation, 30-hour battery, touch controls, Alexa built in."
)
KETTLE = "Title: Cuisinart CPK-17 PerfecTemp 1.7-Liter Stainless Steel Cordless Electric Kettle"
BLENDER = "Title: Ninja BL610 Professional 72 Oz Countertop Blender with 1000-Watt Base"


@pytest.fixture(scope="module")
def retriever(seeded_home_template, tmp_path_factory):
    """The real kNN retriever (k=5) over a private copy of the seeded starter index."""
    from deals.pricer.knn import KnnPricer

    home = tmp_path_factory.mktemp("frontier-home")
    shutil.copytree(seeded_home_template, home, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEALS_HOME", str(home))
        settings = Settings()
        settings.knn.k = 5
        yield KnnPricer.from_settings(settings, progress=False)


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "deals.db") as db:
        yield db


def llm_for(server: FakeLLMServer, provider: str = "openai", **overrides) -> LLMClient:
    values = {"provider": provider, "model": MODELS[provider], "base_url": f"{server.url}/v1", "timeout_s": 5.0, "max_retries": 0}
    values.update(overrides)
    return LLMClient(LLMSettings(**values), environ=ENV)


def frontier(server, retriever, *, provider="openai", store=None, k=5, llm=None, **kw) -> FrontierPricer:
    return FrontierPricer(llm or llm_for(server, provider), retriever, PricingSettings(), k=k, store=store, **kw)


def usage_rows(store: Store) -> list[dict]:
    return [dict(row) for row in store.db.execute("SELECT * FROM llm_calls ORDER BY id")]


# --------------------------------------------------------------------------- the request


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_request_carries_the_neighbours_and_the_schema(server, retriever, store, provider):
    server.respond(answer({"price": 278.0}, tokens_in=900, tokens_out=9))
    [(expected, _)] = retriever.neighbours([HEADPHONES])
    pricer = frontier(server, retriever, provider=provider, store=store)
    estimate = pricer.price(HEADPHONES)

    assert estimate.price == 278.0 and estimate.pricer == "frontier"
    assert [n.id for n in estimate.neighbours] == [n.id for n in expected] and len(expected) == 5
    assert (estimate.tokens_in, estimate.tokens_out) == (900, 9)
    assert estimate.cost_usd == pytest.approx(estimate_cost(MODELS[provider], 900, 9)) and estimate.cost_usd > 0
    [request] = server.requests
    assert request.api == ("anthropic" if provider == "anthropic" else "openai")
    assert request.response_format == "json_schema"
    assert set(request.schema["properties"]) == {"price"} and request.schema["properties"]["price"]["type"] == "number"
    prompt = request.user
    assert "Sony WH-1000XM4" in prompt
    for neighbour in expected:  # every retrieved product appears with its price
        assert f"{' '.join(neighbour.title.split())[:60]}" in prompt
        assert f"${neighbour.price:,.2f}" in prompt
    assert "retail price" in request.system
    pricer.close()


def test_openai_compatible_server_without_json_schema_falls_back(server, retriever):
    server.respond(reject_json_schema(answer({"price": 89.5})))
    pricer = frontier(server, retriever, provider="openai-compatible")
    assert pricer.price(KETTLE).price == 89.5
    assert [r.response_format for r in server.requests] == ["json_schema", "json_object"]
    assert "Similar products and their prices" in server.requests[-1].user


def test_prose_with_a_number_is_salvaged(server, retriever):
    server.respond(answer("I'd estimate this at about $1,129.99 given the similar items."))
    assert frontier(server, retriever).price(HEADPHONES).price == 1129.99


def test_k_zero_asks_without_neighbours(server):
    server.respond(answer({"price": 42.0}))
    pricer = FrontierPricer(llm_for(server), None, PricingSettings(), k=0)
    estimate = pricer.price(KETTLE)
    assert estimate.price == 42.0 and estimate.neighbours == []
    assert "Similar products" not in server.requests[0].user and "Cuisinart" in server.requests[0].user


def test_exclude_exact_keeps_the_item_out_of_its_own_prompt(server, retriever):
    from deals.pricer.catalogue import starter_products

    product = starter_products()[7]
    server.respond(answer({"price": 10.0}))
    pricer = frontier(server, retriever)
    shown = pricer.price(product.text).neighbours
    held_out = pricer.price(product.text, exclude_exact=True)
    assert shown[0].id == product.id and shown[0].similarity > 0.99
    assert product.id not in [n.id for n in held_out.neighbours] and held_out.excluded >= 1
    assert len(server.requests) == 2  # different prompts: not one cache entry
    assert f"${product.price:,.2f}" in server.requests[0].user


def test_prompt_truncates_long_texts():
    neighbours = [Neighbour(id="a", title="x" * 500, price=12.5, similarity=0.9)]
    system, user = build_prompt("word " * 2000, neighbours)
    assert len(user) < 2600 and "$12.50" in user and "x" * 161 not in user
    assert system and PriceAnswer.model_json_schema()["required"] == ["price"]


# --------------------------------------------------------------------------- bad answers


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (garbage(), "no usable price"),
        (refusal(), "no usable price.*refused"),
        (answer({"price": -5}), "outside the sane range"),
        (answer({"price": 0}), "outside the sane range"),
        (answer({"price": 25_000_000}), "outside the sane range"),
        (answer({"cost": "cheap"}), "no usable price"),
    ],
    ids=["garbage", "refusal", "negative", "zero", "huge", "wrong-shape"],
)
def test_bad_answers_are_pricing_errors_and_recorded(server, retriever, store, provider, reply, match):
    server.respond(reply)
    pricer = frontier(server, retriever, provider=provider, store=store)
    with pytest.raises(PricingError, match=match):
        pricer.price(BLENDER)
    [row] = usage_rows(store)
    assert row["ok"] == 0 and row["error"] and row["agent"] == "frontier" and row["provider"] == provider
    assert store.cached_estimate(cache_key(BLENDER, pricer.model, prompt_version(5, False))) is None
    server.respond(answer({"price": 99.0}))  # a failure is not cached: the next call asks again
    assert pricer.price(BLENDER).price == 99.0 and len(server.requests) == 2


def test_timeout_is_retried_then_a_pricing_error(server, retriever, store):
    server.respond(hang(10))
    pricer = frontier(server, retriever, store=store, llm=llm_for(server, timeout_s=0.3, max_retries=1))
    started = time.monotonic()
    with pytest.raises(PricingError, match="timed out"):
        pricer.price(KETTLE)
    assert time.monotonic() - started < 5
    assert len(server.requests) == 2  # one try and one retry (llm.max_retries)
    assert usage_rows(store)[0]["ok"] == 0


def test_transient_errors_are_retried_with_backoff(server, retriever):
    server.respond(sequence(http_error(503), http_error(429), answer({"price": 64.0})))
    pricer = frontier(server, retriever, llm=llm_for(server, max_retries=2))
    assert pricer.price(KETTLE).price == 64.0 and len(server.requests) == 3


# --------------------------------------------------------------------------- cache and records


def test_cache_prevents_paying_twice_even_across_instances(server, retriever, store):
    server.respond(answer({"price": 129.0}, tokens_in=500, tokens_out=8))
    first = frontier(server, retriever, store=store)
    paid = first.price(HEADPHONES)
    again = first.price("  " + HEADPHONES.replace("\n", "\n  ") + " ")  # same text, other whitespace
    other = frontier(server, retriever, store=store).price(HEADPHONES)  # a new pricer sharing the store
    assert len(server.requests) == 1
    assert paid.price == again.price == other.price == 129.0
    assert paid.tokens_in == 500 and (again.tokens_in, again.cost_usd, other.tokens_in) == (0, 0.0, 0)
    assert "cached" in (other.note or "")
    frontier(server, retriever, store=store).price(KETTLE)
    assert len(server.requests) == 2

    row = store.db.execute("SELECT * FROM estimates_cache WHERE key = ?", (cache_key(HEADPHONES, "openai:gpt-4o-mini", prompt_version(5, False)),)).fetchone()
    assert row["price"] == 129.0 and row["model"] == "openai:gpt-4o-mini" and row["prompt_version"].startswith(PROMPT_VERSION)


def test_the_same_description_twice_in_a_batch_is_asked_once(server, retriever):
    server.respond(answer({"price": 77.0}))
    estimates = frontier(server, retriever, concurrency=2).price_many([KETTLE, BLENDER, KETTLE])
    assert [e.price for e in estimates] == [77.0] * 3 and len(server.requests) == 2


def test_cache_key_depends_on_model_and_prompt_version():
    base = cache_key(KETTLE, "openai:gpt-4o-mini", prompt_version(5, False))
    assert base == cache_key(KETTLE + "  ", "openai:gpt-4o-mini", prompt_version(5, False))
    assert len({base, cache_key(KETTLE, "openai:gpt-4o", prompt_version(5, False)),
                cache_key(KETTLE, "openai:gpt-4o-mini", prompt_version(3, False)),
                cache_key(KETTLE, "openai:gpt-4o-mini", prompt_version(5, True))}) == 4  # fmt: skip


def test_without_a_store_the_cache_lives_in_the_pricer(server, retriever):
    server.respond(answer({"price": 55.0}))
    pricer = frontier(server, retriever, store=None)
    assert pricer.price(KETTLE).price == pricer.price(KETTLE).price == 55.0
    assert len(server.requests) == 1 and pricer.calls == 1


def test_cache_off_asks_every_time(server, retriever, store):
    server.respond(answer({"price": 55.0}))
    pricer = frontier(server, retriever, store=store, cache=False)
    pricer.price(KETTLE)
    pricer.price(KETTLE)
    assert len(server.requests) == 2


def test_tokens_and_cost_are_recorded_in_the_store(server, retriever, store):
    server.respond(sequence(answer({"price": 20.0}, tokens_in=1000, tokens_out=10), garbage()))
    pricer = frontier(server, retriever, store=store)
    pricer.price(KETTLE)
    with pytest.raises(PricingError):
        pricer.price(BLENDER)
    usage = store.llm_usage()
    assert (usage.calls, usage.failures) == (2, 1)
    assert usage.tokens_in >= 1000 and usage.tokens_out >= 10
    expected = estimate_cost("gpt-4o-mini", 1000, 10) + sum(r["cost_usd"] for r in usage_rows(store)[1:])
    assert usage.cost_usd == pytest.approx(expected) and usage.cost_usd > 0
    [row] = usage.rows
    assert (row.agent, row.provider, row.model) == ("frontier", "openai", "gpt-4o-mini")


def test_batch_with_a_failing_item_pays_once_per_good_item(server, retriever, store):
    server.respond(lambda req: (garbage() if "Ninja" in req.user else answer({"price": 30.0}))(req))
    pricer = frontier(server, retriever, store=store, concurrency=3)
    with pytest.raises(PricingError, match="1 of 3 items failed"):
        pricer.price_many([KETTLE, BLENDER, HEADPHONES])
    assert len(server.requests) == 3
    assert pricer.price(KETTLE).price == pricer.price(HEADPHONES).price == 30.0  # cached by the failed batch
    with pytest.raises(PricingError, match="no usable price"):  # the retry of the failed item replays its error
        pricer.price(BLENDER)
    assert len(server.requests) == 3
    with pytest.raises(PricingError, match="no usable price"):  # a later request asks again
        pricer.price(BLENDER)
    assert len(server.requests) == 4


def test_price_many_runs_calls_concurrently(server, retriever):
    server.respond(_slow)
    pricer = frontier(server, retriever, concurrency=4)
    texts = [f"{KETTLE} variant {i}" for i in range(4)]
    estimates = pricer.price_many(texts)
    assert [e.price for e in estimates] == [10.0] * 4
    assert server.max_in_flight == 4  # four answers at once, not one after another (no wall-clock bound: flaky under load)


def _slow(req):
    reply = answer({"price": 10.0})(req)
    reply.delay_s = 0.4
    return reply


# --------------------------------------------------------------------------- the factory


def test_factory_needs_an_llm(seeded_home):
    with pytest.raises(ConfigError, match="needs an LLM"):
        create_pricer("frontier", Settings())
    settings = Settings()
    settings.llm.provider = "openai"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        create_pricer("frontier", settings)


def test_factory_builds_from_settings_and_records_in_the_default_store(seeded_home, server, monkeypatch):
    import deals.agents  # noqa: F401 - registers the agent pricers

    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV["ANTHROPIC_API_KEY"])
    settings = Settings()
    settings.frontier.llm = LLMSettings(provider="anthropic", model="claude-haiku-4-5", base_url=server.url, max_retries=0)
    settings.frontier.k = 3
    server.respond(answer({"price": 249.99}, tokens_in=400, tokens_out=7))
    pricer = create_pricer("frontier", settings, progress=False)
    try:
        estimate = pricer.price(HEADPHONES)
        assert estimate.price == 249.99 and len(estimate.neighbours) == 3
        assert server.requests[0].user.count("\n- ") == 3
    finally:
        pricer.close()
    with Store.open_default() as store:
        usage = store.llm_usage()
        assert (usage.calls, usage.tokens_in, usage.tokens_out) == (1, 400, 7)
        assert usage.rows[0].provider == "anthropic" and math.isclose(usage.cost_usd, estimate_cost("claude-haiku-4-5", 400, 7))
