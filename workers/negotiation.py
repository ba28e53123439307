"""The negotiation phase's deadlines: merchant response, customer confirmation, interception.

The parties' own messages arrive through the intake; this queue receives
only the wake-ups of the hidden negotiation states.

Run: ``dramatiq workers.negotiation --queues negotiation``.
"""
from __future__ import annotations

from workers.base import StageWorker, declare_for_dramatiq_cli


class Negotiation(StageWorker):
    queue = "negotiation"


declare_for_dramatiq_cli(Negotiation)
