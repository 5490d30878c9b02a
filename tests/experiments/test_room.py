"""The experiments room's shared plumbing."""

from __future__ import annotations

import pytest

from experiments._common import Stopwatch, prepare, study_parser


def test_parser_and_output_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = study_parser("demo", "a demo").parse_args(["--quick", "--seed", "3"])
    assert args.quick and args.seed == 3 and args.progress
    out = prepare("demo", args)
    assert out == tmp_path / "outputs/experiments/demo-quick" or \
        out.resolve() == (tmp_path / "outputs/experiments/demo-quick").resolve()
    assert out.is_dir()
    args = study_parser("demo", "a demo").parse_args(["--out", str(tmp_path / "x")])
    assert prepare("demo", args) == tmp_path / "x"


def test_unknown_argument_is_refused():
    with pytest.raises(SystemExit):
        study_parser("demo", "a demo").parse_args(["--epochs-typo", "3"])


def test_stopwatch_adds_up_stages(monkeypatch):
    """On a scripted clock: a stage's seconds are the sum of its intervals, each stage
    on its own, and an interval that ends in an exception still counts."""
    import types

    import experiments._common as common

    ticks = iter([1.0, 1.5, 2.0, 4.0, 10.0, 10.25, 20.0, 20.125])
    monkeypatch.setattr(common, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    sw = Stopwatch()
    with sw("a"):          # 0.5 s
        pass
    with sw("b"):          # 2.0 s
        pass
    with sw("a"):          # 0.25 s
        pass
    with pytest.raises(RuntimeError), sw("b"):   # 0.125 s, then the stage fails
        raise RuntimeError("stage failed")
    assert sw.seconds == {"a": 0.75, "b": 2.125}
