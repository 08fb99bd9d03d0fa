"""`python -m toolkit.cli ...`: the same as the `toolkit` console script (used inside containers)."""

from toolkit.cli.app import main

main()
