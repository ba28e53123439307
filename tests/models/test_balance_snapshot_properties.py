"""Property: however the payment system's balance snapshots interleave with our own movements, our
view of a merchant's funds never counts money the merchant may not have, and every deduction is
counted exactly once (SPEC §4, ``sequence`` / ``applied_through``).

A hypothesis state machine plays both sides for two merchants, at ledger level (the postings mirror
`models.compensation`):

* we deduct refunds (``refund_deducted``: merchant -> buyer, announced) only when our view covers them,
  as the guards do; we pay platform advances (``platform_advance``: platform -> buyer, announced, plus
  the ``debt_recorded`` posting) and complaint fees (announced, no merchant money); settlements
  (``debt_settled``, announced) happen inside `ledger.sync_merchant_balance`;
* the payment system applies our announced movements in ``sequence`` order whenever it likes, the
  merchant's balance grows by sales, and it takes snapshots (balance, its own increasing snapshot
  number, ``applied_through`` = the highest of our sequences it had applied) which reach us in any
  order, some more than once, some without their ``sequence``. A snapshot without ``applied_through``
  (the old contract) is only taken when the payment system had applied all our movements, and reaches
  us only while none of our deductions followed it — or when its ``sequence`` makes it an older report
  (see `LEGACY_REPORTS_ANY_TIME`: later, nothing could tell the ledger what it misses).

After every step, per merchant:

(a) 0 <= our view <= the payment system's true balance - our deductions (refunds, settlements) it has
    not applied yet (so the payment system's balance never goes below zero either);
(b) the books are sound (`ledger.check_invariants`), the announced movements carry the sequences
    1..n (no gap, no repeat; internal postings none), debts are what the model says; and each delivered
    report did what the contract says (applied or recorded as older, the view it set, the settlements,
    oldest advance first). A ``settle_up`` step lets the payment system apply everything and delivers
    a fresh snapshot: our view then equals its true balance exactly (after the settlements it makes).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from models import ledger
from models.base import database
from models.ledger import BalanceReport, LedgerTransaction
from tests.conftest import running_app, wipe_database

MERCHANTS = ("m1", "m2")
CURRENCY = "CNY"
#: The kinds published as ``ledger.*`` events, hence numbered; balance syncs and debt bookings are not.
ANNOUNCED = ("refund_deducted", "platform_advance", "complaint_fee_paid", "debt_settled")

#: A snapshot without ``applied_through`` is only right if none of our deductions happened between
#: its taking and its use: a late one (not dropped as older by its ``sequence``) counts them again,
#: whatever the ledger does, as it cannot tell. False: such a late delivery is not generated.
LEGACY_REPORTS_ANY_TIME = False

EXAMPLES = 200
STEPS = 40


@pytest.fixture
def snapshot_app(tmp_path: Path, make_policy):
    with running_app(tmp_path, "snapshots.db", make_policy(), in_memory=True) as app:
        yield app


@dataclass
class Movement:
    """One of our announced movements, as the payment system hears of it."""
    sequence: int
    kind: str
    ticket_id: int
    #: What it does to the merchant's funds (deductions negative; advances and fees: nothing).
    merchant_delta: int


@dataclass
class Snapshot:
    merchant: str
    balance: int
    number: int                  # the payment system's own snapshot sequence
    sends_sequence: bool
    applied_through: int | None  # as sent
    reflects: int                # our last sequence the payment system had applied when it took it


@dataclass
class Debt:
    ticket_id: int
    owed: int


class BalanceSnapshots(RuleBasedStateMachine):
    app = None  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        wipe_database()
        # the payment system
        self.true_balance = {m: 0 for m in MERCHANTS}
        self.applied = {m: 0 for m in MERCHANTS}  # the highest of our sequences it applied
        self.snapshot_numbers = {m: itertools.count(1) for m in MERCHANTS}
        self.pending: list[Snapshot] = []  # taken, not delivered yet
        self.delivered: list[Snapshot] = []
        # our side, as the model expects it
        self.announced: dict[str, list[Movement]] = {m: [] for m in MERCHANTS}  # index i: sequence i + 1
        self.debts: dict[str, list[Debt]] = {m: [] for m in MERCHANTS}  # oldest first
        self.newest_report: dict[str, int | None] = {m: None for m in MERCHANTS}
        self.ids = itertools.count(1)

    # -- helpers -----------------------------------------------------------------------------------
    def view(self, merchant: str) -> int:
        return ledger.merchant_funds(merchant, CURRENCY)

    def unapplied_deductions(self, merchant: str) -> int:
        return -sum(mv.merchant_delta for mv in self.announced[merchant][self.applied[merchant]:])

    def last_sequence(self, merchant: str) -> int:
        return len(self.announced[merchant])

    def announce(self, merchant: str, txn: LedgerTransaction | None, kind: str, ticket_id: int, delta: int) -> None:
        assert txn is not None
        assert (txn.merchant_id, txn.sequence) == (merchant, self.last_sequence(merchant) + 1), (kind, txn.sequence)
        self.announced[merchant].append(Movement(txn.sequence, kind, ticket_id, delta))

    def check_debts(self, merchant: str) -> None:
        assert ledger.outstanding_debts(merchant, CURRENCY) == [(d.ticket_id, d.owed) for d in self.debts[merchant]]

    def ps_apply(self, merchant: str, count: int) -> None:
        """The payment system applies our next `count` movements, in sequence order."""
        for mv in self.announced[merchant][self.applied[merchant]:self.applied[merchant] + count]:
            self.true_balance[merchant] += mv.merchant_delta
            assert self.true_balance[merchant] >= 0, f"{merchant}: our {mv.kind} #{mv.sequence} overdraws it"
            self.applied[merchant] = mv.sequence

    def take(self, merchant: str, sends_sequence: bool, sends_applied_through: bool) -> Snapshot:
        if self.applied[merchant] < self.last_sequence(merchant):
            sends_applied_through = True  # the old contract is only ever right when all was applied
        return Snapshot(merchant, self.true_balance[merchant], next(self.snapshot_numbers[merchant]),
                        sends_sequence, self.applied[merchant] if sends_applied_through else None,
                        self.applied[merchant])

    def would_be_dropped(self, s: Snapshot) -> bool:
        newest = self.newest_report[s.merchant]
        return s.sends_sequence and newest is not None and s.number <= newest

    def deliverable(self, s: Snapshot) -> bool:
        if LEGACY_REPORTS_ANY_TIME or s.applied_through is not None or self.would_be_dropped(s):
            return True
        return all(mv.merchant_delta == 0 for mv in self.announced[s.merchant][s.reflects:])

    def deliver(self, s: Snapshot) -> list[LedgerTransaction]:
        """`s` reaches us: check that the report did exactly what the contract says."""
        m = s.merchant
        key = f"report-{next(self.ids)}"
        before = self.view(m)
        dropped = self.would_be_dropped(s)
        with database.atomic():
            settled = ledger.sync_merchant_balance(m, s.balance, CURRENCY, key,
                                                   sequence=s.number if s.sends_sequence else None,
                                                   applied_through=s.applied_through)
        report = BalanceReport.get(BalanceReport.cause == key)
        assert (report.merchant_id, report.balance, report.sequence, report.applied_through) == (
            m, s.balance, s.number if s.sends_sequence else None, s.applied_through)
        if dropped:  # not above the newest report applied: recorded, nothing changes
            assert settled == [] and report.funds is None and self.view(m) == before, (s, report.funds)
            return []
        if s.sends_sequence:
            self.newest_report[m] = s.number
        # the view: the snapshot, less our movements it did not reflect
        expected = s.balance if s.applied_through is None else max(0, s.balance + sum(
            mv.merchant_delta for mv in self.announced[m][s.applied_through:]))
        # then the debts, oldest advance first, from those funds
        funds, expected_settled = expected, []
        for debt in self.debts[m]:
            amount = min(debt.owed, funds)
            if amount <= 0:
                break
            expected_settled.append((debt.ticket_id, amount))
            funds -= amount
        assert [(t.ticket_id, t.amount) for t in settled] == expected_settled, (s, expected)
        for txn in settled:
            assert txn.kind == "debt_settled"
            self.announce(m, txn, "debt_settled", txn.ticket_id, -txn.amount)
            debt = next(d for d in self.debts[m] if d.ticket_id == txn.ticket_id)
            debt.owed -= txn.amount
        self.debts[m] = [d for d in self.debts[m] if d.owed > 0]
        self.check_debts(m)
        assert self.view(m) == funds == report.funds, (s, expected, self.view(m), report.funds)
        assert funds == 0 or not self.debts[m]  # what the funds could repay, they repaid
        return settled

    @initialize(opening=st.lists(st.integers(0, 6000), min_size=len(MERCHANTS), max_size=len(MERCHANTS)))
    def merchants_open(self, opening: list[int]) -> None:
        """Each merchant starts with some sales at the payment system, reported to us (old contract)."""
        for merchant, amount in zip(MERCHANTS, opening):
            self.true_balance[merchant] = amount
            self.deliver(self.take(merchant, sends_sequence=False, sends_applied_through=False))

    # -- our side ----------------------------------------------------------------------------------
    @rule(merchant=st.sampled_from(MERCHANTS), amount=st.integers(1, 3000) | st.sampled_from(("all", "half")))
    def deduct_refund(self, merchant: str, amount: int | str) -> None:
        """A refund deducted from the merchant's funds, only when our view covers it."""
        ticket_id = next(self.ids)
        with database.atomic():
            funds = ledger.merchant_funds(merchant, CURRENCY, lock=True)
            amount = {"all": funds, "half": funds // 2}.get(amount, amount)  # type: ignore[call-overload]
            if amount <= 0 or amount > funds:
                return  # the guard says no: the refund waits for a voucher or an advance
            txn = ledger.post(f"refund_deducted:{ticket_id}:1", "refund_deducted", CURRENCY,
                              [(f"merchant:{merchant}", -amount), (f"buyer:u{ticket_id}", amount)],
                              ticket_id=ticket_id, announced_to=merchant)
        self.announce(merchant, txn, "refund_deducted", ticket_id, -amount)

    @rule(merchant=st.sampled_from(MERCHANTS), amount=st.integers(1, 2000), fee=st.booleans())
    def platform_pays(self, merchant: str, amount: int, fee: bool) -> None:
        """The platform pays the buyer: a complaint fee, or an advance that books the merchant's debt."""
        ticket_id = next(self.ids)
        kind = "complaint_fee_paid" if fee else "platform_advance"
        with database.atomic():
            txn = ledger.post(f"{kind}:{ticket_id}:2", kind, CURRENCY,
                              [("platform", -amount), (f"buyer:u{ticket_id}", amount)],
                              ticket_id=ticket_id, announced_to=merchant)
            if not fee:
                ledger.post(f"debt:{ticket_id}:2", "debt_recorded", CURRENCY,
                            [(f"debt:{merchant}", -amount), ("platform", amount)], ticket_id=ticket_id)
        self.announce(merchant, txn, kind, ticket_id, 0)
        if not fee:
            self.debts[merchant].append(Debt(ticket_id, amount))
            self.check_debts(merchant)

    # -- the payment system ------------------------------------------------------------------------
    @rule(merchant=st.sampled_from(MERCHANTS), amount=st.integers(1, 5000))
    def merchant_sells(self, merchant: str, amount: int) -> None:
        self.true_balance[merchant] += amount

    @precondition(lambda self: any(self.applied[m] < self.last_sequence(m) for m in MERCHANTS))
    @rule(merchant=st.sampled_from(MERCHANTS), count=st.integers(1, 3))
    def payment_system_applies(self, merchant: str, count: int) -> None:
        self.ps_apply(merchant, count)

    @rule(merchant=st.sampled_from(MERCHANTS), sends_sequence=st.booleans(), sends_applied_through=st.booleans())
    def snapshot_taken(self, merchant: str, sends_sequence: bool, sends_applied_through: bool) -> None:
        self.pending.append(self.take(merchant, sends_sequence, sends_applied_through))

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 7))
    def snapshot_delivered(self, pick: int) -> None:
        """Any snapshot taken so far reaches us, whatever the order."""
        candidates = [s for s in self.pending if self.deliverable(s)]
        if not candidates:
            return
        s = candidates[pick % len(candidates)]
        self.pending.remove(s)
        self.deliver(s)
        self.delivered.append(s)

    @precondition(lambda self: self.delivered)
    @rule(pick=st.integers(0, 7))
    def snapshot_redelivered(self, pick: int) -> None:
        """A report we had already: again (another message id), possibly much later."""
        candidates = [s for s in self.delivered if self.deliverable(s)]
        if candidates:
            self.deliver(candidates[pick % len(candidates)])

    @rule(merchant=st.sampled_from(MERCHANTS), sends_sequence=st.booleans(), sends_applied_through=st.booleans())
    def settle_up(self, merchant: str, sends_sequence: bool, sends_applied_through: bool) -> None:
        """(b) The payment system applies everything, then a fresh snapshot reaches us at once: every
        deduction counted once, our view is its true balance, less only the settlements it just made."""
        self.ps_apply(merchant, self.last_sequence(merchant))
        assert self.applied[merchant] == self.last_sequence(merchant)
        s = self.take(merchant, sends_sequence, sends_applied_through)
        settled = self.deliver(s)
        assert self.view(merchant) + sum(t.amount for t in settled) == self.true_balance[merchant]
        self.ps_apply(merchant, len(settled))
        assert self.view(merchant) == self.true_balance[merchant]

    # -- the properties ----------------------------------------------------------------------------
    # (plain SQL: they run after every step, and building peewee queries would be most of the time)
    @invariant()
    def view_never_exceeds_what_the_merchant_really_has(self) -> None:
        balances = {name: balance for name, currency, balance in database.execute_sql(
            "SELECT name, currency, balance FROM account") if currency == CURRENCY}
        for m in MERCHANTS:
            view = balances.get(f"merchant:{m}", 0)
            could_hold = self.true_balance[m] - self.unapplied_deductions(m)
            assert 0 <= view <= could_hold, (m, view, self.true_balance[m], self.unapplied_deductions(m))
            assert -balances.get(f"debt:{m}", 0) == sum(d.owed for d in self.debts[m])

    @invariant()
    def books_sound_and_sequences_gapless(self) -> None:
        assert ledger.check_invariants() == []
        rows = database.execute_sql("SELECT merchant_id, sequence, kind, ticket_id FROM ledger_transaction "
                                    "WHERE merchant_id IS NOT NULL ORDER BY id").fetchall()
        counters = dict(database.execute_sql("SELECT merchant_id, sequence FROM merchant_sequence").fetchall())
        for m in MERCHANTS:
            mine = [tuple(r[1:]) for r in rows if r[0] == m]
            assert [r[0] for r in mine] == list(range(1, len(mine) + 1)), (m, mine)  # 1..n in posting order
            assert mine == [(mv.sequence, mv.kind, mv.ticket_id) for mv in self.announced[m]]
            assert counters.get(m, 0) == len(mine)
        assert not {r[0] for r in rows} - set(MERCHANTS)
        # announced kinds all numbered, internal postings (balance syncs, debt bookings) never
        for kind, total, numbered, named in database.execute_sql(
                "SELECT kind, COUNT(*), COUNT(sequence), COUNT(merchant_id) FROM ledger_transaction GROUP BY kind"):
            assert (numbered, named) == ((total, total) if kind in ANNOUNCED else (0, 0)), kind


def test_our_view_of_merchant_funds_survives_any_order_of_snapshots(snapshot_app) -> None:
    BalanceSnapshots.app = snapshot_app
    run_state_machine_as_test(BalanceSnapshots, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
