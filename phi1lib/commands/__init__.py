"""CLI subcommands. Each module: `add_parser(subparsers)` registering a parser with `func=run`.

Modules are discovered automatically by phi1lib.cli; import heavy libraries inside `run`.
"""
