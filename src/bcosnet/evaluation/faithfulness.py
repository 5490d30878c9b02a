"""Deletion and insertion (Petsiuk, Das, Saenko, "RISE", BMVC 2018): is an
explanation *faithful* — does removing what it marks as most important hurt the
class score most?

For every image, pixels are ranked by their attribution (summed over channels,
most relevant first; ties in a seeded random order).  In ``steps`` equal steps:

* **deletion**: the top-ranked fraction ``k/steps`` of pixels is replaced by
  the baseline image (black by default); the curve is the class score after
  each step, starting from the intact image.  Lower area under the curve =
  the explanation found what the score depends on;
* **insertion**: the top-ranked fraction is revealed on the baseline; the curve
  starts at the baseline's score.  Higher area = better.

The score is what the model was trained to output: ``sigmoid`` of the logit for
B-cos networks (binary cross-entropy), ``softmax`` for conventional ones
(``output="auto"``, the rule the perturbation attribution methods follow).
The area is the trapezoid rule over the removed fraction in [0, 1].  A random
order gives the baseline row every method should beat.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.modules import eval_mode, first_output
from .._utils.store import ResultStore, model_fingerprint
from .._utils.validate import check_choice, check_int
from ..attribution.base import apply_output, default_output
from ..training.distributed import DistEnv
from .distributed import agree, check_chunk, chunk_ranges, main_first, share, together
from .pointing_game._model import model_device_dtype

__all__ = ["DeletionInsertion", "FaithfulnessResult", "auto_output", "bcos_relative_fn",
           "deletion_insertion", "evaluate_faithfulness", "faithfulness_table", "pixel_order"]

_OUTPUTS = ("auto", "logit", "sigmoid", "softmax")


def auto_output(model: nn.Module) -> str:
    """``"sigmoid"`` for a B-cos network (it has B-cos layers and was trained with
    BCE), ``"softmax"`` otherwise — the library's one rule,
    :func:`bcosnet.nn.is_bcos_model` (as the perturbation methods' default)."""
    return default_output(model)


@dataclass
class DeletionInsertion:
    """Curves and areas of one method.

    Attributes:
        fractions: ``steps + 1`` removed (deletion) / revealed (insertion) fractions.
        deletion, insertion: N×(steps + 1) class scores along the curves (or ``None``).
        output: the score used ("sigmoid", "softmax" or "logit").
    """

    fractions: Tensor
    deletion: Tensor | None
    insertion: Tensor | None
    output: str

    @staticmethod
    def _auc(curve: Tensor, x: Tensor) -> Tensor:
        return torch.trapezoid(curve, x.to(curve), dim=-1)

    @property
    def deletion_auc(self) -> Tensor:
        """Area under each image's deletion curve, N (lower = more faithful)."""
        if self.deletion is None:
            raise ValueError("deletion was not computed (modes excluded it)")
        return self._auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> Tensor:
        """Area under each image's insertion curve, N (higher = more faithful)."""
        if self.insertion is None:
            raise ValueError("insertion was not computed (modes excluded it)")
        return self._auc(self.insertion, self.fractions)


def pixel_order(maps: Tensor, *, seed: int = 0, first: int = 0) -> Tensor:
    """Pixel indices (N×H·W, long) from most to least relevant; equal values in a
    seeded random order (so a constant map gives a random order).  ``first``: the
    position of ``maps[0]`` in a longer sequence of maps (a chunk of it): each map
    gets the tie-breaking order it gets there."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be N×H×W (sum attributions over channels), got "
                         f"{tuple(maps.shape)}")
    n = maps.shape[0]
    flat = maps.detach().reshape(n, -1).double()
    g = torch.Generator().manual_seed(seed)
    for _ in range(check_int("first", first, 0)):  # the orders of the maps before these
        torch.randperm(flat.shape[1], generator=g)
    perm = torch.stack([torch.randperm(flat.shape[1], generator=g) for _ in range(n)])
    perm = perm.to(flat.device)
    # Sort a random permutation of the pixels stably by value: ties keep the random order.
    shuffled = flat.gather(1, perm)
    idx = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return perm.gather(1, idx)


def _scores(model: nn.Module, x: Tensor, targets: Tensor, output: str) -> Tensor:
    return apply_output(first_output(model(x)), output).gather(1, targets[:, None])[:, 0]


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor | int,
    *,
    steps: int = 20,
    baseline: str | float | Tensor = "black",
    output: str = "auto",
    modes: tuple[str, ...] = ("deletion", "insertion"),
    batch_size: int = 256,
    seed: int = 0,
    first: int = 0,
) -> DeletionInsertion:
    """Deletion and insertion curves of attribution ``maps`` for ``images``.

    Args:
        model: the classifier (images in [0, 1] → logits); evaluated in eval mode
            without gradients (its mode is restored).
        images: N×C×H×W in [0, 1].
        maps: attributions, N×H×W or N×C'×H×W (summed over channels): the pixel
            ranking.  A constant map gives a seeded random order (the baseline row).
        target: the explained class per image (N) or one int for all.
        steps: number of equal steps (≥ 1); ``steps + 1`` points per curve.
        baseline: what deleted pixels become / what insertion starts from
            (``"black"``, ``"white"``, ``"mean"``, ``"blur"``, a grey level, an image).
        output: ``"auto"`` (sigmoid for B-cos networks, softmax otherwise),
            ``"sigmoid"``, ``"softmax"`` or ``"logit"``.
        modes: which curves to compute.
        batch_size: perturbed images per forward pass.
        seed: tie-breaking order of equal attributions.
        first: the position of ``images[0]`` in a longer sequence (a chunk of a larger
            call: each image gets the tie-breaking order it gets there,
            :func:`pixel_order`).
    """
    from ..attribution.base import make_baseline

    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty N×C×H×W tensor in [0, 1]")
    n, _, h, w = images.shape
    if maps.dim() == 4:
        maps = maps.sum(1)
    maps = maps.to(images.device)
    if tuple(maps.shape) != (n, h, w):
        raise ValueError(
            f"maps must be N×H×W = {(n, h, w)} (or N×C×H×W) to rank the images' pixels, got "
            f"{tuple(maps.shape)} — upsample coarse maps (e.g. Grad-CAM) to the image size first"
        )
    check_int("steps", steps, 1)
    check_choice("output", output, _OUTPUTS)
    bad = [m for m in modes if m not in ("deletion", "insertion")]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of ('deletion', 'insertion'), got "
                         f"{modes!r}")
    if output == "auto":
        output = auto_output(model)
    t = torch.as_tensor(target, device=images.device).long()
    t = t.expand(n) if t.dim() == 0 else t
    if t.shape != (n,):
        raise ValueError(f"target must be an int or one class per image ({n}), got shape "
                         f"{tuple(t.shape)}")

    base = make_baseline(images, baseline)
    order = pixel_order(maps, seed=seed, first=first)
    hw = h * w
    counts = [round(k * hw / steps) for k in range(steps + 1)]
    # rank[i, p] = position of pixel p in image i's order.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(n, -1))

    with eval_mode(model):
        curves: dict[str, Tensor] = {}
        for mode in modes:
            out = torch.empty(n, steps + 1, dtype=torch.float64)
            jobs = [(i, k) for i in range(n) for k in range(steps + 1)]
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start:start + batch_size]
                ii = torch.tensor([i for i, _ in chunk], device=images.device)
                kk = torch.tensor([counts[k] for _, k in chunk], device=images.device)
                # top-k pixels of each job's image: rank < count
                top = (rank[ii] < kk[:, None]).view(-1, 1, h, w)
                # deletion: top pixels → baseline; insertion: top pixels ← image on baseline
                if mode == "deletion":
                    x = torch.where(top, base[ii], images[ii])
                else:
                    x = torch.where(top, images[ii], base[ii])
                s = _scores(model, x, t[ii], output).double().cpu()
                for (i, k), v in zip(chunk, s.tolist()):
                    out[i, k] = v
            curves[mode] = out
    return DeletionInsertion(
        fractions=torch.tensor(counts, dtype=torch.float64) / hw,
        deletion=curves.get("deletion"), insertion=curves.get("insertion"), output=output,
    )


def faithfulness_table(
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    methods: Mapping[str, Callable[[Tensor, Tensor], Tensor] | str],
    **kwargs: object,
) -> dict[str, DeletionInsertion]:
    """:func:`deletion_insertion` for several methods on the same images.

    ``methods``: name → ``fn(images, target) -> maps`` (N×H×W or N×C×H×W), or the
    string ``"random"`` for the random-order row (a constant map: ties are broken
    in a seeded random order)."""
    out: dict[str, DeletionInsertion] = {}
    for name, fn in methods.items():
        if fn == "random":
            maps = torch.zeros(images.shape[0], *images.shape[-2:])
        else:
            maps = fn(images, target)  # type: ignore[operator]
        out[name] = deletion_insertion(model, images, maps, target, **kwargs)  # type: ignore[arg-type]
    return out


def bcos_relative_fn(model: nn.Module, baseline: str | float = "black"
                     ) -> Callable[[Tensor, Tensor], Tensor]:
    """The B-cos explanation *relative to the deletion baseline*: per pixel
    ``Σ_c W_t(x)_c · (e(x) − e(x₀))_c`` with ``e`` the model's input encoding and
    ``x₀`` the baseline image (N×H×W maps).

    ``bcos`` ranks pixels by ``Σ_c W_t(x)_c · e(x)_c``; with the ``[x, 1 − x]``
    encoding a black pixel still contributes ``W_t(x)`` of its inverse channel, so
    deleting a pixel to black removes ``x·(W_x − W_{1−x})``, not its contribution.
    This map is that change with ``W(x)`` held fixed (for a network whose ``W``
    does not depend on the input it sums exactly to ``f(x) − f(x₀)``)."""
    from .._utils.modules import find_input_encoding
    from ..attribution.base import make_baseline
    from ..explanations import explain

    enc = find_input_encoding(model)
    if enc is None:
        raise ValueError("bcos-relative needs a B-cos network with an input encoding "
                         "(e.g. AddInverse); this model has none")

    def bcos_relative(images: Tensor, targets: Tensor) -> Tensor:
        ex = explain(model, images, target=targets.reshape(-1, 1))
        with torch.no_grad():
            e0 = enc(make_baseline(images, baseline))
        return (ex.weights[:, 0] * (ex.inputs - e0)).sum(1).detach()

    return bcos_relative


# ----------------------------------------------------------------------------- a whole study
@dataclass
class FaithfulnessResult:
    """Deletion/insertion of several methods on the same test images
    (:func:`evaluate_faithfulness`).

    Attributes:
        curves: method name → its :class:`DeletionInsertion` (N images).
        indices: the data set indices of the N images; ``targets``: the explained classes.
        settings: how it was computed (images, steps, baseline, target rule, ...).
        seconds: method → wall time of its maps and curves (0 when loaded from disk).
    """

    curves: dict[str, DeletionInsertion]
    indices: list[int]
    targets: list[int]
    settings: dict[str, object]
    seconds: dict[str, float]

    def summary(self, first: int | None = None) -> dict[str, dict[str, float]]:
        """method → ``images`` and the mean and standard error of the deletion and
        insertion AUCs (over the method's images, or the ``first`` of them: every
        method's images begin with the same ones)."""
        out: dict[str, dict[str, float]] = {}
        for name, r in self.curves.items():
            curve = r.deletion if r.deletion is not None else r.insertion
            assert curve is not None
            count = int(curve.shape[0]) if first is None else min(first, int(curve.shape[0]))
            row: dict[str, float] = {"images": float(count)}
            for mode in ("deletion", "insertion"):
                if getattr(r, mode) is None:
                    continue
                auc = getattr(r, f"{mode}_auc")[:count]
                row[f"{mode}_auc"] = float(auc.mean())
                row[f"{mode}_sem"] = float(auc.std() / len(auc) ** 0.5) if len(auc) > 1 else 0.0
            out[name] = row
        return out

    def to_markdown(self, title: str | None = None) -> str:
        """A Markdown table: one row per method, AUC ± standard error."""
        s = self.settings
        lines = [f"### {title}", ""] if title else []
        lines += [
            f"{s['images']} test images (a seeded sample; fewer for some methods where the "
            f"images column says so: the first of the same sample), {s['steps']} steps, "
            f"baseline {s['baseline']}, score {s['output']}, target {s['target']}. "
            "Deletion: lower = more faithful; insertion: higher = more faithful (mean ± "
            "standard error of the per-image AUC).",
            "",
        ]
        lines += self._rows(self.summary())
        counts = sorted({int(r["images"]) for r in self.summary().values()})
        if len(counts) > 1:
            lines += ["", f"The same, every method on the first {counts[0]} images only:", ""]
            lines += self._rows(self.summary(first=counts[0]))
        return "\n".join(lines) + "\n"

    def _rows(self, summary: dict[str, dict[str, float]]) -> list[str]:
        lines = ["| method | images | deletion AUC ↓ | insertion AUC ↑ | time (s) |",
                 "|---|---|---|---|---|"]
        for name, row in summary.items():
            cells = [f"{row[f'{m}_auc']:.4f} ± {row[f'{m}_sem']:.4f}" if f"{m}_auc" in row
                     else "–" for m in ("deletion", "insertion")]
            lines.append(f"| {name} | {int(row['images'])} | {cells[0]} | {cells[1]} | "
                         f"{self.seconds.get(name, 0):.1f} |")
        return lines

    def to_dict(self) -> dict[str, object]:
        return {"settings": self.settings, "summary": self.summary(), "seconds": self.seconds,
                "indices": self.indices, "targets": self.targets}


def _method_record(r: DeletionInsertion, seconds: float) -> dict[str, object]:
    return {"output": r.output, "seconds": seconds, "fractions": r.fractions.tolist(),
            "deletion": None if r.deletion is None else r.deletion.tolist(),
            "insertion": None if r.insertion is None else r.insertion.tolist()}


def _load_record(rec: dict) -> DeletionInsertion:
    def t(v: object) -> Tensor | None:
        return None if v is None else torch.tensor(v, dtype=torch.float64)

    fr = t(rec["fractions"])
    assert fr is not None
    return DeletionInsertion(fractions=fr, deletion=t(rec["deletion"]),
                             insertion=t(rec["insertion"]), output=str(rec["output"]))


def evaluate_faithfulness(
    model: nn.Module,
    dataset: object,
    methods: list[str] | tuple[str, ...] | Mapping[str, Callable[[Tensor, Tensor], Tensor] | str],
    *,
    images: int = 500,
    steps: int = 20,
    target: str = "pred",
    baseline: str | float = "black",
    output: str = "auto",
    modes: tuple[str, ...] = ("deletion", "insertion"),
    method_settings: Mapping[str, Mapping[str, object]] | None = None,
    images_per_method: Mapping[str, int] | None = None,
    attribution_batch_size: int = 50,
    batch_size: int = 256,
    seed: int = 0,
    results_dir: str | os.PathLike | None = None,
    progress: bool = False,
    ranks: DistEnv | None = None,
    chunk: int | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion of every method on the same ``images`` test images.

    Args:
        model: the classifier (raw images in [0, 1] → logits).
        dataset: a map-style data set of ``(image, label)`` pairs (e.g. the test split).
        methods: names (``"bcos"``, ``"bcos-relative"`` (:func:`bcos_relative_fn` with
            this ``baseline``), any :mod:`bcosnet.attribution` method, ``"random"``
            for the random-order row) or a dict name → ``fn(images, targets) -> maps``
            or ``"random"``.
        images: how many images, drawn without replacement with ``seed`` (all when
            the data set is smaller and ``images`` ≥ its length).
        steps: as :func:`deletion_insertion`.
        baseline: as :func:`deletion_insertion`.
        output: as :func:`deletion_insertion`.
        modes: as :func:`deletion_insertion`.
        batch_size: as :func:`deletion_insertion`.
        target: ``"pred"`` (the model's predicted class: what its output says) or
            ``"label"`` (the true class).
        method_settings: per-method keyword arguments of the attribution methods.
        images_per_method: fewer images for some (expensive) methods: the first
            ``k`` of the same sample (``summary(first=k)`` compares every method there).
        attribution_batch_size: images per attribution call.
        seed: image sample and tie-breaking order.
        results_dir: when given, each method's curves are one item of a
            :class:`~bcosnet._utils.store.ResultStore` there (``<method>.json``), and a
            re-run with the same settings loads them instead of recomputing; the
            folder is keyed by the settings and the model (``store.json``), each
            method by its own settings — results of others raise
            :class:`~bcosnet._utils.store.SettingsMismatchError` (a ValueError naming
            each difference) before anything is computed.
        progress: a progress line per method.
        ranks: this process's place among several (``torchrun``; a
            :class:`~bcosnet.training.distributed.DistEnv`), which call this function
            with the same arguments and ``results_dir``: rank 0 draws the image sample
            and the explained classes (item ``image-sample``), each method's images
            are split into chunks of ``chunk`` — one item each, shared out among the
            ranks — and rank 0 merges them into the method's item
            (:mod:`bcosnet.evaluation.distributed`).  The curves are those of one
            process; a re-run with any number of ranks computes only the missing
            chunks.  Every rank returns the whole result.
        chunk: images per chunk with ``ranks``: a multiple of
            ``attribution_batch_size`` (default: that batch size).
    """
    check_int("images", images, 1)
    check_choice("target", target, ("pred", "label"))
    check_int("attribution_batch_size", attribution_batch_size, 1)
    counts = {name: check_int(f"images_per_method[{name!r}]", k, 1)
              for name, k in (images_per_method or {}).items()}
    if output == "auto":
        output = auto_output(model)
    common: dict[str, object] = {"images": images, "steps": steps, "target": target,
                                 "baseline": baseline, "output": output, "modes": list(modes),
                                 "seed": seed}
    study = _Study(model, dataset, _method_specs(methods), counts, dict(method_settings or {}),
                   common, functools.partial(
                       deletion_insertion, model, steps=steps, baseline=baseline,
                       output=output, modes=modes, batch_size=batch_size, seed=seed),
                   functools.partial(_maps, model, baseline=baseline,
                                     batch=attribution_batch_size),
                   batch_size, progress)
    if ranks is not None:
        return _on_ranks(study, ranks, results_dir,
                         check_chunk(chunk, attribution_batch_size, default_batches=1,
                                     names=("chunk", "attribution_batch_size")))
    store = study.open_store(results_dir)
    indices, x, labels = _sample(dataset, images, seed)
    x = x.to(model_device_dtype(model)[0])
    targets = labels if target == "label" else _predictions(model, x, batch_size)
    settings = study.settings(indices, labels, targets)
    saved: dict[str, dict] = {}
    for name, key in study.keys(settings).items():
        saved[name] = (store.load(name, key) if store is not None else None) or {}
        if not saved[name]:
            nm = int(key["images"])  # type: ignore[call-overload]
            saved[name] = study.compute(name, x[:nm], targets[:nm])
            if store is not None:
                store.save(name, saved[name], key)
    return study.result(saved, indices, targets, settings)


@dataclass
class _Study:
    """The settings of one :func:`evaluate_faithfulness` call and what it computes
    with: the methods' maps (``maps_of``) and their curves (``curves_of``)."""

    model: nn.Module
    dataset: object
    specs: dict[str, Callable[[Tensor, Tensor], Tensor] | str]
    counts: dict[str, int]
    method_settings: dict[str, Mapping[str, object]]
    common: dict[str, object]
    curves_of: Callable[..., DeletionInsertion]
    maps_of: Callable[..., Tensor]
    batch_size: int
    progress: bool

    def open_store(self, results_dir: str | os.PathLike | None) -> ResultStore | None:
        """The results folder's store (its settings checked), or None without one."""
        return None if results_dir is None else ResultStore(
            results_dir, {**self.common, "model": model_fingerprint(self.model)},
            what="deletion/insertion results")

    def settings(self, indices: list[int], labels: Tensor, targets: Tensor
                 ) -> dict[str, object]:
        """What the result records: the settings, the images and how many are correct."""
        return {**self.common, "images": len(indices),
                "correct": int((targets == labels).sum())}

    def keys(self, settings: dict[str, object]) -> dict[str, dict[str, object]]:
        """Method → the settings of its item: the images it explains and its own."""
        n = int(settings["images"])  # type: ignore[call-overload]
        return {name: {**settings, "images": min(n, self.counts.get(name, n)),
                       "method_settings": dict(self.method_settings.get(name, {}))}
                for name in self.specs}

    def compute(self, name: str, x: Tensor, targets: Tensor, first: int = 0
                ) -> dict[str, object]:
        """Method ``name``'s curves of images ``x`` (the ``first``-th onwards of the
        sample) as an item: maps, curves and the seconds they took."""
        t0 = time.perf_counter()
        maps = self.maps_of(self.specs[name], dict(self.method_settings.get(name, {})), x,
                            targets, progress=self.progress, name=name)
        curves = self.curves_of(x, maps, targets, first=first)
        record = _method_record(curves, time.perf_counter() - t0)
        if self.progress:
            _print_row(name, curves, float(record["seconds"]))  # type: ignore[arg-type]
        return record

    def result(self, saved: Mapping[str, dict], indices: list[int], targets: Tensor,
               settings: dict[str, object]) -> FaithfulnessResult:
        """The result of the methods' items ``saved``."""
        return FaithfulnessResult(
            curves={k: _load_record(v) for k, v in saved.items()}, indices=indices,
            targets=targets.tolist(), settings=settings,
            seconds={k: float(v.get("seconds", 0.0)) for k, v in saved.items()})


# ----------------------------------------------------------------------------- several ranks
#: The item of the image sample and the explained classes, made by rank 0.
SAMPLE_ITEM = "image-sample"


def _on_ranks(study: _Study, ranks: DistEnv, results_dir: str | os.PathLike | None,
              chunk: int) -> FaithfulnessResult:
    """:func:`evaluate_faithfulness` with ``ranks``: see its docstring."""
    if results_dir is None:
        raise ValueError("ranks= needs results_dir: the ranks share the work through the "
                         "results folder (one folder every rank sees)")
    agree(ranks, {**study.common, "model": model_fingerprint(study.model), "chunk": chunk,
                  "methods": {k: v if isinstance(v, str) else "callable"
                              for k, v in study.specs.items()},
                  "method_settings": study.method_settings, "images_per_method": study.counts,
                  "data": len(study.dataset)},  # type: ignore[arg-type]
          what="faithfulness settings",
          fix="start every rank with the same arguments, model and data")
    store, sample = main_first(ranks, lambda: _open_sample(study, results_dir),
                               folder=results_dir, what="opening the results folder and "
                               "drawing the image sample")
    study = dataclasses.replace(study, progress=study.progress and ranks.is_main)
    indices, targets = sample["indices"], torch.tensor(sample["targets"])
    settings = study.settings(indices, torch.tensor(sample["labels"]), targets)
    keys = study.keys(settings)
    saved = together(ranks, lambda: {k: store.load(k, v) for k, v in keys.items()},
                     what="checking the stored methods")
    assert saved is not None
    mine = share(ranks, lambda: [
        (k, a, b) for k, v in keys.items() if saved[k] is None
        for a, b in chunk_ranges(int(v["images"]), chunk)  # type: ignore[call-overload]
        if store.load_chunk(k, a, b, v) is None], what="listing the unfinished chunks")

    def work() -> None:
        device = model_device_dtype(study.model)[0]
        for k, a, b in mine:
            x = torch.stack([study.dataset[i][0] for i in indices[a:b]])  # type: ignore[index]
            store.save_chunk(k, a, b, study.compute(k, x.to(device), targets[a:b], first=a),
                             keys[k])

    together(ranks, work, what="computing its share of the curves")
    main_first(ranks, lambda: [_merge_chunks(store, k, v, saved, chunk, ranks.is_main)
                               for k, v in keys.items()], what="merging the chunks")
    return study.result(saved, indices, targets, settings)


def _open_sample(study: _Study, results_dir: str | os.PathLike) -> tuple[ResultStore, dict]:
    """The results folder's store and its image sample (indices, labels, explained
    classes): loaded, or drawn (and the model's predictions made) and saved."""
    store = study.open_store(results_dir)
    assert store is not None
    sample = store.load(SAMPLE_ITEM)
    if sample is None:
        indices, x, labels = _sample(study.dataset, int(study.common["images"]),  # type: ignore[call-overload]
                                     int(study.common["seed"]))  # type: ignore[call-overload]
        x = x.to(model_device_dtype(study.model)[0])
        targets = labels if study.common["target"] == "label" else _predictions(
            study.model, x, study.batch_size)
        sample = {"indices": indices, "labels": labels.tolist(), "targets": targets.tolist()}
        store.save(SAMPLE_ITEM, sample)
    return store, sample


def _merge_chunks(store: ResultStore, name: str, key: dict[str, object],
                  saved: dict[str, dict | None], chunk: int, merge: bool) -> None:
    """``saved[name]``: the method's item — merged from its chunks first when ``merge``."""
    if saved[name] is None:
        saved[name] = store.load(name, key)
    if saved[name] is None and merge:
        parts = store.load_chunks(name, chunk_ranges(int(key["images"]), chunk),  # type: ignore[call-overload]
                                  key)
        record = {"output": parts[0]["output"], "fractions": parts[0]["fractions"],
                  "seconds": sum(float(p["seconds"]) for p in parts)}
        for mode in ("deletion", "insertion"):
            record[mode] = None if parts[0][mode] is None else [
                row for p in parts for row in p[mode]]
        store.save(name, record, key)
        store.drop_chunks(name)
        saved[name] = store.load(name, key)
    if saved[name] is None:
        raise ValueError(f"{store.path(name)} is missing after rank 0 merged the chunks: "
                         "every rank must see the same results folder")


def _method_specs(methods: object) -> dict[str, Callable[[Tensor, Tensor], Tensor] | str]:
    if isinstance(methods, Mapping):
        specs = dict(methods)
    elif isinstance(methods, (list, tuple)):
        specs = {m: m for m in methods}
    else:
        raise TypeError(f"methods must be a list of names or a dict name -> method, got "
                        f"{type(methods).__name__}")
    if not specs:
        raise ValueError("methods is empty; name at least one (e.g. ['bcos', 'random'])")
    return specs


def _sample(dataset: object, images: int, seed: int) -> tuple[list[int], Tensor, Tensor]:
    """Data-set indices (sorted), images N×C×H×W and labels N of a seeded sample of
    ``images`` items (all when the data set is smaller)."""
    n_total = len(dataset)  # type: ignore[arg-type]
    if n_total == 0:
        raise ValueError("the data set is empty")
    g = torch.Generator().manual_seed(seed)
    indices = sorted(torch.randperm(n_total, generator=g)[:min(images, n_total)].tolist())
    pairs = [dataset[i] for i in indices]  # type: ignore[index]
    return indices, torch.stack([p[0] for p in pairs]), torch.tensor([int(p[1]) for p in pairs])


@torch.no_grad()
def _predictions(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """The model's predicted class of each image (N, on the CPU)."""
    with eval_mode(model):
        return torch.cat([first_output(model(x[i:i + batch_size])).argmax(1)
                          for i in range(0, len(x), batch_size)]).cpu()


def _maps(model: nn.Module, spec: Callable[[Tensor, Tensor], Tensor] | str,
          settings: dict[str, object], x: Tensor, targets: Tensor, *,
          baseline: str | float, batch: int, progress: bool, name: str) -> Tensor:
    """N×H×W attribution maps of method ``spec`` (zeros for ``"random"``: ties in a
    seeded random order)."""
    from .._utils.progress import progress as _progress
    from .pointing_game import make_attribution_fn

    if spec == "random":
        return torch.zeros(len(x), *x.shape[-2:])
    if spec == "bcos-relative":
        fn = bcos_relative_fn(model, baseline)
    else:
        fn = make_attribution_fn(model, spec, **settings) if isinstance(spec, str) else spec
    parts = []
    starts = range(0, len(x), batch)
    for i in _progress(starts, total=len(starts), desc=f"{name} maps", disable=not progress):
        m = fn(x[i:i + batch], targets[i:i + batch].to(x.device)).detach()
        parts.append((m.sum(1) if m.dim() == 4 else m).cpu())
    return torch.cat(parts)


def _print_row(name: str, r: DeletionInsertion, seconds: float) -> None:
    row = FaithfulnessResult({name: r}, [], [], {}, {}).summary()[name]
    print(f"[faithfulness] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                  if k.endswith("auc"))
          + f" ({seconds:.1f} s)", flush=True)
