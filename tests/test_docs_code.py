"""Every ```python block of README.md and docs/*.md runs, as written (issue 28).

One test per page: its blocks run in order in one namespace (a later block may use
what an earlier one defined), in this process (no interpreter start-up per page) but
isolated from the other tests: a temporary working directory, offline (any network
connection is an error), one thread, and the process state restored afterwards.  A block
that cannot run here (a download, a GPU, hours of training) carries the mark
``<!-- not run: REASON -->`` on the line just before it, and the page tells the
reader in the paragraph above; each such block is listed as a skipped test with
its reason (``pytest -ra`` prints them).  Blocks in other languages (```bash,
```text, ...) are not run."""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The mark of a block left out, on the line just before its fence.
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$")

@dataclass(frozen=True)
class Block:
    page: str          #: path relative to the repository root
    line: int          #: 1-based line of the opening fence
    code: str
    not_run: str | None  #: the reason, when marked ``<!-- not run: ... -->``

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(markdown: Path, page: str | None = None) -> list[Block]:
    """The ```python blocks of a Markdown file, in order, with their not-run marks; a
    block indented in a list item is dedented by its fence's indentation."""
    lines = markdown.read_text(encoding="utf-8").splitlines(keepends=True)
    page = page or markdown.name
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")),
                   len(lines))
        if fence == "```python":
            before = next((lines[j].strip() for j in range(i - 1, -1, -1)
                           if lines[j].strip()), "")
            mark = NOT_RUN.match(before)
            code = "".join(ln[indent:] if len(ln) - len(ln.lstrip(" ")) >= indent
                           else ln.lstrip(" ") for ln in lines[i + 1:end])
            blocks.append(Block(page, i + 1, code, mark["reason"] if mark else None))
        i = end + 1
    return blocks


def paragraph_before(markdown: Path, block: Block) -> str:
    """The text the reader sees just above a marked block: the lines before its mark, up
    to the previous blank line, heading or code fence."""
    lines = [ln.strip() for ln in markdown.read_text(encoding="utf-8").splitlines()]
    j = block.line - 2  # the mark's index
    while j >= 0 and not NOT_RUN.match(lines[j]):
        j -= 1
    out: list[str] = []
    for text in reversed(lines[:j]):
        if text.startswith("```") or (not text and out):
            break
        if text:
            out.insert(0, text)
            if text.startswith("#"):
                break
    return " ".join(out)


#: Prepended to code run in its own interpreter (:func:`run_block`): any network
#: connection is an error.
NO_NETWORK = '''
import socket
def _offline(*args, **kwargs):
    raise OSError("this block tried to use the network; it must run offline")
socket.socket.connect = _offline
socket.create_connection = _offline
'''


