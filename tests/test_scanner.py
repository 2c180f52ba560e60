"""The scanner: rule-based extraction on the real feeds, and LLM batches through the real SDKs on a fake server."""

from __future__ import annotations


import html
import logging
import re
from pathlib import Path

import feedparser
import pytest

from deals.agents import deal_rules
from deals.agents.scanner import SYSTEM_PROMPT, ScanResult, Scanner
from deals.framework.llm import LLMClient
from deals.framework.models import FeedEntry
from deals.framework.settings import LLMSettings, PlannerSettings, ScannerSettings, Settings
from tests.fakes.llm_server import FakeLLMServer, Recorded, answer, garbage, hang, http_error, refusal, reject_json_schema

FEEDS = Path(__file__).parent / "fixtures" / "feeds"
OPENAI_KEY = "sk-test-SCANNER-abcdef0123456789"
DEAL_TERMS = re.compile(r"\$|shipping|Buy Now|coupon|promo code|COUNTDOWN20|% off", re.I)


# --------------------------------------------------------------------------- FeedEntry records from the real feeds

_ITEM = re.compile(r"<item\b.*?</item>", re.S)
_GUID = re.compile(r"<guid[^>]*>(.*?)</guid>", re.S)
_DN_PRICE = re.compile(r"<dealnews:price[^>]*>\s*([\d.,]+)\s*</dealnews:price>")
_SUMMARY = re.compile(r'<div class="snippet summary"[^>]*>(.*?)</div>', re.S)
_FEATURES = re.compile(r'<div class="snippet features"[^>]*>(.*)', re.S)
_LI = re.compile(r"<li[^>]*>(.*?)</li>", re.S)
_TAG = re.compile(r"<[^>]+>")
_FEED_URLS = {
    "dealnews": "https://www.dealnews.com/?rss=1",
    "techbargains": "https://www.techbargains.com/rss.xml",
    "ozbargain": "https://www.ozbargain.com.au/deals/feed",
}


