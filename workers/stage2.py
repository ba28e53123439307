"""Stage 2 — evidence review (二次补充凭证).

Evidence rounds loop here, so this is the widest pool: tickets arrive when
the requested parties answered or the evidence deadline woke them, and leave
for another round or for judgment.

Run: ``dramatiq workers.stage2 --queues stage2`` (or ``workers.stage2:broker``). This module is the
queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.base.StageWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("stage2")
