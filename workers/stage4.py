"""Stage 4 — verify compensation (核实赔付).

Merchant-side liability: verify the refund (or the offline-transfer voucher).
Customer-side liability: decide the complaint fee. Then close. Payment
deadlines (``awaiting_payment``) wake here.

Run: ``dramatiq workers.stage4 --queues stage4`` (or ``workers.stage4:broker``). This module is the
queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.base.StageWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("stage4")
