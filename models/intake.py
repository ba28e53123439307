"""The intake's memory: message ids already applied, messages it refused, follow-ups it holds.

`storable` and `storable_headers` live here, beside the columns they fit: an AMQP
delivery may carry strings (message ids, routing keys, header names and values)
that PostgreSQL refuses outright — NUL, lone surrogates, more characters than a
column holds — and a value the database refuses would make the consumer requeue
the message forever. They are pure string handling, but what they guard is what
these tables can store, so they sit with the tables rather than with kombu.
"""
from __future__ import annotations

import hashlib
from typing import Any

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow


class ProcessedMessage(BaseModel):
    """Inserted in the transaction of the message's effect: a repeat finds it and is ignored."""

    message_id = peewee.CharField(max_length=255, primary_key=True)
    routing_key = peewee.CharField(max_length=64)
    ticket_id = peewee.IntegerField(null=True)
    processed_at = UtcDateTimeField(default=utcnow)


class RejectedMessage(BaseModel):
    """A message the intake could not apply, kept whole with every reason, replayable."""

    routing_key = peewee.CharField(max_length=255)
    message_id = peewee.CharField(max_length=255, null=True)
    headers = JSONField(null=True)
    body = peewee.BlobField()
    reasons = JSONField()
    received_at = UtcDateTimeField(default=utcnow)
    replayed_at = UtcDateTimeField(null=True)
    #: ``rejected``, or ``replayed`` once a replay applied it.
    status = peewee.CharField(max_length=16, default="rejected", index=True)


class HeldMessage(BaseModel):
    """A follow-up that named its ticket by ``source`` + ``external_ref`` before that complaint was
    admitted (SPEC §4 "Messages out of order"): kept whole until the complaint lands — then it is
    applied, in arrival order — or until ``intake.early_message_ttl`` passed, when it is rejected."""

    routing_key = peewee.CharField(max_length=64)
    message_id = peewee.CharField(max_length=255, null=True, index=True)
    headers = JSONField(null=True)
    body = peewee.BlobField()
    #: The complaint it waits for.
    source = peewee.CharField(max_length=128)
    external_ref = peewee.CharField(max_length=128)
    received_at = UtcDateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("source", "external_ref"), False),)


def storable(text: Any, limit: int | None = 255) -> Any:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates (an AMQP short string may carry
    both) escaped, and past ``limit`` characters (a column's width) replaced by its digest; the same
    input gives the same output, so a redelivery is still recognised (and so is a value already made
    storable: applying it twice changes nothing)."""
    if not isinstance(text, str):
        return None if text is None else storable(str(text), limit)
    if "\x00" in text or not _encodable(text):
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    if limit is None or len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encodable(text: str) -> bool:
    """No lone surrogate in `text` (what strict UTF-8 cannot encode); asked of every message id and
    key the intake stores, so the common case is answered in C, not a character at a time."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_headers(headers: dict | None) -> dict | None:
    """A delivery's headers as the JSON column of `RejectedMessage` can hold them: names and text
    made `storable`, numbers and booleans kept, anything else (bytes, nested tables) by its repr."""
    if not headers:
        return None
    return {storable(str(k), None): v if isinstance(v, (int, float, bool, type(None)))
            else storable(v if isinstance(v, str) else repr(v), None) for k, v in headers.items()}
