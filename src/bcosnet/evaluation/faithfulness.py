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


def pixel_order(maps: Tensor, *, seed: int = 0) -> Tensor:
    """Pixel indices (N×H·W, long) from most to least relevant; equal values in a
    seeded random order (so a constant map gives a random order)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be N×H×W (sum attributions over channels), got "
                         f"{tuple(maps.shape)}")
    n = maps.shape[0]
    flat = maps.detach().reshape(n, -1).double()
    g = torch.Generator().manual_seed(seed)
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
    """
    from ..attribution.base import make_baseline

    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty N×C×H×W tensor in [0, 1]")
    n, _, h, w = images.shape
    if maps.dim() == 4:
        maps = maps.sum(1)
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
    order = pixel_order(maps, seed=seed)
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
    """
    check_int("images", images, 1)
    check_choice("target", target, ("pred", "label"))
    check_int("attribution_batch_size", attribution_batch_size, 1)
    specs = _method_specs(methods)
    counts = {name: check_int(f"images_per_method[{name!r}]", k, 1)
              for name, k in (images_per_method or {}).items()}
    if output == "auto":
        output = auto_output(model)
    common: dict[str, object] = {"images": images, "steps": steps, "target": target,
                                 "baseline": baseline, "output": output, "modes": list(modes),
                                 "seed": seed}
    store = None if results_dir is None else ResultStore(
        results_dir, {**common, "model": model_fingerprint(model)},
        what="deletion/insertion results")
    indices, x, labels = _sample(dataset, images, seed)
    targets = labels if target == "label" else _predictions(model, x, batch_size)
    settings = {**common, "images": len(indices), "correct": int((targets == labels).sum())}
    curves: dict[str, DeletionInsertion] = {}
    seconds: dict[str, float] = {}
    for name, spec in specs.items():
        ms = dict((method_settings or {}).get(name, {}))
        key = {**settings, "images": min(len(indices), counts.get(name, len(indices))),
               "method_settings": ms}
        saved = store.load(name, key) if store is not None else None
        if saved is not None:
            curves[name], seconds[name] = _load_record(saved), float(saved.get("seconds", 0.0))
            continue
        nm = int(key["images"])  # type: ignore[call-overload]
        t0 = time.perf_counter()
        maps = _maps(model, spec, ms, x[:nm], targets[:nm], baseline=baseline,
                     batch=attribution_batch_size, progress=progress, name=name)
        curves[name] = deletion_insertion(
            model, x[:nm], maps, targets[:nm], steps=steps, baseline=baseline, output=output,
            modes=modes, batch_size=batch_size, seed=seed)
        seconds[name] = time.perf_counter() - t0
        if store is not None:
            store.save(name, _method_record(curves[name], seconds[name]), key)
        if progress:
            _print_row(name, curves[name], seconds[name])
    return FaithfulnessResult(curves=curves, indices=indices, targets=targets.tolist(),
                              settings=settings, seconds=seconds)


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
        m = fn(x[i:i + batch], targets[i:i + batch]).detach()
        parts.append((m.sum(1) if m.dim() == 4 else m).cpu())
    return torch.cat(parts)


def _print_row(name: str, r: DeletionInsertion, seconds: float) -> None:
    row = FaithfulnessResult({name: r}, [], [], {}, {}).summary()[name]
    print(f"[faithfulness] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                                                  if k.endswith("auc"))
          + f" ({seconds:.1f} s)", flush=True)
