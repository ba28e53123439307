"""The demo's world: what upstream sends, how the mail goes, what downstream hears.

`complaints` draws the complaints (orders of both deliveries and every status
the negotiation cares about), `plan_answers` deals the merchants' negotiation
answers out by the configured shares, `merchant_balances` sets who can pay;
`Mailbox` publishes SPEC §4 messages to ``op.intake`` when they are due and
`EventTap` consumes ``op.events`` like a downstream system. Every random
choice comes from `rng`, seeded by the run's seed and what the choice is
about, so a run's decisions do not depend on thread timing.
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
from typing import Callable, Mapping

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from disputes.wiring import App
from messages.intake import CHANNELS, DISPUTE_TYPES
from scheduler.relay import events_exchange
from workers.intake import intake_exchange

log = logging.getLogger("tools.demo")

#: The downstream queue the demo binds to ``op.events`` (every routing key).
EVENTS_QUEUE = "demo.events"
#: The merchant's four negotiation options (SPEC §1), and not answering at all.
OPTIONS = ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment")
SILENT = "silent"
ANSWERS = (*OPTIONS, SILENT)
#: The default shares of the merchants' answers (percent of the complaints left to negotiation).
DEFAULT_SHARES: dict[str, float] = {"direct_refund": 20, "negotiated_reject": 15, "intercept_48h": 15,
                                    "platform_judgment": 30, SILENT: 20}
#: Share of complaints that arrive with negotiation already failed (straight to the floor).
FAILED_NEGOTIATION = 0.25
#: Every POOR_EVERY-th merchant (from the second) keeps too little money to cover refunds.
POOR_EVERY = 5
CURRENCY = "CNY"


def rng(seed: int, *about: object) -> random.Random:
    """A generator for one decision, seeded by the run's seed and what the decision is about."""
    return random.Random(":".join(str(part) for part in (seed, *about)))


# ---- the merchants' answers ---------------------------------------------------------------

def parse_shares(text: str) -> dict[str, float]:
    """``direct_refund=20,silent=10,...`` as a dict (answers left out get 0); ValueError when bad."""
    shares: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"'{part}' is not ANSWER=SHARE")
        try:
            shares[name] = float(value)
        except ValueError:
            raise ValueError(f"the share of '{name}' is not a number: '{value.strip()}'") from None
    return normalize_shares(shares)


def normalize_shares(shares: Mapping[str, float] | None) -> dict[str, float]:
    """Shares as fractions summing to 1 over every answer (missing answers get 0)."""
    if shares is None:
        shares = DEFAULT_SHARES
    unknown = sorted(set(shares) - set(ANSWERS))
    if unknown:
        raise ValueError(f"unknown merchant answer(s) {', '.join(unknown)}; the answers are {', '.join(ANSWERS)}")
    if any(not isinstance(v, (int, float)) or v != v or v < 0 for v in shares.values()):
        raise ValueError("shares must be numbers of at least 0")
    total = float(sum(shares.values()))
    if total <= 0:
        raise ValueError("at least one merchant answer needs a share above 0")
    return {answer: float(shares.get(answer, 0)) / total for answer in ANSWERS}


def plan_answers(refs: list[str], shares: Mapping[str, float], seed: int) -> dict[str, str]:
    """Deal the answers out to the complaints in `refs` so the counts follow `shares` exactly
    (largest remainder), in a seeded random order."""
    exact = {a: shares[a] * len(refs) for a in ANSWERS}
    counts = {a: int(v) for a, v in exact.items()}
    for a in sorted(ANSWERS, key=lambda a: (counts[a] - exact[a], ANSWERS.index(a)))[:len(refs) - sum(counts.values())]:
        counts[a] += 1
    answers = [a for a in ANSWERS for _ in range(counts[a])]
    rng(seed, "answers").shuffle(answers)
    return dict(zip(refs, answers))


# ---- upstream ------------------------------------------------------------------------------

