"""The double-entry ledger: every movement of money is a balanced transaction.

A transaction has an idempotency key (unique), so a redelivered message or a
re-driven dispatch can never move money twice, and it is written in the same
database transaction as the ticket change it belongs to. Accounts, per
currency (amounts are integer minor units; a balance is the sum of entries):

- ``merchant:<id>`` — the merchant's funds with us, as the payment system reports
  them, less what we deducted since. Never below zero.
- ``debt:<id>`` — what the merchant owes the platform (negative = owed).
- ``buyer:<id>`` — what reached the buyer (refunds, advances, complaint fees).
- ``platform`` — the platform's own money (advances, fees, recovered debt).
- ``gateway`` — the payment system's side of balance reports.
- ``offline`` — money that moved outside our books (a merchant's offline transfer).

What the payment system hears of (``ledger.*`` events) is numbered per merchant
(`MerchantSequence`), so a balance report can say which of our movements it
already reflects (``applied_through``, SPEC §4) and none is counted twice.
"""
from __future__ import annotations

from datetime import datetime

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow
from models.intake import storable


class Account(BaseModel):
    name = peewee.CharField(max_length=160)
    currency = peewee.CharField(max_length=3)
    #: The sum of the account's entries, kept in step in the posting transaction.
    balance = peewee.BigIntegerField(default=0)

    class Meta:
        indexes = ((("name", "currency"), True),)


class LedgerTransaction(BaseModel):
    idempotency_key = peewee.CharField(max_length=160, unique=True)
    kind = peewee.CharField(max_length=32, index=True)
    ticket_id = peewee.IntegerField(null=True, index=True)
    currency = peewee.CharField(max_length=3)
    #: The movement's size (the sum of its positive entries).
    amount = peewee.BigIntegerField()
    at = UtcDateTimeField(default=utcnow, index=True)
    #: For a movement announced to the payment system: its merchant and the ``sequence`` of its event.
    merchant_id = peewee.CharField(max_length=128, null=True)
    sequence = peewee.BigIntegerField(null=True)

    class Meta:
        indexes = ((("merchant_id", "sequence"), False),)


class MerchantSequence(BaseModel):
    """Per merchant: the last ``sequence`` given to a ``ledger.*`` event of ours, and the newest
    balance report applied (its own ``sequence``), so an older report is recorded, not applied."""

    merchant_id = peewee.CharField(max_length=128, primary_key=True)
    sequence = peewee.BigIntegerField(default=0)
    report_sequence = peewee.BigIntegerField(null=True)


class BalanceReport(BaseModel):
    """One ``merchant.balance_changed`` as received, and what it did to our view of the funds."""

    merchant_id = peewee.CharField(max_length=128, index=True)
    currency = peewee.CharField(max_length=3)
    balance = peewee.BigIntegerField()
    sequence = peewee.BigIntegerField(null=True)
    applied_through = peewee.BigIntegerField(null=True)
    #: Our view of the merchant's funds after the report (None: not applied, an older report).
    funds = peewee.BigIntegerField(null=True)
    cause = peewee.CharField(max_length=160, null=True)
    received_at = UtcDateTimeField(default=utcnow)


class LedgerEntry(BaseModel):
    txn = peewee.ForeignKeyField(LedgerTransaction, backref="entries", on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="entries")
    amount = peewee.BigIntegerField()


class UnbalancedTransaction(Exception):
    """A posting whose entries do not sum to zero (a programming error, never stored)."""


def account(name: str, currency: str) -> Account:
    found = Account.get_or_none((Account.name == name) & (Account.currency == currency))
    if found is not None:
        return found
    try:
        with Account._meta.database.atomic():
            return Account.create(name=name, currency=currency)
    except peewee.IntegrityError:
        return Account.get((Account.name == name) & (Account.currency == currency))


def balance(name: str, currency: str) -> int:
    found = Account.get_or_none((Account.name == name) & (Account.currency == currency))
    return found.balance if found else 0


def post(key: str, kind: str, currency: str, entries: list[tuple[str, int]], *, ticket_id: int | None = None,
         at: datetime | None = None, announced_to: str | None = None) -> LedgerTransaction | None:
    """Post one balanced transaction; None (and nothing written) when `key` was posted before.
    Call inside the transaction of the change the money belongs to. A movement `announced_to` a
    merchant (published as a ``ledger.*`` event) gets that merchant's next ``sequence``."""
    if sum(amount for _, amount in entries) != 0:
        raise UnbalancedTransaction(f"{kind} {key}: entries {entries} do not sum to zero")
    if LedgerTransaction.select().where(LedgerTransaction.idempotency_key == key).exists():
        return None
    size = sum(amount for _, amount in entries if amount > 0)
    sequence = next_sequence(announced_to) if announced_to is not None else None
    txn = LedgerTransaction.create(idempotency_key=key, kind=kind, ticket_id=ticket_id, currency=currency,
                                   amount=size, at=at or utcnow(), merchant_id=announced_to, sequence=sequence)
    for name, amount in entries:
        acct = account(name, currency)
        LedgerEntry.create(txn=txn, account=acct, amount=amount)
        Account.update(balance=Account.balance + amount).where(Account.id == acct.id).execute()
    return txn


