"""The composition root and the ``disputes`` command.

Every process starts here: `wiring.build_app` turns the environment
(`settings`) into an `App` — the policy, the database, the dramatiq broker
with its `middleware` — that the workers, the scheduler and the desk receive;
`logs` formats and masks what they log, `probes` asks the database and the
broker whether they answer. The root sits under those layers; `cli` sits on
top of them all (README "Architecture").
"""
