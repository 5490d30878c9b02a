"""The page: shared controls (model, image) above one tab per view, each wired to
a callback of :mod:`bcosnet.app.views` (gradio's ``blocks_xray`` layout).

Every callback runs inside :func:`_guard`: a problem with what the user chose
(a non-image upload, a checkpoint of another architecture, a channel out of
range, ...) becomes a message in the page's status line, the other outputs keep
what they showed, and the app keeps serving."""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._offline import quiet_gradio

quiet_gradio()
import gradio as gr  # noqa: E402 - after the offline settings

from . import views  # noqa: E402
from .workspace import AppError, LoadedModel, Workspace, load_model  # noqa: E402

__all__ = ["build_app", "TITLE"]

TITLE = "bcosnet — look at a model's reasoning"

#: Errors that are the user's input, shown in the page (the rest are shown too, as
#: an internal error with its type, and printed on the server's terminal).
_USER_ERRORS = (AppError, ValueError, FileNotFoundError, TypeError, MemoryError, OSError)

_CSS = """
#explanation img, #neuron-panel img, #preview img, #grid-image img { image-rendering: pixelated; }
.status-line { min-height: 1.5em; }
"""


def _message(e: BaseException) -> str:
    if isinstance(e, _USER_ERRORS):
        return f"⚠️ **Error:** {e}"
    traceback.print_exc()
    return f"⚠️ **Internal error** ({type(e).__name__}): {e} — the app keeps running"


