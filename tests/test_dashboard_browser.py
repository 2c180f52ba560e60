"""The dashboard in a real browser (Debian's Chromium via Playwright) against a running `deals dashboard`.

The store is filled by a real `deals run --once` over the real fixture feeds served on
127.0.0.1 (plus one hostile feed), with the fake OpenAI and the fake Twilio at the network
edge, as in tests/test_e2e.py. One store, one dashboard server and one browser serve the
whole module; the tests run in order (the watch added in the UI is used by the cycle that
follows it). Screenshots of every page go to build/dashboard-screenshots/ (or
$DEALS_SCREENSHOTS).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.browser import SCREENSHOTS, chromium, dashboard_server, require_chromium
from tests.fakes.daemon import FEEDS, REPO, clean_env, copy_home, scanner_reply, write_config
from tests.fakes.feed_server import FeedServer
from tests.fakes.llm_server import FakeLLMServer, answer
from tests.fakes.twilio_server import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

ALICE = "+15551110001"  # messenger.to: the general opportunities
BOB = "+15552220002"  # gets a watch added in the UI
CAROL = "+15553330003"  # a watch in config.yaml that matches nothing here
SENDER = "+15550000000"
FIRST_FEEDS = ("dealnews-recent-2026-10.xml", "dealnews-recent-2026-10-escaped.xml", "techbargains-2026-10.xml", "ozbargain-2023-01.xml")
LATER_FEED = "dealnews-roundups-2026-10.xml"  # read by the second cycle: its one deal is no general opportunity
HOSTILE_FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Hostile</title>
<item><title>&lt;script&gt;window.__pwned=1&lt;/script&gt; Sony WH-1000XM4 Wireless Noise Canceling Headphones &lt;img src=x onerror=window.__pwned=2&gt; for $99</title>
<link>https://shop.example/sony-wh1000xm4</link><guid>hostile-1</guid>
<description>Down from $348. &lt;script&gt;window.__pwned=5&lt;/script&gt;</description></item>
</channel></rss>"""

pytestmark = pytest.mark.slow


@dataclass
class Site:
    base: str
    home: Path
    config: Path
    env: dict[str, str]
    twilio: FakeTwilio
    feeds: FeedServer
    first: list[str]
    later: str
    browser: object

    def run_once(self, urls: list[str]) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "deals", "--config", str(self.config), "run", "--once"]
        for url in urls:
            args += ["--feed", url]
        return subprocess.run(args, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=180)

    def page(self, path: str = "/") -> object:
        page = self.browser.new_page()  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors  # type: ignore[attr-defined]
        page.goto(self.base + path)
        return page


