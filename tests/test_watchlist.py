"""Watchlists and recipients: matching, routing through a real cycle, per-recipient caps and quiet
hours, exactly-once delivery, the `deals watch` commands; price history and product keys."""

from __future__ import annotations

import ast
import inspect
import json
import re
import sqlite3
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from deals.agents import notifiers
from deals.agents.messenger import Messenger, alert_body
from deals.agents.planner import Planner
from deals.agents.rss_reader import RssReader
from deals.agents.scanner import Scanner
from deals.agents.watchlist import GENERAL, Watch, Watchlist, mask, parse_quiet
from deals.cli import app, run_cli
from deals.framework.errors import ConfigError
from deals.framework.models import Deal, Estimate, FeedEntry, Opportunity, Quantile
from deals.framework.product_key import list_price, model_numbers, normalised_title, product_key, retailer_id
from deals.framework.settings import Settings, WatchRule, load_settings
from deals.memory.dialect import PgConnection
from deals.memory.migrations import MIGRATIONS, apply_migrations
from deals.memory.store import Store
from deals.pricer.alerts import AlertRule
from deals.pricer.base import create_pricer
from deals.web.app import create_app
from tests.fakes.daemon import serve_feeds, write_config
from tests.fakes.feed_server import feed_server  # noqa: F401 - pytest fixture
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from tests.test_planner import TablePricer  # noqa: F401 - registers the "test-table" pricer

ALICE, BOB, CAROL = "+15551110001", "+15552220002", "+15553330003"
TWILIO_ENV = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": "+15550000000"}
RULE = AlertRule()


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    monkeypatch.setattr(notifiers, "_warned", set())


def deal(text: str, price: float, key: str = "k1", url: str = "https://shop.example/p") -> Deal:
    return Deal(entry_key=key, product_description=text, price=price, url=url)


def watch(**rule: object) -> Watch:
    return Watch(recipient=BOB, rule=WatchRule(**rule), source="store", id=1)


# --------------------------------------------------------------------------- matching


def test_keywords_must_all_appear_in_any_case_and_a_regex_must_be_found():
    w = watch(keywords=["Sony", "noise canceling"])
    assert w.matches_text("SONY WH-1000XM5 Noise Canceling Headphones")
    assert not w.matches_text("Sony WH-1000XM5 headphones")
    r = watch(regex=r"wh-?1000xm[45]")
    assert r.matches_text("Sony WH1000XM4") and not r.matches_text("Sony WH-1000XM3")


def test_a_target_price_watch_sends_whatever_the_estimate_says():
    w = watch(keywords=["vest"], target_price=25)
    unsure = Estimate(price=20.0, pricer="t")  # worth less than the price: never a general opportunity
    assert w.sends(deal("Alfani vest", 19.0), unsure, general=False, text="Alfani vest", feed_url=None, rule=RULE)
    assert not w.sends(deal("Alfani vest", 26.0), unsure, general=True, text="Alfani vest", feed_url=None, rule=RULE)


def test_max_price_feeds_and_own_saving_thresholds():
    est = Estimate(price=100.0, pricer="t")
    text = "Logitech mouse"
    assert not watch(keywords=["mouse"], max_price=50).sends(deal(text, 60), est, general=True, text=text, feed_url=None, rule=RULE)
    only = watch(keywords=["mouse"], feeds=["https://a.example/rss"])
    assert not only.sends(deal(text, 60), est, general=True, text=text, feed_url="https://b.example/rss", rule=RULE)
    assert only.sends(deal(text, 60), est, general=True, text=text, feed_url="https://a.example/rss", rule=RULE)
    # $85 saves $15 and 15%: no general opportunity, but this watch asks only for $10 and 10%
    own = watch(keywords=["mouse"], min_saving_abs=10, min_saving_rel=0.1)
    assert own.sends(deal(text, 85), est, general=False, text=text, feed_url=None, rule=RULE)
    assert not watch(keywords=["mouse"]).sends(deal(text, 85), est, general=False, text=text, feed_url=None, rule=RULE)


def test_recipients_without_watches_get_the_general_opportunities_and_the_others_only_their_matches():
    settings = Settings.model_validate(
        {"messenger": {"to": [ALICE], "recipients": [{"number": BOB, "watches": [{"keywords": ["vest"], "target_price": 25}]}]}}
    )
    watchlist = Watchlist.load(settings)
    shirt = deal("Alfani shirt", 7.46)
    vest = deal("Alfani vest", 19.0)
    est = Estimate(price=100.0, pricer="t")
    assert watchlist.route(shirt, est, general=True) == [(ALICE, GENERAL)]
    assert watchlist.route(vest, est, general=False) == [(BOB, "watch 'vest': at or below target $25.00")]
    assert [r for r, _ in watchlist.route(vest, est, general=True)] == [ALICE, BOB]


