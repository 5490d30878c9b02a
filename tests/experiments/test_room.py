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


def test_stopwatch_adds_up_stages():
    sw = Stopwatch()
    for _ in range(2):
        with sw("a"):
            sum(range(1000))
    assert set(sw.seconds) == {"a"} and sw.seconds["a"] > 0
