"""Reading and writing product files: every on-disk format becomes `Product` records.

Formats, chosen by suffix:

    .jsonl / .jsonl.gz / .json(.gz)   one JSON object a line, or (.json) one JSON list
    .csv / .csv.gz                    columns title, price (required), text, category, source
    .parquet                          the same columns, or the raw Amazon layout

Two row layouts are recognised, row by row:

    course format   title, text, price, category, source (the LLM Engineering course files)
    raw Amazon 2023 `meta_<Category>.jsonl`: title, description (list), features (list),
                    details (dict, or its JSON string), price (number, "$1,299.99", null,
                    "None"), main_category; the text is composed like the course's `Item`:
                    the title line, then description, features and details ("key: value").

Rows without a usable price (null, "None", a range like "$10 - $20", zero) or without a
title are skipped and counted, never fatal. A file that cannot be read, a line that is
not a JSON object, or a missing required column is a `DataError` naming file and line.
Files are streamed (raw Amazon files have millions of lines) with a byte-based progress
bar on interactive terminals.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from deals.framework.files import atomic_path
from deals.framework.errors import DataError
from deals.framework.models import Product

log = logging.getLogger(__name__)

# Keys that mark a raw Amazon Reviews 2023 metadata row (as opposed to the course format).
_RAW_KEYS = frozenset({"description", "features", "details", "main_category", "parent_asin"})
# `details` entries that carry no information about what the product is worth.
_NOISE_DETAILS = frozenset(
    {
        "asin",
        "best sellers rank",
        "customer reviews",
        "date first available",
        "discontinued by manufacturer",
        "is discontinued by manufacturer",
        "item model number",
        "manufacturer part number",
        "part number",
        "upc",
        "global trade identification number",
        "batteries included?",
        "batteries required?",
    }
)
_PRICE = re.compile(r"(?:US\s*)?\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_PROGRESS_EVERY = 2000  # lines between progress-bar updates


# --------------------------------------------------------------------------- row parsing


def parse_price(value: Any) -> float | None:
    """A positive finite USD price from a number or a string like "$1,299.99"; else None.

    None, "", "None", ranges ("$10.00 - $20.00"), booleans, zero and negatives give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        price = float(value)
    elif isinstance(value, str):
        match = _PRICE.fullmatch(value.strip())
        if match is None:
            return None
        price = float(match.group(1).replace(",", "") + (match.group(2) or ""))
    else:
        return None
    return price if math.isfinite(price) and price > 0 else None


def _strings(value: Any) -> list[str]:
    """A list/str/None field as a list of non-empty stripped strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}".strip() for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_flat(v) for v in value)
    return "" if value is None else str(value).strip()


def details_text(details: Any) -> str:
    """`details` (dict, or the JSON string the HF dataset stores) as "key: value; ..."."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except json.JSONDecodeError:
            return details.strip()
    if not isinstance(details, dict):
        return _flat(details)
    pairs = []
    for key, value in details.items():
        name = str(key).strip().strip(":").strip()
        if name.lower().lstrip("\u200e\u200f ") in _NOISE_DETAILS:
            continue
        flat = _flat(value)
        if name and flat:
            pairs.append(f"{name}: {flat}")
    return "; ".join(pairs)


def _join_items(items: list[str]) -> str:
    """Bullet points as one line: "; " between items that do not end in punctuation."""
    return "".join(item + ("" if i == len(items) - 1 else " " if item[-1] in ".!?;:," else "; ") for i, item in enumerate(items))


def compose_raw_text(row: dict[str, Any]) -> str:
    """The course's composition of a raw row: title line, then description, features, details."""
    lines = [str(row.get("title") or "").strip()]
    lines.append(" ".join(_strings(row.get("description"))))
    lines.append(_join_items(_strings(row.get("features"))))
    lines.append(details_text(row.get("details")))
    return "\n".join(line for line in lines if line)


def _category_from_stem(stem: str) -> str | None:
    match = re.fullmatch(r"meta_(\w+?)(?:[-_.]sample)?", stem)
    return match.group(1).replace("_", " ") if match else None