@pytest.mark.parametrize(
    ("recipient", "problem"),
    [
        ({"number": BOB, "watches": [{"max_price": 10}]}, "a watch needs keywords or a regex"),
        ({"number": BOB, "watches": [{"regex": "("}]}, "is not a regular expression"),
        ({"number": BOB, "quiet_start": "22:00"}, "quiet_start and quiet_end must be set together"),
        ({"number": "5551234"}, "E.164"),
        ({"number": BOB, "watches": [{"keywords": ["x"], "min_saving_rel": 1.5}]}, "min_saving_rel"),
    ],
)
def test_bad_recipient_rules_in_the_config_file_are_clear_errors(tmp_path, recipient, problem):
    path = write_config(tmp_path / "c.yaml", {"messenger": {"recipients": [recipient]}})
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert problem in str(caught.value) and "messenger.recipients.0" in str(caught.value) and str(path) in str(caught.value)


def test_quiet_hours_text_and_masks():
    assert parse_quiet("22:00-07:00") == ("22:00", "07:00")
    for bad in ("22-07", "25:00-07:00", "22:00"):
        with pytest.raises(ValueError):
            parse_quiet(bad)
    assert mask(ALICE) == "********0001" and mask("+1") == "**"


# --------------------------------------------------------------------------- a real cycle, routed


@pytest.fixture
def twilio():
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def store_url(store_target, deals_home, monkeypatch):
    """The store on each engine as `store.url` (and DEALS_STORE__URL, which the CLI reads): the
    SQLite file in DEALS_HOME, then a PostgreSQL schema."""
    url = str(store_target) if str(store_target).startswith("postgresql") else f"sqlite:///{deals_home / 'deals.db'}"
    monkeypatch.setenv("DEALS_STORE__URL", url)
    return url


def rig(store: Store, twilio: FakeTwilio, messenger: dict, **planner: object) -> Planner:
    settings = Settings.model_validate({"messenger": {"base_url": twilio.url, "retry_base_s": 0, **messenger}, "planner": planner})
    return Planner(
        settings, store, reader=RssReader(settings), scanner=Scanner(settings),
        pricer=create_pricer("test-table", settings, table={"Vest": 20.0}, default=100.0),
        messenger=Messenger(settings, store, environ=TWILIO_ENV),
    )  # fmt: skip


def test_a_cycle_sends_each_recipient_only_what_their_rules_match_exactly_once(store_url, feed_server, twilio):  # noqa: F811
    urls = serve_feeds(feed_server)
    with Store(store_url) as store:
        store.add_watch(BOB, WatchRule(name="vest", keywords=["vest"], target_price=25))
        # shoes saving at least $72: the Run 70s ($26, saves $74) but not the Samoa ($29, saves $71)
        store.add_watch(CAROL, WatchRule(keywords=["shoes"], min_saving_abs=72))
        planner = rig(store, twilio, {"to": [ALICE]})
        report = planner.run_cycle(urls)
        assert report.status == "ok", report.error_messages
        sent = sorted((m["to"], m["body"].split(".")[0][:40]) for m in twilio.created)
        to_alice = [body for to, body in sent if to == ALICE]
        assert [body for to, body in sent if to == BOB] == ["Alfani Men's Welded Alfatech Contrast-Tr"]
        assert [body for to, body in sent if to == CAROL] == ["adidas Men's Run 70s 2"]
        assert len(to_alice) == 7 and not any("Vest" in body for body in to_alice)  # the vest is worth $20: not general
        # a watch's reason is in its recipient's text, and only there
        assert [m["body"].count("; watch 'vest': at or below target $25.00") for m in twilio.created if m["to"] == BOB] == [1]
        assert not any("watch '" in m["body"] for m in twilio.created if m["to"] == ALICE)
        # the routes are stored with why, and a second cycle (and recovery) sends nothing again
        vest = store.db.execute("SELECT o.id FROM opportunities o JOIN deals d ON d.entry_key = o.deal_key WHERE d.price = 19").fetchone()[0]
        assert store.routes(vest) == [(BOB, "watch 'vest': at or below target $25.00")]
        count = len(twilio.created)
        assert planner.run_cycle(urls).alerts_sent == 0 and planner.messenger.deliver_pending().sent == 0
        assert len(twilio.created) == count == len(store.alerts())
        # what each entry was: the deals and the scanner's rejections, with decisions
        decisions = dict(store.db.execute("SELECT decision, COUNT(*) FROM entries GROUP BY decision").fetchall())
        assert decisions["not a single product"] == 42 and sum(v for k, v in decisions.items() if k != "not a single product") == 8
        planner.close()


