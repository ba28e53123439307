"""Stage 3 — judgment (判责).

Liability (merchant, customer, both, neither) and the remedy; or "cannot
judge", which sends the ticket back to stage 2. Appeals return here, to an
agent other than the one who judged.

Run: ``dramatiq workers.stage3 --queues stage3``.
"""
from __future__ import annotations

from workers.base import StageWorker, declare_for_dramatiq_cli


class Stage3(StageWorker):
    queue = "stage3"


declare_for_dramatiq_cli(Stage3)
