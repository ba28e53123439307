"""The world around the embedded system, simulated for ``disputes demo``.

Everything here talks to the system only through its contract, as the real
world does: upstream order systems and the parties publish SPEC §4 messages
to ``op.intake`` (`Mailbox`), they learn what happened from ``op.events``
(`EventTap` feeding `Parties`), and agents work through the HTTP desk with
their bearer tokens (`AgentPool`, on the Flask test client). Every random
choice is drawn from a generator seeded by the run's seed and what the choice
is about (`rng`), so a run's decisions do not depend on thread timing.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from disputes.agents import add_agent
from disputes.wiring import App
from messages.intake import CHANNELS, DISPUTE_TYPES
from scheduler.relay import events_exchange
from workers.intake import intake_exchange

if TYPE_CHECKING:
    import flask
    from flask.testing import FlaskClient

log = logging.getLogger("disputes.demo")

#: The downstream queue the demo binds to ``op.events`` (every routing key).
EVENTS_QUEUE = "demo.events"
#: Agents per stage: stage 2 is where evidence rounds loop, so it gets the most.
POOLS: dict[int, int] = {1: 2, 2: 3, 3: 2, 4: 2}
#: Merchant answers in negotiation (the rest stay silent until the deadline escalates).
MERCHANT_ANSWERS = (("platform_judgment", 0.40), ("negotiated_reject", 0.20))
#: A buyer asked to confirm a settlement: accept, decline (the rest stay silent: counts as accept).
CONFIRM_ACCEPT, CONFIRM_DECLINE = 0.50, 0.30
#: A party asked for evidence sends it with this probability; a buyer sometimes withdraws instead.
EVIDENCE_SENT, WITHDRAW_INSTEAD = 0.70, 0.03
#: A buyer told to return the goods does so with this probability (else the platform advances).
GOODS_RETURNED = 0.80
#: How long a party takes to answer (uniform, seconds). The demo deadlines are 2-3 s and the way
#: in adds up to ~1 s (kombu's memory transport polls an idle queue once a second), so most
#: answers make it and some arrive too late, as in life.
DELAYS: dict[str, tuple[float, float]] = {"merchant": (0.1, 1.0), "customer": (0.1, 0.8), "evidence": (0.1, 1.5),
                                          "goods": (0.1, 1.5), "withdraw": (0.1, 1.5)}
#: An agent with nothing to claim waits this long, doubling up to IDLE_MAX (seconds).
IDLE_MIN, IDLE_MAX = 0.05, 0.4


def rng(seed: int, *about: object) -> random.Random:
    """A generator for one decision, seeded by the run's seed and what the decision is about."""
    return random.Random(":".join(str(part) for part in (seed, *about)))


@dataclass(order=True)
class Outgoing:
    """One message to publish on ``op.intake`` once `due` (a monotonic time) has come."""

    due: float
    seq: int
    routing_key: str = field(compare=False)
    body: dict = field(compare=False)
    message_id: str = field(compare=False)


