"""Capacity planning from measured work: how many agents each stage needs, hour by hour, to keep
the service-level promises for a forecast of arrivals (``disputes plan``, SPEC §7).

- `erlang` — the queueing maths (Erlang C: servers needed for a waiting-time target).
- `forecast` — arrivals per hour: a CSV file, or the same hours of the last weeks in the database.
- `measure` — what the database says about the work: per stage, the tickets that arrive per
  complaint and how long after their complaint's admission, the agents' handling times (claim
  to decision), their capacity and presence.
- `arrivals` — each stage's tickets per hour: the forecast's complaints moved later by the
  measured delays (negotiation, earlier stages, evidence rounds and other hidden states).
- `staffing` — the plan: per stage and hour, arrivals, agents needed, expected wait and the
  share answered within the target, with the inputs it rests on (and a refusal when they are
  too thin).
- `simulate` — the check of the plan: a discrete-event simulation of the day (simpy) with the
  backlog of each hour carried into the next; `tomorrow` — the plan as the command and the
  dashboard make it.

It reads the models and the policy and nothing above them, so the desk's dashboard shows
tomorrow's plan with the same code the command prints.
"""
