"""Hostile input on the real ``op.intake``: RabbitMQ, the ``disputes intake`` process, PostgreSQL.

``tests/messages/test_parse_fuzz.py`` proves ``parse_intake`` never raises on any input, in process.
This module proves the *system* holds: hostile messages are published with kombu to ``op.intake`` on
RabbitMQ (in a private vhost), consumed by the real consumer process started as the Procfile does
(``disputes intake``), and stored in PostgreSQL — where column widths, NUL bytes, surrogates and
64-bit limits bite and SQLite forgives. What it asserts, after a fixed list of nasty cases and a few
hundred generated ones:

* the consumer process never dies, never wedges on a poison message, and still admits a valid
  complaint sent after the hostile batch;
* every message is either admitted or stored in the rejected store with a reason that names the
  field (``order.amount``, ``occurred_at``, ``x-op-signature``...) — none is lost;
* no half-made ticket: every ticket has its audit trail (versions 1..n, the last one matching the
  ticket's state and version) and its creation event in the outbox; the admitted complaints and the
  tickets (plus complaints linked to an open ticket) are the same set.
"""
from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer

from messages import INTAKE_ROUTING_KEYS, SIGNATURE_HEADER, sign
from messages.intake import MAX_BODY_BYTES
from tests.integration.conftest import PG_DSN, fresh_pg_database, make_app, need

pytestmark = pytest.mark.servers

REPO = Path(__file__).resolve().parents[2]
DISPUTES = [str(Path(sys.executable).parent / "disputes")] if (Path(sys.executable).parent / "disputes").exists() \
    else [sys.executable, "-m", "disputes.cli"]
AMQP_HOST = "guest:guest@127.0.0.1:5672"
#: Our own Redis database number (dramatiq's broker: admitted complaints dispatch to stage queues).
REDIS_URL = "redis://127.0.0.1:6379/13"
SIGNED_SOURCE, SECRET = "signed-shop", "hostile-secret-7"
#: How long one message may take to reach the database before the consumer counts as wedged.
SETTLE_SECONDS = 15.0


# ---------------------------------------------------------------------------------------------
# the stack: a private vhost, a fresh database, the consumer process
# ---------------------------------------------------------------------------------------------

def _rabbitmqctl(*args: str) -> bool:
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        return False
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 or "already exists" in (done.stdout + done.stderr)


@dataclass
class Sent:
    """One published message and what the test expects of it."""

    routing_key: str
    raw: bytes
    message_id: str | None
    headers: dict
    #: ``admitted``, ``rejected``, ``duplicate`` or ``either``; None: decided by the outcome.
    expect: str | None = None
    #: For a rejection: one of these keys must be among the reasons.
    fields: tuple[str, ...] = ()
    label: str = ""


