"""Tools around the product: the demo, the simulation it drives, the report, `top` and the benchmarks.

They import the product and nothing in the product imports them; their
commands join the ``disputes`` CLI through the ``disputes.commands`` entry
points (`tools.commands`).
"""
