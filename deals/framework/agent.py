"""The `Agent` base class: a named component with settings and its own logger.

Agents do one job each (read feeds, scan, price, plan, message), take typed models in
and give typed models out, and never call each other sideways: the planner wires them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deals.framework.settings import Settings


class Agent:
    """Base of the seven agents."""

    name: str = "agent"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = logging.getLogger(f"deals.agents.{self.name}")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""