@dataclass
class Hostile:
    amqp_url: str
    env: dict[str, str]
    producer: Any
    intake: subprocess.Popen
    log: Path
    sent: list[Sent] = field(default_factory=list)

    def publish(self, routing_key: str, body: Any, message_id: str | None = "auto", headers: dict | None = None,
                *, content_type: str | None = "application/json", content_encoding: str | None = "utf-8",
                expect: str | None = None, fields: tuple[str, ...] = (), label: str = "") -> Sent:
        raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode("utf-8")
        if message_id == "auto":
            message_id = uuid.uuid4().hex
        options: dict[str, Any] = {"content_type": content_type, "content_encoding": content_encoding}
        if content_type is None:  # kombu then sends raw bytes as application/data, binary
            options = {}
        if message_id is not None:
            options["message_id"] = message_id
        self.producer.publish(raw, exchange="op.intake", routing_key=routing_key, headers=dict(headers or {}),
                              delivery_mode=2, retry=True, **options)
        sent = Sent(routing_key, raw, message_id, dict(headers or {}), expect, fields, label)
        self.sent.append(sent)
        return sent

    def alive(self) -> bool:
        return self.intake.poll() is None

    def tail(self, lines: int = 12) -> str:
        """The consumer's last log lines, errors first, each cut short."""
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [line for line in text if '"level": "ERROR"' in line or "Traceback" in line]
        return "\n".join(line[:400] for line in (errors[-3:] + text[-lines:]))

    def outcome(self, sent: Sent) -> tuple[str, dict | None]:
        """``rejected`` with its reasons, ``admitted``, ``held`` (a follow-up waiting for its
        complaint), or ``pending`` (nothing stored yet)."""
        from models.intake import HeldMessage, ProcessedMessage, RejectedMessage, storable
        from models.base import database
        stored_id = storable(sent.message_id)  # NUL and surrogates escaped, as the consumer stores them
        with database.connection_context():
            rows = [r for r in RejectedMessage.select().where(RejectedMessage.message_id == stored_id)
                    if bytes(r.body) == stored_body(sent)]
            if rows:
                return "rejected", rows[-1].reasons
            if ProcessedMessage.get_or_none(ProcessedMessage.message_id == stored_id) is not None:
                return "admitted", None
            if [r for r in HeldMessage.select().where(HeldMessage.message_id == stored_id)
                    if bytes(r.body) == stored_body(sent)]:
                return "held", None
        return "pending", None

    def settle(self, sent: Sent) -> tuple[str, dict | None]:
        """Wait until the consumer stored ``sent`` (it has a unique message id)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            status, reasons = self.outcome(sent)
            if status != "pending":
                return status, reasons
            assert self.alive(), f"the intake consumer died on {sent.label or sent.routing_key}:\n{self.tail()}"
            assert time.monotonic() < deadline, (
                f"the intake consumer did not store {sent.label or sent.routing_key} "
                f"({sent.raw[:200]!r}, headers {str(sent.headers)[:200]}) within {SETTLE_SECONDS}s — "
                f"wedged on a poison message?\n{self.tail()}")
            time.sleep(0.01)

    def barrier(self) -> int:
        """A valid complaint after everything sent so far; returns its ticket id once admitted. The
        consumer handles its queue in order, so everything before it has been handled too."""
        sent = self.publish("complaint.submitted", complaint(), label="barrier", expect="admitted")
        assert self.settle(sent)[0] == "admitted", f"a valid complaint was not admitted:\n{self.tail()}"
        from models.base import database
        from models.ticket import Ticket
        body = json.loads(sent.raw)
        with database.connection_context():
            return Ticket.get((Ticket.source == body["source"]) & (Ticket.external_ref == body["external_ref"])).id


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    need(5432, "PostgreSQL")
    need(5672, "RabbitMQ")
    need(6379, "Redis")
    import redis
    redis.Redis.from_url(REDIS_URL).flushdb()
    tmp = tmp_path_factory.mktemp("hostile")
    suffix = uuid.uuid4().hex[:8]
    db_name = f"disputes_hostile_{suffix}"
    database_url = fresh_pg_database(db_name)
    vhost = f"disputes-hostile-{suffix}"
    own_vhost = _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest",
                                                                 ".*", ".*", ".*")
    # Without rabbitmqctl (a CI with a remote broker): the default vhost, its intake queue purged.
    amqp_url = f"amqp://{AMQP_HOST}/{vhost}" if own_vhost else f"amqp://{AMQP_HOST}//"

    from policy import default_policy_dict, policy_from_dict
    import tomli_w
    data = default_policy_dict()
    data["intake"] = {"secrets": {SIGNED_SOURCE: SECRET}}
    policy_path = tmp / "policy.toml"
    policy_path.write_text(tomli_w.dumps(data), encoding="utf-8")
    app = make_app(database_url, policy_from_dict(data), intake_url=amqp_url)  # schema, models bound here

    from workers.intake import declare_topology, intake_queue
    connection = Connection(amqp_url, transport_options={"confirm_publish": True})
    declare_topology(connection)
    if not own_vhost:
        intake_queue(connection.default_channel).purge()
    env = {**os.environ, "OP_DATABASE_URL": database_url, "OP_INTAKE_URL": amqp_url, "OP_BROKER_URL": REDIS_URL,
           "OP_POLICY": str(policy_path), "PYTHONUNBUFFERED": "1"}
    log = tmp / "intake.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(DISPUTES + ["intake"], env=env, cwd=str(REPO), stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    stack = Hostile(amqp_url, env, Producer(connection.channel()), process, log)
    try:
        yield stack
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        connection.release()
        app.db.close()
        if own_vhost:
            _rabbitmqctl("delete_vhost", vhost)
        redis.Redis.from_url(REDIS_URL).flushdb()
        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        conn.close()


# ---------------------------------------------------------------------------------------------
# bodies
# ---------------------------------------------------------------------------------------------

def complaint(source: str = "hostile-shop", **overrides: Any) -> dict:
    """A valid ``complaint.submitted`` body with a fresh reference and order."""
    ref = f"H-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {
        "schema_version": 1, "source": source, "external_ref": ref, "channel": "app",
        "order": {"order_id": f"O-{ref}", "amount": 10000, "currency": "CNY", "category": "apparel",
                  "delivery": "platform", "status": "delivered"},
        "user_id": "u-1", "merchant_id": "m-1", "dispute_type": "quality", "claimed_amount": 6000,
        "description": "the seams came apart", "negotiation": "failed",
        "contact": {"email": "buyer@example.com", "phone": "+86 138 0000 0000"},
        "evidence": [{"kind": "photo", "uri": "https://files.example.com/1.jpg"}],
        "occurred_at": "2026-11-20T10:00:00+08:00",
    }
    body.update(overrides)
    return body


def follow_up(routing_key: str, ticket: dict) -> dict:
    """A valid body of each follow-up routing key about ``ticket`` (by id)."""
    base = {"schema_version": 1, "ticket_id": ticket["id"]}
    extra = {
        "evidence.submitted": {"party": "user", "items": [{"kind": "photo", "uri": "https://x.example/1"}]},
        "merchant.responded": {"merchant_id": "m-1", "option": "platform_judgment"},
        "merchant.refund_approved": {"merchant_id": "m-1"},
        "customer.confirmed": {"user_id": "u-1", "accept": True},
        "customer.withdrew": {"user_id": "u-1"},
        "logistics.interception_result": {"success": True},
        "payment.voucher_uploaded": {"merchant_id": "m-1", "voucher": {
            "uri": "https://x.example/v", "sha256": "ab" * 32, "amount": 100, "currency": "CNY"}},
        "goods.returned": {"tracking_no": "SF123"},
        "merchant.balance_changed": {"merchant_id": "m-hostile", "balance": 500, "currency": "CNY"},
        "appeal.filed": {"party": "user", "reason_code": "unfair"},
        "survey.answered": {"user_id": "u-1", "score": 5},
    }[routing_key]
    body = {**base, **copy.deepcopy(extra)}
    if routing_key == "merchant.balance_changed":
        del body["ticket_id"]
    return body


def stored_body(sent: Sent) -> bytes:
    """The body as the rejected store keeps it: kombu inflates a body whose headers name a compression,
    unless it inflates past the intake's limit (a bomb is kept as it came: `bound_decompression`)."""
    from messages.intake import MAX_BODY_BYTES
    if sent.headers.get("compression"):
        try:
            inflated = zlib.decompressobj().decompress(sent.raw, MAX_BODY_BYTES + 1)
        except zlib.error:
            return sent.raw
        return sent.raw if len(inflated) > MAX_BODY_BYTES else inflated
    return sent.raw


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    """A valid-looking complaint whose ``description`` is ``depth`` levels of arrays."""
    text = json.dumps(complaint(description="@@")).encode()
    return text.replace(b'"@@"', deep(depth))


