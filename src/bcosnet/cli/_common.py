"""Helpers shared by sub-commands (a private module: no sub-command of its own)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

__all__ = ["COMMON_FLAGS", "api_flags", "cli_message", "parse_grid_counts"]

#: API argument → CLI flag, for every command.  Library errors name the API's
#: arguments (``batch_size``, ``confidence_threshold=None``); before a command prints
#: one, :func:`cli_message` rewrites them into the command's flags.  A sub-command
#: adds or overrides entries with ``parser.set_defaults(api_flags={...})``.
COMMON_FLAGS: dict[str, str] = {
    "batch_size": "--batch-size",
    "num_workers": "--workers",
    "results_dir": "--out",
    "use_ema=False": "--no-ema",
    "progress=False": "--no-progress",
}


def api_flags(args: argparse.Namespace) -> dict[str, str]:
    """The API-argument → flag mapping of the parsed command (common + its own)."""
    return {**COMMON_FLAGS, **(getattr(args, "api_flags", None) or {})}


def cli_message(message: str, flags: Mapping[str, str]) -> str:
    """A library error message in the CLI's words.

    ``flags`` maps API arguments to flags.  A key ``"name=value"`` replaces that
    exact text (``"confidence_threshold=None"`` → ``"--no-threshold"``); a key
    ``"name"`` replaces ``name=VALUE`` by ``"--flag VALUE"`` (``n=2`` → ``--grid-n 2``)
    and, when the name has an underscore or a dot (so it is no English word), the bare
    name by the flag (``batch_size must be`` → ``--batch-size must be``).  Names
    are matched whole: not inside longer identifiers, not after a dot.
    """
    def pattern(text: str) -> str:
        return rf"(?<![\w.\-]){re.escape(text)}"

    for key in sorted((k for k in flags if "=" in k), key=len, reverse=True):
        message = re.sub(pattern(key) + r"(?![\w.])", lambda _m, f=flags[key]: f, message)
    for key in sorted((k for k in flags if "=" not in k), key=len, reverse=True):
        flag = flags[key]
        message = re.sub(pattern(key) + r"=([^\s,;:)]+)",
                         lambda m, f=flag: f"{f} {m.group(1)}", message)
        if "_" in key or "." in key:
            message = re.sub(pattern(key) + r"(?![\w=])", lambda _m, f=flag: f, message)
    return message


def parse_grid_counts(text: str) -> dict[str, int]:
    """``"occlusion=100,rise=100"`` -> ``{"occlusion": 100, "rise": 100}``."""
    out: dict[str, int] = {}
    if text.strip().lower() == "none":
        return out
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"grid counts look like 'occlusion=100,rise=100', got {part!r}")
        out[name.strip()] = int(value)
    return out
