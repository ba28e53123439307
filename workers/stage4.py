"""Stage 4 — verify compensation (核实赔付).

Merchant-side liability: verify the refund (or the offline-transfer voucher).
Customer-side liability: decide the complaint fee. Then close. Payment
deadlines (``awaiting_payment``) wake here.

Run: ``dramatiq workers.stage4 --queues stage4``.
"""
from __future__ import annotations

from workers.base import StageWorker, declare_for_dramatiq_cli


class Stage4(StageWorker):
    queue = "stage4"


declare_for_dramatiq_cli(Stage4)