def locked_balance(name: str, currency: str) -> int:
    """The balance, its account row locked until the transaction ends (PostgreSQL; SQLite's
    BEGIN IMMEDIATE serializes writers already): a decision that depends on it — does the merchant
    cover this refund, does this fee fit the budget — cannot race another change deciding the same."""
    acct = account(name, currency)  # a row to lock, even before the first movement
    query = Account.select(Account.balance).where(Account.id == acct.id)
    if isinstance(Account._meta.database.obj, peewee.PostgresqlDatabase):
        query = query.for_update()
    return int(query.scalar() or 0)


def merchant_funds(merchant_id: str, currency: str, *, lock: bool = False) -> int:
    name = f"merchant:{merchant_id}"
    return locked_balance(name, currency) if lock else balance(name, currency)


def merchant_debt(merchant_id: str, currency: str) -> int:
    """What the merchant owes the platform (a positive number)."""
    return -balance(f"debt:{merchant_id}", currency)


def next_sequence(merchant_id: str) -> int:
    """The merchant's next event ``sequence``: one statement that also locks the merchant's counter
    until the transaction ends, so sequences commit in the order they were given."""
    query = (MerchantSequence.insert(merchant_id=merchant_id, sequence=1)
             .on_conflict(conflict_target=[MerchantSequence.merchant_id],
                          update={MerchantSequence.sequence: MerchantSequence.sequence + 1})
             .returning(MerchantSequence.sequence))
    return int(MerchantSequence._meta.database.execute(query).fetchone()[0])


def sync_merchant_balance(merchant_id: str, reported: int, currency: str, key: str,
                          at: datetime | None = None, *, sequence: int | None = None,
                          applied_through: int | None = None) -> list[LedgerTransaction]:
    """The payment system reported the merchant's available balance: align our view with it,
    then settle debts from it, oldest advance first. Returns the settlements (each names the
    ticket whose advance it repays, so it can be published).

    A report with a `sequence` not above the newest one applied is recorded and changes nothing.
    With `applied_through` (the last of our sequences the payment system had applied), the view is
    the report less our deductions after it: a snapshot taken before a deduction reached the
    payment system does not count that money again. Without either, the report is the view."""
    if sequence is not None and not _newest_report(merchant_id, sequence):
        _record_report(merchant_id, currency, reported, sequence, applied_through, None, key)
        return []
    funds = merchant_funds(merchant_id, currency, lock=True)
    target = reported if applied_through is None else max(0, reported + _announced_since(
        merchant_id, currency, applied_through))
    delta = target - funds
    if delta:
        post(f"sync:{key}", "balance_sync", currency, [(f"merchant:{merchant_id}", delta), ("gateway", -delta)],
             at=at)
    settled: list[LedgerTransaction] = []
    funds = merchant_funds(merchant_id, currency)
    for ticket_id, owed in outstanding_debts(merchant_id, currency):
        amount = min(owed, funds)
        if amount <= 0:
            break
        txn = post(_settle_key(key, ticket_id), "debt_settled", currency,
                   [(f"merchant:{merchant_id}", -amount), (f"debt:{merchant_id}", amount)],
                   ticket_id=ticket_id, at=at, announced_to=merchant_id)
        if txn is not None:
            settled.append(txn)
            funds -= amount
    _record_report(merchant_id, currency, reported, sequence, applied_through, funds, key)
    return settled


#: A ``ledger.*`` event's idempotency key is an identifier of at most this many characters.
PUBLISHED_KEY_CHARS = 128


def _settle_key(key: str, ticket_id: int) -> str:
    """The idempotency key of a settlement: the report's key and the ticket, as `storable` fits
    it into the published key (its digest past the limit: the same report gives the same key)."""
    return storable(f"settle:{key}:{ticket_id}", PUBLISHED_KEY_CHARS)


def _newest_report(merchant_id: str, sequence: int) -> bool:
    """Whether a report numbered `sequence` is newer than every report applied (it is then the
    newest): one statement, which also locks the merchant's counter against a concurrent report."""
    seq = MerchantSequence
    query = (seq.insert(merchant_id=merchant_id, sequence=0, report_sequence=sequence)
             .on_conflict(conflict_target=[seq.merchant_id],
                          update={seq.report_sequence: peewee.Case(None, [(
                              seq.report_sequence.is_null() | (seq.report_sequence < sequence), sequence)],
                              seq.report_sequence)})
             .returning(seq.report_sequence))
    return int(seq._meta.database.execute(query).fetchone()[0]) == sequence and _took(merchant_id, sequence)


