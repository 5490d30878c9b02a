"""A self-contained evaluation report: Markdown + HTML with figures.

    from bcosnet.evaluation import Report, write_report
    files = write_report("runs/fmnist/report", Report(
        title="B-cos on Fashion-MNIST",
        headline=compare_localisation({"B-cos": bcos_result, "standard": std_result}).headline,
        text="One B-cos network and its standard twin, 10 epochs each.",
        metadata={"data": "Fashion-MNIST test (10 000 images)", "epochs": 10},
        accuracy=[{"model": "B-cos", "kind": "bcos", "accuracy": 90.12},
                  {"model": "standard", "kind": "standard", "accuracy": 91.30}],
        pointing_game={"B-cos": bcos_result, "standard": std_result},
        figures=[("Explanations of the most confident test images", "expl.png")],
    ))
    files.html, files.markdown

The report leads with its answer: the ``headline`` (e.g. the sentence of
:func:`compare_localisation`: does the model-inherent explanation localise better
than the post-hoc methods, on its own network and on the others?), then the
pointing game's box plot and table, accuracy, the example figures and the setup.
A column that holds the same value in every row of a table is not shown as a
column but once, in a "Same in every row" line under it.

The output folder gets ``report.md`` (figures referenced by relative path),
``report.html`` (figures embedded as base64, so the file stands alone),
``report.json`` (the numbers) and ``figures/`` (copies of the caller's
figures and the pointing-game box plot).  Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .pointing_game import PointingGameResult, plot_pointing_game

__all__ = [
    "LocalisationComparison",
    "MethodScore",
    "Report",
    "ReportFigure",
    "ReportFiles",
    "compare_localisation",
    "format_number",
    "write_report",
]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}


@dataclass
class ReportFigure:
    """A figure file (PNG/JPEG/SVG/...) and its caption."""

    path: str | os.PathLike
    caption: str = ""


@dataclass
class Report:
    """What a report shows.  Every section is optional except the title.

    Attributes:
        title: the report's heading.
        headline: the answer, shown first in bold (e.g.
            ``compare_localisation(results).headline``); empty: none.
        text: an introduction (plain text / Markdown; paragraphs separated by blank lines).
        metadata: setting name -> value, shown as a "Setup" table.
        accuracy: table rows, each a dict column -> value (e.g. ``{"model": "B-cos",
            "kind": "bcos", "accuracy": 90.12, "params": 1.2e6}``); or a dict
            model -> accuracy.  Columns are the union of the rows' keys, in order.
        pointing_game: label (e.g. the model) -> :class:`PointingGameResult`, or the
            dict of :meth:`PointingGameResult.to_dict` (summaries alone suffice
            for the table; scores are needed for the box plot).
        pointing_game_figure: a ready box-plot file; None: drawn from the scores.
        pointing_game_figures: more figures of the pointing-game section (as
            ``figures``), e.g. the Fig. A2-style panel of every method's maps.
        pointing_game_text: notes shown with the pointing-game table (e.g. what was
            cut for time); the settings each result records are listed below it.
        figures: :class:`ReportFigure`, ``(caption, path)`` pairs or dicts with
            ``path`` and ``caption`` (example explanations etc.).
    """

    title: str
    headline: str = ""
    text: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    accuracy: Sequence[Mapping[str, Any]] | Mapping[str, float] = ()
    pointing_game: Mapping[str, PointingGameResult | Mapping[str, Any]] = field(
        default_factory=dict
    )
    pointing_game_figure: str | os.PathLike | None = None
    pointing_game_text: str = ""
    pointing_game_figures: Sequence[
        ReportFigure | tuple[str, str | os.PathLike] | Mapping[str, Any]] = ()
    figures: Sequence[ReportFigure | tuple[str, str | os.PathLike] | Mapping[str, Any]] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        """Build from a plain results dict with the same keys as the attributes."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a report needs a dict, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown report keys {sorted(extra)}; known keys: {sorted(known)}")
        if "title" not in d:
            raise ValueError("a report needs a 'title'")
        return cls(**dict(d))


