"""Supervisors approve or decline the platform's money on the ticket page (four eyes)."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from policy import Policy, default_policy_dict, policy_from_dict
from disputes.wiring import App
from models.outbox import Dispatch
from models.ticket import Ticket
from tests.desk.conftest import Caller, act, in_stage

from .conftest import csrf_of
from .test_ticket_page import Form


@pytest.fixture
def policy() -> Policy:
    """Complaint fees above 5.00 CNY wait for a supervisor."""
    data = default_policy_dict()
    data["complaint_fee"]["approval_threshold"] = 500  # type: ignore[index]
    return policy_from_dict(data)


def fee_awaiting_approval(app: App, agents: dict[str, Caller]) -> Ticket:
    """A customer-liable ticket in stage 4 where s4a asked for a 10.00 CNY complaint fee."""
    ticket = in_stage(app, agents, 3, assignee="s3a")
    ticket = act(app, ticket, "judge", agents["s3a"], {"liability": "customer", "remedy": "no_refund"},
                 qc={"verdict": "ok"})
    ticket = act(app, ticket, "claim", agents["s4a"])
    ticket = act(app, ticket, "complaint_fee", agents["s4a"], {"amount": 1000}, qc={"verdict": "ok"})
    assert ticket.state == "stage4"
    return ticket


def test_another_supervisor_gets_approve_and_decline_buttons(client: FlaskClient, app: App, signed_in,
                                                             agents: dict[str, Caller]) -> None:
    ticket = fee_awaiting_approval(app, agents)
    csrf = signed_in(client, agents["s4b"])
    html = client.get(f"/desk/tickets/{ticket.id}").text
    assert 'id="pending-approval"' in html and "complaint_fee 10.00 CNY" in html
    buttons = dict(Form(html).buttons)
    assert buttons["approve_payment"] and buttons["decline_payment"]
    response = client.post(f"/desk/tickets/{ticket.id}/decide", data={
        "csrf_token": csrf, "action": "approve_payment", "expected_version": str(ticket.version)})
    assert response.status_code == 303
    dispatch = Dispatch.select().where(Dispatch.kind == "act").get()
    assert (dispatch.payload["action"], dispatch.payload["role"]) == ("approve_payment", "supervisor")


def test_the_supervisor_who_asked_cannot_approve_it(client: FlaskClient, app: App, signed_in,
                                                    agents: dict[str, Caller]) -> None:
    ticket = fee_awaiting_approval(app, agents)
    signed_in(client, agents["s4a"])
    html = client.get(f"/desk/tickets/{ticket.id}").text
    buttons = dict(Form(html).buttons)
    assert not buttons["approve_payment"] and not buttons["decline_payment"]
    response = client.post(f"/desk/tickets/{ticket.id}/decide", data={
        "csrf_token": csrf_of(html), "action": "approve_payment", "expected_version": str(ticket.version)})
    assert response.status_code == 403 and "four eyes" in response.text


def test_an_agent_who_is_not_a_supervisor_sees_no_approval_buttons(client: FlaskClient, app: App, signed_in,
                                                                   agents: dict[str, Caller]) -> None:
    ticket = fee_awaiting_approval(app, agents)
    signed_in(client, agents["s3b"])
    html = client.get(f"/desk/tickets/{ticket.id}").text
    assert 'id="pending-approval"' in html and 'id="approval-form"' not in html