def _took(merchant_id: str, sequence: int) -> bool:
    """`_newest_report` set the number, or it was already this one (a repeat of the same report):
    a repeat must not apply twice, so it is told apart by the report recorded under that number."""
    return not BalanceReport.select().where((BalanceReport.merchant_id == merchant_id)
                                            & (BalanceReport.sequence == sequence)
                                            & BalanceReport.funds.is_null(False)).exists()


def _announced_since(merchant_id: str, currency: str, applied_through: int) -> int:
    """The sum our announced movements after `applied_through` made to the merchant's funds
    (deductions: negative), which a report taken before them does not reflect."""
    total = (LedgerEntry.select(peewee.fn.COALESCE(peewee.fn.SUM(LedgerEntry.amount), 0))
             .join(LedgerTransaction).switch(LedgerEntry).join(Account)
             .where((LedgerTransaction.merchant_id == merchant_id) & (LedgerTransaction.sequence > applied_through)
                    & (Account.name == f"merchant:{merchant_id}") & (Account.currency == currency)).scalar())
    return int(total or 0)


def _record_report(merchant_id: str, currency: str, reported: int, sequence: int | None,
                   applied_through: int | None, funds: int | None, key: str) -> None:
    BalanceReport.create(merchant_id=merchant_id, currency=currency, balance=reported, sequence=sequence,
                         applied_through=applied_through, funds=funds, cause=key[:160])


def outstanding_debts(merchant_id: str, currency: str) -> list[tuple[int, int]]:
    """(ticket id, amount still owed) for the merchant's unpaid advances, oldest first."""
    owed = peewee.fn.SUM(LedgerEntry.amount)
    rows = (LedgerEntry.select(LedgerTransaction.ticket_id, owed.alias("owed"),
                               peewee.fn.MIN(LedgerTransaction.id).alias("first"))
            .join(LedgerTransaction).switch(LedgerEntry).join(Account)
            .where((Account.name == f"debt:{merchant_id}") & (Account.currency == currency))
            .group_by(LedgerTransaction.ticket_id).having(owed < 0)
            .order_by(peewee.fn.MIN(LedgerTransaction.id)).tuples())
    return [(ticket_id, -int(total)) for ticket_id, total, _ in rows]


def check_invariants() -> list[str]:
    """Every problem with the books: unbalanced transactions, cached balances that disagree
    with their entries, merchant funds below zero, debts the wrong way round."""
    problems: list[str] = []
    total = peewee.fn.SUM(LedgerEntry.amount)
    for txn_id, key, s in (LedgerEntry.select(LedgerEntry.txn, LedgerTransaction.idempotency_key, total)
                           .join(LedgerTransaction).group_by(LedgerEntry.txn, LedgerTransaction.idempotency_key)
                           .having(total != 0).tuples()):
        problems.append(f"transaction {key} does not balance (sum {s})")
    sums = dict(LedgerEntry.select(LedgerEntry.account, total).group_by(LedgerEntry.account).tuples())
    for acct in Account.select():
        if acct.balance != int(sums.get(acct.id, 0) or 0):
            problems.append(f"account {acct.name} {acct.currency}: balance {acct.balance} but entries sum "
                            f"{sums.get(acct.id, 0)}")
        if acct.name.startswith("merchant:") and acct.balance < 0:
            problems.append(f"{acct.name} {acct.currency} is below zero ({acct.balance}) outside recorded debt")
        if acct.name.startswith("debt:") and acct.balance > 0:
            problems.append(f"{acct.name} {acct.currency}: the platform owes the merchant ({acct.balance})")
    return problems


def spent_on_fees(since: datetime, currency: str) -> int:
    """Complaint fees paid since `since` (the month's budget is checked against this)."""
    spent = (LedgerTransaction.select(peewee.fn.COALESCE(peewee.fn.SUM(LedgerTransaction.amount), 0))
             .where((LedgerTransaction.kind == "complaint_fee_paid") & (LedgerTransaction.currency == currency)
                    & (LedgerTransaction.at >= since)).scalar())
    return int(spent or 0)


def paid_to_buyer(ticket_id: int) -> int:
    """Everything that reached the buyer for this ticket (refunds, advances, offline transfers)."""
    total = (LedgerEntry.select(peewee.fn.COALESCE(peewee.fn.SUM(LedgerEntry.amount), 0))
             .join(LedgerTransaction).switch(LedgerEntry).join(Account)
             .where((LedgerTransaction.ticket_id == ticket_id) & Account.name.startswith("buyer:")
                    & (LedgerTransaction.kind != "complaint_fee_paid")).scalar())
    return int(total or 0)
