"""The ``bcosnet`` command.  Thin: parse arguments, call the API.

Every module in this package that defines ``register(subparsers)`` adds one
sub-command; ``register`` sets ``func`` (taking the parsed args, returning an
exit code) as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__
from .._utils import malloc
from ._common import api_flags, cli_message

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bcosnet",
        description="B-cos networks: train, explain and evaluate self-explaining classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"bcosnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    malloc.tune_malloc()  # freed tensor memory stays in the process (no page faults per step)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, TypeError) as e:
        # library errors name API arguments; say them as this command's flags
        print(f"bcosnet {args.command}: error: {cli_message(str(e), api_flags(args))}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
