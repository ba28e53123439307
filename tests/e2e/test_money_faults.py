"""Money under faults, on RabbitMQ + Redis + PostgreSQL: the ledger ends the same as without them
(issue 6, "Done when" 2).

A seeded set of ten tickets goes through judgment and stage 4 with every kind of money: refunds
deducted at once (full, partial, shared liability), offline transfers proven by vouchers (one
rejected and sent again), goods returned then refunded, goods never returned, a missed voucher
deadline making the platform advance the refund, complaint fees, and a later balance report that
recovers the advance as debt. The same scenario runs twice, each on a fresh schema with its own
processes (``disputes intake``, ``disputes scheduler``, one ``dramatiq`` for negotiation and stages
1-3, another for stage 4):

* fault-free: every message delivered once;
* faulty: every money message (``merchant.balance_changed``, ``payment.voucher_uploaded``,
  ``goods.returned``) delivered twice, and the stage-4 worker SIGKILLed once while it holds a
  complaint fee mid-transaction (the ledger rows written, the ticket update waiting on a row lock
  the test holds); it is restarted and the scheduler's reconciler re-drives what it held after
  ``OP_REDRIVE_AFTER`` (5 s).

Then the two ledgers — the set of (idempotency key, kind, amount) and every account's balance —
are identical, the ``ledger.*`` events published are the same, and ``check_invariants()`` is empty.
"""
from __future__ import annotations

import random
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable

import pytest

from tests.e2e.conftest import Agent, Stack, complaint_body, wait_for

pytestmark = pytest.mark.servers

SEED = 20261124
FLOOR_MODULES = ["workers.negotiation", "workers.stage1", "workers.stage2", "workers.stage3"]
FLOOR_QUEUES = ["negotiation", "stage1", "stage2", "stage3"]
DEADLINES = {"merchant_response": "1h", "customer_confirmation": "1h", "interception": "1h", "evidence": "1h",
             "payment_voucher": "4s", "appeal": "1h"}
#: Fees and advances above 2000 need a supervisor (four eyes); the month's fee budget is ample.
POLICY = {"complaint_fee": {"approval_threshold": 2000, "monthly_budget": 1_000_000}}
RICH, POOR = "m-rich", "m-poor"


@dataclass
class Plan:
    """One ticket of the scenario: who is liable for what, and what happens after the judgment."""

    ref: str
    merchant: str
    claimed: int
    liability: str
    remedy: str
    amount: int | None = None
    #: After the judgment: "voucher", "voucher_rejected_once", "goods", "deadline" or None.
    then: str | None = None
    fee: int | None = None


def scenario(seed: int) -> list[Plan]:
    r = random.Random(seed)
    claim = lambda: r.choice((1500, 2000, 3000, 4000, 5000))  # noqa: E731
    return [
        Plan("T01", RICH, claim(), "merchant", "full_refund"),
        Plan("T02", RICH, 5000, "merchant", "partial_refund", amount=r.choice((700, 1200, 2500))),
        Plan("T03", RICH, claim(), "both", "full_refund"),
        Plan("T04", POOR, claim(), "merchant", "full_refund", then="voucher"),
        Plan("T05", POOR, claim(), "merchant", "full_refund", then="voucher_rejected_once"),
        # a missed deadline: the platform advances; above 2000 a supervisor approves it first
        Plan("T06", POOR, r.choice((3000, 4000, 5000)), "merchant", "full_refund", then="deadline"),
        Plan("T07", RICH, claim(), "customer", "no_refund", fee=r.choice((500, 1000, 2000))),
        Plan("T08", RICH, claim(), "neither", "no_refund", fee=5000),  # above the threshold: four eyes
        Plan("T09", RICH, claim(), "merchant", "return_and_refund", then="goods"),
        Plan("T10", RICH, claim(), "merchant", "return_and_refund", then="deadline"),
    ]


#: The ticket whose stage-4 decision is in flight when the stage-4 worker is killed (a complaint fee).
VICTIM = "T07"