def _text(markup: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", markup)).split())


def load_entries(name: str) -> list[FeedEntry]:
    """Entries of a fixture feed, parsed with feedparser (the RSS reader is not used here).

    Like the reader: DealNews summary/features snippets become summary/details (one feature
    a line), other descriptions their plain text; `dealnews:price`, whose text feedparser
    drops, is read from the raw item.
    """
    raw = (FEEDS / name).read_text(encoding="utf-8")
    prices = {}
    for item in _ITEM.findall(raw):
        guid, price = _GUID.search(item), _DN_PRICE.search(item)
        if guid and price:
            prices[guid.group(1).strip()] = float(price.group(1).replace(",", ""))
    entries = []
    for e in feedparser.parse(raw).entries:
        description = e.get("summary", "")
        snippet = _SUMMARY.search(description)
        if snippet:
            features = _FEATURES.search(description)
            summary = _text(snippet.group(1))
            details = "\n".join(_text(li) for li in _LI.findall(features.group(1))) if features else ""
        else:
            summary, details = _text(description), ""
        key = e.get("id") or e.get("link")
        entries.append(
            FeedEntry(
                key=key,
                feed_url=_FEED_URLS[name.split("-")[0]],
                title=html.unescape(e.get("title", "")),
                url=e.get("link", ""),
                summary=summary,
                details=details,
                price=prices.get(key),
                retailer=e.get("dealnews_retailer") or e.get("vendorname"),
                category=e.get("dealnews_category"),
            )
        )
    return entries


def test_fixture_helper_reads_the_feeds():
    recent = load_entries("dealnews-recent-2026-10.xml")
    assert [e.price for e in recent] == [7.46, 29.0, 26.0]
    assert recent[0].details.splitlines()[0] == "Point collar" and recent[0].summary.startswith("This Alfani shirt")
    assert len(load_entries("dealnews-roundups-2026-10.xml")) == 12
    assert len(load_entries("ozbargain-2023-01.xml")) == 30


def rules_scan(name: str, **scanner: float) -> ScanResult:
    return Scanner(Settings(scanner=ScannerSettings(**scanner))).scan(load_entries(name))


# --------------------------------------------------------------------------- rule-based extraction on real feeds


def test_rules_dealnews_recent_keeps_all_three_with_the_feed_prices():
    entries = load_entries("dealnews-recent-2026-10.xml")
    result = rules_scan("dealnews-recent-2026-10.xml")
    assert result.rejected == 0 and result.rule_based == 3 and result.llm_calls == 0 and result.errors == []
    assert [(d.price, d.url, d.entry_key) for d in result.deals] == [(e.price, e.url, e.key) for e in entries]
    shirt, samoa, run70 = result.deals
    assert shirt.product_description.startswith("Alfani Men's Short-Sleeve Solid Textured Shirt.")
    assert "100% cotton" in shirt.product_description and "Point collar" in shirt.product_description
    assert samoa.product_description.startswith("adidas Men's Samoa Shoes.")
    assert "Islands Collection" in samoa.product_description  # a product sentence of the summary is kept
    assert run70.product_description.startswith("adidas Men's Run 70s 2.0 Shoes.") and "Textile upper" in run70.product_description
    for deal in result.deals:
        assert not DEAL_TERMS.search(deal.product_description.replace("100% cotton", "")), deal.product_description


def test_rules_dealnews_roundups_reject_the_store_wide_sales():
    result = rules_scan("dealnews-roundups-2026-10.xml")
    assert [(d.price, d.product_description.split(".")[0]) for d in result.deals] == [
        (7.46, "Alfani Men's Short-Sleeve Solid Textured Shirt"),
        (19.0, "Alfani Men's Welded Alfatech Contrast-Trim Full-Zip Vest"),
    ]
    assert result.rejected == 10 and len(result.rejections) == 10
    assert all("up to" in reason for reason in result.rejections.values())
    titles = {e.key: e.title for e in load_entries("dealnews-roundups-2026-10.xml")}
    assert {titles[k].split(":")[0] for k in result.rejections} >= {"Staples Easy Deal Days Sale", "Belk Flash Sale Deals"}


def test_rules_techbargains_prices_from_titles():
    result = rules_scan("techbargains-2026-10.xml")
    assert [(d.price, d.product_description) for d in result.deals] == [
        (1.99, "Amazon Grocery 1lb 80/20 Fat Ground Beef."),
        (69.99, "Cayama 540-Emitter Red Light Therapy Hair Growth Cap."),
        (8.49, 'Printspree 36" x 36" Larger Mesh Air Conditioner Covers.'),
        (39.99, "Talix 20000mAh 190W 3-Port Laptop Power Bank with Retractable USB-C Cable."),
    ]
    assert sorted(result.rejections.values()) == ["a membership or subscription, not a product", "a store-wide or category sale"]


def test_rules_ozbargain_is_all_australian_dollars():
    result = rules_scan("ozbargain-2023-01.xml")
    assert result.deals == [] and result.rejected == 30
    assert set(result.rejections.values()) == {"prices in AUD, not USD"}


def test_rules_price_range_comes_from_settings():
    result = rules_scan("techbargains-2026-10.xml", min_price=5.0, max_price=50.0)
    assert [d.price for d in result.deals] == [8.49, 39.99]
    assert sorted(r for r in result.rejections.values() if "outside" in r) == ["price $1.99 outside $5-$50", "price $69.99 outside $5-$50"]


@pytest.mark.parametrize(
    ("title", "price", "reason"),
    [  # real OzBargain titles: the title parser on its own, currency aside
        ("Kmart Air Fryer, Oven and Grill $129 (Was $179) Delivered @Kmart", 129.0, None),
        ("[PS4, PS5, XSX, Switch] Sonic Frontiers $48 + Delivery ($0 C&C/ in-Store) @ Harvey Norman / Delivered @ Amazon AU", 48.0, None),
        ("Razer BlackWidow V3 Mechanical RGB Gaming Keyboard - HALO Infinite Edition $159.20 ($124.18 eBay Plus) Delivered @ Razer eBay", 159.2, None),
        ("Bundesliga Brillant APS 2021/22 Soccer Ball $125 + $20 Delivery @Onsidesports", 125.0, None),
        ("Delsey Clavel 55cm Small Hand Carry Luggage $134.50 (RRP $269) Delivered @ David Jones", 134.5, None),
        ("Redeem Shure SM7B With Purchase of  2 x KRK V6 $1650 or V8 $1980 (or Shure MV7 + 2 x KRK V4) + Delivery @ VideoPro", None, "several different prices: $1650, $1980"),
        ("US$2 off US$20, US$5 off US$50, US$10 off US$100 on Love Delivers Event Products @ AliExpress", None, "no price in the title"),
        # DealNews-style titles
        ("Alfani Men's Short-Sleeve Solid Textured Shirt for $7 + free shipping w/ $39", 7.0, None),
        ("Samsung 65\" 4K TV for $1,299.99 + $10 shipping", 1299.99, None),
        # a price cut: the price it ends at ("from $10 to $40" is a range: two prices)
        ("Apple iPad Air drops from $999 to $499", 499.0, None),
        ("Samsung TV drops to $499, down from $999", 499.0, None),
        ("Kindle Paperwhite $149.99 -> $99.99", 99.99, None),
        ("Anker chargers from $10 to $40", None, "several different prices: $10, $40"),
        ("Echo Dot $49.99 → $22.99, Echo Pop $39.99 → $22.99", None, "several different prices: $22.99, $39.99, $49.99"),
        ("Shipping drops from $10 to $5 shipping", None, "several different prices: $5, $10"),
        # "list" in a name is not a former price
        ("Schindler's List $9.99 4K Blu-ray", 9.99, None),
        ("Sony TV $499 (list $999)", 499.0, None),
        ("Sony TV $499, list price $999", 499.0, None),
        ("Free Kindle eBook", None, "free, not a price"),
        ("Staples Easy Deal Days Sale: Up to 60% off + free shipping w/ $35", None, "a percentage discount, no price"),
    ],
)  # fmt: skip
def test_title_prices(title, price, reason):
    found, why = deal_rules.title_price(title)
    assert found == price
    if reason:
        assert why == reason


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Apple iPad Air dropped from $999 to $499", "Apple iPad Air"),
        ("Samsung TV drops to $499, down from $999", "Samsung TV drops"),
        ("Visine eye drops from $8 to $5", "Visine eye drops"),
        ("The Bucket List $25", "The Bucket List"),
        ("Dell XPS 13: was $999, now $499", "Dell XPS 13"),
        ("Kindle Paperwhite $149.99 -> $99.99", "Kindle Paperwhite"),
        ("Alfani Men's Short-Sleeve Solid Textured Shirt for $7 + free shipping w/ $39", "Alfani Men's Short-Sleeve Solid Textured Shirt"),
    ],
)
def test_the_product_name_leaves_the_price_cut_out(title, name):
    assert deal_rules.product_name(title) == name


