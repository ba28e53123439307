"""Stage 3 — judgment (判责).

Liability (merchant, customer, both, neither) and the remedy; or "cannot
judge", which sends the ticket back to stage 2. Appeals return here, to an
agent other than the one who judged.

Run: ``dramatiq workers.stage3 --queues stage3`` (or ``workers.stage3:broker``). This module is the
queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.base.StageWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("stage3")
