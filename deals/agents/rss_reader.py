"""The RSS reader agent: configured feeds -> deduplicated FeedEntry records and feed states.

One `read()` per cycle. For each feed it honours the feed's backoff, sends a conditional
GET (If-None-Match / If-Modified-Since from the FeedState), streams at most
`feeds.max_bytes` of body, parses it (`feed_parsing`), keeps the newest
`feeds.max_entries_per_feed` entries and updates the FeedState: validators on success;
error count, last error, exponential backoff (`backoff_base_s * 2**(n-1)`, capped at
`backoff_max_s`) and the unhealthy flag (after `unhealthy_after` failures in a row) on
failure. A failing feed never stops the others and nothing per feed raises out of `read()`.

Redirects are followed by hand through the URL guard (`fetch_guarded`): a feed whose
configured URL is public may not redirect to a loopback, private or link-local address
(an internal response would be stored as deals); a feed configured at such an address
(a local server, a test) may, and so may every feed with `feeds.allow_private_addresses`.
`feeds.timeout_s` bounds the whole fetch, redirects included.

Entries are deduplicated across feeds by `FeedEntry.key` (first feed wins). The reader
keeps no state of its own and never touches the database: the planner loads the states,
calls `read()`, saves `ReadResult.states` and filters entries it has already seen by key.

With `feeds.fetch_pages` on, each entry's page (only the new ones when the planner passes
`is_new`) is fetched through the URL guard (`deals.framework.http.fetch_guarded`) with
`page_concurrency` threads, and its readable text is appended to `FeedEntry.details`;
a page that fails is logged and skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from deals.agents.feed_parsing import page_text, parse_feed
from deals.framework.agent import Agent
from deals.framework.errors import FetchError
from deals.framework.http import Fetched, Resolver, UnsafeURLError, check_url, fetch_guarded, make_client, resolve_host
from deals.framework.models import FeedEntry, FeedState, utcnow
from deals.framework.settings import Settings

FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "")

FeedStatus = Literal["ok", "not_modified", "skipped_backoff", "error"]


class FeedResult(BaseModel):
    """What happened to one feed this cycle (for the cycle log)."""

    url: str
    status: FeedStatus
    entries: int = Field(0, description="entries this feed added to the result (after the cap and cross-feed dedupe)")
    duplicates: int = Field(0, description="entries dropped because an earlier feed (or this one) already had them")
    error: str | None = None
    warning: str | None = Field(None, description="e.g. the feed was not well-formed but entries were read")
    unhealthy: bool = False
    seconds: float = 0.0


class ReadResult(BaseModel):
    """One cycle's reading: entries, updated feed states, and a result per feed."""

    entries: list[FeedEntry] = Field(default_factory=list)
    states: dict[str, FeedState] = Field(default_factory=dict, description="updated state of every feed read, by URL")
    feed_results: list[FeedResult] = Field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.feed_results if r.status == "error")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


