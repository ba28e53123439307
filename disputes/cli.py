"""The ``disputes`` command (SPEC §7): one entry point, short verbs.

Every command builds its app through `disputes.wiring.build_app`, so the
environment (``OP_DATABASE_URL``, ``OP_BROKER_URL``, ``OP_INTAKE_URL``,
``OP_POLICY``) means the same thing everywhere. A bad policy file stops the
command with every problem listed, never a traceback.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Callable, cast

import click

from disputes.policy import PolicyError, dump_policy, load_policy
from disputes.settings import settings_from_env
from disputes.wiring import App, build_app


def _app() -> App:
    """The app from the environment, with the schema in place."""
    try:
        app = build_app(settings_from_env())
    except PolicyError as error:
        _fail_policy(error)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    from models import init_schema
    with app.db.connection_context():
        init_schema()
    return app


def _fail_policy(error: PolicyError) -> None:
    click.echo("The policy file does not validate:", err=True)
    for problem in error.problems:
        click.echo(f"  - {problem}", err=True)
    sys.exit(1)


def _stop_flag(*, leave_main_loop: bool = False) -> Callable[[], bool]:
    """A flag set by SIGTERM/SIGINT so long-running commands finish their current work. With
    `leave_main_loop`, the signal also ends the main thread's blocking loop (the HTTP server), whose
    `finally` then stops the other parts in order."""
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        if leave_main_loop:
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop.is_set


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True,
              help="Standard error's log lines: JSON lines, plain text, or auto (JSON unless a terminal).")
def main(verbose: bool, log_format: str) -> None:
    """Dispute-handling pipeline: negotiation, four customer-service stages, timers and events."""
    from disputes.logs import LogFormat, setup_logging
    setup_logging(logging.DEBUG if verbose else logging.INFO, cast(LogFormat, log_format), sys.stderr)


def _merchant_shares(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float] | None:
    if value is None:
        return None
    from disputes.simulation import parse_shares
    try:
        return parse_shares(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@main.command(epilog="""\b
Examples:
  disputes demo
  disputes demo --tickets 50 --merchant-shares direct_refund=40,silent=60
  disputes demo --keep /tmp/demo.db
  OP_DATABASE_URL=sqlite:////tmp/demo.db OP_POLICY=/tmp/demo.db.policy.toml disputes ledger