@dataclass
class ReportFiles:
    """Paths of what :func:`write_report` wrote."""

    markdown: Path
    html: Path
    json: Path
    figures: list[Path]


def format_number(v: Any) -> str:
    """How numbers appear in the report.

    ints as they are; floats with 2 decimals if 1 <= |v| < 1e5 (accuracies in
    %), 4 decimals if 1e-3 <= |v| < 1 (scores, fractions), otherwise 4
    significant digits; NaN/None as "–".
    """
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "–"
        a = abs(v)
        if 1 <= a < 1e5:
            return f"{v:.2f}"
        if 1e-3 <= a < 1:
            return f"{v:.4f}"
        if a == 0:
            return "0"
        return f"{v:.4g}"
    try:  # numpy / torch scalars
        item = v.item()
    except (AttributeError, ValueError):
        return str(v)
    return format_number(item)


# --------------------------------------------------------------------------- content


def _accuracy_rows(acc: Any) -> list[dict[str, Any]]:
    if isinstance(acc, Mapping):
        return [{"model": k, "accuracy": v} for k, v in acc.items()]
    rows = []
    for r in acc:
        if not isinstance(r, Mapping):
            raise TypeError(f"accuracy rows must be dicts column -> value, got {type(r).__name__}")
        rows.append(dict(r))
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


#: Settings of a pointing-game result shown in the report, with their labels.
_PG_SETTINGS = {
    "n": "grid cells per side",
    "num_grids": "grids made",
    "requested_grids": "grids requested",
    "confidence_threshold": "confidence threshold (None: off)",
    "confidence_score": "threshold applies to",
    "smoothing": "smoothing kernel (None: none)",
    "smoothing_rule": "smoothing rule",
    "cell_size": "cell size (px)",
    "seed": "seed",
    "method_settings": "method settings",
}


def _pg_entry(label: str, r: Any) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]],
                                           dict[str, Any], PointingGameResult | None]:
    """One pointing-game result (a :class:`PointingGameResult` or its ``to_dict()``
    form): n, settings, method → summary dict, method → grids, the result if it has
    scores (for the box plot)."""
    if isinstance(r, Mapping) and any("scores" in v for v in r.get("methods", {}).values()):
        r = PointingGameResult.from_dict(r)
    if isinstance(r, PointingGameResult):
        return (r.n, dict(r.settings), {m: s.to_dict() for m, s in r.summary().items()},
                dict(r.grids_per_method), r)
    if isinstance(r, Mapping) and "n" in r and "methods" in r:
        return (int(r["n"]), dict(r.get("settings", {})),
                {m: dict(v["summary"]) for m, v in r["methods"].items()},
                {m: v.get("grids", r.get("num_grids")) for m, v in r["methods"].items()}, None)
    raise TypeError(
        f"pointing_game[{label!r}] must be a PointingGameResult or its to_dict() form"
    )


def _pg_tables(
    pg: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, PointingGameResult], list[dict[str, Any]]]:
    """Summary rows, the results that have scores (for the box plot), settings rows."""
    rows: list[dict[str, Any]] = []
    plottable: dict[str, PointingGameResult] = {}
    setting_rows: list[dict[str, Any]] = []
    for label, r in pg.items():
        n, settings, summaries, per_method, result = _pg_entry(label, r)
        if result is not None:
            plottable[label] = result
        multi = settings.get("multi_target") or {}
        secs = settings.get("seconds_per_grid") or {}
        for m, s in summaries.items():
            row = {
                "model": label, "method": m, "grid": f"{n}×{n}", "grids": per_method.get(m),
                "cells": s.get("count"), "median": s.get("median"), "Q1": s.get("q1"),
                "Q3": s.get("q3"), "mean": s.get("mean"), "baseline 1/n²": 1.0 / (n * n),
            }
            if multi or secs:
                row["all cells in one call"] = {True: "yes", False: "no"}.get(multi.get(m), "–")
                row["s / grid"] = secs.get(m)
            rows.append(row)
        for key, text in _PG_SETTINGS.items():
            if key in settings:
                v = settings[key]
                setting_rows.append({"model": label, "setting": text,
                                     "value": "None" if v is None
                                     else v if isinstance(v, (int, float, str))
                                     else json.dumps(v)})
    return rows, plottable, setting_rows


