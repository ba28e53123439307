"""One module per queue: `stage1`..`stage4`, `negotiation` and `notify` (dramatiq), `intake` (kombu consumer).

The queue modules are the ``dramatiq`` command's entry points (`workers.entry`);
the workers themselves are `workers.base.StageWorker` (every stage queue) and
`workers.delivery.NotifyWorker`. Stage queues never call each other: a stage
hands a ticket on by writing a dispatch row for the next queue (see
`models.workflow`), sent after commit (`models.sending`).
"""
from __future__ import annotations

import dramatiq

from disputes.settings import QUEUES
from disputes.wiring import App
from workers.base import StageWorker
from workers.delivery import NotifyWorker

#: The dramatiq queues and their workers (the intake is a kombu consumer, `workers.intake`).
WORKERS: dict[str, type[StageWorker]] = {queue: NotifyWorker if queue == "notify" else StageWorker for queue in QUEUES}


def declare(app: App, queue: str) -> dramatiq.Actor:
    """Declare `queue`'s actor on `app.broker` (once per broker)."""
    return WORKERS[queue](app, queue).declare()


def declare_all(app: App) -> dict[str, dramatiq.Actor]:
    """Declare every queue's actor on `app.broker` (embedded mode and tests)."""
    return {queue: declare(app, queue) for queue in WORKERS}
