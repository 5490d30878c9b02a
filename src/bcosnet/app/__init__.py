"""``bcosnet app``: look at a model's reasoning in the browser.

A local web app (Gradio) with one tab per view — Explain (top classes, the
colour explanation W(x) of any class, its contribution map and completeness),
Compare (every post-hoc method beside ``bcos``, timed), Neurons (any channel of
any layer, and the test images that drive it) and Pointing game (a main job's
grids, maps and scores).  Its callbacks (:mod:`bcosnet.app.views`) call the
public API; they do not need gradio, which only :mod:`bcosnet.app.ui` imports
(the ``app`` extra: ``pip install "bcosnet[app]"``).

    from bcosnet.app import Workspace, serve
    serve(Workspace.from_main_job("outputs/main"))          # what `bcosnet app` does

See docs/app.md.
"""

from .server import launch, serve
from .workspace import AppError, LoadedModel, Workspace, find_main_job, load_model

__all__ = ["AppError", "LoadedModel", "Workspace", "find_main_job", "launch", "load_model",
           "serve"]
