"""Recording of the reliability cases the tests try (docs/reliability.md).

Each test that tries a bad input, an untrusted file or a fault says what it
tried and what happened through the ``reliability`` fixture (tests/conftest.py)::

    reliability.refused("checkpoints", "truncated file", ValueError, "truncated",
                        lambda: create_model("x", weights=path))
    reliability.handled("faults", "SIGKILL during a checkpoint write",
                        "the previous checkpoint loads")

``refused`` also *checks* that the call raises the given exception type with a
message matching ``match`` (so a recorded row is a passed assertion).  When
``BCOSNET_RELIABILITY_LOG`` names a folder, every case is appended as a JSON line
to a file there; ``scripts/reliability_table.py`` runs the tests that way and
renders the table.  Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ENV = "BCOSNET_RELIABILITY_LOG"

#: exceptions a caller may see: the named bcosnet errors subclass these
ALLOWED = (ValueError, TypeError, FileNotFoundError, MemoryError)


class Recorder:
    def __init__(self, test: str) -> None:
        self.test = test
        self.cases: list[dict[str, Any]] = []

    def _add(self, area: str, case: str, outcome: str, detail: str) -> None:
        detail = " ".join(str(detail).split())
        # temporary folders differ from run to run (and under pytest-xdist): shown as <tmp>
        detail = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/(?:popen-gw\d+/)?[^/ ]+|/tmp/tmp[\w-]+",
                        "<tmp>", detail)
        if len(detail) > 220:
            detail = detail[:217] + "..."
        self.cases.append({"area": area, "case": case, "outcome": outcome,
                           "detail": detail, "test": self.test})

    def handled(self, area: str, case: str, detail: str = "") -> None:
        """Record a case the code handles (the test has checked how)."""
        self._add(area, case, "handled", detail)

    def refused(self, area: str, case: str, exc: type[BaseException] | tuple,
                match: str | None, fn: Callable[[], Any]) -> BaseException:
        """Check that ``fn()`` raises ``exc`` with a message matching ``match`` and
        record the message."""
        with pytest.raises(exc) as info:
            fn()
        if match is not None:
            assert re.search(match, str(info.value), re.S), (match, str(info.value))
        self._add(area, case, f"refused: {type(info.value).__name__}", str(info.value))
        return info.value

    def message(self, area: str, case: str, outcome: str, detail: str) -> None:
        """Record a case whose outcome the test phrased itself (e.g. a CLI's stderr)."""
        self._add(area, case, outcome, detail)

    def flush(self) -> None:
        folder = os.environ.get(ENV)
        if not folder or not self.cases:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / f"cases-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
            for c in self.cases:
                f.write(json.dumps(c) + "\n")
