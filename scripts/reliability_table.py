"""Render docs/reliability.md from the reliability cases the tests record.

    python scripts/reliability_table.py            # runs the tests, writes the doc
    python scripts/reliability_table.py --check    # fails if the doc is out of date

Runs ``pytest tests/reliability`` with ``BCOSNET_RELIABILITY_LOG`` set (see
tests/reliability/record.py): every test that tries a bad input, an untrusted
file or a fault records the case and its outcome (a ``refused`` row is a passed
``pytest.raises`` with its message).  Nothing in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
ORDER = ["fuzz", "images", "checkpoints", "faults", "main job", "numerics"]


def collect(extra: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "BCOSNET_RELIABILITY_LOG": d, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        r = subprocess.run([sys.executable, "-m", "pytest", "tests/reliability", "-q",
                            "-p", "no:cacheprovider", *extra], cwd=ROOT, env=env)
        if r.returncode != 0:
            sys.exit(f"the reliability tests failed (exit {r.returncode}); no table written")
        cases = []
        for f in sorted(Path(d).glob("*.jsonl")):
            cases += [json.loads(line) for line in f.read_text().splitlines() if line]
    return cases


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(cases: list[dict]) -> str:
    areas = sorted({c["area"] for c in cases},
                   key=lambda a: (ORDER.index(a) if a in ORDER else len(ORDER), a))
    outcome = Counter("refused" if c["outcome"].startswith("refused") else
                      "fuzz" if c["area"] == "fuzz" else "handled" for c in cases)
    lines = [
        "# Reliability: bad inputs, faults and untrusted files",
        "",
        "Every row is a case a test in `tests/reliability/` tried, with what happened:",
        "**handled** (the input is accepted and the result checked) or **refused** (the",
        "test checked the exception type and message; the message is shown).  Fuzz rows",
        "count hypothesis-generated calls of one public entry point (derandomised: the",
        "same calls on every machine); a fuzzed call may only return or raise a",
        "`ValueError`/`TypeError` from bcosnet's own code with a message — any other",
        "exception, or one raised deep inside torch, fails the test.",
        "",
        "Generated, not typed — to regenerate (it runs `pytest tests/reliability`; pytest's",
        "options such as `-n 2` pass through):",
        "",
        "    python scripts/reliability_table.py",
        "",
        f"{len(cases)} cases: {outcome['handled']} handled, {outcome['refused']} refused, "
        f"{outcome['fuzz']} fuzzed entry points.",
        "",
    ]
    for area in areas:
        rows = [c for c in cases if c["area"] == area]
        lines += [f"## {area}", "", "| case | outcome | detail / message |", "|---|---|---|"]
        # rows in test order (whichever process ran the test), a test's rows as it wrote them
        for c in sorted(rows, key=lambda c: c["case"] if area == "fuzz" else c["test"]):
            lines.append(f"| {_cell(c['case'])} | {_cell(c['outcome'])} | "
                         f"{_cell(c['detail'])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the doc, write nothing")
    ap.add_argument("--out", default=str(DOC))
    args, extra = ap.parse_known_args()
    text = render(collect(extra))
    # times and tmp paths vary between runs: --check compares the case names only
    if args.check:
        old = Path(args.out).read_text() if Path(args.out).is_file() else ""
        key = lambda t: [ln.split(" | ")[0] for ln in t.splitlines() if ln.startswith("| ")]  # noqa: E731
        if key(old) != key(text):
            print(f"{args.out} is out of date: run python scripts/reliability_table.py")
            return 1
        return 0
    Path(args.out).write_text(text + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
