"""The dashboard's charts, drawn on the server as SVG with matplotlib (no JavaScript).

    estimates_svg(points)      deal price against the estimate for recent priced deals,
                               coloured by the planner's decision, with the price = estimate line
    history_svg(sightings)     a product's price per sighting over time (and the feed's "was" prices)
    costs_svg(rows)            LLM dollars per day, stacked per agent

Text in the SVG is drawn as paths (matplotlib's default), so nothing from a feed can
become markup. Charts are cached by their data (a small LRU), since the same data gives
the same picture; matplotlib is imported on the first chart only and drawn under a lock
(its state is not thread-safe).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

_LOCK = threading.Lock()
_CACHE: OrderedDict[str, bytes] = OrderedDict()
_CACHE_SIZE = 64
COLOURS = {
    "deal": "#1a7f37",
    "not cheap enough": "#8c959f",
    "low confidence": "#bf8700",
    "too good to be true": "#cf222e",
    None: "#0969da",
}


def _cached(name: str, data: Any, draw: Callable[[], bytes]) -> bytes:
    key = name + hashlib.sha256(json.dumps(data, default=str, sort_keys=True).encode()).hexdigest()
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        svg = draw()
        _CACHE[key] = svg
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return svg


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.patch.set_alpha(0)
    return fig


def _svg(fig: Any) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "deals", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buffer.getvalue()


def _empty(message: str) -> bytes:
    fig = _figure(7.0, 1.2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#57606a")
    return _svg(fig)


def estimates_svg(points: Sequence[tuple[float, float, str | None]]) -> bytes:
    """Deal price (x) against the estimate (y), log scales, one colour per decision."""

    def draw() -> bytes:
        if not points:
            return _empty("no priced deals yet")
        fig = _figure()
        ax = fig.add_subplot()
        groups: dict[str | None, list[tuple[float, float]]] = {}
        for price, estimate, decision in points:
            groups.setdefault(decision if decision in COLOURS else None, []).append((price, estimate))
        for decision, pairs in groups.items():
            xs, ys = zip(*pairs, strict=True)
            ax.scatter(xs, ys, s=14, alpha=0.75, color=COLOURS[decision], label=decision or "other")
        low = min(min(p, e) for p, e, _ in points)
        high = max(max(p, e) for p, e, _ in points)
        ax.plot([low, high], [low, high], color="#57606a", linewidth=0.8, linestyle="--", label="price = estimate")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("deal price ($)")
        ax.set_ylabel("estimate ($)")
        ax.legend(fontsize=7, loc="lower right", frameon=False)
        ax.grid(alpha=0.25)
        return _svg(fig)

    return _cached("estimates", list(points), draw)


def history_svg(sightings: Sequence[tuple[str, float, float | None]]) -> bytes:
    """A product's price per sighting: (ISO time, price, the feed's 'was' price or None)."""

    def draw() -> bytes:
        if not sightings:
            return _empty("no sightings of this product")
        from datetime import datetime

        fig = _figure(7.0, 3.0)
        ax = fig.add_subplot()
        times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t, _, _ in sightings]
        prices = [p for _, p, _ in sightings]
        ax.step(times, prices, where="post", color="#0969da", linewidth=1.2)
        ax.scatter(times, prices, s=18, color="#0969da", zorder=3, label="seen at")
        was = [(t, w) for t, (_, _, w) in zip(times, sightings, strict=True) if w]
        if was:
            ax.scatter([t for t, _ in was], [w for _, w in was], s=18, marker="_", color="#cf222e", label="feed's 'was' price")
        from datetime import timedelta

        if max(times) - min(times) < timedelta(days=2):  # one day of sightings: a week around them, not years
            middle = min(times) + (max(times) - min(times)) / 2
            ax.set_xlim(middle - timedelta(days=3.5), middle + timedelta(days=3.5))
        ax.set_ylabel("price ($)")
        ax.set_ylim(bottom=0, top=max(prices + [w for _, w in was]) * 1.15)
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.25)
        fig.autofmt_xdate()
        return _svg(fig)

    return _cached("history", list(sightings), draw)


def costs_svg(rows: Sequence[tuple[str, str, float]]) -> bytes:
    """LLM dollars per day (x: 'YYYY-MM-DD'), stacked per agent: rows of (day, agent, dollars)."""

    def draw() -> bytes:
        if not rows:
            return _empty("no LLM calls in this period")
        fig = _figure(7.0, 3.0)
        ax = fig.add_subplot()
        days = sorted({day for day, _, _ in rows})
        agents = sorted({agent for _, agent, _ in rows})
        table = {(day, agent): cost for day, agent, cost in rows}
        bottom = [0.0] * len(days)
        for agent in agents:
            heights = [table.get((day, agent), 0.0) for day in days]
            ax.bar(range(len(days)), heights, bottom=bottom, label=agent)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_ylabel("dollars")
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.25, axis="y")
        return _svg(fig)

    return _cached("costs", list(rows), draw)


__all__ = ["costs_svg", "estimates_svg", "history_svg"]