def signed(body: bytes) -> dict:
    return {SIGNATURE_HEADER: sign(SECRET, body)}


# ---------------------------------------------------------------------------------------------
# the fixed list of nasty cases
# ---------------------------------------------------------------------------------------------

def nasty_cases(h: Hostile, ticket_id: int, signed_ticket_id: int) -> None:
    """Publish the fixed cases; each says what it expects and which field the reason must name."""
    rk = "complaint.submitted"
    msg = ("_message",)

    # bytes that are not a JSON object
    for label, raw in [("empty", b""), ("garbage", os.urandom(512)), ("NUL", b"\x00" * 64),
                       ("not json", b"{not json"), ("array", b"[1,2,3]"), ("string", b'"hello"'),
                       ("number", b"42"), ("null", b"null"), ("true", b"true"),
                       ("truncated", json.dumps(complaint()).encode()[:-7]),
                       ("pickle", pickle.dumps({"schema_version": 1}))]:
        h.publish(rk, raw, expect="rejected", fields=msg, label=label)
    # deep nesting: 10,000 and 100,000 levels, bare and inside a field
    h.publish(rk, deep(10_000), expect="rejected", fields=msg, label="deep 10k")
    h.publish(rk, deep(100_000), expect="rejected", fields=msg, label="deep 100k")
    h.publish(rk, deep_object(10_000), expect="rejected", fields=msg + ("description",), label="deep in field")
    h.publish(rk, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, expect="rejected", fields=msg, label="deep objects")
    # huge: 1 MB + 1 byte, 5 MB, a 3 MB string field, a 1 MB message id-less body
    h.publish(rk, json.dumps(complaint(description="x" * (MAX_BODY_BYTES + 1))).encode(), expect="rejected",
              fields=msg, label="1MB+ description")
    h.publish(rk, json.dumps(complaint(description="é" * (5 << 19))).encode(), expect="rejected", fields=msg,
              label="5MB description")
    h.publish(rk, b"x" * (3 << 20), expect="rejected", fields=msg, label="3MB junk")
    h.publish(rk, json.dumps(complaint(description="y" * 4097)).encode(), expect="rejected",
              fields=("description",), label="description over its cap")
    h.publish(rk, json.dumps(complaint(external_ref="r" * 129)).encode(), expect="rejected",
              fields=("external_ref",), label="long ref")
    h.publish(rk, json.dumps(complaint(evidence=[{"kind": "photo", "uri": "https://x/1"}] * 201)).encode(),
              expect="rejected", fields=("evidence",), label="too much evidence")
    # identifiers at their documented maxima must fit the PostgreSQL columns
    long_ok = complaint(source="s" * 128, external_ref="r" * 128, user_id="u" * 128, merchant_id="m" * 128)
    long_ok["order"].update(order_id="o" * 128, category="c" * 128)
    h.publish(rk, long_ok, expect="either", fields=("order.category",), label="identifiers at 128 chars")
    # wrong encodings
    text = json.dumps(complaint(description="café ünïcode 纠纷"), ensure_ascii=False)
    h.publish(rk, text.encode("latin-1", "replace"), expect="rejected", fields=msg, label="latin-1")
    h.publish(rk, text.encode("utf-16"), expect="rejected", fields=msg, label="utf-16 with BOM")
    h.publish(rk, text.encode("utf-16-le"), expect="rejected", fields=msg, label="utf-16-le")
    h.publish(rk, text.encode("utf-32"), expect="rejected", fields=msg, label="utf-32")
    h.publish(rk, b"\xef\xbb\xbf" + text.encode("utf-8"), expect="admitted", label="utf-8 BOM")
    h.publish(rk, text.encode("utf-8").replace("纠".encode(), b"\xe7\xba"), expect="rejected", fields=msg,
              label="truncated multibyte")
    h.publish(rk, text.encode("utf-8").replace(b"caf", b"\xc0\xaf"), expect="rejected", fields=msg,
              label="overlong")
    h.publish(rk, text.encode("utf-8").replace(b"caf", b"\xed\xa0\x80"), expect="rejected", fields=msg,
              label="encoded surrogate")
    h.publish(rk, json.dumps(complaint(description="\ud800 lone")).encode(), expect="rejected",
              fields=("description",), label="escaped lone surrogate")
    h.publish(rk, json.dumps(complaint(user_id="u\x001")).encode(), expect="rejected", fields=("user_id",),
              label="NUL in id")
    h.publish(rk, json.dumps(complaint(description="a\x00b")).encode(), expect="rejected",
              fields=("description",), label="NUL in text")
    # wrong content-type / content-encoding / compression headers: the body decides
    h.publish(rk, complaint(), content_type="text/plain", expect="admitted", label="text/plain")
    h.publish(rk, complaint(), content_type="application/x-python-serialize", content_encoding="binary",
              expect="admitted", label="pickle content type, JSON body")
    h.publish(rk, complaint(), content_type=None, expect="admitted", label="no content type")
    h.publish(rk, complaint(), content_encoding="utf-16", expect="admitted", label="claims utf-16")
    h.publish(rk, gzip.compress(json.dumps(complaint()).encode()), content_encoding="gzip", expect="rejected",
              fields=msg, label="gzip body")
    h.publish(rk, complaint(), headers={"compression": "application/x-gzip"}, expect="rejected", fields=msg,
              label="claims compression, is not")
    # kombu itself inflates a body whose headers name a compression: the inflated body is what is judged
    h.publish(rk, zlib.compress(json.dumps(complaint()).encode()), headers={"compression": "application/x-gzip"},
              expect="admitted", label="really compressed")
    h.publish(rk, zlib.compress(b" " * (8 << 20)), headers={"compression": "application/x-gzip"},
              expect="rejected", fields=msg, label="small compression bomb")
    # money
    for label, amount in [("negative", -1), ("float", 100.0), ("fraction", 99.5), ("string", "100"),
                          ("bool", True), ("null", None), ("2**63", 2**63), ("object", {"v": 1})]:
        body = complaint()
        body["order"]["amount"] = amount
        h.publish(rk, body, expect="rejected", fields=("order.amount",), label=f"amount {label}")
    h.publish(rk, complaint(claimed_amount=-5), expect="rejected", fields=("claimed_amount",),
              label="negative claim")
    h.publish(rk, complaint(claimed_amount=10001), expect="rejected", fields=("claimed_amount",),
              label="claim over order")
    for constant in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 5000):
        raw = json.dumps(complaint(claimed_amount=7)).encode().replace(b'"claimed_amount": 7',
                                                                        b'"claimed_amount": ' + constant)
        expected = ("claimed_amount",) if constant == b"1e400" else msg
        h.publish(rk, raw, expect="rejected", fields=expected + msg, label=f"claimed {constant[:8]!r}")
    h.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": "m-x", "balance": -100,
                                           "currency": "CNY"}, expect="rejected", fields=("balance",),
              label="negative balance")
    # amounts are capped at 2**53-1: two balances near 2**63 would overflow the gateway's 64-bit sum and
    # make every later balance message fail
    h.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": "m-x", "balance": 2**63 - 1,
                                           "currency": "CNY"}, expect="rejected", fields=("balance",),
              label="balance at 2**63-1")
    for merchant in ("m-x", "m-y"):
        h.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": merchant, "balance": 2**53 - 1,
                                               "currency": "CNY"}, expect="admitted", label="balance at 2**53-1")
    body = complaint()
    body["order"]["amount"] = 2**53
    h.publish(rk, body, expect="rejected", fields=("order.amount",), label="amount 2**53")
    body = complaint()
    body["order"]["currency"] = "cny"
    h.publish(rk, body, expect="rejected", fields=("order.currency",), label="lowercase currency")
    # dates
    for label, when in [("naive", "2026-11-20T10:00:00"), ("date only", "2026-11-20"),
                        ("slashes", "20/11/2026 10:00"), ("epoch", 1763600000), ("month 13", "2026-13-01T00:00:00Z"),
                        ("year 1", "0001-01-01T00:00:00+00:00"), ("year 9999", "9999-12-31T23:59:59+00:00"),
                        ("words", "yesterday"), ("empty", ""), ("offset 25h", "2026-11-20T10:00:00+25:00")]:
        h.publish(rk, complaint(occurred_at=when), expect="rejected", fields=("occurred_at",), label=f"date {label}")
    # wrong types and versions
    h.publish(rk, complaint(schema_version=2), expect="rejected", fields=("schema_version",), label="version 2")
    h.publish(rk, complaint(schema_version="1"), expect="rejected", fields=("schema_version",),
              label="version string")
    h.publish(rk, complaint(order="O-1"), expect="rejected", fields=("order",), label="order a string")
    h.publish(rk, complaint(order=[1, 2]), expect="rejected", fields=("order",), label="order a list")
    h.publish(rk, complaint(channel=["app"]), expect="rejected", fields=("channel",), label="channel a list")
    h.publish(rk, complaint(evidence={"kind": "photo"}), expect="rejected", fields=("evidence",),
              label="evidence an object")
    h.publish(rk, complaint(evidence=[{"kind": "photo", "uri": "javascript:alert(1)"}]), expect="rejected",
              fields=("evidence.0.uri",), label="script uri")
    h.publish(rk, complaint(contact={"email": "not an email"}), expect="rejected", fields=("contact.email",),
              label="bad email")
    # unknown and odd routing keys
    for key in ("complaint.created", "", "#", "complaint.submitted.extra", "x" * 255, "ticket.stage1",
                "\u7ea0\u7eb7.submitted"):
        h.publish(key, complaint(), expect="rejected", fields=("_routing_key",), label=f"routing key {key[:20]!r}")
    # follow-ups about tickets that do not exist, or not allowed in the ticket's state
    h.publish("customer.withdrew", {"schema_version": 1, "ticket_id": 2**63 - 1, "user_id": "u-1"},
              expect="rejected", fields=("ticket_id",), label="unknown ticket id")
    h.publish("customer.withdrew", {"schema_version": 1, "ticket_id": 2**63, "user_id": "u-1"},
              expect="rejected", fields=("ticket_id",), label="ticket id over 64 bits")
    # a complaint named by source and reference may be on its way: held (rejected after the TTL)
    h.publish("customer.withdrew", {"schema_version": 1, "source": "nope", "external_ref": "nope", "user_id": "u"},
              expect="held", label="unknown external ref")
    h.publish("customer.withdrew", {"schema_version": 1, "user_id": "u-1"}, expect="rejected", fields=("ticket_id",),
              label="names no ticket")
    h.publish("merchant.responded", {"schema_version": 1, "ticket_id": ticket_id, "merchant_id": "m-1",
                                     "option": "direct_refund"}, expect="rejected", fields=("_state",),
              label="not allowed in state")
    h.publish("customer.withdrew", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "someone-else"},
              expect="rejected", fields=("user_id",), label="another buyer withdraws")
    h.publish("survey.answered", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u-1", "score": 6},
              expect="rejected", fields=("score",), label="score 6")
    # signatures: the signed source needs a valid x-op-signature over the raw body
    good = json.dumps(complaint(source=SIGNED_SOURCE)).encode()
    h.publish(rk, good, expect="rejected", fields=(SIGNATURE_HEADER,), label="unsigned")
    for label, signature in [("forged", "0" * 64), ("other body", sign(SECRET, b"{}")),
                             ("wrong secret", sign("guess", good)), ("short", "abc"), ("empty", ""),
                             ("non-ascii", "é" * 64), ("number", 12345), ("list", ["a", "b"]),
                             ("bytes", b"\xff" * 64), ("huge", "a" * 100_000)]:
        body = json.dumps(complaint(source=SIGNED_SOURCE)).encode()
        h.publish(rk, body, headers={SIGNATURE_HEADER: signature}, expect="rejected", fields=(SIGNATURE_HEADER,),
                  label=f"signature {label}")
    h.publish(rk, good, headers=signed(good), expect="admitted", label="signed")
    upper = json.dumps(complaint(source=SIGNED_SOURCE)).encode()
    h.publish(rk, upper, headers={SIGNATURE_HEADER: sign(SECRET, upper).upper()}, expect="admitted",
              label="signed, uppercase hex")
    # a follow-up to the signed source's ticket must be signed, whatever source the body names
    dodge = {"schema_version": 1, "ticket_id": signed_ticket_id, "source": "hostile-shop", "user_id": "u-1"}
    h.publish("customer.withdrew", dodge, expect="rejected", fields=(SIGNATURE_HEADER,), label="dodging signature")
    unsigned_follow = {"schema_version": 1, "ticket_id": signed_ticket_id, "user_id": "u-1"}
    h.publish("customer.withdrew", unsigned_follow, expect="rejected", fields=(SIGNATURE_HEADER,),
              label="unsigned follow-up")
    # hostile headers and message ids: odd types, NUL, surrogates, nesting
    for label, headers in [("nested", {"a": {"b": {"c": [1, 2, {"d": None}]}}}), ("NUL", {"x-n": "a\x00b"}),
                           ("NUL key", {"a\x00b": "v"}), ("surrogate", {"x-s": "\ud800"}),
                           ("float", {"x-f": 1.5}), ("decimal", {"x-d": __import__("decimal").Decimal("1.5")}),
                           ("big", {"x-big": "h" * 100_000})]:
        h.publish(rk, b"{oops", headers=headers, expect="rejected", fields=msg, label=f"headers {label}")
    for label, message_id in [("NUL", "id\x00nul"), ("surrogate", "id\ud800"), ("spaces", "   "),
                              ("255 bytes", "i" * 255), ("unicode", "纠纷" * 40)]:
        h.publish(rk, b"{oops", message_id=message_id, expect="rejected", fields=msg, label=f"message id {label}")
        h.publish(rk, complaint(), message_id=message_id + "v" if len(message_id) < 255 else message_id[:-1] + "v",
                  expect="admitted", label=f"valid, message id {label}")
    # duplicates: the same message id with a different body is acknowledged and ignored
    first = h.publish(rk, complaint(), expect="admitted", label="first of a pair")
    h.publish(rk, complaint(), message_id=first.message_id, expect="duplicate", label="same id, other complaint")
    h.publish("customer.withdrew", {"schema_version": 1, "ticket_id": ticket_id, "user_id": "u-1"},
              message_id=first.message_id, expect="duplicate", label="same id, a withdrawal")
    h.publish(rk, b"{broken", message_id=first.message_id, expect="either", fields=msg,
              label="same id, broken body")