Exit status 1 when a ticket is not final at the end or an invariant of the books fails.""")
@click.option("--tickets", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many simulated complaints.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulation.")
@click.option("--merchant-shares", "merchant_shares", metavar="ANSWER=SHARE,...", callback=_merchant_shares,
              help="How the merchants answer complaints in negotiation, as relative shares of direct_refund, "
                   "negotiated_reject, intercept_48h, platform_judgment and silent (no answer); answers left out "
                   "get 0. Default: direct_refund=20,negotiated_reject=15,intercept_48h=15,platform_judgment=30,"
                   "silent=20.")
@click.option("--keep", type=click.Path(dir_okay=False, writable=True), default=None, metavar="PATH",
              help="Keep the demo's SQLite database at PATH (a new file) instead of deleting it, and its policy "
                   "(deadlines of seconds, a small fee budget) at PATH.policy.toml, so that "
                   "`OP_DATABASE_URL=sqlite:///PATH OP_POLICY=PATH.policy.toml disputes ledger` (or report, "
                   "ticket show) can be run afterwards.")
def demo(tickets: int, seed: int, merchant_shares: dict[str, float] | None, keep: str | None) -> None:
    """Run the embedded system end to end with simulated upstream, parties and agents; then a report.

    Merchants answer with the four negotiation options (or stay silent) by the given shares, some
    lack the money for refunds (vouchers, rejected vouchers, platform advances and debt recovery),
    a supervisor approves payments above the threshold, buyers confirm, withdraw, appeal and answer
    surveys. At the end: the report, the demo's summary (per merchant answer, how many tickets the
    negotiation settled without an agent; money moved by kind) and the books of `disputes ledger`."""
    import os

    from rich.console import Console

    from disputes.demo import run_demo
    if keep is not None and (os.path.exists(keep) or not os.path.isdir(os.path.dirname(os.path.abspath(keep)))):
        raise click.BadParameter(f"{keep} already exists or its folder does not: the demo writes a new database "
                                 "file", param_hint="--keep")
    logging.getLogger().setLevel(logging.WARNING)
    result = run_demo(tickets=tickets, seed=seed, console=Console(), merchant_shares=merchant_shares, keep=keep)
    problems = []
    if not result.all_terminal:
        problems.append("some tickets did not reach a terminal state (see the report above)")
    if not result.books_ok:
        problems.append(f"{len(result.problems)} invariant(s) of the books failed (see the ledger above)")
    if problems:
        raise click.ClickException("; ".join(problems))


@main.command()
def init() -> None:
    """Create or migrate the schema."""
    app = _app()
    from models.schema import SchemaVersion
    from workers.intake import declare_topology
    with app.db.connection_context():
        click.echo(f"schema at version {SchemaVersion.get().version} on {app.settings.database_url}")
    if not app.settings.intake_url.startswith("memory"):
        with app.kombu_connection() as connection:
            declare_topology(connection)
        click.echo(f"declared op.intake and its queue on {app.settings.intake_url.split('@')[-1]}")


@main.command()
def run() -> None:
    """Every stage, the scheduler, the intake consumer and the API in one process."""
    from dramatiq import Worker

    import workers
    from desk.server import serve
    from scheduler.loop import Scheduler
    from workers.intake import consume
    app = _app()
    workers.declare_all(app)
    should_stop = _stop_flag(leave_main_loop=True)
    worker = Worker(app.broker, worker_threads=8)
    worker.start()
    threads = [threading.Thread(target=Scheduler(app).run, args=(should_stop,), name="scheduler", daemon=True),
               threading.Thread(target=consume, args=(app,), kwargs={"should_stop": should_stop}, name="intake",
                                daemon=True)]
    for thread in threads:
        thread.start()
    click.echo(f"disputes running: API on http://{app.settings.api_host}:{app.settings.api_port}/", err=True)
    try:
        serve(app, app.settings.api_host, app.settings.api_port)
    finally:
        for thread in threads:
            thread.join(timeout=5)  # the scheduler and the intake see the stop flag and finish their beat
        worker.stop()  # lets each worker thread finish its message
        click.echo("disputes stopped", err=True)


@main.group(invoke_without_command=True)
@click.pass_context
def intake(ctx: click.Context) -> None:
    """The kombu intake consumer of op.intake (or: rejected, replay)."""
    if ctx.invoked_subcommand is None:
        from workers.intake import consume
        consume(_app(), should_stop=_stop_flag())


@intake.command("rejected")
@click.option("--all", "show_all", is_flag=True, help="Include messages already replayed.")
def intake_rejected(show_all: bool) -> None:
    """The rejected intake messages with their reasons."""
    from models.intake import RejectedMessage
    app = _app()
    with app.db.connection_context():
        query = RejectedMessage.select().order_by(RejectedMessage.id)
        if not show_all:
            query = query.where(RejectedMessage.status == "rejected")
        rows = list(query)
        for row in rows:
            body = bytes(row.body)
            preview = body[:120].decode("utf-8", "replace").replace("\n", " ")
            click.echo(f"{row.id}\t{row.received_at:%Y-%m-%d %H:%M:%S}\t{row.routing_key}\t{row.message_id or '-'}"
                       f"\t{row.status}\t{json.dumps(row.reasons, ensure_ascii=False)}\t{preview}")
        if not rows:
            click.echo("no rejected messages", err=True)


@intake.command("replay")
@click.argument("rejected_id", type=int)
def intake_replay(rejected_id: int) -> None:
    """Re-drive one rejected message (after fixing its cause)."""
    import workers
    from workers.intake import Intake
    app = _app()
    workers.declare_all(app)
    with app.db.connection_context():
        try:
            admission = Intake(app).replay(rejected_id)
        except LookupError as error:
            raise click.ClickException(str(error)) from error
    if admission.status == "rejected":
        click.echo(f"still rejected: {json.dumps(admission.reasons, ensure_ascii=False)}", err=True)
        sys.exit(1)
    click.echo(f"{admission.status}" + (f": ticket {admission.ticket_id}" if admission.ticket_id else ""))


@main.command("scheduler")
def scheduler_command() -> None:
    """Timers, the outbox relay and the reconciler (several may run against PostgreSQL)."""
    from scheduler.loop import Scheduler
    Scheduler(_app()).run(_stop_flag())


@main.command()
@click.option("--host", default=None, help="Default: OP_API_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: OP_API_PORT or 8080.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar="OP_API_WORKERS",
              help="API processes on the port (one per core; needs a shared broker). Env: OP_API_WORKERS.")
def api(host: str | None, port: int | None, workers: int) -> None:
    """The HTTP desk and API."""
    from desk.server import desk_in_worker, serve, serve_processes
    app = _app()
    host, port = host or app.settings.api_host, port or app.settings.api_port
    if workers > 1:
        if app.settings.broker_url.startswith("memory"):
            raise click.ClickException("several API processes need a shared broker: "
                                       "set OP_BROKER_URL (redis:// or amqp://)")
        if hasattr(app.db, "close_all"):  # pooled PostgreSQL: no connection may cross the fork
            app.db.close_all()
        app.db.close()
        serve_processes(desk_in_worker(app.settings), host, port, workers=workers)
        return
    _stop_flag(leave_main_loop=True)
    serve(app, host, port)


@main.group()
def agents() -> None:
    """Agents of the four stage pools and their tokens."""


@agents.command("add")
@click.option("--name", required=True)
@click.option("--stage", required=True, type=click.IntRange(1, 4))
@click.option("--skills", default="", help="Comma-separated skills, e.g. apparel,electronics.")
@click.option("--capacity", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--supervisor", is_flag=True)
def agents_add(name: str, stage: int, skills: str, capacity: int, supervisor: bool) -> None:
    """Create an agent; prints its token alone on standard output."""
    from disputes.agents import AgentExists, add_agent
    app = _app()
    with app.db.connection_context():
        try:
            token = add_agent(name, stage, skills=[s for s in skills.split(",") if s], capacity=capacity,
                              supervisor=supervisor)
        except AgentExists as error:
            raise click.ClickException(str(error)) from error
    click.echo(token)


@agents.command("list")
def agents_list() -> None:
    """The agents (never their tokens)."""
    from disputes.agents import list_agents
    app = _app()
    with app.db.connection_context():
        for a in list_agents():
            status = "revoked" if a.revoked_at else "active"
            click.echo(f"{a.name}\tstage{a.stage}\tcapacity={a.capacity}\tskills={','.join(a.skills or [])}"
                       f"\t{'supervisor' if a.supervisor else 'agent'}\t{status}")


@agents.command("revoke")
@click.argument("name")
def agents_revoke(name: str) -> None:
    """Withdraw an agent's token."""
    from disputes.agents import revoke_agent
    app = _app()
    with app.db.connection_context():
        if not revoke_agent(name):
            raise click.ClickException(f"no active agent named '{name}'")
    click.echo(f"revoked {name}", err=True)


