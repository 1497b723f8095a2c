"""The command line: a thin layer over the library.

Each sub-command lives in its own module with ``add_parser(subparsers)``,
which registers the parser and sets ``func`` to a function taking the parsed
arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import NetDissectError
from . import compare as _compare
from . import data as _data
from . import describe as _describe
from . import dissect as _dissect
from . import experiment as _experiment
from . import explain as _explain
from . import gan as _gan
from . import lwta as _lwta
from . import report as _report

#: modules contributing sub-commands, in help order
COMMAND_MODULES = [_dissect, _describe, _report, _explain, _compare, _experiment, _gan, _lwta, _data]


def build_parser() -> argparse.ArgumentParser:
    """The ``netdissect`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="netdissect",
        description="Network Dissection: what do the units of a vision network detect?",
    )
    parser.add_argument("--version", action="version", version=f"netdissect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors of netdissect (bad input) print one line and return 2; an interrupt returns 130.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)  # accepted before or after the sub-command
    args = parser.parse_args([a for a in argv if a not in ("-v", "--verbose")])
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NetDissectError as exc:
        print(f"netdissect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print(f"netdissect {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
