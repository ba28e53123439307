"""The ``notify`` queue: notifications to buyers and merchants, delivered apart from the tickets.

Run: ``dramatiq workers.notify --queues notify`` (or ``workers.notify:broker``). This module is
the queue's entry point and nothing imports it: importing it builds the process's app from the
environment and declares the queue's actor (`workers.entry.serve`); the worker is
`workers.delivery.NotifyWorker`.
"""
from __future__ import annotations

from workers.entry import serve

broker = serve("notify")
