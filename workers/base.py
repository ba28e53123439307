"""The worker of a stage queue: ``negotiation`` and ``stage1``..``stage4`` share it whole.

The stages differ in what the transition table and the policy allow, not in
plumbing, so one class serves every stage queue (`StageWorker(app, queue)`);
``notify`` adds its own kind of dispatch (`workers.delivery`). A stage queue
receives three kinds of dispatch: ``arrive`` (a ticket entered
the stage), ``act`` (an agent's decision accepted by the API) and ``wake``
(one of the stage's deadlines fell due). Each is applied through
`models.workflow.apply` with the dispatch claimed in the same transaction, so
a redelivered message changes nothing. Each kind's payload is read as its type
(`models.dispatches`). A dispatch that can never succeed — its decision is on a
version that is gone, the table does not allow it, its ticket or payload is
unusable: any `models.errors.Refused` — is marked done with the reason, not retried.
Any other exception is a failed *try*: counted on the dispatch, still not done, with
what it raised (`record_failed_try`), and raised on for dramatiq to retry; the
reconciler re-sends a dispatch whose retries ran out, and declares it dead once
``MAX_DISPATCH_ATTEMPTS`` tries failed. A message is counted only when a worker runs
it: a dispatch waiting in a queue nobody consumes is never given up on.
"""
from __future__ import annotations

import logging
import uuid
from typing import Callable

import dramatiq
from dramatiq.middleware import TimeLimitExceeded

from disputes.logs import mask
from disputes.wiring import App
from models.audit import TicketEvent
from models.base import DATABASE_UNAVAILABLE, database, utcnow
from models.change import Actor, Role
from models.dispatches import AgentDecision, WakeUp
from models.errors import DisputesError, Refused, VersionConflict
from models.outage import Outage, describe
from models.outbox import Dispatch, OutboxEvent, failed_tries, failing_outcome
from models.prepared import Prepared, get_by_id
from models.routing import choose_agent
from models.sending import actor_name, send_dispatches
from models.ticket import Ticket
from models.timer import Timer
from models.workflow import Outcome, apply

log = logging.getLogger("disputes.workers")

class DeadlineRaced(DisputesError):
    """A ticket changed under its deadline every time it was read: raised so that dramatiq retries later."""


#: How often a wake-up re-reads a ticket that changed under it before it gives up (and is retried).
WAKE_ATTEMPTS = 5


class StageWorker:
    """One queue's handler: routes each dispatch to ``on_<kind>``."""

    def __init__(self, app: App, queue: str) -> None:
        self.app = app
        self.queue = queue
        #: The database as this queue's workers see it: an outage is logged once, with its end.
        self.database_outage = Outage("database", log)

    # -- entry point -----------------------------------------------------------
    def handle(self, dispatch_id: int, kind: str | None = None, ticket_id: int | None = None,
               payload: object = None) -> None:
        """Handle the dispatch a message names. The message carries the row's content, so the row is
        not read: the handler's transaction claims it (``done_at IS NULL``), and a redelivery of a
        dispatch already done changes nothing. A message that carries only the id is read first."""
        if kind is None:
            row = get_by_id(Dispatch, dispatch_id)
            if row is None or row.done_at is not None:
                return  # already applied (a redelivery) or never committed
        else:
            row = Dispatch(id=dispatch_id, queue=self.queue, kind=kind, ticket_id=ticket_id, payload=payload)
        handler: Callable[[Dispatch], Outcome | None] = getattr(self, f"on_{row.kind}")
        try:
            outcome = handler(row)
        except Refused as refusal:
            log.info("dispatch %s refused: %s", row.id, refusal)
            mark_done(row, f"refused: {refusal}"[:255])
            return
        except DATABASE_UNAVAILABLE:
            raise  # nowhere to count the try: the actor tells the outage, dramatiq retries
        except (Exception, TimeLimitExceeded) as error:  # a fault: this try failed, dramatiq retries
            record_failed_try(row.id, error)
            raise
        if outcome is not None and outcome.dispatches:
            send_dispatches(self.app.broker, outcome.dispatches)

    # -- the three kinds -------------------------------------------------------
    def on_arrive(self, row: Dispatch) -> Outcome | None:
        """A ticket entered this stage: with push routing, offer it to the best available agent."""
        ticket = get_by_id(Ticket, row.ticket_id) if self.app.policy.routing.mode == "push" else None
        if ticket is None or ticket.assignee is not None:  # pull routing: agents claim it themselves
            mark_done(row, "applied")
            return None
        return self._push(row, ticket)

    def _push(self, row: Dispatch, ticket: Ticket) -> Outcome | None:
        stage = int(self.queue.removeprefix("stage"))
        choice = choose_agent(ticket, stage, self.app.policy)
        if choice is None:
            mark_done(row, "no agent available")
            announce_no_agent(ticket, self.queue)
            return None
        action = "take_over" if ticket.state == "awaiting_takeover" else "claim"
        return self._apply(row, ticket.id, action, Actor.agent(stage, choice.agent.id), {},
                           expected_version=ticket.version)

    def on_act(self, row: Dispatch) -> Outcome | None:
        decision = row.payload_as(AgentDecision)
        actor = Actor(Role(decision.role or self.queue), decision.agent_id)  # a supervisor, or the stage's agent
        qc = (dict(decision.qc, about=previous_agent(decision.ticket_id, decision.agent_id)) if decision.qc
              else None)
        return self._apply(row, decision.ticket_id, decision.action, actor, dict(decision.params),
                           expected_version=decision.expected_version, qc=qc)

    def on_wake(self, row: Dispatch) -> Outcome | None:
        """A deadline fell due: apply it to the ticket read here, if the ticket is still in the state
        (and the visit of it) the timer was set in. When another change lands in between, read again
        and check again: a deadline must neither be lost to an unrelated change nor outlive its state."""
        timer = get_by_id(Timer, row.payload_as(WakeUp).timer_id)
        for _ in range(WAKE_ATTEMPTS):
            ticket = get_by_id(Ticket, row.ticket_id)
            if timer is None or ticket is None or (
                    (ticket.state, ticket.state_version) != (timer.state, timer.state_version)):
                mark_done(row, "stale: the ticket left the state this deadline belonged to")
                return None
            try:
                return self._apply(row, ticket.id, timer.action, Actor(Role.SCHEDULER), {},
                                   expected_version=ticket.version, read=ticket)
            except VersionConflict:
                continue
        raise DeadlineRaced(f"ticket {row.ticket_id} kept changing under its deadline '{timer.action}'")

    def _apply(self, row: Dispatch, ticket_id: int, action: str, actor: Actor, params: dict,
               **kwargs: object) -> Outcome:
        """Apply with the dispatch claimed in the change's transaction (a `Refused` goes up to `handle`)."""
        return apply(ticket_id, action, actor, params, self.app.policy, cause=f"dispatch:{row.id}",
                     claim_cause=lambda: claim_dispatch(row.id), **kwargs)  # type: ignore[arg-type]

    # -- declaration -----------------------------------------------------------
    def actor_options(self) -> dict[str, int]:
        """dramatiq options of this queue's actor beyond the broker's middleware defaults."""
        return {}

    def declare(self) -> dramatiq.Actor:
        """Declare this queue's actor on the app's broker (once per broker)."""
        name = actor_name(self.queue)
        if name in self.app.broker.actors:
            return self.app.broker.actors[name]

        def handle(dispatch_id: int, **carried: object) -> None:
            try:
                self.handle(dispatch_id, **carried)  # type: ignore[arg-type]
            except DATABASE_UNAVAILABLE as error:
                # The database away is an outage, logged once by this process: dramatiq retries the
                # message as after any failed try, but a Retry is not logged with a traceback each time.
                self.database_outage.failed(error)
                raise dramatiq.Retry(describe(error)) from error
            self.database_outage.answered()

        handle.__name__ = name
        handle.__module__ = type(self).__module__
        actor = dramatiq.Actor(handle, broker=self.app.broker, actor_name=name, queue_name=self.queue, priority=0,
                               options=self.actor_options())
        self.app.actors[self.queue] = actor
        return actor


