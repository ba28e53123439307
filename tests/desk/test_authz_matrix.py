"""Who may do what, route by route: the authorization matrix of SPEC §6, table-driven.

The tables below have one row per route of the API (its ``url_map``, which is also what
``/openapi.json`` documents) and of the web pages mounted in front of it; a route added without a
row fails `test_every_route_has_a_row`, so nobody ships a route whose access nobody decided.

* every protected API route answers 401 in the ``{"error": ...}`` shape to a missing, empty,
  wrong-scheme, garbage, very long, unknown or revoked (``disputes agents revoke``) token;
* reading is for any agent; deciding is for the ticket's assignee in the ticket's stage: another
  agent's ticket, an unclaimed one, another stage's, or a hidden state's is 403, a stale version 409;
* ``/me/...`` only ever shows or hands out the caller's own tickets of the caller's own stage;
* supervisors' routes refuse agents with 403: the payment approvals and the dashboard pages.
"""
from __future__ import annotations

from dataclasses import dataclass
import flask
import pytest
from flask.testing import FlaskClient

from models.agent import revoke_agent
from disputes.wiring import App
from models.machine import SUPERVISOR_ACTIONS
from models.ticket import Ticket
from tests.web.conftest import sign_in

from .conftest import Caller, act, add_agent, in_stage, tokens_expire


@dataclass(frozen=True)
class Route:
    """How to call one route in the matrix: a path (ticket/dispatch ids filled in) and a body."""

    method: str
    path: str
    body: dict | None = None
    #: Needs no token (probes, the OpenAPI document, the sign-in form).
    public: bool = False


#: One row per API route: (method, url rule) -> how to call it with the scene's ids.
API_ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/health"): Route("GET", "/health", public=True),
    ("GET", "/metrics"): Route("GET", "/metrics", public=True),
    ("GET", "/openapi.json"): Route("GET", "/openapi.json", public=True),
    ("GET", "/tickets"): Route("GET", "/tickets?source=shop"),
    ("GET", "/tickets/<int:ticket_id>"): Route("GET", "/tickets/{ticket}"),
    ("GET", "/tickets/<int:ticket_id>/events"): Route("GET", "/tickets/{ticket}/events"),
    ("POST", "/tickets/<int:ticket_id>/actions"): Route("POST", "/tickets/{ticket}/actions", {
        "action": "to_judgment", "expected_version": "{version}", "params": {}, "qc": {"verdict": "ok"}}),
    ("GET", "/dispatches/<int:dispatch_id>"): Route("GET", "/dispatches/{dispatch}"),
    ("GET", "/me/tickets"): Route("GET", "/me/tickets"),
    ("POST", "/me/presence"): Route("POST", "/me/presence", {"presence": "available"}),
    ("POST", "/me/claim"): Route("POST", "/me/claim"),
    ("GET", "/options/<stage>"): Route("GET", "/options/stage2"),
}

#: One row per web page: (method, url rule) -> (who may see it, status a signed-in stage agent gets).
#: ``public``: the sign-in form, language switch and assets; ``agent``: any signed-in agent;
#: ``supervisor``: a signed-in non-supervisor gets 403.
WEB_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/"): ("public", "/"),
    ("GET", "/desk/login"): ("public", "/desk/login"),
    ("POST", "/desk/login"): ("public", "/desk/login"),
    ("GET", "/desk/lang/<code>"): ("public", "/desk/lang/en"),
    ("GET", "/desk/static/<path:filename>"): ("public", "/desk/static/desk.css"),
    ("GET", "/desk/"): ("agent", "/desk/"),
    ("POST", "/desk/claim"): ("agent", "/desk/claim"),
    ("POST", "/desk/logout"): ("agent", "/desk/logout"),
    ("GET", "/desk/tickets/<int:ticket_id>"): ("agent", "/desk/tickets/{ticket}"),
    ("POST", "/desk/tickets/<int:ticket_id>/decide"): ("agent", "/desk/tickets/{ticket}/decide"),
    ("GET", "/dashboard/"): ("supervisor", "/dashboard/"),
    ("GET", "/dashboard/panel"): ("supervisor", "/dashboard/panel"),
}