class Run:
    """Drives the scenario on one stack; `faulty` doubles money messages and kills stage 4 once."""

    def __init__(self, stack: Stack, plans: list[Plan], faulty: bool) -> None:
        self.stack, self.plans, self.faulty = stack, {p.ref: p for p in plans}, faulty
        self.prefix = f"money-{SEED}"
        self.killed = False
        self.victim_id = 0

    # -- plumbing ---------------------------------------------------------------------------------
    def money_message(self, routing_key: str, body: dict, name: str) -> None:
        """A money message with a stable id (its ledger keys derive from it): twice when faulty."""
        message_id = f"{self.prefix}-{name}"
        for _ in range(2 if self.faulty else 1):
            self.stack.publish(routing_key, {"schema_version": 1, **body}, message_id=message_id)
        wait_for(lambda: self.processed(message_id), 20, f"message {name} applied", on_timeout=self.stack.logs)

    def processed(self, message_id: str) -> bool:
        from models.intake import ProcessedMessage
        with self.stack.app.db.connection_context():
            return ProcessedMessage.select().where(ProcessedMessage.message_id == message_id).exists()

    def state(self, tid: int) -> str:
        from models.ticket import Ticket
        with self.stack.app.db.connection_context():
            return Ticket.get_by_id(tid).state

    def wait_state(self, tid: int, state: str, timeout: float = 30) -> None:
        wait_for(lambda: self.state(tid) == state, timeout, f"ticket {tid} in {state} (now {self.state(tid)})",
                 interval=0.1, on_timeout=self.stack.logs)

    def act(self, agent: Agent, ticket: dict, action: str, params: dict | None = None) -> None:
        status, answer = self.stack.api("POST", f"/tickets/{ticket['id']}/actions", agent,
                                        {"action": action, "expected_version": ticket["version"],
                                         "params": params or {}, "qc": {"verdict": "ok"}})
        if status != 202:
            _, now = self.stack.api("GET", f"/tickets/{ticket['id']}", agent)
            _, trail = self.stack.api("GET", f"/tickets/{ticket['id']}/events", agent)
            raise AssertionError(f"{action} on {ticket['id']} -> {status}: {answer}\nticket: {now}\n"
                                 f"trail: {[(e['actor'], e['action'], e['to_state'], e['data']) for e in trail]}")

    def claim(self, agent: Agent) -> dict:
        _, ticket = self.stack.api("POST", "/me/claim", agent, expect=200)
        return ticket

    def supervisor(self, name: str) -> Agent:
        """A stage-4 supervisor (the CLI's ``agents add --supervisor``), its token known to the test."""
        from models.agent import Agent as AgentRow, hash_token
        token = f"{name}-token-{SEED}"
        with self.stack.app.db.connection_context():
            row = AgentRow.create(name=name, stage=4, supervisor=True, capacity=50, token_hash=hash_token(token))
        return Agent(name, 4, token, row.id)

    def wait_version(self, tid: int, version: int) -> None:
        from models.ticket import Ticket

        def reached() -> bool:
            with self.stack.app.db.connection_context():
                return Ticket.get_by_id(tid).version >= version
        wait_for(reached, 45, f"ticket {tid} at version {version}", interval=0.1, on_timeout=self.stack.logs)

    def approve(self, boss: Agent, ticket: dict) -> dict:
        """The supervisor approves the pending payment; returns the ticket after it applied."""
        pending = ticket["payment"]["pending_approval"]
        assert pending and "approve_payment" in self.stack.ticket(ticket["id"], boss)["allowed_actions"], ticket
        self.stack.api("POST", f"/tickets/{ticket['id']}/actions", boss,
                       {"action": "approve_payment", "expected_version": ticket["version"]}, expect=202)
        self.wait_version(ticket["id"], ticket["version"] + 1)
        return self.stack.ticket(ticket["id"], boss)

    def balance(self, merchant: str, amount: int, name: str) -> None:
        self.money_message("merchant.balance_changed", {"merchant_id": merchant, "balance": amount,
                                                        "currency": "CNY"}, name)

    def voucher(self, tid: int, plan: Plan, name: str) -> None:
        self.money_message("payment.voucher_uploaded", {
            "ticket_id": tid, "merchant_id": plan.merchant,
            "voucher": {"uri": f"https://files.example/{plan.ref}-{name}.png", "sha256": "ef" * 32,
                        "amount": plan.claimed, "currency": "CNY"}}, f"{plan.ref}-{name}")

    # -- the scenario -----------------------------------------------------------------------------------
    def run(self) -> None:
        s = self.stack
        s.start_intake()
        s.start_scheduler()
        s.start_workers("floor", FLOOR_MODULES, queues=FLOOR_QUEUES, threads=4)
        self.stage4 = s.start_workers("stage4", ["workers.stage4"], queues=["stage4"], threads=2)
        s1, s3, s4 = s.add_agents(("money-s1", 1, 50), ("money-s3", 3, 50), ("money-s4", 4, 50))
        boss = self.supervisor("money-boss")

        self.balance(RICH, 60_000, "balance-rich")
        self.balance(POOR, 0, "balance-poor")
        self.ids: dict[str, int] = {}
        for ref in self.plans:
            body = complaint_body(ref=f"{self.prefix}-{ref}", negotiation="failed",
                                  merchant_id=self.plans[ref].merchant, user_id=f"buyer-{ref}",
                                  claimed_amount=self.plans[ref].claimed)
            body["order"]["amount"] = 8000
            s.publish("complaint.submitted", body, message_id=f"{self.prefix}-complaint-{ref}")
            self.ids[ref] = s.find_ticket(body["source"], body["external_ref"], s1)["id"]
        refs = {tid: ref for ref, tid in self.ids.items()}
        assert sorted(self.ids.values()) == list(self.ids.values()), "tickets created out of order"

        # Stage 1 sends each to judgment.
        for _ in self.plans:
            ticket = self.claim(s1)
            self.act(s1, ticket, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
            self.wait_state(ticket["id"], "stage3")

        # Stage 3 judges; what each judgment waits for arrives at once (vouchers before their deadline).
        for _ in self.plans:
            ticket = self.claim(s3)
            plan = self.plans[refs[ticket["id"]]]
            params = {"liability": plan.liability, "remedy": plan.remedy}
            if plan.amount is not None:
                params["amount"] = plan.amount
            self.act(s3, ticket, "judge", params)
            tid = ticket["id"]
            if plan.then is None:
                self.wait_state(tid, "stage4")
                continue
            self.wait_state(tid, "awaiting_payment")
            if plan.then in ("voucher", "voucher_rejected_once"):
                self.voucher(tid, plan, "voucher-1")
                self.wait_state(tid, "stage4")
            elif plan.then == "goods":
                self.money_message("goods.returned", {"ticket_id": tid, "tracking_no": f"SF-{plan.ref}"},
                                   f"{plan.ref}-goods")
                self.wait_state(tid, "stage4")
        for ref, plan in self.plans.items():  # the missed deadlines (4 s) wake their tickets into stage 4
            if plan.then == "deadline":
                self.wait_state(self.ids[ref], "stage4")

        # Stage 4 verifies, rejects a voucher once, grants fees; the victim's fee is where stage 4 dies.
        rejected = False
        remaining = set(self.ids.values())
        while remaining:
            ticket = self.claim(s4)
            tid, plan = ticket["id"], self.plans[refs[ticket["id"]]]
            if ticket["payment"]["pending_approval"]:  # the advance waits for four eyes
                assert ticket["payment"]["pending_approval"]["kind"] == "platform_advance"
                assert ticket["allowed_actions"] == []
                ticket = self.approve(boss, ticket)
            if plan.then == "voucher_rejected_once" and not rejected:
                rejected = True
                self.act(s4, ticket, "reject_voucher", {"reason_code": "amount_mismatch"})
                self.wait_state(tid, "awaiting_payment")
                self.voucher(tid, plan, "voucher-2")
                self.wait_state(tid, "stage4")
                continue
            if plan.fee is not None:
                if self.faulty and plan.ref == VICTIM:
                    self.kill_stage4_during(tid, lambda: self.act(s4, ticket, "complaint_fee", {"amount": plan.fee}))
                else:
                    self.act(s4, ticket, "complaint_fee", {"amount": plan.fee})
                if plan.fee > POLICY["complaint_fee"]["approval_threshold"]:
                    self.wait_version(tid, ticket["version"] + 1)
                    self.approve(boss, self.stack.ticket(tid, s4))
            else:
                self.act(s4, ticket, "verify_refund")
            self.wait_state(tid, "closed", timeout=45)
            remaining.discard(tid)

        # The poor merchant receives money: the advance is recovered from it.
        self.balance(POOR, 2500, "balance-poor-2")
        self.settle()
        s.assert_alive()

    def kill_stage4_during(self, tid: int, decide: Callable[[], None]) -> None:
        """Hold the platform account's row lock (the fee's budget guard takes it; the API's acceptance of
        the decision does not), let stage 4 start the decision (its transaction waits on the lock with
        the dispatch claimed), SIGKILL it, release, restart it."""
        from models import ledger
        s = self.stack
        with s.app.db.connection_context():
            platform = ledger.account("platform", "CNY").id  # the row exists before anything moved
        lock = s.servers.pg_connect(search_path=s.schema)
        try:
            with lock.cursor() as cur:
                cur.execute("SELECT id FROM account WHERE id = %s FOR UPDATE", (platform,))
                assert cur.fetchone() is not None
                lock_pid = lock.get_backend_pid()
            decide()

            def blocked() -> bool:
                with closing(s.servers.pg_connect(search_path=s.schema)) as watch, watch.cursor() as cur:
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                (lock_pid,))
                    return cur.fetchone()[0] >= 1
            wait_for(blocked, 30, "the stage-4 worker to block mid-transaction on the ticket", on_timeout=s.logs)
            with closing(s.servers.pg_connect(search_path=s.schema)) as watch, watch.cursor() as cur:
                cur.execute("SELECT count(*) FROM ledger_transaction "
                            "WHERE kind = 'complaint_fee_paid' AND ticket_id = %s", (tid,))
                assert cur.fetchone()[0] == 0  # posted inside the blocked transaction: not visible, not committed
            self.stage4.kill()
            assert self.stage4.popen.returncode == -9
            self.killed = True
            self.victim_id = tid
        finally:
            lock.rollback()
            lock.close()
        self.stage4 = s.start_workers("stage4", ["workers.stage4"], queues=["stage4"], threads=2)

    def settle(self) -> None:
        """Wait until nothing is left to do: every dispatch of the floor done, every event published.
        (Notification dispatches are not money and have their own worker, not run here.)"""
        from models.outbox import Dispatch, OutboxEvent

        def quiet() -> bool:
            with self.stack.app.db.connection_context():
                return (Dispatch.select().where(Dispatch.done_at.is_null() & (Dispatch.queue != "notify")).count() == 0
                        and OutboxEvent.select().where(OutboxEvent.published_at.is_null()).count() == 0)
        wait_for(quiet, 40, "every dispatch done and every event published", interval=0.2, on_timeout=self.stack.logs)

    # -- what it left -----------------------------------------------------------------------------------
    def books(self) -> dict:
        from models import ledger
        from models.ledger import Account, LedgerTransaction
        from models.outbox import Dispatch
        from models.ticket import Ticket
        with self.stack.app.db.connection_context():
            assert ledger.check_invariants() == []
            tickets = {t.external_ref.rsplit("-", 1)[-1]: t for t in Ticket.select()}
            for ref, t in tickets.items():
                assert t.state == "closed", (ref, t.state)
                assert ledger.paid_to_buyer(t.id) == t.refunded_amount == t.refund_amount, (ref, t.refunded_amount)
            outcomes = {d.outcome for d in Dispatch.select().where(Dispatch.queue != "notify")}
            return {
                "transactions": {(x.idempotency_key, x.kind, x.amount) for x in LedgerTransaction.select()},
                "balances": {(a.name, a.currency): a.balance for a in Account.select()},
                "tickets": {ref: (t.id, t.version, t.refund_amount, t.refunded_amount, t.complaint_fee)
                            for ref, t in tickets.items()},
                "dead": sorted(o for o in outcomes if o and o.startswith("dead")),
                # how often the killed decision was sent: the reconciler re-drove it
                "victim_sends": [d.attempts for d in Dispatch.select().where(
                    (Dispatch.ticket_id == self.victim_id) & (Dispatch.kind == "act"))],
            }

    def published(self) -> set[tuple[str, str, int]]:
        """The ``ledger.*`` events downstream received (a repeat, if the relay sent one twice, counts once)."""
        from models.outbox import OutboxEvent
        with self.stack.app.db.connection_context():
            expected = OutboxEvent.select().where(OutboxEvent.routing_key.startswith("ledger.")).count()

        def all_ledger_events() -> set | None:
            got = {(b["idempotency_key"], k, b["amount"]) for k, b in self.stack.tap.drain() if k.startswith("ledger.")}
            return got if len(got) == expected else None
        return wait_for(all_ledger_events, 15, f"{expected} ledger events on op.events")