def burst(h: Hostile) -> None:
    """Messages published back to back, so the consumer takes them as one prefetched batch (one
    transaction, a savepoint each): hostile ones in the middle are stored as rejected alone, a
    repeated message id and a complaint resent under a new id are duplicates within the batch, and
    the valid ones around them are admitted."""
    rk = "complaint.submitted"
    first = complaint()
    h.publish(rk, first, expect="admitted", label="burst: first")
    h.publish(rk, b"{not json", expect="rejected", fields=("_message",), label="burst: not json")
    h.publish(rk, complaint(), message_id=h.sent[-2].message_id, expect="duplicate", label="same id, other complaint")
    h.publish(rk, json.dumps(complaint(external_ref="r\ud800")).encode(), expect="rejected",
              fields=("external_ref",), label="burst: lone surrogate in the reference")
    h.publish(rk, first, expect="admitted", label="burst: resent under a new id")  # a duplicate, processed
    h.publish(rk, json.dumps(complaint(description="a\x00b")).encode(), expect="rejected", fields=("description",),
              label="burst: NUL in text")
    big = complaint()
    big["order"]["amount"] = 2**63
    h.publish(rk, big, expect="rejected", fields=("order.amount",), label="burst: amount past 64 bits")
    h.publish(rk, complaint(order=dict(first["order"])), expect="admitted", label="burst: joins the first")
    for sent in h.sent[-8:]:
        if sent.expect != "duplicate":
            status, reasons = h.settle(sent)
            assert status == sent.expect, f"{sent.label}: expected {sent.expect}, was {status}: {reasons}"