@main.command("ledger")
def ledger_command() -> None:
    """Balances, debts, the month's fee spend; checks every invariant of the books (exit 1 if one fails)."""
    from rich.console import Console

    from disputes.books import print_books
    app = _app()
    with app.db.connection_context():
        if not print_books(app.policy, app.clock(), Console()):
            sys.exit(1)


@main.group()
def policy() -> None:
    """The policy file."""


@policy.command("show")
def policy_show() -> None:
    """The effective policy as TOML."""
    try:
        click.echo(dump_policy(load_policy(settings_from_env().policy_path)), nl=False)
    except PolicyError as error:
        _fail_policy(error)


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_check(file: str) -> None:
    """Validate a policy file: exit 0 when valid, else every problem listed and exit 1."""
    try:
        load_policy(file)
    except PolicyError as error:
        _fail_policy(error)
    click.echo(f"{file}: valid")


@main.group()
def ticket() -> None:
    """One ticket."""


@ticket.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The ticket and its history as JSON.")
def ticket_show(ref: str, as_json: bool) -> None:
    """One ticket with its history (REF: id or source:external_ref)."""
    from disputes.ticket_view import find_ticket, show_ticket
    app = _app()
    with app.db.connection_context():
        found = find_ticket(ref)
        if found is None:
            raise click.ClickException(f"no ticket '{ref}'")
        show_ticket(found, app, as_json=as_json)


@main.command()
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

    from disputes.report import build_report, write_report
    app = _app()
    with app.db.connection_context():
        try:
            data = build_report(since=since, until=until, policy=app.policy)
        except ValueError as error:
            raise click.ClickException(str(error)) from error
    for path in write_report(data, fmt, output, Console()):
        click.echo(f"wrote {path}", err=True)


@main.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60),
              help="Seconds between refreshes.")
def top(once: bool, interval: float) -> None:
    """Live backlog, oldest waiting and throughput per stage, refreshed until Ctrl-C."""
    from rich.console import Console

    from disputes.top import run_top
    run_top(_app(), Console(), once=once, interval=interval)


@main.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="Small sizes, for a smoke check (targets not asserted).")
@click.option("--only", default=None, help="Comma-separated: pipeline, scheduler, intake, api, scale.")
@click.option("--json", "json_path", default="bench.json", show_default=True, help="Where the results are written.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, only: str | None, json_path: str) -> None:
    """The benchmarks of issue 8: medians beside baselines measured in the same run, and their targets.

    They run on loopback servers (OP_BENCH_PG, OP_BENCH_REDIS, OP_BENCH_AMQP; defaults: the local
    PostgreSQL as root, Redis, RabbitMQ as guest), each in a database and Redis db of its own.
    `disputes bench chaos` is the chaos soak (not part of this default run)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console

    from disputes.bench import BenchError, run_benchmarks
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
def bench_chaos(seed: int, tickets: int, json_path: str | None) -> None:
    """The chaos soak: the same seeded workload fault-free, then while workers, the scheduler, the
    intake and the API are SIGKILLed and Redis and PostgreSQL restarted (private servers and a
    private RabbitMQ vhost); then every invariant. Exit 1 when one fails."""
    from rich.console import Console

    from disputes.bench import BenchError
    from disputes.bench.chaos import run_chaos
    logging.getLogger().setLevel(logging.WARNING)
    console = Console(width=max(Console().width, 150))
    try:
        data = run_chaos(seed=seed, tickets=tickets, json_path=json_path, console=console)
    except BenchError as error:
        raise click.ClickException(str(error)) from error
    if json_path:
        click.echo(f"results written to {json_path}", err=True)
    if not data["ok"]:
        raise click.ClickException("the chaos soak found an invariant broken (see above)")


if __name__ == "__main__":  # pragma: no cover
    main()
