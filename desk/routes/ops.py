"""``/health`` and ``/metrics``: for load balancers, SREs and Prometheus, so no token."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, jsonify
from flask_smorest import Blueprint

from desk.metrics import CONTENT_TYPE, render_metrics
from disputes.probes import dependency_problems
from desk.routes import DeskBlueprint
from desk.schemas import HealthSchema

if TYPE_CHECKING:
    from disputes.wiring import App


def ops_blueprint(app: "App") -> Blueprint:
    blp = DeskBlueprint("ops", __name__, description="Probes: health and Prometheus metrics (no token).")

    @blp.route("/health")
    @blp.doc(security=[])
    @blp.response(200, HealthSchema, description="the database and the broker answer")
    @blp.alt_response(503, schema=HealthSchema, description="the dependency named 'down' does not answer")
    def health() -> Response:
        """Whether the database and the broker answer (within 2 s, even when one of them hangs)."""
        problems = dependency_problems(app.db, app.broker)
        body: dict[str, object] = {name: "ok" if why is None else "down" for name, why in problems.items()}
        down = {name: [why] for name, why in problems.items() if why is not None}
        body["status"] = "down" if down else "ok"
        if down:
            body["error"] = {"code": "unavailable", "message": f"not answering: {', '.join(down)}",
                             "fields": down}
        response = jsonify(body)
        response.status_code = 503 if down else 200
        return response

    @blp.route("/metrics")
    @blp.doc(security=[], responses={"200": {"description": "Prometheus text exposition",
                                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        """Tickets per state, queue depths, transitions, waits, SLA breaches, backlogs; what the database or
        the broker did not answer within its deadline is left out (``disputes_dependency_up`` says which)."""
        return Response(render_metrics(app), mimetype=None, content_type=CONTENT_TYPE)

    return blp
