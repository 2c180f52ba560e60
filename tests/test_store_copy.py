"""`deals store migrate --to postgresql://...`: a SQLite store copied, verified, resumable."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deals.cli import run_cli
from deals.framework.models import Deal, Estimate, FeedEntry, FeedState, Neighbour, Opportunity, Quantile
from deals.framework.settings import WatchRule
from deals.memory.copy import CopyError, copy_order, copy_store, migrate_store
from deals.memory.lock import StoreLock
from deals.memory.views import DealFilter
from deals.memory.store import Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
BOB = "+15552220002"


def fill(store: Store, deals: int = 40) -> None:
    """Rows in every table, some with awkward values (quotes, accents, NULLs, big and small floats)."""
    store.save_feed_state(FeedState(url="http://feed/a", etag='W/"x"', next_attempt_at=T0, unhealthy=True, error_count=2))
    store.save_feed_state(FeedState(url="http://feed/b"))
    store.mark_seen([FeedEntry(key=f"https://shop.example/{n}", feed_url="http://feed/a", title="t", url="u") for n in range(deals * 2)])
    # the dashboard's and the watchlists' tables: watches (a removed one leaves a gap in the ids),
    # recipients, feed controls; entries and routes below
    for words in (["grinder"], ["kettle"], ["café", "pro"]):
        store.add_watch(BOB, WatchRule(keywords=words, target_price=25.5))
    store.remove_watch(2)
    store.set_recipient(BOB, daily_cap=3, quiet_start="22:00", quiet_end="07:00")
    store.add_feed("http://feed/added")
    store.set_feed_enabled("http://feed/b", False)
    store.record_entries(
        [FeedEntry(key="rejected", feed_url="http://feed/b", title="10% off everything <b>today</b>", url="https://shop.example/sale")],
        [], {"rejected": "a store-wide sale"},
    )  # fmt: skip
    for n in range(deals):
        deal = Deal(entry_key=f"k{n:03d}", product_description=f"Café 'grinder' №{n} \"pro\"", price=10.0 + n / 3, url=f"https://shop.example/{n}")
        store.save_deal(deal)
        entry = FeedEntry(key=deal.entry_key, feed_url="http://feed/a", title=deal.product_description, url=deal.url, summary="was $49.99")
        store.record_entries([entry], [deal])
        if n % 4 == 3:
            store.record_pricing_failure(deal.entry_key, "HTTP 500")
            store.set_decision(deal.entry_key, "pricing failed", "HTTP 500")
            continue
        estimate = Estimate(
            price=100.0 + n * 1.1, pricer="ensemble", parts={"local": 99.5, "frontier": 1e-9 + n},
            neighbours=[Neighbour(id="p", title="Grinder", price=95.0, similarity=0.91)], low=80.0, high=130.5,
            interval_level=0.8, quantiles=[Quantile(level=0.05, price=70.0), Quantile(level=0.95, price=140.0)],
        )  # fmt: skip
        store.save_estimate(deal.entry_key, estimate, alert_below=55.5, decision="deal" if n % 2 else "not cheap enough")
        store.set_decision(deal.entry_key, "deal" if n % 2 else "not cheap enough")
        if n % 2:
            opp = store.save_opportunity(Opportunity(deal=deal, estimate=estimate, discount=estimate.price - deal.price))
            store.save_routes(opp, [("+15551110001", "general opportunity"), ("+15552220002", "watch 'grinder'")])
            for to in ("+15551110001", "+15552220002"):
                alert = store.enqueue_alert(opp, to, f"deal {n}")
                send = store.begin_send(alert)
                store.end_send(send, "sent", provider_id=f"SM{n}{to[-1]}")
                store.mark_alert(alert, "sent", provider_id=f"SM{n}{to[-1]}")
    run = store.start_run()
    store.finish_run(run, "ok", {"deals": deals, "errors": ["x"]})
    store.record_llm_call(agent="scanner", provider="openai", model="m", tokens_in=10, tokens_out=3, cost_usd=0.000123)
    store.cache_estimate("c1", model="m", prompt_version="v5", price=12.34)


def test_a_sqlite_store_is_copied_into_postgresql_resumably_and_verified(tmp_path, pg_url):
    source = tmp_path / "deals.db"
    with Store(source) as src:
        fill(src)
        assert {"feeds", "deals", "alerts", "sends", "runs", "llm_calls"} <= set(copy_order(src))
        assert {"entries", "watches", "recipients", "routes", "feed_controls"} <= set(copy_order(src))
        assert copy_order(src).index("opportunities") < copy_order(src).index("alerts") < copy_order(src).index("sends")
        assert copy_order(src).index("opportunities") < copy_order(src).index("routes")

    chunks = []

    def interrupt(table: str, copied: int, total: int) -> None:
        chunks.append((table, copied))
        if len(chunks) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy

    with Store(source) as src, Store(pg_url) as dst:
        with pytest.raises(KeyboardInterrupt):
            copy_store(src, dst, chunk_rows=7, progress=interrupt)
    interrupted_at = chunks[-1]
    with Store(pg_url) as dst:
        partial = {row["name"]: row["copied"] for row in dst._all("SELECT name, copied FROM store_copy")}
        assert partial[interrupted_at[0]] == interrupted_at[1]  # the last chunk is committed with its progress

    resumed: list[tuple[str, int]] = []
    report = migrate_store(pg_url, source=str(source), chunk_rows=7, progress=lambda t, c, n: resumed.append((t, c)))
    assert report.resumed and report.verified
    assert resumed[0][0] == interrupted_at[0] and resumed[0][1] == interrupted_at[1] + 7  # went on where it stopped
    by_name = {t.name: t for t in report.tables}
    assert by_name["deals"].rows == 40 and by_name["alerts"].rows == 20 and by_name["sends"].rows == 20
    assert by_name["seen_entries"].rows == 80
    assert by_name["entries"].rows == 41 and by_name["routes"].rows == 20 and by_name["watches"].rows == 2
    assert by_name["recipients"].rows == 1 and by_name["feed_controls"].rows == 2

    with Store(source) as src, Store(pg_url) as dst:
        for table in copy_order(src):
            assert src._one(f"SELECT COUNT(*) FROM {table}")[0] == dst._one(f"SELECT COUNT(*) FROM {table}")[0], table
        assert dst.history(100) == src.history(100)
        assert dst.get_estimate("k001") == src.get_estimate("k001")
        assert dst.feed_states() == src.feed_states()
        assert dst.llm_usage() == src.llm_usage()
        assert dst.cached_estimate("c1") == 12.34
        # what the dashboard and the watchlists read
        assert dst.stored_watches() == src.stored_watches() and [w.id for w in dst.stored_watches()] == [1, 3]
        assert dst.stored_recipients() == src.stored_recipients() and dst.feed_controls() == src.feed_controls()
        assert dst.deal_rows(DealFilter(), limit=100) == src.deal_rows(DealFilter(), limit=100)
        assert dst.opportunity_rows(limit=100) == src.opportunity_rows(limit=100)
        assert dst.alert_rows(limit=100) == src.alert_rows(limit=100)
        [opp] = [row.id for row in src.opportunity_rows(limit=1)]
        assert dst.routes(opp) == src.routes(opp) and len(dst.routes(opp)) == 2
        key = src.entry_facts(["k001"])["k001"].product_key
        assert dst.price_history(key) == src.price_history(key) and dst.price_context("k001") == src.price_context("k001")

    again = migrate_store(pg_url, source=str(source))  # a finished copy is checked again, nothing copied twice
    assert again.verified and sum(t.copied_now for t in again.tables) == 0

    with Store(source) as src, Store(pg_url) as dst:
        # new rows on the target get new ids after the copied ones
        top = dst._one("SELECT MAX(id) FROM alerts")[0]
        deal = Deal(entry_key="new", product_description="New thing", price=5.0, url="https://n")
        opp = dst.save_opportunity(Opportunity(deal=deal, estimate=Estimate(price=50.0, pricer="x"), discount=45.0))
        assert dst.enqueue_alert(opp, "+15551110001", "new") > top
        assert dst.start_run() > src.recent_runs(1)[0].id
        assert dst.add_watch(BOB, WatchRule(keywords=["new"])) == 4  # after the copied ids, the removed one not reused
    with pytest.raises(CopyError, match="verification failed for table deals"):  # the target was written meanwhile
        migrate_store(pg_url, source=str(source))



def test_migrate_refuses_what_it_must_not_touch(tmp_path, pg_url, deals_home):
    with Store(pg_url) as busy:
        busy.save_deal(Deal(entry_key="theirs", product_description="Someone's deal", price=5.0, url="https://x"))
    with Store(deals_home / "deals.db") as src:
        fill(src, deals=4)
    with pytest.raises(CopyError, match="not empty"):
        migrate_store(pg_url)
    with pytest.raises(CopyError, match="no store to copy"):
        migrate_store(pg_url, source=str(tmp_path / "missing.db"))
    with Store(deals_home / "deals.db") as src:
        with pytest.raises(CopyError, match="the same store"):
            copy_store(src, src)


def test_store_migrate_cli_copies_the_home_store_and_refuses_while_a_daemon_runs(deals_home, pg_url, capsys):
    with Store(deals_home / "deals.db") as src:
        fill(src, deals=8)
    with StoreLock(deals_home / "deals.db", command="deals run"):
        assert run_cli(["store", "migrate", "--to", pg_url]) == 2
        assert "another deals daemon" in capsys.readouterr().err
    assert run_cli(["store", "migrate", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "alerts" in out


def test_a_password_in_the_url_is_never_shown(deals_home, capsys, monkeypatch):
    with Store(deals_home / "deals.db") as src:
        fill(src, deals=2)
    url = "postgresql://deals:s3cr3t-pw@127.0.0.1:1/deals"  # nothing listens on port 1
    assert run_cli(["store", "migrate", "--to", url]) == 1
    err = capsys.readouterr().err
    assert "s3cr3t-pw" not in err and "deals:***@127.0.0.1:1/deals" in err and "cannot reach PostgreSQL" in err
    monkeypatch.setenv("DEALS_STORE__URL", url)
    assert run_cli(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-pw" not in out and "deals:***@127.0.0.1:1/deals" in out
    assert run_cli(["history"]) == 1
    assert "s3cr3t-pw" not in capsys.readouterr().err


def test_a_password_holding_url_delimiters_is_never_shown(deals_home, capsys, monkeypatch):
    """libpq takes 'Xy7?kQ2#mz' as the password of postgresql://deals:Xy7?kQ2#mz@host/db; urllib would not."""
    from deals.framework.dburl import password_of, redact

    for password in ("Xy7?kQ2mz", "Xy7?kQ2#mz", "a:b"):
        url = f"postgresql://deals:{password}@127.0.0.1:1/deals"
        assert password not in redact(url) and redact(url).startswith("postgresql://deals:***@127.0.0.1:1") and password_of(url) == password
        monkeypatch.setenv("DEALS_STORE__URL", url)
        assert run_cli(["config"]) == 0 and run_cli(["history"]) == 1
        shown = capsys.readouterr()
        assert password not in shown.out + shown.err
    assert password_of("postgresql://deals@db/deals?password=pw1") == "pw1" and password_of("postgresql://deals@db/deals") is None
    # an "@" after the path belongs to a parameter, not to the authority
    quirky = "postgresql://db:5432/deals?application_name=deals@laptop"
    assert redact(quirky) == quirky and password_of(quirky) is None
    assert redact("postgresql://u:pw@db/deals?application_name=me@laptop") == "postgresql://u:***@db/deals?application_name=me@laptop"