def _guard(n_out: int, status: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a callback with ``n_out`` outputs, output ``status`` being the status
    line: on an error every other output is left as it was and the status says why.
    On success the status is cleared unless the callback set it."""

    def fail(e: BaseException) -> tuple[Any, ...]:
        out: list[Any] = [gr.update() for _ in range(n_out)]
        out[status] = _message(e)
        return tuple(out)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - every failure becomes a message
                    yield fail(e)
            return gen

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every failure becomes a message
                return fail(e)
        return wrapped

    return deco


def _locked(ws: Workspace, steps: Iterator[Any]) -> Iterator[Any]:
    """Each step of a generator under the workspace's lock, the lock released while
    the page receives the step (gradio may resume a generator in another thread,
    and a comparison the page abandoned must not keep the lock)."""
    while True:
        with ws.lock:
            try:
                item = next(steps)
            except StopIteration:
                return
        yield item


#: gradio fills a parameter whose default is a ``gr.Progress`` with the event's progress bar.
_PROGRESS = gr.Progress()


def _figure_rgb(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def build_app(ws: Workspace, *, figure_dir: str | os.PathLike | None = None) -> Any:
    """The gradio Blocks app of workspace ``ws`` (not launched).  ``figure_dir``:
    where downloadable figures are written (default: a new temporary folder)."""
    from ..explanations.figures import default_smooth
    from ..models import list_models

    fig_dir = Path(figure_dir) if figure_dir is not None else Path(
        tempfile.mkdtemp(prefix="bcosnet-app-"))
    photos = views.sample_photos()
    photo_names = [p for p in views.SAMPLE_PHOTOS if p in photos] + sorted(
        p for p in photos if p not in views.SAMPLE_PHOTOS)

    def model_of(label: str | None) -> LoadedModel:
        return ws.get(label)

    def model_text(lm: LoadedModel) -> str:
        return f"**Model:** {lm.describe()}"

    def smooth_default(lm: LoadedModel) -> int:
        return default_smooth(int(lm.info.image_size[0]))

    def class_choices(lm: LoadedModel) -> list[str]:
        return lm.class_names

    def layer_choices(lm: LoadedModel) -> list[tuple[str, str]]:
        return [(f"{n} ({s[0]} channels, {s[1]}×{s[2]})", n) for n, s in lm.layers()]

    def model_choices() -> list[tuple[str, str]]:
        return [(label if label.startswith(lm.info.name) else f"{label}: {lm.info.name}", label)
                for label, lm in ws.models.items()]

    first = ws.default_label()

    with gr.Blocks(title="bcosnet app", analytics_enabled=False) as demo:
        state = gr.State(None)  # {"chosen": Chosen, "view": ExplainView}
        gr.Markdown(f"# {TITLE}\nExact explanations of a B-cos network — any class, any inner "
                    "neuron — beside the post-hoc methods, and the pointing game's grids.")
        # ------------------------------------------------------------ model
        with gr.Row():
            model_dd = gr.Dropdown(model_choices(), value=first, label="Model",
                                   elem_id="model", scale=1)
            model_md = gr.Markdown(model_text(ws.get(first)) if ws.models else
                                   "No model loaded: load one below.", elem_id="model-info")
        with gr.Accordion("Load another model", open=not ws.models):
            with gr.Row():
                ckpt_tb = gr.Textbox(label="Checkpoint or weights file", elem_id="load-path",
                                     placeholder="runs/fmnist/checkpoint.pt")
                arch_dd = gr.Dropdown([""] + list_models(), value="", label="Architecture "
                                      "(for a plain state dict, or alone: random init)",
                                      elem_id="load-arch")
                load_btn = gr.Button("Load", elem_id="load")
            model_status = gr.Markdown("", elem_id="model-status",
                                       elem_classes="status-line")
        # ------------------------------------------------------------ image
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Upload"):
                    upload = gr.File(label="An image file (any format PIL reads)",
                                     elem_id="upload", type="filepath")
                with gr.Tab("Test image"):
                    lm0 = ws.get(first) if ws.models else None
                    test_cls = gr.Dropdown(class_choices(lm0) if lm0 else [],
                                           value=(class_choices(lm0)[0] if lm0 else None),
                                           label="Class", elem_id="test-class")
                    test_idx = gr.Number(0, precision=0, minimum=0, label="Index within the class",
                                         elem_id="test-index")
                    test_btn = gr.Button("Show this test image", elem_id="test-go")
                with gr.Tab("Photo"):
                    photo_dd = gr.Dropdown(photo_names, value=photo_names[0] if photo_names
                                           else None, label="A photo scikit-image bundles",
                                           elem_id="photo")
                    photo_btn = gr.Button("Use this photo", elem_id="photo-go")
            with gr.Column(scale=1):
                preview = gr.Image(label="What the model sees", elem_id="preview",
                                   interactive=False, height=240, type="numpy")
            with gr.Column(scale=1):
                notes_md = gr.Markdown("Choose an image: upload one, a test image of the "
                                       "model's data set, or a bundled photo.",
                                       elem_id="image-notes")
        status = gr.Markdown("", elem_id="status", elem_classes="status-line")

        with gr.Tabs():
            # -------------------------------------------------------- Explain
            with gr.Tab("Explain", id="explain"):
                with gr.Row():
                    with gr.Column(scale=1):
                        top_label = gr.Label(label="Top classes (click one to explain it)",
                                             elem_id="top5")
                        rule_md = gr.Markdown("", elem_id="prob-rule")
                        classes_dd = gr.Dropdown(class_choices(lm0) if lm0 else [],
                                                 multiselect=True, label="Explained classes "
                                                 "(side by side)", elem_id="classes")
                        smooth_sl = gr.Slider(1, 31, value=smooth_default(lm0) if lm0 else 1,
                                              step=2, label="Alpha smoothing (box kernel; 1 = "
                                              "none)", elem_id="smooth")
                        pct_sl = gr.Slider(90, 100, value=99.5, step=0.1,
                                           label="Alpha percentile", elem_id="percentile")
                    with gr.Column(scale=2):
                        panel = gr.Image(label="Per class (columns): colour explanation W(x) · "
                                         "contributions (red +, blue −) · laid over the image",
                                         elem_id="explanation", interactive=False,
                                         type="numpy")
                        completeness_md = gr.Markdown("", elem_id="completeness")
                        download = gr.DownloadButton("Download the figure (PNG)",
                                                     elem_id="download", value=None)
            # -------------------------------------------------------- Compare
            with gr.Tab("Compare", id="compare"):
                gr.Markdown("The same image and class under every post-hoc method next to "
                            "`bcos` (Fig. A2 of the paper): per-pixel maps, red + / blue −, "
                            "each with its time. Methods run one after another with the "
                            "library's default settings; **Cancel** stops after the running "
                            "method.")
                with gr.Row():
                    cmp_cls = gr.Dropdown(class_choices(lm0) if lm0 else [], label="Class",
                                          elem_id="compare-class")
                    cmp_btn = gr.Button("Compare all methods", elem_id="compare-go")
                    cmp_cancel = gr.Button("Cancel", elem_id="compare-cancel")
                cmp_status = gr.Markdown("", elem_id="compare-status",
                                         elem_classes="status-line")
                cmp_gallery = gr.Gallery(label="Methods", columns=5, elem_id="compare-gallery",
                                         height="auto", object_fit="contain")
                cmp_table = gr.Dataframe(headers=["method", "seconds"], elem_id="compare-table",
                                         interactive=False)
            # -------------------------------------------------------- Neurons
            with gr.Tab("Neurons", id="neurons"):
                with gr.Row():
                    layer_dd = gr.Dropdown(layer_choices(lm0) if lm0 and lm0.is_bcos else [],
                                           label="Layer", elem_id="layer")
                    chan_nb = gr.Number(0, precision=0, minimum=0, label="Channel",
                                        elem_id="channel")
                    neuron_btn = gr.Button("Explain this neuron", elem_id="neuron-go")
                neuron_status = gr.Markdown("", elem_id="neuron-status",
                                            elem_classes="status-line")
                with gr.Row():
                    neuron_panel = gr.Image(label="The neuron (summed over locations) for "
                                            "this image: W(x) · contributions · overlay",
                                            elem_id="neuron-panel", interactive=False,
                                            type="numpy")
                    neuron_md = gr.Markdown("", elem_id="neuron-completeness")
                gr.Markdown("### Test images that activate it most")
                with gr.Row():
                    top_src = gr.Radio([("computed now", "compute"),
                                        ("a saved `bcosnet neurons` run", "saved")],
                                       value="compute", label="Source", elem_id="top-source")
                    top_limit = gr.Number(2000, precision=0, minimum=1,
                                          label="Rank the first N test images",
                                          elem_id="top-limit")
                    top_btn = gr.Button("Show top images", elem_id="top-go")
                top_note = gr.Markdown("", elem_id="top-note")
                top_gallery = gr.Gallery(label="image | its explanation of the neuron",
                                         columns=4, elem_id="top-gallery", height="auto")
            # -------------------------------------------------------- Pointing game
            with gr.Tab("Pointing game", id="pointing"):
                pg_dirs = list(ws.pointing_game_dirs())
                gr.Markdown("The main job's grid pointing game: n×n grids of confidently, "
                            "correctly classified test images; every method's map of one "
                            "cell's class, with its score (the share of positive attribution "
                            "in that cell) computed here and as the game saved it." if pg_dirs
                            else "No pointing game here: start the app with a main job's "
                            "folder (`bcosnet app outputs/main`).")
                with gr.Row():
                    pg_net = gr.Dropdown(pg_dirs, value=pg_dirs[0] if pg_dirs else None,
                                         label="Network", elem_id="pg-network")
                    pg_grid = gr.Number(0, precision=0, minimum=0, label="Grid",
                                        elem_id="pg-grid")
                    pg_cell = gr.Number(4, precision=0, minimum=0,
                                        label="Cell (row-major: 0 top left, 4 the centre "
                                        "of a 3×3 grid)", elem_id="pg-cell")
                    pg_btn = gr.Button("Show grid", elem_id="pg-go")
                    pg_cancel = gr.Button("Cancel", elem_id="pg-cancel")
                pg_status = gr.Markdown("", elem_id="pg-status", elem_classes="status-line")
                with gr.Row():
                    pg_image = gr.Image(label="Grid (explained cell framed)",
                                        elem_id="grid-image", interactive=False, type="numpy",
                                        scale=1)
                    pg_gallery = gr.Gallery(label="Every method's map of the framed cell's "
                                            "class", columns=4, elem_id="pg-gallery",
                                            height="auto", scale=3)
                pg_cells = gr.Dataframe(label="Saved scores of this grid (method × cell)",
                                        elem_id="pg-cells", interactive=False)
                gr.Markdown("### Results")
                pg_table = gr.Dataframe(headers=["network", "method", "grids", "median",
                                                 "mean", "q1", "q3"], elem_id="pg-results",
                                        interactive=False)
                pg_box = gr.Image(label="Box plot", elem_id="pg-boxplot", interactive=False,
                                  type="numpy")

        # ================================================================ callbacks
        image_outputs = [state, preview, notes_md, top_label, rule_md, classes_dd, panel,
                         completeness_md, cmp_cls, status]

        def shown(lm: LoadedModel, chosen: views.Chosen, classes: Any, smooth: Any,
                  pct: Any) -> tuple[Any, ...]:
            view = views.explain_image(lm, chosen, classes or None, smooth=int(smooth),
                                       percentile=float(pct))
            why = ("a B-cos network is trained with binary cross-entropy"
                   if view.rule == "sigmoid" else "a conventional network")
            rule = f"Probabilities: the {view.rule} of the logits ({why})."
            notes = f"**{chosen.name}**\n\n" + "\n\n".join(f"- {n}" for n in chosen.notes)
            return ({"chosen": chosen, "view": view}, chosen.preview(), notes, view.top, rule,
                    gr.update(choices=lm.class_names, value=view.classes), view.panel,
                    view.text(), gr.update(choices=lm.class_names, value=view.classes[0]), "")

        @_guard(len(image_outputs), len(image_outputs) - 1)
        def on_upload(label: str, path: str | None, smooth: Any, pct: Any) -> Any:
            if not path:
                raise AppError("no file received")
            lm = model_of(label)
            with ws.lock:
                return shown(lm, views.choose_file(lm, path), None, smooth, pct)

        @_guard(len(image_outputs), len(image_outputs) - 1)
        def on_test(label: str, cls: str, idx: Any, smooth: Any, pct: Any) -> Any:
            lm = model_of(label)
            if idx is None:
                raise AppError("give an index within the class (0 = its first test image)")
            with ws.lock:
                return shown(lm, views.choose_test_image(ws, lm, cls, int(idx)), None, smooth,
                             pct)

        @_guard(len(image_outputs), len(image_outputs) - 1)
        def on_photo(label: str, name: str, smooth: Any, pct: Any) -> Any:
            lm = model_of(label)
            with ws.lock:
                return shown(lm, views.choose_sample(lm, name), None, smooth, pct)

        explain_outputs = [state, classes_dd, panel, completeness_md, status]

        def _reexplain(label: str, st: Any, classes: list[str], smooth: Any, pct: Any) -> Any:
            if not st:
                raise AppError("choose an image first")
            lm = model_of(label)
            with ws.lock:
                view = views.explain_image(lm, st["chosen"], classes, smooth=int(smooth),
                                           percentile=float(pct))
            return ({**st, "view": view}, gr.update(value=view.classes), view.panel,
                    view.text(), "")

        @_guard(len(explain_outputs), len(explain_outputs) - 1)
        def on_class_click(label: str, st: Any, classes: list[str], smooth: Any, pct: Any,
                           evt: gr.SelectData) -> Any:
            name = evt.value if isinstance(evt.value, str) else str(evt.value)
            return _reexplain(label, st, views.toggle_class(classes or [], name), smooth, pct)

        @_guard(len(explain_outputs), len(explain_outputs) - 1)
        def on_classes(label: str, st: Any, classes: list[str], smooth: Any, pct: Any) -> Any:
            if not classes:
                raise AppError("choose at least one class to explain")
            return _reexplain(label, st, classes, smooth, pct)

        @_guard(2, 1)
        def on_render(st: Any, smooth: Any, pct: Any) -> Any:
            if not st:
                return gr.update(), ""
            view = st["view"]
            return views.render_explanation(view.explanation, st["chosen"].image,
                                            smooth=int(smooth), percentile=float(pct)), ""

        @_guard(2, 1)
        def on_figure(label: str, st: Any, smooth: Any, pct: Any) -> Any:
            if not st:
                return gr.update(), ""
            lm = model_of(label)
            path = views.explanation_figure(lm, st["chosen"], st["view"], smooth=int(smooth),
                                            percentile=float(pct), folder=fig_dir)
            return gr.update(value=str(path)), gr.update()

        # ---- model
        model_outputs = [model_md, test_cls, classes_dd, cmp_cls, layer_dd, smooth_sl, state,
                         notes_md, model_status]

        def model_shown(lm: LoadedModel) -> tuple[Any, ...]:
            names = lm.class_names
            layers = layer_choices(lm) if lm.is_bcos else []
            return (model_text(lm), gr.update(choices=names, value=names[0]),
                    gr.update(choices=names, value=[]), gr.update(choices=names, value=None),
                    gr.update(choices=layers, value=layers[0][1] if layers else None),
                    smooth_default(lm), None,
                    f"Choose an image for {lm.label}: upload one, a test image of its data "
                    "set, or a bundled photo.")

        @_guard(len(model_outputs), len(model_outputs) - 1)
        def on_model(label: str) -> Any:
            lm = model_of(label)
            extra = "" if lm.is_bcos else ("ℹ️ a conventional network: no W(x) explanation; "
                                           "its post-hoc maps are in Compare")
            return (*model_shown(lm), extra)

        load_outputs = [model_dd, *model_outputs]

        @_guard(len(load_outputs), len(load_outputs) - 1)
        def on_load(path: str, arch: str) -> Any:
            path = (path or "").strip() or None
            arch = (arch or "").strip() or None
            with ws.lock:
                model = load_model(checkpoint=path, model=arch)
            name = model.model_info.name
            label = f"{name} ({Path(path).name})" if path else f"{name} (random init)"
            note = "" if path else ("randomly initialised: its explanations show the "
                                    "plumbing, not a trained model")
            lm = ws.add(label, model, path or "random initialisation", note)
            return (gr.update(choices=model_choices(), value=label), *model_shown(lm),
                    f"loaded {label}")

        # ---- compare
        @_guard(3, 2)
        def on_compare(label: str, st: Any, cls: str, progress: Any = _PROGRESS) -> Any:
            if not st:
                raise AppError("choose an image first")
            lm = model_of(label)
            cls = cls or st["view"].classes[0]

            def prog(i: int, n: int, text: str) -> None:
                progress((i, n), desc=text)

            for panels, total in _locked(ws, views.compare_methods(lm, st["chosen"], cls,
                                                                   progress=prog)):
                rows = [[p.method, round(p.seconds, 3)] for p in panels
                        if p.caption.startswith(p.method + " —")]
                state_text = (f"all {total} methods done" if len(rows) == total else
                              f"{len(rows)} of {total} methods done…")
                yield [(p.image, p.caption) for p in panels], rows, \
                    f"{state_text} — class {cls}"

        # ---- neurons
        @_guard(3, 2)
        def on_neuron(label: str, st: Any, layer: str, ch: Any, smooth: Any, pct: Any) -> Any:
            if not st:
                raise AppError("choose an image first")
            lm = model_of(label)
            with ws.lock:
                nv = views.neuron_view(lm, st["chosen"], layer, ch, smooth=int(smooth),
                                       percentile=float(pct))
            return nv.panel, nv.text(), ""

        @_guard(3, 2)
        def on_top(label: str, layer: str, ch: Any, src: str, limit: Any, smooth: Any,
                   pct: Any, progress: Any = _PROGRESS) -> Any:
            lm = model_of(label)
            with ws.lock:
                items, note = views.top_images(ws, lm, layer, ch, source=src,
                                               limit=int(limit or 2000), smooth=int(smooth),
                                               percentile=float(pct), progress=progress)
            return items, note, ""

        # ---- pointing game
        @_guard(4, 3)
        def on_grid(net: str, grid: Any, cell: Any, progress: Any = _PROGRESS) -> Any:
            if not net:
                raise AppError("no pointing game here: start the app with a main job's folder")

            def prog(i: int, n: int, text: str) -> None:
                progress((i, n), desc=text)

            for img, panels, table, total in _locked(ws, views.grid_view(
                    ws, net, int(grid or 0), None if cell is None else int(cell),
                    progress=prog)):
                headers = ["method"] + [f"cell {i}" for i in range(len(table[0]) - 1)] \
                    if table else []
                state_text = (f"grid {int(grid or 0)}: all {total} methods shown"
                              if len(panels) == total else
                              f"grid {int(grid or 0)}: {len(panels)} of {total} methods…")
                yield img, panels, gr.update(value=table, headers=headers) if table \
                    else gr.update(), state_text

        @_guard(3, 2)
        def on_pg_load() -> Any:
            if not ws.pointing_game_dirs():
                return gr.update(), gr.update(), ""
            rows, fig = views.pointing_game_summary(ws)
            return rows, _figure_rgb(fig), ""

        # ================================================================ wiring
        settings = [smooth_sl, pct_sl]
        upload.upload(on_upload, [model_dd, upload, *settings], image_outputs,
                      show_progress="minimal").then(
            lambda: None, None, upload).then(  # ready for the next file
            on_figure, [model_dd, state, *settings], [download, status])
        test_btn.click(on_test, [model_dd, test_cls, test_idx, *settings], image_outputs).then(
            on_figure, [model_dd, state, *settings], [download, status])
        photo_btn.click(on_photo, [model_dd, photo_dd, *settings], image_outputs).then(
            on_figure, [model_dd, state, *settings], [download, status])
        top_label.select(on_class_click, [model_dd, state, classes_dd, *settings],
                         explain_outputs).then(
            on_figure, [model_dd, state, *settings], [download, status])
        classes_dd.input(on_classes, [model_dd, state, classes_dd, *settings],
                         explain_outputs).then(
            on_figure, [model_dd, state, *settings], [download, status])
        for sl in settings:
            sl.release(on_render, [state, *settings], [panel, status]).then(
                on_figure, [model_dd, state, *settings], [download, status])
        model_dd.input(on_model, [model_dd], model_outputs)
        load_btn.click(on_load, [ckpt_tb, arch_dd], load_outputs)
        cmp_event = cmp_btn.click(on_compare, [model_dd, state, cmp_cls],
                                  [cmp_gallery, cmp_table, cmp_status])
        cmp_cancel.click(lambda: "cancelled", None, [cmp_status], cancels=[cmp_event])
        neuron_btn.click(on_neuron, [model_dd, state, layer_dd, chan_nb, *settings],
                         [neuron_panel, neuron_md, neuron_status])
        top_btn.click(on_top, [model_dd, layer_dd, chan_nb, top_src, top_limit, *settings],
                      [top_gallery, top_note, neuron_status])
        pg_event = pg_btn.click(on_grid, [pg_net, pg_grid, pg_cell],
                                [pg_image, pg_gallery, pg_cells, pg_status])
        pg_cancel.click(lambda: "cancelled", None, [pg_status], cancels=[pg_event])
        demo.load(on_pg_load, None, [pg_table, pg_box, pg_status])
    demo.queue(default_concurrency_limit=1)
    return demo


CSS = _CSS
