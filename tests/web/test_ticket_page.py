"""The ticket page: exactly the stage's configured options, the API's checks, clear refusals."""
from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient

from disputes.wiring import App
from models.evidence import EvidenceItem
from models.outbox import Dispatch
from models.ticket import Ticket
from tests.desk.conftest import STAGE1_PARAMS, Caller, act, in_stage, new_ticket


class Form(HTMLParser):
    """The controls of a page: option buttons, inputs by name, disabled fieldsets."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.buttons: list[tuple[str, bool]] = []  # (action, enabled)
        self.inputs: dict[str, list[str]] = {}
        self.selects: dict[str, list[str]] = {}
        self._select: str | None = None
        self._disabled_depth = 0
        self._depth = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "fieldset":
            self._depth += 1
            if "disabled" in a and not self._disabled_depth:
                self._disabled_depth = self._depth
        elif tag == "button" and a.get("name") == "action":
            self.buttons.append((a["value"] or "", "disabled" not in a and not self._disabled_depth))
        elif tag == "input" and a.get("name") and a.get("type") in ("radio", "checkbox", "text"):
            self.inputs.setdefault(a["name"] or "", []).append(a.get("value") or "")
        elif tag == "select":
            self._select = a.get("name")
            self.selects[self._select or ""] = []
        elif tag == "option" and self._select:
            self.selects[self._select].append(a.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "fieldset":
            if self._disabled_depth == self._depth:
                self._disabled_depth = 0
            self._depth -= 1
        elif tag == "select":
            self._select = None


def field_errors(html: str) -> dict[str, str]:
    """The 422 messages shown next to their fields."""
    return {name: unescape(text) for name, text in re.findall(r'data-field="(\w+)">([^<]+)<', html)}


def page_of(client: FlaskClient, ticket: Ticket) -> str:
    response = client.get(f"/desk/tickets/{ticket.id}")
    assert response.status_code == 200, response.text
    return response.text


def post_decision(client: FlaskClient, ticket: Ticket, csrf: str, action: str, fields: dict | None = None,
                  version: int | None = None):
    data = {"csrf_token": csrf, "action": action,
            "expected_version": str(Ticket.get_by_id(ticket.id).version if version is None else version)}
    data.update(fields or {})
    return client.post(f"/desk/tickets/{ticket.id}/decide", data=data)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_the_option_buttons_are_exactly_the_options_of_the_stage(client: FlaskClient, app: App, signed_in,
                                                                  agents: dict[str, Caller], stage: int) -> None:
    caller = agents[f"s{stage}a"]
    ticket = in_stage(app, agents, stage, assignee=caller.agent.name if stage > 1 else None)
    signed_in(client, caller)
    form = Form(page_of(client, ticket))
    options = client.get(f"/options/stage{stage}", headers=caller.headers).get_json()
    allowed = client.get(f"/tickets/{ticket.id}", headers=caller.headers).get_json()["allowed_actions"]

    assert [action for action, _ in form.buttons] == [o["action"] for o in options["actions"]]
    assert [action for action, enabled in form.buttons if enabled] == [a for a in allowed if a != "claim"]
    for option in options["actions"]:
        for name, spec in option["params"].items():
            shown = form.inputs[f"p.{option['action']}.{name}"]
            assert shown == ([""] if spec.get("type") == "amount" else [str(c["code"]) for c in spec["choices"]])
    own = {f"p.{o['action']}.{n}" for o in options["actions"] for n in o["params"]}
    assert {name for name in form.inputs if name.startswith("p.")} == own  # nothing else to edit
    if stage == 1:
        assert "qc.verdict" not in form.inputs
    else:
        assert form.inputs["qc.verdict"] == ["ok", "flag"]
        assert form.selects["qc.reason_code"] == [""] + [r["code"] for r in options["qc_reasons"]]


def test_the_labels_follow_the_language_toggle(client: FlaskClient, app: App, signed_in,
                                               agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    signed_in(client, agents["s1a"])
    client.get("/desk/lang/en")
    assert ">Request evidence</button>" in page_of(client, ticket)
    response = client.get(f"/desk/lang/zh?next=/desk/tickets/{ticket.id}")
    assert response.headers["Location"] == f"/desk/tickets/{ticket.id}"
    html = page_of(client, ticket)
    assert ">请求补充凭证</button>" in html and "未和解" in html and "待客服处理" in html


def test_a_ticket_of_another_stage_shows_its_options_all_disabled(client: FlaskClient, app: App, signed_in,
                                                                   agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3)
    signed_in(client, agents["s1a"])
    html = page_of(client, ticket)
    assert not any(enabled for _, enabled in Form(html).buttons)
    assert "This ticket is not in your stage" in html


def test_the_complaint_shows_money_from_minor_units(client: FlaskClient, app: App, signed_in,
                                                    agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app, order_amount=123_456, claimed_amount=1_234)
    signed_in(client, agents["s1a"])
    client.get("/desk/lang/en")
    html = page_of(client, ticket)
    assert re.search(r'id="order-amount">1,234.56 CNY<', html)
    assert re.search(r'id="claimed-amount">12.34 CNY<', html)


def test_only_web_evidence_links_are_clickable_and_hashes_are_shown(client: FlaskClient, app: App, signed_in,
                                                                    agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    for uri in ("https://files.example.com/a.jpg", "javascript:alert(1)", "oss://bucket/b.mp4"):
        EvidenceItem.create(ticket=ticket.id, round=0, party="user", kind="photo", uri=uri,
                            sha256="c0ffee" * 10 + "abcd")
    signed_in(client, agents["s1a"])
    html = page_of(client, ticket)
    assert '<a href="https://files.example.com/a.jpg"' in html
    assert 'href="javascript' not in html and 'href="oss:' not in html
    assert "<code>javascript:alert(1)</code>" in html
    assert html.count("c0ffee" * 10 + "abcd") >= 3


def test_a_decision_is_handed_to_the_stage_queue_with_the_configured_codes(client: FlaskClient, app: App, signed_in,
                                                                           agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    csrf = signed_in(client, agents["s1a"])
    response = post_decision(client, ticket, csrf, "request_evidence", {
        "p.request_evidence.dispute_status": "merchant_timed_out", "p.request_evidence.category": "apparel",
        "p.request_evidence.from": "both", "p.request_evidence.items": ["photo", "video"]})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/desk/tickets/{ticket.id}?note=accepted"
    dispatch = Dispatch.select().where(Dispatch.kind == "act").get()
    assert dispatch.payload == {
        "ticket_id": ticket.id, "agent_id": agents["s1a"].agent.id, "action": "request_evidence",
        "expected_version": ticket.version, "qc": None,
        "params": {"dispute_status": "merchant_timed_out", "category": "apparel", "from": "both",
                   "items": ["photo", "video"]}}
    html = client.get(response.headers["Location"]).text
    assert "Decision accepted" in html and 'id="applying"' in html  # shown until the worker applies it


def test_a_stale_version_says_someone_else_moved_the_ticket(client: FlaskClient, app: App, signed_in,
                                                            agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    csrf = signed_in(client, agents["s1a"])
    response = post_decision(client, ticket, csrf, "to_judgment", {
        "p.to_judgment.dispute_status": "not_reconciled", "p.to_judgment.category": "apparel"},
        version=ticket.version - 1)
    assert response.status_code == 409
    assert "Someone else moved this ticket — reload" in response.text
    assert 'id="reload"' in response.text
    assert Dispatch.select().where(Dispatch.kind == "act").count() == 0


def test_another_agents_ticket_is_refused_with_403(client: FlaskClient, app: App, signed_in,
                                                   agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)  # held by s1a
    csrf = signed_in(client, agents["s1b"])
    assert "Another agent holds this ticket" in page_of(client, ticket)
    response = post_decision(client, ticket, csrf, "to_judgment", {
        "p.to_judgment.dispute_status": "not_reconciled", "p.to_judgment.category": "apparel"})
    assert response.status_code == 403
    assert "not assigned to you" in response.text


def test_a_missing_or_unconfigured_option_is_named_next_to_its_field(client: FlaskClient, app: App, signed_in,
                                                                    agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    csrf = signed_in(client, agents["s1a"])
    response = post_decision(client, ticket, csrf, "request_evidence", {
        "p.request_evidence.category": "spaceships", "p.request_evidence.from": "both"})
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert errors == {"dispute_status": "dispute_status is required",
                      "category": "'spaceships' is not a configured category", "items": "items is required"}
    assert re.search(r'name="p.request_evidence.from" value="both"\s+checked>', response.text)  # choice kept


def test_a_qc_verdict_is_required_from_stage_2_and_an_amount_must_be_money(client: FlaskClient, app: App, signed_in,
                                                                          agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3, assignee="s3a")
    csrf = signed_in(client, agents["s3a"])
    response = post_decision(client, ticket, csrf, "judge", {
        "p.judge.liability": "merchant", "p.judge.remedy": "partial_refund", "p.judge.amount": "twelve"})
    assert response.status_code == 422
    errors = field_errors(response.text)
    assert errors["amount"] == "write an amount like 12.34 (CNY)"
    response = post_decision(client, ticket, csrf, "judge", {
        "p.judge.liability": "merchant", "p.judge.remedy": "partial_refund", "p.judge.amount": "12.5"})
    assert response.status_code == 422
    assert field_errors(response.text) == {
        "qc": "a QC verdict is required in stage3"}
    response = post_decision(client, ticket, csrf, "judge", {
        "qc.verdict": "flag", "qc.reason_code": "wrong_category", "p.judge.liability": "merchant",
        "p.judge.remedy": "partial_refund", "p.judge.amount": "12.5"})
    assert response.status_code == 303
    dispatch = Dispatch.select().where(Dispatch.kind == "act").get()
    assert dispatch.payload["params"] == {"liability": "merchant", "remedy": "partial_refund", "amount": 1250}
    assert dispatch.payload["qc"] == {"verdict": "flag", "reason_code": "wrong_category"}


def test_the_history_shows_every_change_with_its_qc_verdict(client: FlaskClient, app: App, signed_in,
                                                            agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 4, assignee="s4a")
    signed_in(client, agents["s4a"])
    html = page_of(client, ticket)
    actions = re.findall(r'<tr class="event" data-action="(\w+)"', html)
    events = client.get(f"/tickets/{ticket.id}/events", headers=agents["s4a"].headers).get_json()
    assert actions == [e["action"] for e in events]
    assert re.findall(r'data-verdict="(\w+)"', html) == ["ok"]  # the judgment's verdict on stage 1
    assert "Merchant liable" in html and "Full refund" in html


def test_claim_next_opens_the_claimed_ticket_or_says_nothing_waits(client: FlaskClient, app: App, signed_in,
                                                                   agents: dict[str, Caller]) -> None:
    csrf = signed_in(client, agents["s1a"])
    response = client.post("/desk/claim", data={"csrf_token": csrf})
    assert response.headers["Location"] == "/desk/?note=nothing_waiting"
    assert "Nothing is waiting for your stage" in client.get(response.headers["Location"]).text
    ticket = new_ticket(app)
    response = client.post("/desk/claim", data={"csrf_token": csrf})
    assert response.headers["Location"] == f"/desk/tickets/{ticket.id}?note=claimed"
    assert Ticket.get_by_id(ticket.id).state == "stage1"


def test_my_queue_lists_my_tickets_in_the_order_of_me_tickets(client: FlaskClient, app: App, signed_in,
                                                              agents: dict[str, Caller]) -> None:
    for _ in range(3):
        act(app, new_ticket(app, complexity="complex"), "take_over", agents["s1a"])
    act(app, new_ticket(app), "take_over", agents["s1a"])
    signed_in(client, agents["s1a"])
    html = client.get("/desk/").text
    shown = [int(i) for i in re.findall(r'<tr data-ticket="(\d+)">', html)]
    listed = [t["id"] for t in client.get("/me/tickets", headers=agents["s1a"].headers).get_json()]
    assert shown == listed and len(shown) == 4
    assert html.count('class="countdown" data-due=') == 4


def test_a_stage_1_decision_needs_no_qc(client: FlaskClient, app: App, signed_in, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 1)
    csrf = signed_in(client, agents["s1a"])
    fields = {f"p.to_judgment.{k}": v for k, v in STAGE1_PARAMS.items()}
    assert post_decision(client, ticket, csrf, "to_judgment", fields).status_code == 303


def promise_cells(html: str) -> dict[str, tuple[str, str]]:
    """The SLA card's promises: name -> (status, the cell's text)."""
    cells = re.findall(r'data-promise="(\w+)" data-status="(\w+)">(.*?)</dd>', html, re.S)
    return {name: (status, unescape(re.sub(r"<[^>]+>", " ", body))) for name, status, body in cells}


def test_every_time_says_its_zone_and_a_kept_promise_stops_counting_down(client: FlaskClient, app: App, signed_in,
                                                                          agents: dict[str, Caller]) -> None:
    # Given a complaint on the floor, not yet taken over
    ticket = new_ticket(app)
    signed_in(client, agents["s1a"])
    html = page_of(client, ticket)
    # Then every promise counts down, and every time on the page names its zone (the policy calendar's)
    cells = promise_cells(html)
    assert {name: status for name, (status, _) in cells.items()} == {
        "accept": "running", "first_feedback": "running", "resolve": "running"}
    assert "class=\"countdown\"" in html and re.search(r"\bin \d+m\b", cells["accept"][1])
    shown = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?(?: [+-]\d\d:\d\d)?", html)
    assert shown and all(time.endswith(" +08:00") for time in shown), shown

    # When it is taken over
    act(app, ticket, "take_over", agents["s1a"])
    html = page_of(client, ticket)
    cells = promise_cells(html)
    # Then "Accept by" says it was kept, and when, instead of "in 59m"; the others still count down
    assert cells["accept"][0] == "kept" and "Kept" in cells["accept"][1] and "+08:00" in cells["accept"][1]
    assert "countdown" not in re.search(r'data-promise="accept".*?</dd>', html, re.S).group(0)
    assert not re.search(r"\bin \d", cells["accept"][1])
    assert (cells["first_feedback"][0], cells["resolve"][0]) == ("running", "running")

    # And once stage 1 decides, the first feedback is kept too
    act(app, ticket, "to_judgment", agents["s1a"], STAGE1_PARAMS)
    cells = promise_cells(page_of(client, ticket))
    assert (cells["accept"][0], cells["first_feedback"][0], cells["resolve"][0]) == ("kept", "kept", "running")


def test_a_ticket_that_ended_counts_nothing_down(client: FlaskClient, app: App, signed_in,
                                                 agents: dict[str, Caller]) -> None:
    from models.change import Role
    # Given a complaint withdrawn by the buyer before anyone took it over
    ticket = act(app, new_ticket(app), "withdraw", role=Role.USER)
    signed_in(client, agents["s1a"])
    html = page_of(client, ticket)
    cells = promise_cells(html)
    # Then nothing ticks: the promise never reached says so, resolving is the ticket's end
    assert cells["accept"][0] == "ended" and "the ticket ended" in cells["accept"][1]
    assert cells["resolve"][0] == "kept"
    assert 'class="countdown"' not in html