def test_the_ledger_ends_the_same_with_every_money_message_twice_and_stage4_killed_once(stacks) -> None:
    plans = scenario(SEED)
    results = {}
    for name, faulty in (("fault-free", False), ("faulty", True)):
        started = time.monotonic()
        with stacks(name, deadlines=DEADLINES, policy=POLICY) as stack:
            run = Run(stack, plans, faulty)
            run.run()
            results[name] = (run.books(), run.published(), run.killed, time.monotonic() - started)
    (clean, clean_events, _, _), (faulty, faulty_events, killed, _) = results["fault-free"], results["faulty"]
    assert killed, "the stage-4 worker was never killed: the fault did not happen"
    assert max(faulty["victim_sends"]) >= 2, faulty["victim_sends"]  # came back only through the reconciler
    # The scenario really moved every kind of money
    kinds = {kind for _, kind, _ in clean["transactions"]}
    assert kinds >= {"balance_sync", "refund_deducted", "offline_transfer", "platform_advance", "debt_recorded",
                     "debt_settled", "complaint_fee_paid"}, kinds
    # And the faults changed nothing: same movements, same balances, same tickets, same events
    assert faulty["transactions"] == clean["transactions"], (
        f"only without faults: {clean['transactions'] - faulty['transactions']}; "
        f"only with faults: {faulty['transactions'] - clean['transactions']}")
    assert faulty["balances"] == clean["balances"]
    assert faulty["tickets"] == clean["tickets"]
    assert faulty_events == clean_events
    assert {k for k, _, _ in clean_events} == {key for key, kind, _ in clean["transactions"]
                                              if kind in ("refund_deducted", "platform_advance", "complaint_fee_paid",
                                                          "debt_settled")}
    assert clean["dead"] == faulty["dead"] == []
    approvals = {ref: t for ref, t in clean["tickets"].items() if ref in ("T06", "T08")}
    assert approvals and all(t[3] is not None for t in approvals.values())
    # And the advance was recovered from the poor merchant's next balance (up to what it had)
    debt_left = -clean["balances"].get(("debt:" + POOR, "CNY"), 0)
    advanced = sum(amount for _, kind, amount in clean["transactions"] if kind == "platform_advance")
    assert debt_left == max(0, advanced - 2500)


