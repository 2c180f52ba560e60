"""The specialist pricer agent: in-process on a trained tiny output, remote through the OpenAI SDK."""

from __future__ import annotations

import json
import math
import shutil

import pytest

import deals.agents.specialist  # noqa: F401 - registers "specialist"
from deals.agents.specialist import Specialist, create_specialist
from deals.framework.errors import PricingError
from deals.framework.models import Estimate
from deals.framework.settings import Settings
from deals.pricer.base import create_pricer
from deals.pricer.catalogue import starter_products
from deals.pricer.prompts import ANSWER_PREFIX, QUESTION, SYSTEM_PROMPT
from tests.fakes.llm_server import FakeLLMServer, Reply, answer, garbage, http_error
from tests.fakes.tiny_specialist import trained_tiny


@pytest.fixture(scope="module")
def trained():
    return trained_tiny()


def _settings(**specialist) -> Settings:
    settings = Settings()
    for key, value in specialist.items():
        setattr(settings.specialist, key, value)
    return settings


# --------------------------------------------------------------------------- no adapter


def test_without_a_trained_output_it_says_how_to_train_one(deals_home):
    with pytest.raises(PricingError, match="deals train --preset cpu") as info:
        create_pricer("specialist", Settings())
    assert str(deals_home / "models" / "specialist") in str(info.value)


def test_refuses_an_output_trained_with_another_prompt_version(trained, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(trained, copy)
    meta = json.loads((copy / "deals_model.json").read_text())
    meta["prompt_version"] = "pricer-v0"
    (copy / "deals_model.json").write_text(json.dumps(meta))
    with pytest.raises(PricingError, match="retrain"):
        Specialist(Settings(), adapter=copy)


# --------------------------------------------------------------------------- in-process


def test_prices_in_process_with_the_adapter_keyword(trained):
    pricer = create_pricer("specialist", _settings(decoding="greedy", batch_size=3), adapter=trained)
    try:
        texts = [p.text for p in starter_products()[:5]]
        singles = []
        for text in texts:  # a tiny model: each answer is a sane price or refused for leaving the sane range
            try:
                singles.append(pricer.price(text))
            except PricingError as exc:
                assert "outside" in str(exc)
                singles.append(None)
        assert all(e.pricer == "specialist" and 0.5 <= e.price <= 10_000 for e in singles if e is not None)
        if all(singles):  # in a batch = one by one
            assert [e.price for e in pricer.price_many(texts)] == [e.price for e in singles]
        else:
            with pytest.raises(PricingError, match="outside"):
                pricer.price_many(texts)
    finally:
        pricer.close()


def test_expected_decoding_in_process_and_the_default_location(trained, deals_home):
    shutil.copytree(trained, deals_home / "models" / "specialist")
    pricer = create_pricer("specialist", _settings(decoding="expected"))
    try:
        estimate = pricer.price("Title: Stainless steel water bottle, 1 litre, insulated")
        assert isinstance(estimate, Estimate) and math.isfinite(estimate.price)
    finally:
        pricer.close()


def test_the_evaluation_harness_runs_the_specialist(trained):
    from deals.pricer.evaluate import evaluate

    pricer = create_specialist(_settings(decoding="greedy"), adapter=trained)
    items = starter_products()[:6]
    report = evaluate(pricer, items, Settings().evaluation, progress=False, batch_size=4)
    assert report.attempted == 6 and report.n + report.failures == 6 and report.n > 0
    assert report.pricer == "specialist"


# --------------------------------------------------------------------------- remote (OpenAI-compatible, e.g. vLLM)


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        yield fake


def _remote(server, **specialist) -> Specialist:
    return create_specialist(_settings(base_url=server.url + "/v1", timeout_s=5, **specialist))


def test_remote_sends_the_training_prompt_with_the_prefilled_answer(server):
    server.respond(answer("149"))
    pricer = _remote(server, decoding="greedy", model="pricer")
    try:
        estimate = pricer.price("Title: Cordless drill 18V\nBrand: Makita")
    finally:
        pricer.close()
    assert estimate.price == 149.0 and estimate.pricer == "specialist" and estimate.tokens_out > 0
    (request,) = server.requests
    body = request.body
    assert request.path == "/v1/chat/completions"
    assert body["model"] == "pricer"
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{QUESTION}\n\nTitle: Cordless drill 18V\nBrand: Makita"},
        {"role": "assistant", "content": ANSWER_PREFIX},
    ]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["temperature"] == 0 and body["max_tokens"] <= 8
    assert "logprobs" not in body


def _with_logprobs(content: str, top: list[tuple[str, float]]):
    def respond(req):
        message = {"role": "assistant", "content": content, "refusal": None}
        logprobs = {
            "content": [
                {"token": content, "logprob": top[0][1], "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}
            ],
            "refusal": None,
        }  # fmt: skip
        return Reply(json={
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": req.body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 1, "total_tokens": 91},
        })  # fmt: skip

    return respond


def test_remote_expected_decoding_averages_number_token_alternatives(server):
    server.respond(_with_logprobs("149", [("149", math.log(0.5)), ("99", math.log(0.3)), ("<|eot_id|>", math.log(0.2))]))
    pricer = _remote(server, decoding="expected")
    try:
        estimate = pricer.price("Title: Bluetooth speaker")
    finally:
        pricer.close()
    assert estimate.price == pytest.approx((149 * 0.5 + 99 * 0.3) / 0.8)
    body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 20


def test_remote_expected_falls_back_to_greedy_without_logprobs(server):
    server.respond(answer("89"))
    pricer = _remote(server, decoding="expected")
    try:
        assert pricer.price("Title: Toaster").price == 89.0
    finally:
        pricer.close()


def test_remote_refuses_nonsense_and_server_errors(server):
    server.respond(garbage("I am not sure what this costs."))
    pricer = _remote(server, decoding="greedy")
    try:
        with pytest.raises(PricingError, match="no number"):
            pricer.price("Title: Mystery box")
        server.respond(answer("12345678"))
        with pytest.raises(PricingError, match="outside"):
            pricer.price("Title: Mystery box")
        server.respond(http_error(500))
        with pytest.raises(PricingError, match="500"):
            pricer.price("Title: Mystery box")
    finally:
        pricer.close()


def test_remote_batch_with_one_bad_item_keeps_the_good_answers(server):
    server.respond(lambda req: (answer("nothing") if "Broken" in req.user else answer("25"))(req))
    pricer = _remote(server, decoding="greedy", batch_size=4)
    texts = ["Title: Mug", "Title: Broken thing", "Title: Pen"]
    try:
        with pytest.raises(PricingError, match="1 of 3"):
            pricer.price_many(texts)
        sent = len(server.requests)
        assert pricer.price("Title: Mug").price == 25.0  # remembered from the batch
        assert len(server.requests) == sent
    finally:
        pricer.close()


def test_remote_uses_the_trained_tokenizer_to_truncate_like_training(server, trained):
    server.respond(answer("10"))
    pricer = create_specialist(_settings(base_url=server.url + "/v1", decoding="greedy"), adapter=trained)
    try:
        pricer.price("Title: Very long listing\n" + "lots of words here " * 400)
    finally:
        pricer.close()
    user = server.requests[0].user
    assert user.startswith(QUESTION) and len(user) < 1500  # cut to the trained token budget
