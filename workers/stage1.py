"""Stage 1 — takeover and dispute status (选择纠纷现状).

Agents of the stage-1 pool take tickets over from ``awaiting_takeover``
(through ``POST /me/claim``), record the dispute status and category, and send
the ticket to evidence or straight to judgment.

Run: ``dramatiq workers.stage1 --queues stage1`` (or ``workers.stage1:broker``). This module is the
queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.base.StageWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("stage1")