@pytest.mark.parametrize(
    ("title", "problem"),
    [
        ("SINGAPORE AIRLINES: Delhi Return from $732, Mumbai Return $746 @IWTF", "a 'from' price, not one price"),
        ("Spotify Premium for $5.99/mo", "a subscription or rental price"),
        ("Anker chargers $10 - $40 at Amazon", "a price range"),
        ("Coca-Cola 12-packs 3 for $12", "a multi-buy price"),
        ("Woot Prime Exclusive Deals: Up to 73% off", "a sale with 'up to' discounts, not one product at one price"),
        ("Apple Prime Day Sale: Latest Discounts on AirPods, iPads, AirTags, More", "a store-wide or category sale"),
        ("Sony WH-1000XM5 Headphones for $248 + free shipping", None),
        # prices that are not what one product costs
        ("Peloton Bike for $44 monthly", "a subscription or rental price"),
        ("Samsung TV From: $399", "a 'from' price, not one price"),
        ("Dell laptops $699 - 1,199", "a price range"),
        ("Laptops under $500", "a price cap ('under $X'), not one price"),
        ("two for $50 Snickers", "a multi-buy price"),
        ("Buy 2 Hanes tees for $30", "a multi-buy price"),
        ("Levi's 501 jeans 2 for $60", "a multi-buy price"),
        ("Duracell AA 10-pack $3 each", "a per-item price, not the offer's"),
        ("Apple iPhone 15 $299 w/ trade-in", "a price after a trade-in"),
        # one product at one price, whatever the numbers around it
        ("Google Pixel 8 for $499", None),
        ("Nintendo Switch 2 for $449", None),
        ("AirPods 4 for $99", None),
        ("Dell Alienware Aurora Ultra 7 RTX 5070 for $1,550 + free shipping", None),
        ("Samsung 990 Pro SSD with up to 1,050MB/s reads for $79.99", None),
        ("Sony 65\" Bravia TV $499 (down from $999)", None),
        ("Bose QC45 $199 - 40% off", None),
        # one price cut (a cut verb or an arrow, going down) is one price; without them a pair is a range
        ("Apple iPad Air drops from $999 to $499", None),
        ("Samsung 65\" TV drops to $499 from $999", None),
        ("AirPods Pro 2 drops to $189 (from $249)", None),
        ("Bose QC45 $329 → $229 at Amazon", None),
        ("Anker chargers from $10 to $40", "a 'from' price, not one price"),
        ("LG OLED TVs $999 to $1,499", "a price range"),
        ("Samsung TVs from $2,999 to $499 at Best Buy", "a 'from' price, not one price"),
        ("Dyson V8, V10, V11 $399 to $199", "a price range"),
        ("Nintendo Switch $10 to $5 shipping", "a price range"),
        ("Echo Dot drops to $22.99 from $49.99, Echo Pop drops to $22.99 from $39.99", "a 'from' price, not one price"),
    ],
)
def test_offer_problems(title, problem):
    assert deal_rules.offer_problem(title) == problem


