"""A self-contained evaluation report: Markdown + HTML with figures.

    from bcosnet.evaluation import Report, write_report
    files = write_report("runs/fmnist/report", Report(
        title="B-cos on Fashion-MNIST",
        text="One B-cos network and its standard twin, 10 epochs each.",
        metadata={"data": "Fashion-MNIST test (10 000 images)", "epochs": 10},
        accuracy=[{"model": "B-cos", "kind": "bcos", "accuracy": 90.12},
                  {"model": "standard", "kind": "standard", "accuracy": 91.30}],
        pointing_game={"B-cos": bcos_result, "standard": std_result},
        figures=[("Explanations of the most confident test images", "expl.png")],
    ))
    files.html, files.markdown

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

__all__ = ["Report", "ReportFigure", "ReportFiles", "format_number", "write_report"]

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


def _pg_tables(
    pg: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, PointingGameResult], list[dict[str, Any]]]:
    """Summary rows, the results that have scores (for the box plot), settings rows."""
    rows: list[dict[str, Any]] = []
    plottable: dict[str, PointingGameResult] = {}
    setting_rows: list[dict[str, Any]] = []
    for label, r in pg.items():
        if isinstance(r, Mapping) and any(
            "scores" in v for v in r.get("methods", {}).values()
        ):
            r = PointingGameResult.from_dict(r)
        if isinstance(r, PointingGameResult):
            plottable[label] = r
            n, settings = r.n, dict(r.settings)
            per_method = r.grids_per_method
            summaries = {m: s.to_dict() for m, s in r.summary().items()}
        elif isinstance(r, Mapping) and "n" in r and "methods" in r:
            n, settings = int(r["n"]), dict(r.get("settings", {}))
            summaries = {m: dict(v["summary"]) for m, v in r["methods"].items()}
            per_method = {m: v.get("grids", r.get("num_grids")) for m, v in r["methods"].items()}
        else:
            raise TypeError(
                f"pointing_game[{label!r}] must be a PointingGameResult or its to_dict() form"
            )
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
                                     "value": v if isinstance(v, (int, float, str)) or v is None
                                     else json.dumps(v)})
    return rows, plottable, setting_rows


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
"""


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]


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
    if isinstance(report, Mapping):
        report = Report.from_dict(report)
    if not isinstance(report, Report):
        raise TypeError(f"report must be a Report or a dict, got {type(report).__name__}")
    if not isinstance(report.title, str) or not report.title.strip():
        raise ValueError("the report needs a non-empty title")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be a plain file name (letters, digits, _.-), got {name!r}")
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
    figures = [
        (f, _place_figure(Path(f.path), out, fig_dir, i + 1))
        for i, f in enumerate(_figure_list(report.figures))
    ]
    pg_figures = [
        (f, _place_figure(Path(f.path), out, fig_dir, 50 + i))
        for i, f in enumerate(_figure_list(report.pointing_game_figures))
    ]

    def rel(p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), out.resolve())).as_posix()

    md: list[str] = [f"# {report.title}", ""]
    hb: list[str] = [f"<h1>{html.escape(report.title)}</h1>"]
    for p in _paragraphs(report.text):
        md += [p, ""]
        hb.append(f"<p>{html.escape(p)}</p>")
    if report.metadata:
        meta_rows = [{"setting": str(k), "value": v} for k, v in report.metadata.items()]
        md += ["## Setup", "", _md_table(meta_rows), ""]
        hb += ["<h2>Setup</h2>", _html_table(meta_rows)]
    if acc_rows:
        md += ["## Accuracy", "", _md_table(acc_rows), ""]
        hb += ["<h2>Accuracy</h2>", _html_table(acc_rows)]
    if pg_rows or pg_fig is not None or pg_figures:
        intro = (
            "Grid pointing game: the fraction of positive attribution inside the cell of "
            "the explained class (1 = perfect localisation; the dashed line is the "
            "uniform baseline 1/n²)."
        )
        md += ["## Grid pointing game", "", intro, ""]
        hb += ["<h2>Grid pointing game</h2>", f"<p>{html.escape(intro)}</p>"]
        for p in _paragraphs(report.pointing_game_text):
            md += [p, ""]
            hb.append(f"<p>{html.escape(p)}</p>")
        if pg_rows:
            md += [_md_table(pg_rows), ""]
            hb.append(_html_table(pg_rows, table_id="localisation"))
        if pg_settings:
            md += ["Settings used:", "", _md_table(pg_settings), ""]
            hb += ["<p>Settings used:</p>", _html_table(pg_settings)]
        if pg_fig is not None:
            md += [f"![Grid pointing game scores per method]({rel(pg_fig)})", ""]
            hb.append(_html_image(pg_fig, rel(pg_fig), "Grid pointing game scores per method",
                                  embed_images))
        for f, p in pg_figures:
            md += [f"![{f.caption or p.name}]({rel(p)})", ""]
            if f.caption:
                md += [f"*{f.caption}*", ""]
            hb.append(_html_image(p, rel(p), f.caption, embed_images))
    if figures:
        md += ["## Explanations", ""]
        hb.append("<h2>Explanations</h2>")
        for f, p in figures:
            md += [f"![{f.caption or p.name}]({rel(p)})", ""]
            if f.caption:
                md += [f"*{f.caption}*", ""]
            hb.append(_html_image(p, rel(p), f.caption, embed_images))

    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(report.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(hb) + "\n</body>\n</html>\n"
    )
    numbers = {
        "title": report.title,
        "metadata": {str(k): _jsonable(v) for k, v in report.metadata.items()},
        "accuracy": [{k: _jsonable(v) for k, v in r.items()} for r in acc_rows],
        "pointing_game": [{k: _jsonable(v) for k, v in r.items()} for r in pg_rows],
        "pointing_game_settings": [{k: _jsonable(v) for k, v in r.items()} for r in pg_settings],
        "figures": [rel(p) for _, p in figures] + ([rel(pg_fig)] if pg_fig else [])
        + [rel(p) for _, p in pg_figures],
    }
    md_path, html_path, json_path = out / f"{name}.md", out / f"{name}.html", out / f"{name}.json"
    atomic_write_json(json_path, numbers)
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    atomic_write_text(html_path, doc)
    return ReportFiles(
        markdown=md_path, html=html_path, json=json_path,
        figures=([pg_fig] if pg_fig else []) + [p for _, p in pg_figures]
        + [p for _, p in figures],
    )


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
