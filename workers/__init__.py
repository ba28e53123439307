"""One module per queue: `stage1`..`stage4`, `negotiation` and `notify` (dramatiq), `intake` (kombu consumer).

Stage modules never import each other: a stage hands a ticket on by writing a
dispatch row for the next queue (see `models.workflow`).
"""
from __future__ import annotations

import dramatiq

from disputes.wiring import App


def declare_all(app: App) -> dict[str, dramatiq.Actor]:
    """Declare every queue's actor on `app.broker` (embedded mode and tests)."""
    from workers.base import StageWorker
    from workers.negotiation import Negotiation
    from workers.notify import Notify
    from workers.stage1 import Stage1
    from workers.stage2 import Stage2
    from workers.stage3 import Stage3
    from workers.stage4 import Stage4
    stages: tuple[type[StageWorker], ...] = (Negotiation, Stage1, Stage2, Stage3, Stage4, Notify)
    return {stage.queue: stage.declare(app) for stage in stages}
