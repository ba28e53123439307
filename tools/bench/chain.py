"""The raw ceiling of the pipeline benchmark: a chain of no-op dramatiq actors.

One chain has as many hops as one ticket's lifecycle has state changes, and visits the queues in
the order the pipeline's dispatches do (negotiation, stage1 ... stage4). Its actors are loaded
into the very same ``dramatiq workers.stageN tools.bench.chain_entry --queues stageN`` processes as
the stage actors, so the two are measured with the same broker, processes and threads. The last
hop of a chain counts it done in Redis (one ``INCR``).
"""
from __future__ import annotations

import dramatiq

#: The queue of each hop: one per state change of a lifecycle, in the pipeline's order.
ROUTE: tuple[str, ...] = ("negotiation", "negotiation", "stage1", "stage1", "stage1", "stage2", "stage2",
                          "stage3", "stage3", "stage4", "stage4")


def counter_key(run: str) -> str:
    return f"bench:chain:{run}"


def actor_name(queue: str) -> str:
    return f"bench_chain_{queue}"


def declare_chain(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor]:
    """The chain's actors on `broker` (once per broker), one per queue of `ROUTE`."""
    actors: dict[str, dramatiq.Actor] = {}
    for queue in dict.fromkeys(ROUTE):
        name = actor_name(queue)
        if name in broker.actors:
            actors[queue] = broker.actors[name]
            continue

        def hop(run: str, chain: int, position: int) -> None:
            if position + 1 < len(ROUTE):
                actors[ROUTE[position + 1]].send(run, chain, position + 1)
            else:
                broker.client.incr(counter_key(run))  # type: ignore[attr-defined]

        hop.__name__ = name
        actors[queue] = dramatiq.Actor(hop, broker=broker, actor_name=name, queue_name=queue, priority=0,
                                       options={"max_retries": 0})
    return actors
