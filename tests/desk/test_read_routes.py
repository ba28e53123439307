"""The read side: tickets, events, lookup, options, my tickets, probes, the OpenAPI document."""
from __future__ import annotations

import dataclasses
import json

from flask.testing import FlaskClient

from desk import create_api
from desk.schemas import AcceptedSchema, TicketSchema, TicketSummarySchema
from disputes.wiring import App, make_broker
from models.ticket import LinkedComplaint
from tests.network import closed_port

from .conftest import STAGE1_PARAMS, Caller, act, in_stage, new_ticket
from .test_auth import assert_error

TICKET_FIELDS = {"id", "source", "external_ref", "state", "version", "assignee", "dispute_type", "category",
                 "evidence_rounds", "liability", "remedy", "amounts", "sla", "evidence", "waiting_on", "due_at",
                 "allowed_actions", "linked_complaints", "negotiation_option", "dispute_status", "created_at",
                 "floor_at", "closed_at", "evidence_requests", "waiting_on_all"}


def test_a_ticket_shows_every_contract_field(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    body = client.get(f"/tickets/{ticket.id}", headers=agents["s2a"].headers).get_json()
    assert TICKET_FIELDS <= set(body)
    assert (body["id"], body["state"], body["version"], body["assignee"]) == (ticket.id, "awaiting_takeover",
                                                                              ticket.version, None)
    assert body["amounts"] == {"currency": "CNY", "order": 10_000, "claimed": 5_000, "refund": None,
                               "refunded": 0, "complaint_fee": None}
    assert body["payment"] == {"waiting_for": None, "voucher": None, "issue": None, "pending_approval": None}
    assert set(body["sla"]) >= {"accept_due", "resolve_due", "breaches"}
    assert body["sla"]["breaches"] == []
    assert body["waiting_on"] == "stage1"
    assert body["due_at"] == body["sla"]["accept_due"]
    assert body["allowed_actions"] == []  # a stage-2 agent cannot take it over


def test_allowed_actions_depend_on_the_caller(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    path = f"/tickets/{ticket.id}"
    assert client.get(path, headers=agents["s1b"].headers).get_json()["allowed_actions"] == ["claim"]
    act(app, ticket, "take_over", agents["s1a"])
    assert client.get(path, headers=agents["s1a"].headers).get_json()["allowed_actions"] == [
        "request_evidence", "to_judgment"]
    assert client.get(path, headers=agents["s1b"].headers).get_json()["allowed_actions"] == []


def test_an_unknown_ticket_is_404(client: FlaskClient, agents: dict[str, Caller]) -> None:
    assert_error(client.get("/tickets/424242", headers=agents["s1a"].headers), 404, "not_found")
    assert_error(client.get("/tickets/99999999999999999999999", headers=agents["s1a"].headers), 404, "not_found")
    assert_error(client.get("/tickets/424242/events", headers=agents["s1a"].headers), 404, "not_found")


def test_evidence_owed_names_the_parties_still_owing(client: FlaskClient, app: App,
                                                     agents: dict[str, Caller]) -> None:
    from models.change import Role
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    ticket = act(app, ticket, "request_evidence", agents["s1a"], {**STAGE1_PARAMS, "from": "both",
                                                                  "items": ["photo"]})
    body = client.get(f"/tickets/{ticket.id}", headers=agents["s1a"].headers).get_json()
    assert (body["state"], body["waiting_on"], body["waiting_on_all"]) == ("awaiting_evidence", "user",
                                                                          ["user", "merchant"])
    assert body["due_at"] is not None
    assert {r["party"] for r in body["evidence_requests"]} == {"user", "merchant"}
    act(app, ticket, "submit_evidence", role=Role.USER,
        params={"party": "user", "items": [{"kind": "photo", "uri": "https://files.example/1.jpg"}]})
    body = client.get(f"/tickets/{ticket.id}", headers=agents["s1a"].headers).get_json()
    assert (body["waiting_on"], body["waiting_on_all"]) == ("merchant", ["merchant"])
    assert [(e["party"], e["kind"], e["uri"]) for e in body["evidence"]] == [
        ("user", "photo", "https://files.example/1.jpg")]


def test_events_are_the_audit_trail_oldest_first(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3, assignee="s3a")
    events = client.get(f"/tickets/{ticket.id}/events", headers=agents["s3a"].headers).get_json()
    assert [e["action"] for e in events] == ["submit", "take_over", "to_judgment", "claim"]
    assert [e["version"] for e in events] == sorted(e["version"] for e in events)
    first = events[0]
    assert set(first) >= {"version", "at", "actor", "action", "option", "from_state", "to_state", "params", "qc",
                          "data"}
    assert (first["from_state"], first["to_state"], first["actor"]) == (None, "awaiting_takeover", "system")
    assert events[2]["params"] == STAGE1_PARAMS
    assert events[2]["actor"] == f"agent:{agents['s1a'].agent.id}"


def test_lookup_by_reference_state_and_linked_complaint(client: FlaskClient, app: App,
                                                        agents: dict[str, Caller]) -> None:
    one, two = new_ticket(app), new_ticket(app, source="web")
    LinkedComplaint.create(ticket=one.id, source="phone", external_ref="dup-1", dispute_type="quality",
                           claimed_amount=100)
    headers = agents["s1a"].headers

    def ids(query: str) -> list[int]:
        response = client.get(f"/tickets?{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [t["id"] for t in response.get_json()]

    assert ids(f"source=shop&external_ref={one.external_ref}") == [one.id]
    assert ids("source=web") == [two.id]
    assert ids("source=phone&external_ref=dup-1") == [one.id]
    assert ids("state=awaiting_takeover") == [one.id, two.id]
    assert ids("state=closed") == []
    summary = client.get("/tickets?source=web", headers=headers).get_json()[0]
    assert {"id", "source", "external_ref", "state", "version", "assignee"} <= set(summary)
    assert "state" in assert_error(client.get("/tickets?state=limbo", headers=headers), 422,
                                   "validation_failed")["fields"]


def test_my_tickets_are_the_open_ones_assigned_to_me(client: FlaskClient, app: App,
                                                     agents: dict[str, Caller]) -> None:
    mine = in_stage(app, agents, 1)
    new_ticket(app)
    assert [t["id"] for t in client.get("/me/tickets", headers=agents["s1a"].headers).get_json()] == [mine.id]
    assert client.get("/me/tickets", headers=agents["s1b"].headers).get_json() == []


def test_options_are_the_policy_option_boxes(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    body = client.get("/options/stage1", headers=agents["s1a"].headers).get_json()
    assert body == json.loads(json.dumps(app.policy.options_for("stage1").describe()))
    assert body["stage"] == "stage1"
    names = [a["action"] for a in body["actions"]]
    assert {"request_evidence", "to_judgment"} <= set(names)
    evidence = body["actions"][names.index("request_evidence")]
    assert set(evidence["label"]) == {"zh", "en"}
    assert evidence["params"]["items"]["many"] is True
    assert all({"code", "label"} <= set(c) for c in evidence["params"]["dispute_status"]["choices"])
    assert isinstance(body["qc_reasons"], list)
    judge = client.get("/options/stage3", headers=agents["s1a"].headers).get_json()["actions"]
    assert next(a for a in judge if a["action"] == "judge")["params"]["amount"] == {"type": "amount"}
    assert_error(client.get("/options/stage5", headers=agents["s1a"].headers), 404, "not_found")


def test_health_reports_database_and_broker(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_is_503_naming_a_dead_broker(app: App) -> None:
    refused = make_broker(f"redis://127.0.0.1:{closed_port()}/14")  # nothing listens there
    try:
        response = create_api(dataclasses.replace(app, broker=refused)).test_client().get("/health")
    finally:
        refused.close()
    assert response.status_code == 503
    body = response.get_json()
    assert (body["database"], body["broker"], body["status"]) == ("ok", "down", "down")
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["fields"]["broker"][0].startswith("ConnectionError: ")


def test_metrics_are_prometheus_text(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    in_stage(app, agents, 1)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'disputes_tickets{state="stage1"} 1.0' in text
    assert 'disputes_transitions_total{action="take_over"} 1.0' in text
    for name in ("disputes_queue_depth{queue=\"stage1\"}", "disputes_dispatch_backlog ",
                 "disputes_outbox_backlog ", "disputes_sla_breaches_open{sla=\"accept\"}",
                 "disputes_state_wait_seconds_max{state=\"stage1\"}"):
        assert name in text


def test_the_openapi_document_describes_every_route(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.get_data(as_text=True))
    assert doc["openapi"] == "3.0.3" and doc["info"]["title"] == "disputes"
    assert {"/health", "/metrics", "/tickets", "/tickets/{ticket_id}", "/tickets/{ticket_id}/events",
            "/tickets/{ticket_id}/actions", "/options/{stage}", "/me/tickets", "/me/claim"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/health"]["get"]["security"] == []


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: FlaskClient,
                                                              agents: dict[str, Caller]) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.delete("/tickets/1", headers=agents["s1a"].headers), 405, "method_not_allowed")
    assert_error(client.put("/me/claim", headers=agents["s1a"].headers), 405, "method_not_allowed")


def test_a_server_fault_is_a_500_without_a_traceback(client: FlaskClient, agents: dict[str, Caller],
                                                     monkeypatch) -> None:
    import desk.routes.agents as routes

    def boom(agent, app):  # noqa: ANN001
        raise RuntimeError("secret internals")

    monkeypatch.setattr(routes, "claim_next", boom)
    response = client.post("/me/claim", headers=agents["s1a"].headers)
    error = assert_error(response, 500, "internal")
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in error["message"]


def test_hot_routes_serve_exactly_what_their_schemas_would_dump(client: FlaskClient, app: App,
                                                                agents: dict[str, Caller]) -> None:
    """The ticket routes skip flask-smorest's ``Schema.dump`` (`desk.routes.as_json`): their bodies must
    be what it would produce, key for key, in every stage."""
    tickets = [new_ticket(app), act(app, new_ticket(app), "take_over", agents["s1a"])]
    tickets += [in_stage(app, agents, stage, assignee=f"s{stage}a") for stage in (2, 3, 4)]
    evidence = act(app, new_ticket(app), "take_over", agents["s1a"])
    tickets.append(act(app, evidence, "request_evidence", agents["s1a"], {**STAGE1_PARAMS, "from": "both",
                                                                          "items": ["photo"]}))
    LinkedComplaint.create(ticket=tickets[1].id, source="shop", external_ref="linked-dump", dispute_type="quality",
                           claimed_amount=100)
    for ticket in tickets:
        for caller in (agents["s1a"], agents["s4a"]):
            body = client.get(f"/tickets/{ticket.id}", headers=caller.headers).get_json()
            assert body == TicketSchema().dump(body), ticket.state
    mine = client.get("/me/tickets", headers=agents["s1a"].headers).get_json()
    assert mine and mine == TicketSummarySchema(many=True).dump(mine)
    found = client.get("/tickets?source=shop", headers=agents["s1a"].headers).get_json()
    assert len(found) == len(tickets) and found == TicketSummarySchema(many=True).dump(found)
    new_ticket(app)
    claimed = client.post("/me/claim", headers=agents["s1b"].headers)
    assert claimed.status_code == 200 and claimed.get_json() == TicketSchema().dump(claimed.get_json())
    accepted = client.post(f"/tickets/{claimed.get_json()['id']}/actions", headers=agents["s1b"].headers, json={
        "action": "to_judgment", "expected_version": claimed.get_json()["version"], "params": STAGE1_PARAMS})
    assert accepted.status_code == 202 and accepted.get_json() == AcceptedSchema().dump(accepted.get_json())
    assert set(accepted.get_json()) == {"accepted", "dispatch_id", "ticket_id"}


def test_the_address_the_server_prints_sends_a_browser_to_the_desk(client: FlaskClient) -> None:
    """``disputes api`` logs "API listening on http://host:port/": opening that address (no token,
    no cookie) leads to the desk, and from there to its sign-in page, never to a 404."""
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/desk/"
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and page.request.path == "/desk/login"
    assert "text/html" in page.headers["Content-Type"]
