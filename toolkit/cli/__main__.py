"""`python -m toolkit.cli ...`: the same as the `toolkit` console script."""

from toolkit.cli.main import main

main()