def _settings_by_model(setting_rows: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pointing game's settings rows (model, setting, value) as the settings every
    model shares (setting → value) and a table of the others (setting, one column per
    model)."""
    models = list(dict.fromkeys(r["model"] for r in setting_rows))
    values: dict[str, dict[str, Any]] = {}
    for r in setting_rows:
        values.setdefault(r["setting"], {})[r["model"]] = r["value"]
    common: dict[str, Any] = {}
    differ: list[dict[str, Any]] = []
    for setting, by_model in values.items():
        shown = {json.dumps(v, sort_keys=True, default=str) for v in by_model.values()}
        if len(by_model) == len(models) and len(shown) == 1:
            common[setting] = next(iter(by_model.values()))
        else:
            differ.append({"setting": setting, **{m: by_model.get(m) for m in models}})
    return common, differ


def _split_constant(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A table (≥ 2 rows) less its columns that hold one value in every row; those
    columns → their value.  The first column stays (a table needs one)."""
    cols = _columns(rows)
    if len(rows) < 2:
        return rows, {}

    def key(v: Any) -> str:
        return _md_cell(v)  # as shown: 0.11111 and 0.111114 are one value on screen

    constant = {c: rows[0].get(c) for c in cols[1:]
                if len({key(r.get(c)) for r in rows}) == 1}
    shown = [{c: v for c, v in r.items() if c not in constant} for r in rows]
    # a column empty ("–") in every row says nothing: dropped without a mention
    return shown, {c: v for c, v in constant.items() if key(v) != "–"}


def _same_text(constant: Mapping[str, Any], lead: str = "Same in every row") -> str:
    return f"{lead}: " + "; ".join(f"{c} {_md_cell(v)}" for c, v in constant.items()) + "."


# --------------------------------------------------------------------------- the answer

#: Differences of a score smaller than this count as a tie (the report shows 3 decimals).
_TIE = 5e-4


@dataclass(frozen=True)
class MethodScore:
    """A method's pointing-game scores on one network: median and mean over all cells."""

    network: str
    method: str
    median: float
    mean: float

    def text(self) -> str:
        return f"{self.median:.3f} (mean {self.mean:.3f})"


@dataclass(frozen=True)
class LocalisationComparison:
    """The paper's localisation comparison (supplement B.1, Figs. B1/B2), read off
    pointing-game results.

    Attributes:
        explanation: the model-inherent explanation on its network (e.g. ``bcos`` on
            the B-cos network).
        best_same: the best other (post-hoc) method on that network, by median;
            None when none was played.
        best_others: per other network, its best method by median (e.g. Grad-CAM on
            the conventional twin).

    The paper's claim: the model-inherent explanation localises better than every
    post-hoc method on the B-cos network (Fig. B1), and no method explains the
    conventional networks better than it explains the B-cos network (Fig. B2).
    :attr:`holds` judges by the median (the box plots' centre line); a difference
    below 0.0005 (under the 3 decimals shown) is a tie, which is not a win.
    """

    explanation: MethodScore
    best_same: MethodScore | None
    best_others: tuple[MethodScore, ...]

    @property
    def rivals(self) -> tuple[MethodScore, ...]:
        return ((self.best_same,) if self.best_same is not None else ()) + self.best_others

    def beats(self, rival: MethodScore, stat: str = "median") -> bool:
        """Whether the explanation scores higher than ``rival`` on ``stat``
        (``"median"`` or ``"mean"``) by at least 0.0005."""
        return getattr(self.explanation, stat) - getattr(rival, stat) >= _TIE

    @property
    def holds(self) -> bool:
        """The claim holds: the explanation beats every rival on the median."""
        return all(self.beats(r) for r in self.rivals)

    @property
    def headline(self) -> str:
        """One sentence: whether the claim holds here, with the medians and means."""
        e = self.explanation
        same = self.best_same is None or self.beats(self.best_same)
        others = all(self.beats(r) for r in self.best_others)
        if same and others:
            verdict = "The paper's claim holds here"
        elif same:
            verdict = (f"The paper's claim holds on the {e.network} network but not against "
                       + " and ".join(f"the {r.network} network" for r in self.best_others
                                      if not self.beats(r)))
        else:
            verdict = "The paper's claim does not hold here"
        clauses = []
        if self.best_same is not None:
            clauses.append(f"{self.best_same.text()} for the best post-hoc method on the same "
                           f"network ({self.best_same.method})")
        clauses += [f"{r.text()} for the best method on the {r.network} network ({r.method})"
                    for r in self.best_others]
        sentence = (f"{verdict} (by the median): {e.method}, the model-inherent explanation, "
                    f"on the {e.network} network localises with a median score of {e.text()}, "
                    "against "
                    + " and ".join(clauses))
        flips = [r for r in self.rivals if self.beats(r) != self.beats(r, "mean")]
        if flips:
            sentence += "; by the mean the order differs: " + ", ".join(
                f"{e.mean:.3f} vs {r.mean:.3f} for {r.method} on the {r.network} network"
                for r in flips)
        return sentence + "."


def compare_localisation(pointing_game: Mapping[str, Any], *, method: str = "bcos"
                         ) -> LocalisationComparison | None:
    """The paper's comparison from pointing-game results, e.g. ``{"B-cos": r1,
    "standard": r2}`` (:class:`PointingGameResult` or its ``to_dict()`` form).

    The network whose result has ``method`` (the model-inherent explanation) is the
    B-cos network; every other result is a network to compare against.  The best
    method of a network is the one with the highest median.  Returns None when no
    result has ``method`` or there is nothing to compare it with.

    >>> compare_localisation(results).headline   # doctest: +SKIP
    "The paper's claim holds here (by the median): bcos on the B-cos network ..."
    """
    if not isinstance(pointing_game, Mapping):
        raise TypeError("pointing_game must be a dict label -> PointingGameResult, got "
                        f"{type(pointing_game).__name__}")
    summaries = {label: _pg_entry(label, r)[2] for label, r in pointing_game.items()}
    owners = [label for label, s in summaries.items() if method in s]
    if not owners:
        return None
    if len(owners) > 1:
        raise ValueError(f"method {method!r} was played on {len(owners)} networks "
                         f"({', '.join(owners)}); it is the model-inherent explanation of one "
                         "network — pass results with it on one network only")

    def score(label: str, m: str) -> MethodScore:
        s = summaries[label][m]
        return MethodScore(label, m, float(s["median"]), float(s["mean"]))

    def best(label: str, exclude: str | None = None) -> MethodScore | None:
        ms = [score(label, m) for m in summaries[label] if m != exclude]
        ms = [x for x in ms if x.median == x.median]  # NaN: no cells
        return max(ms, key=lambda x: x.median) if ms else None

    own = owners[0]
    result = LocalisationComparison(
        explanation=score(own, method),
        best_same=best(own, exclude=method),
        best_others=tuple(b for label in summaries if label != own
                          if (b := best(label)) is not None),
    )
    return result if result.rivals else None


def _figure_list(figs: Any) -> list[ReportFigure]:
    out = []
    for f in figs:
        if isinstance(f, ReportFigure):
            out.append(f)
        elif isinstance(f, tuple) and len(f) == 2:
            out.append(ReportFigure(path=f[1], caption=str(f[0])))
        elif isinstance(f, Mapping) and "path" in f:
            out.append(ReportFigure(path=f["path"], caption=str(f.get("caption", ""))))
        else:
            raise TypeError(
                "figures must be ReportFigure, (caption, path) pairs or dicts with 'path', "
                f"got {f!r}"
            )
    return out


def _place_figure(src: Path, out_dir: Path, fig_dir: Path, index: int) -> Path:
    """The figure's path inside ``out_dir`` (copied there unless it already is)."""
    src = Path(src)
    if not src.is_file():
        raise ValueError(f"figure file {str(src)!r} does not exist; pass the path of a saved image")
    try:
        src.resolve().relative_to(out_dir.resolve())
        return src.resolve()
    except ValueError:
        pass
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.name)
    dst = fig_dir / f"{index:02d}_{stem}"
    atomic_write_bytes(dst, src.read_bytes())
    return dst


