"""Stage 2 — evidence review (二次补充凭证).

Evidence rounds loop here, so this is the widest pool: tickets arrive when
the requested parties answered or the evidence deadline woke them, and leave
for another round or for judgment.

Run: ``dramatiq workers.stage2 --queues stage2``.
"""
from __future__ import annotations

from workers.base import StageWorker, declare_for_dramatiq_cli


class Stage2(StageWorker):
    queue = "stage2"


declare_for_dramatiq_cli(Stage2)
