"""``POST /tickets/{id}/actions``: 202 accepted, 403 not mine, 409 moved on, 422 not configured."""
from __future__ import annotations

import dramatiq
import pytest
from flask.testing import FlaskClient

from disputes.wiring import App
from models.compensation import FEE_REFUSAL
from models.outbox import Dispatch
from models.ticket import Ticket
from workers import declare_all

from .conftest import STAGE1_PARAMS, Caller, in_stage
from .test_auth import assert_error


def post(client: FlaskClient, caller: Caller, ticket: Ticket, action: str, params: dict | None = None,
         qc: dict | None = None, version: int | None = None, **extra: object):
    body: dict[str, object] = {"action": action, "expected_version": ticket.version if version is None else version,
                               "params": params or {}, **extra}
    if qc is not None:
        body["qc"] = qc
    return client.post(f"/tickets/{ticket.id}/actions", headers=caller.headers, json=body)


def run_workers(app: App) -> None:
    declare_all(app)
    worker = dramatiq.Worker(app.broker, worker_timeout=50)
    worker.start()
    try:
        for queue in ("stage1", "stage2", "stage3", "stage4"):
            app.broker.join(queue, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def test_an_accepted_decision_is_applied_by_the_stage_worker(client: FlaskClient, app: App,
                                                             agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    response = post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS)
    assert response.status_code == 202
    body = response.get_json()
    assert body == {"accepted": True, "dispatch_id": body["dispatch_id"], "ticket_id": ticket.id}
    run_workers(app)
    moved = Ticket.get_by_id(ticket.id)
    assert (moved.state, moved.version, moved.dispute_status) == ("stage3", ticket.version + 1, "not_reconciled")
    status = client.get(f"/dispatches/{body['dispatch_id']}", headers=agents["s1a"].headers).get_json()
    assert status["done"] is True and status["outcome"] == "applied"


def test_a_qc_verdict_travels_with_the_decision(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3, assignee="s3a")
    response = post(client, agents["s3a"], ticket, "judge", {"liability": "customer", "remedy": "no_refund"},
                    qc={"verdict": "ok"})
    assert response.status_code == 202
    run_workers(app)
    events = client.get(f"/tickets/{ticket.id}/events", headers=agents["s3a"].headers).get_json()
    assert events[-1]["action"] == "judge"
    assert events[-1]["qc"] == {"verdict": "ok", "reason_code": None, "about": agents["s1a"].agent.id}


def test_unknown_ticket_is_404(client: FlaskClient, agents: dict[str, Caller]) -> None:
    response = client.post("/tickets/999/actions", headers=agents["s1a"].headers,
                           json={"action": "to_judgment", "expected_version": 1, "params": STAGE1_PARAMS})
    assert_error(response, 404, "not_found")


def test_another_agents_ticket_is_403(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    error = assert_error(post(client, agents["s1b"], ticket, "to_judgment", STAGE1_PARAMS), 403, "forbidden")
    assert "not assigned to you" in error["message"]


def test_a_ticket_of_another_stage_is_403(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    error = assert_error(post(client, agents["s2a"], ticket, "to_judgment", qc={"verdict": "ok"}), 403,
                         "forbidden")
    assert "stage1" in error["message"] and "stage2" in error["message"]


def test_an_unclaimed_ticket_is_403(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3)
    error = assert_error(post(client, agents["s3a"], ticket, "cannot_judge", {"reason_code": "x"},
                              qc={"verdict": "ok"}), 403, "forbidden")
    assert "claim" in error["message"]


def test_a_stale_version_is_409(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    error = assert_error(post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS,
                              version=ticket.version - 1), 409, "version_conflict")
    assert error["current_version"] == ticket.version
    assert "expected_version" in error["fields"]


def test_a_second_decision_on_the_same_version_is_409(client: FlaskClient, app: App,
                                                      agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    assert post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS).status_code == 202
    assert_error(post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS), 409, "version_conflict")


def test_a_decision_after_the_ticket_moved_on_is_409(client: FlaskClient, app: App,
                                                     agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    assert post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS).status_code == 202
    run_workers(app)
    assert_error(post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS), 409, "version_conflict")


def test_evidence_past_the_cap_is_a_state_conflict(client: FlaskClient, app: App,
                                                   agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 2, assignee="s2a")
    Ticket.update(evidence_rounds=app.policy.evidence.max_rounds).where(Ticket.id == ticket.id).execute()
    ticket = Ticket.get_by_id(ticket.id)
    error = assert_error(post(client, agents["s2a"], ticket, "request_evidence",
                              {"from": "user", "items": ["photo"]}, qc={"verdict": "ok"}), 409, "state_conflict")
    assert "judgment" in error["message"]
    # The words are the refusing guard's own (models.rules.below_evidence_cap), with the ticket's numbers
    max_rounds = app.policy.evidence.max_rounds
    reason = f"the evidence rounds are used up ({max_rounds} of {max_rounds}); send the ticket to judgment"
    assert error["fields"] == {"action": [reason]}
    assert error["message"] == f"'request_evidence' cannot be taken on ticket {ticket.id} now: {reason}"
    assert (error["current_version"], error["state"]) == (ticket.version, "stage2")


def test_the_wrong_closing_action_for_the_liability_is_a_state_conflict(client: FlaskClient, app: App,
                                                                        agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 4, assignee="s4a")  # merchant liability: verify_refund closes it
    fee = app.policy.complaint_fee.amounts[0]
    error = assert_error(post(client, agents["s4a"], ticket, "complaint_fee", {"amount": fee}, qc={"verdict": "ok"}),
                         409, "state_conflict")
    # worded by the complaint-fee guards (models.compensation.FEE_REFUSAL), once though both rows refused
    assert error["fields"] == {"action": [FEE_REFUSAL.replace("{c.ticket.liability}", "merchant")]}
    assert post(client, agents["s4a"], ticket, "verify_refund", qc={"verdict": "ok"}).status_code == 202


@pytest.mark.parametrize("action,params,field", [
    ("judge", {}, "action"),                                              # not a stage-1 action
    ("to_judgment", {"dispute_status": "nonsense", "category": "apparel"}, "dispute_status"),
    ("to_judgment", {"dispute_status": "not_reconciled"}, "category"),
    ("to_judgment", {**STAGE1_PARAMS, "colour": "red"}, "colour"),
    ("request_evidence", {**STAGE1_PARAMS, "from": "court", "items": ["photo"]}, "from"),
    ("request_evidence", {**STAGE1_PARAMS, "from": "user", "items": ["hologram"]}, "items"),
])
def test_options_not_configured_for_the_stage_are_422(client: FlaskClient, app: App, agents: dict[str, Caller],
                                                      action: str, params: dict, field: str) -> None:
    ticket = in_stage(app, agents, 1)
    error = assert_error(post(client, agents["s1a"], ticket, action, params), 422, "not_configured")
    assert field in error["fields"]
    assert all(isinstance(m, str) for msgs in error["fields"].values() for m in msgs)


@pytest.mark.parametrize("qc", [None, {"verdict": "maybe"}, {"verdict": "flag"},
                                {"verdict": "flag", "reason_code": "not-a-reason"}, "ok"])
def test_stage2_on_needs_a_valid_qc_verdict(client: FlaskClient, app: App, agents: dict[str, Caller],
                                            qc: object) -> None:
    ticket = in_stage(app, agents, 2, assignee="s2a")
    body = {"action": "to_judgment", "expected_version": ticket.version, "params": {}, "qc": qc}
    response = client.post(f"/tickets/{ticket.id}/actions", headers=agents["s2a"].headers, json=body)
    assert "qc" in assert_error(response, 422, "not_configured")["fields"]


def test_a_configured_qc_flag_is_accepted(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 2, assignee="s2a")
    reason = next(iter(app.policy.options_for("stage2").qc_reasons))
    assert post(client, agents["s2a"], ticket, "to_judgment",
                qc={"verdict": "flag", "reason_code": reason}).status_code == 202


def test_a_partial_refund_above_the_claim_is_422(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3, assignee="s3a")
    params = {"liability": "merchant", "remedy": "partial_refund", "amount": ticket.claimed_amount + 1}
    error = assert_error(post(client, agents["s3a"], ticket, "judge", params, qc={"verdict": "ok"}), 422,
                         "validation_failed")
    assert "amount" in error["fields"]
    params["amount"] = ticket.claimed_amount - 1
    assert post(client, agents["s3a"], ticket, "judge", params, qc={"verdict": "ok"}).status_code == 202


@pytest.mark.parametrize("body,field", [
    ({"expected_version": 1}, "action"),
    ({"action": "to_judgment"}, "expected_version"),
    ({"action": "to_judgment", "expected_version": "2"}, "expected_version"),
    ({"action": "to_judgment", "expected_version": True}, "expected_version"),
    ({"action": "to_judgment", "expected_version": 2, "params": [1]}, "params"),
    ({"action": "to_judgment", "expected_version": 2, "surprise": 1}, "surprise"),
])
def test_malformed_bodies_are_422_with_the_field_named(client: FlaskClient, app: App, agents: dict[str, Caller],
                                                       body: dict, field: str) -> None:
    ticket = in_stage(app, agents, 1)
    response = client.post(f"/tickets/{ticket.id}/actions", headers=agents["s1a"].headers, json=body)
    assert field in assert_error(response, 422, "validation_failed")["fields"]


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b"[1, 2", b"", b"[" * 100_000])
def test_unparseable_json_is_400(client: FlaskClient, app: App, agents: dict[str, Caller], data: bytes) -> None:
    ticket = in_stage(app, agents, 1)
    response = client.post(f"/tickets/{ticket.id}/actions", headers=agents["s1a"].headers, data=data,
                           content_type="application/json")
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code, "bad_request" if response.status_code == 400
                 else "validation_failed")


def test_a_json_array_body_is_422_not_500(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    response = client.post(f"/tickets/{ticket.id}/actions", headers=agents["s1a"].headers, json=[1, 2])
    assert_error(response, 422, "validation_failed")


def test_an_accepted_decision_is_a_committed_dispatch(client: FlaskClient, app: App,
                                                      agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    body = post(client, agents["s1a"], ticket, "to_judgment", STAGE1_PARAMS).get_json()
    row = Dispatch.get_by_id(body["dispatch_id"])
    assert (row.queue, row.kind, row.ticket_id) == ("stage1", "act", ticket.id)
    assert row.payload == {"ticket_id": ticket.id, "action": "to_judgment", "agent_id": agents["s1a"].agent.id,
                           "expected_version": ticket.version, "params": STAGE1_PARAMS, "qc": None}
    assert row.sent_at is not None