BAD_AUTHORIZATION: dict[str, dict[str, str]] = {
    "missing": {},
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "wrong scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "token without scheme": {"Authorization": "token-s2a-2"},
    "token scheme": {"Authorization": "Token token-s2a-2"},
    "garbage": {"Authorization": "Bearer \u00ff\u00fe%%%\t;;"},
    "two tokens": {"Authorization": "Bearer token-s2a-2 token-s2a-2"},
    "very long": {"Authorization": "Bearer " + "x" * 64_000},
    "unknown": {"Authorization": "Bearer tok-nobody-has-this-one"},
    "hash of a token": {"Authorization": "Bearer " + "0" * 64},
}


def rules(flask_app: flask.Flask) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in flask_app.url_map.iter_rules()
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})}


@dataclass
class Scene:
    """Tickets in known situations and the callers around them."""

    owner: Caller          # s2a: holds `mine`
    peer: Caller           # s2b: same stage, holds `peers`
    other_stage: Caller    # s3a: stage 3
    supervisor: Caller     # a stage-4 supervisor
    mine: Ticket           # stage2, assigned to s2a
    peers: Ticket          # stage2, assigned to s2b
    unclaimed: Ticket      # stage2, nobody's
    third: Ticket          # stage3, assigned to s3a
    hidden: Ticket         # awaiting_evidence (s2a asked for it)
    dispatch_id: int


@pytest.fixture
def scene(app: App, agents: dict[str, Caller], client: FlaskClient) -> Scene:
    mine = in_stage(app, agents, 2, assignee="s2a")
    peers = in_stage(app, agents, 2, assignee="s2b")
    unclaimed = in_stage(app, agents, 2)
    third = in_stage(app, agents, 3, assignee="s3a")
    judged = in_stage(app, agents, 3, assignee="s3a")  # a decision in flight on it gives a dispatch to read
    hidden = in_stage(app, agents, 2, assignee="s2a")
    hidden = act(app, hidden, "request_evidence", agents["s2a"], {"from": "user", "items": ["photo"]},
                 qc={"verdict": "ok"})
    assert hidden.state == "awaiting_evidence"
    accepted = client.post(f"/tickets/{judged.id}/actions", headers=agents["s3a"].headers, json={
        "action": "judge", "expected_version": judged.version,
        "params": {"liability": "merchant", "remedy": "full_refund"}, "qc": {"verdict": "ok"}})
    assert accepted.status_code == 202, accepted.get_json()
    return Scene(agents["s2a"], agents["s2b"], agents["s3a"], add_agent("boss", 4, supervisor=True),
                 mine, peers, unclaimed, third, hidden, accepted.get_json()["dispatch_id"])


def fill(text: str, scene: Scene) -> str:
    return text.format(ticket=scene.mine.id, version=scene.mine.version, dispatch=scene.dispatch_id)


def call(client: FlaskClient, route: Route, scene: Scene, headers: dict[str, str]) -> flask.Response:
    body = None
    if route.body is not None:
        body = {k: (scene.mine.version if v == "{version}" else v) for k, v in route.body.items()}
    return client.open(fill(route.path, scene), method=route.method, headers=headers, json=body)


