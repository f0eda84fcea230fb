"""`python -m confidence <command>`: `demo`; `resolve`, `inspect`, `fetch`, `precompile`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from confidence._cli import add_commands
from confidence._version import __version__


def _demo(args: argparse.Namespace) -> int:
    # Imported here: each command pays only for what it uses.
    from confidence._demo import run_demo

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m confidence",
        description="Confidence OpenFeature provider (local WebAssembly resolver).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run the provider end to end against a local emulator (no account needed)",
        description="Start the Confidence emulator with a bundled sample state, resolve "
        "flags through OpenFeature's sync and async clients, shut down and show the "
        "exposure logs the emulator received.",
    )
    demo.set_defaults(handler=_demo)
    add_commands(commands)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
