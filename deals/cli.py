"""The `deals` command line: a thin typer layer over library calls.

    deals price "TEXT"                 estimate a product, show the neighbours behind it
    deals index [--data FILE ...]      embed priced products into the vector store
    deals data FILE ... --out DIR      curate raw product files into train/validation/test
    deals evaluate --data FILE --pricer NAME [--pricer NAME ...]
    deals ensemble [fit]               the ensemble's fitted members; fit them
    deals config [--defaults]          show the effective (or default) configuration
    deals run [--once] [--feed URL]    the daemon (APScheduler), or one cycle [--dashboard: serve it too]
    deals dashboard [--host] [--port]  the web dashboard (127.0.0.1:8484 by default)
    deals watch add|list|remove|recipient   per-recipient watchlists
    deals history [--json] [--entries]  recent opportunities and their alert status (--entries: every entry read)
    deals notify-test                  send one test message
    deals train --preset NAME          QLoRA fine-tuning of the specialist pricer

Exit codes: 0 ok; 1 a runtime error (message on stderr; also a `run --once` cycle that
failed); 2 a usage or configuration error (a bad option or argument, a bad setting, another
daemon holding the store); 130 interrupted by Ctrl-C (SIGINT); 143 a `run --once` stopped
by SIGTERM. Every command's work is a library call; this module parses and prints.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from textwrap import shorten
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deals.framework.errors import ConfigError, DealsError
from deals.framework.logs import setup_logging
from deals.framework.settings import MAX_DAILY_CAP, Settings, load_settings, render_defaults
from deals.framework.text import escape_markup, plain, report_console

if TYPE_CHECKING:
    from deals.memory.views import DealRow

MAX_ROW_ID = 2**62  # ids beyond what SQLite or PostgreSQL store are refused as usage errors

app = typer.Typer(
    help="deals: finds genuinely good deals in deal feeds and texts you about them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = report_console()
err = Console(stderr=True, soft_wrap=True)
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
    from deals.pricer.base import create_pricer, pricer_names

    settings = settings_of(ctx)
    if not text.strip():
        raise typer.BadParameter("describe the product (the text is empty)", param_hint="'TEXT'")
    name = pricer or settings.pricing.pricer
    _load_agents()
    if name not in pricer_names():
        raise typer.BadParameter(f"unknown pricer {name!r}; known: {', '.join(pricer_names())}", param_hint="'--pricer'")
    from deals.pricer.intervals import low_confidence

    model = create_pricer(name, settings)
    try:
        estimate = model.price(text)
    finally:
        model.close()
    if as_json:
        sys.stdout.write(estimate.model_dump_json(indent=2) + "\n")
        return
    interval = f"  {estimate.interval_level:.0%} interval {estimate.interval_text}" if estimate.interval_text and estimate.interval_level else ""
    console.print(f"[bold]Estimate:[/bold] ${estimate.price:,.2f}{interval}  ([dim]{escape_markup(estimate.pricer)}[/dim])")
    for member, value in estimate.parts.items():
        console.print(f"  {escape_markup(member)}: ${value:,.2f}")
    if low_confidence(estimate):
        nearest = f" (nearest catalogue product: similarity {estimate.neighbours[0].similarity:.2f})" if estimate.neighbours else ""
        console.print(
            f"[yellow]low confidence: the interval spans a factor of {estimate.high / estimate.low:.0f}{nearest}; "  # type: ignore[operator]
            "nothing like it is priced in the catalogue, so the estimate is a rough guess[/yellow]"
        )
    if estimate.note:
        console.print(plain(estimate.note), style="dim")
    if estimate.neighbours:
        table = Table(title="nearest catalogue products", show_lines=False)
        table.add_column("similarity", justify="right")
        table.add_column("price", justify="right")
        table.add_column("product")
        for n in estimate.neighbours:
            table.add_row(f"{n.similarity:.3f}", f"${n.price:,.2f}", plain(n.title[:90]))
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
    from deals.pricer.catalogue import build_index

    built = build_index(settings_of(ctx), data, rebuild=rebuild, curate=curate)
    if built.seeded:
        console.print(f"starter catalogue indexed: {built.seeded} products")
    if built.dropped:
        console.print("dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(built.dropped.items())))
    if data:
        console.print(
            f"indexed {built.added} new products, {built.skipped} already present, "
            f"{built.seconds:.1f}s ({built.items_per_s:.1f} items/s); index holds {built.count}"
        )
    else:
        console.print(f"index holds {built.count} products")


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
    data: Annotated[Path, typer.Option("--data", "-d", exists=True, dir_okay=False, help="priced JSONL file of held-out products")],
    pricer: Annotated[list[str], typer.Option("--pricer", "-p", help="pricer name; repeat for a side-by-side run")] = ["ensemble"],  # noqa: B006
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="evaluate the first N items (default: all)")] = None,
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
    skipped: Counter[str] = Counter()
    items = load_products(data, skipped=skipped)  # DataError when nothing in it is usable
    if skipped:
        console.print(f"[dim]{sum(skipped.values())} rows of {escape_markup(data)} skipped: "
                      + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) + "[/dim]")
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

    _load_agents()
    settings = settings_of(ctx)
    path = weights_path(settings)
    # what each configured member lacks (an LLM key, a trained adapter), checked without building it
    from deals.pricer.base import pricer_unavailable

    missing = {name: why for name in settings.ensemble.members if (why := pricer_unavailable(name, settings))}
    table = Table(title="ensemble members (ensemble.members)")
    table.add_column("member")
    table.add_column("available")
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
        table.add_row(name, f"no: {shorten(missing[name], 200, placeholder='...')}" if name in missing else "yes", note)
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
    data: Annotated[Optional[Path], typer.Option("--data", "-d", exists=True, dir_okay=False, help="priced file (default: the bundled validation split)")] = None,
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
    once: Annotated[bool, typer.Option("--once", help="run one cycle and exit (0 when it ran to its end, 1 when it failed)")] = False,
    feed: Annotated[Optional[list[str]], typer.Option("--feed", "-f", help="feed URL for this run (repeatable); replaces feeds.urls")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="if another daemon holds this (exclusive) store, wait for it to exit instead of exiting 2")] = False,
    dashboard: Annotated[bool, typer.Option("--dashboard", help="also serve the dashboard from this process (dashboard.host:dashboard.port)")] = False,
) -> None:
    """Start the daemon: read, scan, price and alert every scheduler.interval_minutes (SIGTERM stops it cleanly).

    On an exclusive store (SQLite by default) a second daemon exits 2 naming the holder, or
    waits with --wait; daemons on a shared store (PostgreSQL by default) divide the work.
    """
    from deals.agents.daemon import run_daemon

    settings = settings_of(ctx)
    services = []
    if dashboard:
        from deals.web.server import DashboardThread

        services.append(DashboardThread(settings))  # the address and token are checked before the daemon starts
    raise typer.Exit(run_daemon(settings, feeds=feed, once=once, wait=wait, services=services))


@app.command("dashboard")
def dashboard_command(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option("--host", help="address to bind (default dashboard.host, 127.0.0.1); beyond loopback DEALS_DASHBOARD_TOKEN is required")] = None,
    port: Annotated[Optional[int], typer.Option("--port", "-p", min=1, max=65535, help="TCP port (default dashboard.port, 8484)")] = None,
) -> None:
    """Serve the web dashboard: opportunities and why, deals, feeds, alerts, watches, costs, runs, settings."""
    from deals.web.server import serve

    raise typer.Exit(serve(settings_of(ctx), host=host, port=port))


watch_app = typer.Typer(help="Watchlists: per-recipient rules (also in config.yaml and the dashboard).", no_args_is_help=True)
app.add_typer(watch_app, name="watch")


def _phone_number(number: str) -> str:
    """The NUMBER argument in E.164 form (a usage error, exit 2, otherwise)."""
    from deals.framework.settings import e164

    try:
        return e164(number)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'NUMBER'") from None


@watch_app.command("add")
def watch_add(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="the recipient's phone number (E.164, e.g. +15551234567)")],
    keyword: Annotated[Optional[list[str]], typer.Option("--keyword", "-k", help="a word or phrase that must appear (repeatable: all must)")] = None,
    regex: Annotated[Optional[str], typer.Option("--regex", "-r", help="a regular expression the title or description must match")] = None,
    name: Annotated[str, typer.Option("--name", help="a label for the watch")] = "",
    max_price: Annotated[Optional[float], typer.Option("--max-price", help="only deals at or below this price")] = None,
    min_saving: Annotated[Optional[float], typer.Option("--min-saving", help="minimum saving in dollars (overrides planner.min_discount_abs)")] = None,
    min_saving_pct: Annotated[Optional[float], typer.Option("--min-saving-pct", help="minimum saving in percent (overrides planner.min_discount_rel)")] = None,
    feed: Annotated[Optional[list[str]], typer.Option("--feed", "-f", help="only deals from this feed (repeatable)")] = None,
    target_price: Annotated[Optional[float], typer.Option("--target-price", "-t", help="text when a match is at or below this price, whatever the estimate says")] = None,
) -> None:
    """Add a watch for a recipient: keywords or a regex, optional price limits, saving thresholds, feeds or a target price."""
    from pydantic import ValidationError

    from deals.agents.watchlist import mask
    from deals.framework.settings import WatchRule
    from deals.memory.store import Store

    number = _phone_number(number)
    try:
        rule = WatchRule(
            name=name, keywords=keyword or [], regex=regex, max_price=max_price, min_saving_abs=min_saving,
            min_saving_rel=None if min_saving_pct is None else min_saving_pct / 100, feeds=feed or [], target_price=target_price,
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'watch'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise typer.BadParameter(problems, param_hint="the watch") from None
    with Store.open_default(settings_of(ctx)) as store:
        watch_id = store.add_watch(number, rule)
    console.print(plain(f"watch {watch_id} added for {mask(number)}: {rule.name or ' '.join(rule.keywords) or rule.regex}"))


@watch_app.command("list")
def watch_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (numbers masked)")] = False,
) -> None:
    """Recipients and their watches, from config.yaml and the store (numbers masked)."""
    from deals.agents.watchlist import Watchlist, mask
    from deals.memory.store import Store

    settings = settings_of(ctx)
    with Store.open_default(settings) as store:
        watchlist = Watchlist.load(settings, store)
    watches = watchlist.watches()
    if as_json:
        rows = [{"id": w.id, "source": w.source, "recipient": mask(w.recipient), **w.rule.model_dump(exclude_defaults=True)} for w in watches]
        people = [{"recipient": mask(p.number), "general": p.general, "daily_cap": p.daily_cap, "quiet_start": p.quiet_start,
                   "quiet_end": p.quiet_end, "sources": sorted(p.sources)} for p in watchlist.recipients.values()]  # fmt: skip
        sys.stdout.write(json.dumps({"recipients": people, "watches": rows}, indent=2) + "\n")
        return
    if not watchlist.recipients:
        console.print("no recipients: set messenger.to or add a watch with `deals watch add NUMBER --keyword WORD`")
        return
    table = Table(title="recipients")
    for column in ("recipient", "gets", "daily cap", "quiet hours", "from"):
        table.add_column(column)
    for p in watchlist.recipients.values():
        table.add_row(mask(p.number), "general opportunities" if p.general else f"{len(p.watches)} watch(es)",
                      "default" if p.daily_cap is None else str(p.daily_cap),
                      f"{p.quiet_start}-{p.quiet_end}" if p.quiet_start else "default", ", ".join(sorted(p.sources)))  # fmt: skip
    console.print(table)
    if watches:
        table = Table(title="watches")
        for column in ("id", "recipient", "matches", "max price", "min saving", "target", "feeds"):
            table.add_column(column)
        for w in watches:
            r = w.rule
            matches = " ".join([f"all of: {', '.join(r.keywords)}" if r.keywords else "", f"/{r.regex}/" if r.regex else ""]).strip()
            saving = " ".join(x for x in [f"${r.min_saving_abs:g}" if r.min_saving_abs is not None else "",
                                          f"{100 * r.min_saving_rel:g}%" if r.min_saving_rel is not None else ""] if x)  # fmt: skip
            table.add_row(str(w.id) if w.id is not None else "config", mask(w.recipient), plain(matches),
                          f"${r.max_price:g}" if r.max_price else "", saving, f"${r.target_price:g}" if r.target_price else "",
                          plain(" ".join(r.feeds)))  # fmt: skip
        console.print(table)


@watch_app.command("remove")
def watch_remove(ctx: typer.Context, watch_id: Annotated[int, typer.Argument(min=1, max=MAX_ROW_ID, help="the watch's id (from `deals watch list`)")]) -> None:
    """Remove a watch added with `deals watch add` or the dashboard (those in config.yaml are edited there)."""
    from deals.memory.store import Store

    with Store.open_default(settings_of(ctx)) as store:
        removed = store.remove_watch(watch_id)
    if not removed:
        raise typer.BadParameter(f"no stored watch {watch_id} (see `deals watch list`; watches in config.yaml are edited there)",
                                 param_hint="'WATCH_ID'")  # fmt: skip
    console.print(f"watch {watch_id} removed")


@watch_app.command("recipient")
def watch_recipient(
    ctx: typer.Context,
    number: Annotated[str, typer.Argument(help="the recipient's phone number (E.164)")],
    daily_cap: Annotated[Optional[int], typer.Option("--daily-cap", min=0, max=MAX_DAILY_CAP, help="alerts per local day (default messenger.daily_cap)")] = None,
    quiet: Annotated[Optional[str], typer.Option("--quiet", help="quiet hours HH:MM-HH:MM (default messenger's)")] = None,
) -> None:
    """Set a recipient's own daily cap and quiet hours (omitted ones fall back to the messenger's); adds a new number."""
    from deals.agents.watchlist import Watchlist, mask, parse_quiet
    from deals.memory.store import Store

    number = _phone_number(number)
    try:
        start, end = parse_quiet(quiet) if quiet else (None, None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--quiet'") from None
    settings = settings_of(ctx)
    with Store.open_default(settings) as store:
        known = number in Watchlist.load(settings, store).numbers
        store.set_recipient(number, daily_cap=daily_cap, quiet_start=start, quiet_end=end)
    console.print(f"{mask(number)}: daily cap {'default' if daily_cap is None else daily_cap}, "
                  f"quiet hours {f'{start}-{end}' if start else 'default'}")  # fmt: skip
    if not known:
        console.print(f"{mask(number)} is a new recipient: they get every general opportunity until a watch "
                      "(`deals watch add`) narrows what they get")  # fmt: skip


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 when the store is reachable and a daemon on this host heartbeats (for container health checks), else 1."""
    from deals.agents.daemon import health as check

    ok, message = check(settings_of(ctx))
    (console if ok else err).print(escape_markup(message))
    raise typer.Exit(0 if ok else 1)


