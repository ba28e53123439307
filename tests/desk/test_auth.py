"""Every route but the probes needs a live bearer token; every refusal is the same 401 shape."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
from flask.testing import FlaskClient

from models.agent import Agent

from .conftest import Caller

PROTECTED = [("get", "/tickets/1"), ("get", "/tickets/1/events"), ("get", "/tickets?source=shop"),
             ("get", "/options/stage1"), ("get", "/me/tickets"), ("post", "/me/claim"),
             ("post", "/tickets/1/actions"), ("get", "/dispatches/1")]

BAD_HEADERS = {
    "no header": {},
    "empty": {"Authorization": ""},
    "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
    "bearer without token": {"Authorization": "Bearer"},
    "bearer with spaces": {"Authorization": "Bearer a b"},
    "unknown token": {"Authorization": "Bearer not-a-token-anyone-has"},
}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    return error


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_protected_routes_refuse_callers_without_a_live_token(client: FlaskClient, method: str, path: str,
                                                              case: str) -> None:
    response = getattr(client, method)(path, headers=BAD_HEADERS[case], json={})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_is_refused(client: FlaskClient, agents: dict[str, Caller]) -> None:
    caller = agents["s1a"]
    assert client.get("/me/tickets", headers=caller.headers).status_code == 200
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == caller.agent.id).execute()
    assert_error(client.get("/me/tickets", headers=caller.headers), 401, "unauthorized")


def test_the_scheme_is_case_insensitive(client: FlaskClient, agents: dict[str, Caller]) -> None:
    headers = {"Authorization": f"bearer {agents['s1a'].token}"}
    assert client.get("/me/tickets", headers=headers).status_code == 200


def test_probes_and_the_openapi_document_need_no_token(client: FlaskClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_tokens_never_reach_the_log(client: FlaskClient, agents: dict[str, Caller],
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/me/tickets", headers=agents["s1a"].headers)
    client.get("/me/tickets", headers={"Authorization": "Bearer secret-unknown-token"})
    assert agents["s1a"].token not in caplog.text
    assert "secret-unknown-token" not in caplog.text
