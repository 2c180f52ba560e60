"""The calibrated local model: trees as arrays, the features it reads, fitting and
recalibrating it on real catalogue products, and the shipped model pricing through the real
index: distributions, intervals, held-out refusal, and no alert on what the catalogue
cannot price."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deals.framework.errors import PricingError
from deals.framework.settings import Settings
from deals.pricer.alerts import AlertRule, alert_below, alerts_at
from deals.pricer.base import create_pricer
from deals.pricer.catalogue import STARTER_DIR, STARTER_VECTORS, starter_products
from deals.pricer.features import FEATURE_NAMES, NEIGHBOUR_FEATURES, TEXT_FEATURES, neighbour_features, text_features
from deals.pricer.local_fit import QUANTILE_LEVELS, LocalModel, deal_prior_weights, exact_neighbours, fit_local_model
from deals.pricer.trees import Forest


def test_trees_as_arrays_predict_what_scikit_learn_predicts(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nansum(X[:, :3], axis=1) + rng.normal(0, 0.3, 2000)
    probe = rng.normal(size=(300, 6))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    for model in (
        HistGradientBoostingRegressor(max_iter=60).fit(X, y),
        HistGradientBoostingRegressor(loss="quantile", quantile=0.2, max_iter=60).fit(X, y),
    ):
        forest = Forest.from_arrays(Forest.from_sklearn(model).to_arrays("m"), "m")
        assert np.allclose(forest.predict(probe), model.predict(probe), atol=1e-9)
    with pytest.raises(ValueError, match="expected an"):
        forest.predict(probe[:, :3])


def test_neighbour_features_weigh_the_closest_and_ignore_padding():
    sims = np.array([[0.9, 0.8, 0.5, np.nan], [0.7, 0.7, 0.7, 0.7]])
    prices = np.array([[100.0, 10.0, 1.0, np.nan], [20.0, 20.0, 20.0, 20.0]])
    f = dict(zip(NEIGHBOUR_FEATURES, neighbour_features(sims, prices).T, strict=True))
    w = np.array([0.9, 0.8, 0.5]) ** 16
    assert f["knn_sharp"][0] == pytest.approx(np.sum(w * np.log([100, 10, 1])) / w.sum())
    assert math.exp(f["knn_sharp"][1]) == pytest.approx(20) and f["log_price_spread"][1] == pytest.approx(0)
    assert f["knn_sharp_dear"][0] > f["knn_sharp"][0]  # leans towards the dear neighbour
    assert f["similarity_max"][0] == pytest.approx(0.9) and f["similarity_mean"][0] == pytest.approx(np.mean([0.9, 0.8, 0.5]))
    with pytest.raises(ValueError, match="equal"):
        neighbour_features(sims, prices[:, :2])


def test_text_features_read_the_numbers_that_carry_price():
    rows = text_features(["Amazon Basics AAA batteries, 24-Pack", 'Samsung 65" QLED 4K TV', "Seagate 2TB portable drive, replacement"])
    named = [dict(zip(TEXT_FEATURES, row, strict=True)) for row in rows]
    assert named[0]["pack_log"] == pytest.approx(math.log1p(24)) and named[0]["pack_present"] == 1
    assert named[1]["inch_log"] == pytest.approx(math.log1p(65)) and named[1]["tv"] == 1
    assert named[2]["tb_log"] == pytest.approx(math.log1p(2)) and named[2]["replacement"] == 1
    assert rows.shape == (3, len(TEXT_FEATURES)) and len(FEATURE_NAMES) == len(NEIGHBOUR_FEATURES) + 1 + len(TEXT_FEATURES)


def test_deal_prior_weights_give_the_mix_of_deals():
    prices = np.array([10.0] * 80 + [300.0] * 20)
    w = deal_prior_weights(prices)
    assert w.mean() == pytest.approx(1.0) and w[-1] > w[0]
    share_cheap = w[:80].sum() / w.sum()
    assert share_cheap == pytest.approx(0.07 / (0.07 + 0.24), abs=1e-6)  # <$25 against $250-500, as configured


def test_fitting_and_recalibrating_on_real_catalogue_products(tmp_path, monkeypatch):
    import deals.pricer.local_fit as local_fit

    from threadpoolctl import threadpool_limits

    monkeypatch.setitem(local_fit.TREE_PARAMS, "max_iter", 25)  # small and quick; the shipped model uses 300
    products = starter_products()[:600]
    vectors = np.load(STARTER_DIR / STARTER_VECTORS)[:600].astype(np.float32)
    nearest, _ = exact_neighbours(vectors, vectors, 1, exclude=np.arange(600))
    novel = nearest[:, 0] < 0.8
    with threadpool_limits(1):  # OpenMP threads spin badly when the machine is shared; one is plenty for 500 rows
        model = fit_local_model(
            products[:500], vectors[:500], fingerprint="test", recalibrate_on=novel[:500],
            validation=products[500:], validation_vectors=vectors[500:], folds=3, progress=False,
        )  # fmt: skip
    assert model.levels == QUANTILE_LEVELS and len(model.forests) == len(QUANTILE_LEVELS)
    assert model.meta["recalibrated_on"] == int(novel[:500].sum()) and model.meta["validation_products"] == 100
    coverage = model.meta["validation_coverage"]  # held out: roughly right, not exactly
    assert coverage["0.9"] > coverage["0.5"] > coverage["0.1"] and 0.6 < coverage["0.9"] and coverage["0.1"] < 0.4
    loaded = LocalModel.load(model.save(tmp_path / "local.npz"))
    X = np.random.default_rng(1).normal(size=(5, len(FEATURE_NAMES)))
    assert np.allclose(loaded.predict(X), model.predict(X)) and np.all(np.diff(loaded.predict(X), axis=1) >= 0)
    with pytest.raises(ValueError, match="at least 50"):
        fit_local_model(products[:100], vectors[:100], fingerprint="t", recalibrate_on=np.zeros(100, bool), progress=False)


@pytest.fixture
def local(seeded_home):
    pricer = create_pricer("local", Settings())
    yield pricer
    pricer.close()


def test_the_shipped_model_prices_with_a_distribution_and_an_interval(local):
    estimate = local.price("Apple AirPods Pro (2nd generation) wireless earbuds with MagSafe USB-C charging case")
    assert [q.level for q in estimate.quantiles] == list(QUANTILE_LEVELS)
    prices = [q.price for q in estimate.quantiles]
    assert prices == sorted(prices) and estimate.price == prices[QUANTILE_LEVELS.index(0.5)]
    assert estimate.low < estimate.price < estimate.high and estimate.interval_level == 0.8
    assert set(estimate.parts) == {"knn", "ridge"} and len(estimate.neighbours) == 10 and estimate.pricer == "local"


def test_catalogue_products_are_refused_held_out(local):
    product = starter_products()[0]
    assert local.price(product.text).price > 0
    with pytest.raises(PricingError, match="catalogue products the local model was fitted on"):
        local.price(product.text, exclude_exact=True)


def test_a_model_made_for_other_vectors_is_refused():
    from deals.pricer.local import load_model

    with pytest.raises(PricingError, match="fitted on .* vectors"):
        load_model("some-other-model|seq128")


def test_what_the_catalogue_cannot_price_gets_no_alert(local):
    rule = AlertRule.from_settings(Settings().planner)
    unknown = {  # licence keys, gift cards, memberships, groceries: nothing like them in the catalogue
        "Microsoft Office 2021 Professional Plus lifetime license key, digital download for one Windows PC": 15.0,
        "$100 Amazon.com gift card in a greeting card": 90.0,
        "Costco Gold Star Membership, one year, with a $20 Digital Costco Shop Card": 45.0,
        "Amazon Grocery 1lb 80/20 fat ground beef": 1.99,
        "Amazon Basics 24-pack AAA alkaline batteries": 12.50,
    }
    estimates = local.price_many(list(unknown))
    for (text, price), estimate in zip(unknown.items(), estimates, strict=True):
        assert not alerts_at(estimate, [price], rule)[0], (text, estimate.price, estimate.low, estimate.high)
        assert estimate.high / estimate.low > 3, text  # and the interval says it is unsure
    tv = local.price("Samsung 65-inch class QLED 4K Q80C smart TV with quantum HDR and Alexa built in")
    assert alert_below(tv, rule) > 100  # a dear product it knows can be a deal