def run_block(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd``, offline, one thread (for a page
    whose test runs it among shell commands: tests/test_your_data.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "BCOSNET_PROGRESS_LINES": "1"}
    return subprocess.run([sys.executable, "-c", NO_NETWORK + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _offline(*args: object, **kwargs: object) -> None:
    raise OSError("this block tried to use the network; it must run offline")


@contextlib.contextmanager
def isolated(cwd: Path) -> Iterator[None]:
    """Run code as a page's reader would, without changing this process for the tests
    after it: in ``cwd``, offline, one thread, non-interactive matplotlib; the working
    directory, environment, RNG states (torch, numpy, random), thread count, default
    dtype and warning filters are restored afterwards."""
    import matplotlib
    import numpy as np
    import torch

    saved = (os.getcwd(), dict(os.environ), np.random.get_state(), random.getstate(),
             torch.get_num_threads(), torch.get_default_dtype(), matplotlib.get_backend())
    connect, create_connection = socket.socket.connect, socket.create_connection
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            os.chdir(cwd)
            os.environ.update(BCOSNET_PROGRESS_LINES="1", MPLBACKEND="Agg")
            matplotlib.use("Agg")
            torch.set_num_threads(1)
            socket.socket.connect, socket.create_connection = _offline, _offline
            yield
    finally:
        socket.socket.connect, socket.create_connection = connect, create_connection
        import matplotlib.pyplot as plt

        plt.close("all")
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        np.random.set_state(saved[2])
        random.setstate(saved[3])
        torch.set_num_threads(saved[4])
        torch.set_default_dtype(saved[5])
        matplotlib.use(saved[6])


def run_blocks(blocks: list[Block], cwd: Path) -> str:
    """Run ``blocks`` in order in one fresh namespace, :func:`isolated` in ``cwd``; return
    what they printed.  A failure is raised as :class:`BlockFailed` naming its block; the
    traceback shows the page's own line numbers."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    out = io.StringIO()
    with isolated(cwd), contextlib.redirect_stdout(out):
        for b in blocks:
            try:
                exec(compile("\n" * b.line + b.code, b.page, "exec"), namespace)  # noqa: S102 - running the docs is the point
            except Exception as e:
                raise BlockFailed(f"{b.label} failed (the page's blocks run in order in "
                                  f"one namespace): {type(e).__name__}: {e}") from e
    return out.getvalue()


class BlockFailed(AssertionError):
    """A docs block raised."""


#: Pages whose blocks another test runs, in order with the page's shell commands.
RUN_ELSEWHERE = {
    "docs/your-data.md": "tests/test_your_data.py (with the page's commands, in order, on a "
                         "generated image folder)",
}
PAGES = ["README.md"] + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
BLOCKS = {page: python_blocks(ROOT / page, page) for page in PAGES}
RUN_PAGES = [page for page in PAGES if page not in RUN_ELSEWHERE
             and any(b.not_run is None for b in BLOCKS[page])]
LEFT_OUT = [b for page in PAGES for b in BLOCKS[page] if b.not_run is not None]


def check_readme(out: str, cwd: Path) -> None:
    """The quick start's printed values and the files it writes."""
    assert "Explanation(2 images × 1 target, weights 2×1×6×32×32 float32" in out, out
    assert "['class_0', 'class_1', 'class_2', 'class_3']" in out
    for png in ("explanation.png", "overlay.png"):
        assert (cwd / "runs" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cwd / "runs" / "smoke" / "checkpoint.pt").is_file()


#: Page → a check of what its blocks printed and wrote (beyond running without error).
PAGE_CHECKS = {"README.md": check_readme}


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_python_blocks_run(page: str, tmp_path: Path) -> None:
    out = run_blocks([b for b in BLOCKS[page] if b.not_run is None], tmp_path)
    if page in PAGE_CHECKS:
        PAGE_CHECKS[page](out, tmp_path)


@pytest.mark.parametrize("block", LEFT_OUT, ids=[b.label for b in LEFT_OUT])
def test_block_left_out_says_why(block: Block) -> None:
    """A marked block's reason is in the page for the reader too, then it is skipped."""
    seen = paragraph_before(ROOT / block.page, block)
    assert re.search(r"not run", seen, re.I), (
        f"{block.label} is marked '<!-- not run: {block.not_run} -->' but the paragraph "
        f"above it does not tell the reader (say 'not run by the tests: ...'): {seen!r}")
    pytest.skip(f"{block.label} not run: {block.not_run}")


@pytest.mark.parametrize("page", sorted(RUN_ELSEWHERE))
def test_page_run_by_its_own_test(page: str) -> None:
    """Listed, not run twice: the page's own test runs its blocks with its commands."""
    test_file = RUN_ELSEWHERE[page].split()[0]
    assert BLOCKS[page] and Path(page).name in (ROOT / test_file).read_text(encoding="utf-8")
    pytest.skip(f"{page}: {len(BLOCKS[page])} blocks run by {RUN_ELSEWHERE[page]}")


def test_python_blocks_reads_fences_marks_and_runs_offline(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# T\n```python\n# a comment\na = 1\n```\n```bash\nb = 2\n```\n"
                  "Not run by the tests: it downloads.\n<!-- not run: downloads -->\n"
                  "```python\nc = 3\n```\n\n1. A list item:\n\n   ```python\n   print(a + 1)\n"
                  "   ```\n", encoding="utf-8")
    blocks = python_blocks(md)
    assert [(b.line, b.code, b.not_run) for b in blocks] == [
        (2, "# a comment\na = 1\n", None), (11, "c = 3\n", "downloads"),
        (17, "print(a + 1)\n", None)]
    assert paragraph_before(md, blocks[1]) == "Not run by the tests: it downloads."
    cwd = os.getcwd()
    out = run_blocks([blocks[0], blocks[2]], tmp_path)   # one namespace: a is defined
    assert out == "2\n" and os.getcwd() == cwd
    fetch = Block("y.md", 3, "import urllib.request\n"
                  "urllib.request.urlopen('http://example.com')\n", None)
    with pytest.raises(BlockFailed, match=r"y.md:3 failed .* must run offline") as err:
        run_blocks([fetch], tmp_path)
    # the traceback points into the page, at the block's line
    assert err.value.__cause__.__traceback__.tb_next.tb_frame.f_code.co_filename == "y.md"
    assert err.value.__cause__.__traceback__.tb_next.tb_lineno == 5
    assert socket.socket.connect is not _offline and os.getcwd() == cwd
    done = run_block(fetch.code, tmp_path)   # the same guard in a fresh interpreter
    assert done.returncode != 0 and "must run offline" in done.stderr
