"""The tools' verbs of the ``disputes`` command: ``demo``, ``report``, ``plan``, ``top`` and ``bench``.

The product's CLI (`disputes.cli`) does not import the tools: it finds these
commands through the ``disputes.commands`` entry points of ``pyproject.toml``
and loads one only when it is invoked. What a command runs is imported inside
it, so that ``disputes --help`` does not load matplotlib or the bench harness
(start-up time).
"""
from __future__ import annotations

import logging
import os

import click

from disputes.cli import app_from_env as _app


@click.command(epilog="""\b
Examples:
  disputes demo
  disputes demo --tickets 50 --merchant-shares direct_refund=40,silent=60
  disputes demo --keep /tmp/demo.db
  OP_DATABASE_URL=sqlite:////tmp/demo.db OP_POLICY=/tmp/demo.db.policy.toml disputes ledger

Exit status 1 when a ticket is not final at the end or an invariant of the books fails.""")
@click.option("--tickets", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many simulated complaints.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulation.")
@click.option("--merchant-shares", "merchant_shares", metavar="ANSWER=SHARE,...",
              help="How the merchants answer complaints in negotiation, as relative shares of direct_refund, "
                   "negotiated_reject, intercept_48h, platform_judgment and silent (no answer); answers left out "
                   "get 0. Default: direct_refund=20,negotiated_reject=15,intercept_48h=15,platform_judgment=30,"
                   "silent=20.")
@click.option("--keep", type=click.Path(dir_okay=False, writable=True), default=None, metavar="PATH",
              help="Keep the demo's SQLite database at PATH (a new file) instead of deleting it, and its policy "
                   "(deadlines of seconds, a small fee budget) at PATH.policy.toml, so that "
                   "`OP_DATABASE_URL=sqlite:///PATH OP_POLICY=PATH.policy.toml disputes ledger` (or report, "
                   "ticket show) can be run afterwards.")
def demo(tickets: int, seed: int, merchant_shares: str | None, keep: str | None) -> None:
    """Run the embedded system end to end with simulated upstream, parties and agents; then a report.

    Merchants answer with the four negotiation options (or stay silent) by the given shares, some
    lack the money for refunds (vouchers, rejected vouchers, platform advances and debt recovery),
    a supervisor approves payments above the threshold, buyers confirm, withdraw, appeal and answer
    surveys. On a terminal a progress bar shows it; piped, a line every few seconds. At the end, one
    table per question: the report of `disputes report` (with the answers dealt to the merchants
    beside the negotiation's outcomes), what the simulation did against what the system recorded,
    every complaint sent accounted for, and the money as `disputes ledger` checks it."""
    from rich.console import Console

    from tools.demo import run_demo  # start-up time
    from tools.simulation import parse_shares  # start-up time
    try:
        shares = None if merchant_shares is None else parse_shares(merchant_shares)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--merchant-shares'") from error
    if keep is not None and (os.path.exists(keep) or not os.path.isdir(os.path.dirname(os.path.abspath(keep)))):
        raise click.BadParameter(f"{keep} already exists or its folder does not: the demo writes a new database "
                                 "file", param_hint="--keep")
    logging.getLogger().setLevel(logging.WARNING)
    result = run_demo(tickets=tickets, seed=seed, console=Console(), merchant_shares=shares, keep=keep)
    problems = []
    if not result.all_terminal:
        problems.append("some tickets did not reach a terminal state (see the report above)")
    if not result.books_ok:
        problems.append(f"{len(result.problems)} invariant(s) of the books failed (see the ledger above)")
    if problems:
        raise click.ClickException("; ".join(problems))


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "png", "html"]), default="table",
              show_default=True, help="png: the charts; html: one self-contained page of charts and tables.")
@click.option("--since", default=None, help="ISO date or time: only tickets created from then.")
@click.option("--until", default=None, help="ISO date or time: only tickets created before then.")
@click.option("--output", default=None,
              help="File to write (png: report.png, html: report.html; table and json print when not given). "
                   "png into a directory (DIR/): one file per chart.")
def report(fmt: str, since: str | None, until: str | None, output: str | None) -> None:
    """The analysis of SPEC §1: types, rounds, liability, options, time, SLAs, agents, money."""
    from rich.console import Console

    from tools.report import build_report, write_report  # start-up time
    app = _app()
    with app.db.connection_context():
        try:
            data = build_report(since=since, until=until, policy=app.policy)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    for path in write_report(data, fmt, output, Console()):
        click.echo(f"wrote {path}", err=True)