# ---- concurrency on PostgreSQL: two changes that both read the money before either writes ---------------

def _two_at_once(stack: Stack, monkeypatch: pytest.MonkeyPatch, kind: str, work: list[Callable[[], None]]) -> list:
    """Run `work` on two threads whose changes both pass their guards before either posts `kind` to the
    ledger: ``ledger.post`` of that kind waits until both got there (a barrier), then both post. This
    only widens a window that concurrent stage workers hit by chance; it changes no decision."""
    import threading

    from models import ledger
    barrier = threading.Barrier(len(work), timeout=5)
    real_post = ledger.post

    def post(key: str, posted_kind: str, *args: object, **kwargs: object) -> object:
        if posted_kind == kind:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:  # the other change was refused (the fix): go on alone
                pass
        return real_post(key, posted_kind, *args, **kwargs)
    monkeypatch.setattr(ledger, "post", post)
    errors: list = []

    def run(job: Callable[[], None]) -> None:
        try:
            with stack.app.db.connection_context():
                job()
        except Exception as error:  # noqa: BLE001 - a refusal is a fine outcome; reported below
            errors.append(error)
    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def _in_stage3(policy, ref: str, merchant: str, claimed: int) -> int:
    from models.base import utcnow
    from models.change import Actor
    from models.workflow import apply, open_ticket
    fields = dict(source="race", external_ref=ref, channel="app", user_id=f"u-{ref}", merchant_id=merchant,
                  order_id=ref, order_amount=10_000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=claimed, occurred_at=utcnow())
    ticket_id = open_ticket(fields, {"negotiation": "failed"}, policy).ticket.id
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy)
    apply(ticket_id, "to_judgment", Actor.agent(1, 1), {"dispute_status": "not_reconciled", "category": "apparel"},
          policy)
    return ticket_id


