"""The messenger end to end: the real twilio SDK against a fake Twilio on 127.0.0.1."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

from deals.agents import notifiers
from deals.agents.messenger import Messenger, format_alert, gsm7_length, to_gsm7
from deals.framework.text import money
from deals.agents.notifiers import ConsoleNotifier, TwilioNotifier
from deals.framework.errors import ConfigError, PermanentNotifyError, TransientNotifyError
from deals.framework.models import Deal, Estimate, Opportunity
from deals.framework.settings import Settings
from deals.memory.store import Store

NY = ZoneInfo("America/New_York")
T0 = datetime(2025, 6, 10, 16, 0, tzinfo=timezone.utc)  # 12:00 in New York
SENDER = "+15550000000"
ALICE, BOB = "+15551110001", "+15552220002"


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set_local(self, zone: ZoneInfo, *args: int) -> None:
        self.now = datetime(*args, tzinfo=zone).astimezone(timezone.utc)


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    """'Once per process' notices start unsaid in each test."""
    monkeypatch.setattr(notifiers, "_warned", set())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock):
    with FakeTwilio(clock=clock) as server:
        yield server


@pytest.fixture
def store(tmp_path, clock):
    with Store(tmp_path / "deals.db", clock=clock) as s:
        yield s


@pytest.fixture
def twilio_env() -> dict[str, str]:
    return {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": SENDER}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(fake, store, clock, sleeps, twilio_env):
    """A Messenger wired to the fake through the real SDK (via build_notifier and the environment)."""
    made: list[Messenger] = []

    def factory(env: dict[str, str] | None = None, **messenger: object) -> Messenger:
        config = {"to": [ALICE], "base_url": fake.url, "retry_base_s": 1.0, "max_attempts": 3, **messenger}
        settings = Settings.model_validate({"messenger": config})
        m = Messenger(settings, store, clock=clock, sleep=sleeps.append, environ=twilio_env if env is None else env)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


def build(key: str, price: float = 79.99, est: float = 199.0, description: str | None = None) -> Opportunity:
    deal = Deal(
        entry_key=key,
        product_description=description or f"Acme Model {key} cordless drill kit",
        price=price,
        url=f"https://www.dealnews.com/{key}.html",
    )
    return Opportunity(deal=deal, estimate=Estimate(price=est, pricer="knn"), discount=est - price)


def opp(store: Store, key: str, price: float = 79.99, est: float = 199.0, description: str | None = None) -> tuple[int, Opportunity]:
    """An opportunity as the planner hands it over: stored first, then (id, opportunity)."""
    o = build(key, price, est, description)
    return store.save_opportunity(o), o


def states(store: Store) -> list[str]:
    return [a.state for a in store.alerts()]


# --------------------------------------------------------------------------- message text


def _headphones(url: str = "https://www.dealnews.com/products/Sony/Sony-WH-1000-XM-5-Headphones/123456.html") -> Opportunity:
    deal = Deal(
        entry_key="x",
        product_description="Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones with Mic, 30-hour battery, "
        "multipoint Bluetooth, touch controls \u2013 \u201cMidnight Blue\u201d edition\u2122, in the 2024 retail box with a "
        "hard carrying case, 3.5 mm cable, USB-C cable and flight adapter included",
        price=248.0,
        url=url,
    )
    estimate = Estimate(price=399.99, pricer="ensemble", low=310.0, high=520.0, interval_level=0.8)
    return Opportunity(deal=deal, estimate=estimate, discount=151.99)


def test_message_names_the_product_and_has_every_number_the_interval_and_the_link():
    o = _headphones()
    text = format_alert(o)  # default: two segments
    assert gsm7_length(text) <= 306
    assert text.startswith("Sony WH-1000XM5 Wireless Noise Canceling Over-Ear Headphones")
    assert "$248, est $399.99 ($310-$520), save $151.99 (38%)" in text
    assert text.endswith(" " + o.deal.url)
    assert to_gsm7(text) == text  # only GSM-7 characters

    short = format_alert(o.model_copy(update={"deal": o.deal.model_copy(update={"product_description": "Sony headphones"})}))
    assert short == f"Sony headphones: $248, est $399.99 ($310-$520), save $151.99 (38%) {o.deal.url}"

    for limit in (180, 200, 250):  # the name is shortened first, never below 40 characters
        cut = format_alert(o, limit)
        assert gsm7_length(cut) <= limit and cut.endswith(o.deal.url) and "est $399.99 ($310-$520)" in cut
        assert cut.index(":") >= 40 and "..." in cut
    one_sms = format_alert(o, 160)  # a 40-character name and the numbers leave no room for this link
    assert gsm7_length(one_sms) <= 160 and one_sms.index(":") >= 40 and one_sms.endswith("(link in deals history)")

    no_interval = o.model_copy(update={"estimate": Estimate(price=399.99, pricer="knn")})
    assert "est $399.99, save" in format_alert(no_interval)


def test_a_watch_s_reason_is_said_and_a_deal_saving_nothing_has_no_save_part():
    """A target-price watch sends a $699 TV the model puts at $561: the text says why, not "save $-138"."""
    o = _headphones()
    tv = o.model_copy(update={"deal": o.deal.model_copy(update={"price": 699.0}), "discount": 561.22 - 699.0})
    tv = tv.model_copy(update={"estimate": Estimate(price=561.22, pricer="ensemble", low=400.0, high=800.0, interval_level=0.8)})
    text = format_alert(tv, 306, reason="watch 'tv': at or below target $800.00")
    assert "$699, est $561.22 ($400-$800); watch 'tv': at or below target $800.00 " in text
    assert "save" not in text and "$-" not in text
    assert "watch 'tv': at or below target $800.00" in format_alert(tv, 160, ["feed says was $999"], "watch 'tv': at or below target $800.00")
    # a long reason gives way before the numbers do, at every limit
    long_name = "Samsung 65-inch Class QN90C Neo QLED 4K Smart TV with Quantum HDR, Dolby Atmos and Object Tracking Sound+"
    dear = o.model_copy(update={"deal": o.deal.model_copy(update={"product_description": long_name, "price": 799.99})})
    dear = dear.model_copy(update={"estimate": Estimate(price=1299.99, pricer="ensemble"), "discount": 500.0})
    why = "watch '" + "samsung, qled, neo, 4k, smart tv, quantum hdr, 65-inch, object tracking" + "': at or below target $800.00"
    for limit in range(70, 320, 7):
        text = format_alert(dear, limit, ["feed says was $1,999.99"], why)
        assert gsm7_length(text) <= limit and "$799.99, est $1,299.99, save $500 (38%)" in text, (limit, text)
        assert text.startswith("Samsung 65-inch")
        assert (why in text) == ("watch '" in text)  # whole or not at all
    assert why in format_alert(dear, 306, [], why) and why not in format_alert(dear, 120, [], why)
    assert money(-137.78) == "-$137.78" and money(-0.001) == "$0" and money(1234.5) == "$1,234.50"


def test_a_small_limit_never_costs_the_price_estimate_or_saving():
    """Notes, the link and the interval give way; the numbers a user acts on never do."""
    name = "Samsung 65-inch Class OLED S90D Series HDR+ Smart TV with Dolby Atmos, Object Tracking Sound Lite, QN65S90DAFXZA"
    o = _headphones()
    o = o.model_copy(update={"deal": o.deal.model_copy(update={"product_description": name})})
    notes = ["feed says was $1,999.99", "lowest seen in 30 days: $1,099"]
    assert "feed says was $1,999.99" in format_alert(o, 306, notes)
    for limit in (160, 120, 100, 70):
        text = format_alert(o, limit, notes)
        assert gsm7_length(text) <= limit and text.startswith("Samsung 65-inch")
        assert "$248, est $399.99" in text and "save $151.99 (38%)" in text, (limit, text)


def test_a_long_link_never_costs_the_product_name_or_the_length_limit():
    tracking = _headphones("https://www.dealnews.com/Microsoft-4-License-Office-Home-Business/123.html?iref=rss-c142&" + "x" * 300)
    text = format_alert(tracking)
    assert gsm7_length(text) <= 306 and text.startswith("Sony WH-1000XM5 Wireless Noise Canceling")
    assert text.endswith(" https://www.dealnews.com/Microsoft-4-License-Office-Home-Business/123.html")  # query dropped

    huge = _headphones("https://example.com/" + "a" * 3800)  # no room for the link at all
    text = format_alert(huge)
    assert gsm7_length(text) <= 306 and text.startswith("Sony WH-1000XM5") and "(link in deals history)" in text
    assert "est $399.99 ($310-$520)" in text
    assert gsm7_length(format_alert(huge, 70)) <= 70  # even a tiny limit holds


def test_gsm7_and_money_helpers():
    assert to_gsm7("Caf\u00e9 \u201cna\u00efve\u201d \u2014 5\u00d72\u2026 \u4e2d") == 'Café "naive" - 5x2...'
    assert gsm7_length("a[b]") == 6
    # fractions stay numbers, letters without a decomposition keep their base letter
    assert to_gsm7("Instant Pot Duo 6\u00bd-Quart") == "Instant Pot Duo 6 1/2-Quart"
    assert to_gsm7("\u00bc-inch bit, \u0141\u00f3d\u017a") == "1/4-inch bit, Lodz"
    assert money(1234.0) == "$1,234" and money(19.5) == "$19.50" and money(0.99) == "$0.99"


# --------------------------------------------------------------------------- sending


def test_notify_sends_each_opportunity_to_each_recipient_once(make, store, fake):
    messenger = make(to=[ALICE, BOB])
    opps = [opp(store, "a"), opp(store, "b", 10.0, 60.0)]
    report = messenger.notify(opps)
    assert (report.enqueued, report.sent, report.failed, report.waiting) == (4, 4, 0, 0)
    assert sorted((m["to"], m["from"]) for m in fake.created) == sorted([(ALICE, SENDER), (BOB, SENDER)] * 2)
    assert all(m["num_segments"] in ("1", "2") for m in fake.created)  # judged by the fake's own GSM-7 table
    by_sid = {m["sid"]: m for m in fake.created}
    for alert in store.alerts():
        assert alert.state == "sent" and alert.attempts == 1
        assert by_sid[alert.provider_id]["body"] == alert.body and by_sid[alert.provider_id]["to"] == alert.recipient
        assert len(alert.body) <= 306
    assert "save $50 (83%)" in store.alerts()[-1].body
    assert all(r.user == ACCOUNT_SID for r in fake.requests)

    again = messenger.notify(opps)  # the same opportunities again: nothing resent
    assert again.sent == 0 and len(fake.created) == 4
    assert store.history()[0].alert_status == "sent 2"


def test_500_then_success_is_retried_after_checking_it_did_not_go_out(make, store, fake, sleeps):
    fake.fail(500)
    report = make().notify([opp(store, "a")])
    assert report.sent == 1 and sleeps == [1.0]
    assert [r.method for r in fake.requests] == ["POST", "GET", "POST"]
    assert [r.status for r in fake.posts()] == [500, 201]
    (alert,) = store.alerts()
    assert (alert.state, alert.attempts, alert.provider_id) == ("sent", 2, fake.created[0]["sid"])
    assert "500" in alert.last_error


def test_429_is_retried_with_exponential_backoff(make, store, fake, sleeps):
    fake.fail(429, times=2)
    report = make(retry_base_s=0.5, max_attempts=4).notify([opp(store, "a")])
    assert report.sent == 1 and len(fake.created) == 1
    assert sleeps == [0.5, 1.0]
    assert store.alerts()[0].attempts == 3


def test_400_fails_without_retry(make, store, fake, sleeps):
    fake.fail(400)
    report = make().notify([opp(store, "a"), opp(store, "b")])
    assert (report.failed, report.sent) == (1, 1)
    assert sleeps == [] and len(fake.posts()) == 2
    failed, sent = store.alerts()
    assert failed.state == "failed" and "21211" in failed.last_error and failed.attempts == 1
    assert sent.state == "sent"
    assert "failed 1" == store.history()[-1].alert_status


def test_a_number_the_provider_refuses_is_a_permanent_failure(make, store, fake):
    fake.fail(400)  # Twilio's 21211 "not a valid phone number" (e.g. a number it cannot reach)
    report = make().notify([opp(store, "a")])
    assert report.failed == 1 and fake.created == []
    assert "not a valid phone number" in store.alerts()[0].last_error


@pytest.mark.parametrize("number", ["555-1234", "not-a-phone", "12", "+1555"])
def test_a_recipient_that_is_not_e164_is_refused_by_the_settings(number):
    with pytest.raises(ValidationError, match="messenger.to"):
        Settings.model_validate({"messenger": {"to": [number]}})


def test_provider_down_leaves_alert_pending_then_reconciles_and_sends_once(make, store, fake, sleeps):
    fake.fail(500, times=3)
    messenger = make(max_attempts=3)
    report = messenger.notify([opp(store, "a"), opp(store, "b")])
    assert (report.sent, report.unknown, report.waiting) == (0, 1, 1)
    assert sleeps == [1.0, 2.0]
    assert states(store) == ["sending", "queued"]  # the second was not even tried
    assert "outcome unknown" in store.alerts()[0].last_error

    later = messenger.deliver_pending()  # Twilio is back
    assert (later.requeued, later.sent) == (1, 2)
    assert states(store) == ["sent", "sent"]
    assert sorted(m["body"] for m in fake.created) == sorted(a.body for a in store.alerts())


def test_network_failure_is_transient(store, clock, sleeps, twilio_env):
    settings = Settings.model_validate({"messenger": {"to": [ALICE], "base_url": "http://127.0.0.1:9", "max_attempts": 2}})
    with pytest.raises(TransientNotifyError, match="network error"):
        TwilioNotifier(ACCOUNT_SID, AUTH_TOKEN, SENDER, base_url="http://127.0.0.1:9").send(ALICE, "hi")
    messenger = Messenger(settings, store, clock=clock, sleep=sleeps.append, environ=twilio_env)
    report = messenger.notify([opp(store, "a")])
    assert report.unknown == 1 and states(store) == ["sending"]


# --------------------------------------------------------------------------- crash recovery


def _crashed_while_sending(store: Store, key: str, messenger: Messenger) -> tuple[int, str]:
    """An alert marked 'sending' by a process that died before marking the outcome."""
    opportunity_id, o = opp(store, key)
    body = format_alert(o)
    alert_id = store.enqueue_alert(opportunity_id, ALICE, body)
    store.mark_alert(alert_id, "sending")
    return alert_id, body


def test_reconcile_marks_already_sent_and_resends_the_rest_once(make, store, fake):
    messenger = make()
    went_out, body = _crashed_while_sending(store, "a", messenger)
    sid = fake.add_message(ALICE, body, from_=SENDER)
    fake.add_message(BOB, "unrelated", from_=SENDER)
    lost, _ = _crashed_while_sending(store, "b", messenger)

    report = messenger.deliver_pending()
    assert (report.reconciled, report.requeued, report.sent) == (1, 1, 1)
    assert store.get_alert(went_out).state == "sent" and store.get_alert(went_out).provider_id == sid
    assert store.get_alert(lost).state == "sent"
    assert [m["body"] for m in fake.created] == [store.get_alert(lost).body]  # one POST, for "b" only
    lists = [r for r in fake.requests if r.method == "GET"]
    assert all(r.query.get("To") == ALICE for r in lists)

    messenger.deliver_pending()
    assert len(fake.created) == 1


def test_reconcile_finds_a_message_twilio_has_not_handed_to_the_carrier_yet(make, store, fake, clock):
    fake.hold = True  # accepted, status queued, no date_sent yet
    messenger = make()
    alert_id, body = _crashed_while_sending(store, "a", messenger)
    fake.add_message(ALICE, "Sent from your Twilio trial account - " + body, from_=SENDER, sent=False)
    assert messenger.reconcile().reconciled == 1
    assert fake.created == [] and store.get_alert(alert_id).state == "sent"


def test_reconcile_when_twilio_cannot_be_asked_resends_nothing(make, store, fake):
    messenger = make()
    alert_id, _ = _crashed_while_sending(store, "a", messenger)
    fake.fail(503, method="GET")
    report = messenger.deliver_pending()
    assert report.unknown == 1 and store.get_alert(alert_id).state == "sending" and fake.posts() == []
    assert messenger.deliver_pending().requeued == 1 and len(fake.created) == 1


def test_opportunity_stored_without_alerts_is_recovered_but_old_ones_are_not(make, store, fake, clock):
    clock.now = T0 - timedelta(days=3)
    opp(store, "ancient")
    clock.now = T0
    recent_id, _ = opp(store, "recent")
    report = make().deliver_pending()
    assert report.enqueued == 1 and report.sent == 1
    assert [a.opportunity_id for a in store.alerts()] == [recent_id]


def test_stale_queued_alert_is_skipped(make, store, fake, clock):
    messenger = make(quiet_start="00:00", quiet_end="23:59")  # always quiet: stays queued
    messenger.notify([opp(store, "a")])
    clock.now = T0 + timedelta(days=2)
    report = make().deliver_pending()
    assert report.skipped == 1 and fake.created == []
    assert store.alerts()[0].last_error.startswith("stale")


# --------------------------------------------------------------------------- quiet hours and cap


def test_quiet_hours_spanning_midnight_hold_alerts_until_they_end(make, store, fake, clock):
    messenger = make(quiet_start="22:00", quiet_end="07:00", timezone="America/New_York")
    clock.set_local(NY, 2025, 6, 10, 23, 30)
    report = messenger.notify([opp(store, "a")])
    assert report.quiet and report.waiting == 1 and fake.requests == []
    clock.set_local(NY, 2025, 6, 11, 2, 0)
    assert messenger.deliver_pending().waiting == 1
    clock.set_local(NY, 2025, 6, 11, 6, 59)
    assert messenger.in_quiet_hours()
    clock.set_local(NY, 2025, 6, 11, 7, 0)
    report = messenger.deliver_pending()
    assert report.sent == 1 and not report.quiet and states(store) == ["sent"]


def test_quiet_hours_within_a_day(make, clock):
    messenger = make(quiet_start="13:00", quiet_end="14:30", timezone="America/New_York")
    assert not messenger.in_quiet_hours(datetime(2025, 6, 10, 12, 59, tzinfo=NY))
    assert messenger.in_quiet_hours(datetime(2025, 6, 10, 13, 0, tzinfo=NY))
    assert not messenger.in_quiet_hours(datetime(2025, 6, 10, 14, 30, tzinfo=NY))
    assert not make().in_quiet_hours()


def test_daily_cap_per_local_day_skips_the_excess(make, store, fake, clock):
    la = ZoneInfo("America/Los_Angeles")
    messenger = make(daily_cap=2, timezone="America/Los_Angeles", to=[ALICE, BOB])
    clock.set_local(la, 2025, 6, 10, 20, 0)  # 03:00 UTC on the 11th: the local day is what counts
    report = messenger.notify([opp(store, "a"), opp(store, "b"), opp(store, "c")])
    assert (report.sent, report.skipped) == (4, 2)
    skipped = store.alerts(["skipped"])
    assert {a.recipient for a in skipped} == {ALICE, BOB} and all("daily cap of 2" in a.last_error for a in skipped)

    clock.set_local(la, 2025, 6, 10, 23, 59)
    assert messenger.notify([opp(store, "d")]).skipped == 2
    clock.set_local(la, 2025, 6, 11, 0, 1)
    assert messenger.notify([opp(store, "e")]).sent == 2
    assert len(fake.created) == 6


def test_an_unknown_opportunity_id_is_reported_and_the_rest_still_go_out(make, store, fake):
    report = make().notify([(999, build("a")), opp(store, "b")])
    assert report.sent == 1 and "no opportunity 999" in report.errors[0]
    assert len(fake.created) == 1


def test_daily_cap_zero_sends_nothing(make, store, fake):
    assert make(daily_cap=0).notify([opp(store, "a")]).skipped == 1 and fake.created == []


# --------------------------------------------------------------------------- console and configuration


def test_console_fallback_prints_alerts_and_warns_once(make, store, fake, capsys, caplog):
    caplog.set_level(logging.INFO)
    first = make(env={})
    second = make(env={"TWILIO_ACCOUNT_SID": ACCOUNT_SID})
    assert isinstance(first.notifier, ConsoleNotifier) and isinstance(second.notifier, ConsoleNotifier)
    warnings = [r.getMessage() for r in caplog.records if "SMS is not configured" in r.getMessage()]
    assert len(warnings) == 1 and "TWILIO_AUTH_TOKEN" in warnings[0]
    assert first.recipients == ["console"]

    report = first.notify([opp(store, "a", description="Console drill")])
    assert report.sent == 1 and fake.requests == []
    assert "[deals alert] Console drill: $79.99, est $199" in capsys.readouterr().out
    (alert,) = store.alerts()
    assert alert.recipient == "console" and alert.provider_id.startswith("console-")


def test_missing_sender_means_console_and_nobody_to_text_prints(make, store, fake, capsys):
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    assert isinstance(make(env=env).notifier, ConsoleNotifier)
    assert isinstance(make(env=env, from_number=SENDER).notifier, TwilioNotifier)
    nobody = make(to=[])  # SMS configured, but no number anywhere: alerts are printed, none is texted
    assert isinstance(nobody.notifier, TwilioNotifier) and nobody.recipients == ["console"]
    assert nobody.notify([opp(store, "a", description="Console drill")]).sent == 1
    assert fake.requests == [] and "[deals alert] Console drill" in capsys.readouterr().out


def test_recipients_only_from_the_recipients_section_or_a_stored_watch_get_sms(make, store, fake):
    """`messenger.to` is one of three places recipients come from; SMS must not depend on it."""
    from deals.framework.settings import WatchRule

    messenger = make(to=[], recipients=[{"number": ALICE}])
    assert isinstance(messenger.notifier, TwilioNotifier) and messenger.recipients == [ALICE]
    assert messenger.notify([opp(store, "a")]).sent == 1 and [m["to"] for m in fake.created] == [ALICE]

    store.add_watch(BOB, WatchRule(keywords=["drill"]))  # as `deals watch add` or the dashboard does
    report = make(to=[]).notify([opp(store, "b", description="Cordless drill 20V")])
    assert report.sent == 1 and [m["to"] for m in fake.created] == [ALICE, BOB]


def test_a_run_without_twilio_keeps_queued_sms_for_when_it_is_back(make, store, fake, clock):
    """`deals run --once` from a shell without TWILIO_* must not throw away alerts waiting out quiet hours."""
    make(to=[ALICE], quiet_start="00:00", quiet_end="23:59").notify([opp(store, "a")])
    assert states(store) == ["queued"]
    offline = make(env={}, to=[ALICE])
    assert isinstance(offline.notifier, ConsoleNotifier)
    report = offline.deliver_pending()
    assert report.skipped == 0 and report.waiting >= 1
    assert [(a.recipient, a.state) for a in store.alerts() if a.recipient == ALICE] == [(ALICE, "queued")]
    assert make(to=[ALICE]).deliver_pending().sent == 1 and [m["to"] for m in fake.created] == [ALICE]


def test_provider_errors_never_carry_a_full_phone_number(make, store, fake, caplog):
    fake.fail(400, message="The 'To' number +447700900123 is not a valid phone number.")
    messenger = make(to=[ALICE])
    report = messenger.notify([opp(store, "a")])
    assert report.failed == 1
    (alert,) = store.alerts()
    for text in [alert.last_error or "", *report.errors, caplog.text]:
        assert "+447700900123" not in text
    assert "*********0123" in (alert.last_error or "")


def test_recipient_removed_from_config_is_skipped(make, store, fake):
    make(to=[ALICE, BOB], quiet_start="00:00", quiet_end="23:59").notify([opp(store, "a")])
    report = make(to=[ALICE]).deliver_pending()
    assert (report.sent, report.skipped) == (1, 1)
    assert [m["to"] for m in fake.created] == [ALICE]


def test_send_test_message(make, fake):
    sids = make(to=[ALICE, BOB]).send_test()
    assert sids == [m["sid"] for m in fake.created] and len(sids) == 2
    assert fake.created[0]["body"].startswith("deals: test message, 2025-06-10")
    fake.fail(401)
    with pytest.raises(PermanentNotifyError, match="401"):
        make().send_test("hello")


def test_bad_settings_are_config_errors(make):
    with pytest.raises(ConfigError, match="messenger.timezone"):
        make(timezone="Mars/Olympus")
    # quiet hours are refused when the settings are read, before any messenger is built
    with pytest.raises(ValidationError, match="set together"):
        make(quiet_start="22:00")
    for start, end in (("22:00", "25:00"), ("24:00", "07:00"), ("22:60", "07:00")):
        with pytest.raises(ValidationError, match="not a time of day"):
            make(quiet_start=start, quiet_end=end)


def test_the_auth_token_is_never_logged(make, store, fake, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    fake.fail(500)
    messenger = make()
    messenger.notify([opp(store, "a")])
    fake.fail(400)
    messenger.notify([opp(store, "b")])
    assert AUTH_TOKEN not in caplog.text and AUTH_TOKEN not in repr(messenger.notifier)
    assert AUTH_TOKEN not in capsys.readouterr().err
    assert all(AUTH_TOKEN not in (a.last_error or "") for a in store.alerts())


def test_fake_honours_the_sdk_list_filters(fake, clock):
    client = TwilioNotifier(ACCOUNT_SID, AUTH_TOKEN, SENDER, base_url=fake.url).client
    fake.add_message(ALICE, "old", created=T0 - timedelta(days=2))
    fake.add_message(ALICE, "new", created=T0)
    fake.add_message(BOB, "other", created=T0)
    assert [m.body for m in client.messages.list(to=ALICE)] == ["new", "old"]
    assert [m.body for m in client.messages.list(to=ALICE, date_sent_after="2025-06-10")] == ["new"]
    assert [m.body for m in client.messages.list(date_sent_before="2025-06-09")] == ["old"]
    assert len(client.messages.list(page_size=1)) == 3  # paging through next_page_uri
