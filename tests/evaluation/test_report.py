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

from bcosnet.evaluation import (
    PointingGameResult,
    Report,
    ReportFigure,
    compare_localisation,
    write_report,
)
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


# --------------------------------------------------------------------------- the answer first


def _planted(medians: dict[str, float], spread: float = 0.05, n: int = 3, grids: int = 4,
             shift_mean: dict[str, float] | None = None) -> PointingGameResult:
    """A result whose method m scores around medians[m] (a symmetric spread, so the mean
    equals the median unless shift_mean moves one high score up)."""
    cells = grids * n * n
    base = np.linspace(-spread, spread, cells)
    scores = {}
    for m, med in medians.items():
        s = med + base
        if shift_mean and m in shift_mean:
            s[-1] += shift_mean[m] * cells  # one outlier: the mean moves, the median not
        scores[m] = s.reshape(grids, n * n)
    return PointingGameResult(n=n, classes=np.tile(np.arange(n * n), (grids, 1)), scores=scores)


def _stats(r: PointingGameResult, m: str) -> str:
    s = r.scores[m].reshape(-1)
    return f"{np.median(s):.3f} (mean {s.mean():.3f})"


@pytest.mark.parametrize("twin_best", [0.40, 0.80])
def test_headline_names_the_winner_of_the_papers_comparison(tmp_path, twin_best) -> None:
    bcos = _planted({"bcos": 0.64, "grad": 0.10, "occlusion": 0.35, "gradcam": 0.27})
    twin = _planted({"grad": 0.12, "occlusion": 0.30, "gradcam": twin_best})
    c = compare_localisation({"B-cos": bcos, "standard": twin})
    assert (c.explanation.network, c.explanation.method) == ("B-cos", "bcos")
    assert c.best_same.method == "occlusion"  # the best post-hoc method on the B-cos net
    assert [(r.network, r.method) for r in c.best_others] == [("standard", "gradcam")]
    assert c.holds is (twin_best < 0.64)
    head = c.headline
    assert f"localises with a median score of {_stats(bcos, 'bcos')}" in head
    assert f"{_stats(bcos, 'occlusion')} for the best post-hoc method on the same network " \
           "(occlusion)" in head
    assert f"{_stats(twin, 'gradcam')} for the best method on the standard network " \
           "(gradcam)" in head
    if twin_best < 0.64:
        assert head.startswith("The paper's claim holds here (by the median)")
    else:
        assert head.startswith("The paper's claim holds on the B-cos network but not against "
                               "the standard network")
    # the report opens with it, then the box plot, then the table
    files = write_report(tmp_path, Report(title="t", headline=head, text="Intro.",
                                          accuracy={"B-cos": 90.0, "standard": 91.0},
                                          pointing_game={"B-cos": bcos, "standard": twin}))
    md = files.markdown.read_text()
    assert md.splitlines()[2] == f"**{head}**"
    assert md.index(head) < md.index("Intro.") < md.index("![Grid pointing game") \
        < md.index("| model | method |") < md.index("## Accuracy")
    text = " ".join(_parse(files.html).text)
    assert text.index(head) < text.index("Intro.")
    assert json.loads(files.json.read_text())["headline"] == head


def test_headline_when_a_post_hoc_method_wins_on_the_bcos_network_and_by_the_mean() -> None:
    # occlusion beats bcos on the B-cos network itself: the claim does not hold
    lost = compare_localisation({"B-cos": _planted({"bcos": 0.40, "occlusion": 0.55}),
                                 "standard": _planted({"gradcam": 0.30})})
    assert not lost.holds and lost.best_same.method == "occlusion"
    assert lost.headline.startswith("The paper's claim does not hold here")
    # bcos ahead on the median, behind on the mean (the 0.643/0.641 vs 0.605/0.629)
    twin = _planted({"gradcam": 0.60}, shift_mean={"gradcam": 0.05})
    flip = compare_localisation({"B-cos": _planted({"bcos": 0.62, "grad": 0.1}),
                                 "standard": twin})
    assert flip.holds
    mean = float(twin.scores["gradcam"].mean())
    assert mean > 0.62
    assert f"by the mean the order differs: 0.620 vs {mean:.3f} for gradcam on the standard " \
           "network" in flip.headline
    # a tie under the shown precision is not a win
    tie = compare_localisation({"B-cos": _planted({"bcos": 0.6402}),
                                "standard": _planted({"gradcam": 0.6400})})
    assert not tie.holds
    # nothing to compare: no headline
    assert compare_localisation({"standard": _planted({"grad": 0.2})}) is None
    assert compare_localisation({"B-cos": _planted({"bcos": 0.6})}) is None
    with pytest.raises(ValueError, match="played on 2 networks"):
        compare_localisation({"a": _planted({"bcos": 0.6}), "b": _planted({"bcos": 0.5})})


