"""`python -m herdsman` is the `herd` command."""

from herdsman.cli import main

main()