def merchants_for(count: int) -> list[str]:
    return [f"m-{i:03d}" for i in range(1, max(4, count // 8) + 1)]


def is_poor(merchant: str) -> bool:
    return int(merchant.rsplit("-", 1)[1]) % POOR_EVERY == 2


def merchant_balances(merchants: list[str], seed: int) -> dict[str, int]:
    """Opening balances in fen: most merchants hold far more than their refunds, a few almost nothing."""
    return {m: rng(seed, "balance", m).randrange(0, 20_000, 100) if is_poor(m)
            else rng(seed, "balance", m).randrange(3_000_000, 8_000_000, 100) for m in merchants}


def complaints(count: int, seed: int, categories: list[str], now: datetime) -> list[tuple[str, dict]]:
    """`count` complaints as (message_id, body): integer amounts in fen, orders delivered by the
    platform or the merchant and in every status the negotiation cares about (some completed),
    a quarter already failed in negotiation (straight to the floor)."""
    merchants = merchants_for(count)
    out = []
    for i in range(1, count + 1):
        r = rng(seed, "complaint", i)
        amount = r.randrange(990, 300_000, 10)
        claimed = amount if r.random() < 0.6 else r.randrange(100, amount + 1)
        source = r.choice(("order-system", "after-sales"))
        ref = f"C{seed}-{i:05d}"
        body = {
            "source": source, "external_ref": ref, "channel": r.choice(CHANNELS),
            "order": {"order_id": f"O{seed}-{i:05d}", "amount": amount, "currency": CURRENCY,
                      "category": r.choice(categories), "delivery": r.choice(("platform", "merchant")),
                      "status": r.choice(("shipped", "shipped", "delivered", "delivered", "completed"))},
            "user_id": f"u-{r.randrange(1, count * 2 + 2):05d}", "merchant_id": r.choice(merchants),
            "dispute_type": r.choice(DISPUTE_TYPES), "claimed_amount": claimed,
            "description": "simulated complaint",
            "negotiation": "failed" if r.random() < FAILED_NEGOTIATION else "pending",
            "complexity": "complex" if r.random() < 0.2 else "simple",
            "evidence": [evidence_item(r, "user", ref, 0, "photo")] if r.random() < 0.5 else [],
            "occurred_at": (now - timedelta(hours=r.randrange(1, 240))).astimezone(
                timezone(timedelta(hours=8))).isoformat(),
        }
        out.append((f"{source}:{ref}", body))
    return out


def evidence_item(r: random.Random, party: str, ticket: object, round_: int, kind: str | None = None) -> dict:
    kind = kind or r.choice(("photo", "video", "chat_log", "logistics_proof", "invoice"))
    uri = f"https://evidence.example/{party}/{ticket}/{round_}/{r.randrange(10**6)}"
    return {"kind": kind, "uri": uri, "sha256": hashlib.sha256(uri.encode()).hexdigest()}


# ---- the wire ------------------------------------------------------------------------------

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
        self._sending = False
        self.published: Counter[str] = Counter()
        #: Every distinct message id published (the intake must have stored each one), and how
        #: many per routing key (`published` less the repeats of a message already sent).
        self.message_ids: set[str] = set()
        self.distinct: Counter[str] = Counter()

    def post(self, routing_key: str, body: dict, message_id: str, delay: float = 0.0) -> None:
        with self._cv:
            heapq.heappush(self._heap, Outgoing(time.monotonic() + delay, next(self._seq), routing_key,
                                                {"schema_version": 1, **body}, message_id))
            self._cv.notify()

    @property
    def idle(self) -> bool:
        """Nothing waiting to be sent and nothing being sent."""
        with self._cv:
            return not self._heap and not self._sending

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
                    self._sending = True
                try:
                    producer.publish(json.dumps(message.body, ensure_ascii=False).encode(), exchange=intake_exchange,
                                     routing_key=message.routing_key, declare=[intake_exchange], delivery_mode=2,
                                     content_type="application/json", content_encoding="utf-8",
                                     message_id=message.message_id)
                    self.published[message.routing_key] += 1
                    if message.message_id not in self.message_ids:
                        self.distinct[message.routing_key] += 1
                    self.message_ids.add(message.message_id)
                except Exception:  # one lost message must not silence every party
                    log.exception("could not publish %s %s", message.routing_key, message.message_id)
                finally:
                    with self._cv:
                        self._sending = False


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
            self.counts[key] += 1  # counted once its reactions are posted: "received" means "handled"
            message.ack()