def missing_id_cases(h: Hostile) -> tuple[list[dict], list[bytes]]:
    """Messages without a message id: a valid one is admitted (de-duplicated by its reference), a broken
    one is stored with no id."""
    valid = [complaint(), complaint()]
    broken = [b"{no id", json.dumps(complaint(claimed_amount=-1)).encode()]
    for body in valid:
        h.publish("complaint.submitted", body, message_id=None, expect="admitted", label="no message id")
    h.publish("complaint.submitted", valid[0], message_id=None, expect="duplicate", label="no id, repeated ref")
    for raw in broken:
        h.publish("complaint.submitted", raw, message_id=None, expect="rejected", label="no message id, broken")
    balance = {"schema_version": 1, "merchant_id": "m" * 128, "balance": 10**15, "currency": "CNY"}
    h.publish("merchant.balance_changed", balance, message_id=None, expect="admitted",
              label="no message id, longest merchant id")
    return valid, broken


# ---------------------------------------------------------------------------------------------
# generated cases
# ---------------------------------------------------------------------------------------------

hostile_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),  # NaN, Infinity: fixed cases
    st.sampled_from(["", " ", "\x00", "\ud800", "x" * 300, "2026-11-20T10:00:00", "20/11/2026", "-1",
                     "javascript:x", "CNY", "ab" * 32, "1e400", "c" * 129, "NaN"]),
)
json_values = st.recursive(hostile_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=8), c, max_size=3), max_leaves=10)


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    found: list[tuple] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