def test_per_recipient_daily_cap_and_quiet_hours(store_url, twilio):
    clock = lambda: datetime(2025, 6, 10, 23, 30, tzinfo=timezone.utc)  # noqa: E731
    with Store(store_url, clock=clock) as store:
        settings = Settings.model_validate(
            {"messenger": {"to": [ALICE, BOB], "base_url": twilio.url, "retry_base_s": 0, "daily_cap": 5}, "store": {"url": store_url}}
        )
        store.set_recipient(ALICE, daily_cap=1)
        store.set_recipient(BOB, quiet_start="22:00", quiet_end="07:00")
        messenger = Messenger(settings, store, clock=clock, environ=TWILIO_ENV)
        opps = []
        for i in range(3):
            d = deal(f"Thing number {i} with a long name", 10.0, key=f"k{i}")
            opps.append((store.save_opportunity(Opportunity(deal=d, estimate=Estimate(price=100.0, pricer="t"), discount=90.0)), None))
        report = messenger.notify([(oid, store.get_opportunity(oid)) for oid, _ in opps])
        assert [m["to"] for m in twilio.created] == [ALICE]  # her cap is 1; BOB is in his quiet hours
        assert report.skipped == 2 and report.waiting == 3 and report.quiet
        assert {a.last_error for a in store.alerts(["skipped"])} == {"daily cap of 1 reached"}
        assert [a.last_error for a in store.alerts(["queued"])] == ["quiet hours until 07:00 UTC"] * 3  # why they wait
        messenger.close()
    outbox = TestClient(create_app(settings), base_url="http://127.0.0.1:8484").get("/alerts").text  # the dashboard says why
    assert outbox.count("quiet hours until 07:00 UTC") == 3 and outbox.count("daily cap of 1 reached") == 2 and BOB not in outbox


def test_an_opportunity_routed_to_nobody_stays_so_through_recovery(store_url, twilio):
    """Watches that match nothing route an opportunity to nobody: recorded, so neither the
    messenger's recovery nor a second look routes it again, and no alert is queued to ''."""
    with Store(store_url) as store:
        store.add_watch(ALICE, WatchRule(keywords=["kayak"]))
        settings = Settings.model_validate({"messenger": {"to": [ALICE], "base_url": twilio.url, "retry_base_s": 0}, "store": {"url": store_url}})
        d = deal("A vest nobody watches for, with a long name", 10.0)
        oid = store.save_opportunity(Opportunity(deal=d, estimate=Estimate(price=100.0, pricer="t"), discount=90.0))
        messenger = Messenger(settings, store, environ=TWILIO_ENV)
        report = messenger.notify([(oid, store.get_opportunity(oid))])
        assert store.is_routed(oid) and store.routes(oid) == [] and store.unalerted_routes() == []
        assert messenger.deliver_pending().sent == 0  # recovery runs here
        assert store.alerts() == [] and twilio.created == [] and report.skipped == 0
        messenger.close()


# --------------------------------------------------------------------------- deals watch


