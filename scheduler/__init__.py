"""Timers and reconciliation: what makes waiting tickets move without anyone pushing.

`timers` fires due timers into their queue, `relay` publishes the outbox to
``op.events`` and sends dispatches a crash left unsent, `reconciler` re-drives
dispatches sent but never done, `sla` warns of and records broken promises,
`claim_leases` takes back tickets an agent holds past ``routing.lease``,
`singleton` lets several schedulers share the jobs only one may run at a
time, and `loop` runs them all (``disputes scheduler``).
"""