# --------------------------------------------------------------------------- rendering


def _md_cell(v: Any) -> str:
    s = format_number(v) if not isinstance(v, str) else v
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]], table_id: str | None = None) -> str:
    cols = _columns(rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{html.escape(v if isinstance(v, str) else format_number(v))}</td>"
            for v in (r.get(c) for c in cols)
        ) + "</tr>\n"
        for r in rows
    )
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return f"<table{ident}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _html_image(path: Path, rel: str, caption: str, embed: bool) -> str:
    mime = _MIME.get(path.suffix.lower())
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    if mime is None:  # e.g. PDF: not an <img>; link it
        return f'<figure><a href="{html.escape(rel)}">{html.escape(rel)}</a>{cap}</figure>'
    if embed:
        src = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = rel
    alt = html.escape(caption or path.name)
    return f'<figure><img src="{html.escape(src)}" alt="{alt}">{cap}</figure>'


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; }
img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
p.headline { font-size: 1.1em; }
"""


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]


class _Doc:
    """The report as Markdown and HTML, written side by side."""

    def __init__(self, out: Path, embed_images: bool) -> None:
        self.out, self.embed = out, embed_images
        self.md: list[str] = []
        self.html: list[str] = []

    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), self.out.resolve())).as_posix()

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraphs(self, text: str) -> None:
        for p in _paragraphs(text):
            self.md += [p, ""]
            self.html.append(f"<p>{html.escape(p)}</p>")

    def table(self, rows: list[dict[str, Any]], table_id: str | None = None) -> None:
        """A table without its constant columns, those named once below it."""
        shown, constant = _split_constant(rows)
        self.md += [_md_table(shown), ""]
        self.html.append(_html_table(shown, table_id=table_id))
        if constant:
            self.paragraphs(_same_text(constant))

    def figure(self, f: ReportFigure, p: Path) -> None:
        self.md += [f"![{f.caption or p.name}]({self.rel(p)})", ""]
        if f.caption:
            self.md += [f"*{f.caption}*", ""]
        self.html.append(_html_image(p, self.rel(p), f.caption, self.embed))

    def page(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
                "<body>\n" + "\n".join(self.html) + "\n</body>\n</html>\n")


def _check_report(report: Report | Mapping[str, Any], name: str) -> Report:
    if isinstance(report, Mapping):
        report = Report.from_dict(report)
    if not isinstance(report, Report):
        raise TypeError(f"report must be a Report or a dict, got {type(report).__name__}")
    if not isinstance(report.title, str) or not report.title.strip():
        raise ValueError("the report needs a non-empty title")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be a plain file name (letters, digits, _.-), got {name!r}")
    return report


def write_report(
    out_dir: str | os.PathLike,
    report: Report | Mapping[str, Any],
    *,
    name: str = "report",
    embed_images: bool = True,
) -> ReportFiles:
    """Write ``<name>.md``, ``<name>.html``, ``<name>.json`` and ``figures/`` into ``out_dir``.

    Args:
        out_dir: output folder (created).
        report: a :class:`Report` or a dict with its fields.
        name: base name of the files.
        embed_images: embed the figures in the HTML as base64 (a single file
            that stands alone); False: reference ``figures/...`` relatively.

    Returns:
        :class:`ReportFiles` with the written paths.
    """
    report = _check_report(report, name)
    out = Path(out_dir)
    fig_dir = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    acc_rows = _accuracy_rows(report.accuracy)
    pg_rows, plottable, pg_settings = _pg_tables(report.pointing_game)
    pg_fig: Path | None = None
    if report.pointing_game_figure is not None:
        pg_fig = _place_figure(Path(report.pointing_game_figure), out, fig_dir, 0)
    elif plottable:
        pg_fig = fig_dir / f"{name}_pointing_game.png"
        plot_pointing_game(plottable, pg_fig)
    figures = [(f, _place_figure(Path(f.path), out, fig_dir, i + 1))
               for i, f in enumerate(_figure_list(report.figures))]
    pg_figures = [(f, _place_figure(Path(f.path), out, fig_dir, 50 + i))
                  for i, f in enumerate(_figure_list(report.pointing_game_figures))]

    doc = _Doc(out, embed_images)
    doc.heading(report.title, 1)
    if report.headline.strip():
        doc.md += [f"**{report.headline.strip()}**", ""]
        doc.html.append(f'<p class="headline"><strong>{html.escape(report.headline.strip())}'
                        "</strong></p>")
    doc.paragraphs(report.text)
    if pg_rows or pg_fig is not None or pg_figures:
        _pointing_game_section(doc, report, pg_rows, pg_settings, pg_fig, pg_figures)
    if acc_rows:
        doc.heading("Accuracy")
        doc.table(acc_rows)
    if figures:
        doc.heading("Explanations")
        for f, p in figures:
            doc.figure(f, p)
    if report.metadata:
        doc.heading("Setup")
        meta_rows = [{"setting": str(k), "value": v} for k, v in report.metadata.items()]
        doc.md += [_md_table(meta_rows), ""]
        doc.html.append(_html_table(meta_rows))
    all_figures = ([pg_fig] if pg_fig else []) + [p for _, p in pg_figures]
    return _write_files(out, name, report, doc, acc_rows, pg_rows, pg_settings,
                        all_figures, [p for _, p in figures])


def _pointing_game_section(doc: _Doc, report: Report, rows: list[dict[str, Any]],
                           settings: list[dict[str, Any]], box_plot: Path | None,
                           figures: list[tuple[ReportFigure, Path]]) -> None:
    doc.heading("Grid pointing game")
    doc.paragraphs("Grid pointing game: the fraction of positive attribution inside the cell "
                   "of the explained class (1 = perfect localisation; the dashed line is the "
                   "uniform baseline 1/n²).")
    if box_plot is not None:
        doc.figure(ReportFigure(box_plot, "Grid pointing game scores per method"), box_plot)
    if rows:
        doc.table(rows, table_id="localisation")
    doc.paragraphs(report.pointing_game_text)
    if settings:
        common, differ = _settings_by_model(settings)
        if common:
            several = len({r["model"] for r in settings}) > 1
            doc.paragraphs(_same_text(common, "Settings" + (" (every network)" if several
                                                            else "")))
        if differ:
            doc.paragraphs("Settings that differ between the networks:")
            doc.md += [_md_table(differ), ""]
            doc.html.append(_html_table(differ))
    for f, p in figures:
        doc.figure(f, p)


def _write_files(out: Path, name: str, report: Report, doc: _Doc,
                 acc_rows: list[dict[str, Any]], pg_rows: list[dict[str, Any]],
                 pg_settings: list[dict[str, Any]], pg_figures: list[Path],
                 figures: list[Path]) -> ReportFiles:
    """Write the Markdown, HTML and JSON files of ``doc`` and return their paths."""
    def rows(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: _jsonable(v) for k, v in r.items()} for r in rs]

    numbers = {
        "title": report.title,
        "headline": report.headline,
        "metadata": {str(k): _jsonable(v) for k, v in report.metadata.items()},
        "accuracy": rows(acc_rows),
        "pointing_game": rows(pg_rows),
        "pointing_game_settings": rows(pg_settings),
        "figures": [doc.rel(p) for p in figures + pg_figures],
    }
    md_path, html_path, json_path = out / f"{name}.md", out / f"{name}.html", out / f"{name}.json"
    atomic_write_json(json_path, numbers)
    atomic_write_text(md_path, "\n".join(doc.md).rstrip() + "\n")
    atomic_write_text(html_path, doc.page(report.title))
    return ReportFiles(markdown=md_path, html=html_path, json=json_path,
                       figures=pg_figures + figures)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v else None
    try:
        return _jsonable(v.item())
    except (AttributeError, ValueError):
        pass
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)
