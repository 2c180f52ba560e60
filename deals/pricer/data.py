"""Product data for the pricers: the one import for loading, curating, splitting, summarising.

Reading and writing live in `deals.pricer.loaders`, cleaning and curation rules in
`deals.pricer.curation`; this module re-exports them and owns the pipeline that the
CLI's data command runs:

    curate_files(paths, out_dir, settings)   load -> curate -> split -> write
        out_dir/train.jsonl, validation.jsonl, test.jsonl
        out_dir/deal_like.jsonl   (validation + test resampled to real deal prices,
                                   when reference prices are given)
        out_dir/summary.json      (the returned summary)

and the price summaries it reports (`price_summary` as a rich table, `summary_dict`
for JSON).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from deals.framework.files import atomic_write_text
from deals.framework.models import Product
from deals.framework.settings import DataSettings
from deals.pricer.curation import (
    DROP_REASONS,
    Curated,
    Splits,
    clean_text,
    clean_title,
    curate,
    deal_like_sample,
    default_tokenizer,
    is_part_number,
    split,
    title_key,
    truncate_texts,
)
from deals.pricer.loaders import (
    iter_products,
    load_many,
    load_products,
    load_reference_prices,
    parse_price,
    save_products,
)

_QUANTILES = {"min": 0, "p10": 10, "p25": 25, "median": 50, "p75": 75, "p90": 90, "max": 100}
STAT_COLUMNS = ("count", *_QUANTILES, "mean")


def price_stats(products: Sequence[Product]) -> dict[str, float | int | None]:
    """Count, price quantiles and mean of some products (None for an empty list)."""
    if not products:
        return {name: (0 if name == "count" else None) for name in STAT_COLUMNS}
    prices = np.array([p.price for p in products], dtype=float)
    stats: dict[str, float | int | None] = {"count": len(products)}
    for name, q in _QUANTILES.items():
        stats[name] = round(float(np.percentile(prices, q)), 2)
    stats["mean"] = round(float(prices.mean()), 2)
    return stats


def summary_dict(splits: Mapping[str, Sequence[Product]] | Splits) -> dict[str, dict[str, float | int | None]]:
    """Per split: count and price quantiles (min, p10, p25, median, p75, p90, max, mean)."""
    named = splits.as_dict() if isinstance(splits, Splits) else splits
    return {name: price_stats(items) for name, items in named.items()}


def _table(stats: Mapping[str, Mapping[str, float | int | None]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("split")
    for name in STAT_COLUMNS:
        table.add_column(name, justify="right")
    for name, row in stats.items():
        cells = [f"{row['count']:,}"]
        cells += ["-" if row.get(c) is None else f"${row[c]:,.2f}" for c in STAT_COLUMNS[1:]]
        table.add_row(name, *cells)
    return table


def price_summary(splits: Mapping[str, Sequence[Product]] | Splits, *, title: str = "Prices by split") -> Table:
    """The numbers of `summary_dict` as a rich table."""
    return _table(summary_dict(splits), title)


def price_summary_from_dict(summary: Mapping[str, Any], *, title: str = "Prices by split") -> Table:
    """The table of a `curate_files` summary (or of a `summary_dict`), with kept/dropped counts as caption."""
    stats = summary.get("splits", summary)
    table = _table(stats, title)
    if "kept" in summary:
        dropped = ", ".join(f"{k}={v:,}" for k, v in sorted(summary.get("dropped", {}).items()) if v)
        table.caption = f"kept {summary['kept']:,} of {summary.get('rows_read', 0):,} rows" + (f"; dropped: {dropped}" if dropped else "")
    return table


def _write_json(data: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def curate_files(
    paths: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: DataSettings,
    *,
    reference_prices: list[float] | None = None,
    tokenizer: Any = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Load, curate, split and write product files; returns (and writes) the summary.

    Files are streamed one after another; only curated products are held in memory.
    """
    paths = [Path(p) for p in paths]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped: Counter[str] = Counter()
    stream = (product for path in paths for product in iter_products(path, skipped=skipped, progress=progress))
    curated = curate(stream, settings, tokenizer=tokenizer)
    splits = split(curated.products, settings).as_dict()
    outputs = {}
    for name, items in splits.items():
        outputs[name] = str(out / f"{name}.jsonl")
        save_products(items, outputs[name])
    if reference_prices:
        deal_like = deal_like_sample(splits["validation"] + splits["test"], reference_prices, seed=settings.seed)
        outputs["deal_like"] = str(out / "deal_like.jsonl")
        save_products(deal_like, outputs["deal_like"])
        splits = {**splits, "deal_like": deal_like}
    dropped: Counter[str] = Counter({"no_price": 0, **curated.dropped})
    dropped.update(skipped)  # adds the loaders' skips (no_price, no_title)
    summary: dict[str, Any] = {
        "files": [str(p) for p in paths],
        "rows_read": curated.read + sum(skipped.values()),
        "kept": len(curated.products),
        "truncated": curated.truncated,
        "dropped": dict(dropped),
        "splits": summary_dict(splits),
        "outputs": outputs,
        "settings": settings.model_dump(mode="json"),
    }
    _write_json(summary, out / "summary.json")
    return summary


__all__ = [
    "DROP_REASONS",
    "STAT_COLUMNS",
    "Curated",
    "Splits",
    "clean_text",
    "clean_title",
    "curate",
    "curate_files",
    "deal_like_sample",
    "default_tokenizer",
    "is_part_number",
    "iter_products",
    "load_many",
    "load_products",
    "load_reference_prices",
    "parse_price",
    "price_stats",
    "price_summary",
    "price_summary_from_dict",
    "save_products",
    "split",
    "summary_dict",
    "title_key",
    "truncate_texts",
]
