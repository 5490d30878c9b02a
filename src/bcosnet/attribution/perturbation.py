"""Perturbation-based attributions: ``occlusion``, ``rise``, ``lime``.

They perturb the raw *image* (the model encodes it) and return per-pixel maps,
N×1×H×W (N×T×1×H×W for T targets per image).  The perturbations (windows,
masks, LIME's samples) do not depend on the target, so all T maps come from
one set of forward passes.  Random methods take a ``seed`` (default 0) or a
``torch.Generator``; random numbers are drawn on the CPU, so a seed gives the
same map on every device.

The score explained (``output``): ``"auto"`` (default) is the sigmoid of the
logits for a B-cos network (:func:`bcosnet.nn.is_bcos_model`, the library's one
rule; trained with binary cross-entropy, as in the paper) and the softmax for a
conventional one (see :func:`bcosnet.attribution.default_output`);
``"sigmoid"``, ``"softmax"`` and ``"logit"`` choose explicitly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.modules import first_output
from .._utils.progress import CallProgress
from .._utils.validate import check_int, is_int
from .base import (
    AttributionMethod,
    Baseline,
    Target,
    apply_output,
    check_output,
    default_output,
    make_baseline,
    resolve_targets,
)

__all__ = ["Lime", "Occlusion", "Rise", "rise_masks", "ridge_regression"]


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if is_int(v):
        v = (v, v)
    if not isinstance(v, tuple) or len(v) != 2 or not all(is_int(a) and a >= 1 for a in v):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return v


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """A fresh CPU generator from ``seed`` for every call (same seed → same map),
    or the user's generator (whose state advances)."""
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


def _scores(model: nn.Module, x: Tensor, t: Tensor, output: str) -> Tensor:
    """Scores B×T of the classes ``t[i]`` (B×T) for each row of ``x`` (no grad)."""
    with torch.no_grad():
        out = apply_output(first_output(model(x), logits=True), output)
    return out.gather(1, t)


