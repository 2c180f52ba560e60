"""The learned ensemble: fitting (known weights, constraints, subsets, CV choice, conformal
distributions), run-time re-weighting and fallbacks, the weights file, `fit_from_file` with
the real local and ridge members, automatic fits under a cost cap with a real frontier
member against a fake LLM server, members no fit uses not being called, and the ridge
member itself.

Members whose answers a test must control are real `Pricer`s registered through the same
registry as the real ones (`test-a`, `test-b`, ...): they price from a table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import deals.agents  # noqa: F401 - registers the agent pricers
from deals.pricer.blend import (
    EnsembleFit,
    SubsetFit,
    fit_blend,
    fit_from_file,
    load_fit,
    save_fit,
    subset_key,
    weights_path,
)
from deals.framework.errors import ConfigError, DataError, PricingError
from deals.framework.models import Estimate, Neighbour
from deals.framework.settings import LLMSettings, Settings
from deals.pricer.base import Pricer, create_pricer, pricer_names, register
from deals.pricer.local_fit import deal_prior_weights

ROOT = Path(__file__).resolve().parent.parent


def fit_ensemble(*args, **kwargs) -> EnsembleFit:
    return fit_blend(*args, **kwargs)[0]


def median_of(sub: SubsetFit, parts: dict[str, float]) -> float:
    """What the ensemble answers for a subset without a shape: the median of its conformal distribution."""
    return round(math.exp(sub.log_quantiles(parts, None)[sub.levels.index(0.5)]), 2)


def no_auto_fit() -> Settings:
    settings = Settings()
    settings.ensemble.auto_fit = False
    return settings
VALIDATION = ROOT / "data" / "eval" / "validation.jsonl"

# --------------------------------------------------------------------------- test members

TABLES: dict[str, dict[str, float]] = {}


class TablePricer(Pricer):
    """Prices from TABLES[name]; a text it lacks is a PricingError (a member failing for that item)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
        self.calls += 1
        try:
            value = TABLES[self.name][description]
        except KeyError:
            raise PricingError(f"{self.name} has no price for {description!r}") from None
        neighbours = [Neighbour(id="n1", title="a neighbour", price=value, similarity=0.9)] if self.name == "test-a" else []
        return Estimate(price=value, pricer=self.name, neighbours=neighbours, tokens_in=10 if self.name == "test-b" else 0)


for _name in ("test-a", "test-b", "test-c"):
    register(_name)(lambda settings, _n=_name, **_: TablePricer(_n))


@register("test-broken")
def _broken(settings, **_):
    raise PricingError("no trained adapter (test)")


@pytest.fixture(autouse=True)
def _clear_tables():
    TABLES.clear()
    yield
    TABLES.clear()


