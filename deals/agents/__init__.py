"""The agents of the daemon (one module each), and the pricers they define.

Importing this package is cheap: it only names the modules that register the agent
pricers, which are imported when `create_pricer(name, ...)` first asks for one.

    frontier    RAG pricing by an LLM            (deals.agents.frontier)
    ensemble    learned blend of the others      (deals.agents.ensemble)
    specialist  the fine-tuned model             (deals.agents.specialist)
"""

from deals.pricer.base import register_lazy

register_lazy("frontier", "deals.agents.frontier")
register_lazy("ensemble", "deals.agents.ensemble")
register_lazy("specialist", "deals.agents.specialist")
