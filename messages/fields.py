"""Strict marshmallow fields shared by every wire schema (SPEC §4 and §5).

Why our own fields: the stock ones are lenient where the contract is not.
``Integer`` takes ``True`` and ``"12"``, ``Boolean`` takes ``"yes"`` and
``1``, ``String`` takes a lone surrogate or a NUL byte that the database
cannot store, and a float amount would be rounded silently. Money is the
sharpest edge: a float in a money field is a bug upstream, never something to
round. Every field here says no with a reason that names the problem, because
that reason is what an operator reads in ``disputes intake rejected``.

Also here: the ticket-reference base schema (follow-up messages name their
ticket by ``ticket_id`` or by ``source`` + ``external_ref``) and the flattening
of marshmallow's nested error dicts into ``"order.amount"``-style keys.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validates_schema

#: Largest id or integer that fits a signed 64-bit database column.
MAX_MINOR_UNITS = 2**63 - 1
#: Largest amount of money, in minor units: 2**53 - 1 (about 90 trillion yuan in fen). Every JSON
#: consumer of our events reads it exactly (JavaScript included), and ledger sums over a thousand such
#: amounts still fit the 64-bit balance columns — one absurd balance cannot overflow the gateway's.
MAX_AMOUNT = 2**53 - 1
#: Default length cap for identifiers and codes (ids, refs, reason codes).
MAX_IDENTIFIER_CHARS = 128
#: Length cap for a URI (evidence references, vouchers).
MAX_URI_CHARS = 2048
#: Times outside these years are upstream bugs, and near the ends of
#: ``datetime``'s range a zone conversion would overflow in our own code.
MIN_YEAR, MAX_YEAR = 1970, 9998
#: The key under which non-field problems are reported.
NON_FIELD_KEY = "_message"

_SINGLE_LINE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
#: Schemes that are script or inline bytes, not a reference to stored evidence
#: (the desk renders evidence URIs as links; the contract says "never bytes").
_FORBIDDEN_URI_SCHEMES = frozenset({"javascript", "vbscript", "data"})
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class StrictInt(fields.Field[int]):
    """A JSON integer, and only that: no bool, float, or numeric string."""

    default_error_messages = {
        "invalid": "Not a valid integer.",
        "bool": "Must be an integer, not a boolean.",
    }

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("bool")
        if not isinstance(value, int):
            raise self.make_error("invalid")
        return value


class PositiveId(StrictInt):
    """A database id: a strict integer of at least 1 that fits 64 bits."""

    default_error_messages = {"range": "Must be a positive integer id."}

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> int:
        number = super()._deserialize(value, attr, data, **kwargs)
        if not 1 <= number <= MAX_MINOR_UNITS:
            raise self.make_error("range")
        return number


class Money(fields.Field[int]):
    """An amount in integer minor units (fen, cents): never a float, never negative."""

    default_error_messages = {
        "invalid": "Money must be an integer amount in minor units.",
        "float": "Money must be an integer in minor units (fen, cents), never a float.",
        "bool": "Money must be an integer in minor units, not a boolean.",
        "string": "Money must be a JSON integer in minor units, not a string.",
        "negative": "Money must not be negative.",
        "too_large": f"Amount is too large (at most {MAX_AMOUNT} minor units).",
    }

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("bool")
        if isinstance(value, float):
            raise self.make_error("float")
        if isinstance(value, str):
            raise self.make_error("string")
        if not isinstance(value, int):
            raise self.make_error("invalid")
        if value < 0:
            raise self.make_error("negative")
        if value > MAX_AMOUNT:
            raise self.make_error("too_large")
        return value


class StrictBool(fields.Field[bool]):
    """A JSON ``true`` or ``false``; ``1``, ``"yes"`` and ``"true"`` are refused."""

    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid")


class Text(fields.Field[str]):
    """A string the database can store: valid UTF-8, no NUL, bounded length.

    Single-line text (the default) also refuses control characters; ``blank``
    allows the empty or all-whitespace string.
    """

    default_error_messages = {
        "invalid": "Not a valid string.",
        "encoding": "Not a valid UTF-8 string.",
        "control": "Must not contain control characters.",
        "blank": "Must not be blank.",
        "too_long": "Longer than {max_length} characters.",
    }

    def __init__(
        self, *, max_length: int = MAX_IDENTIFIER_CHARS, multiline: bool = False,
        blank: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length
        self.multiline = multiline
        self.blank = blank

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return self._check(value)

    def _check(self, value: str) -> str:
        if len(value) > self.max_length:
            raise self.make_error("too_long", max_length=self.max_length)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("encoding") from None
        if "\x00" in value or (not self.multiline and _SINGLE_LINE_FORBIDDEN.search(value)):
            raise self.make_error("control")
        if not self.blank and not value.strip():
            raise self.make_error("blank")
        return value


class Identifier(Text):
    """An upstream id or code; with ``accept_int`` a JSON integer id reads as its string.

    Upstream systems disagree on whether a user or order id is ``42`` or
    ``"42"``; reading both as ``"42"`` keeps later comparisons (is this the
    ticket's merchant?) honest.
    """

    def __init__(self, *, accept_int: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accept_int = accept_int

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> str:
        if self.accept_int and isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= MAX_MINOR_UNITS:
                return str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class Currency(Text):
    """An ISO 4217 code: three uppercase letters (``CNY``, ``USD``)."""

    default_error_messages = {"currency": "Must be an ISO 4217 code: three uppercase letters."}

    def _check(self, value: str) -> str:
        if not _CURRENCY.match(value):
            raise self.make_error("currency")
        return value


class Uri(Text):
    """A reference with a scheme (``https://…``, ``s3://…``), never inline bytes."""

    default_error_messages = {
        "uri": "Must be a URI with a scheme, e.g. https://host/path.",
        "scheme": "URI scheme {scheme!r} is not allowed: evidence is a reference, not content.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_URI_CHARS, **kwargs)

    def _check(self, value: str) -> str:
        value = super()._check(value)
        if not _URI.match(value):
            raise self.make_error("uri")
        scheme = value.split(":", 1)[0].lower()
        if scheme in _FORBIDDEN_URI_SCHEMES:
            raise self.make_error("scheme", scheme=scheme)
        return value


class Sha256(Text):
    """A SHA-256 digest as 64 hex digits, read in lowercase."""

    default_error_messages = {"sha256": "Must be a SHA-256 digest: 64 hexadecimal digits."}

    def _check(self, value: str) -> str:
        if not _SHA256.match(value):
            raise self.make_error("sha256")
        return value.lower()


class AwareDateTime(fields.AwareDateTime):
    """An ISO 8601 string with a zone (``Z`` or an offset); naive times are refused."""

    default_error_messages = {
        "invalid_awareness": "Must be an ISO 8601 datetime with a zone (Z or +08:00).",
        "range": f"Year must be between {MIN_YEAR} and {MAX_YEAR}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        moment = super()._deserialize(value, attr, data, **kwargs)
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise self.make_error("range")
        return moment


class BoundedList(fields.List):
    """A list whose length is checked before any item is read.

    A 1 MiB body could otherwise carry a hundred thousand tiny items and make
    the intake spend seconds validating what it will refuse anyway.
    """

    default_error_messages = {
        "too_short": "Must contain at least {min_items} item(s).",
        "too_long": "Must contain at most {max_items} items.",
    }

    def __init__(self, inner: fields.Field, *, min_items: int = 0, max_items: int, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self.min_items = min_items
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list):
            if len(value) > self.max_items:
                raise self.make_error("too_long", max_items=self.max_items)
            if len(value) < self.min_items:
                raise self.make_error("too_short", min_items=self.min_items)
        return super()._deserialize(value, attr, data, **kwargs)


class JsonObject(fields.Field[dict[str, Any]]):
    """A JSON object that really serialises (no NaN, no datetime, no Decimal)."""

    default_error_messages = {
        "invalid": "Must be a JSON object.",
        "not_json": "Must be JSON-serialisable: {error}",
    }

    def _deserialize(self, value: object, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise self.make_error("not_json", error=str(error)[:200]) from None
        return value


class TicketRefSchema(Schema):
    """Base of every follow-up message: the ticket by id, or by source + external_ref.

    Unknown fields are EXCLUDEd on intake schemas so an upstream system can add
    a field before we read it (forward compatibility); a renamed or missing
    required field is still refused.
    """

    class Meta:
        unknown = EXCLUDE

    ticket_id = PositiveId(allow_none=True)
    source = Identifier(allow_none=True)
    external_ref = Identifier(allow_none=True)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _names_a_ticket(self, data: Mapping[str, Any], original: Any, **kwargs: Any) -> None:
        if not isinstance(original, Mapping):
            return
        if original.get("ticket_id") is not None:
            return
        if original.get("source") is not None and original.get("external_ref") is not None:
            return
        raise ValidationError(
            "Name the ticket by ticket_id, or by source and external_ref.", field_name="ticket_id",
        )


def flatten_errors(messages: object, prefix: str = "") -> dict[str, list[str]]:
    """Flatten marshmallow's nested ``messages`` into ``{"order.amount": [...]}``.

    Schema-level (``_schema``) messages land on their parent's key, or on
    ``"_message"`` at the top level.
    """
    flat: dict[str, list[str]] = {}
    _flatten_into(flat, messages, prefix)
    return flat


def _flatten_into(flat: dict[str, list[str]], messages: object, prefix: str) -> None:
    if isinstance(messages, Mapping):
        for key, nested in messages.items():
            if key == "_schema":
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            _flatten_into(flat, nested, path)
        return
    items = messages if isinstance(messages, (list, tuple)) else [messages]
    for item in items:
        if isinstance(item, Mapping):
            _flatten_into(flat, item, prefix)
        else:
            flat.setdefault(prefix or NON_FIELD_KEY, []).append(str(item))