@st.composite
def mutated_complaints(draw: st.DrawFn) -> tuple[dict, str]:
    """A valid complaint with one value replaced by a hostile one, or removed; and the dotted path."""
    body = complaint()
    path = draw(st.sampled_from(paths_of(body)))
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    if draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = draw(json_values)
    return body, ".".join(str(p) for p in path)


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------

def reason_names_field(reasons: dict, wanted: tuple[str, ...]) -> bool:
    """One reason key is a wanted field, inside one, or holds one (``order`` for ``order.amount``)."""
    for key in reasons:
        for name in wanted:
            if key == name or key.startswith(name + ".") or name.startswith(key + "."):
                return True
    return False


def assert_well_formed(reasons: Any, what: str) -> None:
    assert isinstance(reasons, dict) and reasons, f"{what}: rejected without a reason"
    for key, messages in reasons.items():
        assert isinstance(key, str) and key, f"{what}: a reason without a field: {reasons}"
        assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages), \
            f"{what}: an empty reason: {reasons}"
        assert not any("internal error" in m for m in messages), f"{what}: the validator failed: {reasons}"


def assert_no_half_made_tickets() -> None:
    """Every ticket has an unbroken audit trail 1..version ending in its state, and its creation event."""
    from models.audit import TicketEvent
    from models.base import database
    from models.outbox import OutboxEvent
    from models.ticket import Ticket
    with database.connection_context():
        tickets = list(Ticket.select())
        trails: dict[int, list[TicketEvent]] = {}
        for event in TicketEvent.select().order_by(TicketEvent.ticket, TicketEvent.version):
            trails.setdefault(event.ticket_id, []).append(event)
        created = {e.ticket_id for e in OutboxEvent.select().where(OutboxEvent.routing_key.startswith("ticket."))
                   if e.body.get("from_state") is None}
    assert tickets, "no ticket at all: the barrier complaints were not admitted"
    for ticket in tickets:
        trail = trails.get(ticket.id, [])
        assert trail, f"ticket {ticket.id} has no audit row"
        assert [e.version for e in trail] == list(range(1, ticket.version + 1)), \
            f"ticket {ticket.id} v{ticket.version}: audit versions {[e.version for e in trail]}"
        assert trail[0].from_state is None and trail[-1].to_state == ticket.state, \
            f"ticket {ticket.id} is '{ticket.state}' but its trail ends in '{trail[-1].to_state}'"
        assert ticket.id in created, f"ticket {ticket.id} has no creation event in the outbox"


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------

