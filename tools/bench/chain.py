"""The baselines of the pipeline benchmark: chains of dramatiq actors, with and without a database.

One chain has as many hops as one ticket's lifecycle has state changes, and visits the queues in
the order the pipeline's dispatches do (negotiation, stage1 ... stage4). Its actors are loaded
into the very same ``dramatiq workers.stageN tools.bench.chain_entry --queues stageN`` processes as
the stage actors, so the chains and the pipeline are measured with the same broker, processes and
threads. The last hop of a chain counts it done in Redis (one ``INCR``).

Two chains share that route:

* the no-op chain (`declare_chain`): a hop only sends the next one, the raw ceiling of dramatiq;
* the persisted-hop chain (`declare_persisted_chain`), the naive persisted worker: a hop runs one
  PostgreSQL transaction, a guarded ``UPDATE`` of its chain's row (the version it expects, checked by
  the row count) and an ``INSERT`` of an audit row, in plain SQL on the worker thread's psycopg2
  connection (`hop_transaction`), commits, then sends the next hop. The bench creates the tables
  (`HOP_SCHEMA`) and one row per chain before it sends the chains.
"""
from __future__ import annotations

from collections.abc import Callable

import dramatiq

from models.base import database

#: The queue of each hop: one per state change of a lifecycle, in the pipeline's order.
ROUTE: tuple[str, ...] = ("negotiation", "negotiation", "stage1", "stage1", "stage1", "stage2", "stage2",
                          "stage3", "stage3", "stage4", "stage4")

#: The persisted-hop chain's tables: a chain's row, and one audit row per hop ((ticket, version) unique
#: and a foreign key to the row, as the pipeline's ``ticket_event``).
HOP_SCHEMA: tuple[str, ...] = (
    ("CREATE TABLE IF NOT EXISTS bench_hop_ticket (id bigserial PRIMARY KEY, run varchar(32) NOT NULL, "
     "state varchar(32) NOT NULL, version integer NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS bench_hop_event (id bigserial PRIMARY KEY, "
     "ticket_id bigint NOT NULL REFERENCES bench_hop_ticket (id) ON DELETE CASCADE, version integer NOT NULL, "
     "state varchar(32) NOT NULL, at timestamptz NOT NULL, UNIQUE (ticket_id, version))"),
)
HOP_UPDATE = "UPDATE bench_hop_ticket SET state = %s, version = version + 1 WHERE id = %s AND version = %s"
HOP_INSERT = "INSERT INTO bench_hop_event (ticket_id, version, state, at) VALUES (%s, %s, %s, now())"


def counter_key(run: str) -> str:
    return f"bench:chain:{run}"


def hop_counter_key(run: str) -> str:
    return f"bench:hop:{run}"


def hop_failed_key(run: str) -> str:
    """Counts the persisted hops of `run` that found their row at another version (none should)."""
    return f"bench:hop-failed:{run}"


def actor_name(queue: str) -> str:
    return f"bench_chain_{queue}"


def hop_actor_name(queue: str) -> str:
    return f"bench_hop_{queue}"


def hop_state(position: int) -> str:
    """The state a chain's row is in after hop `position` (0-based)."""
    return f"{ROUTE[position]}-{position + 1}"


def declare_chain(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor]:
    """The no-op chain's actors on `broker` (once per broker), one per queue of `ROUTE`."""
    actors: dict[str, dramatiq.Actor] = {}

    def hop(run: str, chain: int, position: int) -> None:
        if position + 1 < len(ROUTE):
            actors[ROUTE[position + 1]].send(run, chain, position + 1)
        else:
            broker.client.incr(counter_key(run))  # type: ignore[attr-defined]

    return _declare(broker, actors, actor_name, hop)


def declare_persisted_chain(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor]:
    """The persisted-hop chain's actors on `broker` (once per broker), one per queue of `ROUTE`.

    A message is ``(run, ticket_id, position)``: hop `position` moves row `ticket_id` from version
    `position` to `position + 1` and writes its audit row, in one transaction (`hop_transaction`)."""
    actors: dict[str, dramatiq.Actor] = {}

    def hop(run: str, ticket_id: int, position: int) -> None:
        if not hop_transaction(database.connection(), ticket_id, position):
            broker.client.incr(hop_failed_key(run))  # type: ignore[attr-defined]
            raise RuntimeError(f"bench hop {position} of row {ticket_id}: not at version {position}")
        if position + 1 < len(ROUTE):
            actors[ROUTE[position + 1]].send(run, ticket_id, position + 1)
        else:
            broker.client.incr(hop_counter_key(run))  # type: ignore[attr-defined]

    return _declare(broker, actors, hop_actor_name, hop)


def hop_transaction(conn, ticket_id: int, position: int) -> bool:
    """One hop's transaction on the psycopg2 connection `conn`: the guarded ``UPDATE``, then the
    ``INSERT`` of its audit row, committed; False (rolled back) when the row is not at `position`.

    In a worker, `conn` is the worker thread's own connection: the one its ``DatabaseConnections``
    middleware checks out of the process's pool for every message, the pipeline's and the chains'
    alike (peewee keeps it per thread, in autocommit mode, hence the explicit ``BEGIN`` … ``COMMIT``).
    A second connection per worker thread held beside it took the server to its ``max_connections``
    (100) in a quick run: 5 stage processes × 8 threads × 2, the notify worker, the bench, the scheduler."""
    state = hop_state(position)
    explicit = conn.autocommit
    with conn.cursor() as cur:
        if explicit:
            cur.execute("BEGIN")
        try:
            cur.execute(HOP_UPDATE, (state, ticket_id, position))
            moved = cur.rowcount == 1
            if moved:
                cur.execute(HOP_INSERT, (ticket_id, position + 1, state))
        except BaseException:
            if explicit:
                cur.execute("ROLLBACK")
            else:
                conn.rollback()
            raise
        if explicit:
            cur.execute("COMMIT" if moved else "ROLLBACK")
        elif moved:
            conn.commit()
        else:
            conn.rollback()
    return moved


def _declare(broker: dramatiq.Broker, actors: dict[str, dramatiq.Actor], name_of: Callable[[str], str],
             hop: Callable[..., None]) -> dict[str, dramatiq.Actor]:
    """One actor running `hop` per queue of `ROUTE`, named by `name_of`, into `actors`; an actor
    already declared on `broker` under that name is reused."""
    for queue in dict.fromkeys(ROUTE):
        name = name_of(queue)
        if name in broker.actors:
            actors[queue] = broker.actors[name]
            continue
        actors[queue] = dramatiq.Actor(_named(hop, name), broker=broker, actor_name=name, queue_name=queue,
                                       priority=0, options={"max_retries": 0})
    return actors


def _named(hop: Callable[..., None], name: str) -> Callable[..., None]:
    def fn(*args: object) -> None:
        hop(*args)

    fn.__name__ = fn.__qualname__ = name
    return fn