store_app = typer.Typer(help="The memory store: its state, and moving it to PostgreSQL.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("status")
def store_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
) -> None:
    """The configured store: engine, where (password hidden), migrations, daemons and what they have claimed."""
    from deals.memory.migrations import MIGRATIONS
    from deals.memory.store import Store

    with Store.open_default(settings_of(ctx)) as store:
        applied = store.migrations()
        status = {
            "engine": store.engine,
            "store": str(store.path),
            "migrations": {"applied": len(applied), "known": len(MIGRATIONS), "last": applied[-1] if applied else None},
            "workers": [w.model_dump(mode="json") | {"host": w.hostname} for w in store.workers()],
            "claims": dict(Counter(c["kind"] for c in store.claims())),
        }
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    console.print(f"{status['engine']} store at {escape_markup(status['store'])}")
    console.print(f"migrations: {len(applied)} applied, last {status['migrations']['last']}")
    for worker in status["workers"]:
        console.print(
            f"daemon {worker['id']}: pid {worker['pid']} on {escape_markup(worker['host'])}, "
            f"heartbeat {worker['seconds_since_heartbeat']:.0f}s ago"
        )
    if not status["workers"]:
        console.print("no daemon is registered")
    claims = ", ".join(f"{count} {kind}" for kind, count in sorted(status["claims"].items())) or "none"
    console.print(f"claimed work: {claims}")