#: Marks a generated case that is a valid follow-up about the first ticket.
FOLLOW_UP = object()
GENERATED = settings(max_examples=int(os.environ.get("OP_HOSTILE_EXAMPLES", "300")), deadline=None,
                     suppress_health_check=list(HealthCheck), database=None)


def test_hostile_intake_never_crashes_loses_or_half_applies(hostile: Hostile) -> None:
    h = hostile
    started = time.monotonic()
    # Given tickets to aim follow-ups at: one of an ordinary source, one of the signed source
    ticket_id = h.barrier()
    body = json.dumps(complaint(source=SIGNED_SOURCE)).encode()
    signed_sent = h.publish("complaint.submitted", body, headers=signed(body), expect="admitted", label="signed")
    assert h.settle(signed_sent)[0] == "admitted", h.tail()
    from models.base import database
    from models.ticket import Ticket
    with database.connection_context():
        signed_ticket_id = Ticket.get(Ticket.source == SIGNED_SOURCE).id

    # When the fixed nasty cases, then the generated ones, are published to op.intake
    nasty_cases(h, ticket_id, signed_ticket_id)
    valid_no_id, broken_no_id = missing_id_cases(h)
    h.barrier()
    for sent in h.sent:
        if sent.message_id is None or sent.expect in ("duplicate",):
            continue
        status, reasons = h.settle(sent)
        what = f"{sent.label} ({sent.routing_key!r})"
        if sent.expect in ("admitted", "rejected"):
            assert status == sent.expect, f"{what}: expected {sent.expect}, was {status}: {reasons}"
        if status == "rejected":
            assert_well_formed(reasons, what)
            if sent.fields:
                assert reason_names_field(reasons, sent.fields), f"{what}: reasons {reasons} name none of {sent.fields}"
    fixed = len(h.sent)

    tickets_by_ref: list[tuple[str, str]] = []

    @GENERATED
    @given(case=st.one_of(
        mutated_complaints().map(lambda c: ("complaint.submitted", c[0], c[1])),
        st.tuples(st.sampled_from(INTAKE_ROUTING_KEYS), json_values, st.just("")),
        st.tuples(st.sampled_from(INTAKE_ROUTING_KEYS + ("nope", "")), st.binary(max_size=200), st.just("")),
        st.tuples(st.sampled_from(INTAKE_ROUTING_KEYS[1:]), st.just(FOLLOW_UP), st.just("")),
    ))
    def one_message(case: tuple[str, Any, str]) -> None:
        routing_key, body, path = case
        if body is FOLLOW_UP:  # a valid follow-up about the first ticket, whatever its state is by now
            body = follow_up(routing_key, {"id": ticket_id})
        sent = h.publish(routing_key, body, label=f"generated {routing_key} {path}")
        status, reasons = h.settle(sent)
        if status == "rejected":
            assert_well_formed(reasons, sent.label)
            if path:
                related = (path, "claimed_amount") if path.startswith("order.amount") else (path,)
                assert reason_names_field(reasons, related), f"mutating {path} was refused for {reasons}"
        elif routing_key == "complaint.submitted" and isinstance(body, dict):
            tickets_by_ref.append((str(body.get("source")), str(body.get("external_ref"))))

    one_message()
    burst(h)

    # Then the consumer is alive and still admits a valid complaint
    h.barrier()
    assert h.alive(), h.tail()
    # never once put a message back (with the database up, a requeue means a message it cannot digest)
    requeued = [line for line in h.log.read_text(encoding="utf-8", errors="replace").splitlines()
                if "requeueing" in line]
    assert not requeued, "\n".join(line[:400] for line in requeued[:3])
    # and nothing was lost: every message with an id is in exactly one bucket; those without one too
    from models.intake import HeldMessage, ProcessedMessage, RejectedMessage, storable
    with database.connection_context():
        rejected = list(RejectedMessage.select())
        processed = {p.message_id for p in ProcessedMessage.select()}
        held = {(h.message_id, bytes(h.body)) for h in HeldMessage.select()}
        for body in valid_no_id:
            assert Ticket.select().where((Ticket.source == body["source"])
                                         & (Ticket.external_ref == body["external_ref"])).count() == 1
        for raw in broken_no_id:
            assert [r for r in rejected if r.message_id is None and bytes(r.body) == raw], raw[:80]
        unrefused = [s for s in h.sent if s.message_id is None and s.expect == "admitted"]
        wrongly = [r.reasons for r in rejected if r.message_id is None and any(bytes(r.body) == s.raw for s in unrefused)]
        assert not wrongly, f"a valid message without a message id was rejected: {wrongly}"
    admitted_refs: set[tuple[str, str]] = set()
    either: list[str] = []
    for sent in h.sent:
        if sent.expect == "duplicate":
            continue
        if sent.message_id is None:
            was_admitted = sent.expect == "admitted"  # checked above, by reference
        else:
            stored = [r for r in rejected
                      if r.message_id == storable(sent.message_id) and bytes(r.body) == stored_body(sent)]
            was_admitted = storable(sent.message_id) in processed and not stored
            was_held = (storable(sent.message_id), stored_body(sent)) in held
            assert len(stored) + was_admitted + was_held == 1 or sent.expect == "either", \
                f"{sent.label}: {len(stored)} rejected rows, processed={sent.message_id in processed}, held={was_held}"
            if sent.expect == "either":
                either.append(f"{sent.label}: {'admitted' if was_admitted else 'rejected'}")
        if was_admitted and sent.routing_key == "complaint.submitted":
            body = json.loads(stored_body(sent).decode("utf-8-sig"))
            admitted_refs.add((body["source"], body["external_ref"]))
    for row in rejected:
        assert_well_formed(row.reasons, f"rejected row {row.id}")
    # and no half-made ticket; the complaints admitted and the tickets (or links) are the same set
    assert_no_half_made_tickets()
    from models.ticket import LinkedComplaint
    with database.connection_context():
        refs = {(t.source, t.external_ref) for t in Ticket.select()}
        refs |= {(lc.source, lc.external_ref) for lc in LinkedComplaint.select()}
        tickets = Ticket.select().count()
    assert refs == admitted_refs, (f"admitted without a ticket: {sorted(admitted_refs - refs)[:5]}; "
                                   f"a ticket nobody admitted: {sorted(refs - admitted_refs)[:5]}")
    assert set(tickets_by_ref) <= refs
    for s in h.sent:
        if s.label == "same id, other complaint":
            body = json.loads(s.raw)
            assert (body["source"], body["external_ref"]) not in refs, "a repeated message id created a ticket"
    print("\n".join(either))
    print(f"\nhostile intake: {fixed} fixed + {len(h.sent) - fixed} generated messages, "
          f"{len(rejected)} rejected, {tickets} tickets, {len(refs) - tickets} linked, {time.monotonic() - started:.1f}s")
