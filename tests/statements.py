"""Counting the SQL a piece of code sends: ``with Statements() as seen: ...; seen.sql``."""
from __future__ import annotations

import logging

from models.prepared import sql_of


class Statements(logging.Handler):
    """The SQL statements peewee runs while installed (its logger at DEBUG, kept out of the test's
    log capture). An ``EXECUTE`` of a statement prepared on PostgreSQL is recorded as the SQL it
    runs; the ``PREPARE`` itself (once per connection and statement) only in `prepares`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sql: list[str] = []
        self.prepares: list[str] = []

    @property
    def count(self) -> int:
        return len(self.sql)

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple):  # peewee logs (sql, params); other records are the pool's
            sql = str(record.msg[0])
            if sql.startswith("PREPARE "):
                self.prepares.append(sql)
            else:
                self.sql.append(sql_of(sql))

    def reading(self, table: str) -> list[str]:
        """The statements reading `table`."""
        return [s for s in self.sql if f'FROM "{table}"' in s]

    def take(self) -> list[str]:
        """The statements seen so far, forgetting them."""
        seen, self.sql = self.sql, []
        return seen

    def __enter__(self) -> "Statements":
        logger = logging.getLogger("peewee")
        self._level, self._propagate = logger.level, logger.propagate
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("peewee")
        logger.removeHandler(self)
        logger.setLevel(self._level)
        logger.propagate = self._propagate
