"""Shared plumbing of the experiments room: the command line every study has, and
atomic result files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bcosnet._utils.io import atomic_write, atomic_write_json, atomic_write_text

__all__ = ["Stopwatch", "atomic_write", "atomic_write_json", "atomic_write_text", "prepare",
           "read_json", "study_parser"]


def study_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every study takes; a study adds its own."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    p.add_argument("--quick", action="store_true",
                   help="a small seeded run of every stage (what the tests run)")
    p.add_argument("--out", default=None,
                   help=f"output folder (default outputs/experiments/{name}, "
                        f"outputs/experiments/{name}-quick with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: leave as is)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    return p


def prepare(name: str, args: argparse.Namespace) -> Path:
    """Apply the common arguments (threads, seed) and return the output folder."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out or f"outputs/experiments/{name}{'-quick' if args.quick else ''}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class Stopwatch:
    """Wall time of a study's stages: ``with sw("train"): ...``; ``sw.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str) -> _Stage:
        return _Stage(self, stage)


class _Stage:
    def __init__(self, sw: Stopwatch, stage: str) -> None:
        self.sw, self.stage = sw, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sw.seconds[self.stage] = (self.sw.seconds.get(self.stage, 0.0)
                                       + time.perf_counter() - self.t0)
