"""Merchants, buyers, logistics and the payments system, answering what ``op.events`` tells them.

Each party reacts to the events that concern it with the SPEC §4 message a
real one would send, after a human delay, through the `Mailbox`; some stay
silent so the deadline paths run too. The merchant's negotiation answer was
dealt out in advance by the configured shares (`world.plan_answers`); the rest
is drawn per ticket from `rng`. The payments system keeps each merchant's
balance from the ``ledger.*`` events (each idempotency key applied once) and,
after a platform advance, reports the merchant's next income
(``merchant.balance_changed``), from which the system recovers the debt.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from tools.simulation.world import SILENT, Mailbox, evidence_item, rng

#: How long a party takes to answer (uniform, seconds). The demo's deadlines are 2 s, so most
#: answers make it and a few arrive too late, as in life.
DELAYS: dict[str, tuple[float, float]] = {
    "merchant": (0.1, 0.9), "customer": (0.1, 0.8), "evidence": (0.1, 1.2), "goods": (0.1, 1.2),
    "withdraw": (0.1, 1.2), "approve": (0.2, 1.2), "logistics": (0.1, 0.9), "voucher": (0.1, 1.0),
    "appeal": (0.2, 1.0), "survey": (0.1, 1.0), "payments": (0.3, 1.2)}
#: A buyer asked to confirm a settlement: accept, decline (the rest stay silent: counts as accept).
CONFIRM_ACCEPT, CONFIRM_DECLINE = 0.55, 0.20
#: A party asked for evidence sends it; a buyer sometimes withdraws the complaint instead.
EVIDENCE_SENT, WITHDRAW_INSTEAD = 0.75, 0.05
#: During the 48-hour countdown the merchant approves the refund itself.
MERCHANT_APPROVES = 0.30
#: Logistics answers an interception request: stopped, not stopped (else silent: the floor takes it).
INTERCEPTED, NOT_INTERCEPTED = 0.65, 0.25
#: A buyer told to return the goods does so.
GOODS_RETURNED = 0.80
#: A merchant asked for an offline-transfer voucher: pays and proves it, first sends a voucher for
#: the wrong amount (rejected, then the right one), or never does (the platform advances).
VOUCHER_PAID, VOUCHER_WRONG_FIRST = 0.60, 0.20
#: After closing: a party appeals; else the buyer answers the satisfaction survey.
APPEAL, SURVEY = 0.10, 0.50
SCORES = ((1, 2, 3, 4, 5), (8, 7, 15, 35, 35))


@dataclass
class Complaint:
    """What each party knows about its own complaint."""

    user_id: str
    merchant_id: str
    answer: str | None


class Parties:
    """Merchants, buyers, logistics and payments: each ``on_<state>`` answers one kind of event."""

    def __init__(self, mailbox: Mailbox, seed: int, balances: dict[str, int], appeal_reasons: list[str]) -> None:
        self.mailbox, self.seed = mailbox, seed
        self.appeal_reasons = appeal_reasons or ["other"]
        self._known: dict[str, Complaint] = {}
        #: The payments system's view: each merchant's balance and debt, from the ledger events.
        self.balances = dict(balances)
        self.debts: Counter[str] = Counter()
        self._applied: set[str] = set()
        self._income = Counter[str]()
        #: Per ticket: refund owed by the judgment in force, what reached the buyer, a voucher out.
        self._owed: dict[int, int] = {}
        self._paid: Counter[int] = Counter()
        self._voucher_out: dict[int, int] = {}
        self._voucher_asks: Counter[int] = Counter()
        self._voucher_notices: Counter[int] = Counter()
        self._appealed: set[int] = set()
        self._surveyed: set[int] = set()
        #: What the world did, for the demo's summary.
        self.did: Counter[str] = Counter()

    def remember(self, source: str, external_ref: str, user_id: str, merchant_id: str, answer: str | None) -> None:
        self._known[f"{source}:{external_ref}"] = Complaint(user_id, merchant_id, answer)

    # -- dispatch ---------------------------------------------------------------------------------
    def on_event(self, routing_key: str, body: dict) -> None:
        if routing_key.startswith("ledger."):
            self.on_ledger(body)
            return
        if routing_key == "notify.payment_awaited" and body.get("recipient") == "merchant":
            self.on_payment_awaited(body)
            return
        if not routing_key.startswith("ticket."):
            return  # notifications need no answer
        data = body.get("data") or {}
        if "refund_amount" in data and body.get("action") != "submit":
            self._owed[body["ticket_id"]] = int(data["refund_amount"])
        r = rng(self.seed, body["to_state"], body["ticket_id"], body.get("version"))
        if body.get("from_state") == body.get("to_state"):
            if body["to_state"] == "intercepting" and data.get("interception_requested"):
                self.on_interception_requested(body, r)
            return
        handler = getattr(self, f"on_{body['to_state']}", None)
        if handler is not None:
            handler(body, data, r)

    # -- negotiation ------------------------------------------------------------------------------
    def on_negotiating(self, event: dict, data: dict, r: random.Random) -> None:
        option = self._complaint(event).answer
        if option in (None, SILENT):
            self.did["merchant stayed silent"] += 1
            return  # the merchant_response deadline sends the ticket to the floor
        evidence = [evidence_item(r, "merchant", event["ticket_id"], 0, "chat_log")] \
            if option == "platform_judgment" else []
        self._send("merchant.responded", event, r, "merchant",
                   {"merchant_id": self._complaint(event).merchant_id, "option": option, "evidence": evidence},
                   by_ref=True)

    def on_intercepting(self, event: dict, data: dict, r: random.Random) -> None:
        if r.random() < MERCHANT_APPROVES:
            self.did["merchant approved the refund during the countdown"] += 1
            self._send("merchant.refund_approved", event, r, "approve",
                       {"merchant_id": self._complaint(event).merchant_id})

    def on_interception_requested(self, event: dict, r: random.Random) -> None:
        roll = r.random()
        if roll < INTERCEPTED + NOT_INTERCEPTED:
            success = roll < INTERCEPTED
            self.did[f"logistics: interception {'succeeded' if success else 'failed'}"] += 1
            self._send("logistics.interception_result", event, r, "logistics", {"success": success})
        else:
            self.did["logistics: no answer"] += 1

    def on_awaiting_confirmation(self, event: dict, data: dict, r: random.Random) -> None:
        roll = r.random()
        if roll < CONFIRM_ACCEPT + CONFIRM_DECLINE:
            self.did[f"buyer {'accepted' if roll < CONFIRM_ACCEPT else 'declined'} the settlement"] += 1
            self._send("customer.confirmed", event, r, "customer",
                       {"user_id": self._complaint(event).user_id, "accept": roll < CONFIRM_ACCEPT}, by_ref=True)

    # -- the floor --------------------------------------------------------------------------------
    def on_awaiting_evidence(self, event: dict, data: dict, r: random.Random) -> None:
        for party in data.get("parties") or ():
            if party == "user" and r.random() < WITHDRAW_INSTEAD:
                self.did["buyer withdrew"] += 1
                self._send("customer.withdrew", event, r, "withdraw", {"user_id": self._complaint(event).user_id})
            elif r.random() < EVIDENCE_SENT:
                items = [evidence_item(r, party, event["ticket_id"], data.get("round", 0))
                         for _ in range(r.randint(1, 2))]
                self._send("evidence.submitted", event, r, "evidence", {"party": party, "items": items})

    def on_awaiting_payment(self, event: dict, data: dict, r: random.Random) -> None:
        if event.get("action") == "reject_voucher":
            self._voucher_out.pop(event["ticket_id"], None)  # stage 4 did not accept it
        if data.get("awaiting") == "voucher":
            self._voucher_asks[event["ticket_id"]] += 1
            self._voucher(event, r)
        elif data.get("remedy") == "return_and_refund":
            if r.random() < GOODS_RETURNED:
                self.did["buyer returned the goods"] += 1
                self._send("goods.returned", event, r, "goods", {"tracking_no": f"SF{r.randrange(10**9):09d}"})
            else:
                self.did["buyer kept the goods"] += 1

    def on_payment_awaited(self, notice: dict) -> None:
        """The merchant's notification that a voucher is awaited. Every such wait also has its
        ``ticket.awaiting_payment`` event (which comes first) except one: the goods came back and
        the merchant's funds fell short, which keeps the ticket where it is — answer that one here."""
        ticket_id = notice["ticket_id"]
        self._voucher_notices[ticket_id] += 1
        if self._voucher_notices[ticket_id] > self._voucher_asks[ticket_id]:
            self._voucher_asks[ticket_id] += 1
            n = self._voucher_notices[ticket_id]
            self._voucher({**notice, "action": "return_goods", "version": f"notice{n}"},
                          rng(self.seed, "voucher notice", ticket_id, n))

    def _voucher(self, event: dict, r: random.Random) -> None:
        ticket_id = event["ticket_id"]
        habit = rng(self.seed, "voucher habit", ticket_id).random()
        if habit >= VOUCHER_PAID + VOUCHER_WRONG_FIRST:
            self.did["merchant never sent a voucher"] += 1
            return  # the payment_voucher deadline: the platform advances the refund
        due = max(0, self._owed.get(ticket_id, 0) - self._paid[ticket_id])
        first = event.get("action") != "reject_voucher"
        amount = due
        if habit >= VOUCHER_PAID and first:  # a sloppy transfer: the wrong amount, rejected by stage 4
            amount = max(1, due - r.randrange(100, 1000, 10))
            self.did["merchant sent a voucher for the wrong amount"] += 1
        else:
            self.did["merchant sent a voucher"] += 1
        self._voucher_out[ticket_id] = amount
        uri = f"https://vouchers.example/{ticket_id}/{event.get('version')}"
        self._send("payment.voucher_uploaded", event, r, "voucher", {
            "merchant_id": self._complaint(event).merchant_id,
            "voucher": {"uri": uri, "sha256": f"{rng(self.seed, uri).getrandbits(256):064x}", "amount": amount,
                        "currency": (event.get("data") or {}).get("currency") or "CNY"}})

    # -- after the floor --------------------------------------------------------------------------
    def on_closed(self, event: dict, data: dict, r: random.Random) -> None:
        ticket_id = event["ticket_id"]
        if ticket_id in self._voucher_out:  # stage 4 verified the transfer: the buyer has the money
            self._paid[ticket_id] += self._voucher_out.pop(ticket_id)
        if ticket_id not in self._appealed and r.random() < APPEAL:
            self._appealed.add(ticket_id)
            party = r.choices(("user", "merchant"), weights=(7, 3))[0]
            self.did[f"{'buyer' if party == 'user' else 'merchant'} appealed"] += 1
            self._send("appeal.filed", event, r, "appeal", {"party": party, "reason_code": r.choice(self.appeal_reasons)})
            return
        self._survey(event, r)

    def on_resolved(self, event: dict, data: dict, r: random.Random) -> None:
        self._survey(event, r)

    def _survey(self, event: dict, r: random.Random) -> None:
        if event["ticket_id"] in self._surveyed or r.random() >= SURVEY:
            return
        self._surveyed.add(event["ticket_id"])
        self.did["buyer answered the survey"] += 1
        self._send("survey.answered", event, r, "survey", {"user_id": self._complaint(event).user_id,
                                                          "score": r.choices(*SCORES)[0]})

    # -- payments -----------------------------------------------------------------------------------
    def on_ledger(self, body: dict) -> None:
        """Apply each money movement once; after an advance, the merchant's next income is reported."""
        key, kind, merchant = body.get("idempotency_key"), body.get("kind"), body.get("merchant_id")
        if not key or key in self._applied or merchant is None:
            return
        self._applied.add(key)
        amount = int(body["amount"])
        if kind == "refund_deducted":
            self.balances[merchant] = self.balances.get(merchant, 0) - amount
            self._paid[body["ticket_id"]] += amount
        elif kind == "platform_advance":
            self._paid[body["ticket_id"]] += amount
            self.debts[merchant] += amount
            r = rng(self.seed, "income", key)
            income = self.debts[merchant] + r.randrange(0, 20_000, 100)
            self.balances[merchant] = self.balances.get(merchant, 0) + income
            self._income[merchant] += 1
            self.did["payments reported a merchant's new income"] += 1
            self.mailbox.post("merchant.balance_changed", {
                "merchant_id": merchant, "balance": self.balances[merchant], "currency": body.get("currency", "CNY")},
                f"balance:{merchant}:{self._income[merchant]}", r.uniform(*DELAYS["payments"]))
        elif kind == "debt_settled":
            self.balances[merchant] = self.balances.get(merchant, 0) - amount
            self.debts[merchant] -= amount

    # -- helpers ------------------------------------------------------------------------------------
    def _send(self, routing_key: str, event: dict, r: random.Random, pace: str, fields: dict,
              by_ref: bool = False) -> None:
        """Answer after a delay drawn from ``DELAYS[pace]``, naming the ticket by id or by reference."""
        ticket = ({"source": event["source"], "external_ref": event["external_ref"]} if by_ref
                  else {"ticket_id": event["ticket_id"]})
        message_id = f"{routing_key}:{event['ticket_id']}:{event.get('version')}:{r.randrange(10**9)}"
        self.mailbox.post(routing_key, {**ticket, **fields}, message_id, r.uniform(*DELAYS[pace]))

    def _complaint(self, event: dict) -> Complaint:
        return self._known[f"{event['source']}:{event['external_ref']}"]