@store_app.command("migrate")
def store_migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="the target store: postgresql://user@host:5432/db (an empty database)")],
    source: Annotated[
        Optional[str], typer.Option("--from", help="the store to copy (default: a SQLite store.url, else deals.db under DEALS_HOME)")
    ] = None,
) -> None:
    """Copy the SQLite store into PostgreSQL, verified by row counts and checksums; run again to resume."""
    from deals.framework.dburl import is_postgresql, redact
    from deals.framework.settings import check_store_url
    from deals.memory.copy import migrate_store

    try:
        check_store_url(to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None
    if not is_postgresql(to):
        raise typer.BadParameter(f"{redact(to)!r}: the target is a PostgreSQL URL (postgresql://user@host:5432/deals)", param_hint="--to")
    configured = settings_of(ctx).store.url
    if source is None and configured and not is_postgresql(configured):
        source = configured  # the SQLite store the daemon uses, not a default file beside it

    def progress(table: str, copied: int, total: int) -> None:
        err.print(f"  {table}: {copied:,}/{total:,}", highlight=False)

    report = migrate_store(to, source=source, progress=progress)
    table = Table(title=f"copied {escape_markup(report.source)} -> {escape_markup(redact(report.target))}" + (" (resumed)" if report.resumed else ""))
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("copied now", justify="right")
    table.add_column("sha256")
    table.add_column("verified")
    for entry in report.tables:
        table.add_row(entry.name, f"{entry.rows:,}", f"{entry.copied_now:,}", entry.checksum[:16], "yes" if entry.verified else "NO")
    console.print(table)
    console.print(
        f"{report.rows:,} rows verified. Point the daemon at it: store.url (or DEALS_STORE__URL={escape_markup(redact(to))})"
    )


@app.command()
def history(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="how many rows, newest first")] = 20,
    entries: Annotated[bool, typer.Option("--entries", help="every feed entry read and what became of it, not only opportunities")] = False,
) -> None:
    """Recent opportunities: product, price, estimate, discount, link and alert status (`--entries`: every entry read)."""
    from deals.memory.store import Store
    from deals.memory.views import DealFilter

    with Store.open_default(settings_of(ctx)) as store:
        if entries:
            _print_entries(store.deal_rows(DealFilter(), limit=limit), as_json)
            return
        rows = store.history(limit)
    if as_json:
        sys.stdout.write(json.dumps([row.model_dump(mode="json") for row in rows], indent=2) + "\n")
        return
    if not rows:
        console.print("no opportunities yet (`deals history --entries` shows every feed entry read and why it was not one)")
        return
    table = Table(title=f"last {len(rows)} opportunities")
    table.add_column("when (UTC)")
    table.add_column("product")
    table.add_column("price", justify="right")
    table.add_column("estimate (interval)", justify="right")
    table.add_column("members")
    table.add_column("discount", justify="right")
    table.add_column("alerts")
    table.add_column("SMS", justify="right")
    table.add_column("link", overflow="fold")
    for row in rows:
        table.add_row(
            f"{row.created_at:%Y-%m-%d %H:%M}",
            plain(row.description[:60]),
            f"${row.price:,.2f}",
            f"${row.estimate:,.2f}" + (f" (${row.low:,.0f}-${row.high:,.0f})" if row.low is not None and row.high is not None else ""),
            ", ".join(f"{name} ${value:,.0f}" for name, value in row.parts.items()),
            f"${row.discount:,.2f} ({row.discount_rel:.0%})",
            plain(row.alert_status),
            str(row.sms_sent) + (f" ({row.send_attempts} tries)" if row.send_attempts > row.sms_sent else ""),
            plain(row.url),
        )
    console.print(table)


