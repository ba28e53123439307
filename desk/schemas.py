"""Request and response bodies of the HTTP contract (SPEC §6), as marshmallow schemas.

The schemas serve twice: flask-smorest parses requests and dumps responses
with them, and the same declarations produce ``/openapi.json``, so the
document cannot drift from what is served. Times are ISO 8601 strings already
(`models.views.ticket` builds JSON-ready dicts the CLI reuses), hence ``String``
fields with a ``date-time`` format rather than ``DateTime``.
"""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from models.agent import PRESENCES
from models.states import State

#: Upper bound of ids and versions we accept (PostgreSQL ``integer``): larger is simply unknown.
MAX_ID = 2**31 - 1


class StrictInteger(fields.Integer):
    """An integer that JSON ``true`` cannot pass for (marshmallow's strict mode lets bools in)."""

    def _validated(self, value: object) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)  # type: ignore[no-any-return]


def no_nul(value: str) -> bool:
    """PostgreSQL refuses NUL in text; refuse it as bad input instead of failing later."""
    if "\x00" in value:
        raise ma.ValidationError("must not contain NUL characters")
    return True


def _time(description: str, **kwargs: object) -> fields.String:
    return fields.String(allow_none=True, metadata={"format": "date-time", "description": description}, **kwargs)


# ---- errors -----------------------------------------------------------------

class ErrorBodySchema(ma.Schema):
    code = fields.String(required=True, metadata={"description": "stable machine-readable code"})
    message = fields.String(required=True)
    fields_ = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields",
                          attribute="fields", metadata={"description": "per-field reasons"})


class ErrorSchema(ma.Schema):
    """Every error: ``{"error": {"code", "message", "fields"}}``."""

    error = fields.Nested(ErrorBodySchema, required=True)


# ---- requests ---------------------------------------------------------------

class ActionRequestSchema(ma.Schema):
    """``POST /tickets/{id}/actions``. Params and QC are checked against the policy, not here,
    so the 422 names the configured options exactly as `GET /options/{stage}` shows them."""

    action = fields.String(required=True, validate=[validate.Length(min=1, max=64), no_nul])
    expected_version = StrictInteger(required=True, strict=True, validate=validate.Range(min=0, max=MAX_ID))
    params = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    qc = fields.Raw(load_default=None, allow_none=True, metadata={
        "description": '{"verdict": "ok"} or {"verdict": "flag", "reason_code": ...}; required from stage 2 on'})


class LookupArgsSchema(ma.Schema):
    """``GET /tickets?source=&external_ref=&state=``."""

    source = fields.String(validate=[validate.Length(min=1, max=128), no_nul])
    external_ref = fields.String(validate=[validate.Length(min=1, max=128), no_nul])
    state = fields.String(validate=validate.OneOf([s.value for s in State]))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=100))


# ---- responses --------------------------------------------------------------

class TicketSummarySchema(ma.Schema):
    id = fields.Integer()
    source = fields.String()
    external_ref = fields.String()
    state = fields.String()
    version = fields.Integer()
    assignee = fields.Integer(allow_none=True)
    dispute_type = fields.String()
    category = fields.String()
    state_entered_at = _time("when the ticket entered its state")
    floor_at = _time("when the ticket reached the floor")


class PresenceSchema(ma.Schema):
    presence = fields.String(required=True, validate=validate.OneOf(PRESENCES),
                             metadata={"description": "available, away or offline"})


class AmountsSchema(ma.Schema):
    currency = fields.String()
    order = fields.Integer()
    claimed = fields.Integer()
    refund = fields.Integer(allow_none=True, metadata={"description": "owed to the buyer by the judgment in force"})
    refunded = fields.Integer(metadata={"description": "what reached the buyer so far"})
    complaint_fee = fields.Integer(allow_none=True)


class ApprovalSchema(ma.Schema):
    kind = fields.String(metadata={"description": "complaint_fee or platform_advance"})
    amount = fields.Integer()
    currency = fields.String()
    requested_by = fields.Integer(allow_none=True)
    requested_at = _time("when it was asked for")


class PaymentSchema(ma.Schema):
    waiting_for = fields.String(allow_none=True, metadata={"description": "goods or voucher (awaiting_payment)"})
    voucher = fields.String(allow_none=True, metadata={"description": "pending, rejected or verified"})
    issue = fields.String(allow_none=True, metadata={"description": "why money could not move, or what it awaits"})
    pending_approval = fields.Nested(ApprovalSchema, allow_none=True)


