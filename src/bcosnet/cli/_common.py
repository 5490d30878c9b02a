"""Helpers shared by sub-commands (a private module: no sub-command of its own)."""

from __future__ import annotations

import argparse

__all__ = ["parse_grid_counts"]


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
