"""``/tickets`` and ``/dispatches``: reading tickets, and an agent's decisions on them."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response
from flask_smorest import Blueprint

from desk.actions import dispatch_json, load_ticket, submit_action
from desk.auth import current_agent
from desk.errors import not_found
from desk.routes import DeskBlueprint, as_json, refusals
from desk.schemas import (MAX_ID, AcceptedSchema, ActionRequestSchema, DispatchSchema, LookupArgsSchema,
                          TicketEventSchema, TicketSchema, TicketSummarySchema)
from models.views.ticket import ticket_events, ticket_json, ticket_summary
from models.outbox import Dispatch
from models.ticket import LinkedComplaint, Ticket

if TYPE_CHECKING:
    from disputes.wiring import App


def lookup(args: dict) -> list[Ticket]:
    """Tickets by source, external reference and state; a linked complaint's reference finds the
    ticket it was linked to."""
    query = Ticket.select()
    if "external_ref" in args:
        linked = LinkedComplaint.select(LinkedComplaint.ticket).where(
            LinkedComplaint.external_ref == args["external_ref"])
        own = Ticket.external_ref == args["external_ref"]
        if "source" in args:
            own &= Ticket.source == args["source"]
            linked = linked.where(LinkedComplaint.source == args["source"])
        query = query.where(own | Ticket.id.in_(linked))
    elif "source" in args:
        query = query.where(Ticket.source == args["source"])
    if "state" in args:
        query = query.where(Ticket.state == args["state"])
    return list(query.order_by(Ticket.id).limit(args["limit"]))


#: The action body's schema, shared (a schema instance holds no state of a load).
ACTION_REQUEST = ActionRequestSchema()


def tickets_blueprint(app: "App") -> Blueprint:
    blp = DeskBlueprint("tickets", __name__, description="Tickets, their audit trail, and agents' decisions.")

    @blp.route("/tickets")
    @blp.arguments(LookupArgsSchema, location="query")
    @blp.response(200, TicketSummarySchema(many=True))
    @refusals(blp, 401)
    def find_tickets(args: dict) -> Response:
        """Look tickets up by source, external_ref and state (at most 100, by id)."""
        return as_json([ticket_summary(t) for t in lookup(args)])

    @blp.route("/tickets/<int:ticket_id>")
    @blp.response(200, TicketSchema)
    @refusals(blp, 401, 404)
    def get_ticket(ticket_id: int) -> Response:
        """The ticket, with its SLA, evidence, whose move it is, and what the caller may do."""
        return as_json(ticket_json(load_ticket(ticket_id), current_agent(), app.policy, app.clock()))

    @blp.route("/tickets/<int:ticket_id>/events")
    @blp.response(200, TicketEventSchema(many=True))
    @refusals(blp, 401, 404)
    def get_events(ticket_id: int) -> list[dict[str, object]]:
        """The audit trail, oldest first."""
        return ticket_events(load_ticket(ticket_id).id)

    @blp.route("/tickets/<int:ticket_id>/actions", methods=["POST"])
    @blp.arguments(ACTION_REQUEST)  # one instance: webargs would build a schema per request from the class
    @blp.response(202, AcceptedSchema, description="accepted; the stage worker applies it")
    @refusals(blp, 400, 401, 403, 404, 409)
    def post_action(body: dict, ticket_id: int) -> Response:
        """Decide on a ticket assigned to me: 403 not mine or not my stage; 409 version or state
        moved on; 422 an option, parameter or QC verdict not configured for my stage."""
        dispatch = submit_action(ticket_id, current_agent(), body, app)
        return as_json({"accepted": True, "dispatch_id": dispatch.id, "ticket_id": ticket_id}, 202)

    @blp.route("/dispatches/<int:dispatch_id>")
    @blp.response(200, DispatchSchema)
    @refusals(blp, 401, 404)
    def get_dispatch(dispatch_id: int) -> dict[str, object]:
        """Whether an accepted decision was applied, or refused and why."""
        row = Dispatch.get_or_none(id=dispatch_id) if 0 < dispatch_id <= MAX_ID else None
        if row is None:
            raise not_found(f"no dispatch {dispatch_id}")
        return dispatch_json(row)

    return blp
