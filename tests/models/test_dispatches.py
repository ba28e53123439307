"""The typed seams: each dispatch's payload is one small object, and refusals share one error tree."""
from __future__ import annotations

import pytest

import models.machine
import models.workflow
from desk.errors import ApiError
from models.dispatches import KINDS, AgentDecision, Arrival, NotificationDelivery, WakeUp, payload_from_json
from models.errors import BadPayload, DisputesError, NotAllowed, Refused, UnknownTicket, VersionConflict
from models.outbox import Dispatch, decision_in_flight, new_dispatch

#: Each payload type with the JSON its rows have always stored (the keys must not change).
STORED = [
    (Arrival(7, 3), {"ticket_id": 7, "version": 3}),
    (AgentDecision(7, 11, "to_judgment", 3, {"dispute_status": "not_reconciled", "category": "apparel"},
                   {"verdict": "ok"}),
     {"ticket_id": 7, "agent_id": 11, "action": "to_judgment", "expected_version": 3,
      "params": {"dispute_status": "not_reconciled", "category": "apparel"}, "qc": {"verdict": "ok"}}),
    (AgentDecision(7, 51, "approve_payment", 4, role="supervisor"),
     {"ticket_id": 7, "agent_id": 51, "action": "approve_payment", "expected_version": 4, "params": {},
      "qc": None, "role": "supervisor"}),
    (WakeUp(5), {"timer_id": 5}),
    (NotificationDelivery(9), {"notification_id": 9}),
]


@pytest.mark.parametrize("payload,stored", STORED)
def test_a_payload_is_stored_with_the_keys_rows_have_always_had_and_reads_back_equal(payload, stored) -> None:
    assert payload.to_json() == stored
    assert payload_from_json(payload.kind, stored) == payload
    assert KINDS[payload.kind] is type(payload)


def test_a_decision_stored_before_the_types_without_version_qc_or_role_still_loads() -> None:
    old = {"ticket_id": 7, "agent_id": 11, "action": "take_over", "params": {}}
    assert AgentDecision.from_json(old) == AgentDecision(7, 11, "take_over")


@pytest.mark.parametrize("kind,data", [
    ("act", {"ticket_id": 7, "action": "judge"}),                  # no agent
    ("act", {"ticket_id": 7, "agent_id": 1, "action": "judge", "params": ["x"]}),
    ("wake", {}),
    ("wake", {"timer_id": "soon"}),
    ("deliver", None),
    ("teleport", {}),
])
def test_a_payload_that_does_not_fit_its_kind_is_refused_not_retried(kind, data) -> None:
    with pytest.raises(BadPayload):
        payload_from_json(kind, data)


def test_new_dispatch_takes_its_kind_and_ticket_from_the_payload(app) -> None:
    decision = AgentDecision(7, 11, "to_judgment", 3, qc={"verdict": "ok"})
    row = Dispatch.get_by_id(new_dispatch("stage2", decision).id)
    assert (row.queue, row.kind, row.ticket_id) == ("stage2", "act", 7)
    assert row.payload_as(AgentDecision) == decision == row.payload_object()
    assert decision_in_flight(7, 3) == row and decision_in_flight(7, 2) is None
    wake = Dispatch.get_by_id(new_dispatch("negotiation", WakeUp(5), 7).id)
    assert (wake.kind, wake.ticket_id, wake.payload_as(WakeUp)) == ("wake", 7, WakeUp(5))
    with pytest.raises(BadPayload):
        wake.payload_as(AgentDecision)


def test_refusals_share_one_shallow_tree_and_stay_importable_where_they_were() -> None:
    for refusal in (VersionConflict, UnknownTicket, NotAllowed, BadPayload):
        assert issubclass(refusal, Refused) and refusal.__doc__
    assert issubclass(Refused, DisputesError) and issubclass(ApiError, DisputesError)
    assert not issubclass(ApiError, Refused)
    assert models.workflow.VersionConflict is VersionConflict and models.workflow.UnknownTicket is UnknownTicket
    assert models.workflow.NotAllowed is NotAllowed and models.machine.NotAllowed is NotAllowed


def test_not_allowed_carries_its_guards_words_once_each_or_says_the_state() -> None:
    words = NotAllowed("stage4", "complaint_fee", "stage4", ["fee_payable_now", "fee_needs_approval"],
                       ["liability is 'merchant'", "liability is 'merchant'"])
    assert words.refusals == ["liability is 'merchant'"] and words.reason == "liability is 'merchant'"
    assert str(words) == ("'complaint_fee' by stage4 is not allowed in state 'stage4': "
                          "not fee payable now / not fee needs approval")
    assert NotAllowed("closed", "judge", "stage3").reason == "it is not allowed in state 'closed'"