def product_from_row(
    row: Any,
    *,
    source: str,
    where: str,
    skipped: Counter[str] | None = None,
    default_category: str | None = None,
) -> Product | None:
    """One row of either layout as a `Product`; None (counted in `skipped`) when unusable.

    `default_category` is the category of raw rows without `main_category` or `categories`
    (e.g. "Electronics" for `meta_Electronics.jsonl`).
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "title" not in row:
        raise DataError(f"{where}: missing required field 'title' (fields: {', '.join(sorted(map(str, row))) or 'none'})")
    skipped = skipped if skipped is not None else Counter()
    title = str(row.get("title") or "").strip()
    price = parse_price(row.get("price"))
    if not title:
        skipped["no_title"] += 1
        return None
    if price is None:
        skipped["no_price"] += 1
        return None
    if "text" not in row and _RAW_KEYS & row.keys():
        text = compose_raw_text(row)
        category = row.get("main_category") or (_strings(row.get("categories")) or [None])[0]
        category = category or default_category
        own_source = row.get("source")
    else:
        text = str(row.get("text") or "").strip() or title
        category = row.get("category")
        own_source = row.get("source")
    category = str(category).strip() if category not in (None, "") else None
    return Product(title=title, text=text, price=price, category=category or None, source=str(own_source or source))


# --------------------------------------------------------------------------- reading


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".parquet"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for kind in ("jsonl", "json", "csv", "parquet"):
        if name.endswith("." + kind):
            return kind
    raise DataError(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .json, .csv or .parquet)")


class _Progress:
    """A byte-based tqdm bar over the raw (possibly compressed) file."""

    def __init__(self, raw: IO[bytes], path: Path, enabled: bool | None) -> None:
        self._raw = raw
        self._done = 0
        total = path.stat().st_size
        disable = None if enabled is None else not enabled
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=disable, leave=False)

    def tick(self) -> None:
        try:
            position = self._raw.tell()
        except (OSError, ValueError):
            return
        self.bar.update(position - self._done)
        self._done = position

    def close(self) -> None:
        self.tick()
        self.bar.close()


def _open_binary(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(the file on disk, its decompressed byte stream)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    if path.name.lower().endswith(".gz"):
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


def _lines(path: Path, progress: bool | None) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, gzip or not, streamed and decoded line by line."""
    raw, binary = _open_binary(path)
    bar = _Progress(raw, path, progress)
    lineno = 0
    try:
        while True:
            try:
                data = binary.readline()
                if not data:
                    break
                line = data.decode("utf-8-sig" if lineno == 0 else "utf-8")
            except (OSError, EOFError, UnicodeDecodeError) as exc:
                raise DataError(f"{path}:{lineno + 1}: cannot read ({exc})") from exc
            lineno += 1
            if lineno % _PROGRESS_EVERY == 0:
                bar.tick()
            yield lineno, line
    finally:
        bar.close()
        binary.close()
        raw.close()


