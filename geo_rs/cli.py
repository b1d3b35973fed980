"""The ``geo-rs`` command line.

The core's own sub-commands live in ``geo_rs.commands`` (listed in ``CORE_COMMANDS``); the
applications' are plugins registered under the ``geo_rs.commands`` entry-point group (see setup.py):
each names a ``register(subparsers)`` function that adds its parser and sets ``func``. This keeps the
dependency direction one way: ``nerf`` and ``keypoint`` add commands, ``geo_rs`` never imports them.
``register`` functions only build parsers: heavy modules (torch, open3d, auto_LiRPA) are imported
inside the command functions, so ``geo-rs --help`` starts in a fraction of a second.

Errors a user can cause raise :class:`UserError`; ``main`` prints them as one line and exits 2.
SIGINT and SIGTERM end a command with exit status 130 / 143 after its cleanup ran (see
:mod:`geo_rs.interrupt`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

from .errors import UserError
from .interrupt import Interrupted, exit_code, install_sigterm_handler

CORE_COMMANDS = ("sdf", "smooth")  # modules of geo_rs.commands, each with register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geo-rs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in CORE_COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    for ep in sorted(entry_points(group="geo_rs.commands"), key=lambda e: e.name):
        if ep.name in CORE_COMMANDS:  # an older install still lists it as a plugin
            continue
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
    return run_command(f"geo-rs {args.command}", args.func, args)


def run_command(prog: str, func, args) -> int:
    """``func(args)`` with the CLI's conventions: a UserError is one line and exit 2, SIGINT/SIGTERM
    exit 130/143 after cleanup (also for scripts built on geo-rs, e.g. scripts/smooth_mnist_demo.py)."""
    install_sigterm_handler()
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exit_code(exc.signum)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error worth a traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
