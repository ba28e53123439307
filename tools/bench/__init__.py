"""``disputes bench``: the five benchmarks of issue 8, each against a baseline measured in the same run.

| name | measures | baseline | target |
|---|---|---|---|
| ``pipeline`` | state changes/s of whole lifecycles, workers as processes (Redis + PostgreSQL) | persisted-hop dramatiq chain (one UPDATE + INSERT transaction a hop), same processes; the no-op chain for information | ≥ 0.5 × |
| ``scheduler`` | due timers/s turned into messages with 1,000,000 pending; lag p99; RSS | raw SELECT + enqueue | ≥ 0.9 × and ≥ 5,000/s, lag p99 ≤ 1 s, flat |
| ``intake`` | complaints/s from RabbitMQ into PostgreSQL, and duplicates/s | no-op kombu consumer | ≥ 0.25 × no-op and ≥ 2,000/s; duplicates ≥ 0.4 × |
| ``api`` | p99 of claim + action for 100 concurrent agents over HTTP | no-op WSGI app, same server | p99 ≤ 3 × no-op; saturated ≥ 0.25 × no-op |
| ``scale`` | cost of one state change with 1,000,000 vs 10,000 tickets stored | the same at 10,000 | ≤ 1.2 |

Every figure is the median of several runs; ``--quick`` shrinks the sizes (a CI smoke check, targets
not asserted). Each benchmark uses its own PostgreSQL database and Redis db, on loopback servers.
`tools.bench.suite` runs them (``run_benchmarks``); this package imports nothing itself, so that the
worker processes loading `tools.bench.chain_entry` load only the chains.
"""
