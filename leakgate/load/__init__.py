"""Load drivers: the bundled generator (builtin) and, later, wrk."""
