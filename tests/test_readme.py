"""The README's quick start runs as written, offline, on a fresh clone (issue #24).

A later step will run every Python block of README.md and docs/ the same way; the
helpers here take a file and a section heading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Prepended to a block: any network connection is an error (the block must run offline).
NO_NETWORK = '''
import socket
def _offline(*args, **kwargs):
    raise OSError("this block tried to use the network; it must run offline")
socket.socket.connect = _offline
socket.create_connection = _offline
'''


def python_blocks(markdown: Path, heading: str) -> list[str]:
    """The ```python blocks of the section ``heading`` (up to the next heading of the
    same or a higher level)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = markdown.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(heading + "\n") + 1
    fenced, end = False, len(lines)
    for i in range(start, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", lines[i]):
            end = i
            break
    section = "".join(lines[start:end])
    return re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)


def run_block(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd``, offline, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "BCOSNET_PROGRESS_LINES": "1"}
    return subprocess.run([sys.executable, "-c", NO_NETWORK + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_python_blocks_finds_the_sections_blocks(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# T\n## A\n```python\n# a comment, not a heading\na = 1\n```\n### A.1\n"
                  "```python\nb = 2\n```\n## B\n```python\nc = 3\n```\n", encoding="utf-8")
    assert python_blocks(md, "## A") == ["# a comment, not a heading\na = 1\n", "b = 2\n"]
    assert python_blocks(md, "## B") == ["c = 3\n"]
    done = run_block("import urllib.request\nurllib.request.urlopen('http://example.com')",
                     tmp_path)
    assert done.returncode != 0 and "must run offline" in done.stderr


def test_readme_quick_start_runs_offline_as_written(tmp_path: Path) -> None:
    (block,) = python_blocks(ROOT / "README.md", "## Quick start")
    done = run_block(block, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Explanation(2 images × 1 target, weights 2×1×6×32×32 float32" in out, out
    assert "['class_0', 'class_1', 'class_2', 'class_3']" in out
    for png in ("explanation.png", "overlay.png"):
        assert (tmp_path / "runs" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "runs" / "smoke" / "checkpoint.pt").is_file()