def test_two_judgments_at_once_never_overdraw_a_merchant(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import ledger
    from models.base import database
    from models.change import Actor
    from models.ticket import Ticket
    from models.workflow import apply
    policy = stack.app.policy
    with stack.app.db.connection_context():
        with database.atomic():
            ledger.sync_merchant_balance("m-race", 5000, "CNY", key="race-fund")
        first, second = (_in_stage3(policy, f"R{i}", "m-race", 5000) for i in (1, 2))
    judge = {"liability": "merchant", "remedy": "full_refund"}
    _two_at_once(stack, monkeypatch, "refund_deducted", [
        lambda: apply(first, "judge", Actor.agent(3, 31), judge, policy),
        lambda: apply(second, "judge", Actor.agent(3, 32), judge, policy)])
    with stack.app.db.connection_context():
        states = sorted(Ticket.get_by_id(t).state for t in (first, second))
        assert ledger.check_invariants() == []
        assert ledger.merchant_funds("m-race", "CNY") >= 0
        # one refund deducted, the other waits for a voucher
        assert states == ["awaiting_payment", "stage4"], states


def test_two_complaint_fees_at_once_never_pass_the_month_budget(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from policy import policy_from_dict
    from models import ledger
    from models.change import Actor
    from models.compensation import budget_left
    from models.base import utcnow
    from models.workflow import apply
    from tests.conftest import fast_policy_dict
    policy = policy_from_dict(fast_policy_dict(complaint_fee={"approval_threshold": 5000, "monthly_budget": 3000}))
    with stack.app.db.connection_context():
        first, second = (_in_stage3(policy, f"F{i}", "m-fee", 4000) for i in (1, 2))
        for ticket_id in (first, second):
            apply(ticket_id, "judge", Actor.agent(3, 31), {"liability": "customer", "remedy": "no_refund"}, policy)
    _two_at_once(stack, monkeypatch, "complaint_fee_paid", [
        lambda: apply(first, "complaint_fee", Actor.agent(4, 41), {"amount": 2000}, policy),
        lambda: apply(second, "complaint_fee", Actor.agent(4, 42), {"amount": 2000}, policy)])
    with stack.app.db.connection_context():
        assert budget_left(policy, utcnow()) >= 0, budget_left(policy, utcnow())