def assert_refused(response: flask.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# ---------------------------------------------------------------------------------------------
# the tables cover every route
# ---------------------------------------------------------------------------------------------

def test_every_route_has_a_row(api: flask.Flask) -> None:
    assert rules(api) == set(API_ROUTES), "a route of the API has no row in API_ROUTES (or a row lost its route)"
    assert rules(api.extensions["disputes.web"]) == set(WEB_ROUTES), "a web page has no row in WEB_ROUTES"


def test_the_openapi_document_covers_the_same_routes(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops
                  if method in ("get", "post", "put", "patch", "delete")}
    protected = {(m, r.replace("<int:", "{").replace("<", "{").replace(">", "}"))
                 for (m, r), route in API_ROUTES.items() if r != "/openapi.json"}
    assert documented == protected


# ---------------------------------------------------------------------------------------------
# authentication: 401 for every protected route and every bad token
# ---------------------------------------------------------------------------------------------

PROTECTED = [key for key, route in API_ROUTES.items() if not route.public]


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
def test_every_protected_route_refuses_a_bad_token_with_401(client: FlaskClient, scene: Scene, case: str) -> None:
    for key in PROTECTED:
        response = call(client, API_ROUTES[key], scene, BAD_AUTHORIZATION[case])
        assert_refused(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), key


def test_a_revoked_agents_token_gets_401_on_every_protected_route(api: flask.Flask, client: FlaskClient,
                                                                  scene: Scene) -> None:
    assert call(client, API_ROUTES[("GET", "/me/tickets")], scene, scene.owner.headers).status_code == 200
    assert revoke_agent(scene.owner.agent.name)
    tokens_expire(api)  # the token cache holds an agent for at most a second
    for key in PROTECTED:
        assert_refused(call(client, API_ROUTES[key], scene, scene.owner.headers), 401, "unauthorized")


def test_public_routes_answer_without_a_token_and_ignore_a_bad_one(client: FlaskClient, scene: Scene) -> None:
    for key, route in API_ROUTES.items():
        if route.public:
            assert call(client, route, scene, {}).status_code == 200, key
            assert call(client, route, scene, BAD_AUTHORIZATION["garbage"]).status_code == 200, key


# ---------------------------------------------------------------------------------------------
# deciding: only the assignee, in the ticket's stage
# ---------------------------------------------------------------------------------------------

#: (case, caller, ticket, stale version?) -> (status, error code)
DECISIONS: list[tuple[str, str, str, bool, int, str | None]] = [
    ("my ticket in my stage", "owner", "mine", False, 202, None),
    ("my ticket, stale version", "owner", "mine", True, 409, "version_conflict"),
    ("a peer's ticket in my stage", "owner", "peers", False, 403, "forbidden"),
    ("an unclaimed ticket in my stage", "owner", "unclaimed", False, 403, "forbidden"),
    ("a ticket of another stage", "owner", "third", False, 403, "forbidden"),
    ("a ticket in a hidden state I asked evidence for", "owner", "hidden", False, 403, "forbidden"),
    ("another stage's agent on my ticket", "other_stage", "mine", False, 403, "forbidden"),
    ("a supervisor of another stage on my ticket", "supervisor", "mine", False, 403, "forbidden"),
    ("the same stage's peer on my ticket", "peer", "mine", False, 403, "forbidden"),
]


@pytest.mark.parametrize("case,caller,ticket,stale,status,code", DECISIONS, ids=[d[0] for d in DECISIONS])
def test_only_the_assignee_in_the_tickets_stage_may_decide(client: FlaskClient, scene: Scene, case: str,
                                                          caller: str, ticket: str, stale: bool, status: int,
                                                          code: str | None) -> None:
    target: Ticket = getattr(scene, ticket)
    who: Caller = getattr(scene, caller)
    before = Ticket.get_by_id(target.id)
    response = client.post(f"/tickets/{target.id}/actions", headers=who.headers, json={
        "action": "to_judgment", "expected_version": target.version - 1 if stale else target.version,
        "params": {}, "qc": {"verdict": "ok"}})
    if status == 202:
        assert response.status_code == 202, response.get_json()
        return
    assert_refused(response, status, code)
    after = Ticket.get_by_id(target.id)  # and a refusal changes nothing
    assert (after.state, after.version, after.assignee) == (before.state, before.version, before.assignee)


@pytest.mark.parametrize("action", SUPERVISOR_ACTIONS)
def test_supervisors_actions_refuse_agents_with_403(client: FlaskClient, app: App, agents: dict[str, Caller],
                                                   scene: Scene, action: str) -> None:
    ticket = in_stage(app, agents, 4, assignee="s4a")
    for who in (agents["s4a"], scene.owner, scene.other_stage):  # the assignee of stage 4 included
        response = client.post(f"/tickets/{ticket.id}/actions", headers=who.headers, json={
            "action": action, "expected_version": ticket.version, "params": {}, "qc": {"verdict": "ok"}})
        assert_refused(response, 403, "forbidden")
    # while a supervisor is past the role check (nothing awaits approval here: 409, not 403)
    response = client.post(f"/tickets/{ticket.id}/actions", headers=scene.supervisor.headers, json={
        "action": action, "expected_version": ticket.version, "params": {}, "qc": {"verdict": "ok"}})
    assert_refused(response, 409, "state_conflict")


# ---------------------------------------------------------------------------------------------
# reading is for any agent; /me is mine only
# ---------------------------------------------------------------------------------------------

READS = [("GET", "/tickets/<int:ticket_id>"), ("GET", "/tickets/<int:ticket_id>/events"), ("GET", "/tickets"),
         ("GET", "/options/<stage>"), ("GET", "/dispatches/<int:dispatch_id>")]


@pytest.mark.parametrize("caller", ["owner", "peer", "other_stage", "supervisor"])
def test_any_agent_may_read(client: FlaskClient, scene: Scene, caller: str) -> None:
    for key in READS:
        assert call(client, API_ROUTES[key], scene, getattr(scene, caller).headers).status_code == 200, key


@pytest.mark.parametrize("caller", ["owner", "peer", "other_stage", "supervisor"])
def test_my_tickets_are_mine_and_a_claim_is_of_my_stage(client: FlaskClient, scene: Scene, caller: str) -> None:
    who: Caller = getattr(scene, caller)
    listed = client.get("/me/tickets", headers=who.headers).get_json()
    assert all(row["assignee"] == who.agent.id for row in listed)
    claimed = client.post("/me/claim", headers=who.headers)
    assert claimed.status_code in (200, 204)
    if claimed.status_code == 200:
        ticket = claimed.get_json()
        assert ticket["assignee"] == who.agent.id and ticket["state"] == who.agent.stage_name
    if caller == "owner":  # the unclaimed stage-2 ticket is there for the taking
        assert claimed.status_code == 200 and claimed.get_json()["id"] == scene.unclaimed.id


# ---------------------------------------------------------------------------------------------
# the web pages: a stranger is sent to sign in, the dashboard is for supervisors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(WEB_ROUTES), ids=[f"{m} {r}" for m, r in WEB_ROUTES])
def test_web_pages_send_strangers_to_sign_in_and_keep_the_dashboard_for_supervisors(
        api: flask.Flask, scene: Scene, key: tuple[str, str]) -> None:
    method, _ = key
    audience, path = WEB_ROUTES[key]
    path = fill(path, scene)
    stranger = api.test_client()
    response = stranger.open(path, method=method, headers=scene.owner.headers)  # a bearer token is no session
    if audience == "public":  # (the sign-in POST without the form's CSRF token is refused, not an error)
        assert response.status_code in ((200, 302, 303) if method == "GET" else (400, 401, 403)), response.status_code
        return
    assert response.status_code in (303, 400, 401, 403), response.status_code  # a POST without a session's CSRF
    if method == "GET":
        assert response.status_code == 303 and response.headers["Location"].startswith("/desk/login")
    if audience == "supervisor":
        agent = api.test_client()
        assert sign_in(agent, scene.owner.token).status_code == 303
        assert agent.get(path).status_code == 403
        boss = api.test_client()
        assert sign_in(boss, scene.supervisor.token).status_code == 303
        assert boss.get(path).status_code == 200