def test_watch_commands_add_list_and_remove(store_url):
    runner = CliRunner()
    added = runner.invoke(app, ["watch", "add", BOB, "-k", "oled", "-k", "tv", "--target-price", "800", "--name", "tv"])
    assert added.exit_code == 0, added.output
    assert "watch 1 added for ********0002" in added.output
    known = runner.invoke(app, ["watch", "recipient", BOB, "--daily-cap", "2", "--quiet", "22:00-07:00"])
    assert known.exit_code == 0 and "new recipient" not in known.output
    new = runner.invoke(app, ["watch", "recipient", CAROL, "--daily-cap", "1"], env={"COLUMNS": "250"})
    assert new.exit_code == 0 and "is a new recipient: they get every general opportunity" in new.output
    listed = runner.invoke(app, ["watch", "list", "--json"])
    data = json.loads(listed.stdout)
    assert data["watches"] == [{"id": 1, "source": "store", "recipient": "********0002", "name": "tv", "keywords": ["oled", "tv"], "target_price": 800.0}]
    bob = next(r for r in data["recipients"] if r["daily_cap"] == 2)
    assert bob["quiet_start"] == "22:00"
    assert BOB not in listed.stdout
    assert runner.invoke(app, ["watch", "remove", "1"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["watch", "list", "--json"]).stdout)["watches"] == []
    assert "watch 2 added" in runner.invoke(app, ["watch", "add", BOB, "-k", "tv"]).output  # a removed watch's id is not reused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch", "add", "555-1234", "-k", "tv"], "E.164"),
        (["watch", "add", BOB], "a watch needs keywords or a regex"),
        (["watch", "add", BOB, "-r", "(["], "is not a regular expression"),
        (["watch", "add", BOB, "-k", "tv", "--max-price", "-5"], "max_price"),
        (["watch", "remove", "99"], "no stored watch 99"),
        (["watch", "recipient", BOB, "--quiet", "late"], "quiet hours"),
    ],
)
def test_watch_commands_refuse_bad_input_with_exit_2(deals_home, capsys, args, message):
    assert run_cli(args) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    with Store(deals_home / "deals.db") as store:
        assert store.stored_watches() == []


# --------------------------------------------------------------------------- price history


def test_product_keys_from_retailer_links_model_numbers_and_titles():
    assert retailer_id("https://www.amazon.com/gp/product/B0HC3BC78M/ref=ox?psc=1") == "amazon:B0HC3BC78M"
    assert retailer_id("https://www.bestbuy.com/site/sony/6505727.p?skuId=6505727") == "bestbuy:6505727"
    assert retailer_id("https://www.walmart.com/ip/Some-Thing/123456789") == "walmart:123456789"
    assert retailer_id("https://www.dealnews.com/x/22246961.html") is None
    assert model_numbers("Sony WH-1000XM5 65W USB-C 256GB 4K 2-Pack") == ["WH1000XM5"]
    same = {product_key("Sony WH-1000XM5 Headphones for $248 + free shipping"), product_key("SONY WH1000XM5 headphones $229")}
    assert same == {"model:WH1000XM5"}
    assert product_key("adidas Men's Samoa Shoes for $29 + free shipping") == "title:adidas mens samoa shoes"
    assert normalised_title("adidas Men's Samoa Shoes - $29 at eBay") == "adidas mens samoa shoes"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("This Alfani shirt is priced at $7.46, down from $50, a savings of 85%.", 50.0),
        ("drops to $29, down from the $80 list price", 80.0),
        ("Was $1,179. Now $899", 1179.0),
        ("Reg. $139.90 each", 139.9),
        ("a $249 MSRP", 249.0),
        ("Free shipping over $39", None),
        ("Apple iPad Air drops from $999 to $499", 999.0),
        ("Samsung TV drops to $499 (from $999)", 999.0),
        ("Kindle $99.99 -> $79.99", 99.99),
        ("Anker chargers from $10 to $40", None),  # a range
        ("Samsung TVs $999 to $499", None),  # models, no cut
        ("Nintendo Switch for $299 + shipping drops from $10 to $5 shipping", None),  # not the product's price
        ("Samsung TV $999, get $100 to $50 back", None),
    ],
)
def test_the_feeds_own_was_price(text, expected):
    assert list_price(text) == expected


def test_a_cut_in_the_title_is_the_was_price_and_keeps_the_product_key(store_target):
    cut = _entry("cut", "Apple iPad Air dropped from $999 to $499", "https://dealnews.example/cut")
    plain = _entry("plain", "Apple iPad Air for $479", "https://dealnews.example/plain")
    assert product_key(cut.title) == product_key(plain.title) == "title:apple ipad air"
    with Store(store_target) as store:
        deals = [deal("Apple iPad Air", 499.0, key="cut", url=cut.url), deal("Apple iPad Air", 479.0, key="plain", url=plain.url)]
        for d in deals:
            store.save_deal(d)
        store.record_entries([cut, plain], deals)
        assert store.price_context("cut").list_price == 999.0
        assert store.price_context("plain").list_price is None


