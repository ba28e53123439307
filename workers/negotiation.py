"""The negotiation phase's deadlines: merchant response, customer confirmation, interception.

The parties' own messages arrive through the intake; this queue receives
only the wake-ups of the hidden negotiation states.

Run: ``dramatiq workers.negotiation --queues negotiation`` (or ``workers.negotiation:broker``). This module is the
queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.base.StageWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("negotiation")