def _json_rows(path: Path, progress: bool | None) -> Iterator[tuple[str, Any]]:
    lines = _lines(path, progress)
    try:
        first = next(((n, line) for n, line in lines if line.strip()), None)
        if first is None:
            return
        if first[1].lstrip().startswith("["):  # a JSON list: small files only, read whole
            body = first[1] + "".join(line for _, line in lines)
            try:
                data = json.loads(body)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{first[0] + exc.lineno - 1}: not valid JSON ({exc.msg})") from exc
            if not isinstance(data, list):
                raise DataError(f"{path}:{first[0]}: expected a JSON list of objects")
            for index, row in enumerate(data, 1):
                yield f"{path}: item {index}", row
            return
        for lineno, line in itertools.chain([first], lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            yield f"{path}:{lineno}", row
    finally:
        lines.close()


def _csv_rows(path: Path, progress: bool | None) -> Iterator[tuple[str, Any]]:
    lines = _lines(path, progress)
    reader = csv.DictReader(line for _, line in lines)
    try:
        try:
            columns = reader.fieldnames or []
        except csv.Error as exc:
            raise DataError(f"{path}:1: cannot read the CSV header ({exc})") from exc
        missing = {"title", "price"} - set(columns)
        if missing:
            raise DataError(f"{path}:1: missing required column(s) {', '.join(sorted(missing))} (columns: {', '.join(columns) or 'none'})")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(f"{path}:{reader.line_num}: cannot read ({exc})") from exc
            if None in row:  # more cells than columns
                raise DataError(f"{path}:{reader.line_num}: more cells than the header's {len(columns)} columns")
            yield f"{path}:{reader.line_num}", {k: (v if v != "" else None) for k, v in row.items()}
    finally:
        lines.close()


def _parquet_rows(path: Path, progress: bool | None) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from exc
    columns = set(parquet.schema_arrow.names)
    if "title" not in columns:
        raise DataError(f"{path}: missing required column 'title' (columns: {', '.join(sorted(columns))})")
    if "price" not in columns:
        raise DataError(f"{path}: missing required column 'price' (columns: {', '.join(sorted(columns))})")
    disable = None if progress is None else not progress
    bar = tqdm(total=parquet.metadata.num_rows, unit=" rows", desc=path.name, disable=disable, leave=False)
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                index += 1
                yield f"{path}: row {index}", row
            bar.update(batch.num_rows)
    except pa.ArrowException as exc:
        raise DataError(f"{path}: row {index + 1}: cannot read ({exc})") from exc
    finally:
        bar.close()


def iter_products(
    path: str | os.PathLike[str],
    *,
    source: str | None = None,
    skipped: Counter[str] | None = None,
    progress: bool | None = None,
) -> Iterator[Product]:
    """Stream the products of one file; unusable rows are counted in `skipped` by reason.

    `source` is the source of rows that do not name their own (default: the file stem).
    `progress`: True/False forces the bar on/off; None shows it on interactive terminals.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    category = _category_from_stem(_stem(path))
    source = source or _stem(path)
    rows = {"jsonl": _json_rows, "json": _json_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind](path, progress)
    skipped = skipped if skipped is not None else Counter()
    before = sum(skipped.values())
    count = 0
    for where, row in rows:
        product = product_from_row(row, source=source, where=where, skipped=skipped, default_category=category)
        if product is not None:
            count += 1
            yield product
    dropped = sum(skipped.values()) - before
    log.info("read %d products from %s (%d rows skipped)", count, path, dropped)


def load_products(
    path: str | os.PathLike[str], *, source: str | None = None, skipped: Counter[str] | None = None
) -> list[Product]:
    """All products of one file (see the module docstring for formats and layouts).

    Rows skipped as unusable are counted in `skipped` (by reason) and logged; a file with
    no usable product at all (empty, or only bad rows) is a `DataError` saying so.
    """
    skipped = skipped if skipped is not None else Counter()
    before = Counter(skipped)
    products = list(iter_products(path, source=source, skipped=skipped))
    these = skipped - before
    if these:
        log.warning("%s: %d rows skipped (%s)", path, sum(these.values()), _reasons(these))
    if not products:
        detail = f" ({sum(these.values())} rows skipped: {_reasons(these)})" if these else " (the file holds no rows)"
        raise DataError(f"{path}: no usable products{detail}")
    return products


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}={count}" for reason, count in sorted(counts.items()))


def load_many(paths: Iterable[str | os.PathLike[str]], *, skipped: Counter[str] | None = None) -> list[Product]:
    """The products of several files, in order; each file's stem is its default source (each must hold some)."""
    return [product for path in paths for product in load_products(path, skipped=skipped)]


def load_reference_prices(path: str | os.PathLike[str]) -> list[float]:
    """The `price` of every row of a JSONL file (e.g. real deal prices); rows without one are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    prices: list[float] = []
    for where, row in _json_rows(path, False):
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        price = parse_price(row.get("price"))
        if price is not None:
            prices.append(price)
    if not prices:
        raise DataError(f"{path}: no usable 'price' values")
    return prices


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary handle on a temp file next to `path` that replaces `path` only on success."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def save_products(products: Iterable[Product], path: str | os.PathLike[str]) -> int:
    """Write products as JSON lines (.jsonl, or gzip for .jsonl.gz) atomically; returns the count."""
    path = Path(path)
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        raise DataError(f"{path}: products are written as .jsonl or .jsonl.gz")
    count = 0
    with atomic_writer(path) as handle:
        sink: IO[bytes] = handle
        if path.name.endswith(".gz"):
            sink = gzip.GzipFile(fileobj=handle, mode="wb", mtime=0, filename="")
        for product in products:
            sink.write((json.dumps(product.model_dump(mode="json"), ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
        if sink is not handle:
            sink.close()  # writes the gzip trailer; leaves `handle` open
    return count


__all__ = [
    "atomic_writer",
    "compose_raw_text",
    "details_text",
    "iter_products",
    "load_many",
    "load_products",
    "load_reference_prices",
    "parse_price",
    "product_from_row",
    "save_products",
]