class RssReader(Agent):
    """Reads deal feeds politely (conditional GET, backoff) and safely (timeouts, size caps)."""

    name = "rss_reader"

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
        page_client: httpx.Client | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        super().__init__(settings)
        self.feeds = settings.feeds
        self.clock = clock
        self.page_text_chars = settings.feeds.page_text_chars
        self._resolve = resolve
        self._own_client = client is None
        # no keep-alive: guarded requests are pinned to a checked address (see framework.http)
        self.client = client or make_client(
            timeout_s=self.feeds.timeout_s, user_agent=self.feeds.user_agent, follow_redirects=False, keepalive=False
        )
        self._own_page_client = page_client is None
        self._page_client = page_client

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._own_page_client and self._page_client is not None:
            self._page_client.close()
            self._page_client = None

    def __enter__(self) -> RssReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ backoff

    def backoff_s(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures: base * 2**(n-1), capped."""
        if failures <= 0:
            return 0.0
        return min(self.feeds.backoff_base_s * 2.0 ** min(failures - 1, 60), self.feeds.backoff_max_s)

    def _failed(self, state: FeedState, error: str, now: datetime) -> FeedState:
        failures = state.error_count + 1
        return state.model_copy(
            update={
                "error_count": failures,
                "last_error": error,
                "next_attempt_at": now + timedelta(seconds=self.backoff_s(failures)),
                "unhealthy": failures >= self.feeds.unhealthy_after,
            }
        )

    @staticmethod
    def _succeeded(state: FeedState, now: datetime, response: Fetched) -> FeedState:
        update: dict[str, object] = {
            "error_count": 0,
            "last_error": None,
            "next_attempt_at": None,
            "unhealthy": False,
            "last_success_at": now,
        }
        etag, modified = _validator(response.headers.get("etag")), _validator(response.headers.get("last-modified"))
        if response.status_code == 304:  # keep the validators unless the server sent new ones
            update["etag"] = etag or state.etag
            update["last_modified"] = modified or state.last_modified
        else:
            update["etag"] = etag
            update["last_modified"] = modified
        return state.model_copy(update=update)

    # ------------------------------------------------------------------ reading

    def read(
        self,
        feed_urls: Sequence[str],
        states: dict[str, FeedState],
        *,
        is_new: Callable[[str], bool] | None = None,
    ) -> ReadResult:
        """Read every feed once (skipping those in backoff); never raises for a per-feed problem.

        `is_new(key)` (optional) limits page fetches to entries the caller has not seen.
        """
        now = _aware(self.clock())
        result = ReadResult()
        seen: set[str] = set()
        for url in dict.fromkeys(feed_urls):
            state = (states.get(url) or FeedState(url=url)).model_copy(deep=True)
            if state.next_attempt_at is not None and now < _aware(state.next_attempt_at):
                self.log.info("feed %s: in backoff until %s (%d failures), skipped", url, state.next_attempt_at, state.error_count)
                result.states[url] = state
                result.feed_results.append(
                    FeedResult(url=url, status="skipped_backoff", error=state.last_error, unhealthy=state.unhealthy)
                )
                continue
            started = time.perf_counter()
            try:
                state, feed_result, entries = self._read_one(url, state, now)
            except Exception as exc:  # noqa: BLE001 - one feed must never stop the cycle
                error = str(exc) if isinstance(exc, FetchError) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, FetchError):
                    self.log.warning("feed %s failed: %s", url, error)
                else:
                    self.log.exception("feed %s failed unexpectedly", url)
                state = self._failed(state, error, now)
                if state.unhealthy:
                    self.log.warning("feed %s is unhealthy: %d failures in a row", url, state.error_count)
                feed_result = FeedResult(url=url, status="error", error=error, unhealthy=state.unhealthy)
                entries = []
            kept = [e for e in entries if e.key not in seen]
            seen.update(e.key for e in kept)
            feed_result.entries = len(kept)
            feed_result.duplicates += len(entries) - len(kept)
            feed_result.seconds = round(time.perf_counter() - started, 4)
            result.entries.extend(kept)
            result.states[url] = state
            result.feed_results.append(feed_result)
            if feed_result.status != "error":
                self.log.info(
                    "feed %s: %s, %d entries (%d duplicates) in %.2fs",
                    url, feed_result.status, feed_result.entries, feed_result.duplicates, feed_result.seconds,
                )
        if self.feeds.fetch_pages and result.entries:
            wanted = {e.key for e in result.entries if is_new is None or is_new(e.key)}
            fetched = {e.key: e for e in self.fetch_pages([e for e in result.entries if e.key in wanted])}
            result.entries = [fetched.get(e.key, e) for e in result.entries]
        return result

    def _read_one(self, url: str, state: FeedState, now: datetime) -> tuple[FeedState, FeedResult, list[FeedEntry]]:
        headers = {"Accept": FEED_ACCEPT}
        if _validator(state.etag):  # stored before validators were checked: a bad one is dropped, not sent
            headers["If-None-Match"] = str(state.etag)
        if _validator(state.last_modified):
            headers["If-Modified-Since"] = str(state.last_modified)
        resolve = _resolving_once(self._resolve or resolve_host)  # the guard and the fetch ask DNS once
        started = time.monotonic()  # one deadline for the whole read, the public-address check included
        private_ok = self.feeds.allow_private_addresses or not self._is_public(url, resolve)
        left = self.feeds.timeout_s - (time.monotonic() - started)
        if left <= 0:
            raise FetchError(f"timed out after {self.feeds.timeout_s:g}s resolving the host of {url}")
        response = fetch_guarded(
            self.client,
            url,
            max_bytes=self.feeds.max_bytes,
            timeout_s=left,
            allow_private=private_ok,
            truncate=False,
            headers=headers,
            resolve=resolve,
        )
        if response.status_code == 304:
            return self._succeeded(state, now, response), FeedResult(url=url, status="not_modified"), []
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code} from {url}: no feed in the response")
        parsed = parse_feed(response.content, feed_url=url, headers=dict(response.headers))
        if parsed.warning:
            self.log.warning("feed %s: %s; using the %d entries found", url, parsed.warning, len(parsed.entries))
        # newest first (undated entries after dated ones, in document order), one per key, capped
        ordered = sorted(
            parsed.entries,
            key=lambda e: (e.published is None, -(e.published.timestamp() if e.published else 0.0)),
        )
        unique: dict[str, FeedEntry] = {}
        for entry in ordered:
            unique.setdefault(entry.key, entry)
        entries = list(unique.values())[: self.feeds.max_entries_per_feed]
        feed_result = FeedResult(url=url, status="ok", warning=parsed.warning, duplicates=len(ordered) - len(unique))
        return self._succeeded(state, now, response), feed_result, entries

    def _is_public(self, url: str, resolve: Resolver) -> bool:
        """Whether a configured feed URL resolves to public addresses only (its redirects must too)."""
        try:
            check_url(url, resolve=resolve, timeout_s=self.feeds.timeout_s)
        except UnsafeURLError:
            return False
        return True

    # ------------------------------------------------------------------ deal pages

    @property
    def page_client(self) -> httpx.Client:
        if self._page_client is None:
            # no keep-alive: guarded requests are pinned to a checked address (see framework.http)
            self._page_client = make_client(
                timeout_s=self.feeds.page_timeout_s,
                user_agent=self.feeds.user_agent,
                follow_redirects=False,
                keepalive=False,
            )
        return self._page_client

    def fetch_pages(self, entries: Sequence[FeedEntry]) -> list[FeedEntry]:
        """Entries with their page's readable text appended to `details` (same order).

        At most `feeds.page_concurrency` pages at once; a page that fails or is refused by
        the URL guard leaves its entry unchanged (logged).
        """
        if not entries:
            return []
        client = self.page_client  # created here, not concurrently in the workers
        workers = min(self.feeds.page_concurrency, len(entries))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deals-page") as pool:
            return list(pool.map(lambda entry: self._enrich(client, entry), entries))

    def _enrich(self, client: httpx.Client, entry: FeedEntry) -> FeedEntry:
        try:
            page = fetch_guarded(
                client,
                entry.url,
                max_bytes=self.feeds.page_max_bytes,
                timeout_s=self.feeds.page_timeout_s,
                allow_private=self.feeds.allow_private_addresses,
                truncate=True,
                headers={"Accept": PAGE_ACCEPT},
                resolve=self._resolve,
            )
            if page.content_type not in _HTML_TYPES:
                self.log.info("page %s skipped: content type %s", entry.url, page.content_type)
                return entry
            text = page_text(page.content, charset=page.charset, limit=self.page_text_chars)
        except FetchError as exc:
            self.log.warning("page %s skipped: %s", entry.url, exc)
            return entry
        except Exception:  # noqa: BLE001 - one page must never stop the cycle
            self.log.exception("page %s skipped: unexpected error", entry.url)
            return entry
        if not text:
            return entry
        details = f"{entry.details}\n\n{text}" if entry.details else text
        return entry.model_copy(update={"details": details})


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified worth sending back: printable ASCII of sane length, else None.

    A server that sends non-ASCII bytes there would otherwise stop the feed for good: the
    stored value could never be sent in a request header again."""
    if not value or len(value) > 512 or not all(" " <= c <= "~" for c in value):
        return None
    return value


def _resolving_once(resolve: Resolver) -> Resolver:
    """`resolve` with its answers kept: one DNS question per host for one feed read."""
    answers: dict[tuple[str, int], Sequence[str]] = {}

    def cached(host: str, port: int) -> Sequence[str]:
        if (host, port) not in answers:
            answers[(host, port)] = resolve(host, port)
        return answers[(host, port)]

    return cached


__all__ = ["FeedResult", "ReadResult", "RssReader"]
