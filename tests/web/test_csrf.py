"""No form of the desk can be forged from another site: a per-session CSRF token, and same-origin only."""
from __future__ import annotations

from flask.testing import FlaskClient

from disputes.wiring import App
from models.ticket import Ticket
from tests.desk.conftest import Caller, new_ticket

from .conftest import csrf_of


def test_claiming_without_the_csrf_token_is_refused_and_claims_nothing(client: FlaskClient, app: App, signed_in,
                                                                       agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    signed_in(client, agents["s1a"])
    response = client.post("/desk/claim", data={})
    assert response.status_code == 403
    assert "came from another site" in response.text
    assert Ticket.get_by_id(ticket.id).state == "awaiting_takeover"


def test_a_wrong_csrf_token_is_refused(client: FlaskClient, app: App, signed_in, agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    csrf = signed_in(client, agents["s1a"])
    wrong = csrf[:-1] + ("1" if csrf.endswith("0") else "0")  # never the right token by chance
    assert client.post("/desk/claim", data={"csrf_token": wrong}).status_code == 403
    assert Ticket.get_by_id(ticket.id).assignee is None


def test_a_post_from_another_origin_is_refused_even_with_the_token(client: FlaskClient, app: App, signed_in,
                                                                  agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    csrf = signed_in(client, agents["s1a"])
    assert client.post("/desk/claim", data={"csrf_token": csrf},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/desk/claim", data={"csrf_token": csrf},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert Ticket.get_by_id(ticket.id).assignee is None
    same_site = client.post("/desk/claim", data={"csrf_token": csrf}, headers={"Origin": "http://localhost"})
    assert same_site.status_code == 303
    assert Ticket.get_by_id(ticket.id).assignee == agents["s1a"].agent.id


def test_each_sign_in_gets_its_own_csrf_token(client: FlaskClient, api, agents: dict[str, Caller],
                                              signed_in) -> None:
    first, second = client, api.test_client()
    token_one, token_two = signed_in(first, agents["s1a"]), signed_in(second, agents["s1a"])
    assert token_one != token_two
    assert first.post("/desk/claim", data={"csrf_token": token_two}).status_code == 403


def test_a_decision_without_the_csrf_token_is_refused(client: FlaskClient, app: App, signed_in,
                                                      agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    csrf = signed_in(client, agents["s1a"])
    client.post("/desk/claim", data={"csrf_token": csrf})
    claimed = Ticket.get_by_id(ticket.id)
    response = client.post(f"/desk/tickets/{ticket.id}/decide", data={
        "action": "to_judgment", "expected_version": str(claimed.version),
        "p.to_judgment.dispute_status": "not_reconciled", "p.to_judgment.category": "apparel"})
    assert response.status_code == 403
    assert Ticket.get_by_id(ticket.id).version == claimed.version


def test_signing_in_needs_the_sign_in_forms_own_token(client: FlaskClient, agents: dict[str, Caller]) -> None:
    """Another site cannot sign an agent in under a token of its choosing (login CSRF)."""
    response = client.post("/desk/login", data={"token": agents["s1a"].token})
    assert response.status_code == 401 and "came from another site" in response.text
    form = client.get("/desk/login")
    response = client.post("/desk/login", data={"token": agents["s1a"].token, "csrf_token": csrf_of(form.text)},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 401
