"""Decoding model output into prices: greedy parsing, the expected-value search, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deals.framework.errors import PricingError
from deals.pricer.decoding import (
    NumericVocab,
    check_price,
    expected_from_top_logprobs,
    expected_prices,
    is_digits,
    parse_price,
    search_numbers,
)

LOW, HIGH = 0.5, 10_000.0

# --------------------------------------------------------------------------- greedy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("149", 149.0),
        ("149<|im_end|>", 149.0),
        ("1,299", 1299.0),
        ("$45.50 or so", 45.5),
        ("  7\n", 7.0),
        ("about 30 dollars, maybe 40", 30.0),
    ],
)
def test_parse_price_reads_the_first_number(text, expected):
    assert parse_price(text, LOW, HIGH) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no number"),
        ("I cannot tell", "no number"),
        ("Price unknown.", "no number"),
        ("1111111", "outside"),
        ("0", "outside"),
        ("-5", "outside"),
        ("0.25", "outside"),
    ],
)
def test_parse_price_refuses_nonsense(text, reason):
    with pytest.raises(PricingError, match=reason):
        parse_price(text, LOW, HIGH)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_check_price_refuses_non_finite(value):
    with pytest.raises(PricingError, match="not finite"):
        check_price(value, LOW, HIGH)


def test_is_digits_means_ascii_digits_only():
    assert is_digits("0") and is_digits("149")
    for token in ("", " 1", "1 ", "²", "١٢", "1.5", "12a", "Ġ1"):
        assert not is_digits(token), token


# --------------------------------------------------------------------------- expected: crafted distributions

END = "<end>"


class TreeStepper:
    """A `Stepper` over crafted next-token distributions: {prefix string: {token: probability}}.

    The probability left over at each prefix goes to the END token, so a prefix absent
    from the tree finishes with certainty.
    """

    def __init__(self, vocab: list[str], trees: list[dict[str, dict[str, float]]]) -> None:
        self.vocab = vocab
        self.trees = trees
        self.rows: list[tuple[int, str]] = []
        self.calls: list[int] = []

    def _logprobs(self) -> np.ndarray:
        out = np.full((len(self.rows), len(self.vocab)), -np.inf)
        for r, (item, prefix) in enumerate(self.rows):
            dist = dict(self.trees[item].get(prefix, {}))
            dist[END] = dist.get(END, 0.0) + max(0.0, 1.0 - sum(dist.values()))
            for token, p in dist.items():
                out[r, self.vocab.index(token)] = math.log(p) if p > 0 else -np.inf
        return out

    def start(self) -> np.ndarray:
        self.rows = [(i, "") for i in range(len(self.trees))]
        self.calls.append(len(self.rows))
        return self._logprobs()

    def extend(self, parents, tokens) -> np.ndarray:
        self.rows = [(self.rows[p][0], self.rows[p][1] + self.vocab[t]) for p, t in zip(parents, tokens, strict=True)]
        self.calls.append(len(self.rows))
        return self._logprobs()


def _search(vocab, trees, **kw):
    stepper = TreeStepper(vocab, trees)
    results = search_numbers(stepper, NumericVocab.from_tokens(vocab), len(trees), low=kw.pop("low", LOW), high=kw.pop("high", 999.0), **kw)
    return results, stepper


def test_numeric_vocab_keeps_number_tokens_only():
    vocab = NumericVocab.from_tokens([END, "a", "1", " 2", "²", "12", "007", "x9"])
    assert vocab.texts == ["1", "12", "007"]
    assert vocab.ids.tolist() == [2, 5, 6]
    assert vocab.max_digits == 3


def test_expected_over_whole_number_tokens_llama_style():
    vocab = [END, "Price", "149", "99", "1", "4", "9"]
    # the first answer token is a whole price: 149 (0.5), 99 (0.3); 0.2 goes to a word
    trees = [{"": {"149": 0.5, "99": 0.3, "Price": 0.2}}]
    (result,), _ = _search(vocab, trees)
    assert result.mass == pytest.approx(0.8)
    assert result.expected() == pytest.approx((149 * 0.5 + 99 * 0.3) / 0.8)
    assert expected_prices([result]) == [pytest.approx(130.25)]


def test_expected_walks_single_digits_qwen_style():
    vocab = [END, "0", "1", "2", "4", "9"]
    trees = [
        {
            "": {"1": 0.6, "2": 0.4},
            "1": {"4": 0.9},  # "1" then end: 0.1
            "14": {"9": 1.0},
            "2": {"0": 0.5, "9": 0.5},
            "20": {"0": 0.2},
        }
    ]
    (result,), stepper = _search(vocab, trees)
    values = {v: p for v, p in result.candidates}
    assert values == pytest.approx({1.0: 0.06, 149.0: 0.54, 20.0: 0.16, 200.0: 0.04, 29.0: 0.2})
    assert result.mass == pytest.approx(1.0)
    assert result.expected() == pytest.approx(0.06 * 1 + 0.54 * 149 + 0.16 * 20 + 0.04 * 200 + 0.2 * 29)
    # "1" is not read as $1: most of its mass continues to 149
    assert result.best() == 149.0
    assert stepper.calls[0] == 1  # one row per item at the start


def test_search_batches_items_independently():
    vocab = [END, "1", "2", "5"]
    trees = [{"": {"5": 1.0}}, {"": {"1": 1.0}, "1": {"2": 1.0}}]
    results, stepper = _search(vocab, trees)
    assert [r.expected() for r in results] == [pytest.approx(5.0), pytest.approx(12.0)]
    assert stepper.calls[0] == 2


def test_search_drops_out_of_range_and_leading_zero_candidates():
    vocab = [END, "0", "5", "9"]
    trees = [{"": {"0": 0.3, "9": 0.7}, "9": {"9": 1.0}, "99": {"9": 1.0}, "999": {"9": 1.0}}]
    (result,), _ = _search(vocab, trees, high=999.0)
    # "0..." is never a price; 9999 exceeds the range and the digits budget
    assert result.candidates == []
    assert expected_prices([result]) == [None]


def test_low_numeric_mass_falls_back():
    vocab = [END, "word", "5"]
    trees = [{"": {"5": 0.3, "word": 0.7}}]
    (result,), _ = _search(vocab, trees)
    assert result.mass == pytest.approx(0.3) and result.numeric_mass == pytest.approx(0.3)
    assert expected_prices([result], min_mass=0.5) == [None]
    assert expected_prices([result], min_mass=0.2) == [pytest.approx(5.0)]


def test_a_spread_out_answer_is_averaged_over_the_beam_renormalised():
    digits = [str(d) for d in range(1, 10)]
    vocab = [END, *digits]
    probs = {d: p for d, p in zip(digits, [0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.02], strict=True)}
    (result,), _ = _search(vocab, [{"": probs}], beam=3)
    assert result.numeric_mass == pytest.approx(1.0)
    assert sorted(v for v, _ in result.candidates) == [1.0, 2.0, 3.0]  # the beam keeps the likeliest three
    assert result.mass == pytest.approx(0.65)
    assert expected_prices([result]) == [pytest.approx((1 * 0.3 + 2 * 0.2 + 3 * 0.15) / 0.65)]


def test_no_number_tokens_means_no_search():
    stepper = TreeStepper([END, "a"], [{}])
    results = search_numbers(stepper, NumericVocab.from_tokens([END, "a"]), 1, low=LOW, high=HIGH)
    assert results[0].candidates == [] and stepper.calls == []


# --------------------------------------------------------------------------- expected: remote top_logprobs


def test_expected_from_top_logprobs_with_number_tokens():
    top = [("149", math.log(0.5)), ("99", math.log(0.3)), ("Price", math.log(0.1)), ("0", math.log(0.05))]
    assert expected_from_top_logprobs(top, low=LOW, high=HIGH) == pytest.approx((149 * 0.5 + 99 * 0.3) / 0.8)


def test_expected_from_top_logprobs_refuses_single_digit_tokenizers_and_low_mass():
    single = [("1", math.log(0.6)), ("2", math.log(0.3))]
    assert expected_from_top_logprobs(single, low=LOW, high=HIGH) is None  # "1" may be the start of 149
    weak = [("149", math.log(0.2)), ("words", math.log(0.7))]
    assert expected_from_top_logprobs(weak, low=LOW, high=HIGH) is None


# --------------------------------------------------------------------------- on a real (tiny) model


def test_cached_stepper_matches_full_forward_passes():
    """The KV-cached search steps give the log-probs of recomputing each prefix from scratch."""
    import torch
    from transformers import AutoModelForCausalLM

    from deals.pricer.modeling import load_tokenizer
    from deals.pricer.predict import PricePredictor, _CachedStepper
    from tests.fakes.tiny_specialist import tiny_base

    base = tiny_base("qwen2")
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tokenizer = load_tokenizer(base)
    predictor = PricePredictor(model, tokenizer, max_length=160)
    texts = ["Title: USB-C cable, 2 m, braided", "Title: Cordless drill 18V with two batteries and a case"]
    ids, mask = predictor._batch(texts)
    assert mask[0, 0] == 0 and mask[:, -1].all()  # left padding: rows end together

    stepper = _CachedStepper(model, ids, mask)
    first = stepper.start()
    digits = predictor.vocab.ids[:3].tolist()
    parents, tokens = [0, 0, 1], digits
    second = stepper.extend(parents, tokens)
    third = stepper.extend([0, 2], [digits[1], digits[2]])

    def reference(row: int, extra: list[int]) -> np.ndarray:
        real = ids[row][mask[row].bool()].tolist() + extra
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([real])).logits[0, -1]
        return torch.log_softmax(logits.float(), -1).numpy()

    np.testing.assert_allclose(first[1], reference(1, []), atol=2e-4)
    for j, (p, t) in enumerate(zip(parents, tokens, strict=True)):
        np.testing.assert_allclose(second[j], reference(p, [t]), atol=2e-4)
    np.testing.assert_allclose(third[0], reference(0, [digits[0], digits[1]]), atol=2e-4)
    np.testing.assert_allclose(third[1], reference(1, [digits[2], digits[2]]), atol=2e-4)


def test_predictor_expected_mode_gives_finite_prices_or_clear_errors():
    from transformers import AutoModelForCausalLM

    from deals.pricer.modeling import load_tokenizer
    from deals.pricer.predict import PricePredictor
    from tests.fakes.tiny_specialist import tiny_base

    base = tiny_base("llama")  # Llama 3 style: multi-digit number tokens
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    predictor = PricePredictor(model, load_tokenizer(base), max_length=160, decoding="expected", min_mass=0.0)
    assert predictor.vocab.max_digits > 1
    results = predictor.predict(["Title: Desk lamp", "Title: Garden hose 50 ft"])
    assert len(results) == 2
    for r in results:
        assert isinstance(r, PricingError) or (math.isfinite(r) and LOW <= r <= HIGH)
