"""Every LLM call this process makes, counted in one place, whichever agent made it.

    before = METER.snapshot()
    ...                                   # scanner, frontier pricer, ensemble auto-fit...
    spent = METER.snapshot() - before     # calls, failed, tokens in/out, dollars

`LLMClient` adds each call here (a failed call counts as a call, with whatever tokens
the provider reported), so a cycle report can total what the cycle cost without each
agent having to report its own calls. Thread-safe; imports nothing heavy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Totals of LLM calls."""

    calls: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.calls - other.calls, self.failed - other.failed, self.tokens_in - other.tokens_in,
            self.tokens_out - other.tokens_out, round(self.cost_usd - other.cost_usd, 8),
        )  # fmt: skip


class UsageMeter:
    """A running total of `Usage`, safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = Usage()

    def add(self, *, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0, ok: bool = True) -> None:
        with self._lock:
            t = self._total
            self._total = Usage(
                t.calls + 1, t.failed + (0 if ok else 1), t.tokens_in + tokens_in, t.tokens_out + tokens_out,
                t.cost_usd + cost_usd,
            )  # fmt: skip

    def snapshot(self) -> Usage:
        with self._lock:
            return self._total


METER = UsageMeter()

__all__ = ["METER", "Usage", "UsageMeter"]