def _print_entries(rows: list[DealRow], as_json: bool) -> None:
    """Feed entries with their decision: the deal's price, the estimate and the price it alerts below, or why not."""
    from deals.framework.urls import redact_url, redact_urls_in

    # feed URLs may carry keys: hidden as the dashboard hides them
    rows = [
        row.model_copy(update={"feed_url": redact_url(row.feed_url), "pricing_error": row.pricing_error and redact_urls_in(row.pricing_error)})
        for row in rows
    ]
    if as_json:
        sys.stdout.write(json.dumps([row.model_dump(mode="json") for row in rows], indent=2) + "\n")
        return
    if not rows:
        console.print("no feed entries read yet")
        return
    table = Table(title=f"last {len(rows)} feed entries")
    table.add_column("seen (UTC)")
    table.add_column("title")
    table.add_column("price", justify="right")
    table.add_column("estimate (interval)", justify="right")
    table.add_column("alerts below", justify="right")
    table.add_column("decision")
    table.add_column("why")
    for row in rows:
        interval = f" (${row.low:,.0f}-${row.high:,.0f})" if row.low is not None and row.high is not None else ""
        table.add_row(
            f"{row.seen_at:%Y-%m-%d %H:%M}",
            plain(row.title[:70]),
            "-" if row.price is None else f"${row.price:,.2f}",
            "-" if row.estimate is None else f"${row.estimate:,.2f}{interval}",
            "-" if row.estimate is None else (f"${row.alert_below:,.2f}" if row.alert_below else "never"),
            plain(row.decision or "waiting"),
            plain((row.reason or row.pricing_error or "")[:80]),
        )
    console.print(table)