def synthetic(n: int = 300, seed: int = 1):
    """Members a, b, c with log-normal errors, and truths built from known weights on a and b."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(1.0, 6.0, n)
    la = base + rng.normal(0, 0.5, n)
    lb = base + rng.normal(0, 0.5, n)
    lc = base + rng.normal(0, 1.0, n)
    y = 0.2 + 0.7 * la + 0.3 * lb + rng.normal(0, 0.02, n)
    return {"test-a": np.exp(la), "test-b": np.exp(lb), "test-c": np.exp(lc)}, np.exp(y)


def fill_tables(members: dict[str, np.ndarray], texts: list[str]) -> None:
    for name, values in members.items():
        TABLES[name] = {text: round(float(v), 2) for text, v in zip(texts, values, strict=True)}


# --------------------------------------------------------------------------- fitting


def test_fit_recovers_known_weights():
    members, truth = synthetic()
    fit = fit_ensemble(members, truth, losses=("log_l2",), spread=False)
    full = fit.subsets["test-a+test-b+test-c"]
    assert full.weights["test-a"] == pytest.approx(0.7, abs=0.02)
    assert full.weights["test-b"] == pytest.approx(0.3, abs=0.02)
    assert full.weights["test-c"] == pytest.approx(0.0, abs=0.02)
    assert full.intercept == pytest.approx(0.2, abs=0.05)
    # the blend beats every member, out of fold
    assert fit.ensemble_cv.mae < min(s.mae for s in fit.member_scores.values()) / 2
    assert set(fit.subsets) == {"test-a", "test-b", "test-c", "test-a+test-b", "test-a+test-c", "test-b+test-c", "test-a+test-b+test-c"}


def test_weights_stay_on_the_simplex_where_least_squares_would_leave_it():
    rng = np.random.default_rng(3)
    base = rng.uniform(1, 6, 200)
    la, lb = base + rng.normal(0, 0.3, 200), base + rng.normal(0, 0.3, 200)
    y = 1.4 * la - 0.4 * lb + rng.normal(0, 0.05, 200)  # unconstrained: a negative weight
    free = np.linalg.lstsq(np.column_stack([np.ones(200), la, lb]), y, rcond=None)[0]
    assert free[2] < -0.2 and free[1] > 1.2
    fit = fit_ensemble({"a": np.exp(la), "b": np.exp(lb)}, np.exp(y))  # every loss and spread variant
    for sub in fit.subsets.values():
        assert all(w >= 0 for w in sub.weights.values())
        assert sum(sub.weights.values()) == pytest.approx(1.0, abs=1e-6)
    assert fit.subsets["a+b"].weights["a"] > 0.95


def test_every_subset_is_fitted_on_the_rows_its_members_answered():
    members, truth = synthetic(200)
    answers = {name: [float(v) for v in values] for name, values in members.items()}
    for i in range(0, 200, 4):
        answers["test-c"][i] = None  # c failed on a quarter of the items
    answers["test-b"][1] = float("nan")
    fit = fit_ensemble(answers, truth, losses=("log_l2",))
    assert fit.subsets["test-a"].n == 200
    assert fit.subsets["test-c"].n == 150
    assert fit.subsets["test-b+test-c"].n == 149
    assert fit.member_scores["test-c"].n == 150 and fit.ensemble_cv.n == 200


def test_cross_validation_keeps_the_spread_feature_only_when_it_validates():
    rng = np.random.default_rng(5)
    base = rng.uniform(1, 6, 300)
    la, lb = base + rng.normal(0, 0.6, 300), base + rng.normal(0, 0.6, 300)
    spread = np.abs(la - lb) / 2  # the std of two numbers
    y = 0.5 * la + 0.5 * lb - 0.9 * spread + rng.normal(0, 0.02, 300)  # members that disagree overestimate
    members = {"a": np.exp(la), "b": np.exp(lb)}
    fit = fit_ensemble(members, np.exp(y), losses=("log_l2",))
    plain = fit_ensemble(members, np.exp(y), losses=("log_l2",), spread=False)
    assert fit.subsets["a+b"].uses_spread and fit.subsets["a+b"].spread == pytest.approx(-0.9, abs=0.1)
    assert fit.subsets["a+b"].cv.mae < plain.subsets["a+b"].cv.mae
    # with members whose disagreement means nothing, the plain model validates better and is kept
    members, truth = synthetic()
    assert not fit_ensemble(members, truth, losses=("log_l2",)).subsets["test-a+test-b"].uses_spread


def test_fit_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="estimates of 'a'"):
        fit_ensemble({"a": [1.0, 2.0]}, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="positive"):
        fit_ensemble({"a": [1.0] * 20}, [0.0] + [1.0] * 19)
    with pytest.raises(ValueError, match="no member set"):
        fit_ensemble({"a": [None] * 30}, [1.0] * 30)


def test_weights_file_round_trip_and_content(tmp_path):
    members, truth = synthetic(100)
    fit = fit_ensemble(members, truth, losses=("log_l2",), data_file="val.jsonl", data_sha256="ab" * 32)
    path = save_fit(fit, tmp_path / "models" / "ensemble.json")
    data = json.loads(path.read_text())
    assert data["data_file"] == "val.jsonl" and data["data_sha256"] == "ab" * 32 and data["n"] == 100
    assert set(data["member_scores"]) == set(members) and data["ensemble_cv"]["mae"] > 0 and data["fitted_at"]
    assert data["subsets"]["test-a+test-b"]["weights"].keys() == {"test-a", "test-b"}
    assert load_fit(path) == fit
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a valid ensemble weights file"):
        load_fit(path)
    # a version-2 fit is still good unless it blends kNN or ridge, whose estimates changed scale in version 3
    save_fit(fit.model_copy(update={"version": 2}), path)
    assert load_fit(path).version == 3
    knn = {"knn" if name == "test-a" else name: values for name, values in members.items()}
    save_fit(fit_ensemble(knn, truth, losses=("log_l2",)).model_copy(update={"version": 2}), path)
    with pytest.raises(DataError, match="version 2, expected 3"):
        load_fit(path)


# --------------------------------------------------------------------------- the pricer at run time


@pytest.fixture
def fitted(tmp_path):
    """Tables for 300 items and the fit learned from them, saved as the weights file."""
    members, truth = synthetic()
    texts = [f"item {i}" for i in range(len(truth))]
    fill_tables(members, texts)
    fit = fit_ensemble({n: list(TABLES[n].values()) for n in members}, truth, losses=("log_l2",))
    path = save_fit(fit, tmp_path / "ensemble.json")
    return fit, path, texts


def test_all_members_blend_with_the_full_fit(fitted):
    fit, path, texts = fitted
    pricer = create_pricer("ensemble", Settings(), members=["test-a", "test-b", "test-c"], weights_file=path)
    estimate = pricer.price(texts[0])
    parts = {n: TABLES[n][texts[0]] for n in ("test-a", "test-b", "test-c")}
    assert estimate.parts == parts
    assert estimate.price == median_of(fit.subsets["test-a+test-b+test-c"], parts)
    assert "learned weights" in estimate.note and "missing" not in estimate.note
    assert estimate.neighbours and estimate.tokens_in == 10  # evidence and usage carried over from the members


def test_missing_member_is_reweighted_by_its_subset_fit(fitted, caplog):
    fit, path, texts = fitted
    settings = Settings()
    with caplog.at_level(logging.DEBUG, logger="deals.pricer.blend"):
        pricer = create_pricer("ensemble", settings, members=["test-a", "test-b", "test-broken"], weights_file=path)
        estimates = pricer.price_many(texts[:5])
    assert sum("test-broken is unavailable" in r.message for r in caplog.records) == 1  # logged once, at creation
    sub = fit.subsets["test-a+test-b"]
    assert sub.weights != fit.subsets["test-a+test-b+test-c"].weights
    for text, estimate in zip(texts[:5], estimates, strict=True):
        parts = {"test-a": TABLES["test-a"][text], "test-b": TABLES["test-b"][text]}
        assert estimate.parts == parts
        assert estimate.price == median_of(sub, parts)
        assert "missing: test-broken (no trained adapter" in estimate.note
        assert "fit for test-a+test-b" in estimate.note and "re-weighted" in estimate.note


def test_member_failing_for_one_item_is_dropped_for_that_item_only(fitted):
    fit, path, texts = fitted
    del TABLES["test-b"][texts[1]]
    pricer = create_pricer("ensemble", Settings(), members=["test-a", "test-b", "test-c"], weights_file=path)
    first, second, third = pricer.price_many(texts[:3])
    assert set(first.parts) == set(third.parts) == {"test-a", "test-b", "test-c"}
    assert set(second.parts) == {"test-a", "test-c"}
    assert second.price == median_of(fit.subsets["test-a+test-c"], second.parts)
    assert "missing: test-b (PricingError" in second.note and "missing" not in first.note


def test_a_member_no_fit_uses_is_not_called_and_says_why(tmp_path, caplog):
    members, truth = synthetic(100)
    texts = [f"item {i}" for i in range(100)]
    fill_tables(members, texts)
    fit = fit_ensemble({"test-a": list(TABLES["test-a"].values())}, truth, losses=("log_l2",))
    path = save_fit(fit, tmp_path / "e.json")
    with caplog.at_level(logging.WARNING, logger="deals.agents.ensemble"):
        pricer = create_pricer("ensemble", no_auto_fit(), members=["test-a", "test-c"], weights_file=path)
    estimate = pricer.price(texts[3])
    assert set(pricer.members) == {"test-a"} and set(estimate.parts) == {"test-a"}  # test-c never asked
    assert estimate.price == median_of(fit.subsets["test-a"], {"test-a": TABLES["test-a"][texts[3]]})
    assert "test-c (no fitted weights use it and ensemble.auto_fit is off; not called)" in estimate.note
    assert "member test-c is configured but no fitted weights use it" in caplog.text


def test_without_a_fit_the_geometric_mean_and_a_note(tmp_path):
    TABLES.update({"test-a": {"x": 10.0}, "test-b": {"x": 40.0}})
    settings = no_auto_fit()
    settings.ensemble.weights_file = str(tmp_path / "none.json")
    estimate = create_pricer("ensemble", settings, members=["test-a", "test-b"]).price("x")
    assert estimate.price == 20.0 and estimate.parts == {"test-a": 10.0, "test-b": 40.0}
    assert "no fitted weights" in estimate.note and "geometric mean of test-a, test-b" in estimate.note


def test_unusable_weights_file_falls_back_and_says_so(tmp_path, caplog):
    TABLES.update({"test-a": {"x": 10.0}, "test-b": {"x": 40.0}})
    broken = tmp_path / "ensemble.json"
    broken.write_text('{"version": 1, "members": "oops"}')
    with caplog.at_level(logging.WARNING, logger="deals.agents.ensemble"):
        estimate = create_pricer("ensemble", no_auto_fit(), members=["test-a", "test-b"], weights_file=broken).price("x")
    assert estimate.price == 20.0 and "geometric mean" in estimate.note and "not a valid ensemble weights file" in caplog.text


def test_failures_and_misconfiguration_are_clear_errors(fitted):
    _, path, _ = fitted
    pricer = create_pricer("ensemble", Settings(), members=["test-a", "test-b"], weights_file=path)
    with pytest.raises(PricingError, match="every member failed"):
        pricer.price("an item no member knows")
    with pytest.raises(PricingError, match="no member that can price.*test-broken: no trained adapter"):
        create_pricer("ensemble", Settings(), members=["test-broken"], weights_file=path)
    with pytest.raises(ConfigError, match="member of itself"):
        create_pricer("ensemble", Settings(), members=["test-a", "ensemble"])


def test_default_weights_path_is_under_deals_home(deals_home):
    settings = Settings()
    assert weights_path(settings) == deals_home / "models" / "ensemble.json"
    settings.ensemble.weights_file = "/tmp/elsewhere.json"
    assert weights_path(settings) == Path("/tmp/elsewhere.json")


def test_agents_register_their_pricers_lazily():
    assert {"frontier", "ensemble", "specialist", "ridge", "local"} <= set(pricer_names())


def test_subset_lookup_prefers_exact_then_largest_then_best_cv():
    def sub(members, mae):
        return SubsetFit(members=members, weights={m: 1 / len(members) for m in members}, intercept=0, n=10,
                         cv={"n": 10, "mae": mae, "rmsle": 0.1, "hit_rate": 0.5})  # fmt: skip

    fit = EnsembleFit(members=["a", "b", "c"], n=10, folds=2, member_scores={}, ensemble_cv=None,
                      subsets={subset_key(m): sub(m, mae) for m, mae in [(["a"], 5), (["b"], 3), (["a", "b"], 9)]})  # fmt: skip
    assert fit.for_members(["b", "a"]).members == ["a", "b"]
    assert fit.for_members(["a", "b", "c"]).members == ["a", "b"]
    assert fit.for_members(["a", "c"]).members == ["a"]
    assert fit.for_members(["c"]) is None


# --------------------------------------------------------------------------- real members


@pytest.fixture(scope="session")
def ridge_file(tmp_path_factory):
    """The ridge model fitted once on the full starter catalogue (as at first use)."""
    from deals.memory.embeddings import embedder_fingerprint
    from deals.pricer.ridge import load_or_fit, model_file

    directory = tmp_path_factory.mktemp("ridge")
    settings = Settings()
    load_or_fit(settings, directory=directory, progress=False)
    return model_file(embedder_fingerprint(settings.embeddings), directory)


@pytest.fixture
def ridge_home(seeded_home, ridge_file):
    target = seeded_home / "models" / "ridge"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(ridge_file, target / ridge_file.name)
    return seeded_home


def test_fit_from_file_with_the_real_local_and_ridge_members(ridge_home):
    from deals.pricer.catalogue import starter_products
    from deals.pricer.data import load_products

    settings = Settings()
    report = fit_from_file(settings, VALIDATION, limit=40, members=["local", "ridge"], folds=3, progress=False)

    assert report.path == ridge_home / "models" / "ensemble.json" and report.missing == {}
    data = json.loads(report.path.read_text())
    assert data["data_file"] == str(VALIDATION)
    assert data["data_sha256"] == hashlib.sha256(VALIDATION.read_bytes()).hexdigest()
    assert data["n"] == 40 and data["folds"] == 3 and data["fitted_at"]
    assert set(data["member_scores"]) == {"local", "ridge"} and data["ensemble_cv"]["n"] == 40
    assert set(data["subsets"]) == {"local", "ridge", "local+ridge"}
    both = data["subsets"]["local+ridge"]
    assert sum(both["weights"].values()) == pytest.approx(1.0) and both["shape"] == "local"
    assert len(both["offsets"]) == len(both["levels"]) == 11

    items = load_products(VALIDATION)[:40]
    truth = np.array([p.price for p in items])
    weights = deal_prior_weights(truth)  # member scores count prices with the mix of deals
    def constant_mae(value: float) -> float:
        return float(weights @ np.abs(truth - value)) / weights.sum()

    catalogue_median = float(np.median([p.price for p in starter_products()]))  # the constant pricer's answer
    for name in ("local", "ridge"):  # both members really price: better than the constant pricer
        assert report.fit.member_scores[name].mae < constant_mae(catalogue_median)
    # the calibrated local member beats even the best constant fitted on these very items
    assert report.fit.member_scores["local"].mae < min(constant_mae(c) for c in truth)
    assert [r.pricer for r in report.reports] == ["local", "ridge", "ensemble (3-fold CV)"]
    assert report.reports[-1].n == 40 and report.table().row_count == 3

    ensemble = create_pricer("ensemble", settings, members=["local", "ridge"])
    try:
        estimate = ensemble.price(items[0].text, exclude_exact=True)
    finally:
        ensemble.close()
    assert {"local", "ridge", "knn"} <= set(estimate.parts) and estimate.neighbours
    sub = report.fit.subsets["local+ridge"]
    centre = sub.centre_log({"local": estimate.parts["local"], "ridge": estimate.parts["ridge"]})
    assert estimate.price == pytest.approx(math.exp(centre + sub.offsets[sub.levels.index(0.5)]), rel=0.01)  # the local shape is 0 at the median
    assert estimate.low < estimate.price < estimate.high and len(estimate.quantiles) == 11
    assert "learned weights" in estimate.note


def test_the_offline_default_is_the_local_model_with_its_interval(ridge_home):
    ensemble = create_pricer("ensemble", Settings())  # no key, no adapter: local alone, nothing fitted or called
    try:
        assert set(ensemble.members) == {"local"} and {"frontier", "specialist"} <= set(ensemble.missing)
        estimate = ensemble.price("Anker 737 power bank, 24,000 mAh, 140 W USB-C portable charger")
    finally:
        ensemble.close()
    assert estimate.pricer == "ensemble" and estimate.interval_level == 0.8
    assert estimate.low < estimate.price < estimate.high and {"local", "knn", "ridge"} == set(estimate.parts)
    assert not (ridge_home / "models" / "ensemble.json").exists()


@pytest.fixture
def small_validation(tmp_path):
    from deals.pricer.data import load_products, save_products

    path = tmp_path / "fit.jsonl"
    save_products(load_products(VALIDATION)[:40], path)
    return path


def test_a_configured_frontier_is_fitted_on_first_use_under_the_cost_cap(ridge_home, small_validation, monkeypatch, caplog):
    from deals.framework.llm.usage import METER
    from tests.fakes.llm_server import FakeLLMServer, answer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ensemble")
    settings = Settings()
    settings.ensemble.auto_fit_data = str(small_validation)
    settings.ensemble.auto_fit_max_usd = 0.0045  # gpt-4o-mini, 2,000 tokens in: ~$0.0003 a call, so about fifteen calls
    settings.frontier.cache = False
    before = METER.snapshot()
    with FakeLLMServer(answer({"price": 120.0}, tokens_in=2000, tokens_out=8)) as server:
        settings.llm = LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0)
        with caplog.at_level(logging.INFO):
            ensemble = create_pricer("ensemble", settings)
        try:
            fitted_calls = len(server.requests)
            assert set(ensemble.members) == {"local", "frontier"}
            estimate = ensemble.price("Sony WH-1000XM4 wireless noise cancelling headphones")
        finally:
            ensemble.close()
    fit = load_fit(ridge_home / "models" / "ensemble.json")
    assert 12 <= fitted_calls <= 16 and fit.cost_usd <= 0.0045 + 0.0004  # stopped at the cap (one call of slack)
    assert "frontier priced" in caplog.text and "(cap $0.0045)" in caplog.text and "fitted " in caplog.text
    assert fit.covers("frontier") and fit.subsets["frontier"].n == fitted_calls
    assert estimate.parts["frontier"] == 120.0 and "local" in estimate.parts and estimate.low < estimate.high
    used = METER.snapshot() - before
    assert used.calls == fitted_calls + 1 and used.cost_usd > 0  # every call counted, whoever made it


def test_an_automatic_fit_that_leaves_a_member_unfitted_is_not_paid_for_again_at_every_start(ridge_home, small_validation, monkeypatch, caplog):
    from tests.fakes.llm_server import FakeLLMServer, http_error

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ensemble")
    settings = Settings()
    settings.ensemble.auto_fit_data = str(small_validation)
    settings.frontier.cache = False
    with FakeLLMServer(http_error(401)) as server:  # every frontier call fails: the fit cannot cover it
        settings.llm = LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0)
        create_pricer("ensemble", settings).close()
        tried = len(server.requests)
        with caplog.at_level(logging.WARNING):
            again = create_pricer("ensemble", settings)  # the next start (or `deals price`)
        again.close()
        assert tried > 0 and len(server.requests) == tried  # not tried, not paid for, again
        assert "tried before" in caplog.text and "deals ensemble fit" in caplog.text
        assert set(again.members) == {"local"} and "frontier" in again.missing
        other = small_validation.with_name("other.jsonl")
        other.write_text("\n".join(small_validation.read_text().splitlines()[:30]) + "\n")
        settings.ensemble.auto_fit_data = str(other)  # other data (or other members): a new attempt
        create_pricer("ensemble", settings).close()
        assert len(server.requests) > tried


def test_with_auto_fit_off_a_configured_frontier_is_never_called(ridge_home, monkeypatch):
    from tests.fakes.llm_server import FakeLLMServer, answer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ensemble")
    settings = no_auto_fit()
    with FakeLLMServer(answer({"price": 300.0})) as server:
        settings.llm = LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0)
        ensemble = create_pricer("ensemble", settings)
        try:
            estimate = ensemble.price("Ninja professional countertop blender 1000 watt")
        finally:
            ensemble.close()
        assert server.requests == []
    assert "frontier" not in estimate.parts and "frontier (no fitted weights use it" in estimate.note


def test_ensemble_with_a_real_frontier_member_through_a_fake_server(ridge_home, tmp_path, monkeypatch):
    from tests.fakes.llm_server import FakeLLMServer, answer, garbage, sequence

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ensemble")
    rng = np.random.default_rng(0)
    truth = np.exp(rng.uniform(2, 6, 60))
    members = {"local": truth * np.exp(rng.normal(0, 0.4, 60)), "frontier": truth * np.exp(rng.normal(0, 0.4, 60))}
    fit = fit_ensemble(members, truth, losses=("log_l2",))
    settings = Settings()
    settings.ensemble.weights_file = str(save_fit(fit, tmp_path / "fit.json"))
    with FakeLLMServer(sequence(answer({"price": 300.0}, tokens_in=700, tokens_out=8), garbage())) as server:
        settings.llm = LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0)
        ensemble = create_pricer("ensemble", settings)
        try:
            assert set(ensemble.members) == {"local", "frontier"} and "specialist" in ensemble.missing
            first = ensemble.price("Sony WH-1000XM4 wireless noise cancelling headphones")
            second = ensemble.price("Ninja professional countertop blender 1000 watt")
        finally:
            ensemble.close()
    assert first.parts["frontier"] == 300.0 and (first.tokens_in, first.tokens_out) == (700, 8) and first.cost_usd > 0
    sub = fit.subsets["frontier+local"]
    centre = sub.centre_log({"local": first.parts["local"], "frontier": 300.0})
    assert first.price == pytest.approx(math.exp(centre + sub.offsets[sub.levels.index(0.5)]), rel=0.01)
    assert "frontier" not in second.parts and "frontier (PricingError" in second.note
    assert second.low < second.price < second.high  # the local model answered alone, with its own interval


# --------------------------------------------------------------------------- the ridge member


def test_ridge_model_round_trip_and_held_out_refusal(tmp_path):
    from deals.pricer.catalogue import STARTER_DIR, STARTER_VECTORS, starter_products
    from deals.pricer.ridge import RidgeModel, RidgePricer

    products = starter_products()[:300]
    vectors = np.load(STARTER_DIR / STARTER_VECTORS)[:300]
    model = RidgeModel.fit([p.text for p in products], [p.price for p in products], vectors, fingerprint="fp")
    loaded = RidgeModel.load(model.save(tmp_path / "r.npz"))
    texts = [p.text for p in products[:5]] + ["an unseen kitchen gadget"]
    probe = np.vstack([vectors[:5], vectors[5:6]])
    assert np.allclose(model.predict_log(texts, probe), loaded.predict_log(texts, probe), atol=1e-4)
    fitted = model.predict_log([p.text for p in products], vectors)
    truth = np.log([p.price for p in products])
    assert np.corrcoef(fitted, truth)[0, 1] > 0.9  # it learned the training prices

    class Lookup:  # the starter's own vectors stand in for the encoder, for these texts only
        fingerprint = "fp"

        def encode(self, batch, progress=False):
            return np.vstack([vectors[[p.text for p in products].index(t)] for t in batch])

    pricer = RidgePricer(loaded, Lookup(), Settings().pricing)
    assert pricer.price(products[0].text).price > 0
    with pytest.raises(PricingError, match="training products of the ridge pricer"):
        pricer.price(products[0].text, exclude_exact=True)


def test_a_paid_member_that_spends_the_cap_leaves_the_free_members_whole(ridge_home, small_validation, monkeypatch):
    """The dollar cap is for members that cost money; listed first, a frontier must not starve `local`."""
    from deals.pricer.blend import fit_from_file
    from tests.fakes.llm_server import FakeLLMServer, answer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-ensemble")
    settings = Settings()
    settings.frontier.cache = False
    with FakeLLMServer(answer({"price": 120.0}, tokens_in=2000, tokens_out=8)) as server:
        settings.llm = LLMSettings(provider="openai", base_url=f"{server.url}/v1", max_retries=0)
        fit_from_file(settings, small_validation, members=["frontier", "local"], max_usd=0.0012, progress=False,
                      weights_file=ridge_home / "capped.json")  # fmt: skip
        paid_calls = len(server.requests)
    fit = load_fit(ridge_home / "capped.json")
    assert 3 <= paid_calls <= 6 and fit.subsets["local"].n == 40  # local priced every item
    # with nothing to spend at all, the free members still fit
    free = fit_from_file(settings, small_validation, members=["local"], max_usd=0.0, progress=False, weights_file=ridge_home / "free.json")
    assert load_fit(ridge_home / "free.json").subsets["local"].n == 40 and free is not None
