"""What the calibrated price model sees of a product: its neighbours, the ridge guess, its text.

    neighbour_features(similarities, prices)   (n, k) arrays of the k nearest catalogue
                                               products -> (n, len(NEIGHBOUR_FEATURES))
    text_features(texts)                       quantities and cues read from the text
                                               -> (n, len(TEXT_FEATURES))
    FEATURE_NAMES                              the column order the model is fitted on:
                                               neighbours, then ridge, then text

Neighbour features are several kNN estimates of the log price made from the same k
nearest products (sharp and broad similarity weighting, a price-leaning one), the spread
of the neighbours' log prices, and how similar the nearest products are: the model
learns how far to trust each, and how wide the interval must be when nothing in the
catalogue is close. Text features are the numbers that carry price and that embeddings
blur (pack counts, storage, screen size, power, weight...) as log(1 + value), and a few
cues ("replacement", "compatible with", "refurbished", "kit"...).

Every function is pure and vectorised: training (`deals.pricer.local_fit`) and serving
(`deals.pricer.local`) compute the same columns the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

K_NEIGHBOURS = 80  # neighbours behind the neighbour features

NEIGHBOUR_FEATURES = (
    "knn_sharp",  # weights similarity^16 over all k
    "knn_sharp_dear",  # the same, weights x price^0.5 (leans towards dear neighbours)
    "knn_top10",  # softmax(similarity / 0.05) over the 10 nearest
    "knn_broad30",  # weights similarity^4 over the 30 nearest
    "log_price_spread",  # weighted standard deviation of the neighbours' log prices (sharp weights)
    "similarity_max",
    "similarity_mean",  # over all k
    "similarity_top5",
)
RIDGE_FEATURES = ("ridge",)

_NUM = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
_QUANTITIES: dict[str, tuple[str, ...]] = {
    "pack": (rf"\b(?:pack|set|box|case|bag|lot)\s+of\s+{_NUM}\b", rf"\b{_NUM}\s*-?\s*(?:pack|pk|count|ct|pcs|pieces|piece|pc|packs)\b"),
    "gb": (rf"\b{_NUM}\s*-?\s*gb\b",),
    "tb": (rf"\b{_NUM}\s*-?\s*tb\b",),
    "inch": (rf"\b{_NUM}\s*(?:-?\s*inch(?:es)?\b|\"|''|\u201d)", rf"\b{_NUM}\s*-?\s*in\.\s"),
    "watt": (rf"\b{_NUM}\s*-?\s*(?:w|watts?)\b",),
    "volt": (rf"\b{_NUM}\s*-?\s*(?:v|volts?)\b",),
    "mah": (rf"\b{_NUM}\s*-?\s*mah\b",),
    "btu": (rf"\b{_NUM}\s*-?\s*btu\b",),
    "hp": (rf"\b{_NUM}\s*-?\s*hp\b",),
    "lbs": (rf"\b{_NUM}\s*-?\s*(?:lbs?|pounds?)\b",),
    "oz": (rf"\b{_NUM}\s*-?\s*(?:oz|ounces?)\b",),
    "gal": (rf"\b{_NUM}\s*-?\s*(?:gal|gallons?)\b",),
    "ft": (rf"\b{_NUM}\s*-?\s*(?:ft|feet|foot)\b",),
    "mm": (rf"\b{_NUM}\s*-?\s*mm\b",),
    "cuft": (rf"\b{_NUM}\s*-?\s*cu\.?\s*ft\b",),
    "dollar": (rf"\${_NUM}",),
}
_QUANTITY_RES = {name: [re.compile(p, re.IGNORECASE) for p in patterns] for name, patterns in _QUANTITIES.items()}
_CUES = {
    "refurbished": r"\b(?:refurbished|renewed)\b",
    "replacement": r"\breplacement\b",
    "compatible": r"\bcompatible with\b|\bfits\b",
    "for_in_title": r"\bfor\b",  # "case for iPhone": an accessory of something else (title only)
    "kit": r"\bkit\b",
    "bundle": r"\bbundle\b",
    "pro": r"\bpro\b",
    "professional": r"\bprofessional\b",
    "commercial": r"\bcommercial\b|\bindustrial\b",
    "stainless": r"\bstainless\b",
    "laptop": r"\blaptop|notebook\b",
    "tv": r"\btv\b|\btelevision\b",
    "part": r"\bpart\b|\bparts\b",
    "cable": r"\bcable|cord|adapter\b",
    "case": r"\bcase|cover|sleeve|skin\b",
    "sticker": r"\bsticker|decal\b",
    "filter": r"\bfilter\b",
    "gift": r"\bgift\b",
    "smart": r"\bsmart\b",
    "wireless": r"\bwireless\b",
}
_CUE_RES = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in _CUES.items()}
TEXT_FEATURES = (
    *(f"{name}_{kind}" for name in _QUANTITIES for kind in ("log", "present")),
    *_CUES,
    "log_length",
    "log_title_length",
    "digit_share",
    "summary_format",  # the course's "Title: ... Category: ... Brand: ..." summaries
)
FEATURE_NAMES = (*NEIGHBOUR_FEATURES, *RIDGE_FEATURES, *TEXT_FEATURES)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _text_row(text: str) -> list[float]:
    title = text[: text.find("\n")] if "\n" in text else text
    row: list[float] = []
    for patterns in _QUANTITY_RES.values():
        values = [_number(m.group(1)) for p in patterns for m in p.finditer(text)]
        values = [v for v in values if v > 0 and math.isfinite(v)]
        row += [math.log1p(max(values)) if values else 0.0, 1.0 if values else 0.0]
    for name, pattern in _CUE_RES.items():
        row.append(1.0 if pattern.search(title[:80] if name == "for_in_title" else text) else 0.0)
    row += [
        math.log1p(len(text)),
        math.log1p(len(title)),
        sum(c.isdigit() for c in text) / max(len(text), 1),
        1.0 if text.lstrip().lower().startswith("title:") else 0.0,
    ]
    return row


def text_features(texts: Sequence[str]) -> np.ndarray:
    """`TEXT_FEATURES` for each text."""
    return np.array([_text_row(t) for t in texts], dtype=np.float64).reshape(len(texts), len(TEXT_FEATURES))


def _weighted_log_mean(logs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (weights * logs).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-300)


def neighbour_features(similarities: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """`NEIGHBOUR_FEATURES` from each item's neighbours, nearest first ((n, k) arrays, k >= 10).

    Items with fewer neighbours than others are padded with NaN similarities/prices,
    which the weights ignore.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    logs = np.log(np.asarray(prices, dtype=np.float64))
    if sims.ndim != 2 or sims.shape != logs.shape or sims.shape[1] < 1:
        raise ValueError(f"similarities and prices must be equal (n, k) arrays, got {sims.shape} and {logs.shape}")
    valid = np.isfinite(sims) & np.isfinite(logs)
    sims = np.where(valid, sims, -1.0)
    logs = np.where(valid, logs, 0.0)
    positive = np.where(valid, np.maximum(sims, 1e-6), 0.0)
    sharp = positive**16
    sharp_dear = sharp * np.exp(0.5 * logs)
    top10 = np.where(valid[:, :10], np.exp((sims[:, :10] - sims[:, :1]) / 0.05), 0.0)
    broad30 = positive[:, :30] ** 4
    mean_sharp = _weighted_log_mean(logs, sharp)
    spread = np.sqrt(_weighted_log_mean((logs - mean_sharp[:, None]) ** 2, sharp))
    count = np.maximum(valid.sum(axis=1), 1)
    return np.column_stack(
        [
            mean_sharp,
            _weighted_log_mean(logs, sharp_dear),
            _weighted_log_mean(logs[:, :10], top10),
            _weighted_log_mean(logs[:, :30], broad30),
            spread,
            np.where(valid, sims, -np.inf).max(axis=1),
            np.where(valid, sims, 0.0).sum(axis=1) / count,
            np.where(valid[:, :5], sims[:, :5], 0.0).sum(axis=1) / np.maximum(valid[:, :5].sum(axis=1), 1),
        ]
    )


__all__ = ["FEATURE_NAMES", "K_NEIGHBOURS", "NEIGHBOUR_FEATURES", "RIDGE_FEATURES", "TEXT_FEATURES", "neighbour_features", "text_features"]
