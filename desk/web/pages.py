"""``/desk/``: sign in, my queue, claim next, the ticket page and its option buttons.

Every page needs a signed-in agent (`desk.web.session`); every form posts a
CSRF token. A decision is checked and queued by `desk.actions.submit_action`
— the code behind ``POST /tickets/{id}/actions`` — and its refusals are shown
on the page: 403 (not yours, not your stage), 409 (someone moved the ticket:
reload), 422 (the field messages next to their fields).
"""
from __future__ import annotations

import hmac
from functools import wraps
from typing import TYPE_CHECKING, Callable, TypeVar
from urllib.parse import urlencode

import flask
from flask import Blueprint, g, redirect, render_template, request, url_for

from desk.actions import check_owner, check_version, load_ticket, submit_action
from desk.claims import claim_next, open_assigned
from desk.errors import ApiError
from models.views.ticket import ticket_json
from desk.web.forms import read_decision
from desk.web.i18n import LANG_COOKIE, LANGUAGES, word
from desk.web.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    DeskSession,
    current_session,
    end_session,
    form_is_genuine,
    live_agent,
    login_csrf,
    same_origin,
    start_session,
)
from desk.web.ticket_page import TicketPage, ticket_page
from models.agent import Agent
from models.machine import SUPERVISOR_ACTIONS
from models.states import TERMINAL_STATES, State
from models.ticket import Ticket

if TYPE_CHECKING:
    from disputes.wiring import App

View = TypeVar("View", bound=Callable[..., object])

#: Notes a redirect may ask a page to show (by key: nothing from the URL is echoed).
NOTES = ("claimed", "nothing_waiting", "accepted", "signed_out", "session_ended")


def safe_next(target: str | None, default: str = "/desk/") -> str:
    """A local desk or dashboard path to return to (never another site)."""
    if target and target.startswith(("/desk", "/dashboard")) and "//" not in target and "\\" not in target:
        return target
    return default


def to_login(note: str | None = None) -> flask.Response:
    query = {"next": request.full_path.rstrip("?") if request.method == "GET" else request.path}
    if note:
        query["note"] = note
    return redirect(url_for("desk.login") + "?" + urlencode(query), 303)


