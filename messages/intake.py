"""Intake schemas: one marshmallow schema per ``op.intake`` routing key (SPEC §4).

Why this module is shaped so: the intake must never crash on any byte string
and must never half-apply a message. ``parse_intake`` is therefore the only
door. It turns *every* problem — bad UTF-8, bad JSON, a wrong schema version,
a float amount — into one ``IntakeInvalid`` whose ``reasons`` the consumer
stores verbatim in the rejected-messages bucket, so an operator can fix and
replay it. Schemas do no I/O: whether the named ticket exists, or whether a
category code is configured, is decided later by code that owns the database
and the policy.

Unknown fields are EXCLUDEd everywhere (not RAISEd): upstream teams ship on
their own schedule, and a sender that adds a field before we read it must not
have its complaints bounced. A missing or malformed *known* field still fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal, NoReturn, Union

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from messages.compiled import Unsure, compile_load
from messages.fields import (
    MAX_MINOR_UNITS, NON_FIELD_KEY, AwareDateTime, BoundedList, Currency, Identifier, Money,
    Sha256, StrictBool, StrictInt, Text, TicketRefSchema, Uri, flatten_errors,
)

logger = logging.getLogger(__name__)

#: The only body version this system reads.
SCHEMA_VERSION = 1
#: Bodies larger than this are refused before decoding.
MAX_BODY_BYTES = 1 << 20
#: Caps on free text and on evidence lists.
MAX_DESCRIPTION_CHARS = 4096
MAX_NOTE_CHARS = 1024
MAX_COMMENT_CHARS = 2048
MAX_EVIDENCE_ITEMS = 200
#: A category is a policy code; the ticket's column holds 64 characters.
MAX_CATEGORY_CHARS = 64
#: A sequence number fits a signed 64-bit column.
MAX_SEQUENCE = (1 << 63) - 1
#: Prefix of the reason given when validation itself failed (a bug, logged).
INTERNAL_ERROR_REASON = "internal error while validating"

CHANNELS = ("app", "web", "phone", "email", "chat", "upstream")
DELIVERIES = ("platform", "merchant")
ORDER_STATUSES = ("unpaid", "unshipped", "shipped", "delivered", "completed")
DISPUTE_TYPES = (
    "quality", "not_as_described", "logistics", "cancel_order", "after_sales",
    "missing_gift", "contract", "platform_policy", "other",
)
NEGOTIATIONS = ("pending", "failed", "timed_out")
COMPLEXITIES = ("simple", "complex")
EVIDENCE_KINDS = ("photo", "video", "chat_log", "logistics_proof", "invoice", "voucher", "other")
PARTIES = ("user", "merchant")
MERCHANT_OPTIONS = ("direct_refund", "negotiated_reject", "intercept_48h", "platform_judgment")

TicketRef = Union[tuple[Literal["ticket_id"], int], tuple[Literal["external"], tuple[str, str]]]


class IntakeInvalid(Exception):
    """An intake body that can never be applied as sent: store it, do not retry.

    ``reasons`` maps a field path (``"order.amount"``) or ``"_message"`` to
    its messages.
    """

    def __init__(self, reasons: Mapping[str, list[str]]) -> None:
        super().__init__({key: list(value) for key, value in reasons.items()})
        self.reasons: dict[str, list[str]] = self.args[0]

    def __str__(self) -> str:
        return "; ".join(f"{key}: {' '.join(value)}" for key, value in self.reasons.items())


def _choice(choices: tuple[str, ...], **kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(choices), **kwargs)


def _evidence_list(*, min_items: int = 0, **kwargs: Any) -> BoundedList:
    return BoundedList(
        fields.Nested(EvidenceItem), min_items=min_items, max_items=MAX_EVIDENCE_ITEMS, **kwargs,
    )


class _Part(Schema):
    """A nested part of a body; EXCLUDE for the same reason as the bodies."""

    class Meta:
        unknown = EXCLUDE


class EvidenceItem(_Part):
    """One piece of evidence: a reference to stored content, never the bytes."""

    kind = _choice(EVIDENCE_KINDS, required=True)
    uri = Uri(required=True)
    sha256 = Sha256(allow_none=True)
    note = Text(max_length=MAX_NOTE_CHARS, multiline=True, blank=True, allow_none=True)


class Order(_Part):
    """The order a complaint is about, as the order system sees it."""

    order_id = Identifier(accept_int=True, required=True)
    amount = Money(required=True)
    currency = Currency(required=True)
    category = Identifier(max_length=MAX_CATEGORY_CHARS, required=True)
    delivery = _choice(DELIVERIES, required=True)
    status = _choice(ORDER_STATUSES, required=True)


class Contact(_Part):
    """How to reach the parties: the buyer's email and phone, and the merchant's email where the order
    system knows it (merchants are otherwise reached by webhook or log only); every part optional."""

    email = Text(max_length=254, allow_none=True, validate=validate.Regexp(r"^[^@\s]+@[^@\s]+$"))
    phone = Text(max_length=32, allow_none=True)
    merchant_email = Text(max_length=254, allow_none=True, validate=validate.Regexp(r"^[^@\s]+@[^@\s]+$"))


class Voucher(_Part):
    """Proof of an offline transfer: the stored file, its digest, the amount."""

    uri = Uri(required=True)
    sha256 = Sha256(required=True)
    amount = Money(required=True)
    currency = Currency(required=True)


class _Versioned(Schema):
    """Every intake body carries ``schema_version``."""

    class Meta:
        unknown = EXCLUDE

    schema_version = StrictInt(
        required=True,
        validate=validate.Equal(SCHEMA_VERSION, error=f"This system reads schema_version {SCHEMA_VERSION}."),
    )


class _FollowUp(_Versioned, TicketRefSchema):
    """A message about an existing ticket."""


class ComplaintSubmitted(_Versioned):
    """``complaint.submitted``: a new dispute; ``source`` + ``external_ref`` is its identity."""

    source = Identifier(required=True)
    external_ref = Identifier(required=True)
    channel = _choice(CHANNELS, required=True)
    order = fields.Nested(Order, required=True)
    user_id = Identifier(accept_int=True, required=True)
    merchant_id = Identifier(accept_int=True, required=True)
    dispute_type = _choice(DISPUTE_TYPES, required=True)
    claimed_amount = Money(required=True)
    description = Text(max_length=MAX_DESCRIPTION_CHARS, multiline=True, blank=True, required=True)
    negotiation = _choice(NEGOTIATIONS, load_default="pending")
    complexity = _choice(COMPLEXITIES, load_default="simple")
    contact = fields.Nested(Contact, allow_none=True)
    evidence = _evidence_list(load_default=list)
    occurred_at = AwareDateTime(required=True)

    @validates_schema(skip_on_field_errors=False)
    def _claim_within_order(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        claimed = data.get("claimed_amount")
        order = data.get("order")
        amount = order.get("amount") if isinstance(order, Mapping) else None
        if isinstance(claimed, int) and isinstance(amount, int) and claimed > amount:
            currency = order.get("currency") if isinstance(order.get("currency"), str) else "the order's currency"
            raise ValidationError(  # the wire's own unit: upstream wrote both numbers in it
                f"Must not exceed order.amount ({amount}; both in minor units of {currency}).",
                field_name="claimed_amount",
            )


class EvidenceSubmitted(_FollowUp):
    """``evidence.submitted``: a party's answer to an evidence request."""

    party = _choice(PARTIES, required=True)
    items = _evidence_list(min_items=1, required=True)


