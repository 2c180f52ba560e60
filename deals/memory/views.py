"""The dashboard's read model: one query per list, paginated, over indexes (no face logic here).

    store.opportunity_rows(offset, limit)          newest first, with each one's alert states
    store.opportunity_view(id)                     everything one opportunity page shows
    store.deal_rows(DealFilter, offset, limit)     every entry seen, searchable, with its decision
    store.feed_counts(urls, since)                 entries per feed since a time
    store.alert_rows(state, offset, limit)         the outbox, newest first
    store.costs_by_day(since)                      LLM calls, tokens and dollars per day and agent
    store.priced_points(limit)                     (price, estimate, decision) of recent priced deals

Lists fetch `limit + 1` rows so that the page knows whether a next one exists without
counting the table. Search is `lower(title) LIKE lower(?)` (SQLite and PostgreSQL alike;
`%` and `_` in the query are escaped). Every query is bounded by its index or its limit,
so pages stay fast as history grows (benchmarks/bench_dashboard.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from deals.framework.models import Opportunity


class OpportunityRow(BaseModel):
    id: int
    created_at: datetime
    deal_key: str
    description: str
    title: str | None = None
    url: str
    price: float
    estimate: float
    low: float | None = None
    high: float | None = None
    discount: float
    discount_rel: float
    list_price: float | None = None
    alerts: dict[str, str] = Field(default_factory=dict, description="recipient -> outbox state")


class AlertView(BaseModel):
    id: int
    opportunity_id: int
    recipient: str
    state: str
    attempts: int
    provider_id: str | None = None
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None
    description: str | None = None
    why: str | None = Field(None, description="why this recipient got it (their watch, or the general rule)")


class OpportunityView(BaseModel):
    id: int
    created_at: datetime
    opportunity: Opportunity
    decision: str | None = None
    alert_below: float | None = None
    title: str | None = None
    feed_url: str | None = None
    retailer: str | None = None
    product_key: str | None = None
    alerts: list[AlertView] = Field(default_factory=list)
    routes: list[tuple[str, str]] = Field(default_factory=list)


class DealFilter(BaseModel):
    q: str = ""
    feed: str = ""
    decision: str = Field("", description="a decision, 'waiting' for none yet, or '' for all")
    since: str = Field("", description="YYYY-MM-DD (UTC), inclusive")
    until: str = Field("", description="YYYY-MM-DD (UTC), inclusive")


class DealRow(BaseModel):
    key: str
    seen_at: datetime
    feed_url: str
    title: str
    url: str
    price: float | None = None
    list_price: float | None = None
    product_key: str
    decision: str | None = None
    reason: str | None = None
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    alert_below: float | None = None
    description: str | None = None
    pricing_error: str | None = None
    opportunity_id: int | None = None


class CostRow(BaseModel):
    day: str
    agent: str
    calls: int
    failures: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ViewsMixin:
    """Read-only queries for the dashboard (see the module docstring)."""

    # provided by Store
    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...  # pragma: no cover
    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...  # pragma: no cover

    # ---------------------------------------------------------------- opportunities

    def opportunity_rows(self, offset: int = 0, limit: int = 50) -> list[OpportunityRow]:
        from deals.memory.store import from_text

        rows = self._all(
            """SELECT o.id, o.created_at, o.deal_key, o.price, o.estimate, o.discount, d.description, d.url,
                      e.low, e.high, n.title, n.list_price
               FROM opportunities o JOIN deals d ON d.entry_key = o.deal_key
               LEFT JOIN estimates e ON e.deal_key = o.deal_key
               LEFT JOIN entries n ON n.key = o.deal_key
               ORDER BY o.created_at DESC, o.id DESC LIMIT ? OFFSET ?""",
            (limit, offset),
        )
        out = [
            OpportunityRow(
                id=r["id"], created_at=from_text(r["created_at"]), deal_key=r["deal_key"], description=r["description"],
                title=r["title"], url=r["url"], price=r["price"], estimate=r["estimate"], low=r["low"], high=r["high"],
                discount=r["discount"], discount_rel=r["discount"] / r["estimate"] if r["estimate"] else 0.0,
                list_price=r["list_price"],
            )  # fmt: skip
            for r in rows
        ]
        if out:
            by_id = {row.id: row for row in out}
            marks = ",".join("?" * len(by_id))
            for a in self._all(
                f"SELECT opportunity_id, recipient, state FROM alerts WHERE opportunity_id IN ({marks}) ORDER BY id", list(by_id)
            ):
                by_id[a["opportunity_id"]].alerts[a["recipient"]] = a["state"]
        return out

    def opportunity_view(self, opportunity_id: int) -> OpportunityView | None:
        from deals.memory.store import from_text

        row = self._one("SELECT * FROM opportunities WHERE id = ?", (opportunity_id,))
        if row is None:
            return None
        opportunity = self.get_opportunity(opportunity_id)  # type: ignore[attr-defined]
        decision = self._one("SELECT decision, alert_below FROM estimates WHERE deal_key = ?", (row["deal_key"],))
        entry = self._one("SELECT title, feed_url, retailer, product_key FROM entries WHERE key = ?", (row["deal_key"],))
        routes = dict(self.routes(opportunity_id))  # type: ignore[attr-defined]
        alerts = [
            AlertView(
                id=a["id"], opportunity_id=a["opportunity_id"], recipient=a["recipient"], state=a["state"], attempts=a["attempts"],
                provider_id=a["provider_id"], last_error=a["last_error"], created_at=from_text(a["created_at"]),
                sent_at=from_text(a["sent_at"]), why=routes.get(a["recipient"]),
            )  # fmt: skip
            for a in self._all("SELECT * FROM alerts WHERE opportunity_id = ? ORDER BY id", (opportunity_id,))
        ]
        return OpportunityView(
            id=opportunity_id,
            created_at=from_text(row["created_at"]),
            opportunity=opportunity,
            decision=decision["decision"] if decision else None,
            alert_below=decision["alert_below"] if decision else None,
            title=entry["title"] if entry else None,
            feed_url=entry["feed_url"] if entry else None,
            retailer=entry["retailer"] if entry else None,
            product_key=entry["product_key"] if entry else None,
            alerts=alerts,
            routes=list(routes.items()),
        )

    # ---------------------------------------------------------------- deals

    def deal_rows(self, where: DealFilter, offset: int = 0, limit: int = 50) -> list[DealRow]:
        from deals.memory.store import from_text

        clauses, params = [], []
        if where.q.strip():
            clauses.append("lower(n.title) LIKE ? ESCAPE '\\'")
            params.append(_like(where.q.strip()))
        if where.feed:
            clauses.append("n.feed_url = ?")
            params.append(where.feed)
        if where.decision == "waiting":
            clauses.append("n.decision IS NULL")
        elif where.decision:
            clauses.append("n.decision = ?")
            params.append(where.decision)
        if where.since:
            clauses.append("n.seen_at >= ?")
            params.append(where.since)
        if where.until:
            clauses.append("n.seen_at < ?")
            params.append(where.until + "T99")  # the whole day: every timestamp of that date sorts below
        sql = f"""SELECT n.*, e.price AS estimate, e.low, e.high, e.alert_below, d.description,
                         d.last_pricing_error, o.id AS opportunity_id
                  FROM entries n LEFT JOIN deals d ON d.entry_key = n.key
                  LEFT JOIN estimates e ON e.deal_key = n.key
                  LEFT JOIN opportunities o ON o.deal_key = n.key
                  {"WHERE " + " AND ".join(clauses) if clauses else ""}
                  ORDER BY n.seen_at DESC, n.key DESC LIMIT ? OFFSET ?"""
        rows = self._all(sql, (*params, limit, offset))
        return [
            DealRow(
                key=r["key"], seen_at=from_text(r["seen_at"]), feed_url=r["feed_url"], title=r["title"], url=r["url"],
                price=r["price"], list_price=r["list_price"], product_key=r["product_key"], decision=r["decision"],
                reason=r["reason"], estimate=r["estimate"], low=r["low"], high=r["high"], alert_below=r["alert_below"],
                description=r["description"], pricing_error=r["last_pricing_error"], opportunity_id=r["opportunity_id"],
            )  # fmt: skip
            for r in rows
        ]

    def entry_feeds(self) -> list[str]:
        """Feeds that entries came from (for the Deals page's filter)."""
        return [r[0] for r in self._all("SELECT url FROM feeds UNION SELECT url FROM feed_controls ORDER BY 1")]

    def feed_counts(self, urls: Sequence[str], since: datetime) -> dict[str, int]:
        """Entries recorded per feed since `since` (index range per feed)."""
        from deals.memory.store import to_text

        out = {}
        for url in urls:
            row = self._one("SELECT COUNT(*) FROM entries WHERE feed_url = ? AND seen_at >= ?", (url, to_text(since)))
            out[url] = int(row[0]) if row else 0
        return out

    # ---------------------------------------------------------------- alerts

    def alert_rows(self, state: str = "", offset: int = 0, limit: int = 50) -> list[AlertView]:
        from deals.memory.store import from_text

        where = "WHERE a.state = ?" if state else ""
        params: list[Any] = [state] if state else []
        rows = self._all(
            f"""SELECT a.*, d.description, r.why FROM alerts a
                JOIN opportunities o ON o.id = a.opportunity_id JOIN deals d ON d.entry_key = o.deal_key
                LEFT JOIN routes r ON r.opportunity_id = a.opportunity_id AND r.recipient = a.recipient
                {where} ORDER BY a.created_at DESC, a.id DESC LIMIT ? OFFSET ?""",
            (*params, limit, offset),
        )
        return [
            AlertView(
                id=a["id"], opportunity_id=a["opportunity_id"], recipient=a["recipient"], state=a["state"], attempts=a["attempts"],
                provider_id=a["provider_id"], last_error=a["last_error"], created_at=from_text(a["created_at"]),
                sent_at=from_text(a["sent_at"]), description=a["description"], why=a["why"],
            )  # fmt: skip
            for a in rows
        ]

    # ---------------------------------------------------------------- costs and runs

    def costs_by_day(self, since: datetime) -> list[CostRow]:
        from deals.memory.store import to_text

        rows = self._all(
            """SELECT substr(at, 1, 10) AS day, agent, COUNT(*) AS calls, SUM(1 - ok) AS failures,
                      SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out, SUM(cost_usd) AS cost_usd
               FROM llm_calls WHERE at >= ? GROUP BY substr(at, 1, 10), agent ORDER BY day, agent""",
            (to_text(since),),
        )
        return [
            CostRow(day=r["day"], agent=r["agent"], calls=r["calls"], failures=r["failures"] or 0, tokens_in=r["tokens_in"] or 0,
                    tokens_out=r["tokens_out"] or 0, cost_usd=round(r["cost_usd"] or 0.0, 6))  # fmt: skip
            for r in rows
        ]

    def priced_points(self, limit: int = 300) -> list[tuple[float, float, str | None]]:
        """(deal price, estimate, decision) of the most recently priced deals."""
        rows = self._all(
            """SELECT d.price, e.price AS estimate, e.decision FROM estimates e JOIN deals d ON d.entry_key = e.deal_key
               ORDER BY e.created_at DESC LIMIT ?""",
            (limit,),
        )
        return [(r["price"], r["estimate"], r["decision"]) for r in rows]


__all__ = ["AlertView", "CostRow", "DealFilter", "DealRow", "OpportunityRow", "OpportunityView", "ViewsMixin"]
