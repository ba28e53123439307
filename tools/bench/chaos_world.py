"""The chaos soak's world: upstream, parties and agents whose every choice is fixed by the seed.

The soak compares the books of a run under faults with those of a fault-free run of the same
seed, so nothing that decides money may depend on timing. Hence:

* every choice is drawn from ``rng(seed, external_ref, what, k)`` — the ticket's reference, never
  its id or version (both depend on timing) — where ``k`` counts the occasions of that kind on
  the ticket (the k-th time it entered a state, the k-th decision in a stage, from the audit trail);
* every ticket has a merchant of its own, funded (or not) before its complaint is published, so
  whether a refund is covered depends on that ticket alone; the fee budget is out of reach;
* parties answer at once (the deadlines are long beside the faults: the silent ones wait them out);
* a supervisor approves every payment awaiting approval.

Upstream messages go to ``op.intake`` through the demo's `Mailbox` (message ids derived from the
event answered, so a redelivered event makes a duplicate the intake refuses); agents work through
the HTTP API of ``disputes api`` with bearer tokens and decide with the demo's `decide`.
"""
from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from kombu import Connection, Consumer, Exchange, Queue

from disputes.settings import EVENTS_EXCHANGE
from tools.simulation.decisions import decide
from tools.simulation.parties import (CONFIRM_ACCEPT, CONFIRM_DECLINE, EVIDENCE_SENT, GOODS_RETURNED, INTERCEPTED,
                                         MERCHANT_APPROVES, NOT_INTERCEPTED, VOUCHER_PAID, VOUCHER_WRONG_FIRST)
from tools.simulation.world import (DEFAULT_SHARES, SILENT, Mailbox, complaints, evidence_item, normalize_shares,
                                       plan_answers, rng)

log = logging.getLogger("disputes.chaos")

#: The soak's events tap on ``op.events`` (declared before anything is published).
TAP_QUEUE = "chaos.events"
#: The parties answer at the demo's rates (`tools.simulation.parties`), except these, the soak's own.
WITHDRAW_INSTEAD = 0.04
APPEAL, SURVEY = 0.08, 0.30
POOR = 0.2
#: What each stage's agents decide (from the audit trail: the k-th decision in a stage).
DECISIONS = {1: {"request_evidence", "to_judgment"}, 2: {"request_evidence", "to_judgment"},
             3: {"judge", "cannot_judge"}, 4: {"verify_refund", "reject_voucher", "complaint_fee"}}


# ---- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The seed's complaints (each with a merchant of its own), opening balances and answers."""

    seed: int
    complaints: list[tuple[str, dict]]
    balances: dict[str, int]
    answers: dict[str, str]

    @property
    def refs(self) -> list[str]:
        return [body["external_ref"] for _, body in self.complaints]


def make_plan(seed: int, tickets: int, categories: list[str]) -> Plan:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    drawn = complaints(tickets, seed, categories, now)
    balances: dict[str, int] = {}
    for _, body in drawn:
        merchant = f"m-{body['external_ref']}"
        body["merchant_id"] = merchant
        r = rng(seed, body["external_ref"], "balance")
        balances[merchant] = (r.randrange(0, 20_000, 100) if r.random() < POOR
                              else r.randrange(3_000_000, 8_000_000, 100))
    pending = [body["external_ref"] for _, body in drawn if body["negotiation"] == "pending"]
    return Plan(seed, drawn, balances, plan_answers(pending, normalize_shares(DEFAULT_SHARES), seed))


# ---- the events tap -----------------------------------------------------------------------------

