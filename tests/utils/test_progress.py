"""Progress output off a terminal: whole lines, no carriage returns."""

from __future__ import annotations

import io

from bcosnet._utils.progress import LineProgress, progress


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_terminal_prints_whole_lines_at_the_interval_and_at_the_end():
    out = io.StringIO()
    items = list(progress(range(5), desc="eval", file=out, interval_s=0.0))
    assert items == [0, 1, 2, 3, 4]
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 6  # one per update (interval 0) and one when the loop ends
    assert lines[-1].startswith("eval: 5/5 (100%)")


def test_off_terminal_long_interval_gives_one_line_per_loop():
    out = io.StringIO()
    bar = progress(total=100, desc="epoch 1/2", file=out, interval_s=3600)
    assert isinstance(bar, LineProgress)
    for _ in range(100):
        bar.update(1)
        bar.set_postfix(loss="0.5000", refresh=False)
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().strip()]
    assert "100/100 (100%)" in out.getvalue() and "loss=0.5000" in out.getvalue()


def test_on_a_terminal_it_is_tqdm_and_disable_prints_nothing():
    from tqdm import tqdm

    tty = _FakeTTY()
    bar = progress(total=3, desc="x", file=tty)
    assert isinstance(bar, tqdm)
    bar.close()
    quiet = io.StringIO()
    for _ in progress(range(3), file=quiet, disable=True, interval_s=0.0):
        pass
    assert quiet.getvalue() == ""
