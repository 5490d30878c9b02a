"""Helpers of the fuzz tests: call an entry point, classify the outcome.

An outcome is ``"handled"`` (the call returned), ``"refused"`` (a ``ValueError``
or ``TypeError`` — the named bcosnet errors subclass them — raised by bcosnet's
own code with a message of some substance).  Anything else fails the test: an
exception of another type, or a ``ValueError``/``TypeError`` raised deep inside
torch (the innermost frame of its traceback is not in bcosnet).
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings

#: every fuzz run: derandomised (the same calls on every machine), no example database
SETTINGS: dict[str, Any] = dict(deadline=None, derandomize=True, database=None,
                                suppress_health_check=[HealthCheck.too_slow])


class Tally:
    """Outcomes of the calls of one entry point (``counts``: handled / refused (type))."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def call(self, fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except (ValueError, TypeError) as e:
            frames = traceback.extract_tb(e.__traceback__)
            origin = frames[-1].filename if frames else ""
            assert "bcosnet" in origin, (
                f"{type(e).__name__} raised inside {origin}, not by bcosnet: {e}")
            msg = str(e)
            assert len(msg) > 20, f"message too short to say what to change: {msg!r}"
            kind = f"refused ({type(e).__name__})"
            self.counts[kind] += 1
            self.examples.setdefault(kind, msg)
            return None
        self.counts["handled"] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def refused(self) -> int:
        return self.total - self.counts["handled"]

    def record(self, reliability: Any) -> None:
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        sample = next(iter(v for k, v in self.examples.items()), "")
        reliability.message("fuzz", f"{self.entry}: {self.total} generated calls", parts,
                            f"e.g. {sample}" if sample else "")


def fuzz(entry: str, examples: int, case: Callable[..., None], reliability: Any,
         **strategies: Any) -> Tally:
    """Run ``case(tally, **drawn)`` on ``examples`` hypothesis draws of ``strategies``
    with a tally of its own and torch's global RNG seeded (nothing shared with
    other tests: the same calls in any order, any subset), record the tally and
    return it."""
    tally = Tally(entry)

    @settings(max_examples=examples, **SETTINGS)
    @given(**strategies)
    def run(**drawn: Any) -> None:
        case(tally, **drawn)

    with torch.random.fork_rng():  # the same global RNG stream whatever ran before
        torch.manual_seed(0)
        run()
    tally.record(reliability)
    return tally