def test_rules_non_usd_signs_and_free_feed_prices():
    base = {"feed_url": "https://www.dealnews.com/?rss=1", "url": "https://www.dealnews.com/x.html", "summary": ""}
    pound = FeedEntry(key="a", title="Kettle for £20", **base)
    free = FeedEntry(key="b", title="Game for free", price=0.0, **base)
    scan = Scanner(Settings()).scan([pound, free, pound])
    assert scan.deals == [] and scan.rejected == 3
    assert scan.rejections == {"a": "prices in GBP, not USD", "b": "free, not a price"}
    for title, code in [("Xbox Series X HK$1,999", "HKD"), ("PS5 S$599", "SGD"), ("Switch $348 CDN", "CAD"), ("Xbox R$2.999", "BRL")]:
        assert deal_rules.foreign_currency(FeedEntry(key="c", title=title, **base)) == code, title
    mexico = FeedEntry(key="d", title="Xbox Series X 1TB $9,999", feed_url=base["feed_url"], url="https://www.amazon.com.mx/dp/B08H75RTZ8")
    assert deal_rules.foreign_currency(mexico) == "MXN"


# --------------------------------------------------------------------------- LLM batches through the real SDKs

BLOCK = re.compile(r"### Entry id (\d+)\n(.*?)(?=\n\n### Entry id |\Z)", re.S)


def blocks(req: Recorded) -> dict[int, str]:
    return {int(i): body for i, body in BLOCK.findall(req.user)}


def title_of(block: str) -> str:
    return re.search(r"^Title: (.*)$", block, re.M).group(1)


def verdict(i: int, price: float | None, *, deal: bool = True, currency: str = "USD", description: str | None = None, **extra):
    return {
        "id": i,
        "reason": "one product, one price" if deal else "not one product",
        "single_product_deal": deal,
        "currency": currency,
        "price": price,
        "product_description": description if description is not None else f"MODEL DESCRIPTION {i}: a well made product with good specifications.",
        **extra,
    }


def honest(i: int, block: str) -> dict:
    """What a good model would say: the feed's price, else the title's."""
    stated = re.search(r"Price stated by the feed: \$([\d.]+)", block)
    price = float(stated.group(1)) if stated else deal_rules.title_price(title_of(block))[0]
    return verdict(i, price, deal=price is not None)


def model(decide=honest, **usage):
    return answer(lambda req: {"entries": [decide(i, b) for i, b in blocks(req).items()]}, **usage)


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        yield fake


def make_scanner(
    server: FakeLLMServer, provider: str = "openai", *, batch_size: int = 10, concurrency: int = 1, **llm
) -> Scanner:
    """A scanner on the fake; one batch at a time by default, so that `server.queue` scripts batch 1, 2, ..."""
    base = {"openai": f"{server.url}/v1", "anthropic": server.url, "openai-compatible": f"{server.url}/v1"}[provider]
    values = {"provider": provider, "base_url": base, "timeout_s": 5.0, "max_retries": 0, **llm}
    if provider == "anthropic":
        values.setdefault("model", "claude-haiku-4-5")
    settings = Settings(
        llm=LLMSettings(**values), scanner=ScannerSettings(batch_size=batch_size), planner=PlannerSettings(concurrency=concurrency)
    )
    environ = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": OPENAI_KEY}
    return Scanner(settings, llm=LLMClient(settings.llm, environ=environ))


