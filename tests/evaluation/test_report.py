"""Evaluation report: Markdown + HTML files, figures, numbers."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bcosnet.evaluation import PointingGameResult, Report, ReportFigure, write_report
from bcosnet.evaluation.report import format_number

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Checker(HTMLParser):
    """Collects image sources and text; checks that non-void tags nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _png(path: Path, colour: str = "red") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).imshow(np.zeros((2, 2)), cmap="gray")
    fig.savefig(path, format="png")
    return path


def _result(scores: list[float], n: int = 2) -> PointingGameResult:
    s = np.asarray(scores, dtype=np.float64).reshape(-1, n * n)
    classes = np.tile(np.arange(n * n), (s.shape[0], 1))
    return PointingGameResult(n=n, classes=classes, scores={"bcos": s, "ixg": s[::-1] * 0.5})


def _parse(html_path: Path) -> Checker:
    c = Checker()
    c.feed(html_path.read_text(encoding="utf-8"))
    c.close()
    assert not c.errors, c.errors
    assert not c.stack, f"unclosed tags {c.stack}"
    return c


@pytest.mark.parametrize("embed", [True, False])
def test_report_files_are_valid_and_contain_the_numbers(tmp_path, embed) -> None:
    ex = _png(tmp_path / "example expl.png")
    bcos = _result([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    out = tmp_path / "rep"
    files = write_report(out, Report(
        title="B-cos <vs> standard & co",
        text="First paragraph.\n\nSecond paragraph.",
        metadata={"data": "Fashion-MNIST test", "epochs": 3},
        accuracy=[{"model": "B-cos", "kind": "bcos", "accuracy": 91.23, "params": 12345},
                  {"model": "standard", "kind": "standard", "accuracy": 89.7}],
        pointing_game={"B-cos": bcos},
        figures=[("Most confident images", ex), ReportFigure(ex, "again")],
    ), embed_images=embed)
    for p in (files.markdown, files.html, files.json, *files.figures):
        assert p.is_file() and p.resolve().is_relative_to(out.resolve())
    md = files.markdown.read_text(encoding="utf-8")
    page = files.html.read_text(encoding="utf-8")
    c = _parse(files.html)
    text = " ".join(c.text)
    assert "B-cos <vs> standard & co" in text  # escaped in HTML, readable after parsing
    assert "<vs>" not in page.split("<body>", 1)[1]
    assert {"table", "h1", "h2", "img", "figure"} <= set(c.tags)
    assert "First paragraph." in text and "Second paragraph." in text
    # the numbers passed in (summary of bcos: median 0.55, Q1 0.375, Q3 0.725, mean 0.55)
    for s in ("91.23", "89.70", "12345", "0.5500", "0.3750", "0.7250", "0.2500", "Fashion-MNIST"):
        assert s in md and s in text, s
    # every referenced image exists (relative) or is a decodable embedded PNG
    assert len(c.images) == 3  # box plot + 2 example figures
    for src in c.images:
        if embed:
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
        else:
            assert (out / src).read_bytes()[:8] == PNG
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(md_images) == 3
    for src in md_images:
        assert not Path(src).is_absolute() and (out / src).read_bytes()[:8] == PNG
    numbers = json.loads(files.json.read_text())
    assert numbers["accuracy"][0]["accuracy"] == 91.23
    assert numbers["pointing_game"][0]["median"] == pytest.approx(0.55)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert files.html.stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's 0600


def test_report_from_plain_dict_with_summaries_only(tmp_path) -> None:
    r = _result([1.0, 0.5, 0.25, 0.25]).to_dict()
    for m in r["methods"].values():  # only summaries (e.g. loaded from a small JSON)
        del m["scores"]
    files = write_report(tmp_path, {
        "title": "Summary only",
        "accuracy": {"B-cos": 90.5, "standard": 91.25},
        "pointing_game": {"B-cos": r},
    })
    c = _parse(files.html)
    text = " ".join(c.text)
    for s in ("90.50", "91.25", "0.3750", "0.5000", "ixg", "2×2"):
        assert s in text, s
    assert files.figures == [] and c.images == []  # no scores → no box plot


def test_caller_pointing_game_figure_and_figures_inside_out_dir_are_not_copied(tmp_path) -> None:
    box = _png(tmp_path / "box.png")
    inside = _png(tmp_path / "ex.png")
    files = write_report(tmp_path, Report(
        title="t", pointing_game={"m": _result([0.5] * 4)}, pointing_game_figure=box,
        figures=[("x", inside)],
    ), embed_images=False)
    c = _parse(files.html)
    assert sorted(c.images) == ["box.png", "ex.png"]
    assert not (tmp_path / "figures").exists()


def test_bad_report_input_is_explained(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown report keys"):
        write_report(tmp_path, {"title": "t", "acuracy": {}})
    with pytest.raises(ValueError, match="title"):
        write_report(tmp_path, {"accuracy": {}})
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path, Report(title="t", figures=[("c", tmp_path / "missing.png")]))
    with pytest.raises(TypeError, match="accuracy rows"):
        write_report(tmp_path, Report(title="t", accuracy=[3.0]))
    with pytest.raises(TypeError, match="pointing_game"):
        write_report(tmp_path, Report(title="t", pointing_game={"m": [0.5]}))


@pytest.mark.parametrize(
    ("value", "text"),
    [(91.234, "91.23"), (0.41236, "0.4124"), (500, "500"), (float("nan"), "–"), (None, "–"),
     (1.5e7, "1.5e+07"), (0.0, "0"), (np.float32(0.25), "0.2500"), (np.int64(7), "7")],
)
def test_number_format(value, text) -> None:
    assert format_number(value) == text
