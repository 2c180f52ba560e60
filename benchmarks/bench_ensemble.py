#!/usr/bin/env python3
"""Fit the ensemble on one held-out file and compare it with its members on others.

    python benchmarks/bench_ensemble.py
    python benchmarks/bench_ensemble.py --members local specialist --specialist-adapter runs/pricer
    python benchmarks/bench_ensemble.py --limit 200 --report reports/ensemble.json --plot reports/ensemble.png

1. creates the members that run here (default: local and ridge, plus the specialist when a
   trained adapter exists under DEALS_HOME/models/specialist or `--specialist-adapter`
   is given; frontier only if an LLM is configured: it costs money);
2. `fit_from_file` on `--fit` (default data/eval/validation.jsonl): the members price
   it held out (`exclude_exact`), the blend is fitted and saved, and the table shows
   each member and the ensemble by 5-fold cross-validation on that file;
3. on each `--eval` file (default data/eval/test.jsonl and data/eval/deal_like.jsonl),
   minus any item that is also in the fit file (deal_like.jsonl is resampled from
   validation + test, so about half of it is), the members and the fitted ensemble are
   evaluated side by side on the same items and the table printed.

Members' estimates are memoised per text within this run, so the ensemble reuses them
instead of recomputing (its items/s column is therefore not a speed measurement).
State goes to $DEALS_HOME, else ./.deals-home (the starter index is seeded there once).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DEALS_HOME", str(ROOT / ".deals-home"))


def paired_difference(ours, other, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:  # type: ignore[no-untyped-def]
    """Mean of |error_ours| - |error_other| over the same items, with a 95% paired-bootstrap interval."""
    import numpy as np

    if len(ours.rows) != len(other.rows) or any(a.title != b.title for a, b in zip(ours.rows, other.rows, strict=True)):
        return None
    d = np.abs([r.error for r in ours.rows]) - np.abs([r.error for r in other.rows])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", type=Path, default=ROOT / "data" / "eval" / "validation.jsonl")
    parser.add_argument("--eval", type=Path, action="append", default=None, dest="evals")
    parser.add_argument("--members", nargs="+", default=None, help="default: local, ridge, and the specialist when an adapter exists")
    parser.add_argument("--specialist-adapter", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N items of each file")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=None, help="where to save the fit (default DEALS_HOME/models/ensemble.json)")
    parser.add_argument("--report", type=Path, default=None, help="JSON report of the held-out comparisons")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the held-out comparisons (first eval file)")
    args = parser.parse_args()
    evals = args.evals or [ROOT / "data" / "eval" / "test.jsonl", ROOT / "data" / "eval" / "deal_like.jsonl"]


    import deals.agents  # noqa: F401 - registers the agent pricers
    from deals.pricer.blend import create_members, fit_from_file, weights_path
    from deals.framework import paths
    from deals.framework.models import Estimate, text_key
    from deals.framework.settings import load_settings
    from deals.pricer.base import Pricer, create_pricer
    from deals.pricer.data import load_products
    from deals.pricer.evaluate import compare, plot, render_table, write_report

    from deals.framework.text import report_console

    console = report_console()
    settings = load_settings()
    if args.specialist_adapter:
        settings.specialist.adapter = str(args.specialist_adapter)
    names = args.members
    if names is None:
        names = ["local", "ridge"]
        if settings.specialist.adapter or (paths.models_dir() / "specialist").exists():
            names.append("specialist")
    weights = args.weights or weights_path(settings)
    console.print(f"DEALS_HOME={paths.home()}  members requested: {', '.join(names)}")

    class Memo(Pricer):
        """A member whose answers are remembered per (text, exclude_exact) for this run."""

        def __init__(self, inner: Pricer) -> None:
            self.inner, self.name, self.memo = inner, inner.name, {}

        def price_many(self, descriptions: Sequence[str], *, exclude_exact: bool = False) -> list[Estimate]:
            todo = list(dict.fromkeys(d for d in descriptions if (d, exclude_exact) not in self.memo))
            if todo:
                for text, estimate in zip(todo, self.inner.price_many(todo, exclude_exact=exclude_exact), strict=True):
                    self.memo[(text, exclude_exact)] = estimate
            return [self.memo[(d, exclude_exact)] for d in descriptions]

        def price(self, description: str, *, exclude_exact: bool = False) -> Estimate:
            return self.price_many([description], exclude_exact=exclude_exact)[0]

        def close(self) -> None:
            self.inner.close()

    created, missing = create_members(settings, names)
    for name, why in missing.items():
        console.print(f"[yellow]{name} unavailable:[/] {why}")
    members = {name: Memo(p) for name, p in created.items()}
    try:
        fitted = fit_from_file(
            settings, args.fit, args.limit, list(members), folds=args.folds, weights_file=weights, pricers=members
        )
        console.print(fitted.table())
        for key, sub in fitted.fit.subsets.items():
            weights_text = ", ".join(f"{m} {w:.3f}" for m, w in sub.weights.items())
            spread = f", spread {sub.spread:+.3f}" if sub.uses_spread else ""
            console.print(
                f"  fit {key}: {weights_text}, intercept {sub.intercept:+.3f}{spread}, loss {sub.loss}, "
                f"CV MAE ${sub.cv.mae:.2f} (deal-weighted, n={sub.n})"
            )
        console.print(f"weights saved to {fitted.path}")

        fit_keys = {text_key(p.text) for p in load_products(args.fit)}
        ensemble = create_pricer("ensemble", settings, members=list(members), pricers=members, weights_file=weights)
        all_reports = []
        for path in evals:
            items = load_products(path)
            held_out = [p for p in items if text_key(p.text) not in fit_keys]
            if args.limit:
                held_out = held_out[: args.limit]
            console.print(
                f"\n[bold]{path.name}[/]: {len(held_out)} items held out from the fit "
                f"({len(items) - len([p for p in items if text_key(p.text) not in fit_keys])} dropped: also in {args.fit.name})"
            )
            reports = compare({**members, "ensemble": ensemble}, held_out, settings.evaluation, data_file=str(path))
            table = render_table(reports)
            table.title = f"{path.name}: members vs fitted ensemble (held out)"
            console.print(table)
            best_member = min((r for r in reports if r.pricer != "ensemble" and r.mae is not None), key=lambda r: r.mae)
            ours = next(r for r in reports if r.pricer == "ensemble")
            verdict = "at least as good as" if ours.mae is not None and ours.mae <= best_member.mae else "WORSE than"
            console.print(
                f"ensemble MAE ${ours.mae:.2f} is {verdict} the best member ({best_member.pricer}, ${best_member.mae:.2f})"
            )
            diff = paired_difference(ours, best_member)
            if diff:
                console.print(
                    f"paired MAE difference ensemble - {best_member.pricer}: ${diff[0]:+.2f} "
                    f"(95% bootstrap CI ${diff[1]:+.2f} to ${diff[2]:+.2f}, same {len(ours.rows)} items)"
                )
            all_reports.extend(r.model_copy(update={"pricer": f"{r.pricer} @ {path.stem}"}) for r in reports)
            if args.plot and path == evals[0]:
                plot(reports, args.plot)
        if args.report:
            write_report(all_reports, args.report)
            console.print(f"report: {args.report}")
    finally:
        for member in members.values():
            member.close()


if __name__ == "__main__":
    main()