class Mailbox:
    """Upstream systems and parties: publishes their messages to ``op.intake`` when due."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._heap: list[Outgoing] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self.published: Counter[str] = Counter()

    def post(self, routing_key: str, body: dict, message_id: str, delay: float = 0.0) -> None:
        with self._cv:
            heapq.heappush(self._heap, Outgoing(time.monotonic() + delay, next(self._seq), routing_key,
                                                {"schema_version": 1, **body}, message_id))
            self._cv.notify()

    def run(self, should_stop: Callable[[], bool]) -> None:
        with self.app.kombu_connection() as connection:
            producer = Producer(connection.channel())
            while not should_stop():
                with self._cv:
                    due = self._heap[0].due - time.monotonic() if self._heap else 0.1
                    if due > 0:
                        self._cv.wait(min(due, 0.1))
                        continue
                    message = heapq.heappop(self._heap)
                try:
                    producer.publish(json.dumps(message.body, ensure_ascii=False).encode(), exchange=intake_exchange,
                                     routing_key=message.routing_key, declare=[intake_exchange], delivery_mode=2,
                                     content_type="application/json", content_encoding="utf-8",
                                     message_id=message.message_id)
                except Exception:  # one lost message must not silence every party
                    log.exception("could not publish %s %s", message.routing_key, message.message_id)
                    continue
                self.published[message.routing_key] += 1


def complaints(count: int, seed: int, categories: list[str], now: datetime) -> list[tuple[str, dict]]:
    """`count` complaints as (message_id, body): integer amounts in fen, ~30% already failed in
    negotiation (straight to the floor), the rest for the merchant to answer."""
    merchants = [f"m-{i:03d}" for i in range(1, max(4, count // 8) + 1)]
    out = []
    for i in range(1, count + 1):
        r = rng(seed, "complaint", i)
        amount = r.randrange(990, 300_000, 10)
        claimed = amount if r.random() < 0.6 else r.randrange(100, amount + 1)
        source = r.choice(("order-system", "after-sales"))
        ref = f"C{seed}-{i:05d}"
        body = {
            "source": source, "external_ref": ref, "channel": r.choice(CHANNELS),
            "order": {"order_id": f"O{seed}-{i:05d}", "amount": amount, "currency": "CNY",
                      "category": r.choice(categories), "delivery": r.choice(("platform", "merchant")),
                      "status": r.choice(("shipped", "delivered", "delivered", "completed"))},
            "user_id": f"u-{r.randrange(1, count * 2 + 2):05d}", "merchant_id": r.choice(merchants),
            "dispute_type": r.choice(DISPUTE_TYPES), "claimed_amount": claimed,
            "description": "simulated complaint", "negotiation": "failed" if r.random() < 0.3 else "pending",
            "complexity": "complex" if r.random() < 0.2 else "simple",
            "evidence": [_item(r, "user", ref, 0, "photo")] if r.random() < 0.5 else [],
            "occurred_at": (now - timedelta(hours=r.randrange(1, 240))).astimezone(
                timezone(timedelta(hours=8))).isoformat(),
        }
        out.append((f"{source}:{ref}", body))
    return out


def _item(r: random.Random, party: str, ticket: object, round_: int, kind: str | None = None) -> dict:
    kind = kind or r.choice(("photo", "video", "chat_log", "logistics_proof", "invoice"))
    uri = f"https://evidence.example/{party}/{ticket}/{round_}/{r.randrange(10**6)}"
    return {"kind": kind, "uri": uri, "sha256": hashlib.sha256(uri.encode()).hexdigest()}


class EventTap:
    """A downstream consumer of ``op.events``: counts every event and checks that each ticket's
    events arrive in commit order (rising ``version``), then passes them to `listener`."""

    def __init__(self, app: App, listener: Callable[[str, dict], None]) -> None:
        self.app = app
        self.listener = listener
        self.counts: Counter[str] = Counter()
        self.out_of_order = 0
        self.repeated = 0
        self._last: dict[int, int] = {}
        self.queue = Queue(EVENTS_QUEUE, exchange=events_exchange, routing_key="#", durable=True)

    def connection(self) -> Connection:
        # kombu's memory transport polls; a short interval keeps the parties' reaction time small.
        return Connection(self.app.settings.intake_url, transport_options={"polling_interval": 0.02})

    def bind(self) -> None:
        """Declare and bind the queue (before anything is published), emptied of older runs."""
        with self.connection() as connection:
            bound = self.queue(connection.channel())
            bound.declare()
            bound.purge()

    def unbind(self) -> None:
        with self.connection() as connection:
            bound = self.queue(connection.channel())
            bound.unbind_from(events_exchange, routing_key="#")
            bound.delete()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def run(self, should_stop: Callable[[], bool]) -> None:
        with self.connection() as connection:
            with Consumer(connection.channel(), queues=[self.queue], on_message=self._on_message,
                          prefetch_count=500):
                while not should_stop():
                    try:
                        connection.drain_events(timeout=0.1)
                    except socket.timeout:
                        pass

    def _on_message(self, message: Message) -> None:
        key = (message.delivery_info or {}).get("routing_key") or ""
        try:
            body = json.loads(message.body)
            self.counts[key] += 1
            if key.startswith("ticket.") and "version" in body:
                last = self._last.get(body["ticket_id"], 0)
                if body["version"] == last:
                    self.repeated += 1
                elif body["version"] < last:
                    self.out_of_order += 1
                self._last[body["ticket_id"]] = max(last, body["version"])
            self.listener(key, body)
        except Exception:  # a broken party must not stop the downstream consumer
            log.exception("the demo's event consumer failed on %s", key)
        finally:
            message.ack()


class Parties:
    """Merchants, buyers and logistics, answering what ``op.events`` tells them concerns them."""

    def __init__(self, mailbox: Mailbox, seed: int) -> None:
        self.mailbox = mailbox
        self.seed = seed
        #: source:external_ref -> (user_id, merchant_id): each party knows who it is.
        self._known: dict[str, tuple[str, str]] = {}

    def on_event(self, routing_key: str, body: dict) -> None:
        if not routing_key.startswith("ticket.") or body.get("from_state") == body.get("to_state"):
            return  # money, notifications and announcements need no answer
        handler = getattr(self, f"on_{body['to_state']}", None)
        if handler is not None:
            handler(body, rng(self.seed, body["to_state"], body["ticket_id"], body.get("version")))

    def on_negotiating(self, event: dict, r: random.Random) -> None:
        roll, option = r.random(), None
        for name, share in MERCHANT_ANSWERS:
            if roll < share:
                option = name
                break
            roll -= share
        if option is None:
            return  # silent: the merchant_response deadline sends the ticket to the floor
        evidence = [_item(r, "merchant", event["ticket_id"], 0, "chat_log")] if option == "platform_judgment" else []
        self._send("merchant.responded", event, r, "merchant",
                   {"merchant_id": self._merchant(event), "option": option, "evidence": evidence}, by_ref=True)

    def on_awaiting_confirmation(self, event: dict, r: random.Random) -> None:
        roll = r.random()
        if roll < CONFIRM_ACCEPT + CONFIRM_DECLINE:
            self._send("customer.confirmed", event, r, "customer",
                       {"user_id": self._user(event), "accept": roll < CONFIRM_ACCEPT}, by_ref=True)

    def on_awaiting_evidence(self, event: dict, r: random.Random) -> None:
        data = event.get("data") or {}
        for party in data.get("parties") or ():
            if party == "user" and r.random() < WITHDRAW_INSTEAD:
                self._send("customer.withdrew", event, r, "withdraw", {"user_id": self._user(event)})
            elif r.random() < EVIDENCE_SENT:
                items = [_item(r, party, event["ticket_id"], data.get("round", 0)) for _ in range(r.randint(1, 2))]
                self._send("evidence.submitted", event, r, "evidence", {"party": party, "items": items})

    def on_awaiting_payment(self, event: dict, r: random.Random) -> None:
        if (event.get("data") or {}).get("remedy") == "return_and_refund" and r.random() < GOODS_RETURNED:
            self._send("goods.returned", event, r, "goods", {"tracking_no": f"SF{r.randrange(10**9):09d}"})

    def _send(self, routing_key: str, event: dict, r: random.Random, pace: str, fields: dict,
              by_ref: bool = False) -> None:
        """Answer after a delay drawn from ``DELAYS[pace]``, naming the ticket by id or by reference."""
        ticket = ({"source": event["source"], "external_ref": event["external_ref"]} if by_ref
                  else {"ticket_id": event["ticket_id"]})
        message_id = f"{routing_key}:{event['ticket_id']}:{event.get('version')}:{r.randrange(10**9)}"
        self.mailbox.post(routing_key, {**ticket, **fields}, message_id, r.uniform(*DELAYS[pace]))

    def remember(self, source: str, external_ref: str, user_id: str, merchant_id: str) -> None:
        self._known[f"{source}:{external_ref}"] = (user_id, merchant_id)

    def _user(self, event: dict) -> str:
        return self._known[f"{event['source']}:{event['external_ref']}"][0]

    def _merchant(self, event: dict) -> str:
        return self._known[f"{event['source']}:{event['external_ref']}"][1]


class AgentPool:
    """The four floor pools: each agent a thread clicking configured options on the desk's API,
    authenticated by its own bearer token, one ticket at a time."""

    def __init__(self, api: "flask.Flask", seed: int, pools: dict[int, int] = POOLS) -> None:
        self.api = api
        self.seed = seed
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        #: (stage, name, token); created through the CLI's own function (needs a database connection).
        self.agents = [(stage, f"demo-stage{stage}-{i}", add_agent(f"demo-stage{stage}-{i}", stage))
                       for stage, count in pools.items() for i in range(1, count + 1)]

    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def run_agent(self, stage: int, token: str, should_stop: Callable[[], bool]) -> None:
        DeskAgent(self, stage, token, should_stop).run()


class DeskAgent:
    """One agent at the desk: claim, read the options, decide, wait until the decision is applied."""

    def __init__(self, pool: AgentPool, stage: int, token: str, should_stop: Callable[[], bool]) -> None:
        self.pool, self.stage, self.should_stop = pool, stage, should_stop
        self.client: FlaskClient = pool.api.test_client()
        self.auth = {"Authorization": f"Bearer {token}"}

    def run(self) -> None:
        idle = IDLE_MIN
        while not self.should_stop():
            reply = self.client.post("/me/claim", headers=self.auth)
            if reply.status_code == 204:  # nothing waiting: back off, leave the CPU to the system
                time.sleep(idle)
                idle = min(idle * 2, IDLE_MAX)
                continue
            idle = IDLE_MIN
            if reply.status_code != 200:
                self.pool.count(f"claim answered {reply.status_code}")
                time.sleep(0.2)
                continue
            self.pool.count(f"stage{self.stage} claims")
            self.work(reply.get_json())

    def work(self, ticket: dict) -> None:
        """Decide until a decision is applied; reload and decide again when the ticket moved on
        under us (late evidence, a raced decision) while it is still ours."""
        me = ticket["assignee"]
        options = self.client.get(f"/options/stage{self.stage}", headers=self.auth).get_json()
        for _ in range(5):
            if self.should_stop():
                return
            action, params, qc = decide(self.stage, ticket, options,
                                        rng(self.pool.seed, "agent", ticket["id"], ticket["version"]))
            reply = self.client.post(f"/tickets/{ticket['id']}/actions", headers=self.auth, json={
                "action": action, "expected_version": ticket["version"], "params": params, "qc": qc})
            if reply.status_code == 202:
                if self.applied(reply.get_json()["dispatch_id"]):
                    self.pool.count(f"stage{self.stage} {action}")
                    if qc and qc["verdict"] == "flag":
                        self.pool.count("qc flags")
                    return
                self.pool.count("refused by the worker")
            else:
                self.pool.count(f"answered {reply.status_code}")
                if reply.status_code not in (403, 409):  # 422 and the like: a bug, not a race
                    log.warning("desk refused %s on ticket %s: %s", action, ticket["id"], reply.get_json())
                    return
            ticket = self.client.get(f"/tickets/{ticket['id']}", headers=self.auth).get_json()
            if ticket.get("assignee") != me or not ticket.get("allowed_actions"):
                return

    def applied(self, dispatch_id: int, patience: float = 30.0) -> bool:
        """Wait for the stage worker to apply (True) or refuse (False) the accepted decision."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and not self.should_stop():
            row = self.client.get(f"/dispatches/{dispatch_id}", headers=self.auth).get_json()
            if row.get("done"):
                return row.get("outcome") == "applied"
            time.sleep(0.02)
        return False