class _Perturbation(AttributionMethod):
    """The settings the perturbation methods share: the explained score
    (``output``), perturbed images per forward pass (``batch_size``), the
    progress bar (``progress``) and, for the random methods, ``seed`` /
    ``generator``."""

    map_kind = "pixel"

    def __init__(self, model: nn.Module, *, output: str, batch_size: int,
                 progress: bool | None, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(model)
        self.output = check_output(output)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.progress = progress
        self.seed = seed
        self.generator = generator

    def _output(self) -> str:
        """The explained score, ``"auto"`` resolved for this model."""
        return default_output(self.model) if self.output == "auto" else self.output


# ----------------------------------------------------------------------------- occlusion


class Occlusion(_Perturbation):
    """Occlusion: slide a patch over the image, replace it by the baseline
    image there, and record the drop of the target score ``f(x) − f(x_occluded)``.
    Each pixel gets the mean drop over the windows that cover it (captum's
    convention).  The last window of a row/column is moved flush with the
    border, so every pixel is covered.

    Args:
        patch_size: int or (h, w) in pixels (default 16).
        stride: int or (h, w) (default 8).
        baseline: what replaces the patch (see :func:`make_baseline`, default black).
        output: score explained: ``"auto"`` (default: sigmoid on a B-cos
            network, softmax on a conventional one; see the module docstring),
            ``"sigmoid"``, ``"softmax"`` or ``"logit"``.
        batch_size: occluded images per forward pass.
        progress: ``None`` (default): a progress bar on a terminal when the call
            is expected to take more than a couple of seconds; ``True``: always
            (plain lines off a terminal); ``False``: never.

    Cost: 1 + (number of windows) forward passes per image, no backward,
    whatever the number of targets.  Returns N×1×H×W.
    """

    name = "occlusion"

    def __init__(
        self,
        model: nn.Module,
        *,
        patch_size: int | tuple[int, int] = 16,
        stride: int | tuple[int, int] = 8,
        baseline: Baseline = "black",
        output: str = "auto", batch_size: int = 64, progress: bool | None = None,
    ) -> None:
        super().__init__(model, output=output, batch_size=batch_size, progress=progress)
        self.patch_size = _pair(patch_size, "patch_size")
        self.stride = _pair(stride, "stride")
        self.baseline = baseline

    @staticmethod
    def _starts(size: int, patch: int, stride: int) -> list[int]:
        starts = list(range(0, size - patch + 1, stride))
        if starts[-1] != size - patch:
            starts.append(size - patch)
        return starts

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        n, _c, h, w = images.shape
        ph, pw = self.patch_size
        if ph > h or pw > w:
            raise ValueError(
                f"occlusion patch {ph}×{pw} is larger than the images ({h}×{w}); "
                "pass a smaller patch_size"
            )
        output = self._output()
        with torch.no_grad():
            logits = first_output(self.model(images), logits=True)
        t = resolve_targets(target, n, logits=logits)  # N×T
        tt = t.shape[1]
        s0 = apply_output(logits, output).gather(1, t)  # N×T
        base = make_baseline(images, self.baseline)
        windows = [(y, x) for y in self._starts(h, ph, self.stride[0])
                   for x in self._starts(w, pw, self.stride[1])]
        total = images.new_zeros(n, tt, 1, h, w)
        coverage = images.new_zeros(1, 1, h, w)
        per = max(1, self.batch_size // n)
        starts = range(0, len(windows), per)
        bar = CallProgress(len(starts), "occlusion", self.progress)
        for lo in starts:
            chunk = windows[lo : lo + per]
            m = images.new_zeros(len(chunk), 1, h, w)  # masks built per chunk: bounded memory
            for i, (y, x) in enumerate(chunk):
                m[i, :, y : y + ph, x : x + pw] = 1
            xo = images[:, None] * (1 - m) + base[:, None] * m  # N×w×C×H×W
            s = _scores(self.model, xo.flatten(0, 1), t.repeat_interleave(len(chunk), 0), output)
            drop = s0[:, None] - s.view(n, len(chunk), tt)  # N×w×T
            total += torch.einsum("nmt,mchw->ntchw", drop, m)
            coverage += m.sum(0, keepdim=True)
            bar.update()
        bar.close()
        return total / coverage.clamp_min(1)


# ----------------------------------------------------------------------------- RISE


def rise_masks(
    n_masks: int,
    size: tuple[int, int],
    *,
    s: int = 8,
    p: float = 0.1,
    generator: torch.Generator,
) -> Tensor:
    """RISE's random masks, n×1×H×W in [0, 1] (float32, CPU).

    A binary s×s grid (each cell kept with probability ``p``) is upsampled
    bilinearly to ``(s+1)·⌈H/s⌉ × (s+1)·⌈W/s⌉`` and cropped to H×W at a random
    shift of less than one cell (Petsiuk et al. 2018).
    """
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    grid = (torch.rand(n_masks, 1, s, s, generator=generator) < p).float()
    up = F.interpolate(grid, size=((s + 1) * ch, (s + 1) * cw), mode="bilinear",
                       align_corners=False)
    dy = torch.randint(0, ch, (n_masks,), generator=generator)
    dx = torch.randint(0, cw, (n_masks,), generator=generator)
    # Gather the shifted crops in one indexing operation.
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None]  # n×H×1
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :]  # n×1×W
    idx = torch.arange(n_masks)[:, None, None]
    return up[:, 0][idx, rows, cols][:, None]


