"""Signing in to the desk: the token in an HttpOnly, SameSite=Strict cookie; everything else refused."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask.testing import FlaskClient

from disputes.wiring import App
from models.agent import Agent
from tests.desk.conftest import Caller, new_ticket

from .conftest import csrf_of, sign_in


def session_cookie(response) -> str:
    return next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("desk_session="))


def test_a_page_of_the_desk_sends_a_stranger_to_the_sign_in_form(client: FlaskClient) -> None:
    response = client.get("/desk/")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/desk/login?next=%2Fdesk%2F")
    form = client.get(response.headers["Location"])
    assert form.status_code == 200 and 'id="login-form"' in form.text


def test_signing_in_with_a_token_sets_an_httponly_samesite_strict_cookie(client: FlaskClient,
                                                                         agents: dict[str, Caller]) -> None:
    response = sign_in(client, agents["s1a"].token)
    assert (response.status_code, response.headers["Location"]) == (303, "/desk/")
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    queue = client.get("/desk/")
    assert queue.status_code == 200
    assert "s1a · stage1" in queue.text
    assert agents["s1a"].token not in queue.text  # the page never shows the token


def test_an_unknown_token_is_refused_with_the_form_again(client: FlaskClient, agents: dict[str, Caller]) -> None:
    response = sign_in(client, "not-a-token")
    assert response.status_code == 401
    assert "Unknown or revoked token" in response.text
    assert not any(c.startswith("desk_session=") for c in response.headers.getlist("Set-Cookie"))
    assert client.get("/desk/").status_code == 303


def test_a_revoked_token_ends_the_session(client: FlaskClient, agents: dict[str, Caller]) -> None:
    sign_in(client, agents["s1a"].token)
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == agents["s1a"].agent.id).execute()
    response = client.get("/desk/")
    assert response.status_code == 303 and "note=session_ended" in response.headers["Location"]
    assert "desk_session=;" in session_cookie(response)  # the stale cookie is cleared


def test_a_forged_session_cookie_is_not_a_session(client: FlaskClient, agents: dict[str, Caller]) -> None:
    client.set_cookie("desk_session", "nonce.not-a-token")
    assert client.get("/desk/").status_code == 303
    client.set_cookie("desk_session", agents["s1a"].token)  # a token without its nonce
    assert client.get("/desk/").status_code == 303


def test_signing_out_clears_the_cookie(client: FlaskClient, signed_in, agents: dict[str, Caller]) -> None:
    csrf = signed_in(client, agents["s1a"])
    response = client.post("/desk/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and "note=signed_out" in response.headers["Location"]
    assert client.get("/desk/").status_code == 303


def test_the_desk_cookie_does_not_authenticate_the_json_api(client: FlaskClient, signed_in,
                                                            agents: dict[str, Caller]) -> None:
    signed_in(client, agents["s1a"])
    response = client.get("/me/tickets")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_the_dashboard_is_for_supervisors_only(client: FlaskClient, signed_in, agents: dict[str, Caller]) -> None:
    assert client.get("/dashboard/").status_code == 303  # not signed in
    signed_in(client, agents["s1a"])
    refused = client.get("/dashboard/")
    assert refused.status_code == 403 and "Supervisors only" in refused.text
    assert client.get("/dashboard/panel").status_code == 403


def test_a_redirect_after_sign_in_stays_on_the_desk(client: FlaskClient, agents: dict[str, Caller]) -> None:
    form = client.get("/desk/login")
    response = client.post("/desk/login", data={"csrf_token": csrf_of(form.text), "token": agents["s1a"].token,
                                                "next": "https://evil.example/"})
    assert response.headers["Location"] == "/desk/"
    assert client.get("/desk/lang/en?next=//evil.example/").headers["Location"] == "/desk/"


def test_the_token_is_never_logged(client: FlaskClient, app: App, agents: dict[str, Caller], caplog) -> None:
    new_ticket(app)
    with caplog.at_level(logging.DEBUG):
        sign_in(client, agents["s1a"].token)
        csrf = csrf_of(client.get("/desk/").text)
        client.post("/desk/claim", data={"csrf_token": csrf})
    assert caplog.records, "the desk logs its requests"
    assert all(agents["s1a"].token not in record.getMessage() for record in caplog.records)