def decide(stage: int, ticket: dict, options: dict, r: random.Random) -> tuple[str, dict, dict | None]:
    """An agent's click: one of the stage's configured actions the ticket allows now, with
    configured parameter choices, and a QC verdict on the previous stage (from stage 2 on)."""
    boxes = {a["action"]: a["params"] for a in options["actions"]}
    allowed = [a for a in ticket.get("allowed_actions") or [] if a in boxes]
    action, params = DECISIONS[stage](ticket, boxes, allowed, r)
    reasons = [q["code"] for q in options.get("qc_reasons") or []]
    qc = None if stage == 1 else ({"verdict": "flag", "reason_code": r.choice(reasons)}
                                  if reasons and r.random() < 0.08 else {"verdict": "ok"})
    return action, params, qc


def _codes(boxes: dict, action: str, param: str) -> list:
    return [choice["code"] for choice in boxes[action][param]["choices"]]


def _evidence_request(boxes: dict, r: random.Random) -> dict:
    kinds = [k for k in _codes(boxes, "request_evidence", "items") if k != "voucher"]
    return {"from": r.choice(_codes(boxes, "request_evidence", "from")),
            "items": r.sample(kinds, k=min(len(kinds), r.randint(1, 2)))}


def _stage1(t: dict, boxes: dict, allowed: list[str], r: random.Random) -> tuple[str, dict]:
    action = "request_evidence" if "request_evidence" in allowed and r.random() < 0.7 else "to_judgment"
    statuses, categories = _codes(boxes, action, "dispute_status"), _codes(boxes, action, "category")
    status = {"negotiated_reject": "user_declined_settlement",
              "platform_judgment": "not_reconciled"}.get(t.get("negotiation_option") or "")
    params = {"dispute_status": status if status in statuses else r.choice(statuses),
              "category": t["category"] if t["category"] in categories and r.random() < 0.9 else r.choice(categories)}
    if action == "request_evidence":
        params.update(_evidence_request(boxes, r))
    return action, params