class Rise(_Perturbation):
    """RISE (Petsiuk et al. 2018): ``Σ_i f_t(x ⊙ M_i + x̄ ⊙ (1 − M_i)) · M_i / (n·p)``
    over random smooth masks ``M_i`` (the same masks for every image of a batch).

    Args:
        n_masks: number of masks (500, the paper's setting).
        s: grid size (8); p: keep probability of a grid cell (0.1).
        baseline: the fill where a mask is 0 (:func:`make_baseline`, default black).
        output: ``"auto"`` (default: sigmoid on a B-cos network, softmax on a
            conventional one, see the module docstring), ``"sigmoid"``,
            ``"softmax"`` or ``"logit"``.
        seed: randomness: a fresh generator from ``seed`` per call.
        generator: a ``torch.Generator`` to draw from instead of ``seed`` (its state
            advances).
        batch_size: masked images per forward pass.
        progress: ``None`` (default, a bar on a terminal for calls expected to
            take more than a couple of seconds), ``True`` or ``False``; see
            :class:`Occlusion`.

    Cost: 1 + ``n_masks`` forward passes per image, no backward, whatever the
    number of targets.  Returns N×1×H×W.
    """

    name = "rise"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_masks: int = 500,
        s: int = 8,
        p: float = 0.1,
        baseline: Baseline = "black",
        output: str = "auto", batch_size: int = 64, progress: bool | None = None,
        seed: int | None = 0, generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, output=output, batch_size=batch_size, progress=progress,
                         seed=seed, generator=generator)
        self.n_masks = check_int("n_masks", n_masks, 1)
        self.s = check_int("s", s, 1)
        if not 0 < p <= 1:
            raise ValueError(f"p (keep probability) must be in (0, 1], got {p}")
        self.p = float(p)
        self.baseline = baseline

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        n, _c, h, w = images.shape
        output = self._output()
        t = self._targets(images, target)  # N×T
        tt = t.shape[1]
        g = _generator(self.seed, self.generator)
        masks = rise_masks(self.n_masks, (h, w), s=self.s, p=self.p, generator=g).to(
            device=images.device, dtype=images.dtype
        )
        base = make_baseline(images, self.baseline)
        sal = images.new_zeros(n, tt, 1, h, w)
        per = max(1, self.batch_size // n)
        starts = range(0, self.n_masks, per)
        with CallProgress(len(starts), "RISE", self.progress) as bar:
            for lo in starts:
                m = masks[lo : lo + per]
                k = m.shape[0]
                x = images[:, None] * m + base[:, None] * (1 - m)
                sc = _scores(self.model, x.flatten(0, 1), t.repeat_interleave(k, 0), output)
                sal += torch.einsum("nmt,mchw->ntchw", sc.view(n, k, tt), m)
                bar.update()
        return sal / (self.n_masks * self.p)


# ----------------------------------------------------------------------------- LIME


def ridge_regression(
    x: Tensor, y: Tensor, sample_weight: Tensor, alpha: float
) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an (unpenalised) intercept, as
    scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight)``: returns (coef, intercept).
    x: S×F, y: S or S×T (one fit per column, one solve), sample_weight: S.
    coef: F (or F×T), intercept: scalar (or T)."""
    w = sample_weight / sample_weight.sum()
    xm = (w[:, None] * x).sum(0)
    ym = (w.view(-1, *([1] * (y.dim() - 1))) * y).sum(0)
    xc, yc = x - xm, y - ym
    sw = sample_weight[:, None]
    a = xc.T @ (sw * xc) + alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    b = xc.T @ (sample_weight.view(-1, *([1] * (y.dim() - 1))) * yc)
    coef = torch.linalg.solve(a, b)
    return coef, ym - xm @ coef


def _segment(img: np.ndarray, kernel_size: float, max_dist: float, ratio: float, rng: int):
    from skimage.segmentation import quickshift

    c = img.shape[2]
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    seg = quickshift(img, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                     rng=rng, convert2lab=img.shape[2] == 3)
    # Consecutive labels 0..n-1.
    _, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(seg.shape)


class Lime(_Perturbation):
    """LIME for images as the paper's code used it (Ribeiro et al. 2016; the
    ``lime`` package's ``LimeImageExplainer().explain_instance`` followed by
    ``get_image_and_mask(t, positive_only=True, num_features=5)``):
    quickshift super-pixels; ``n_samples`` random on/off patterns of all
    super-pixels (the first all on); "off" segments filled; a weighted ridge
    regression (``alpha=1``, intercept) of the target score on the patterns of
    *all* super-pixels, sample weights ``sqrt(exp(−d²/width²))`` with ``d`` the
    cosine distance to the all-on pattern; the map is 1 on the (at most)
    ``num_features`` super-pixels with the largest *positive* weights and 0
    elsewhere.  Fewer positive weights give fewer segments; none give an
    all-zero map.

    With ``seed`` (default 0) every image's patterns are
    ``numpy.random.RandomState(seed).randint(0, 2, (n_samples, n_segments))``,
    the patterns ``lime``'s ``LimeImageExplainer(random_state=seed)`` draws, so
    on the same segments and scores the maps are ``lime``'s (tested).

    Args:
        n_samples: perturbed images per image (500).
        num_features: segments kept in the 0/1 mask (5, the paper's setting);
            ``None``: the full ridge weight map instead (each segment's signed
            coefficient).
        kernel_size: quickshift's ``kernel_size`` (4: lime's).
        max_dist: quickshift's ``max_dist`` (200: lime's).
        ratio: quickshift's ``ratio`` (0.2: lime's).
        kernel_width: 0.25 (lime's).
        fill: ``"segment_mean"`` (each segment's mean colour, lime's default) or
            any :func:`make_baseline` value (e.g. ``"black"``).
        output: ``"auto"`` (default: sigmoid on a B-cos network, softmax on a
            conventional one, see the module docstring), ``"sigmoid"``,
            ``"softmax"`` or ``"logit"``.
        seed: randomness of the patterns; quickshift uses ``seed`` too.
        generator: a ``torch.Generator`` that replaces lime's numpy draw of the
            patterns.
        batch_size: perturbed images per forward pass.
        progress: ``None`` (default, a bar on a terminal for calls expected to
            take more than a couple of seconds), ``True`` or ``False``; see
            :class:`Occlusion`.

    Cost: ``n_samples`` forward passes per image (+1 for the targets), no
    backward; with T targets the same samples serve every target (one
    multi-output least-squares solve).  Returns N×1×H×W.
    """

    name = "lime"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_samples: int = 500,
        num_features: int | None = 5,
        kernel_size: float = 4,
        max_dist: float = 200,
        ratio: float = 0.2,
        kernel_width: float = 0.25,
        fill: Baseline = "segment_mean",
        output: str = "auto", batch_size: int = 64, progress: bool | None = None,
        seed: int | None = 0, generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, output=output, batch_size=batch_size, progress=progress,
                         seed=seed, generator=generator)
        self.n_samples = check_int("n_samples", n_samples, minimum=2)
        if num_features is not None:
            check_int("num_features", num_features, 1)
        self.num_features = num_features
        self.kernel_size = kernel_size
        self.max_dist = max_dist
        self.ratio = ratio
        if not kernel_width > 0:
            raise ValueError(f"kernel_width must be > 0, got {kernel_width}")
        self.kernel_width = float(kernel_width)
        self.fill = fill

    def segments(self, image: Tensor) -> Tensor:
        """Quickshift super-pixels of one C×H×W image: H×W long labels 0..n−1."""
        img = image.detach().permute(1, 2, 0).to("cpu", torch.float64).numpy()
        seed = 0 if self.seed is None else int(self.seed)
        seg = _segment(img, self.kernel_size, self.max_dist, self.ratio, seed)
        return torch.from_numpy(seg).long()

    def samples(self, n_segments: int) -> Tensor:
        """The on/off patterns of one image: n_samples×n_segments long, row 0 all on."""
        if self.generator is not None:
            data = torch.randint(0, 2, (self.n_samples, n_segments), generator=self.generator)
        else:
            rs = np.random.RandomState(0 if self.seed is None else int(self.seed))
            data = torch.from_numpy(
                rs.randint(0, 2, self.n_samples * n_segments).reshape(self.n_samples, n_segments)
            ).long()
        data[0] = 1
        return data

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        n, _c, h, w = images.shape
        output = self._output()
        t = self._targets(images, target)  # N×T
        tt = t.shape[1]
        if self.fill != "segment_mean":
            fills = make_baseline(images, self.fill)
        maps = []
        starts = range(0, self.n_samples, self.batch_size)
        bar = CallProgress(n * len(starts), "LIME", self.progress)
        for i in range(n):
            img = images[i]
            seg = self.segments(img).to(images.device)
            n_seg = int(seg.max()) + 1
            if self.fill == "segment_mean":
                onehot = F.one_hot(seg, n_seg).to(img.dtype)  # H×W×S
                means = torch.einsum("chw,hws->cs", img, onehot) / onehot.sum((0, 1))
                fill = means[:, seg]
            else:
                fill = fills[i]
            data = self.samples(n_seg)
            data_d = data.to(device=images.device, dtype=images.dtype)
            ys = []
            for lo in starts:
                m = data_d[lo : lo + self.batch_size][:, seg][:, None]  # b×1×H×W
                x = img[None] * m + fill[None] * (1 - m)
                ys.append(_scores(self.model, x, t[i].expand(m.shape[0], tt), output))
                bar.update()
            y = torch.cat(ys).to("cpu", torch.float64)  # S×T
            coef = self.fit(data.to(torch.float64), y)  # S_seg×T
            vals = self.segment_values(coef)  # S_seg×T
            maps.append(vals.T.to(device=images.device, dtype=images.dtype)[:, seg])  # T×H×W
        bar.close()
        return torch.stack(maps)[:, :, None]

    def fit(self, data: Tensor, y: Tensor) -> Tensor:
        """Ridge weights of all segments (n_segments×T) from the patterns
        (samples×n_segments) and the scores (samples×T), as lime's default
        explainer (``Ridge(alpha=1)`` on all segments, kernel-weighted samples)."""
        on = data.sum(1)
        cos = on / (on.sqrt() * math.sqrt(data.shape[1])).clamp_min(1e-12)
        d = 1 - cos  # cosine distance to the all-on pattern (1 for all-off)
        sw = torch.exp(-(d**2) / self.kernel_width**2).sqrt()
        return ridge_regression(data, y, sw, alpha=1.0)[0]

    def segment_values(self, coef: Tensor) -> Tensor:
        """Map values per segment (n_segments×T): the 0/1 mask of the at most
        ``num_features`` largest positive weights, or the weights themselves
        for ``num_features=None``."""
        if self.num_features is None:
            return coef
        k = min(self.num_features, coef.shape[0])
        top = coef.topk(k, dim=0).indices  # k×T, largest first
        keep = torch.zeros_like(coef).scatter_(0, top, 1.0)
        return keep * (coef > 0)