def signed_in(view: View) -> View:
    """The page needs a signed-in agent (``g.desk``); unsafe methods also need a genuine form."""
    @wraps(view)
    def wrapper(*args: object, **kwargs: object) -> object:
        session: DeskSession | None = current_session(request)
        if session is None:
            ended = request.cookies.get(SESSION_COOKIE) is not None
            response = to_login("session_ended" if ended else None)
            if ended:
                end_session(response, request.is_secure)
            return response
        g.desk = session
        if request.method == "POST" and not form_is_genuine(request, session.csrf):
            return flask.make_response(render_template("error.html", status=403, message=word("forged", g.lang)), 403)
        return view(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def my_queue(agent: Agent, app: "App") -> list[dict]:
    """``GET /me/tickets``'s tickets, in its order (priority, then the SLA due time), each in full
    (``GET /tickets/{id}``: its SLA and next deadline, for the countdowns)."""
    now = app.clock()
    query = (Ticket.select()
             .where((Ticket.assignee == agent.id) & Ticket.state.not_in([s.value for s in TERMINAL_STATES]))
             .order_by(Ticket.priority.desc(), Ticket.sla_due_at.is_null(), Ticket.sla_due_at,
                       Ticket.state_entered_at, Ticket.id))
    return [ticket_json(t, agent, app.policy, now) for t in query]


def waiting_in_stage(agent: Agent) -> int:
    """Unassigned tickets waiting for the agent's pool (what "claim next" draws from)."""
    if agent.stage == 1:
        return Ticket.select().where(Ticket.state == State.AWAITING_TAKEOVER).count()
    return Ticket.select().where((Ticket.state == agent.stage_name) & Ticket.assignee.is_null()).count()


def desk_blueprint(app: "App") -> Blueprint:
    blp = Blueprint("desk", __name__, url_prefix="/desk")

    @blp.route("/login", methods=["GET", "POST"])
    def login() -> flask.Response:
        target = safe_next(request.values.get("next"))
        error = None
        if request.method == "POST":
            expected = request.cookies.get(LOGIN_COOKIE, "")
            sent = request.form.get(CSRF_FIELD, "")
            if not (expected and same_origin(request) and hmac.compare_digest(sent.encode(), expected.encode())):
                error = word("forged", g.lang)
            else:
                token = request.form.get("token", "").strip()
                agent = live_agent(token)
                if agent is not None:
                    response = redirect(target, 303)
                    start_session(response, token, request.is_secure)
                    return response
                error = word("bad_token", g.lang)
        response = flask.make_response()
        note = request.args.get("note")
        response.set_data(render_template("login.html", csrf=login_csrf(request, response), next=target,
                                          error=error, note=note if note in NOTES else None))
        response.status_code = 401 if error else 200
        return response

    @blp.route("/logout", methods=["POST"])
    @signed_in
    def logout() -> flask.Response:
        response = redirect(url_for("desk.login", note="signed_out"), 303)
        end_session(response, request.is_secure)
        return response

    @blp.route("/lang/<code>")
    def set_language(code: str) -> flask.Response:
        response = redirect(safe_next(request.args.get("next")), 303)
        if code in LANGUAGES:
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path="/", samesite="Lax",
                                secure=request.is_secure)
        return response

    @blp.route("/")
    @signed_in
    def queue() -> str:
        agent = g.desk.agent
        note = request.args.get("note")
        return render_template("queue.html", agent=agent, tickets=my_queue(agent, app),
                               waiting=waiting_in_stage(agent), load=open_assigned(agent),
                               note=note if note in NOTES else None)

    @blp.route("/claim", methods=["POST"])
    @signed_in
    def claim() -> flask.Response:
        ticket = claim_next(g.desk.agent, app)
        if ticket is None:
            return redirect(url_for("desk.queue", note="nothing_waiting"), 303)
        return redirect(url_for("desk.ticket", ticket_id=ticket.id, note="claimed"), 303)

    @blp.route("/tickets/<int:ticket_id>")
    @signed_in
    def ticket(ticket_id: int) -> str:
        page = ticket_page(load_ticket(ticket_id), g.desk.agent, app, app.clock())
        note = request.args.get("note")
        return render_page(page, note=note if note in NOTES else None)

    @blp.route("/tickets/<int:ticket_id>/decide", methods=["POST"])
    @signed_in
    def decide(ticket_id: int) -> flask.Response | tuple[str, int]:
        agent = g.desk.agent
        current = load_ticket(ticket_id)
        page = ticket_page(current, agent, app, app.clock())
        decision = read_decision(request.form, page.options or {}, current.currency)
        try:
            if decision.errors and decision.action not in SUPERVISOR_ACTIONS:
                check_version(current, decision.expected_version)  # the API's order: 409, 403, then 422
                check_owner(current, agent)
                raise local_refusal(decision.errors, decision.action, decision.params, page, app)
            submit_action(ticket_id, agent, decision.body(), app)
        except ApiError as refusal:
            page = ticket_page(load_ticket(ticket_id), agent, app, app.clock())
            page.error = {"status": refusal.status, "code": refusal.code, "message": refusal.message,
                          "fields": refusal.fields, "action": decision.action}
            page.posted = {key: request.form.getlist(key) for key in request.form if key != CSRF_FIELD}
            return render_page(page), refusal.status
        return redirect(url_for("desk.ticket", ticket_id=ticket_id, note="accepted"), 303)

    return blp


def local_refusal(errors: dict[str, list[str]], action: str, params: dict, page: TicketPage,
                  app: "App") -> ApiError:
    """A 422 for what the desk could not read (an amount), with what the policy says of the rest."""
    fields: dict[str, list[str]] = {}
    if page.stage is not None:
        fields.update(app.policy.options_for(page.stage).check(action, params))
    fields.update(errors)
    return ApiError(422, "validation_failed", "the request is not valid: see fields", fields)


def render_page(page: TicketPage, note: str | None = None) -> str:
    return render_template("ticket.html", page=page, note=note,
                           here=url_for("desk.ticket", ticket_id=page.ticket["id"]))
