"""``/me`` and ``/options``: an agent's own work list, claiming, and the stage's option boxes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response
from flask_smorest import Blueprint

from desk.auth import current_agent
from desk.claims import claim_next
from desk.errors import not_found
from desk.routes import DeskBlueprint, as_json, refusals
from desk.schemas import OptionsSchema, PresenceSchema, TicketSchema, TicketSummarySchema
from models.views.ticket import ticket_json, ticket_summary
from models.agent import Agent
from models.base import database
from models.states import TERMINAL_STATES
from models.ticket import Ticket

if TYPE_CHECKING:
    from disputes.wiring import App


def agents_blueprint(app: "App") -> Blueprint:
    blp = DeskBlueprint("agents", __name__, description="My work: my tickets, claiming, my stage's options.")

    @blp.route("/me/tickets")
    @blp.response(200, TicketSummarySchema(many=True))
    @refusals(blp, 401)
    def my_tickets() -> Response:
        """The unfinished tickets assigned to me, oldest in their state first."""
        agent = current_agent()
        query = (Ticket.select()
                 .where((Ticket.assignee == agent.id) & Ticket.state.not_in([s.value for s in TERMINAL_STATES]))
                 .order_by(Ticket.priority.desc(), Ticket.sla_due_at.is_null(), Ticket.sla_due_at,
                           Ticket.state_entered_at, Ticket.id))
        return as_json([ticket_summary(t) for t in query])

    @blp.route("/me/presence", methods=["POST"])
    @blp.arguments(PresenceSchema)
    @blp.response(200, PresenceSchema)
    @refusals(blp, 401, 422)
    def presence(body: dict[str, str]) -> dict[str, str]:
        """Set my presence: ``available`` agents get tickets pushed; ``away`` and ``offline`` do not."""
        agent = current_agent()
        with database.atomic():
            Agent.update(presence=body["presence"], presence_at=app.clock()).where(Agent.id == agent.id).execute()
        return {"presence": body["presence"]}

    @blp.route("/me/claim", methods=["POST"])
    @blp.response(200, TicketSchema, description="the ticket now assigned to me")
    @blp.alt_response(204, description="nothing is waiting for my stage, or I am at capacity")
    @refusals(blp, 401)
    def claim() -> Response:
        """Assign me the next waiting ticket of my stage (stage 1: take it over) and return it."""
        agent = current_agent()
        ticket = claim_next(agent, app)
        if ticket is None:
            return Response(status=204)
        return as_json(ticket_json(ticket, agent, app.policy, app.clock()))

    @blp.route("/options/<stage>")
    @blp.response(200, OptionsSchema)
    @refusals(blp, 401, 404)
    def options(stage: str) -> dict[str, object]:
        """The configured option boxes of a stage: what the desk renders as buttons."""
        if stage not in app.policy.options:
            raise not_found(f"no stage {stage[:32]!r} (stages: {', '.join(sorted(app.policy.options))})")
        return app.policy.options_for(stage).describe()

    return blp
