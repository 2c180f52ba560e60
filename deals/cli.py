"""The `deals` command line: a thin typer layer over library calls.

    deals price "TEXT"                 estimate a product, show the neighbours behind it
    deals index [--data FILE ...]      embed priced products into the vector store
    deals data FILE ... --out DIR      curate raw product files into train/validation/test
    deals evaluate --data FILE --pricer NAME [--pricer NAME ...]
    deals ensemble [fit]               the ensemble's fitted members; fit them
    deals config [--defaults]          show the effective (or default) configuration
    deals run [--once] [--feed URL]    the daemon (APScheduler), or one cycle
    deals history [--json]             recent opportunities and their alert status
    deals notify-test                  send one test message
    deals train --preset NAME          QLoRA fine-tuning of the specialist pricer

Exit codes: 0 ok, 1 a runtime error (message on stderr), 2 a usage or configuration error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deals.framework.errors import ConfigError, DealsError
from deals.framework.logs import setup_logging
from deals.framework.settings import Settings, load_settings, render_defaults

app = typer.Typer(
    help="deals: finds genuinely good deals in deal feeds and texts you about them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
log = logging.getLogger("deals.cli")


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj["settings"]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (default: $DEALS_CONFIG or $DEALS_HOME/config.yaml)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    settings = load_settings(config)
    setup_logging("DEBUG" if verbose else settings.logging.level, settings.logging.json_logs)
    ctx.obj = {"settings": settings, "config": config}


@app.command()
def config(
    ctx: typer.Context,
    defaults: Annotated[bool, typer.Option("--defaults", help="print the built-in defaults as commented YAML")] = False,
) -> None:
    """Show the effective configuration (or the defaults, as a config.yaml)."""
    if defaults:
        sys.stdout.write(render_defaults())
        return
    import yaml

    sys.stdout.write(yaml.safe_dump(settings_of(ctx).model_dump(mode="json"), sort_keys=False))


@app.command()
def price(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="product description")],
    pricer: Annotated[Optional[str], typer.Option("--pricer", "-p", help="pricer name (default: pricing.pricer)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the estimate as JSON")] = False,
) -> None:
    """Estimate what a product is worth and show the catalogue products it came from."""
    from deals.pricer.base import create_pricer

    settings = settings_of(ctx)
    name = pricer or settings.pricing.pricer
    _load_agents()
    model = create_pricer(name, settings)
    try:
        estimate = model.price(text)
    finally:
        model.close()
    if as_json:
        sys.stdout.write(estimate.model_dump_json(indent=2) + "\n")
        return
    interval = f"  {estimate.interval_level:.0%} interval {estimate.interval_text}" if estimate.interval_text and estimate.interval_level else ""
    console.print(f"[bold]Estimate:[/bold] ${estimate.price:,.2f}{interval}  ([dim]{estimate.pricer}[/dim])")
    for member, value in estimate.parts.items():
        console.print(f"  {member}: ${value:,.2f}")
    if estimate.note:
        console.print(f"[dim]{estimate.note}[/dim]")
    if estimate.neighbours:
        table = Table(title="nearest catalogue products", show_lines=False)
        table.add_column("similarity", justify="right")
        table.add_column("price", justify="right")
        table.add_column("product")
        for n in estimate.neighbours:
            table.add_row(f"{n.similarity:.3f}", f"${n.price:,.2f}", n.title[:90])
        console.print(table)


@app.command()
def index(
    ctx: typer.Context,
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="priced product file(s) to add (JSONL/CSV/Parquet/Amazon meta)")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="delete the index first")] = False,
    curate: Annotated[bool, typer.Option("--curate/--no-curate", help="apply the curation rules to --data files")] = True,
) -> None:
    """Embed priced products into the vector store (resumable and idempotent).

    Without --data, makes sure the bundled starter catalogue is indexed.
    """
    from deals.memory.embeddings import Embedder, embedder_fingerprint
    from deals.memory.vectors import VectorStore
    from deals.pricer.catalogue import open_catalogue, seed_starter

    settings = settings_of(ctx)
    store = VectorStore(settings.vectors, embedder_fingerprint(settings.embeddings)) if rebuild else None
    if store is not None:
        store.reset()
    if not data:
        store = store or open_catalogue(settings, seed=False)
        if store.count() == 0:
            written = seed_starter(store, settings)
            console.print(f"starter catalogue indexed: {written} products")
        console.print(f"index holds {store.count()} products")
        return
    from deals.pricer.data import curate as curate_products
    from deals.pricer.data import load_many

    products = load_many(data)
    if curate:
        curated = curate_products(products, settings.data)
        products = curated.products
        if curated.dropped:
            console.print("dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(curated.dropped.items())))
    store = store or open_catalogue(settings, seed=False)
    report = store.index_products(products, Embedder(settings.embeddings))
    console.print(
        f"indexed {report.added} new products, {report.skipped} already present, "
        f"{report.seconds:.1f}s ({report.items_per_s:.1f} items/s); index holds {store.count()}"
    )


@app.command()
def data(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="raw product files (JSONL[.gz]/CSV/Parquet, course or Amazon-2023 meta format)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory for train/validation/test JSONL")],
    reference: Annotated[Optional[Path], typer.Option("--reference", help="JSONL of real deal prices; adds a deal_like.jsonl split matched to them")] = None,
) -> None:
    """Curate raw product files into a dataset with deterministic splits, and summarise it."""
    from deals.pricer.data import curate_files, load_reference_prices

    settings = settings_of(ctx)
    prices = load_reference_prices(reference) if reference else None
    summary = curate_files(files, out, settings.data, reference_prices=prices)
    from deals.pricer.data import price_summary_from_dict

    console.print(price_summary_from_dict(summary))
    console.print(f"written to {out}")


@app.command()
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="priced JSONL file of held-out products")],
    pricer: Annotated[list[str], typer.Option("--pricer", "-p", help="pricer name; repeat for a side-by-side run")] = ["ensemble"],  # noqa: B006
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="evaluate the first N items")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="write the JSON report here")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="write the truth-vs-estimate PNG here (and the alert curve beside it)")] = None,
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="trained output directory served by --pricer specialist")] = None,
) -> None:
    """Run pricers over a priced file: MAE, RMSLE, hit rate, alert precision/recall, interval coverage, per bucket.

    Alerts are judged by the planner's own rule and settings: every item is offered at
    0.4 ... 1.1 times its true price and each offer is alerted or not, rightly or wrongly.
    """
    from deals.pricer.alerts import AlertRule
    from deals.pricer.base import create_pricer
    from deals.pricer.data import load_products
    from deals.pricer.evaluate import compare, plot as plot_reports, plot_alert_curve, render_alerts, render_buckets, render_table, write_report

    settings = settings_of(ctx)
    limit = limit or settings.evaluation.limit
    _load_agents()
    items = load_products(data)
    if limit:
        items = items[:limit]
    pricers = {}
    try:
        for name in dict.fromkeys(pricer):
            options = {"adapter": str(adapter)} if adapter and name == "specialist" else {}
            pricers[name] = create_pricer(name, settings, **options)
        reports = compare(pricers, items, settings.evaluation, data_file=str(data), rule=AlertRule.from_settings(settings.planner))
    finally:
        for model in pricers.values():
            model.close()
    console.print(render_table(reports))
    for rep in reports:
        console.print(render_buckets(rep))
        console.print(render_alerts(rep))
    if report:
        write_report(reports, report)
        console.print(f"report: {report}")
    if plot:
        plot_reports(reports, plot)
        curve = plot.with_name(f"{plot.stem}-alerts{plot.suffix or '.png'}")
        plot_alert_curve(reports, curve)
        console.print(f"plots: {plot}, {curve}")


ensemble_app = typer.Typer(help="The ensemble: which members are fitted, and fitting them.", no_args_is_help=False, invoke_without_command=True)
app.add_typer(ensemble_app, name="ensemble")


@ensemble_app.callback()
def ensemble_show(ctx: typer.Context) -> None:
    """Show the configured members, which are available, and the fitted subsets with their validation MAE."""
    if ctx.invoked_subcommand is not None:
        return
    from deals.pricer.blend import load_fit, weights_path

    settings = settings_of(ctx)
    path = weights_path(settings)
    table = Table(title="ensemble members")
    table.add_column("member")
    table.add_column("configured")
    table.add_column("fitted in")
    fit = None
    if path.exists():
        try:
            fit = load_fit(path)
        except DealsError as exc:
            err.print(f"[yellow]{escape(str(exc))}[/yellow]")
    for name in settings.ensemble.members:
        subsets = [key for key, sub in (fit.subsets.items() if fit else []) if name in sub.members]
        note = "its own calibration (bundled)" if name == "local" else (", ".join(subsets) or "-")
        table.add_row(name, "yes", note)
    console.print(table)
    if fit is None:
        console.print(f"no fitted blend at {path}: the local model answers alone; members that need a fit are fitted on first use"
                      f" (ensemble.auto_fit={settings.ensemble.auto_fit}) or with `deals ensemble fit`")
        return
    fits = Table(title=f"fitted subsets ({path}; {Path(fit.data_file or '?').name}, n={fit.n}, {fit.fitted_at:%Y-%m-%d})")
    for column in ("subset", "n", "weights", "validation MAE (CV)", "RMSLE"):
        fits.add_column(column)
    for key, sub in sorted(fit.subsets.items()):
        weights = ", ".join(f"{m} {w:.2f}" for m, w in sub.weights.items())
        fits.add_row(key, str(sub.n), weights, f"${sub.cv.mae:,.2f}", f"{sub.cv.rmsle:.3f}")
    console.print(fits)
    if fit.cost_usd:
        console.print(f"fitting cost ${fit.cost_usd:.4f}")


@ensemble_app.command("fit")
def ensemble_fit(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="priced file (default: the bundled validation split)")] = None,
    member: Annotated[Optional[list[str]], typer.Option("--member", "-m", help="members to fit (default ensemble.members)")] = None,
    max_usd: Annotated[Optional[float], typer.Option("--max-usd", help="most the LLM members may spend (default ensemble.auto_fit_max_usd)")] = None,
    max_items: Annotated[Optional[int], typer.Option("--max-items", help="most items each non-local member prices")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="use the first N items of the file")] = None,
) -> None:
    """Fit the blend of the members on a priced file and save it (cross-validated; deal-weighted)."""
    from deals.agents.ensemble import validation_file
    from deals.pricer.blend import fit_from_file

    settings = settings_of(ctx)
    _load_agents()
    fitted = fit_from_file(
        settings, data or validation_file(), limit, member or None,
        max_usd=settings.ensemble.auto_fit_max_usd if max_usd is None else max_usd,
        max_items=settings.ensemble.auto_fit_max_items if max_items is None else max_items,
    )  # fmt: skip
    console.print(fitted.table())
    console.print(f"ensemble weights saved to {fitted.path}")


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="run one cycle and exit (0 when it ran to its end)")] = False,
    feed: Annotated[Optional[list[str]], typer.Option("--feed", "-f", help="feed URL for this run (repeatable); replaces feeds.urls")] = None,
) -> None:
    """Start the daemon: read, scan, price and alert every scheduler.interval_minutes (SIGTERM stops it cleanly)."""
    from deals.agents.planner import Planner
    from deals.framework.orchestrator import Orchestrator
    from deals.memory.store import Store

    settings = settings_of(ctx)
    feeds = list(feed) if feed else None
    _load_agents()
    with Store.open_default() as store:
        orchestrator: Orchestrator | None = None
        planner = Planner.from_settings(settings, store, should_stop=lambda: orchestrator is not None and orchestrator.stopping.is_set())
        try:
            orchestrator = Orchestrator(lambda: planner.run_cycle(feeds), settings.scheduler)
            code = orchestrator.run_once() if once else orchestrator.run_forever()
        finally:
            planner.close()
    raise typer.Exit(code)


@app.command()
def history(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="how many opportunities, newest first")] = 20,
) -> None:
    """Recent opportunities: product, price, estimate, discount, link and alert status."""
    from deals.memory.store import Store

    with Store.open_default() as store:
        rows = store.history(limit)
    if as_json:
        sys.stdout.write(json.dumps([row.model_dump(mode="json") for row in rows], indent=2) + "\n")
        return
    if not rows:
        console.print("no opportunities yet")
        return
    table = Table(title=f"last {len(rows)} opportunities")
    table.add_column("when (UTC)")
    table.add_column("product")
    table.add_column("price", justify="right")
    table.add_column("estimate (interval)", justify="right")
    table.add_column("members")
    table.add_column("discount", justify="right")
    table.add_column("alerts")
    table.add_column("link", overflow="fold")
    for row in rows:
        table.add_row(
            f"{row.created_at:%Y-%m-%d %H:%M}",
            row.description[:60],
            f"${row.price:,.2f}",
            f"${row.estimate:,.2f}" + (f" (${row.low:,.0f}-${row.high:,.0f})" if row.low is not None and row.high is not None else ""),
            ", ".join(f"{name} ${value:,.0f}" for name, value in row.parts.items()),
            f"${row.discount:,.2f} ({row.discount_rel:.0%})",
            row.alert_status,
            row.url,
        )
    console.print(table)


@app.command("notify-test")
def notify_test(ctx: typer.Context) -> None:
    """Send one test message to every configured recipient (Twilio SMS, or the console without it)."""
    from deals.agents.messenger import Messenger
    from deals.memory.store import Store

    settings = settings_of(ctx)
    with Store.open_default() as store:
        messenger = Messenger(settings, store)
        try:
            ids = messenger.send_test()
            where = getattr(messenger.notifier, "base_url", None)
            via = messenger.notifier.name + (f" ({where})" if where else "")
            for recipient, sid in zip(messenger.recipients, ids, strict=True):
                console.print(f"test message sent via {via} to {recipient}: {sid}")
        finally:
            messenger.close()


def _register_train() -> None:
    from deals.pricer.train_cli import train_command

    app.command("train")(train_command)


_register_train()


def _load_agents() -> None:
    """Import the agents package so that the pricers it defines register themselves."""
    try:
        import deals.agents  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a broken optional agent must not break the CLI
        log.debug("agents not loaded: %s", exc)


def main() -> None:
    """Console-script entry point: maps errors to exit codes."""
    try:
        app(standalone_mode=False)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise SystemExit(2) from None
    except DealsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        raise SystemExit(130) from None
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None) if isinstance(exc, typer.Exit) else exc.code
        raise SystemExit(code or 0) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
