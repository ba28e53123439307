"""Fixtures for the desk's pages: an app with agents per stage, a browser-like test client.

``signed_in(client, caller)`` signs a test client in through the real form
(GET the form, POST the token with its CSRF token), so every page test starts
from the cookie the desk itself set.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

import flask
import pytest
from flask.testing import FlaskClient

import models
from desk import create_api
from policy import Policy, default_policy_dict, policy_from_dict
from disputes.settings import Settings
from disputes.wiring import App, build_app
from tests.conftest import fund_merchant
from tests.desk.conftest import Caller, add_agent

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


@pytest.fixture
def policy() -> Policy:
    """The shipped policy (long deadlines: nothing fires during a page test)."""
    return policy_from_dict(default_policy_dict())


@pytest.fixture
def app(tmp_path: Path, policy: Policy) -> Iterator[App]:
    built = build_app(Settings(database_url=f"sqlite:///{tmp_path}/web.db"), policy=policy)
    models.init_schema()
    fund_merchant("m1")  # merchant-side judgments deduct at once
    yield built
    built.broker.flush_all()
    if not built.db.is_closed():
        built.db.close()


@pytest.fixture
def api(app: App) -> flask.Flask:
    return create_api(app)


@pytest.fixture
def client(api: flask.Flask) -> FlaskClient:
    """A browser that reads English (the desk's default is Chinese)."""
    browser = api.test_client()
    browser.set_cookie("desk_lang", "en")
    return browser


@pytest.fixture
def agents(app: App) -> dict[str, Caller]:
    """Two agents per stage (s1a … s4b); the stage-4 agents are supervisors too."""
    return {f"s{stage}{x}": add_agent(f"s{stage}{x}", stage, supervisor=stage == 4)
            for stage in (1, 2, 3, 4) for x in "ab"}


def sign_in(client: FlaskClient, token: str) -> flask.Response:
    form = client.get("/desk/login")
    return client.post("/desk/login", data={"csrf_token": csrf_of(form.text), "token": token, "next": "/desk/"})


@pytest.fixture
def signed_in() -> Callable[[FlaskClient, Caller], str]:
    """``signed_in(client, caller)`` -> the session's CSRF token (read from the queue page)."""
    def _sign_in(client: FlaskClient, caller: Caller) -> str:
        response = sign_in(client, caller.token)
        assert response.status_code == 303, response.text
        return csrf_of(client.get("/desk/").text)
    return _sign_in