def test_migrate_copies_the_configured_sqlite_store_and_keeps_removed_ids_retired(tmp_path, deals_home, pg_url, monkeypatch, capsys):
    """Without --from the copy takes the SQLite store the daemon uses (a sqlite store.url), and a
    watch id removed before the move is never given to another watch after it."""
    elsewhere = tmp_path / "elsewhere.db"
    with Store(elsewhere) as src:
        fill(src, deals=3)
        ids = [src.add_watch("+15551110001", WatchRule(keywords=[word])) for word in ("tv", "ssd", "ram")]
        src.remove_watch(ids[-1])
        expected = len(src.deal_rows(DealFilter()))
    with Store(deals_home / "deals.db"):
        pass  # an empty default store beside it must not be what gets copied
    monkeypatch.setenv("DEALS_STORE__URL", f"sqlite:///{elsewhere}")
    assert run_cli(["store", "migrate", "--to", pg_url]) == 0
    assert "elsewhere.db" in "".join(capsys.readouterr().out.split())  # the table title wraps the path
    with Store(pg_url) as dst:
        assert len(dst.deal_rows(DealFilter())) == expected > 0
        assert dst.add_watch("+15551110001", WatchRule(keywords=["hdd"])) > ids[-1]


def test_migrate_explains_rows_the_target_refuses_and_bad_targets_are_usage_errors(deals_home, pg_url, capsys):
    import sqlite3

    with Store(deals_home / "deals.db") as src:
        fill(src, deals=2)
    raw = sqlite3.connect(deals_home / "deals.db")  # SQLite keeps an orphan with foreign keys off (a manual edit, a .recover)
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute("INSERT INTO estimates (deal_key, pricer, price, created_at) VALUES ('no-such-deal', 'knn', 1.0, '2025-01-01T00:00:00+00:00')")
    raw.commit()
    raw.close()
    assert run_cli(["store", "migrate", "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "refused by the target" in err and "Traceback" not in err
    for target in ("mysql://u@h/db", "postgresql://deals:s3cr3t@[127.0.0.1/deals", "sqlite:////tmp/x.db"):
        assert run_cli(["store", "migrate", "--to", target]) == 2, target
        assert "s3cr3t" not in capsys.readouterr().err
    # numbers no store can hold are usage errors, not tracebacks
    huge = "99999999999999999999"
    for args in (["watch", "remove", huge], ["history", "--limit", huge], ["watch", "recipient", "+15551234567", "--daily-cap", huge]):
        assert run_cli(args) == 2, args
        assert "Traceback" not in capsys.readouterr().err


def test_a_feed_key_on_the_command_line_is_not_recorded(deals_home, monkeypatch):
    from deals.memory.lock import command_line

    monkeypatch.setattr("sys.argv", ["deals", "run", "--feed", "https://feeds.example.com/rss?key=SECRETKEY123&cat=tech"])
    assert "SECRETKEY123" not in command_line() and "feeds.example.com/rss" in command_line()
    with Store(deals_home / "deals.db") as store:
        store.worker_id  # noqa: B018 - registers this process, command line and all
        commands = [w.command for w in store.workers()]
        assert len(commands) == 1 and "SECRETKEY123" not in commands[0] and "--feed" in commands[0]