def test_the_summary_s_claim_comes_first_and_a_claim_must_be_this_offer_s():
    assert list_price("Was $329.", None, "Bose QC45 $199 + free $50 value gift card") == 329.0
    assert list_price(None, None, "Bose QC45 $199 + free $50 value gift card", price=199.0) is None
    assert list_price("", None, "Schindler's List $9.99 4K Blu-ray", price=9.99) is None
    assert list_price("", None, "Sony TV $499 (list $999)", price=499.0) == 999.0
    # a cut is this offer's only when it ends at its price
    summary = "The Echo Dot drops to $22.99. The Echo Pop also drops from $39.99 to $17.99."
    assert list_price(summary, price=22.99) is None and list_price(summary, price=17.99) == 39.99


def _entry(key: str, title: str, url: str, summary: str = "") -> FeedEntry:
    return FeedEntry(key=key, feed_url="https://feed.example/rss", title=title, url=url, summary=summary)


def test_lowest_seen_in_30_days_and_the_alert_text(store_target):
    now = [datetime(2026, 10, 1, tzinfo=timezone.utc)]
    with Store(store_target, clock=lambda: now[0]) as store:
        sightings = [(-40, 199.0), (-20, 249.0), (-10, 229.0), (0, 219.0)]
        for days, price in sightings:
            now[0] = datetime(2026, 10, 1, tzinfo=timezone.utc) + timedelta(days=days + 40)
            key = f"e{days}"
            e = _entry(key, f"Sony WH-1000XM5 Headphones for ${price:g}", f"https://dealnews.example/{key}", "down from $399")
            d = deal("Sony WH-1000XM5 wireless headphones", price, key=key, url=e.url)
            store.save_deal(d)
            store.record_entries([e], [d])
        context = store.price_context("e0")
        assert context.lowest == 229.0 and context.sightings == 2 and context.list_price == 399.0  # the $199 is 40 days old
        assert context.text() == "lowest seen in 30 days: $229"
        assert [s.price for s in store.price_history("model:WH1000XM5")] == [199.0, 249.0, 229.0, 219.0]
        q = [Quantile(level=0.1, price=250.0), Quantile(level=0.5, price=330.0), Quantile(level=0.9, price=420.0)]
        opp = Opportunity(deal=store.get_deal("e0"), estimate=Estimate(price=330.0, pricer="t", quantiles=q), discount=111.0)
        body = alert_body(store, opp)
        assert "feed says was $399" in body and "lowest seen in 30 days: $229" in body and len(body) <= 306


def test_migration_m010_copies_the_deals_stored_before_it(store_target):
    if str(store_target).startswith("postgresql"):
        db = PgConnection(str(store_target))
    else:
        db = sqlite3.connect(store_target, isolation_level=None)
    names = [m.__name__ for m in MIGRATIONS]
    apply_migrations(db, MIGRATIONS[: names.index("m010_entries")])
    db.execute("INSERT INTO deals (entry_key, description, price, url, created_at) VALUES ('old', 'An old deal', 12.5, 'https://x.example/', '2025-01-01T00:00:00.000000Z')")
    db.execute(
        "INSERT INTO deals (entry_key, description, price, url, created_at) VALUES "
        "('mx', 'Logitech MX Master 3S Mouse for $19 + free shipping', 19.0, 'https://www.amazon.com/dp/B09HM94VDS', '2025-01-02T00:00:00.000000Z')"
    )
    db.close()
    with Store(store_target) as store:
        row = store.db.execute("SELECT title, price, outcome, seen_at FROM entries WHERE key = 'old'").fetchone()
        assert tuple(row) == ("An old deal", 12.5, "deal", "2025-01-01T00:00:00.000000Z")
        # keyed as new sightings of the same products are, so their price history joins up
        keys = dict(store.db.execute("SELECT key, product_key FROM entries").fetchall())
        assert keys == {"old": product_key("An old deal", "https://x.example/"), "mx": "amazon:B09HM94VDS"}


# --------------------------------------------------------------------------- portable SQL

# What SQLite runs and PostgreSQL does not (or runs differently): the store's SQL keeps to the
# portable subset (deals.memory.dialect). The tests on PostgreSQL catch what they reach; this
# reads every statement of these modules, also those on paths the tests do not take.
NOT_PORTABLE = {
    r"\bINSERT\s+OR\s+(IGNORE|REPLACE)\b": "INSERT OR ...: use ON CONFLICT",
    r"\browid\b": "rowid: order by a column",
    r"\?\s+IS\s+(NOT\s+)?NULL\b": "? IS NULL: build the SQL with or without the condition",
    r"\b(group_concat|julianday|datetime|strftime|unixepoch|ifnull|iif|instr|printf|total)\s*\(": "a SQLite-only function",
    r"\b(GLOB|REGEXP|PRAGMA|sqlite_master)\b": "SQLite only",
    r"(?<!\))\s+LIKE\b": "LIKE on a bare column is case-sensitive on PostgreSQL: lower(column) LIKE lower(?)",
    r"\b(BLOB|BOOLEAN|VARCHAR|DATETIME|TIMESTAMP|NUMERIC|JSON)\b": "a type beyond TEXT, INTEGER and REAL",
}
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|WHERE|LIKE|ORDER BY)\b")


