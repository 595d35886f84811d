"""The `transgan` command line (installed as the package `transgan.cli`)."""