def test_constant_columns_are_named_once_under_the_table(tmp_path) -> None:
    rows = [{"network": "B-cos", "model": "fmnist_bcos", "accuracy (%)": 90.62, "epochs": 6},
            {"network": "standard", "model": "standard_fmnist_bcos", "accuracy (%)": 91.18,
             "epochs": 6}]
    bcos = _planted({"bcos": 0.6, "grad": 0.1})
    bcos.settings = {"n": 3, "seed": 0, "confidence_threshold": 0.5,
                     "multi_target": {"bcos": True, "grad": True}}
    twin = _planted({"grad": 0.2}, grids=2)
    twin.settings = {"n": 3, "seed": 0, "confidence_threshold": None,
                     "multi_target": {"grad": True}}
    files = write_report(tmp_path, Report(title="t", accuracy=rows,
                                          pointing_game={"B-cos": bcos, "standard": twin}))
    md = files.markdown.read_text()
    tables = [line for line in md.splitlines() if line.startswith("| ")]
    headers = [t for t in tables if "---" not in t and t.startswith(("| network", "| model |"))]
    acc_head, pg_head = headers[1], headers[0]  # the pointing game comes first
    assert acc_head == "| network | model | accuracy (%) |"
    assert "Same in every row: epochs 6." in md
    # the pointing-game table: grid, baseline and "all cells in one call" are the same for
    # every row; model and method vary
    assert pg_head.startswith("| model | method | grids | cells | median |")
    for col in ("grid", "baseline 1/n²", "all cells in one call"):
        assert f"| {col} |" not in pg_head
    assert md.count("Same in every row: grid 3×3; baseline 1/n² 0.1111; all cells in one "
                    "call yes.") == 1  # (no seconds per grid recorded: no mention)
    # settings the networks share in one line, the others in a table
    assert "Settings (every network): grid cells per side 3; seed 0." in md
    assert "| confidence threshold (None: off) | 0.5000 | None |" in md
    # a one-row table keeps every column
    one = write_report(tmp_path / "one", Report(title="t", accuracy=rows[:1]))
    assert "| network | model | accuracy (%) | epochs |" in one.markdown.read_text()


def test_panel_names_the_class_of_the_explained_cell(tmp_path) -> None:
    from bcosnet.evaluation import GridDataset
    from bcosnet.evaluation.pointing_game import plot_method_panel

    images = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grids = GridDataset.from_dict(
        {"n": 2, "cell_size": [4, 4], "source_indices": [0, 1, 2, 3],
         "classes": [3, 1, 0, 2], "confidences": [1.0] * 4}, (images, torch.arange(4)))
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress"]
    model = torch.nn.Linear(1, 1)
    rows = {"B-cos": (model, {"m": lambda x, t: x})}
    fig = plot_method_panel(rows, grids, cell=1, class_names=names)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "Trouser"  # cell 1 holds class 1
    assert "Trouser" in fig._suptitle.get_text()
    assert not any("class 1" in t for t in titles)
    assert plot_method_panel(rows, grids, cell=0).axes[0].get_title() == "class 3"
    with pytest.raises(ValueError, match="class_names has 2 names.*class is 3"):
        plot_method_panel(rows, grids, cell=0, class_names=names[:2])
