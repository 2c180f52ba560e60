"""The dashboard application: Starlette routes rendering Jinja2 templates over the store's read model.

    create_app(settings, token=None, bind_host="127.0.0.1") -> Starlette

Pages (server-rendered; htmx refreshes the lists in place every `dashboard.refresh_s`):

    /opportunities            newest first: price, estimate and interval, saving, alerts per recipient
    /opportunities/{id}       why: members' estimates, nearest catalogue products, the pricer's notes,
                              the decision, price history, the feed's "was" price, alerts and routes
    /deals                    every entry seen, searchable and filterable (feed, dates, decision)
    /product?key=...          a product's sightings and price history
    /feeds                    health per feed; add a feed, disable/enable one
    /alerts                   the outbox: waiting, sent (Twilio SID), failed (error), skipped (why)
    /costs                    LLM calls, tokens and dollars per day and per agent
    /runs                     the cycle reports
    /watches                  recipients and their watches; add/remove, caps and quiet hours
    /settings                 the effective configuration, secrets and phone numbers hidden
    /charts/*.svg             the charts (deals.web.charts)

The pages only parse, call the store (`deals.memory.views` and friends) or a library
function (`deals.agents.watchlist`), and render. Everything from a feed is escaped by
Jinja2's autoescaping; links are kept only when they are http(s); phone numbers are
masked to their last 4 digits (`mask`). Security (token, host, CSRF, headers):
`deals.web.security`.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from deals.agents.watchlist import Watchlist, mask, parse_quiet
from deals.framework.errors import DealsError
from deals.framework.settings import MAX_DAILY_CAP, Settings, WatchRule, check_feed_url, e164
from deals.framework.text import money
from deals.framework.urls import redact_url
from deals.memory.history import DECISIONS
from deals.memory.store import ALERT_STATES, Store, to_text
from deals.memory.views import DealFilter
from deals.memory.watches import FeedControl
from deals.web import charts
from deals.web.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Guard, secured
from deals.web.settings_view import error_text, redacted_settings, secret_status

STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/login", "/static/", "/healthz")
MAX_PAGE = 100_000


# --------------------------------------------------------------------------- template helpers


def safe_href(url: str | None) -> str:
    """The link if it is http(s), else '' (a `javascript:` or `data:` link from a feed is never a link)."""
    if not url:
        return ""
    try:
        scheme = urlsplit(str(url).strip()).scheme.lower()
    except ValueError:
        return ""
    return str(url).strip() if scheme in ("http", "https") else ""


def feed_id(url: str) -> str:
    """A feed's id in forms: a digest of its URL, which may carry a key that the page must not show."""
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


_ROW_ID = re.compile(r"[0-9]{1,11}")  # ASCII digits only: '²'.isdigit() is true, int('²') fails


