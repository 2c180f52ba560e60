"""The vector index, the starter catalogue and the kNN pricer, on real data and the real model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from deals.framework.errors import IndexError_
from deals.framework.models import Neighbour, Product
from deals.framework.settings import Settings
from deals.memory.embeddings import embedder_fingerprint, query_encoder
from deals.memory.vectors import VectorStore
from deals.pricer.catalogue import open_catalogue, starter_manifest, starter_products
from deals.pricer.constant import ConstantPricer
from deals.pricer.data import curate, load_products
from deals.pricer.evaluate import compare
from deals.pricer.knn import KnnPricer, combine, weights

FIXTURES = Path(__file__).parent / "fixtures"
EVAL = Path(__file__).resolve().parent.parent / "data" / "eval"


@pytest.fixture(scope="module")
def sample_products() -> list[Product]:
    return curate(load_products(FIXTURES / "products-sample.jsonl"), Settings().data).products


class CountingEncoder:
    """The real encoder, counting what it is asked to encode (and optionally failing)."""

    def __init__(self, inner, fail_after_calls: int | None = None) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.encoded = 0
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    def encode(self, texts, *, progress=False):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.encoded += len(texts)
        return self.inner.encode(texts)


def _store(settings: Settings, name: str = "products") -> VectorStore:
    return VectorStore(settings.vectors.model_copy(update={"collection": name, "batch_size": 16}), embedder_fingerprint(settings.embeddings))


def test_index_is_idempotent_and_resumes(embedder, sample_products):
    settings = Settings()
    store = _store(settings)
    first = sample_products[:40]
    encoder = CountingEncoder(embedder)
    report = store.index_products(first, encoder, progress=False)
    assert (report.added, report.skipped, store.count()) == (40, 0, 40)

    encoder = CountingEncoder(embedder)
    report = store.index_products(sample_products, encoder, progress=False)
    assert report.added == len(sample_products) - 40 and report.skipped == 40
    assert encoder.encoded == len(sample_products) - 40  # stored products are not re-embedded
    assert store.count() == len(sample_products)

    encoder = CountingEncoder(embedder)
    report = store.index_products(sample_products + sample_products[:5], encoder, progress=False)
    assert (report.added, encoder.encoded, store.count()) == (0, 0, len(sample_products))


def test_interrupted_build_resumes_where_it_stopped(embedder, sample_products):
    settings = Settings()
    store = _store(settings, "interrupted")
    with pytest.raises(KeyboardInterrupt):
        store.index_products(sample_products, CountingEncoder(embedder, fail_after_calls=2), progress=False)
    assert store.count() == 32  # two batches of 16 made it
    encoder = CountingEncoder(embedder)
    report = store.index_products(sample_products, encoder, progress=False)
    assert report.skipped == 32 and encoder.encoded == len(sample_products) - 32
    assert store.count() == len(sample_products)


def test_metadata_and_documents_are_stored(embedder, sample_products):
    settings = Settings()
    store = _store(settings, "meta")
    store.index_products(sample_products[:10], embedder, progress=False)
    product = sample_products[3]
    [found] = store.query(embedder.encode([product.text]), 1, with_text=True)
    top = found[0]
    assert top.id == product.id and top.price == product.price and top.text == product.text
    assert top.similarity == pytest.approx(1.0, abs=1e-3)
    assert (top.category or None) == (product.category or None)
    assert sorted(store.prices()) == sorted(p.price for p in sample_products[:10])


def test_index_made_with_another_model_is_refused(embedder, sample_products):
    settings = Settings()
    store = _store(settings, "other")
    store.index_products(sample_products[:3], embedder, progress=False)
    with pytest.raises(IndexError_, match="rebuild"):
        VectorStore(settings.vectors.model_copy(update={"collection": "other"}), "some-other-model|seq128")


def test_empty_index_query_says_what_to_do():
    store = _store(Settings(), "empty")
    with pytest.raises(IndexError_, match="deals index"):
        store.query(np.zeros((1, 384), dtype=np.float32), 3)


def test_weights_and_combine_by_hand():
    a = Neighbour(id="a", title="a", price=100.0, similarity=0.9)
    b = Neighbour(id="b", title="b", price=400.0, similarity=0.8)
    assert combine([a, b], "uniform", 0.05) == pytest.approx(200.0)  # geometric mean
    w = math.exp(-0.1 / 0.1)
    expected = math.exp((math.log(100) + w * math.log(400)) / (1 + w))
    assert combine([a, b], "softmax", 0.1) == pytest.approx(expected)
    inv = weights(np.array([0.9, 0.8]), "inverse", 1.0)
    assert inv == pytest.approx([10.0, 5.0])
    assert combine([a, b], "softmax", 1e-4) == pytest.approx(100.0)  # trust the closest


def test_starter_seed_uses_bundled_vectors_that_match_the_model(seeded_home):
    settings = Settings()
    manifest = starter_manifest()
    assert manifest["fingerprint"] == embedder_fingerprint(settings.embeddings)
    store = open_catalogue(settings, progress=False)
    assert store.count() == manifest["count"] == len(starter_products())
    encoder = query_encoder(settings.embeddings)
    products = starter_products()
    probes = [products[i] for i in (0, len(products) // 2, len(products) - 1)]
    for probe, found in zip(probes, store.query(encoder.encode([p.text for p in probes]), 1), strict=True):
        assert found[0].id == probe.id and found[0].similarity > 0.99


def test_an_index_seeded_from_an_older_starter_is_reseeded_but_one_with_own_products_only_warned(seeded_home, caplog):
    settings = Settings()
    store = open_catalogue(settings, progress=False)
    current = starter_manifest()["products_sha256"]
    assert store.metadata["starter"] == current and store.metadata["starter_count"] == store.count()
    store.mark_seeded("an-older-starter", store.count())  # as a previous version of deals left it
    assert open_catalogue(settings, progress=False).metadata["starter"] == current  # re-seeded with this one
    store = open_catalogue(settings, progress=False)
    store.mark_seeded("an-older-starter", store.count() - 1)  # the user added products of their own
    with caplog.at_level("WARNING"):
        kept = open_catalogue(settings, progress=False)
    assert kept.count() == starter_manifest()["count"] and "rebuild with `deals index --rebuild`" in caplog.text


def test_a_starter_load_cut_short_is_loaded_again_at_the_next_start(deals_home, monkeypatch, caplog):
    """A daemon stopped (or OOM-killed) while it loads the starter must not leave half an index for good."""
    from deals.memory import vectors

    settings = Settings()
    real_add, calls = vectors.VectorStore.add, []

    def add_then_die(self, products, vecs):  # type: ignore[no-untyped-def]
        calls.append(len(products))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process goes away in the middle of the load
        return real_add(self, products, vecs)

    monkeypatch.setattr(vectors.VectorStore, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        open_catalogue(settings, progress=False)
    monkeypatch.setattr(vectors.VectorStore, "add", real_add)
    with caplog.at_level("WARNING"):
        store = open_catalogue(settings, progress=False)
    assert "only partly loaded" in caplog.text
    assert store.count() == starter_manifest()["count"] and store.metadata["starter"] == starter_manifest()["products_sha256"]
    assert "starter_loading" not in store.metadata


def test_knn_excludes_the_item_itself(seeded_home):
    settings = Settings()
    pricer = KnnPricer.from_settings(settings, progress=False)
    product = starter_products()[10]
    plain = pricer.price(product.text)
    assert plain.neighbours[0].id == product.id
    held_out = pricer.price(product.text, exclude_exact=True)
    assert held_out.excluded >= 1
    assert product.id not in {n.id for n in held_out.neighbours}
    assert len(held_out.neighbours) == settings.knn.k
    assert settings.pricing.min_estimate <= held_out.price <= settings.pricing.max_estimate


@pytest.mark.slow
def test_knn_beats_constant_on_held_out_deal_like_items(seeded_home):
    settings = Settings()
    items = load_products(EVAL / "deal_like.jsonl")[:120]
    knn = KnnPricer.from_settings(settings, progress=False)
    constant = ConstantPricer(float(np.median(knn.store.prices())))
    by_name = {r.pricer: r for r in compare({"constant": constant, "knn": knn}, items, settings.evaluation, progress=False)}
    assert by_name["knn"].mae < 0.8 * by_name["constant"].mae
    assert by_name["knn"].hit_rate > by_name["constant"].hit_rate


@pytest.mark.slow
def test_onnx_query_encoder_matches_sentence_transformers(seeded_home, embedder):
    texts = [p.text for p in starter_products()[:5]] + ["tiny", "Apple iPhone 14 Pro Max 256GB"]
    fast = query_encoder(Settings().embeddings).encode(texts)
    slow = embedder.encode(texts)
    assert np.all((fast * slow).sum(axis=1) > 0.999)