class MerchantResponded(_FollowUp):
    """``merchant.responded``: the merchant's one settlement option."""

    merchant_id = Identifier(accept_int=True, required=True)
    option = _choice(MERCHANT_OPTIONS, required=True)
    reason_code = Identifier(allow_none=True)
    evidence = _evidence_list(load_default=list)


class MerchantRefundApproved(_FollowUp):
    """``merchant.refund_approved``: approve or force the refund during the 48-hour countdown."""

    merchant_id = Identifier(accept_int=True, required=True)


class CustomerConfirmed(_FollowUp):
    """``customer.confirmed``: the buyer accepts or declines the settlement."""

    user_id = Identifier(accept_int=True, required=True)
    accept = StrictBool(required=True)


class CustomerWithdrew(_FollowUp):
    """``customer.withdrew``: the buyer withdraws the complaint."""

    user_id = Identifier(accept_int=True, required=True)


class LogisticsInterceptionResult(_FollowUp):
    """``logistics.interception_result``: whether the parcel was stopped."""

    success = StrictBool(required=True)


class PaymentVoucherUploaded(_FollowUp):
    """``payment.voucher_uploaded``: the merchant's proof of an offline transfer."""

    merchant_id = Identifier(accept_int=True, required=True)
    voucher = fields.Nested(Voucher, required=True)


class GoodsReturned(_FollowUp):
    """``goods.returned``: the buyer shipped the goods back."""

    tracking_no = Identifier(accept_int=True, required=True)


class MerchantBalanceChanged(_Versioned):
    """``merchant.balance_changed``: the available balance as payments sees it (no ticket)."""

    merchant_id = Identifier(accept_int=True, required=True)
    balance = Money(required=True)
    currency = Currency(required=True)
    #: Optional, increasing per merchant: a report older than one applied is recorded, not applied.
    sequence = StrictInt(validate=validate.Range(min=0, max=MAX_SEQUENCE))
    #: Optional: the last of our ``ledger.*`` sequences the payment system had applied (SPEC §4, §5).
    applied_through = StrictInt(validate=validate.Range(min=0, max=MAX_SEQUENCE))


class AppealFiled(_FollowUp):
    """``appeal.filed``: a party appeals a closed ticket."""

    party = _choice(PARTIES, required=True)
    reason_code = Identifier(required=True)


