"""Stage 1 — takeover and dispute status (选择纠纷现状).

Agents of the stage-1 pool take tickets over from ``awaiting_takeover``
(through ``POST /me/claim``), record the dispute status and category, and send
the ticket to evidence or straight to judgment.

Run: ``dramatiq workers.stage1 --queues stage1``.
"""
from __future__ import annotations

from workers.base import StageWorker, declare_for_dramatiq_cli


class Stage1(StageWorker):
    queue = "stage1"


declare_for_dramatiq_cli(Stage1)
