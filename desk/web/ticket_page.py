"""What the ticket page shows, gathered in one place from the API's own views.

The page reads the ticket exactly as ``GET /tickets/{id}`` returns it
(`models.views.ticket.ticket_json`: the caller's ``allowed_actions`` included),
the trail as ``GET /tickets/{id}/events`` does, and the stage's buttons as
``GET /options/{stage}`` describes them — so the desk can never offer what the
API would refuse, nor hide what it would allow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from models.views.sla import FEEDBACK_ACTIONS
from models.views.ticket import ticket_events, ticket_json
from models.agent import Agent
from models.dispatches import AgentDecision
from models.errors import BadPayload
from models.outbox import Dispatch
from models.sla import open_promises
from models.states import STATES, State
from models.ticket import Ticket

if TYPE_CHECKING:
    from policy import Policy
    from disputes.wiring import App

#: Stages whose decisions carry a QC verdict on the previous stage's work.
QC_STAGES = ("stage2", "stage3", "stage4")


@dataclass
class Promise:
    """One SLA promise as the page shows it: a countdown only while its clock runs."""

    #: ``accept``, ``first_feedback`` or ``resolve`` (the names of ``sla.breaches``).
    name: str
    #: When it falls due (ISO 8601, as in the ticket's ``sla``).
    due: str
    #: When its milestone happened (ISO 8601); None while it is open, or when it never happened.
    kept_at: str | None
    #: ``kept``, ``kept_late``, ``running`` (a countdown), ``paused`` (the ticket waits on a party)
    #: or ``ended`` (the ticket ended without the milestone).
    status: str

    @property
    def label(self) -> str:
        """The word key of its heading (``accept_due``: "Accept by")."""
        return f"{self.name}_due"


def promises(ticket: Ticket, document: dict, events: list[dict]) -> list[Promise]:
    """The ticket's promises with what became of each. Kept or not is the ticket's own record
    (`Ticket.sla_met`, as the SLA watcher reads it), so a kept promise never counts down again."""
    sla = document["sla"]
    still_open = set(open_promises(ticket))
    fed_back = next((e["at"] for e in events if e["action"] in FEEDBACK_ACTIONS
                     and str(e["actor"]).startswith("agent:")), None)
    kept_at = {"accept": sla.get("accepted_at"), "first_feedback": fed_back, "resolve": sla.get("resolved_at")}
    ended = STATES[State(ticket.state)].terminal
    shown = []
    for name in ("accept", "first_feedback", "resolve"):
        due = sla.get(f"{name}_due")
        if not due:
            continue
        if name not in still_open:
            status = "kept_late" if name in sla.get("breaches", []) else "kept"
        elif ended:
            status = "ended"
        elif sla.get("paused"):
            status = "paused"
        else:
            status = "running"
        shown.append(Promise(name, due, kept_at[name] if status.startswith("kept") else None, status))
    return shown


@dataclass
class TicketPage:
    ticket: dict
    events: list[dict]
    #: ``GET /options/{stage}`` of the ticket's stage (None in a hidden or final state).
    options: dict | None
    #: Agent id -> name, for everyone the page mentions.
    names: dict[int, str]
    #: The caller's decision on this ticket still being applied by the stage worker.
    applying: Dispatch | None
    #: The caller's last decision, when the worker refused it (someone moved the ticket first).
    refused: Dispatch | None
    #: Why the buttons are disabled, as a word key of `desk.web.i18n.WORDS` (None: they are not).
    blocked: str | None
    #: The refusal of the last submit: HTTP status, code, message, field messages.
    error: dict | None = None
    #: The posted form, to keep the agent's choices when a submit is refused.
    posted: dict[str, list[str]] = field(default_factory=dict)
    #: The SLA promises and what became of each (`promises`).
    promises: list[Promise] = field(default_factory=list)

    @property
    def stage(self) -> str | None:
        return None if self.options is None else str(self.options["stage"])

    @property
    def takes_qc(self) -> bool:
        return self.stage in QC_STAGES


def agent_names(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {a.id: a.name for a in Agent.select(Agent.id, Agent.name).where(Agent.id.in_(sorted(ids)))}


def _mentioned_agents(ticket: dict, events: list[dict]) -> set[int]:
    ids = {i for i in (ticket.get("assignee"), ticket.get("judged_by")) if isinstance(i, int)}
    pending = (ticket.get("payment") or {}).get("pending_approval") or {}
    if isinstance(pending.get("requested_by"), int):
        ids.add(pending["requested_by"])
    for event in events:
        actor = str(event.get("actor") or "")
        if actor.startswith("agent:") and actor[6:].isdigit():
            ids.add(int(actor[6:]))
        about = (event.get("qc") or {}).get("about")
        if isinstance(about, int):
            ids.add(about)
    return ids


def own_dispatches(ticket_id: int, agent: Agent) -> tuple[Dispatch | None, Dispatch | None]:
    """(the caller's decision still being applied, the caller's last decision if it was refused)."""
    rows = list(Dispatch.select().where((Dispatch.ticket_id == ticket_id) & (Dispatch.kind == "act"))
                .order_by(Dispatch.id.desc()).limit(20))
    mine = [r for r in rows if _decided_by(r, agent)]
    applying = next((r for r in mine if r.done_at is None), None)
    last_done = next((r for r in mine if r.done_at is not None), None)
    refused = last_done if last_done is not None and (last_done.outcome or "") != "applied" else None
    return applying, refused


def _decided_by(row: Dispatch, agent: Agent) -> bool:
    try:
        return row.payload_as(AgentDecision).agent_id == agent.id
    except BadPayload:  # a row that cannot be read was refused by its worker; it is nobody's decision
        return False


def blocked_reason(ticket: dict, stage: str | None, agent: Agent) -> str | None:
    """Why the agent has no enabled option button here, in the desk's words."""
    if stage is None:
        return "hidden_state"
    if set(ticket["allowed_actions"]) - {"claim"}:
        return None
    if stage != agent.stage_name:
        return "not_your_stage"
    if ticket.get("assignee") is None:
        return "claim_first"
    if ticket.get("assignee") != agent.id:
        return "not_yours"
    return "conflict"


def ticket_page(ticket: Ticket, agent: Agent, app: "App", now: datetime) -> TicketPage:
    """Everything the ticket page shows to `agent`."""
    document = ticket_json(ticket, agent, app.policy, now)
    events = ticket_events(ticket.id)
    stage = STATES[State(ticket.state)].stage
    options = app.policy.options_for(stage).describe() if stage in app.policy.options else None
    applying, refused = own_dispatches(ticket.id, agent)
    return TicketPage(ticket=document, events=events, options=options,
                      names=agent_names(_mentioned_agents(document, events)), applying=applying,
                      refused=refused if applying is None else None,
                      blocked=blocked_reason(document, stage if options else None, agent),
                      promises=promises(ticket, document, events))


Label = dict[str, str]


def option_labels(policy: "Policy") -> tuple[dict[tuple[str, str], Label], dict[tuple[str, str, str], Label]]:
    """The configured labels of every (stage, action) and every (action, param, code), for the history."""
    actions: dict[tuple[str, str], Label] = {}
    choices: dict[tuple[str, str, str], Label] = {}
    for stage, options in policy.options.items():
        for option in options.describe()["actions"]:
            actions[(stage, option["action"])] = option["label"]
            for name, spec in option["params"].items():
                for choice in spec.get("choices", []):
                    choices.setdefault((option["action"], name, str(choice["code"])), choice["label"])
    return actions, choices
