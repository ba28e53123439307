"""``python -m disputes.cli``: the same as the ``disputes`` command."""
from disputes.cli import main

main()