@click.command()
@click.option("--forecast", "forecast_file", type=click.File("r", encoding="utf-8-sig"), default=None, metavar="FILE",
              help="CSV 'hour,complaints' (hour: 0-23 of the planned day, or an ISO time with zone). "
                   "Default: the mean of each hour over the recent days with complaints (last 4 weeks).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "png"]), default="table", show_default=True)
@click.option("--output", default=None, help="File to write (png: plan.png by default; json and table print).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The day planned (default: tomorrow in the policy calendar's zone).")
@click.option("--probability", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True,
              help="Share of tickets that must be claimed within the target wait.")
@click.option("--wait", "wait_minutes", type=click.FloatRange(min=1), default=None,
              help="Target wait before an agent claims a ticket, in minutes (default: the policy's accept promise).")
def plan(forecast_file, fmt: str, output: str | None, day, probability: float, wait_minutes: float | None) -> None:
    """Capacity planning: the agents each stage needs, hour by hour, to keep the SLA promises for
    a forecast of arrivals, from the handling times and routes measured in the database."""
    from datetime import timedelta
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from rich.console import Console

    from planning.forecast import ForecastError  # start-up time
    from planning.staffing import PlanRefused  # start-up time
    from planning.tomorrow import plan_for  # start-up time
    from tools.plan import render_json, render_table, write_png  # start-up time
    app = _app()
    text = forecast_file.read() if forecast_file is not None else None
    name = getattr(forecast_file, "name", "forecast")
    with app.db.connection_context():
        try:
            made = plan_for(app.policy, app.clock(), forecast_text=text, forecast_name=name,
                            day=day.date() if day else None, probability=probability,
                            target_wait=timedelta(minutes=wait_minutes) if wait_minutes else None)
        except ForecastError as error:
            raise click.ClickException("the forecast cannot be read:\n  " + "\n  ".join(error.problems)) from error
        except PlanRefused as refused:
            raise click.ClickException("too little data to plan from:\n  " + "\n  ".join(refused.reasons)) from refused
    zone = ZoneInfo(app.policy.calendar.zone)
    if fmt == "json":
        text_out = render_json(made)
        if output:
            Path(output).write_text(text_out, encoding="utf-8")
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text_out)
    elif fmt == "png":
        click.echo(f"wrote {write_png(made, Path(output or 'plan.png'), zone)}", err=True)
    else:
        render_table(made, Console(width=max(Console().width, 120)), zone)


@click.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60),
              help="Seconds between refreshes.")
def top(once: bool, interval: float) -> None:
    """Live backlog, oldest waiting and throughput per stage, refreshed until Ctrl-C."""
    from rich.console import Console

    from tools.top import run_top  # start-up time
    run_top(_app(), Console(), once=once, interval=interval)


@click.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="Small sizes, for a smoke check (targets not asserted).")
@click.option("--only", default=None, help="Comma-separated: pipeline, scheduler, intake, api, scale.")
@click.option("--json", "json_path", default="bench.json", show_default=True, help="Where the results are written.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, only: str | None, json_path: str) -> None:
    """The benchmarks: medians beside baselines measured in the same run, and their targets.

    They run on loopback servers (OP_BENCH_PG, OP_BENCH_REDIS, OP_BENCH_AMQP; defaults: the local
    PostgreSQL as root, Redis, RabbitMQ as guest), each in a database and Redis db of its own.
    `disputes bench chaos` is the chaos soak (not part of this default run)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from tools.bench.core import BenchError  # start-up time
    from tools.bench.suite import run_benchmarks  # start-up time
    logging.getLogger().setLevel(logging.WARNING)
    console = Console(width=max(Console().width, 150))
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    try:
        data = run_benchmarks(quick=quick, only=names, json_path=json_path, console=console)
    except BenchError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"results written to {json_path}", err=True)
    if data["failures"]:
        raise click.ClickException(f"benchmarks failed: {', '.join(data['failures'])}")  # type: ignore[arg-type]


@bench.command("chaos")
@click.option("--seed", default=1, show_default=True, type=int, help="Seeds the workload and the faults.")
@click.option("--tickets", default=2000, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--json", "json_path", default=None, help="Also write the results as JSON to this file.")
@click.option("--network", is_flag=True,
              help="Run the system as several hosts (network namespaces: the servers in one, the API, the "
                   "intake, the scheduler and each stage queue's workers in others) and add the network's "
                   "faults: latency, loss, reordering, partitions both ways and one way. Needs root and iproute2.")
def bench_chaos(seed: int, tickets: int, json_path: str | None, network: bool) -> None:
    """The chaos soak: the same seeded workload fault-free, then while workers, the scheduler, the
    intake and the API are SIGKILLed and Redis and PostgreSQL restarted (private servers and a
    private RabbitMQ vhost); then every invariant. Exit 1 when one fails. A soak killed outright
    leaves its servers and processes behind; the next one cleans them up first."""
    from rich.console import Console

    from tools.bench.chaos import run_chaos  # start-up time
    from tools.bench.core import BenchError  # start-up time
    logging.getLogger().setLevel(logging.WARNING)
    console = Console(width=max(Console().width, 150))
    try:
        data = run_chaos(seed=seed, tickets=tickets, json_path=json_path, console=console, network=network)
    except BenchError as error:
        raise click.ClickException(str(error)) from error
    if json_path:
        click.echo(f"results written to {json_path}", err=True)
    if not data["ok"]:
        raise click.ClickException("the chaos soak found an invariant broken (see above)")
