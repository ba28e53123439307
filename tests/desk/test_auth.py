"""Every route but the probes needs a live bearer token; every refusal is the same 401 shape."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import flask

import pytest
from flask.testing import FlaskClient

from desk.auth import CACHE_KEY, TokenCache
from models.agent import Agent

from .conftest import Caller, tokens_expire
from tests.statements import Statements

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


def test_a_revoked_token_is_refused(api: flask.Flask, client: FlaskClient, agents: dict[str, Caller]) -> None:
    caller = agents["s1a"]
    assert client.get("/me/tickets", headers=caller.headers).status_code == 200
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == caller.agent.id).execute()
    tokens_expire(api)  # the token cache holds an agent for at most a second
    assert_error(client.get("/me/tickets", headers=caller.headers), 401, "unauthorized")


def test_a_token_never_used_before_is_checked_at_once_even_when_revoked(client: FlaskClient,
                                                                        agents: dict[str, Caller]) -> None:
    caller = agents["s1a"]
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == caller.agent.id).execute()
    assert_error(client.get("/me/tickets", headers=caller.headers), 401, "unauthorized")


def test_a_known_token_is_served_from_the_cache_without_a_query(client: FlaskClient,
                                                                agents: dict[str, Caller]) -> None:
    headers = agents["s1a"].headers
    with Statements() as first:
        assert client.get("/options/stage1", headers=headers).status_code == 200
    assert len(first.reading("agent")) == 1
    with Statements() as again:
        for _ in range(3):
            assert client.get("/options/stage1", headers=headers).status_code == 200
    assert again.reading("agent") == []


def test_a_revoked_token_is_refused_within_a_second(api: flask.Flask, client: FlaskClient,
                                                    agents: dict[str, Caller]) -> None:
    caller = agents["s2a"]
    cache: TokenCache = api.extensions[CACHE_KEY]
    now = [1000.0]
    cache.clock = lambda: now[0]
    assert client.get("/me/tickets", headers=caller.headers).status_code == 200
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == caller.agent.id).execute()
    now[0] += 0.5  # still within its second: served from the cache
    assert client.get("/me/tickets", headers=caller.headers).status_code == 200
    now[0] += 0.5  # a second after it was read: read again, and refused
    assert_error(client.get("/me/tickets", headers=caller.headers), 401, "unauthorized")
    assert len(cache) == 0  # a refused token is not kept


def test_a_revoked_token_is_refused_a_second_later_in_real_time(client: FlaskClient,
                                                                agents: dict[str, Caller]) -> None:
    caller = agents["s3a"]
    assert client.get("/me/tickets", headers=caller.headers).status_code == 200
    revoked = time.monotonic()
    Agent.update(revoked_at=datetime.now(timezone.utc)).where(Agent.id == caller.agent.id).execute()
    while True:
        sent = time.monotonic()
        if client.get("/me/tickets", headers=caller.headers).status_code == 401:
            break
        assert sent - revoked < 1.0, "a revoked token was still served a second after its revocation"
        time.sleep(0.05)


def test_the_cache_is_bounded_and_thread_safe(agents: dict[str, Caller]) -> None:
    cache = TokenCache(ttl=60, max_size=8)
    agent = agents["s1a"].agent

    def fill(worker: int) -> None:
        for i in range(500):
            key = f"{worker}-{i}"
            cache.put(key, agent, cache.clock())
            assert cache.get(key) in (agent, None)  # another thread may have evicted it already

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 8
    cache.put("last", agent, cache.clock())
    assert cache.get("last") is agent
    assert TokenCache.TTL <= 1.0


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
