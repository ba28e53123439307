"""The world around the embedded system, simulated for ``disputes demo``.

Everything here talks to the system only through its contract, as the real
world does: upstream systems and the parties publish SPEC §4 messages to
``op.intake`` (`world.Mailbox`), they learn what happened from ``op.events``
(`world.EventTap` feeding `parties.Parties`), and agents and a supervisor
work through the HTTP desk with their bearer tokens (`agents.AgentPool`).
`figures` reads back what the system recorded, for the demo's summary.

- `world`     — seeded randomness, the complaints, merchant balances and answer shares, the wire
- `parties`   — merchants, buyers, logistics and the payments system
- `agents`    — the four stage pools and the supervisor at the desk; `decisions`, what they click
- `run`       — one run: the system's parts and the world, started, watched and stopped together
- `figures`   — per-option outcomes, money by kind, paths taken; `summary`, their tables
"""
from tools.simulation.agents import POOLS, AgentPool
from tools.simulation.decisions import decide
from tools.simulation.parties import Parties
from tools.simulation.world import (ANSWERS, DEFAULT_SHARES, OPTIONS, SILENT, EventTap, Mailbox, complaints,
                                       merchant_balances, merchants_for, normalize_shares, parse_shares,
                                       plan_answers, rng)

__all__ = ["ANSWERS", "DEFAULT_SHARES", "OPTIONS", "POOLS", "SILENT", "AgentPool", "EventTap", "Mailbox", "Parties",
           "complaints", "decide", "merchant_balances", "merchants_for", "normalize_shares", "parse_shares",
           "plan_answers", "rng"]
