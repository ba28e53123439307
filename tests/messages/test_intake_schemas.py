"""Each intake schema accepts its contract body and refuses violations under the right field."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from messages import (
    INTAKE_ROUTING_KEYS, SCHEMAS, EventInvalid, IntakeInvalid, event_body, ledger_body,
    ledger_routing_key, notify_body, notify_routing_key, parse_intake, ticket_ref,
    ticket_routing_key,
)
from messages import intake

SHA = "ab" * 32
EVIDENCE = {"kind": "photo", "uri": "https://files.example.com/e/1.jpg", "sha256": SHA, "note": "front"}
REF = {"schema_version": 1, "ticket_id": 17}

_GOOD: dict[str, dict[str, Any]] = {
    "complaint.submitted": {
        "schema_version": 1, "source": "mall", "external_ref": "C-1001", "channel": "app",
        "order": {
            "order_id": "O-1", "amount": 12900, "currency": "CNY", "category": "apparel",
            "delivery": "platform", "status": "delivered",
        },
        "user_id": "u-1", "merchant_id": "m-1", "dispute_type": "quality",
        "claimed_amount": 12900, "description": "The seam is torn.",
        "contact": {"email": "buyer@example.com", "phone": "+86 138 0000 0000",
                    "merchant_email": "service@shop.example"},
        "evidence": [EVIDENCE], "occurred_at": "2024-05-01T10:00:00+08:00",
    },
    "evidence.submitted": {**REF, "party": "user", "items": [EVIDENCE]},
    "merchant.responded": {
        **REF, "merchant_id": "m-1", "option": "intercept_48h", "reason_code": "agreed",
        "evidence": [EVIDENCE],
    },
    "merchant.refund_approved": {**REF, "merchant_id": "m-1"},
    "customer.confirmed": {**REF, "user_id": "u-1", "accept": False},
    "customer.withdrew": {**REF, "user_id": "u-1"},
    "logistics.interception_result": {**REF, "success": True},
    "payment.voucher_uploaded": {
        **REF, "merchant_id": "m-1",
        "voucher": {"uri": "s3://vouchers/17.pdf", "sha256": SHA, "amount": 12900, "currency": "CNY"},
    },
    "goods.returned": {**REF, "tracking_no": "SF1234567890"},
    "merchant.balance_changed": {"schema_version": 1, "merchant_id": "m-1", "balance": 0, "currency": "CNY"},
    "appeal.filed": {**REF, "party": "merchant", "reason_code": "new_evidence"},
    "survey.answered": {**REF, "user_id": "u-1", "score": 5, "comment": "快"},
}
NO_TICKET = ("complaint.submitted", "merchant.balance_changed")
FOLLOW_UPS = [key for key in INTAKE_ROUTING_KEYS if key not in NO_TICKET]
MONEY_PATHS = [
    ("complaint.submitted", "order.amount"),
    ("complaint.submitted", "claimed_amount"),
    ("payment.voucher_uploaded", "voucher.amount"),
    ("merchant.balance_changed", "balance"),
]


def good_body(routing_key: str) -> dict[str, Any]:
    """A fresh, valid body for ``routing_key``."""
    return copy.deepcopy(_GOOD[routing_key])


def with_value(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """``body`` with the dotted ``path`` set to ``value`` (a missing ``value`` deletes it)."""
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return body


_DELETE = object()


def reasons_for(routing_key: str, body: object) -> dict[str, list[str]]:
    """The reasons ``parse_intake`` gives for refusing ``body``."""
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    with pytest.raises(IntakeInvalid) as caught:
        parse_intake(routing_key, raw)
    return caught.value.reasons


def refused(routing_key: str, path: str, value: object) -> dict[str, list[str]]:
    """The reasons for refusing the good body with ``path`` set to ``value``."""
    return reasons_for(routing_key, with_value(good_body(routing_key), path, value))


def test_the_routing_keys_are_the_twelve_of_the_contract_each_with_a_schema_named_after_it() -> None:
    assert len(INTAKE_ROUTING_KEYS) == 12
    for key in INTAKE_ROUTING_KEYS:
        expected = "".join(part.capitalize() for part in key.replace(".", "_").split("_"))
        assert SCHEMAS[key].__name__ == expected
        assert getattr(intake, expected) is SCHEMAS[key]


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
def test_a_contract_body_is_accepted_as_bytes_and_as_text(routing_key: str) -> None:
    raw = json.dumps(good_body(routing_key), ensure_ascii=False)
    loaded = parse_intake(routing_key, raw.encode("utf-8"))
    assert loaded == parse_intake(routing_key, raw)
    assert loaded["schema_version"] == 1


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
def test_unknown_fields_are_ignored_for_forward_compatibility(routing_key: str) -> None:
    body = good_body(routing_key) | {"added_upstream_later": {"x": 1}}
    assert "added_upstream_later" not in parse_intake(routing_key, json.dumps(body))


def test_a_complaint_loads_with_typed_values_and_defaults() -> None:
    body = good_body("complaint.submitted")
    for optional in ("contact", "evidence"):
        del body[optional]
    loaded = parse_intake("complaint.submitted", json.dumps(body))
    assert loaded["occurred_at"] == dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.timezone.utc)
    assert loaded["occurred_at"].utcoffset() == dt.timedelta(hours=8)
    assert loaded["order"]["amount"] == 12900
    assert (loaded["negotiation"], loaded["complexity"], loaded["evidence"]) == ("pending", "simple", [])


def test_a_complaint_may_give_the_merchants_address_beside_the_buyers() -> None:
    loaded = parse_intake("complaint.submitted", json.dumps(good_body("complaint.submitted")))
    assert loaded["contact"] == {"email": "buyer@example.com", "phone": "+86 138 0000 0000",
                                 "merchant_email": "service@shop.example"}


def test_integer_ids_read_as_strings_and_digests_as_lowercase() -> None:
    body = with_value(good_body("complaint.submitted"), "user_id", 42)
    body["evidence"][0]["sha256"] = SHA.upper()
    loaded = parse_intake("complaint.submitted", json.dumps(body))
    assert loaded["user_id"] == "42"
    assert loaded["evidence"][0]["sha256"] == SHA


@pytest.mark.parametrize(("routing_key", "path"), MONEY_PATHS)
@pytest.mark.parametrize(
    ("value", "words"),
    [(129.0, "float"), (129.5, "float"), (-1, "negative"), (True, "boolean"), ("12900", "string"),
     (None, "null"), (2**63, "too large"), (2**53, "too large")],
)
def test_money_is_a_non_negative_integer_in_minor_units(
    routing_key: str, path: str, value: object, words: str,
) -> None:
    reasons = refused(routing_key, path, value)
    assert words in " ".join(reasons[path]).lower()


def test_the_largest_amount_is_2_to_the_53_minus_1_so_ledger_sums_cannot_overflow() -> None:
    body = good_body("merchant.balance_changed")
    body["balance"] = 2**53 - 1
    assert parse_intake("merchant.balance_changed", json.dumps(body))["balance"] == 2**53 - 1


def test_zero_money_is_accepted() -> None:
    body = json.dumps(good_body("merchant.balance_changed"))
    assert parse_intake("merchant.balance_changed", body)["balance"] == 0


def test_a_claim_above_the_order_amount_is_refused_on_claimed_amount() -> None:
    reasons = refused("complaint.submitted", "claimed_amount", 12901)
    assert list(reasons) == ["claimed_amount"]
    assert "12900" in reasons["claimed_amount"][0]


@pytest.mark.parametrize(
    ("routing_key", "path"),
    [("complaint.submitted", "order.currency"), ("merchant.balance_changed", "currency"),
     ("payment.voucher_uploaded", "voucher.currency")],
)
@pytest.mark.parametrize("value", ["cny", "RMB1", "CN", "", 156])
def test_currency_is_three_uppercase_letters(routing_key: str, path: str, value: object) -> None:
    assert path in refused(routing_key, path, value)


@pytest.mark.parametrize(
    "value", ["2024-05-01T10:00:00", "2024-05-01", "yesterday", 1714528800, "0001-01-01T00:00:00+14:00"],
)
def test_occurred_at_needs_an_iso_8601_time_with_a_zone(value: object) -> None:
    assert "occurred_at" in refused("complaint.submitted", "occurred_at", value)


@pytest.mark.parametrize("value", ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123-05:00"])
def test_occurred_at_accepts_utc_and_offsets(value: str) -> None:
    body = with_value(good_body("complaint.submitted"), "occurred_at", value)
    assert parse_intake("complaint.submitted", json.dumps(body))["occurred_at"].tzinfo is not None


@pytest.mark.parametrize(
    ("routing_key", "path"),
    [("complaint.submitted", "channel"), ("complaint.submitted", "order.delivery"),
     ("complaint.submitted", "order.status"), ("complaint.submitted", "dispute_type"),
     ("complaint.submitted", "negotiation"), ("complaint.submitted", "complexity"),
     ("complaint.submitted", "evidence.0.kind"), ("evidence.submitted", "party"),
     ("evidence.submitted", "items.0.kind"), ("merchant.responded", "option"),
     ("appeal.filed", "party")],
)
def test_an_unknown_enum_value_is_refused_on_its_field(routing_key: str, path: str) -> None:
    assert "Must be one of" in refused(routing_key, path, "refund_everything")[path][0]


@pytest.mark.parametrize("routing_key", FOLLOW_UPS)
def test_a_follow_up_without_a_ticket_reference_is_refused_on_ticket_id(routing_key: str) -> None:
    reasons = refused(routing_key, "ticket_id", _DELETE)
    assert list(reasons) == ["ticket_id"]


@pytest.mark.parametrize("routing_key", FOLLOW_UPS)
def test_a_follow_up_may_name_its_ticket_by_source_and_external_ref(routing_key: str) -> None:
    body = with_value(good_body(routing_key), "ticket_id", _DELETE)
    body |= {"source": "mall", "external_ref": "C-1"}
    assert ticket_ref(parse_intake(routing_key, json.dumps(body))) == ("external", ("mall", "C-1"))


@pytest.mark.parametrize("extra", [{"source": "mall"}, {"external_ref": "C-1"}, {"ticket_id": None}])
def test_half_a_ticket_reference_is_refused(extra: dict[str, object]) -> None:
    body = with_value(good_body("goods.returned"), "ticket_id", _DELETE) | extra
    assert "ticket_id" in reasons_for("goods.returned", body)


@pytest.mark.parametrize("value", ["17", 0, -3, True, 17.0, 2**64])
def test_ticket_id_is_a_positive_json_integer(value: object) -> None:
    assert "ticket_id" in refused("customer.withdrew", "ticket_id", value)


def test_ticket_ref_prefers_the_id_and_refuses_a_body_without_a_reference() -> None:
    loaded = parse_intake("goods.returned", json.dumps(good_body("goods.returned") | {"source": "mall"}))
    assert ticket_ref(loaded) == ("ticket_id", 17)
    with pytest.raises(IntakeInvalid) as caught:
        balance = json.dumps(good_body("merchant.balance_changed"))
        ticket_ref(parse_intake("merchant.balance_changed", balance))
    assert "ticket_id" in caught.value.reasons


@pytest.mark.parametrize(
    ("routing_key", "path"),
    [("complaint.submitted", "evidence.0.sha256"), ("evidence.submitted", "items.0.sha256"),
     ("payment.voucher_uploaded", "voucher.sha256")],
)
@pytest.mark.parametrize("value", ["ab" * 31, "zz" * 32, "ab" * 33, 12, ""])
def test_a_bad_sha256_is_refused_on_its_field(routing_key: str, path: str, value: object) -> None:
    assert path in refused(routing_key, path, value)


def test_a_voucher_needs_its_sha256_while_evidence_does_not() -> None:
    assert "voucher.sha256" in refused("payment.voucher_uploaded", "voucher.sha256", _DELETE)
    body = with_value(good_body("evidence.submitted"), "items.0.sha256", _DELETE)
    assert "sha256" not in parse_intake("evidence.submitted", json.dumps(body))["items"][0]


@pytest.mark.parametrize(
    "value",
    ["files/e/1.jpg", "", "https://exa mple.com/x", "javascript:alert(1)",
     "data:image/png;base64,AAAA", "https://x/" + "a" * 2048],
)
def test_an_evidence_uri_is_a_reference_with_a_scheme(value: str) -> None:
    assert "items.0.uri" in refused("evidence.submitted", "items.0.uri", value)


def test_evidence_lists_are_bounded_and_submissions_not_empty() -> None:
    assert "items" in refused("evidence.submitted", "items", [])
    assert "items" in refused("evidence.submitted", "items", [EVIDENCE] * 201)
    assert "evidence" in refused("complaint.submitted", "evidence", [EVIDENCE] * 201)
    assert "items.1" in refused("evidence.submitted", "items", [EVIDENCE, "https://x/y"])


@pytest.mark.parametrize(("routing_key", "path"), [("customer.confirmed", "accept"),
                                                    ("logistics.interception_result", "success")])
@pytest.mark.parametrize("value", ["true", 1, 0, None, "yes"])
def test_booleans_are_json_booleans(routing_key: str, path: str, value: object) -> None:
    assert path in refused(routing_key, path, value)


@pytest.mark.parametrize("value", [0, 6, 4.0, True, "5", None])
def test_a_survey_score_is_an_integer_from_one_to_five(value: object) -> None:
    assert "score" in refused("survey.answered", "score", value)


@pytest.mark.parametrize(
    ("path", "value"),
    [("source", ""), ("source", "   "), ("external_ref", "x" * 129), ("external_ref", 1001),
     ("user_id", "u\n1"), ("user_id", True), ("description", "x" * 4097), ("description", "a\x00b"),
     ("order.category", ""), ("contact.email", "not-an-email"), ("contact.merchant_email", "shop at example"),
     ("contact.merchant_email", "m@" + "x" * 260)],
)
def test_strings_are_bounded_and_storable(path: str, value: object) -> None:
    assert path in refused("complaint.submitted", path, value)


def test_a_lone_surrogate_is_refused_rather_than_stored() -> None:
    raw = json.dumps(good_body("complaint.submitted")).replace("The seam", "\\ud800 seam")
    assert "description" in reasons_for("complaint.submitted", raw)


@pytest.mark.parametrize("routing_key", INTAKE_ROUTING_KEYS)
def test_every_required_field_is_reported_when_the_body_is_empty(routing_key: str) -> None:
    reasons = reasons_for(routing_key, {"schema_version": 1})
    assert all(reasons.values()) and "schema_version" not in reasons


def test_nested_problems_read_as_dotted_paths() -> None:
    reasons = refused("complaint.submitted", "order", {"amount": 1.5})
    assert {"order.amount", "order.order_id", "order.currency"} <= set(reasons)
    assert refused("complaint.submitted", "order", [1]) == {"order": ["Invalid input type."]}


@pytest.mark.parametrize(
    ("value", "words"), [(2, "unsupported schema_version 2"), ("1", "integer"), (True, "boolean"),
                         (_DELETE, "missing")],
)
def test_schema_version_must_be_the_integer_one(value: object, words: str) -> None:
    reasons = refused("survey.answered", "schema_version", value)
    assert words in " ".join(reasons["schema_version"]).lower()


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"\xff\xfe{}", "utf-8"), (b"", "json"), (b"{", "json"), (b"[]", "object, got array"),
     (b"null", "object, got null"), (b'{"schema_version": NaN}', "nan"),
     (b'{"schema_version": -Infinity}', "infinity"), (b"[" * 50_000 + b"]" * 50_000, "deep"),
     (b"{" + b" " * (1 << 20) + b"}", "larger"), (object(), "bytes")],
)
def test_bodies_that_are_not_json_objects_are_refused_with_a_message(body: Any, words: str) -> None:
    with pytest.raises(IntakeInvalid) as caught:
        parse_intake("goods.returned", body)
    assert list(caught.value.reasons) == ["_message"]
    assert words in caught.value.reasons["_message"][0].lower()


@pytest.mark.parametrize("routing_key", ["complaint.created", "", "ticket.stage1"])
def test_an_unknown_routing_key_is_refused_on_routing_key(routing_key: str) -> None:
    assert reasons_for(routing_key, good_body("goods.returned")) == {
        "_routing_key": [f"unknown routing key {routing_key!r}"],
    }


def test_a_byte_order_mark_and_duplicate_keys_are_tolerated() -> None:
    raw = b'\xef\xbb\xbf{"schema_version": 1, "ticket_id": 1, "ticket_id": 2, "tracking_no": "SF1"}'
    assert parse_intake("goods.returned", raw)["ticket_id"] == 2


def test_intake_invalid_keeps_its_reasons_through_pickling_and_str() -> None:
    import pickle

    error = IntakeInvalid({"order.amount": ["Money must not be negative."]})
    assert pickle.loads(pickle.dumps(error)).reasons == error.reasons
    assert str(error) == "order.amount: Money must not be negative."


# Outbound bodies (messages.events). They live here because this task owns only
# these test files; tests/messages/test_events.py is their natural home.

_AT = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
_TICKET = {"ticket_id": 17, "source": "mall", "external_ref": "C-1", "at": _AT}


def test_a_creation_event_has_a_null_from_state_and_is_json_ready() -> None:
    body = event_body(**_TICKET, from_state=None, to_state="negotiating", actor="system",
                      action="create", data={"claimed_amount": 12900})
    assert json.loads(json.dumps(body)) == body
    assert body["at"] == "2024-05-01T10:00:00+08:00"
    assert set(body) == {"event_id", "ticket_id", "source", "external_ref", "from_state", "to_state",
                         "actor", "action", "at", "data"}
    assert ticket_routing_key(body["to_state"]) == "ticket.negotiating"


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"to_state": "stage5"}, "to_state"), ({"actor": "agent:"}, "actor"), ({"actor": "bot"}, "actor"),
     ({"at": dt.datetime(2024, 5, 1)}, "at"), ({"data": {"when": _AT}}, "data"),
     ({"data": {"x": float("nan")}}, "data"), ({"ticket_id": 0}, "ticket_id")],
)
def test_an_event_body_that_breaks_the_contract_is_refused_where_it_is_built(
    changes: dict[str, Any], field: str,
) -> None:
    arguments = {**_TICKET, "from_state": "stage2", "to_state": "stage3", "actor": "agent:7",
                 "action": "to_judgment", "event_id": "e-1"} | changes
    with pytest.raises(EventInvalid) as caught:
        event_body(**arguments)
    assert field in caught.value.reasons


def test_ledger_and_notify_bodies_carry_their_keys() -> None:
    ledger = ledger_body(**_TICKET, kind="refund_deducted", idempotency_key="17:refund:1",
                         merchant_id="m-1", user_id=42, amount=12900, currency="CNY", sequence=3)
    assert (ledger["idempotency_key"], ledger["amount"], ledger["sequence"]) == ("17:refund:1", 12900, 3)
    assert ledger_routing_key(ledger["kind"]) == "ledger.refund_deducted"
    with pytest.raises(EventInvalid) as caught:
        ledger_body(**_TICKET, kind="refund_deducted", idempotency_key="k", merchant_id="m-1",
                    user_id="u-1", amount=129.0, currency="CNY", sequence=0)
    assert {"amount", "sequence"} <= set(caught.value.reasons)
    note = notify_body(**_TICKET, template="evidence_requested", recipient="user", recipient_id="u-1")
    assert notify_routing_key(note["template"]) == "notify.evidence_requested"
    with pytest.raises(EventInvalid):
        notify_body(**_TICKET, template="evidence.requested", recipient="user", recipient_id="u-1")