@pytest.fixture(scope="module")
def site(seeded_home_template, tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("dashboard-site")
    home = copy_home(seeded_home_template, root / "home")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with FeedServer() as feeds, FakeLLMServer(answer(scanner_reply)) as llm, FakeTwilio() as twilio:
        first = [feeds.serve_file(f"/feeds/{name}", FEEDS / name, etag=f'"{name}-v1"') for name in FIRST_FEEDS]
        first.append(feeds.route("/feeds/hostile.xml", body=HOSTILE_FEED, etag='"h1"'))
        later = feeds.serve_file(f"/feeds/{LATER_FEED}", FEEDS / LATER_FEED, etag='"later-v1"')
        config = write_config(
            root / "deals.yaml",
            {
                "llm": {"provider": "openai", "model": "gpt-4o-mini", "base_url": f"{llm.url}/v1", "max_retries": 0},
                "messenger": {
                    "to": [ALICE],
                    "recipients": [{"number": CAROL, "daily_cap": 3, "watches": [{"name": "oled tv", "keywords": ["oled"], "target_price": 500}]}],
                    "base_url": twilio.url,
                    "retry_base_s": 0,
                },
                "ensemble": {"auto_fit": False},
                "planner": {"confidence": 0.4},  # see tests/test_e2e.py: the fixture feeds are mostly clothing and groceries
                "dashboard": {"refresh_s": 0},
            },
        )
        env = clean_env(home, OPENAI_API_KEY="sk-test-dash-0123456789", TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                        TWILIO_FROM_NUMBER=SENDER)  # fmt: skip
        site = Site("", home, config, env, twilio, feeds, first, later, None)
        done = site.run_once(first)
        assert done.returncode == 0, done.stdout + done.stderr
        assert twilio.created and {m["to"] for m in twilio.created} == {ALICE}  # general opportunities: ALICE only
        with dashboard_server(config, env, root / "dashboard.log") as base, chromium() as browser:
            site.base, site.browser = base, browser
            yield site


def shot(page: object, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_an_opportunity_shows_its_neighbours_members_and_alerts(site):
    page = site.page("/opportunities")
    links = page.locator("a.product")
    assert links.count() >= 2
    page.get_by_role("link", name="Talix 20000mAh", exact=False).first.click()
    page.wait_for_url("**/opportunities/*")
    neighbours = page.locator("#neighbours tbody tr")
    assert neighbours.count() == 10  # the estimate's nearest catalogue products, with their prices and similarity
    first = neighbours.first.locator("td")
    assert 0 < float(first.nth(0).inner_text()) <= 1 and first.nth(1).inner_text().startswith("$")
    members = page.locator("#members").inner_text()
    assert "local" in members and "knn" in members and "ridge" in members
    alerts = page.locator("#alerts").inner_text()
    assert "*******0001" in alerts and "sent" in alerts and ALICE not in page.content()  # masked to the last 4 digits
    assert "SM" in alerts  # the Twilio SID
    shot(page, "opportunity")
    assert page.errors == []  # no script error, no Content-Security-Policy violation
    page.close()


def test_a_hostile_title_renders_as_text(site):
    page = site.page("/deals?q=script")
    cell = page.locator("#deals tbody tr").first
    assert "<script>window.__pwned=1</script> Sony WH-1000XM4" in cell.inner_text()
    assert "<img src=x onerror=window.__pwned=2>" in cell.inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#deals script, #deals img").count() == 0
    shot(page, "deals-hostile")
    for path in ("/opportunities", "/alerts"):
        page.goto(site.base + path)
        assert page.evaluate("window.__pwned") is None
    page.close()


def test_a_watch_added_in_the_ui_texts_only_its_recipient_after_the_next_cycle(site):
    page = site.page("/watches")
    form = page.locator("#add-watch")
    form.locator("input[name=number]").fill(BOB)
    form.locator("input[name=name]").fill("a vest")
    form.locator("input[name=keywords]").fill("alfani, vest")
    form.locator("input[name=target_price]").fill("25")
    form.get_by_role("button", name="add watch").click()
    page.wait_for_url(lambda url: "/watches?message=" in url)
    assert "added for ********0002" in page.locator(".flash").inner_text()
    listed = page.locator("#watch-list").inner_text()
    assert "a vest" in listed and "alfani, vest" in listed and BOB not in page.content()
    shot(page, "watches")
    page.close()

    before = len(site.twilio.created)
    done = site.run_once([*site.first, site.later])
    assert done.returncode == 0, done.stdout + done.stderr
    new = site.twilio.created[before:]
    assert [m["to"] for m in new] == [BOB], new  # the vest is no general opportunity: ALICE and CAROL get nothing
    assert "Vest" in new[0]["body"] and "$19" in new[0]["body"]

    page = site.page("/alerts")
    row = page.locator("#outbox tbody tr").first.inner_text()
    assert "********0002" in row and "sent" in row and "watch 'a vest'" in row
    page.close()


PAGES = {
    "opportunities": "/opportunities",
    "deals": "/deals",
    "deals-filtered": "/deals?decision=low+confidence",
    "feeds": "/feeds",
    "alerts": "/alerts",
    "costs": "/costs",
    "runs": "/runs",
    "settings": "/settings",
    "watches-list": "/watches",
}


def test_every_page_renders_and_is_saved_as_a_screenshot(site):
    started = time.time() - 1  # screenshots from earlier runs stay in the folder: only this run's count
    for name, path in PAGES.items():
        page = site.page(path)
        assert page.locator("main h1").count() == 1, path
        for img in page.locator("img").all():  # the server-side charts load
            assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", img.element_handle()), path
        shot(page, name)
        assert page.errors == [], (path, page.errors)
        page.close()
    page = site.page("/deals")
    page.locator("a.small", has_text="history").first.click()
    page.wait_for_url(lambda url: "/product?key=" in url)
    assert page.locator("main h1").inner_text() == "Price history"
    shot(page, "product-history")
    page.close()
    assert {f"{n}.png" for n in PAGES} <= {p.name for p in SCREENSHOTS.glob("*.png")}
    fresh = {p.name for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= started and p.stat().st_size > 5_000}
    assert {f"{n}.png" for n in PAGES} <= fresh
    settings = site.page("/settings")
    text = settings.content()
    assert "sk-test-dash" not in text and AUTH_TOKEN not in text and ALICE not in text and CAROL not in text
    settings.close()