@dataclass
class Tap:
    """Every delivery from ``op.events`` in arrival order (duplicates included), handed on to
    `listener` once per event id."""

    url: str
    listener: Callable[[str, dict], None]
    deliveries: list[tuple[str, dict]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    failures: int = 0

    def queue(self) -> Queue:
        exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
        return Queue(TAP_QUEUE, exchange=exchange, routing_key="#", durable=True)

    def declare(self) -> None:
        with Connection(self.url) as connection:
            bound = self.queue()(connection.channel())
            bound.exchange.declare()
            bound.declare()

    def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            try:
                with Connection(self.url) as connection, Consumer(connection.channel(), queues=[self.queue()],
                                                                  on_message=self._on_message, prefetch_count=500):
                    while not should_stop():
                        try:
                            connection.drain_events(timeout=0.2)
                        except socket.timeout:
                            pass
            except Exception:  # noqa: BLE001 - the tap reconnects; it must outlive any fault
                log.exception("events tap failed; reconnecting")
                time.sleep(0.5)

    def _on_message(self, message) -> None:
        key = (message.delivery_info or {}).get("routing_key") or ""
        body = json.loads(message.body)
        self.deliveries.append((key, body))
        event_id = body.get("event_id")
        if event_id not in self.seen:
            self.seen.add(event_id)
            try:
                self.listener(key, body)
            except Exception:  # noqa: BLE001
                self.failures += 1
                log.exception("the soak's parties failed on %s", key)
        message.ack()


# ---- the parties --------------------------------------------------------------------------------

class Parties:
    """Merchants, buyers, logistics and payments answering ``op.events`` at once, by the plan."""

    def __init__(self, plan: Plan, mailbox: Mailbox, on_floor: Callable[[int, str], None]) -> None:
        self.plan, self.mailbox, self.on_floor = plan, mailbox, on_floor
        self.by_ref = {body["external_ref"]: body for _, body in plan.complaints}
        self.entered: Counter[tuple[str, str]] = Counter()
        self.terminal: dict[str, str] = {}
        self.owed: dict[str, int] = {}
        #: What reached the buyer per ticket (from the ``ledger.*`` events): a voucher covers the rest.
        self.paid: Counter[str] = Counter()
        self.voucher_asks: Counter[str] = Counter()
        self.voucher_notices: Counter[str] = Counter()
        self.debt: Counter[str] = Counter()
        self.did: Counter[str] = Counter()
        self.lock = threading.Lock()

    def r(self, ref: str, *what: object):
        return rng(self.plan.seed, ref, *what)

    def send(self, routing_key: str, event: dict, fields: dict, tag: str, by_ref: bool = False) -> None:
        ticket = ({"source": event["source"], "external_ref": event["external_ref"]} if by_ref
                  else {"ticket_id": event["ticket_id"]})
        self.did[routing_key] += 1
        self.mailbox.post(routing_key, {**ticket, **fields}, f"chaos:{routing_key}:{event['external_ref']}:{tag}")

    def on_event(self, key: str, event: dict) -> None:
        with self.lock:
            self._on_event(key, event)

    def _on_event(self, key: str, event: dict) -> None:
        ref = event.get("external_ref")
        if ref not in self.by_ref:
            return
        if key.startswith("ledger."):
            self.on_ledger(ref, event)
            return
        if key == "notify.payment_awaited" and event.get("recipient") == "merchant":
            self.on_payment_awaited(ref, event)
            return
        if not key.startswith("ticket."):
            return
        data, to = event.get("data") or {}, event["to_state"]
        if "refund_amount" in data and event.get("action") != "submit":
            self.owed[ref] = int(data["refund_amount"])
        if to in ("closed", "resolved", "withdrawn"):
            self.terminal[ref] = to
        else:
            self.terminal.pop(ref, None)  # an appeal reopens a closed ticket
        self.on_floor(event["ticket_id"], to)
        if event.get("from_state") == to:
            if to == "intercepting" and data.get("interception_requested"):
                self.on_interception_requested(ref, event)
            return
        self.entered[(ref, to)] += 1
        k = self.entered[(ref, to)]
        handler = getattr(self, f"on_{to}", None)
        if handler is not None:
            handler(ref, event, data, k)

    def on_negotiating(self, ref: str, event: dict, data: dict, k: int) -> None:
        option = self.plan.answers.get(ref)
        if option in (None, SILENT):
            return
        evidence = [evidence_item(self.r(ref, "merchant evidence"), "merchant", ref, 0, "chat_log")] \
            if option == "platform_judgment" else []
        self.send("merchant.responded", event, {"merchant_id": self.by_ref[ref]["merchant_id"], "option": option,
                                                "evidence": evidence}, f"{k}", by_ref=True)

    def on_intercepting(self, ref: str, event: dict, data: dict, k: int) -> None:
        if self.r(ref, "approve", k).random() < MERCHANT_APPROVES:
            self.send("merchant.refund_approved", event, {"merchant_id": self.by_ref[ref]["merchant_id"]}, f"{k}")

    def on_interception_requested(self, ref: str, event: dict) -> None:
        roll = self.r(ref, "logistics").random()
        if roll < INTERCEPTED + NOT_INTERCEPTED:
            self.send("logistics.interception_result", event, {"success": roll < INTERCEPTED}, "1")

    def on_awaiting_confirmation(self, ref: str, event: dict, data: dict, k: int) -> None:
        roll = self.r(ref, "confirm", k).random()
        if roll < CONFIRM_ACCEPT + CONFIRM_DECLINE:
            self.send("customer.confirmed", event, {"user_id": self.by_ref[ref]["user_id"],
                                                    "accept": roll < CONFIRM_ACCEPT}, f"{k}", by_ref=True)

    def on_awaiting_evidence(self, ref: str, event: dict, data: dict, k: int) -> None:
        for party in data.get("parties") or ():
            r = self.r(ref, "evidence", k, party)
            if party == "user" and r.random() < WITHDRAW_INSTEAD:
                self.send("customer.withdrew", event, {"user_id": self.by_ref[ref]["user_id"]}, f"{k}")
            elif r.random() < EVIDENCE_SENT:
                items = [evidence_item(r, party, ref, k) for _ in range(r.randint(1, 2))]
                self.send("evidence.submitted", event, {"party": party, "items": items}, f"{k}:{party}")

    def on_awaiting_payment(self, ref: str, event: dict, data: dict, k: int) -> None:
        if data.get("awaiting") == "voucher":
            self.voucher_asks[ref] += 1
            self.voucher(ref, event, self.voucher_asks[ref], first=event.get("action") != "reject_voucher")
        elif data.get("remedy") == "return_and_refund" and self.r(ref, "goods", k).random() < GOODS_RETURNED:
            self.send("goods.returned", event, {"tracking_no": f"SF{self.r(ref, 'tracking', k).randrange(10**9):09d}"},
                      f"{k}")

    def on_payment_awaited(self, ref: str, notice: dict) -> None:
        """A voucher awaited without its own ``ticket.awaiting_payment`` event (the goods came
        back and the merchant's funds fell short): answer the notice."""
        self.voucher_notices[ref] += 1
        if self.voucher_notices[ref] > self.voucher_asks[ref]:
            self.voucher_asks[ref] += 1
            self.voucher(ref, notice, self.voucher_asks[ref], first=True)

    def voucher(self, ref: str, event: dict, n: int, first: bool) -> None:
        habit = self.r(ref, "voucher habit").random()
        if habit >= VOUCHER_PAID + VOUCHER_WRONG_FIRST or n > 4:
            return  # never pays (or gave up): the platform advances the refund at the deadline
        due = max(0, self.owed.get(ref, 0) - self.paid[ref])
        amount = due if habit < VOUCHER_PAID or not first else max(1, due - self.r(ref, "short", n).randrange(100, 1000, 10))
        uri = f"https://vouchers.example/{ref}/{n}"
        self.send("payment.voucher_uploaded", event, {
            "merchant_id": self.by_ref[ref]["merchant_id"],
            "voucher": {"uri": uri, "sha256": f"{self.r(ref, uri).getrandbits(256):064x}", "amount": amount,
                        "currency": self.by_ref[ref]["order"]["currency"]}}, f"{n}")

    def on_closed(self, ref: str, event: dict, data: dict, k: int) -> None:
        if k == 1 and self.r(ref, "appeal").random() < APPEAL:
            reasons = ["disagree_liability"]
            party = "user" if self.r(ref, "appeal party").random() < 0.7 else "merchant"
            self.send("appeal.filed", event, {"party": party, "reason_code": reasons[0]}, f"{k}")
        elif self.r(ref, "survey", k).random() < SURVEY:
            self.send("survey.answered", event, {"user_id": self.by_ref[ref]["user_id"],
                                                 "score": self.r(ref, "score", k).randint(1, 5)}, f"{k}")

    def on_ledger(self, ref: str, event: dict) -> None:
        if event.get("kind") in ("refund_deducted", "platform_advance", "offline_transfer"):
            self.paid[ref] += int(event["amount"])
        if event.get("kind") == "platform_advance":  # payments reports the merchant's next income
            merchant = self.by_ref[ref]["merchant_id"]
            self.debt[merchant] += int(event["amount"])
            income = self.debt[merchant] + self.r(ref, "income").randrange(0, 20_000, 100)
            self.mailbox.post("merchant.balance_changed", {
                "merchant_id": merchant, "balance": self.plan.balances[merchant] + income,
                "currency": event.get("currency", "CNY")}, f"chaos:balance:{merchant}:income")


# ---- the floor ----------------------------------------------------------------------------------

class Http:
    """A keep-alive HTTP client of ``disputes api`` that waits out the API's restarts."""

    def __init__(self, base: str, token: str, should_stop: Callable[[], bool], stats: Counter) -> None:
        import requests
        self.base, self.should_stop, self.stats = base, should_stop, stats
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        import requests
        pause = 0.1
        while not self.should_stop():
            try:
                reply = self.session.request(method, self.base + path, json=body, timeout=30)
            except requests.RequestException:
                self.stats["http connection errors"] += 1
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            if reply.status_code >= 500:
                self.stats[f"http {reply.status_code}"] += 1
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                if method == "POST":  # an action may have been accepted before the 5xx: let the caller reload
                    return reply.status_code, None
                continue
            try:
                payload = reply.json() if reply.content else None
            except ValueError:
                payload = None
            return reply.status_code, payload
        return 0, None


class Floor:
    """Agents of the four pools and a supervisor, threads in this process, over HTTP."""

    def __init__(self, seed: int, base: str, agents: list[tuple[int, str]], supervisor: str,
                 should_stop: Callable[[], bool]) -> None:
        self.seed, self.base, self.should_stop = seed, base, should_stop
        self.agents, self.supervisor_token = agents, supervisor
        self.stats: Counter[str] = Counter()
        self.approvals: queue.Queue[int] = queue.Queue()
        self.options: dict[int, dict] = {}

    def threads(self) -> list[threading.Thread]:
        out = [threading.Thread(target=self.agent, args=(stage, token), name=f"agent-{stage}-{i}", daemon=True)
               for i, (stage, token) in enumerate(self.agents)]
        out.append(threading.Thread(target=self.supervise, name="supervisor", daemon=True))
        return out

    def on_floor(self, ticket_id: int, state: str) -> None:
        if state == "stage4":
            self.approvals.put(ticket_id)

    def agent(self, stage: int, token: str) -> None:
        http = Http(self.base, token, self.should_stop, self.stats)
        if stage not in self.options:
            self.options[stage] = http.call("GET", f"/options/stage{stage}")[1]  # type: ignore[assignment]
        submitted: dict[int, tuple[int, float]] = {}
        idle, look_at = 0.05, 0.0
        while not self.should_stop():
            if time.monotonic() >= look_at:  # my tickets: a claim whose answer was lost, an approval decided
                look_at = time.monotonic() + 2.0
                status, mine = http.call("GET", "/me/tickets")
                for summary in mine if status == 200 and isinstance(mine, list) else []:
                    last = submitted.get(summary["id"])
                    if last and last[0] == summary["version"] and time.monotonic() - last[1] < 20:
                        continue  # decided already; the worker has not applied it yet
                    status, ticket = http.call("GET", f"/tickets/{summary['id']}")
                    if status == 200 and isinstance(ticket, dict):
                        self.work(http, stage, ticket, submitted)
            status, ticket = http.call("POST", "/me/claim")
            if status != 200 or not isinstance(ticket, dict):
                if status not in (204, 0):
                    self.stats[f"claim answered {status}"] += 1
                time.sleep(idle)
                idle = min(idle * 2, 0.4)
                continue
            idle = 0.05
            self.stats[f"stage{stage} claims"] += 1
            self.work(http, stage, ticket, submitted)

    def work(self, http: Http, stage: int, ticket: dict, submitted: dict) -> None:
        for _ in range(4):
            if ticket.get("state") != f"stage{stage}" or not ticket.get("allowed_actions"):
                return  # not mine to decide now (waiting for a supervisor, moved on)
            status, trail = http.call("GET", f"/tickets/{ticket['id']}/events")
            if status != 200 or not isinstance(trail, list):
                return
            k = sum(1 for e in trail if e["from_state"] == f"stage{stage}" and e["action"] in DECISIONS[stage])
            r = rng(self.seed, ticket["external_ref"], f"stage{stage}", k)
            action, params, qc = decide(stage, ticket, self.options[stage], r)
            status, body = http.call("POST", f"/tickets/{ticket['id']}/actions", {
                "action": action, "expected_version": ticket["version"], "params": params, "qc": qc})
            if status == 202:
                self.stats[f"stage{stage} {action}"] += 1
                submitted[ticket["id"]] = (ticket["version"], time.monotonic())
                return
            self.stats[f"action answered {status}"] += 1
            if status not in (0, 403, 409) and status < 500:
                log.warning("desk refused %s on ticket %s: %s", action, ticket["id"], body)
                return
            status, ticket = http.call("GET", f"/tickets/{ticket['id']}")  # type: ignore[assignment]
            if status != 200 or not isinstance(ticket, dict):
                return

    def supervise(self) -> None:
        """Approve every payment awaiting approval: the tickets that entered stage 4 (from the
        events), and every 10 s the whole stage-4 list (what a supervisor's dashboard shows)."""
        http = Http(self.base, self.supervisor_token, self.should_stop, self.stats)
        sweep_at = time.monotonic() + 10
        while not self.should_stop():
            if time.monotonic() >= sweep_at:
                sweep_at = time.monotonic() + 10
                status, rows = http.call("GET", "/tickets?state=stage4&limit=100")
                for row in rows if status == 200 and isinstance(rows, list) else []:
                    if row.get("assignee") is not None:
                        self.approvals.put(row["id"])
            try:
                ticket_id = self.approvals.get(timeout=0.2)
            except queue.Empty:
                continue
            status, ticket = http.call("GET", f"/tickets/{ticket_id}")
            if status != 200 or not isinstance(ticket, dict):
                continue
            pending = (ticket.get("payment") or {}).get("pending_approval")
            if not pending or "approve_payment" not in (ticket.get("allowed_actions") or []):
                continue
            status, body = http.call("POST", f"/tickets/{ticket_id}/actions", {
                "action": "approve_payment", "expected_version": ticket["version"], "params": {}, "qc": None})
            code = ((body or {}).get("error") or {}).get("code") if isinstance(body, dict) else None
            self.stats[f"supervisor approve_payment {pending['kind']} answered {status}"
                       + (f" {code}" if code else "")] += 1
            if status != 202:
                time.sleep(0.1)
                self.approvals.put(ticket_id)  # look again (it moved on under us, or the API was down)
