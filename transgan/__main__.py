"""`python -m transgan` runs the `transgan` command line."""

from transgan.cli.app import main

main()
