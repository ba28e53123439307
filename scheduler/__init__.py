"""Timers and reconciliation: what makes waiting tickets move without anyone pushing.

`timers` fires due timers into their queue, `relay` publishes the outbox to
``op.events`` and sends dispatches a crash left unsent, `reconciler` re-drives
dispatches sent but never done, `lease` lets several schedulers share the
singleton jobs, and `loop` runs them all (``disputes scheduler``).
"""
