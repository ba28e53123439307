"""``disputes demo``: the embedded system end to end, with a simulated world around it.

The demo runs the real system — the dramatiq stage workers on the in-process
broker, the scheduler (timers, outbox relay, reconciler), the kombu intake
consumer and the HTTP desk — against a fresh SQLite file, with deadlines
shortened to seconds so that silent parties take the deadline paths too.
Around it, `tools.simulation` plays upstream, the merchants (answering
with the four negotiation options by configurable shares, or not at all;
some with too little money, so vouchers, rejections, platform advances and
debt recovery all happen), the buyers, logistics, the payments system, a
downstream consumer of ``op.events``, the four agent pools and a supervisor.
It stops when every ticket is final and the world has nothing left to say
(or at a timeout), shuts everything down and prints, one table per question:
the report of `tools.report` (its negotiation table with the answers dealt to
the simulated merchants beside it), what the simulation did against what the
system recorded, the run's counts explained, and the money — every ledger
movement, the merchants' books and the invariants ``disputes ledger`` checks.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Mapping

from rich.console import Console

from disputes.cli.books import books
from policy import Policy, default_policy_dict, dump_policy, policy_from_dict
from tools.report import build_report
from tools.report.render import print_table, render_tables
from tools.report.tables import report_tables
from disputes.settings import Settings
from tools.simulation import normalize_shares
from tools.simulation.figures import money_by_kind, option_outcomes, paths_taken
from tools.simulation.result import DemoResult
from tools.simulation.run import DemoRun
from tools.simulation.summary import merchants_table, money_table, negotiation_table, summary_tables
from disputes.wiring import build_app
from models.schema import init_schema

log = logging.getLogger("tools.demo")

#: The default policy's deadlines, shortened so a demo sees every silence path in seconds.
DEMO_DEADLINES = {"merchant_response": "4s", "customer_confirmation": "4s", "interception": "3s",
                  "evidence": "3s", "payment_voucher": "4s", "appeal": "30s"}
#: Fees above 20.00 and every platform advance above it need a supervisor; the month's fee budget
#: (500.00) is small enough that a default run spends it and sees ``over_budget`` refusals.
DEMO_COMPLAINT_FEE = {"approval_threshold": 2_000, "monthly_budget": 50_000}


def demo_policy() -> Policy:
    """The shipped default policy with deadlines of seconds and a small complaint-fee budget."""
    data = default_policy_dict()
    data["deadlines"].update(DEMO_DEADLINES)  # type: ignore[union-attr]
    data["complaint_fee"].update(DEMO_COMPLAINT_FEE)  # type: ignore[union-attr]
    return policy_from_dict(data)


def run_demo(tickets: int = 200, seed: int = 7, console: Console | None = None, *,
             merchant_shares: Mapping[str, float] | None = None, timeout: float | None = None,
             show_report: bool = True, keep: str | Path | None = None) -> DemoResult:
    """Run the demo with `tickets` simulated complaints; prints a progress bar and (unless
    `show_report` is False) the report, the summary and the books on `console`.

    `merchant_shares` weighs the merchants' answers (``direct_refund``, ``negotiated_reject``,
    ``intercept_48h``, ``platform_judgment``, ``silent``; missing ones get 0; default
    `simulation.DEFAULT_SHARES`). `keep` names a new SQLite file to keep after the run (else a
    temporary one is removed). `timeout` defaults to 30 s + 0.3 s a ticket."""
    if tickets < 1:
        raise ValueError("the demo needs at least one ticket")
    shares = normalize_shares(merchant_shares)
    kept = Path(keep).resolve() if keep is not None else None
    if kept is not None and (kept.exists() or not kept.parent.is_dir()):
        raise ValueError(f"{kept} already exists or its folder does not: --keep writes a new database file")
    console = console or Console()
    timeout = 30 + 0.3 * tickets if timeout is None else timeout
    workdir = tempfile.mkdtemp(prefix="disputes-demo-")
    path = kept or Path(workdir) / "demo.db"
    counter = _LogCounter()
    logging.getLogger().addHandler(counter)
    try:
        app = build_app(Settings(database_url=f"sqlite:///{path}", broker_url="memory://",
                                 intake_url="memory://"), policy=demo_policy())
        with app.db.connection_context():
            init_schema()
        run = DemoRun(app, tickets, seed, shares)
        console.print(f"[bold]disputes demo[/bold]: {tickets} simulated complaints through the whole system "
                      "(SQLite, in-process broker); deadlines last seconds instead of days.", highlight=False)
        started = time.monotonic()
        try:
            run.start()
            timed_out = not run.wait_until_final(console, timeout)
        finally:
            run.stop()
        elapsed = time.monotonic() - started
        with app.db.connection_context():
            report = build_report(policy=app.policy)
            admitted, open_count = run.counts()
            ledger = books(app.policy, app.clock())
            result = DemoResult(
                report=report, all_terminal=open_count == 0 and run.complaints_seen() >= run.expected_complaints,
                tickets=tickets, admitted=admitted, elapsed=round(elapsed, 2), timed_out=timed_out,
                shares=shares, planned=dict(Counter(run.plan.values())), by_option=option_outcomes(),
                money=money_by_kind(), paths=paths_taken(), world=dict(run.parties.did),
                published=dict(run.mailbox.published), distinct=dict(run.mailbox.distinct),
                events_received=dict(run.tap.counts), out_of_order=run.tap.out_of_order, repeated=run.tap.repeated,
                agents=dict(run.agents.stats), logged=dict(counter.counts), database=str(kept) if kept else None,
                problems=list(ledger["problems"]))
            if show_report:
                print_results(result, ledger, console)
        if kept is not None:
            policy_file = Path(f"{kept}.policy.toml")
            policy_file.write_text(dump_policy(app.policy), encoding="utf-8")
            if show_report:
                console.print(f"database kept; to look again: OP_DATABASE_URL=sqlite:///{kept} "
                              f"OP_POLICY={policy_file} disputes ledger")
        return result
    finally:
        logging.getLogger().removeHandler(counter)
        shutil.rmtree(workdir, ignore_errors=True)


def print_results(result: DemoResult, ledger: dict, console: Console) -> None:
    """The report, the demo's own tables and the money, each question answered once."""
    tables = report_tables(result.report)
    tables["negotiation"] = negotiation_table(result)  # the report's, with the answers dealt beside it
    del tables["money"]  # answered below, with every movement of the ledger
    console.rule("The report (as `disputes report` prints it)")
    render_tables(tables, console)
    console.rule("The simulation against the system")
    for table in summary_tables(result):
        print_table(table, console)
    console.rule("The money (as `disputes ledger` checks it)")
    print_table(money_table(result), console)
    print_table(merchants_table(ledger), console)
    spent = ledger["month"].get("complaint_fee_paid", 0)
    console.print(f"complaint-fee budget this month: {spent / 100:,.2f} spent of {ledger['budget'] / 100:,.2f} "
                  f"{ledger['currency']}, {ledger['budget_left'] / 100:,.2f} left", highlight=False)
    if ledger["problems"]:
        console.print(f"[red]{len(ledger['problems'])} invariant(s) violated:[/red]")
        for problem in ledger["problems"]:
            console.print(f"  - {problem}", markup=False)
    else:
        console.print("[green]every invariant holds[/green]: transactions balance, balances match their entries, "
                      "no merchant below zero outside recorded debt, every buyer paid what the ticket records")


class _LogCounter(logging.Handler):
    """Counts warnings and errors by logger while the demo runs (shown in the summary)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("No hostname was supplied"):  # kombu, on memory://
            self.counts[record.name] += 1
