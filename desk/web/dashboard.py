"""``/dashboard/``: the supervisors' live view of the floor (figures from `desk.web.board`).

The page loads once and then fetches ``/dashboard/panel`` — the same figures
as an HTML fragment — every `REFRESH_SECONDS`; without scripts a meta refresh
reloads the whole page instead.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import flask
from flask import Blueprint, g, render_template

from desk.web.board import build_board
from desk.web.i18n import word
from desk.web.pages import signed_in
from planning.tomorrow import PlanCache

if TYPE_CHECKING:
    from disputes.wiring import App

#: How often the dashboard refreshes itself.
REFRESH_SECONDS = 10


def dashboard_blueprint(app: "App") -> Blueprint:
    blp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
    plans = PlanCache(lambda: app.policy)  # tomorrow's plan, made in the background

    def supervisors_only() -> flask.Response | None:
        if g.desk.agent.supervisor:
            return None
        page = render_template("error.html", status=403, message=word("supervisors_only", g.lang))
        return flask.make_response(page, 403)

    @blp.route("/")
    @signed_in
    def board() -> flask.Response | str:
        refused = supervisors_only()
        if refused is not None:
            return refused
        now = app.clock()
        return render_template("dashboard.html", board=build_board(app, now, plans.get(now)), agent=g.desk.agent,
                               csrf=g.desk.csrf, refresh=REFRESH_SECONDS)

    @blp.route("/panel")
    @signed_in
    def panel() -> flask.Response | str:
        refused = supervisors_only()
        if refused is not None:
            return refused
        now = app.clock()
        return render_template("_board.html", board=build_board(app, now, plans.get(now)))

    return blp