def mixed_entries() -> list[FeedEntry]:
    return load_entries("dealnews-recent-2026-10.xml") + load_entries("techbargains-2026-10.xml")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_llm_scan_requests_and_deals(server, provider):
    server.respond(model(tokens_in=1000, tokens_out=200))
    entries = mixed_entries()
    result = make_scanner(server, provider, batch_size=4).scan(entries)

    # the two techbargains non-products are screened out before any call; 7 candidates -> batches of 4 + 3
    assert result.llm_calls == 2 and len(server.requests) == 2 and result.errors == []
    assert sorted(len(blocks(r)) for r in server.requests) == [3, 4]
    first = server.requests[0]
    assert first.system == SYSTEM_PROMPT
    assert "Title: Alfani Men's Short-Sleeve Solid Textured Shirt for $7 + free shipping w/ $39" in first.user
    assert "Price stated by the feed: $7.46" in first.user and "Retailer: Macy's" in first.user
    assert "Details: Point collar; Button-front closure" in first.user
    assert not any(e.url in r.user for e in entries for r in server.requests)  # URLs are never shown to the model
    assert first.response_format == "json_schema"
    item = first.schema["properties"]["entries"]
    item = first.schema["$defs"][item["items"]["$ref"].split("/")[-1]] if "$ref" in item.get("items", {}) else item["items"]
    assert set(item["properties"]) == {"id", "reason", "single_product_deal", "currency", "price", "product_description"}

    by_key = {e.key: e for e in entries}
    assert [d.price for d in result.deals] == [7.46, 29.0, 26.0, 1.99, 69.99, 8.49, 39.99]
    for deal in result.deals:
        assert deal.url == by_key[deal.entry_key].url and deal.product_description.startswith("MODEL DESCRIPTION")
    assert result.rejected == 2 and result.rule_based == 0
    per_call = (1000 * 0.15 + 200 * 0.60) / 1e6 if provider == "openai" else (1000 * 1.0 + 200 * 5.0) / 1e6
    assert (result.tokens_in, result.tokens_out) == (2000, 400)
    assert result.cost_usd == pytest.approx(2 * per_call)


def test_invented_urls_and_unknown_ids_are_ignored(server):
    def decide(i, block):
        return verdict(i, 20.0, url=f"https://evil.example/{i}", entry_key="https://evil.example/key")

    def content(req):
        return {"entries": [decide(i, b) for i, b in blocks(req).items()] + [verdict(99, 15.0)]}

    server.respond(answer(content))
    entries = load_entries("techbargains-2026-10.xml")[:3]
    result = make_scanner(server).scan(entries)
    assert [(d.entry_key, d.url, d.price) for d in result.deals] == [(e.key, e.url, 20.0) for e in entries]
    assert len(result.deals) == 3 and result.rejected == 0


def test_prices_are_checked_against_the_range_and_the_feed(server, caplog):
    caplog.set_level(logging.INFO, logger="deals.agents")
    wild = {1: 70.0, 2: 50_000.0, 3: 0.5, 4: None}  # 1 has a feed price of $7.46

    server.respond(model(lambda i, block: verdict(i, wild[i])))
    entries = [load_entries("dealnews-recent-2026-10.xml")[0]] + load_entries("techbargains-2026-10.xml")[:3]
    result = make_scanner(server).scan(entries)
    assert [(d.entry_key, d.price) for d in result.deals] == [(entries[0].key, 7.46)]  # the feed's price wins
    assert "the model said 70.0, the feed says $7.46" in caplog.text
    assert result.rejections == {
        entries[1].key: "price $50000 outside $1-$10000",
        entries[2].key: "price $0.5 outside $1-$10000",
        entries[3].key: "no price",
    }


def test_model_rejections_and_currencies(server):
    answers = {
        1: verdict(1, None, deal=False, description=""),
        2: verdict(2, 29.0, currency="AUD"),
        3: verdict(3, 26.0, description="short"),  # too short: described from the entry instead
    }
    server.respond(model(lambda i, block: answers[i]))
    entries = load_entries("dealnews-recent-2026-10.xml") + load_entries("ozbargain-2023-01.xml")
    result = make_scanner(server).scan(entries)
    assert len(server.requests) == 1 and len(blocks(server.requests[0])) == 3  # the 30 AUD entries cost no tokens
    assert [(d.price, d.product_description) for d in result.deals] == [
        (26.0, "adidas Men's Run 70s 2.0 Shoes. Lace-up closure; Textile upper construction; Made in Vietnam; New with original box and tags.")
    ]
    assert result.rejections[entries[0].key] == "not a single-product deal: not one product"
    assert result.rejections[entries[1].key] == "price in AUD, not USD"
    assert result.rejected == 32


