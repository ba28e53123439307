"""Every log line a worker writes while it handles a message names the ticket, the queue and the message."""
from __future__ import annotations

import logging

import dramatiq

from disputes.logs import adopt_handlers, bind, clear
from models.outbox import Dispatch


class LogContext(dramatiq.Middleware):
    """Binds ``ticket_id``, ``stage`` (the queue) and ``message_id`` while a worker thread handles
    a message. First in the middleware list, so it binds before the others and unbinds after
    them: retry and failure lines of dramatiq itself carry the context too.

    The ticket id comes from what the message carries (its ``ticket_id``), else from the dispatch
    row the message names (one primary-key read, for messages of an older version)."""

    def __init__(self, *, adopt_handlers: bool = False) -> None:
        #: True in a process the ``dramatiq`` CLI started (`workers.entry`): its log lines are then
        #: formatted our way. Elsewhere (``disputes run``, tests) logging is already set up.
        self.adopt_handlers = adopt_handlers

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        if self.adopt_handlers:
            adopt_handlers(logging.getLogger())

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        clear()
        bind(ticket_id=_message_ticket(message), stage=message.queue_name, message_id=message.message_id)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        clear()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        clear()


def _message_ticket(message: dramatiq.Message) -> int | None:
    ticket_id = message.options.get("ticket_id") or message.kwargs.get("ticket_id")
    if ticket_id is not None or "kind" in message.kwargs or "notifications" in message.kwargs:
        return ticket_id
    if not message.args or not isinstance(message.args[0], int):
        return None
    try:
        return Dispatch.select(Dispatch.ticket_id).where(Dispatch.id == message.args[0]).scalar()
    except Exception:  # a log context must never stop a message
        return None