@app.command("notify-test")
def notify_test(ctx: typer.Context) -> None:
    """Send one test message to every configured recipient (Twilio SMS, or the console without it)."""
    from deals.agents.messenger import Messenger
    from deals.agents.notifiers import CONSOLE_RECIPIENT, missing_sms_config
    from deals.agents.watchlist import mask
    from deals.memory.store import Store

    settings = settings_of(ctx)
    with Store.open_default(settings) as store:
        messenger = Messenger(settings, store)
        try:
            ids = messenger.send_test()
            for recipient, sid in zip(messenger.recipients, ids, strict=True):
                notifier = messenger.notifier_for(recipient)
                where = getattr(notifier, "base_url", None)
                via = notifier.name + (f" ({where})" if where else "")
                console.print(plain(f"test message sent via {via} to {recipient}: {sid}"))
            if messenger.recipients == [CONSOLE_RECIPIENT]:
                missing = missing_sms_config(settings.messenger, os.environ)
                people = [mask(n) for n in messenger.watchlist.numbers]
                console.print(
                    plain(
                        ("SMS is not set up (missing: " + ", ".join(missing) + "): " if missing else "nobody to text (no messenger.to, recipients or watch): ")
                        + "nothing was texted, alerts are printed"
                        + (f"; {len(people)} recipient(s) would get texts: {', '.join(people)}" if people else "")
                    )
                )
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


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]); the exit status (see the module docstring)."""
    from deals.memory.lock import StoreLockedError

    try:
        result = app(args=argv, prog_name="deals", standalone_mode=False)
    except _USAGE_ERRORS as exc:  # bad options/arguments, --help on no arguments: typer's own classes
        exc.show()
        return int(getattr(exc, "exit_code", 2))
    except (ConfigError, StoreLockedError) as exc:
        label = "configuration error" if isinstance(exc, ConfigError) else "error"
        err.print(f"[red]{label}:[/red] {escape_markup(exc)}")
        return 2
    except DealsError as exc:
        err.print(f"[red]error:[/red] {escape_markup(exc)}")
        return 1
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # Without standalone mode typer *returns* the code of a typer.Exit (and 130 for Ctrl-C).
    return result if isinstance(result, int) else 0


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of usage errors: typer's (it vendors click) and click's, if installed."""
    classes: list[type[BaseException]] = []
    typer_base = getattr(typer, "TyperException", None)
    if isinstance(typer_base, type):
        classes.append(typer_base)
    try:
        import click

        classes.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer without click
        pass
    return tuple(classes)


_USAGE_ERRORS = _usage_errors()


def main() -> None:
    """Console-script entry point: exits with the status of `run_cli`."""
    raise SystemExit(run_cli())


if __name__ == "__main__":
    main()