def _stage2(t: dict, boxes: dict, allowed: list[str], r: random.Random) -> tuple[str, dict]:
    if "request_evidence" in allowed and r.random() < 0.25:
        return "request_evidence", _evidence_request(boxes, r)
    return "to_judgment", {}


def _stage3(t: dict, boxes: dict, allowed: list[str], r: random.Random) -> tuple[str, dict]:
    if "cannot_judge" in allowed and r.random() < 0.05:
        return "cannot_judge", {"reason_code": r.choice(_codes(boxes, "cannot_judge", "reason_code"))}
    liability = r.choices(("merchant", "customer", "both", "neither"), weights=(45, 25, 15, 15))[0]
    remedy = "no_refund"
    if liability in ("merchant", "both"):
        remedy = r.choices(("full_refund", "partial_refund", "return_and_refund", "no_refund"),
                           weights=(45, 30, 15, 10))[0]
    params: dict = {"liability": liability, "remedy": remedy}
    if remedy == "partial_refund":
        claimed = int(t["amounts"]["claimed"])
        params["amount"] = r.randint(max(1, claimed // 10), claimed)
    return "judge", params


def _stage4(t: dict, boxes: dict, allowed: list[str], r: random.Random) -> tuple[str, dict]:
    if "verify_refund" in allowed or "complaint_fee" not in allowed:
        return "verify_refund", {}
    fees = _codes(boxes, "complaint_fee", "amount")
    return "complaint_fee", {"amount": 0 if 0 in fees and r.random() < 0.5 else r.choice(fees)}


DECISIONS = {1: _stage1, 2: _stage2, 3: _stage3, 4: _stage4}
