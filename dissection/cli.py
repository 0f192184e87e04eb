"""`python -m dissection …`: one parser; each area of the engine registers its own subcommands."""
from __future__ import annotations

import argparse
import sys

from dissection.errors import DissectionError


def build_parser() -> argparse.ArgumentParser:
    from dissection import cam_cli, engine_cli

    parser = argparse.ArgumentParser(prog="python -m dissection", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    engine_cli.register(sub)
    cam_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DissectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
