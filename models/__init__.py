"""What is stored, and the ticket state machine.

`states` names the states, `machine` is the one transition table, `workflow`
applies a table row to a ticket inside one transaction (the only code that
writes ``Ticket.state``), and the table modules (`ticket`, `audit`, `timer`,
`outbox`, ...) are the peewee models.
"""
from models.base import database, utcnow
from models.schema import ALL_MODELS, init_schema

__all__ = ["ALL_MODELS", "database", "init_schema", "utcnow"]