def announce_no_agent(ticket: Ticket, queue: str) -> None:
    """Nobody of the stage can take the ticket: that must be loud (an event, the dashboard, a metric)."""
    log.warning("no available agent in %s for ticket %s", queue, ticket.id)
    with database.atomic():
        OutboxEvent.create(ticket_id=ticket.id, routing_key="routing.no_agent", body={
            "event_id": str(uuid.uuid4()), "ticket_id": ticket.id, "source": ticket.source,
            "external_ref": ticket.external_ref, "stage": queue, "state": ticket.state, "at": utcnow().isoformat()})


def claim_dispatch(dispatch_id: int) -> bool:
    """Mark the dispatch done inside the effect's transaction; False if another delivery did."""
    return _MARK_DONE.execute(id=dispatch_id, done_at=_when(utcnow()), outcome="applied").rowcount == 1


def mark_done(row: Dispatch, outcome: str) -> None:
    with database.atomic():
        _MARK_DONE.execute(id=row.id, done_at=_when(utcnow()), outcome=outcome)


def record_failed_try(dispatch_id: int, error: BaseException) -> int:
    """Count a try of a dispatch (still not done) whose handler raised `error`, and keep what it
    raised on the row (one line, contact data masked): ``failing: <n> tries failed, last: <error>``.
    Returns the tries counted so far (0 when the dispatch is done, or the count could not be
    written). Best effort: when the database is what failed, the try goes uncounted — the dispatch
    is re-sent all the same, and a database away is no fault of the decision's."""
    described = mask(describe(error))
    try:
        for _ in range(3):  # two copies of a dispatch failing at once: count both
            with database.atomic():
                found = (Dispatch.select(Dispatch.outcome)
                         .where((Dispatch.id == dispatch_id) & Dispatch.done_at.is_null()).tuples().first())
                if found is None:
                    return 0  # applied or refused meanwhile (another copy): nothing failed for good
                before = found[0]
                tries = failed_tries(before) + 1
                unchanged = Dispatch.outcome.is_null() if before is None else Dispatch.outcome == before
                if (Dispatch.update(outcome=failing_outcome(tries, described))
                        .where((Dispatch.id == dispatch_id) & Dispatch.done_at.is_null() & unchanged)
                        .execute()):
                    log.warning("dispatch %s: try %s failed: %s", dispatch_id, tries, described)
                    return tries
    except Exception:  # noqa: BLE001 - the try's own error is what dramatiq reports
        log.warning("dispatch %s: the failed try could not be counted", dispatch_id, exc_info=True)
    return 0


_MARK_DONE = Prepared(lambda s: Dispatch.update(done_at=s.done_at, outcome=s.outcome)
                      .where((Dispatch.id == s.id) & Dispatch.done_at.is_null()))
_when = Dispatch.done_at.db_value


def previous_agent(ticket_id: int, agent_id: int) -> int | None:
    """The agent whose work a QC verdict judges: the last other agent who acted on the ticket."""
    for event in (TicketEvent.select(TicketEvent.actor).where(
            (TicketEvent.ticket == ticket_id) & TicketEvent.actor.startswith("agent:"))
            .order_by(TicketEvent.version.desc()).limit(20)):
        other = int(event.actor.split(":", 1)[1])
        if other != agent_id:
            return other
    return None