def test_entries_the_model_skipped_go_to_the_rules(server):
    server.respond(model(lambda i, block: verdict(i, 29.0) if i == 2 else {"id": 1000 + i}))
    entries = load_entries("dealnews-recent-2026-10.xml")
    # ids 1 and 3 come back malformed: the whole reply fails validation -> the batch goes to the rules
    result = make_scanner(server).scan(entries)
    assert len(result.errors) == 1 and result.rule_based == 3 and [d.price for d in result.deals] == [7.46, 29.0, 26.0]

    server.respond(model(lambda i, block: verdict(i, 29.0) if i == 2 else verdict(i + 100, 1.0)))
    result = make_scanner(server).scan(entries)
    assert result.errors == [] and result.rule_based == 2
    assert [d.product_description.startswith("MODEL") for d in result.deals] == [False, True, False]
    assert [d.price for d in result.deals] == [7.46, 29.0, 26.0]


@pytest.mark.parametrize(
    ("failure", "expect"),
    [
        (garbage(), "no JSON object"),
        (refusal(), "refused"),
        (hang(10), "timed out"),
        (http_error(500), "HTTP 500"),
    ],
    ids=["garbage", "refusal", "timeout", "500"],
)
def test_a_failed_batch_falls_back_to_the_rules(server, failure, expect):
    entries = load_entries("dealnews-roundups-2026-10.xml") + load_entries("techbargains-2026-10.xml")
    expected = Scanner(Settings()).scan(entries)  # the rules alone
    server.respond(model())
    server.queue(failure)  # only the first batch fails
    result = make_scanner(server, batch_size=3, timeout_s=0.3).scan(entries)

    assert result.llm_calls == 2 and len(result.errors) == 1
    assert result.errors[0].startswith("batch 1 (3 entries): ") and expect in result.errors[0]
    assert result.rule_based == 3
    assert [d.price for d in result.deals] == [d.price for d in expected.deals]  # nothing lost
    assert [d.product_description.startswith("MODEL") for d in result.deals] == [False, False, False, True, True, True]
    assert result.rejected == expected.rejected == 12


def test_batches_run_concurrently_under_the_bound_and_merge_in_order(server):
    """A slow LLM: 4 batches, 2 at a time, take two rounds, not four; the deals come out in feed order."""
    entries = mixed_entries()  # 7 candidates: batches of 2, 2, 2, 1
    server.respond(hang(0.3, then=model()))
    result = make_scanner(server, batch_size=2, concurrency=2, timeout_s=5.0).scan(entries)
    assert result.llm_calls == 4 and result.errors == [] and server.max_in_flight == 2  # two at a time, never more
    sequential = make_scanner(server, batch_size=2, concurrency=1, timeout_s=5.0).scan(entries)
    assert [d.entry_key for d in result.deals] == [d.entry_key for d in sequential.deals]
    assert result.model_dump() == sequential.model_dump()  # the same result, whatever the timing


def test_retries_on_429_then_ok_are_seen_by_the_scanner(server):
    server.respond(model())
    server.queue(http_error(429))
    result = make_scanner(server, max_retries=2).scan(load_entries("dealnews-recent-2026-10.xml"))
    assert len(server.requests) == 2 and result.llm_calls == 1 and result.errors == []
    assert all(d.product_description.startswith("MODEL") for d in result.deals)


def test_openai_compatible_server_without_json_schema(server):
    server.respond(reject_json_schema(model()))
    scanner = make_scanner(server, "openai-compatible", model="llama3.2", batch_size=2)
    result = scanner.scan(load_entries("dealnews-recent-2026-10.xml"))
    assert [r.response_format for r in server.requests] == ["json_schema", "json_object", "json_object"]
    assert [d.price for d in result.deals] == [7.46, 29.0, 26.0] and result.errors == []
    assert result.cost_usd == 0.0 and result.tokens_in > 0


def test_anthropic_garbage_batch_falls_back(server):
    server.respond(garbage())
    result = make_scanner(server, "anthropic").scan(load_entries("dealnews-recent-2026-10.xml"))
    assert len(result.errors) == 1 and "anthropic" in result.errors[0]
    assert [d.price for d in result.deals] == [7.46, 29.0, 26.0] and result.rule_based == 3


def test_the_key_never_appears_in_scanner_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.respond(http_error(401, f"Incorrect API key provided: {OPENAI_KEY}"))
    result = make_scanner(server).scan(load_entries("dealnews-recent-2026-10.xml"))
    assert len(result.errors) == 1 and "HTTP 401" in result.errors[0]
    assert OPENAI_KEY not in caplog.text and OPENAI_KEY not in " ".join(result.errors)
