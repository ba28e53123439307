"""``disputes ledger``: the books at a glance, and every invariant checked.

What a finance operator asks first: what each merchant has with us and owes
us, what the platform paid out this month (complaint fees against the budget,
advances), and whether the ledger is sound — every transaction balanced,
cached balances equal to their entries, no merchant below zero except as
recorded debt, every buyer paid exactly what the judgment in force owes.
"""
from __future__ import annotations

from datetime import datetime

import peewee
from rich.console import Console
from rich.table import Table

from policy import Policy
from policy.calendar import local_time
from policy.options import money_text as _money  # major units, the currency named
from models.compensation import budget_left, month_start
from models.ledger import Account, LedgerTransaction, check_invariants, paid_to_buyer
from models.ticket import Ticket


def ticket_problems() -> list[str]:
    """Tickets whose buyer received other than what the ticket records as refunded."""
    problems = []
    for ticket in Ticket.select(Ticket.id, Ticket.refunded_amount, Ticket.refund_amount, Ticket.state,
                                Ticket.currency):
        paid, currency = paid_to_buyer(ticket.id), ticket.currency
        if paid != (ticket.refunded_amount or 0):
            problems.append(f"ticket {ticket.id}: buyer received {_money(paid, currency)}, ticket records "
                            f"{_money(ticket.refunded_amount or 0, currency)}")
        if ticket.state == "closed" and ticket.refund_amount is not None and paid != ticket.refund_amount:
            problems.append(f"ticket {ticket.id} closed with {_money(paid, currency)} paid of "
                            f"{_money(ticket.refund_amount, currency)} owed")
    return problems


def books(policy: Policy, now: datetime) -> dict:
    merchants: dict[tuple[str, str], dict[str, int]] = {}
    for acct in Account.select().where(Account.name.startswith("merchant:") | Account.name.startswith("debt:")):
        kind, merchant = acct.name.split(":", 1)
        row = merchants.setdefault((merchant, acct.currency), {"funds": 0, "debt": 0})
        row["funds" if kind == "merchant" else "debt"] = acct.balance if kind == "merchant" else -acct.balance
    since = month_start(policy, now)
    spent = dict(LedgerTransaction.select(LedgerTransaction.kind, peewee.fn.SUM(LedgerTransaction.amount))
                 .where(LedgerTransaction.at >= since).group_by(LedgerTransaction.kind).tuples())
    return {"merchants": merchants, "month_start": since, "month": {k: int(v or 0) for k, v in spent.items()},
            "budget": policy.complaint_fee.monthly_budget, "budget_left": budget_left(policy, now),
            "currency": policy.complaint_fee.currency, "problems": check_invariants() + ticket_problems()}


def print_books(policy: Policy, now: datetime, console: Console) -> bool:
    """Print the books; True when every invariant holds."""
    b = books(policy, now)
    fee_currency = b["currency"]
    table = Table("merchant", "funds", "debt", title="Merchants")
    for (merchant, currency), row in sorted(b["merchants"].items()):
        table.add_row(merchant, _money(row["funds"], currency), _money(row["debt"], currency))
    console.print(table)
    month = Table("movement", "amount", title=f"Since {local_time(b['month_start'], policy.calendar.zone)}")
    moved = (LedgerTransaction.select(LedgerTransaction.kind, LedgerTransaction.currency,
                                      peewee.fn.SUM(LedgerTransaction.amount))
             .where(LedgerTransaction.at >= b["month_start"])
             .group_by(LedgerTransaction.kind, LedgerTransaction.currency).tuples())
    for kind, currency, amount in sorted(moved):
        month.add_row(kind, _money(int(amount or 0), currency))
    console.print(month)
    console.print(f"complaint-fee budget: {_money(b['month'].get('complaint_fee_paid', 0), fee_currency)} spent of "
                  f"{_money(b['budget'], fee_currency)}, {_money(b['budget_left'], fee_currency)} left")
    if b["problems"]:
        console.print(f"[red]{len(b['problems'])} invariant(s) violated:[/red]")
        for problem in b["problems"]:
            console.print(f"  - {problem}")
        return False
    console.print("[green]every invariant holds[/green]: transactions balance, balances match their entries, "
                  "no merchant below zero outside recorded debt, every buyer paid what the ticket records")
    return True

