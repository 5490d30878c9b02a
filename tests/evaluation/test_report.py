"""Evaluation report: Markdown + HTML files, figures, numbers."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

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


# --------------------------------------------------------------------------- in a browser


_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]
# Appended to a copy of the report: writes what the browser made of the page into the DOM.
_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var table = document.getElementById("localisation");
  var out = {images: imgs.map(function (i) { return {alt: i.alt, w: i.naturalWidth,
                                                     h: i.naturalHeight, done: i.complete}; }),
             rows: table ? table.tBodies[0].rows.length : -1,
             head: table ? Array.prototype.map.call(table.tHead.rows[0].cells,
                                                   function (c) { return c.textContent; }) : []};
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.style.display = "none";  // in the DOM dump, not in the screenshot
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _synthetic_report(tmp_path: Path) -> Path:
    """A report with a tiny two-network, nine-method result and an A2-style panel."""
    from bcosnet.evaluation import GridDataset
    from bcosnet.evaluation.pointing_game import plot_method_panel

    g = np.random.default_rng(0)
    methods = ["bcos", "grad", "ixg", "intgrad", "deeplift", "gradcam", "occlusion", "rise",
               "lime"]
    classes = np.tile(np.arange(9), (4, 1))

    def result(ms: list[str]) -> PointingGameResult:
        scores = {m: g.uniform(0, 1, (4 if m not in ("occlusion", "rise", "lime") else 2, 9))
                  for m in ms}
        return PointingGameResult(n=3, classes=classes, scores=scores, settings={
            "n": 3, "num_grids": 4, "confidence_threshold": 0.5, "smoothing": None,
            "grids_per_method": {m: s.shape[0] for m, s in scores.items()},
            "multi_target": dict.fromkeys(ms, True),
            "seconds_per_grid": dict.fromkeys(ms, 0.5)})

    # the panel from callables on a 3×3 grid of 4-px cells (fast, no model training)
    images = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grids = GridDataset.from_dict(
        {"n": 3, "cell_size": [4, 4], "source_indices": list(range(9)),
         "classes": list(range(9)), "confidences": [1.0] * 9}, (images, torch.arange(9)))

    def make(k: float):
        def fn(x, t):
            return x * k - 0.3
        return fn

    model = torch.nn.Linear(1, 1)
    panel = tmp_path / "panel.png"
    plot_method_panel({"B-cos": (model, {m: make(i + 1) for i, m in enumerate(methods)}),
                       "standard": (model, {m: make(1) for m in methods[1:]})},
                      grids, cell=4, path=panel)
    files = write_report(tmp_path / "report", Report(
        title="Browser check", text="Synthetic numbers.",
        pointing_game={"B-cos": result(methods), "standard": result(methods[1:])},
        pointing_game_text="occlusion, rise, lime: 2 grids instead of the paper's 500.",
        pointing_game_figures=[("Fig. A2-style panel", panel)],
        figures=[("an explanation", _png(tmp_path / "e.png"))]))
    return files.html


@pytest.mark.skipif(_CHROMIUM is None, reason="needs the Debian package chromium "
                    "(scripts/setup.sh installs it when run as root)")
def test_report_renders_in_headless_chromium(tmp_path) -> None:
    html_path = _synthetic_report(tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>",
                                                                   _PROBE + "\n</body>"))
    shot = tmp_path / "report.png"  # a screenshot as a test artifact, from the same load
    r = _chromium(["--virtual-time-budget=5000", "--dump-dom", f"--screenshot={shot}",
                   "--window-size=1280,2400", probe.as_uri()], tmp_path / "profile")
    m = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', r.stdout, re.S)
    assert m, f"no probe output from chromium (rc {r.returncode}): {r.stderr[-2000:]}"
    out = json.loads(html.unescape(m.group(1)))
    assert len(out["images"]) == 3  # box plot, panel, explanation
    for img in out["images"]:
        assert img["done"] and img["w"] > 0 and img["h"] > 0, img
    assert out["rows"] == 9 + 8  # one row per (network, method)
    assert {"method", "grids", "median", "mean"} <= set(out["head"])
    assert shot.read_bytes()[:8] == PNG, r.stderr[-2000:]
    print(f"report screenshot: {shot}")
