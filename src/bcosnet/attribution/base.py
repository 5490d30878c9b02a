"""Shared machinery of the attribution methods: the base class, targets,
baselines, input spaces, score outputs and pass counting.

The space gradient maps live in (``input_space``)
-------------------------------------------------
``grad``, ``ixg``, ``intgrad`` and ``deeplift`` differentiate, by default, with
respect to the *raw* image (``input_space="raw"``): the model encodes it
itself, as in the paper's code (every post-hoc method is given the raw
3-channel image).  ``input_space="encoded"`` differentiates with respect to the
output of the model's input encoding (the first module marked
``is_input_encoding``, e.g. :class:`bcosnet.nn.AddInverse`: ``[x, 1 − x]``,
6 channels for RGB), the convention of the B-cos v2 code.  For a model without
an encoding both are the raw image.  Summed over channels the two differ for
``grad`` (``Σ g_c − g_{c+3}`` raw vs ``Σ g_c + g_{c+3}`` encoded) and ``ixg``,
and agree for ``intgrad`` and ``deeplift`` (the encoding is affine, so the
raw map of channel c is the encoded maps of channels c and c+3 added).
``bcos`` is always in the encoded space: the model-inherent explanation is
``W(x) ⊙ x`` of the encoded input.

Targets
-------
One rule for the whole library (captum's, :func:`resolve_targets`).
``attribute`` returns N×C×H×W for one class per image (an int, N ints,
``"pred"``) and N×T×C×H×W for T classes per image (an N×T tensor, a list of
N lists, ``("topk", k)``).

Perturbation and CAM maps (``gradcam``, ``lime``, ``rise``, ``occlusion``) are
per pixel (C = 1).  Sum gradient maps over channels to compare them per pixel.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.gradients import backward_width
from .._utils.modules import (
    find_input_encoding,
    first_output,
    frozen_params,
    preserved_buffers,
    this_thread_only,
)
from .._utils.validate import check_choice, check_image_batch
from ..explanations.core import (
    Target,
    _names_to_indices,
    model_class_names,
    resolve_targets,
    target_is_per_image,
)
from ..nn.explanation_mode import is_bcos_model

__all__ = [
    "AttributionMethod",
    "Baseline",
    "PassCount",
    "Target",
    "count_passes",
    "default_output",
    "is_bcos_model",
    "make_baseline",
    "resolve_targets",
    "target_is_per_image",
]

#: "black" | "white" | "mean" | "blur" | a grey level in [0, 1] | an image tensor.
Baseline = Union[str, float, Tensor]  # noqa: UP007

_OUTPUTS = ("auto", "logit", "softmax", "sigmoid")
_SPACES = ("raw", "encoded")


# ----------------------------------------------------------------------------- checks


def check_output(output: str) -> str:
    return check_choice("output", output, _OUTPUTS)


def check_input_space(space: str) -> str:
    return check_choice("input_space", space, _SPACES, hint=(
        " ('raw': the image, as the paper's code; 'encoded': the model's encoded input, as "
        "the B-cos v2 code)"))


def default_output(model: nn.Module) -> str:
    """The score perturbation methods explain with ``output="auto"``: ``"sigmoid"``
    for a B-cos network (trained with binary cross-entropy, as in the paper),
    ``"softmax"`` for a conventional one (the library's one rule,
    :func:`bcosnet.nn.is_bcos_model`)."""
    return "sigmoid" if is_bcos_model(model) else "softmax"


def apply_output(logits: Tensor, output: str) -> Tensor:
    """Map N×K logits to the scores a perturbation method explains."""
    if output == "softmax":
        return logits.softmax(1)
    if output == "sigmoid":
        return logits.sigmoid()
    return logits


# ----------------------------------------------------------------------------- baselines


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    xs = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    pad = (radius, radius, radius, radius)
    # Reflect padding keeps the border colour; fall back to replicate for tiny images.
    mode = "reflect" if min(images.shape[-2:]) > radius else "replicate"
    x = F.pad(images, pad, mode=mode)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def make_baseline(
    images: Tensor, baseline: Baseline = "black", *, blur_sigma: float = 5.0
) -> Tensor:
    """A reference *image* (same shape, device and dtype as ``images``).

    ``"black"`` (zeros), ``"white"`` (ones), ``"mean"`` (each image's mean
    colour), ``"blur"`` (Gaussian blur, ``blur_sigma`` pixels), a number (that
    grey level), or a tensor broadcastable to ``images`` (C×H×W or N×C×H×W).
    The model encodes it like any image: a black baseline of a B-cos model is
    ``[0, 1]`` per channel pair, never an all-zero encoded tensor.
    """
    if isinstance(baseline, Tensor):
        if not baseline.is_floating_point():
            raise TypeError(f"a baseline tensor must be floating point, got {baseline.dtype}")
        b = baseline.to(device=images.device, dtype=images.dtype)
        try:
            return torch.broadcast_to(b, images.shape).clone()
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(b.shape)} does not broadcast to the images' shape "
                f"{tuple(images.shape)}; pass a C×H×W or N×C×H×W image"
            ) from None
    if isinstance(baseline, bool):
        raise TypeError("baseline must be a name, a grey level or an image tensor")
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if baseline == "black":
        return torch.zeros_like(images)
    if baseline == "white":
        return torch.ones_like(images)
    if baseline == "mean":
        return images.mean((2, 3), keepdim=True).expand_as(images).clone()
    if baseline == "blur":
        if not blur_sigma > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
        return _gaussian_blur(images, float(blur_sigma))
    raise ValueError(
        f"unknown baseline {baseline!r}: use 'black', 'white', 'mean', 'blur', a grey level "
        "in [0, 1] or an image tensor"
    )


# ----------------------------------------------------------------------------- passes


@dataclass
class PassCount:
    """Images sent through the model: ``forward`` (forward calls × batch size)
    and ``backward`` (backward passes reaching the model output × batch size; a
    pass batched over T targets counts T, as T passes, and one ``backward_call``)."""

    forward: int = 0
    backward: int = 0
    forward_calls: int = 0
    backward_calls: int = 0


@contextlib.contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCount]:
    """Count forward and backward passes through ``model`` with hooks.

    A forward pass of a batch of B images counts B; a backward pass that
    starts at (a slice of) the model's output counts the output's batch size.
    Backward passes that start inside the model (Grad-CAM) also count, since
    they flow through the output tensor's graph.
    """
    count = PassCount()

    def grad_hook(n: int) -> Callable[[Tensor], None]:
        def hook(_g: Tensor) -> None:
            count.backward += n * backward_width()
            count.backward_calls += 1

        return hook

    def fwd_hook(_m: nn.Module, _inp: tuple, out: object) -> None:
        t = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(t, Tensor):
            return
        n = t.shape[0] if t.dim() else 1
        count.forward += n
        count.forward_calls += 1
        if t.requires_grad:
            t.register_hook(grad_hook(n))

    handle = model.register_forward_hook(this_thread_only(fwd_hook))
    try:
        yield count
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- model helpers


class EncodedModel(nn.Module):
    """The part of ``model`` after its input encoding, as a module of the
    encoded input: ``EncodedModel(model, c_raw)(encode(images)) == model(images)``.

    It calls ``model`` on a dummy raw batch and replaces the encoding's output
    with the given encoded tensor through a forward hook, so the model's own
    forward (skip connections, auxiliary heads) is used unchanged.  For a
    model without an encoding it is the model itself.
    """

    def __init__(self, model: nn.Module, raw_channels: int) -> None:
        super().__init__()
        self.model = model
        self.encoding = find_input_encoding(model)
        self.raw_channels = raw_channels

    @property
    def has_encoding(self) -> bool:
        return self.encoding is not None

    def encode(self, images: Tensor) -> Tensor:
        """The encoded images (the raw images when the model has no encoding)."""
        if self.encoding is None:
            return images
        return self.encoding(images)

    def forward(self, encoded: Tensor) -> Tensor:
        if self.encoding is None:
            return first_output(self.model(encoded), logits=True)
        used = []

        def hook(_m: nn.Module, _inp: tuple, _out: Tensor) -> Tensor:
            used.append(True)
            return encoded

        n, _c, h, w = encoded.shape
        dummy = encoded.new_zeros(n, self.raw_channels, h, w)
        handle = self.encoding.register_forward_hook(this_thread_only(hook))
        try:
            out = self.model(dummy)
        finally:
            handle.remove()
        if not used:
            raise RuntimeError("the model's input encoding was not called in forward")
        return first_output(out, logits=True)


# ----------------------------------------------------------------------------- base class


class AttributionMethod:
    """Base class: ``Method(model, **settings).attribute(images, target=...)``.

    Subclasses set ``name`` and implement :meth:`_attribute` on a checked
    batch with resolved per-image targets.  ``attribute`` leaves the model's
    parameters without gradients, its train/eval mode untouched and its
    buffers unchanged; the maps have the images' device and dtype.
    """

    name: str = ""
    #: "input" (N×C_enc×H×W, w.r.t. the explained input) or "pixel" (N×1×H×W).
    map_kind: str = "input"

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def attribute(self, images: Tensor, target: Target = "pred") -> Tensor:
        """Attribution maps of ``images`` (N×C×H×W, raw images in [0, 1] for a
        model that encodes its input) for ``target`` (the library's target
        rule, :func:`resolve_targets`; class names such as ``"Coat"`` or a
        list of names where the model records them).

        Returns N×C'×H×W when ``target`` names one class per image (an int, N
        ints, a (N,) tensor, ``"pred"``) and N×T×C'×H×W when it names T
        classes per image (an N×T tensor, a list of N lists, ``("topk", k)``).
        C' is 1 for per-pixel methods (see :attr:`map_kind`) and the channels of
        the differentiated input for gradient methods.  All T maps come from
        one set of passes.
        """
        check_image_batch(images, finite=True)
        target = _names_to_indices(target, model_class_names(self.model))
        per_image = target_is_per_image(target)
        if not (isinstance(target, str) or not per_image and isinstance(target, tuple)):
            resolve_targets(target, images.shape[0], device=images.device)  # form, before passes
        with frozen_params(self.model), preserved_buffers(self.model):
            maps = self._attribute(images, target)
        return maps[:, 0] if per_image else maps

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        """N×T×C'×H×W maps (T from the resolved target)."""
        raise NotImplementedError

    def _targets(self, images: Tensor, target: Target, logits: Tensor | None = None) -> Tensor:
        """Targets N×T.  Without ``logits`` a no-grad forward pass is run (it
        is needed for ``'pred'``/``('topk', k)`` and for the range check)."""
        if logits is None:
            with torch.no_grad():
                logits = first_output(self.model(images), logits=True)
        return resolve_targets(target, images.shape[0], logits=logits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__})"
