"""The ``disputes`` command (SPEC §7): one entry point, short verbs.

Every command builds its app through `disputes.wiring.build_app`, so the
environment (``OP_DATABASE_URL``, ``OP_BROKER_URL``, ``OP_INTAKE_URL``,
``OP_POLICY``) means the same thing everywhere. A bad policy file stops the
command with every problem listed, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import BinaryIO, Callable, cast

import click

from importlib.metadata import entry_points

from disputes.cli.books import print_books
from disputes.cli.ticket_show import find_ticket, show_ticket
from disputes.logs import LogFormat, setup_logging
from disputes.settings import database_label, settings_from_env
from disputes.wiring import App, build_app
from models import init_schema
from models.agent import AgentExists, add_agent, list_agents, revoke_agent
from models.intake import HeldMessage, RejectedMessage
from models.schema import SchemaVersion
from policy import PolicyError, dump_policy, load_policy
from policy.calendar import local_time

# The commands that run a process (run, api, scheduler, intake) import it inside their own
# function, so that `disputes --help` or `disputes agents add` does not load Flask, dramatiq's
# workers, kombu's consumer or the scheduler (start-up time): with the tools' verbs in
# `tools.commands`, the project's only imports inside functions.

#: The entry-point group through which the tools (`tools.commands`) add their verbs.
TOOL_COMMANDS = "disputes.commands"

#: The environment `disputes.settings.settings_from_env` reads, as the commands' help names it.
ENVIRONMENT: dict[str, str] = {
    "OP_DATABASE_URL": "the database: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                       "(default sqlite:///disputes.db)",
    "OP_BROKER_URL": "dramatiq's broker of the stage queues: redis://… or amqp://… "
                     "(default memory://, within the process)",
    "OP_INTAKE_URL": "the broker of op.intake and op.events, e.g. amqp://guest:guest@HOST:5672// "
                     "(default memory://, within the process)",
    "OP_POLICY": "the policy file (default: the packaged policy; `disputes policy show` prints it)",
    "OP_API_HOST": "the API's address (default 127.0.0.1)",
    "OP_API_PORT": "the API's port (default 8080)",
    "OP_REDRIVE_AFTER": "seconds after which the reconciler re-sends a dispatch not done (default 30)",
    "OP_UNSENT_GRACE": "seconds after which the relay sends a dispatch whose send failed (default 2)",
    "OP_NAMESPACE": "this deployment's prefix on brokers shared with another: NS.disputes.intake, and the "
                    "stage queues' Redis keys NS.dramatiq:… (default none: disputes.intake, dramatiq:…)",
    "OP_PG_PREPARED": "off: no statement prepared on the PostgreSQL server (behind PgBouncer's transaction "
                      "pooling; default on)",
}


class ReadsEnvironment(click.Command):
    """A command whose help ends with the environment variables it reads, and what each means."""

    def __init__(self, *args: object, environment: tuple[str, ...] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.environment = environment

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Environment"):
            formatter.write_dl([(name, ENVIRONMENT[name]) for name in self.environment])
        super().format_epilog(ctx, formatter)


class DisputesGroup(click.Group):
    """The product's commands, and the tools' verbs found by entry point, each loaded only when invoked."""

    def _tools(self) -> dict[str, object]:
        return {point.name: point for point in entry_points(group=TOOL_COMMANDS) if point.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*self.commands, *self._tools()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        point = self._tools().get(cmd_name)
        return point.load() if point is not None else None  # type: ignore[attr-defined]


def app_from_env(*, schema: bool = True) -> App:
    """The app from the environment, with the schema in place (unless the command needs no database)."""
    try:
        app = build_app(settings_from_env())
    except PolicyError as error:
        _fail_policy(error)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if schema:
        with app.db.connection_context():
            init_schema()
    return app


def declare_workers(app: App) -> None:
    """Every queue's actor on the app's broker; a policy whose mail the environment cannot serve (the
    password's variable unset: `workers.delivery`) stops the command with every problem listed."""
    import workers  # start-up time
    try:
        workers.declare_all(app)
    except PolicyError as error:
        _fail_policy(error)


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


@click.group(cls=DisputesGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True,
              help="Standard error's log lines: JSON lines, plain text, or auto (JSON unless a terminal).")
def main(verbose: bool, log_format: str) -> None:
    """Dispute-handling pipeline: negotiation, four customer-service stages, timers and events."""
    setup_logging(logging.DEBUG if verbose else logging.INFO, cast(LogFormat, log_format), sys.stderr)


@main.command(cls=ReadsEnvironment, environment=("OP_DATABASE_URL", "OP_INTAKE_URL", "OP_NAMESPACE", "OP_POLICY"))
def init() -> None:
    """Create or migrate the schema; with a broker in OP_INTAKE_URL, declare op.intake and its queue,
    and warn when that queue is already consumed for another database."""
    app = app_from_env()
    from workers import intake as consumer  # start-up time
    settings = app.settings
    with app.db.connection_context():
        click.echo(f"schema at version {SchemaVersion.get().version} on {database_label(settings.database_url)}")
    if settings.intake_url.startswith("memory"):
        return
    broker = settings.intake_url.split("@")[-1]
    with app.kombu_connection() as connection:
        queue = consumer.declare_topology(connection, consumer.intake_queue_named(settings.intake_queue))
        consumers = consumer.count_consumers(connection, queue, settings.database_url)
    click.echo(f"declared op.intake and its queue {queue.name} on {broker}")
    if consumers is None:
        click.echo(f"note: {broker} cannot say who consumes {queue.name}; make sure no other deployment "
                   f"reads it (its own database, or OP_NAMESPACE)", err=True)
    elif consumers.others:
        click.echo(f"warning: {queue.name} on {broker} already has {consumers.others} consumer(s) not registered "
                   f"for this database ({database_label(settings.database_url)}): another deployment's intake "
                   f"(or one of an earlier release) takes messages this one should get. Give each deployment its "
                   f"own vhost, or its own OP_NAMESPACE.", err=True)
    elif consumers.ours:
        click.echo(f"{consumers.ours} intake consumer(s) of this database read {queue.name}")
    if settings.namespace and settings.broker_url.startswith("amqp"):
        click.echo("note: on RabbitMQ the stage queues keep their names (stage1…, the Procfile's --queues) "
                   "whatever OP_NAMESPACE says: give this deployment its own vhost in OP_BROKER_URL", err=True)


@main.command()
@click.argument("routing_key")
@click.argument("file", type=click.File("rb"), default="-", required=False)
@click.option("--message-id", help="This message id instead of a fresh one (a resend under one id applies once).")
@click.option("--source", help="Sign as this source when the body names none (a follow-up by ticket_id).")
@click.option("--no-check", is_flag=True, help="Send a body the intake's schema refuses too (to see a rejection).")
def publish(routing_key: str, file: BinaryIO, message_id: str | None, source: str | None, no_check: bool) -> None:
    """Publish one intake message to op.intake as an upstream system would: JSON from FILE or
    standard input, a fresh message id, signed when the policy (OP_POLICY) holds its source's
    secret. Prints the message id. Reads OP_INTAKE_URL (the broker) and OP_POLICY."""
    from disputes.cli.publish import NotPublished, publish_intake  # start-up time
    raw = file.read().strip()
    if not raw:
        raise click.ClickException("no body: give a JSON file, or pipe one to standard input")
    app = app_from_env(schema=False)
    try:
        sent = publish_intake(app, routing_key, raw, message_id=message_id, source=source, check=not no_check)
    except NotPublished as refused:
        raise click.ClickException(str(refused)) from refused
    except (OSError, ConnectionError) as error:
        raise click.ClickException(f"cannot reach the broker at {app.settings.intake_url.split('@')[-1]}: "
                                   f"{error}") from error
    if sent.signed_for:
        click.echo(f"signed for source {sent.signed_for}", err=True)
    click.echo(sent.message_id)


@main.command(cls=ReadsEnvironment, environment=tuple(ENVIRONMENT))
def run() -> None:
    """Every stage, the scheduler, the intake consumer and the API in one process: the embedded
    default (a SQLite file, in-process brokers) unless the environment names servers."""
    from dramatiq import Worker

    from desk.server import serve  # start-up time
    from scheduler.loop import Scheduler  # start-up time
    from workers.intake import consume  # start-up time
    app = app_from_env()
    declare_workers(app)
    should_stop = _stop_flag(leave_main_loop=True)
    worker = Worker(app.broker, worker_threads=8)
    worker.start()
    threads = [threading.Thread(target=Scheduler(app).run, args=(should_stop,), name="scheduler", daemon=True),
               threading.Thread(target=consume, args=(app,), kwargs={"should_stop": should_stop}, name="intake",
                                daemon=True)]
    for thread in threads:
        thread.start()
    base = f"http://{app.settings.api_host}:{app.settings.api_port}"
    click.echo(f"disputes running: API on {base}/, the desk on {base}/desk/", err=True)
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
    """The kombu intake consumer of op.intake (or: rejected, held, replay)."""
    if ctx.invoked_subcommand is None:
        from workers.intake import consume  # start-up time
        consume(app_from_env(), should_stop=_stop_flag())
        logging.getLogger("disputes.intake").info("intake stopped")


@intake.command("rejected")
@click.option("--all", "show_all", is_flag=True, help="Include messages already replayed.")
def intake_rejected(show_all: bool) -> None:
    """The rejected intake messages with their reasons."""
    app = app_from_env()
    zone = app.policy.calendar.zone
    with app.db.connection_context():
        query = RejectedMessage.select().order_by(RejectedMessage.id)
        if not show_all:
            query = query.where(RejectedMessage.status == "rejected")
        rows = list(query)
        for row in rows:
            body = bytes(row.body)
            preview = body[:120].decode("utf-8", "replace").replace("\n", " ")
            click.echo(f"{row.id}\t{local_time(row.received_at, zone, seconds=True)}\t{row.routing_key}"
                       f"\t{row.message_id or '-'}"
                       f"\t{row.status}\t{json.dumps(row.reasons, ensure_ascii=False)}\t{preview}")
        if not rows:
            click.echo("no rejected messages", err=True)


@intake.command("held")
def intake_held() -> None:
    """Follow-ups held until their complaint is admitted (rejected after intake.early_message_ttl)."""
    app = app_from_env()
    ttl, zone = app.policy.early_message_ttl, app.policy.calendar.zone
    with app.db.connection_context():
        rows = list(HeldMessage.select().order_by(HeldMessage.id))
        for row in rows:
            expires = row.received_at + timedelta(seconds=ttl.seconds())
            click.echo(f"{row.id}\t{local_time(row.received_at, zone, seconds=True)}\t{row.routing_key}"
                       f"\t{row.message_id or '-'}\twaits for {row.source}/{row.external_ref}"
                       f"\trejected at {local_time(expires, zone, seconds=True)} unless it comes")
        if not rows:
            click.echo("no held messages", err=True)


@intake.command("replay")
@click.argument("rejected_id", type=int)
def intake_replay(rejected_id: int) -> None:
    """Re-drive one rejected message (after fixing its cause)."""
    from workers.intake import Intake  # start-up time
    app = app_from_env()
    declare_workers(app)
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
    from scheduler.loop import Scheduler  # start-up time
    Scheduler(app_from_env()).run(_stop_flag())


@main.command()
@click.option("--host", default=None, help="Default: OP_API_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: OP_API_PORT or 8080.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar="OP_API_WORKERS",
              help="API processes on the port (one per core; needs a shared broker). Env: OP_API_WORKERS.")
def api(host: str | None, port: int | None, workers: int) -> None:
    """The HTTP desk and API."""
    from desk.server import desk_in_worker, serve, serve_processes  # start-up time
    app = app_from_env()
    host, port = host or app.settings.api_host, port or app.settings.api_port
    main_process = os.getpid()
    try:
        if workers > 1:
            if app.settings.broker_url.startswith("memory"):
                raise click.ClickException("several API processes need a shared broker: "
                                           "set OP_BROKER_URL (redis:// or amqp://)")
            if hasattr(app.db, "close_all"):  # pooled PostgreSQL: no connection may cross the fork
                app.db.close_all()
            app.db.close()
            serve_processes(desk_in_worker(app.settings), host, port, workers=workers)
        else:
            _stop_flag(leave_main_loop=True)
            serve(app, host, port)
    except SystemExit as stop:  # SIGTERM/SIGINT: a clean stop (gunicorn's forked workers leave this way too)
        if stop.code or os.getpid() != main_process:
            raise
    logging.getLogger("disputes.api").info("API stopped")


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
    app = app_from_env()
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
    app = app_from_env()
    with app.db.connection_context():
        for a in list_agents():
            status = "revoked" if a.revoked_at else "active"
            click.echo(f"{a.name}\tstage{a.stage}\tcapacity={a.capacity}\tskills={','.join(a.skills or [])}"
                       f"\t{'supervisor' if a.supervisor else 'agent'}\t{status}")


@agents.command("revoke")
@click.argument("name")
def agents_revoke(name: str) -> None:
    """Withdraw an agent's token."""
    app = app_from_env()
    with app.db.connection_context():
        if not revoke_agent(name):
            raise click.ClickException(f"no active agent named '{name}'")
    click.echo(f"revoked {name}", err=True)


@main.command("ledger")
def ledger_command() -> None:
    """Balances, debts, the month's fee spend; checks every invariant of the books (exit 1 if one fails)."""
    from rich.console import Console

    app = app_from_env()
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
    app = app_from_env()
    with app.db.connection_context():
        found = find_ticket(ref)
        if found is None:
            raise click.ClickException(f"no ticket '{ref}'")
        show_ticket(found, app, as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
