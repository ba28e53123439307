"""The read side: what the desk, the API, `/metrics` and the CLI show, built from the tables that own it.

Nothing here writes. `ticket` is the ticket as agents see it (``GET
/tickets/{id}``), `sla` its service-level promises, `floor` the backlog in a
few aggregate queries, `tallies` the counters folded from append-only tables.
"""