class SlaSchema(ma.Schema):
    accept_due = _time("takeover promised by")
    first_feedback_due = _time("first feedback to the buyer promised by")
    resolve_due = _time("resolution promised by")
    accepted_at = _time("when an agent took the ticket over")
    resolved_at = _time("when the ticket was closed, resolved or withdrawn")
    breaches = fields.List(fields.String(), metadata={"description": "accept, first_feedback, resolve"})
    stopped_seconds = fields.Float(metadata={"description": "time the clock stood still while waiting on a party"})
    paused = fields.Boolean(metadata={"description": "the ticket waits on a party now: the clock is stopped"})
    priority = fields.Integer(metadata={"description": "raised by each SLA breach"})


class EvidenceItemSchema(ma.Schema):
    party = fields.String()
    round = fields.Integer()
    kind = fields.String()
    uri = fields.String()
    sha256 = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    submitted_at = _time("when it arrived")


class EvidenceRequestSchema(ma.Schema):
    round = fields.Integer()
    party = fields.String()
    kinds = fields.List(fields.String())
    due_at = _time("deadline of the round")
    fulfilled_at = _time("when the party submitted")


class LinkedComplaintSchema(ma.Schema):
    source = fields.String()
    external_ref = fields.String()
    dispute_type = fields.String()
    claimed_amount = fields.Integer()
    linked_at = _time("when it was linked")


class TicketSchema(TicketSummarySchema):
    """``GET /tickets/{id}`` and ``POST /me/claim``."""

    channel = fields.String()
    user_id = fields.String()
    merchant_id = fields.String()
    order_id = fields.String()
    order_status = fields.String()
    delivery = fields.String()
    description = fields.String()
    complexity = fields.String()
    dispute_status = fields.String(allow_none=True)
    negotiation_option = fields.String(allow_none=True)
    evidence_rounds = fields.Integer()
    liability = fields.String(allow_none=True)
    remedy = fields.String(allow_none=True)
    judged_by = fields.Integer(allow_none=True)
    amounts = fields.Nested(AmountsSchema)
    payment = fields.Nested(PaymentSchema)
    sla = fields.Nested(SlaSchema)
    evidence = fields.List(fields.Nested(EvidenceItemSchema))
    evidence_requests = fields.List(fields.Nested(EvidenceRequestSchema))
    waiting_on = fields.String(metadata={"description": "stage1..stage4, merchant, user, logistics or nobody"})
    waiting_on_all = fields.List(fields.String(), metadata={"description": "every party still owing a move"})
    due_at = _time("the next deadline: a pending timer, else the SLA promise of the state")
    allowed_actions = fields.List(fields.String(), metadata={"description": "what the caller may do now"})
    linked_complaints = fields.List(fields.Nested(LinkedComplaintSchema))
    assigned_at = _time("when the assignee took it")
    created_at = _time("when the complaint was admitted")
    closed_at = _time("when stage 4 closed it")


class QcOutSchema(ma.Schema):
    verdict = fields.String()
    reason_code = fields.String(allow_none=True)
    about = fields.Integer(allow_none=True, metadata={"description": "the agent whose work was judged"})


class TicketEventSchema(ma.Schema):
    version = fields.Integer()
    at = _time("when the change committed")
    actor = fields.String()
    action = fields.String()
    option = fields.String(allow_none=True, metadata={"description": "the merchant's negotiation option"})
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    params = fields.Dict(allow_none=True)
    qc = fields.Nested(QcOutSchema, allow_none=True)
    data = fields.Dict(allow_none=True)


class OptionsSchema(ma.Schema):
    """``GET /options/{stage}``: exactly `StageOptions.describe()`."""

    stage = fields.String()
    actions = fields.List(fields.Dict())
    qc_reasons = fields.List(fields.Dict())


class AcceptedSchema(ma.Schema):
    accepted = fields.Boolean()
    dispatch_id = fields.Integer()
    ticket_id = fields.Integer()


class DispatchSchema(ma.Schema):
    id = fields.Integer()
    ticket_id = fields.Integer(allow_none=True)
    queue = fields.String()
    kind = fields.String()
    action = fields.String(allow_none=True)
    done = fields.Boolean()
    outcome = fields.String(allow_none=True, metadata={
        "description": "applied, refused: <reason>, stale: <reason>, dead: <reason>; "
                       "while not done: failing: <n> tries failed, last: <error>"})
    created_at = _time("when it was accepted")
    done_at = _time("when a worker applied or refused it")


class HealthSchema(ma.Schema):
    status = fields.String()
    database = fields.String()
    broker = fields.String()
