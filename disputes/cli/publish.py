"""``disputes publish``: one intake message sent as an upstream system sends it (SPEC §7).

What an upstream team needs to see the wire as it is: the body they wrote, on ``op.intake``
under its routing key, persistent, with a fresh ``message_id`` and — when the policy holds a
secret for its source — the ``x-op-signature`` header the intake checks. The body is checked
against the intake's own schema first, so a typo is named here rather than found later in
``disputes intake rejected`` (``--no-check`` sends it anyway, to see a rejection happen).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from kombu import Producer

from disputes.wiring import App
from messages import INTAKE_ROUTING_KEYS, SIGNATURE_HEADER, IntakeInvalid, parse_intake, sign
from disputes.settings import INTAKE_EXCHANGE


class NotPublished(Exception):
    """Why a message was not sent (shown to the user as is)."""


@dataclass(frozen=True)
class Published:
    message_id: str
    signed_for: str | None


def publish_intake(app: App, routing_key: str, raw: bytes, *, message_id: str | None = None,
                   source: str | None = None, check: bool = True) -> Published:
    """Send `raw` to ``op.intake`` under `routing_key`; returns its message id. `source` names the
    source to sign for when the body names none (a follow-up by ``ticket_id``)."""
    if app.settings.intake_url.startswith("memory"):
        raise NotPublished("OP_INTAKE_URL is memory:// (the embedded default), which reaches no other "
                           "process: set OP_INTAKE_URL to the broker, e.g. amqp://guest:guest@localhost:5672//")
    if check:
        _check(routing_key, raw)
    signer = source or _body_source(raw)
    secret = app.policy.intake_secrets.get(signer) if signer else None
    headers = {SIGNATURE_HEADER: sign(secret, raw)} if secret else {}
    message_id = message_id or uuid.uuid4().hex
    from workers.intake import declare_topology, intake_queue_named  # start-up time
    with app.kombu_connection() as connection:
        # A message sent before `disputes init` is kept, not dropped (in this deployment's queue: OP_NAMESPACE).
        declare_topology(connection, intake_queue_named(app.settings.intake_queue))
        with connection.channel() as channel:
            Producer(channel).publish(raw, exchange=INTAKE_EXCHANGE, routing_key=routing_key, headers=headers,
                                      message_id=message_id, content_type="application/json",
                                      content_encoding="utf-8", delivery_mode=2, retry=True,
                                      retry_policy={"max_retries": 3})
    return Published(message_id, signer if secret else None)


def _check(routing_key: str, raw: bytes) -> None:
    if routing_key not in INTAKE_ROUTING_KEYS:
        raise NotPublished(f"{routing_key!r} is not an intake routing key: one of {', '.join(INTAKE_ROUTING_KEYS)}")
    try:
        parse_intake(routing_key, raw)
    except IntakeInvalid as invalid:
        lines = [f"  {field}: {'; '.join(messages)}" for field, messages in sorted(invalid.reasons.items())]
        raise NotPublished("the body does not keep the contract (--no-check sends it anyway):\n"
                           + "\n".join(lines)) from invalid


def _body_source(raw: bytes) -> str | None:
    try:
        source = json.loads(raw).get("source")
    except (ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None