class SurveyAnswered(_FollowUp):
    """``survey.answered``: the buyer's satisfaction score after closing."""

    user_id = Identifier(accept_int=True, required=True)
    score = StrictInt(required=True, validate=validate.Range(min=1, max=5))
    comment = Text(max_length=MAX_COMMENT_CHARS, multiline=True, blank=True, allow_none=True)


#: Routing key -> schema class; the order is SPEC §4's.
SCHEMAS: dict[str, type[Schema]] = {
    "complaint.submitted": ComplaintSubmitted,
    "evidence.submitted": EvidenceSubmitted,
    "merchant.responded": MerchantResponded,
    "merchant.refund_approved": MerchantRefundApproved,
    "customer.confirmed": CustomerConfirmed,
    "customer.withdrew": CustomerWithdrew,
    "logistics.interception_result": LogisticsInterceptionResult,
    "payment.voucher_uploaded": PaymentVoucherUploaded,
    "goods.returned": GoodsReturned,
    "merchant.balance_changed": MerchantBalanceChanged,
    "appeal.filed": AppealFiled,
    "survey.answered": SurveyAnswered,
}
INTAKE_ROUTING_KEYS: tuple[str, ...] = tuple(SCHEMAS)
_INSTANCES: dict[str, Schema] = {key: schema() for key, schema in SCHEMAS.items()}
#: Each schema's load compiled for the bodies it accepts (`messages.compiled`): marshmallow itself
#: loads only a body the compiled load is unsure of, and words its errors.
_COMPILED = {key: compile_load(schema) for key, schema in _INSTANCES.items()}


def parse_intake(routing_key: str, body: bytes | str) -> dict[str, Any]:
    """Decode and validate one intake body; raise ``IntakeInvalid`` and nothing else."""
    try:
        return _parse(routing_key, body)
    except IntakeInvalid:
        raise
    except RecursionError:
        _invalid(NON_FIELD_KEY, "body is nested too deeply")
    except Exception as error:  # the intake must never crash on any input
        logger.exception("intake validation failed unexpectedly for %r", routing_key)
        _invalid(NON_FIELD_KEY, f"{INTERNAL_ERROR_REASON}: {type(error).__name__}")


def ticket_ref(data: Mapping[str, Any]) -> TicketRef:
    """How a loaded follow-up names its ticket: by id, or by (source, external_ref)."""
    ticket_id = data.get("ticket_id")
    if isinstance(ticket_id, int) and not isinstance(ticket_id, bool):
        return ("ticket_id", ticket_id)
    source, external_ref = data.get("source"), data.get("external_ref")
    if isinstance(source, str) and isinstance(external_ref, str):
        return ("external", (source, external_ref))
    _invalid("ticket_id", "Name the ticket by ticket_id, or by source and external_ref.")


def _parse(routing_key: str, body: bytes | str) -> dict[str, Any]:
    schema = _schema_for(routing_key)
    document = _decode_json(_decode_text(body))
    _check_version(document)
    try:
        return _COMPILED[routing_key](document)
    except Unsure:
        pass
    try:
        return schema.load(document)
    except ValidationError as error:
        raise IntakeInvalid(flatten_errors(error.messages)) from None


def _schema_for(routing_key: object) -> Schema:
    schema = _INSTANCES.get(routing_key) if isinstance(routing_key, str) else None
    if schema is None:
        _invalid("_routing_key", f"unknown routing key {_brief(routing_key)}")
    return schema


def _decode_text(body: object) -> str:
    if isinstance(body, str):
        if len(body) > MAX_BODY_BYTES:
            _too_large()
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError as error:
            _invalid(NON_FIELD_KEY, f"body is not valid UTF-8: {error.reason}")
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        _invalid(NON_FIELD_KEY, f"body must be bytes, got {type(body).__name__}")
    if len(body) > MAX_BODY_BYTES:
        _too_large()
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        _invalid(NON_FIELD_KEY, f"body is not valid UTF-8: {error.reason} at byte {error.start}")


def _decode_json(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, over-long integers
        _invalid(NON_FIELD_KEY, f"body is not valid JSON: {str(error)[:200]}")
    if not isinstance(document, dict):
        _invalid(NON_FIELD_KEY, f"body must be a JSON object, got {_json_type(document)}")
    return document


def _check_version(document: Mapping[str, Any]) -> None:
    """Refuse a later version outright: its shape is not ours to guess."""
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        shown = version if abs(version) <= MAX_MINOR_UNITS else "(huge)"
        _invalid(
            "schema_version", f"unsupported schema_version {shown}; this system reads {SCHEMA_VERSION}",
        )


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _brief(value: object) -> str:
    text = repr(value[:80] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _too_large() -> NoReturn:
    _invalid(NON_FIELD_KEY, f"body is larger than {MAX_BODY_BYTES} bytes")


def _invalid(field: str, message: str) -> NoReturn:
    raise IntakeInvalid({field: [message]})