def _sql_strings(source: str) -> list[str]:
    """The SQL string literals of some Python source, docstrings left out (an f-string's fields read as `{}`)."""
    tree = ast.parse(textwrap.dedent(source))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))  # a docstring
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        else:
            continue
        if SQL_WORDS.search(text):
            found.append(text)
    return found


def _not_portable(sql: str) -> list[str]:
    return [why for pattern, why in NOT_PORTABLE.items() if re.search(pattern, sql, re.I)]


def test_the_check_for_portable_sql_finds_what_only_sqlite_runs():
    for bad in (
        "INSERT OR IGNORE INTO t (a) VALUES (?)", "SELECT * FROM t ORDER BY rowid", "SELECT 1 WHERE (? IS NULL OR a < ?)",
        "SELECT julianday('now')", "SELECT * FROM t WHERE title LIKE ?", "CREATE TABLE t (ok BOOLEAN)", "SELECT group_concat(a) FROM t",
    ):  # fmt: skip
        assert _not_portable(bad), bad
    assert _sql_strings('x = f"SELECT a FROM t {where} LIMIT ?"') == ["SELECT a FROM t {} LIMIT ?"]


def test_the_sql_of_entries_views_watches_and_their_migrations_is_portable():
    import deals.memory.history
    import deals.memory.views
    import deals.memory.watches

    names = [m.__name__ for m in MIGRATIONS]
    sources = {m.__name__: inspect.getsource(m) for m in MIGRATIONS[names.index("m010_entries") :]}
    sources.update({mod.__name__: inspect.getsource(mod) for mod in (deals.memory.history, deals.memory.views, deals.memory.watches)})
    assert len(sources) == len(MIGRATIONS) - names.index("m010_entries") + 3  # every migration from m010 on, and the three modules
    checked = 0
    for where, source in sources.items():
        uses = {n.attr for n in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(n, ast.Attribute)}
        assert "lastrowid" not in uses, f"{where}: a new id comes from INSERT ... RETURNING id"
        for sql in _sql_strings(source):
            checked += 1
            assert not _not_portable(sql), (where, _not_portable(sql), sql)
    assert checked >= 30


def test_keywords_match_whole_words_and_plurals():
    def watch(*keywords: str) -> Watch:
        return Watch(recipient=ALICE, rule=WatchRule(keywords=list(keywords)), source="config")

    assert not watch("vest").matches_text("Harvest Moon: One World (Nintendo Switch)")
    assert not watch("vest").matches_text("Investing QuickStart Guide")
    assert watch("vest").matches_text("Alfani Men's Full-Zip Vest") and watch("vest").matches_text("Two puffer vests")
    assert not watch("ram").matches_text("Digital Picture Frame") and watch("ram").matches_text("Corsair 32GB DDR5 RAM kit")
    assert watch("tv").matches_text("Samsung OLED TVs on sale") and watch("usb-c", "hub").matches_text("Anker USB-C Hub 7-in-1")
    assert watch("4k", "monitor").matches_text('LG 27" 4K UHD Monitor') and not watch("4k").matches_text("14K gold chain")


def test_without_sms_the_console_alert_still_says_which_watch_sent_it(store_target, capsys):
    with Store(store_target) as store:
        d = deal('LG 65" OLED evo C4 4K Smart TV', 699.0, key="tv")
        oid = store.save_opportunity(Opportunity(deal=d, estimate=Estimate(price=561.22, pricer="t"), discount=561.22 - 699.0))
        store.save_routes(oid, [(BOB, "watch 'tv': at or below target $800.00")])
        messenger = Messenger(Settings(), store, environ={})  # no Twilio: the console gets it
        assert messenger.notify([(oid, store.get_opportunity(oid))]).sent == 1
        [alert] = store.alerts()
        assert alert.recipient == "console" and "$699, est $561.22; watch 'tv': at or below target $800.00" in alert.body
        assert "save" not in alert.body and "watch 'tv'" in capsys.readouterr().out
        messenger.close()
