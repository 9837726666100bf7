"""One module per CLI command family; each has ``add_parser(subparsers)`` (see mvpt.cli)."""