def _env() -> Environment:
    env = Environment(loader=PackageLoader("deals.web", "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True)
    env.filters.update(money=money, mask=mask, href=safe_href, when=when, pct=lambda v: f"{100 * (v or 0):.0f}%",
                       secret_url=redact_url, error_text=error_text, feed_id=feed_id)  # fmt: skip
    env.globals.update(decisions=DECISIONS, alert_states=ALERT_STATES)
    return env


# --------------------------------------------------------------------------- request parsing


def int_param(request: Request, name: str, default: int, low: int = 1, high: int = MAX_PAGE) -> int:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"\d{1,9}", raw) or not low <= int(raw) <= high:
        raise HTTPException(400, f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def date_param(request: Request, name: str) -> str:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return ""
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise HTTPException(400, f"{name} must be a date (YYYY-MM-DD), not {raw[:40]!r}") from None


def _optional_float(form: Any, name: str, *, percent: bool = False) -> float | None:
    raw = str(form.get(name, "") or "").strip().lstrip("$").replace(",", "")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ')}: {raw[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name.replace('_', ' ')}: {raw[:40]!r} is not a number")
    return value / 100 if percent else value


# --------------------------------------------------------------------------- the app


class Dashboard:
    """The routes, bound to one store and one set of settings."""

    def __init__(self, settings: Settings, store_path: Path | str | None, guard: Guard) -> None:
        self.settings = settings
        self.store_path = store_path
        self.guard = guard
        self.templates = Jinja2Templates(env=_env())
        self._store: Store | None = None
        self._opening = threading.Lock()

    @property
    def store(self) -> Store:
        """The store, opened on first use (the handlers run on a thread pool: opened once)."""
        if self._store is None:
            with self._opening:
                if self._store is None:
                    # store.url (PostgreSQL, or a SQLite URL) when set, else deals.db under DEALS_HOME
                    self._store = Store(self.store_path) if self.store_path else Store.open_default(self.settings)
        return self._store

    def close(self) -> None:
        with self._opening:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ---------------------------------------------------------------- rendering

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("refresh_s", self.settings.dashboard.refresh_s)
        context.update(request=request, csrf=request.state.csrf, path=request.url.path, token_on=self.guard.token is not None)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def fragment(self, request: Request) -> bool:
        return request.headers.get("hx-request") == "true" and request.query_params.get("fragment") == "1"

    @property
    def page_size(self) -> int:
        return self.settings.dashboard.page_size

    # ---------------------------------------------------------------- pages

    def opportunities(self, request: Request) -> Response:
        page = int_param(request, "page", 1)
        rows = self.store.opportunity_rows((page - 1) * self.page_size, self.page_size + 1)
        more = len(rows) > self.page_size
        template = "_opportunity_rows.html" if self.fragment(request) else "opportunities.html"
        return self.page(request, template, rows=rows[: self.page_size], page=page, more=more)

    def opportunity(self, request: Request) -> Response:
        raw = request.path_params["id"]
        view = self.store.opportunity_view(int(raw)) if _ROW_ID.fullmatch(raw) else None
        if view is None:
            raise HTTPException(404, f"no opportunity {raw[:40]!r}")
        context = self.store.price_context(view.opportunity.deal.entry_key)
        return self.page(request, "opportunity.html", view=view, opp=view.opportunity, est=view.opportunity.estimate, history=context)

    def deals(self, request: Request) -> Response:
        page = int_param(request, "page", 1)
        decision = request.query_params.get("decision", "")
        if decision and decision not in (*DECISIONS, "waiting"):
            raise HTTPException(400, f"unknown decision {decision[:40]!r}")
        feeds = self.store.entry_feeds()
        wanted = request.query_params.get("feed", "")[:2000]  # the feed's id (or its URL)
        where = DealFilter(
            q=request.query_params.get("q", "")[:200], feed=next((f for f in feeds if wanted in (f, feed_id(f))), wanted),
            decision=decision, since=date_param(request, "since"), until=date_param(request, "until"),
        )  # fmt: skip
        rows = self.store.deal_rows(where, (page - 1) * self.page_size, self.page_size + 1)
        query = {k: v for k, v in where.model_dump().items() if v} | ({"feed": feed_id(where.feed)} if where.feed else {})
        return self.page(
            request, "deals.html", rows=rows[: self.page_size], page=page, more=len(rows) > self.page_size, where=where,
            feeds=feeds, query=urlencode(query),
        )  # fmt: skip

    def product(self, request: Request) -> Response:
        key = request.query_params.get("key", "")[:300]
        if not key:
            raise HTTPException(400, "which product? (?key=...)")
        sightings = self.store.price_history(key)
        if not sightings:
            raise HTTPException(404, "no sightings of that product")
        low30 = [s.price for s in sightings if s.seen_at >= datetime.now(timezone.utc) - timedelta(days=30)]
        return self.page(request, "product.html", key=key, sightings=sightings, low30=min(low30) if low30 else None)

    def feeds(self, request: Request) -> Response:
        configured = list(self.settings.feeds.urls)
        controls = {c.url: c for c in self.store.feed_controls()}
        states = {s.url: s for s in self.store.feed_states()}
        urls = list(dict.fromkeys(configured + list(controls) + list(states)))
        runs = self.store.recent_runs(1)
        last = runs[0].stats.get("feed_entries", {}) if runs else {}
        week = self.store.feed_counts(urls, datetime.now(timezone.utc) - timedelta(days=7))
        rows = []
        for url in urls:
            control = controls.get(url)
            in_cycle = _in_cycle(url, configured, control)
            rows.append(
                {"url": url, "state": states.get(url), "configured": url in configured, "added": bool(control and control.added),
                 "in_cycle": in_cycle, "enabled": in_cycle and (control is None or control.enabled),
                 "last_entries": last.get(url), "week": week.get(url, 0)}  # fmt: skip
            )
        return self.page(request, "feeds.html", rows=rows, message=request.query_params.get("message", "")[:300])

    def alerts(self, request: Request) -> Response:
        page = int_param(request, "page", 1)
        state = request.query_params.get("state", "")
        if state and state not in ALERT_STATES:
            raise HTTPException(400, f"unknown alert state {state[:40]!r}")
        rows = self.store.alert_rows(state, (page - 1) * self.page_size, self.page_size + 1)
        template = "_alert_rows.html" if self.fragment(request) else "alerts.html"
        return self.page(request, template, rows=rows[: self.page_size], page=page, more=len(rows) > self.page_size, state=state)

    def costs(self, request: Request) -> Response:
        days = int_param(request, "days", 30, 1, 3660)
        rows = self.store.costs_by_day(datetime.now(timezone.utc) - timedelta(days=days))
        agents: dict[str, dict[str, float]] = {}
        for row in rows:
            total = agents.setdefault(row.agent, {"calls": 0, "failures": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
            for field in total:
                total[field] += getattr(row, field)
        return self.page(request, "costs.html", rows=rows, agents=agents, days=days, total=sum(r.cost_usd for r in rows))

    def runs(self, request: Request) -> Response:
        page = int_param(request, "page", 1)
        rows = self.store.recent_runs(self.page_size + 1, offset=(page - 1) * self.page_size)
        template = "_run_rows.html" if self.fragment(request) else "runs.html"
        return self.page(request, template, rows=rows[: self.page_size], page=page, more=len(rows) > self.page_size)

    def settings_page(self, request: Request) -> Response:
        return self.page(request, "settings.html", config=redacted_settings(self.settings), secrets=secret_status())

    def watches(self, request: Request) -> Response:
        watchlist = Watchlist.load(self.settings, self.store)
        return self.page(
            request, "watches.html", people=list(watchlist.recipients.values()), watches=watchlist.watches(),
            message=request.query_params.get("message", "")[:300], error=request.query_params.get("error", "")[:300],
        )  # fmt: skip

    # ---------------------------------------------------------------- charts

    def chart_estimates(self, request: Request) -> Response:
        return Response(charts.estimates_svg(self.store.priced_points(300)), media_type="image/svg+xml")

    def chart_costs(self, request: Request) -> Response:
        days = int_param(request, "days", 30, 1, 3660)
        rows = self.store.costs_by_day(datetime.now(timezone.utc) - timedelta(days=days))
        return Response(charts.costs_svg([(r.day, r.agent, r.cost_usd) for r in rows]), media_type="image/svg+xml")

    def chart_history(self, request: Request) -> Response:
        key = request.query_params.get("key", "")[:300]
        sightings = self.store.price_history(key) if key else []
        points = [(to_text(s.seen_at) or "", s.price, s.list_price) for s in sightings]
        return Response(charts.history_svg(points), media_type="image/svg+xml")

    # ---------------------------------------------------------------- writes (POST, CSRF-checked)

    async def form(self, request: Request) -> Any:
        """The posted form, after the CSRF and Origin checks (403 otherwise)."""
        form = await request.form()
        offered = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD, ""))
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), offered):
            raise HTTPException(403, "this form has expired or did not come from the dashboard: reload the page and try again")
        if not self.guard.origin_ok(request.headers.get("origin"), request.headers.get("host")):
            raise HTTPException(403, "a form posted from another site is refused")
        return form

    @staticmethod
    def back(path: str, **query: str) -> RedirectResponse:
        return RedirectResponse(path + ("?" + urlencode(query) if query else ""), status_code=303)

    async def add_watch(self, request: Request) -> Response:
        form = await self.form(request)
        try:
            number = e164(str(form.get("number", "")))
            keywords = [k.strip() for k in re.split(r"[,\n]", str(form.get("keywords", ""))) if k.strip()]
            feeds = [f.strip() for f in str(form.get("feeds", "")).split() if f.strip()]
            rule = WatchRule(
                name=str(form.get("name", "")).strip(), keywords=keywords, regex=str(form.get("regex", "")).strip() or None,
                max_price=_optional_float(form, "max_price"), min_saving_abs=_optional_float(form, "min_saving_abs"),
                min_saving_rel=_optional_float(form, "min_saving_pct", percent=True), feeds=feeds,
                target_price=_optional_float(form, "target_price"),
            )  # fmt: skip
        except ValueError as exc:
            return self.back("/watches", error=_first_error(exc))
        watch_id = await run_in_threadpool(self.store.add_watch, number, rule)
        return self.back("/watches", message=f"watch {watch_id} added for {mask(number)}")

    async def remove_watch(self, request: Request) -> Response:
        await self.form(request)
        raw = request.path_params["id"]
        removed = bool(_ROW_ID.fullmatch(raw)) and await run_in_threadpool(self.store.remove_watch, int(raw))
        if not removed:
            return self.back("/watches", error=f"no stored watch {raw[:20]} (watches in config.yaml are edited there)")
        return self.back("/watches", message=f"watch {raw} removed")

    async def set_recipient(self, request: Request) -> Response:
        form = await self.form(request)
        try:
            number = e164(str(form.get("number", "")))
            cap_text = str(form.get("daily_cap", "")).strip()
            if cap_text and not (re.fullmatch(r"[0-9]{1,6}", cap_text) and int(cap_text) <= MAX_DAILY_CAP):
                raise ValueError(f"daily cap: {cap_text[:20]!r} is not a whole number from 0 to {MAX_DAILY_CAP}")
            quiet_text = str(form.get("quiet", "")).strip()
            start, end = parse_quiet(quiet_text) if quiet_text else (None, None)
        except ValueError as exc:
            return self.back("/watches", error=_first_error(exc))
        await run_in_threadpool(
            lambda: self.store.set_recipient(number, daily_cap=int(cap_text) if cap_text else None, quiet_start=start, quiet_end=end)
        )
        return self.back("/watches", message=f"settings saved for {mask(number)}")

    async def add_feed(self, request: Request) -> Response:
        form = await self.form(request)
        try:
            url = check_feed_url(str(form.get("url", "")))
        except ValueError as exc:
            return self.back("/feeds", message=f"not added: {_first_error(exc)}")
        if url in self.settings.feeds.urls:  # already in the cycle: only (re-)enabled, not marked as added here
            await run_in_threadpool(self.store.set_feed_enabled, url, True)
            return self.back("/feeds", message="already in feeds.urls: enabled from the next cycle")
        await run_in_threadpool(self.store.add_feed, url)
        return self.back("/feeds", message="feed added: it is read from the next cycle")

    async def toggle_feed(self, request: Request) -> Response:
        form = await self.form(request)
        wanted = str(form.get("feed") or form.get("url") or "")[:2000]  # the page posts the feed's id, not its URL (it may hold a key)
        enabled = str(form.get("enabled", "")) == "1"
        controls = {c.url: c for c in self.store.feed_controls()}
        known = {*self.settings.feeds.urls, *controls, *(s.url for s in self.store.feed_states())}
        url = next((u for u in known if wanted in (u, feed_id(u))), None)
        if url is None:
            return self.back("/feeds", message="no such feed")
        if enabled and not _in_cycle(url, self.settings.feeds.urls, controls.get(url)):
            # a feed only read with `deals run --feed`: enabling it adds it to the cycle
            await run_in_threadpool(self.store.add_feed, url)
            return self.back("/feeds", message="added to the cycle: read from the next one")
        await run_in_threadpool(self.store.set_feed_enabled, url, enabled)
        return self.back("/feeds", message=("enabled" if enabled else "disabled") + ": from the next cycle")

    # ---------------------------------------------------------------- login

    def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", error="")

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        session = self.guard.login(str(form.get("token", "")))
        if session is None:
            return self.page(request, "login.html", status_code=401, error="that is not the dashboard's token")
        response = RedirectResponse("/opportunities", status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        response = RedirectResponse("/login" if self.guard.token else "/opportunities", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def _in_cycle(url: str, configured: Sequence[str], control: FeedControl | None) -> bool:
    """Whether `deals run` (without --feed) reads this feed when it is enabled: configured, or added here.

    A feed that only `deals run --feed URL` read has a health row but is in no cycle of the
    daemon; the Feeds page offers to add it rather than to "enable" it.
    """
    return url in configured or bool(control and control.added)


def _first_error(exc: Exception) -> str:
    """A one-line message from a ValueError or a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
            message = str(first.get("msg", exc)).removeprefix("Value error, ")
            return f"{where}: {message}" if where else message
        except (IndexError, TypeError):
            pass
    return str(exc).splitlines()[0][:300]


class GuardMiddleware(BaseHTTPMiddleware):
    """Host check, token, the CSRF cookie and the security headers on every response."""

    def __init__(self, app: Any, guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        if not self.guard.host_ok(request.headers.get("host")):
            response: Response = PlainTextResponse("unknown host name for this dashboard", status_code=421)
        elif not request.url.path.startswith(OPEN_PATHS) and not self.guard.authorised(request.headers, request.cookies):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                response = RedirectResponse("/login", status_code=303)
            else:
                response = PlainTextResponse("the dashboard's token is required", status_code=401)
        else:
            csrf = request.cookies.get(CSRF_COOKIE) or ""
            fresh = not csrf or len(csrf) > 100
            request.state.csrf = Guard.new_csrf() if fresh else csrf
            response = await call_next(request)
            if fresh:
                response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict", path="/")
        return secured(response)


def create_app(settings: Settings, *, token: str | None = None, bind_host: str | None = None, store_path: Path | str | None = None) -> Starlette:
    """The dashboard as an ASGI app (see `deals.web.server` to serve it)."""
    guard = Guard(bind_host=bind_host or settings.dashboard.host, token=token, allowed_hosts=settings.dashboard.allowed_hosts)
    dash = Dashboard(settings, store_path, guard)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        dash.close()

    async def errors(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", None) if isinstance(exc, HTTPException) else None
        if isinstance(exc, DealsError):
            status, detail = 503, str(exc)
        if not hasattr(request.state, "csrf"):
            request.state.csrf = ""
        response = dash.page(request, "error.html", status_code=status, status=status, detail=detail or "something went wrong")
        return secured(response)  # a 500 is answered outside GuardMiddleware

    routes = [
        Route("/", lambda request: RedirectResponse("/opportunities", status_code=303)),
        Route("/healthz", lambda request: PlainTextResponse("ok")),
        Route("/opportunities", dash.opportunities),
        Route("/opportunities/{id}", dash.opportunity),
        Route("/deals", dash.deals),
        Route("/product", dash.product),
        Route("/feeds", dash.feeds),
        Route("/feeds/add", dash.add_feed, methods=["POST"]),
        Route("/feeds/toggle", dash.toggle_feed, methods=["POST"]),
        Route("/alerts", dash.alerts),
        Route("/costs", dash.costs),
        Route("/runs", dash.runs),
        Route("/watches", dash.watches),
        Route("/watches/add", dash.add_watch, methods=["POST"]),
        Route("/watches/{id}/remove", dash.remove_watch, methods=["POST"]),
        Route("/recipients", dash.set_recipient, methods=["POST"]),
        Route("/settings", dash.settings_page),
        Route("/charts/estimates.svg", dash.chart_estimates),
        Route("/charts/costs.svg", dash.chart_costs),
        Route("/charts/history.svg", dash.chart_history),
        Route("/login", dash.login_page, methods=["GET"]),
        Route("/login", dash.login, methods=["POST"]),
        Route("/logout", dash.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers={HTTPException: errors, DealsError: errors, 500: errors},
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    return app


__all__ = ["Dashboard", "create_app", "safe_href"]
