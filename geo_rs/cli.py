"""The ``geo-rs`` command line.

Sub-commands are plugins registered under the ``geo_rs.commands`` entry-point group (see setup.py):
each names a ``register(subparsers)`` function that adds its parser and sets ``func``. This keeps the
dependency direction one way: ``nerf`` and ``keypoint`` add commands, ``geo_rs`` never imports them.

Errors a user can cause raise :class:`UserError`; ``main`` prints them as one line and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geo-rs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for ep in sorted(entry_points(group="geo_rs.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # a half-installed optional part must not break the others
            print(f"geo-rs: command '{ep.name}' unavailable: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"geo-rs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geo-rs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error worth a traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
