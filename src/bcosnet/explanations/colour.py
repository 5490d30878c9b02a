"""Colour decoding of B-cos explanations (docs/protocol.md §3) and contribution-map colouring.

Under the encoding ``[r, g, b, 1−r, 1−g, 1−b]`` a pixel's colour is fixed by the
*angle* of its 6-vector, and alignment pressure makes the dynamic weights
``W(x)`` point the way the important pixels do, so the colour the model "looks
for" at a pixel can be read from the angle of ``W`` there (supplement D.2):

1. contribution map ``m = Σ_channels W ⊙ x``;
2. per pixel, divide ``W`` by its largest absolute entry, clamp at 0;
3. colour channel ``k = W_k / (W_k + W_{k+C})`` (ε-guarded);
4. alpha = per-pixel L2 norm of ``W``, 0 where ``m < 0``, optionally box-smoothed;
5. alpha = ``clip(alpha / percentile(alpha), 0, 1)`` per map.

Grey images (encoding ``[v, 1−v]``) decode to one grey channel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils.validate import is_int

__all__ = ["decode_colour", "to_rgba", "contribution_to_rgba", "hue_of", "overlay",
           "explanation_png", "png_bytes", "save_explanation"]

_EPS = 1e-12


def _unpack(weights: Any, inputs: Tensor | None) -> tuple[Tensor, Tensor | None]:
    # Accept an Explanation directly: to_rgba(ex).
    if hasattr(weights, "weights") and hasattr(weights, "inputs"):
        if inputs is not None:
            raise TypeError("pass either an Explanation or (weights, inputs), not both")
        return weights.weights, weights.inputs
    if not isinstance(weights, Tensor):
        raise TypeError(
            f"weights must be a torch.Tensor or an Explanation, got {type(weights).__name__}"
        )
    return weights, inputs


def _check_channels(c: int) -> None:
    if c % 2 or c < 2:
        raise ValueError(
            f"expected weights w.r.t. an encoded input [x, 1−x] with an even number of channels "
            f"(6 for RGB, 2 for grey), got {c} channels — explain the encoded input "
            "(bcosnet.explain does this), not the raw image"
        )


def decode_colour(weights: Tensor, eps: float = _EPS) -> Tensor:
    """Colour channels from dynamic weights (steps 2–3 above; docs/protocol.md §3).

    Args:
        weights: ``...×2C×H×W`` weights w.r.t. the encoding ``[x, 1−x]``.

    Returns:
        ``...×C×H×W`` colours in [0, 1] (C = 3 for RGB, 1 for grey).  A pixel
        whose weight is ``λ·[p, 1−p]`` (λ > 0) decodes to ``p`` exactly.
    """
    if weights.dim() < 3:
        raise ValueError(f"weights must be ...×C×H×W, got shape {tuple(weights.shape)}")
    c2 = weights.shape[-3]
    _check_channels(c2)
    scale = weights.abs().amax(dim=-3, keepdim=True) + eps
    w = (weights / scale).clamp(min=0)
    c = c2 // 2
    pos, neg = w[..., :c, :, :], w[..., c:, :, :]
    return pos / (pos + neg + eps)


def _box_smooth(alpha: Tensor, kernel: int) -> Tensor:
    """Box mean over a ``kernel×kernel`` window (stride 1, same size, zeros counted)."""
    lead = alpha.shape[:-2]
    a = alpha.reshape(-1, 1, *alpha.shape[-2:])
    a = F.avg_pool2d(a, kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    return a.reshape(*lead, *a.shape[-2:])


def _check_rgba_args(weights: Tensor, inputs: Any, smooth: Any, percentile: Any) -> None:
    """:func:`to_rgba`'s argument checks, with what to change."""
    if weights.dim() not in (3, 4, 5):
        raise ValueError(
            f"weights must be N×T×C×H×W, N×C×H×W or C×H×W, got shape {tuple(weights.shape)}"
        )
    if not weights.is_floating_point():
        raise TypeError(f"weights must be floating point, got dtype {weights.dtype}")
    _check_channels(weights.shape[-3])
    if not is_int(smooth) or smooth < 0:
        raise ValueError(f"smooth must be a non-negative odd int (0 = none), got {smooth!r}")
    if smooth > 1 and smooth % 2 == 0:
        raise ValueError(
            f"smooth must be odd so the box filter keeps the map centred, got {smooth}; "
            f"use {smooth + 1} or {smooth - 1}"
        )
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) \
            or not 0 < float(percentile) <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if inputs is not None and not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (the encoded images, ex.inputs) or "
                        f"None, got {type(inputs).__name__}")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or Inf; explain finite images with a finite "
                         "model (in float16, try float32 or bfloat16)")


def _contributions(weights: Tensor, inputs: Tensor | None) -> Tensor:
    """``Σ_c W ⊙ x`` per pixel (``inputs`` broadcast over the T targets of N×T weights)."""
    if inputs is None:
        raise ValueError(
            "inputs (the encoded images) are needed to mask negative contributions; "
            "pass inputs=ex.inputs or positive_only=False"
        )
    x = inputs.detach().to(weights.dtype)
    if x.dim() != weights.dim() - (1 if weights.dim() == 5 else 0):
        raise ValueError(
            f"inputs of shape {tuple(x.shape)} do not match weights of shape "
            f"{tuple(weights.shape)}: expected N×C×H×W inputs for N×T×C×H×W weights, "
            "or the same shape as the weights otherwise"
        )
    if weights.dim() == 5:
        x = x.unsqueeze(1)
    if x.shape[-3:] != weights.shape[-3:] or x.shape[0] != weights.shape[0]:
        raise ValueError(
            f"inputs of shape {tuple(inputs.shape)} do not match weights of shape "
            f"{tuple(weights.shape)} (channels, height, width and batch must agree)"
        )
    return (weights * x).sum(-3)


def to_rgba(
    weights: Any,
    inputs: Tensor | None = None,
    *,
    smooth: int = 0,
    percentile: float = 99.5,
    positive_only: bool = True,
    eps: float = _EPS,
) -> Tensor:
    """Decode dynamic linear weights into an RGBA explanation image (docs/protocol.md §3).

    Args:
        weights: ``N×T×2C×H×W`` (as ``Explanation.weights``), ``N×2C×H×W`` or
            ``2C×H×W`` weights w.r.t. the encoded input; or an
            :class:`~bcosnet.Explanation` (then ``inputs`` must be omitted).
            C = 3 (RGB, 6 channels) or C = 1 (grey, 2 channels).
        inputs: the encoded input the weights apply to, ``N×2C×H×W`` (or
            ``2C×H×W``), broadcast over the T targets.  Needed to find the
            pixels that contribute negatively; ``None`` with
            ``positive_only=False`` skips that step.
        smooth: box-filter kernel for alpha (odd, ≥ 1; 0 or 1 = none).  Smoothing
            comes after the masking of negative pixels, so with ``smooth > 1`` a
            negative pixel next to positive ones can get alpha > 0.
        percentile: alpha is divided by this percentile (in [0, 100]) of each
            map's alpha and clipped to [0, 1].
        positive_only: set alpha to 0 where the contribution ``Σ_c W ⊙ x`` < 0.

    Returns:
        Float tensor ``...×H×W×4`` in [0, 1] (same leading dims as ``weights``
        without the channel dim), on the weights' device.  For grey weights
        the grey value is repeated in R, G and B.
    """
    weights, inputs = _unpack(weights, inputs)
    _check_rgba_args(weights, inputs, smooth, percentile)
    out_dtype = weights.dtype
    # Half precision cannot hold eps (1e-12) nor the squared norms: decode in float32.
    weights = weights.detach().to(torch.promote_types(weights.dtype, torch.float32))
    if positive_only:
        contrib = _contributions(weights, inputs)
    colour = decode_colour(weights, eps)
    if colour.shape[-3] == 1:
        colour = colour.expand(*colour.shape[:-3], 3, *colour.shape[-2:])
    alpha = torch.linalg.vector_norm(weights, dim=-3)
    if positive_only:
        alpha = torch.where(contrib < 0, torch.zeros_like(alpha), alpha)
    if smooth > 1:
        alpha = _box_smooth(alpha, smooth)
    flat = alpha.flatten(-2)
    q = _percentile(flat, float(percentile))
    alpha = torch.where(q > 0, flat / q.clamp_min(eps), torch.zeros_like(flat)).clamp(0, 1)
    alpha = alpha.reshape(weights.shape[:-3] + weights.shape[-2:])
    rgba = torch.cat([colour, alpha.unsqueeze(-3)], dim=-3)
    return rgba.movedim(-3, -1).to(out_dtype).contiguous()


def _percentile(flat: Tensor, percentile: float) -> Tensor:
    """``...×1`` percentile of each row (linear interpolation, as torch.quantile)."""
    if percentile >= 100:
        return flat.amax(-1, keepdim=True)
    # torch.quantile limits its input size; a sort-based quantile has no limit.
    n = flat.shape[-1]
    srt = flat.sort(-1).values
    pos = percentile / 100 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return srt[..., lo : lo + 1] * (1 - frac) + srt[..., hi : hi + 1] * frac


def contribution_to_rgba(
    contributions: Tensor | np.ndarray,
    *,
    percentile: float = 99.5,
    vmax: float | None = None,
    cmap: str = "bwr",
) -> np.ndarray:
    """Colour a contribution map with a diverging colour map centred at 0.

    Args:
        contributions: ``...×H×W`` contribution maps (e.g. ``Explanation.contributions``).
        percentile: each map's colour range is ``[−v, v]`` with ``v`` this
            percentile of ``|contributions|`` (ignored when ``vmax`` is given).
        vmax: a fixed range ``[−vmax, vmax]`` for all maps.
        cmap: a matplotlib diverging colour map (positive = red for "bwr").

    Returns:
        ``...×H×W×4`` float numpy array in [0, 1]; 0 maps to the colour map's
        centre (white for "bwr").
    """
    from matplotlib import colormaps

    if isinstance(contributions, Tensor):
        m = contributions.detach().to("cpu", torch.float64).numpy()
    else:
        m = np.asarray(contributions, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"contributions must be ...×H×W, got shape {m.shape}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if vmax is None:
        flat = np.abs(m.reshape(*m.shape[:-2], -1))
        v = np.percentile(flat, percentile, axis=-1)[..., None, None]
    else:
        if not vmax > 0:
            raise ValueError(f"vmax must be positive, got {vmax}")
        v = np.asarray(vmax, dtype=np.float64)
    v = np.where(v > 0, v, 1.0)
    scaled = np.clip(m / v, -1, 1) * 0.5 + 0.5
    try:
        cm = colormaps[cmap]
    except KeyError as e:
        raise ValueError(f"unknown matplotlib colour map {cmap!r}; try 'bwr' or 'coolwarm'") from e
    return cm(scaled)


def hue_of(rgb: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue (degrees in [0, 360)) and chroma (max − min) of ``...×3`` RGB colours.

    Chroma is 0 for greys, where the hue is undefined (returned as 0).
    """
    a = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    a = a.astype(np.float64)
    if a.shape[-1] != 3:
        raise ValueError(f"rgb must be ...×3, got shape {a.shape}")
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    mx, mn = a.max(-1), a.min(-1)
    chroma = mx - mn
    safe = np.where(chroma > 0, chroma, 1.0)
    # The HSV hexcone hue, piecewise by which channel is largest.
    h = np.where(
        mx == r,
        ((g - b) / safe) % 6.0,
        np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = (60.0 * h) % 360.0
    return np.where(chroma > 0, hue, 0.0), chroma


# ----------------------------------------------------------------------------- images


def png_bytes(image: Tensor | np.ndarray) -> bytes:
    """A float ``H×W×4`` (RGBA), ``H×W×3`` (RGB) or ``H×W`` (grey) image in [0, 1]
    as PNG bytes (8 bits per channel, values rounded, outside [0, 1] clipped).
    Needs only Pillow."""
    import io

    from PIL import Image

    a = image.detach().to("cpu", torch.float64).numpy() if isinstance(image, Tensor) \
        else np.asarray(image, dtype=np.float64)
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    channels = 2 if a.ndim == 2 else a.shape[-1] if a.ndim == 3 else 0
    if channels not in modes or (a.ndim == 3 and channels == 2):
        raise ValueError(f"png_bytes takes an H×W, H×W×3 or H×W×4 image, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the image contains NaN or Inf")
    u8 = np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8, modes[channels]).save(buf, format="PNG")
    return buf.getvalue()


def _image_hwc(image: Tensor | np.ndarray) -> Tensor:
    """An image as an H×W×3 float64 tensor in [0, 1]: a C×H×W tensor (C = 1 or 3,
    in [0, 1]) or an H×W×C / H×W numpy array (uint8 0–255 or float in [0, 1])."""
    if isinstance(image, Tensor):
        t = image.detach().to("cpu", torch.float64)
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"image must be a C×H×W tensor (C = 1 or 3), got shape "
                             f"{tuple(image.shape)}")
        t = t.permute(1, 2, 0)
    else:
        a = np.asarray(image)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image must be an H×W×C array (C = 1, 3 or 4), got shape "
                             f"{np.asarray(image).shape}")
        a = a[..., :3] if a.shape[-1] == 4 else a
        t = torch.from_numpy(a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0))
    return t.expand(-1, -1, 3) if t.shape[-1] == 1 else t


def overlay(
    image: Tensor | np.ndarray,
    rgba: Tensor | np.ndarray,
    *,
    alpha: float = 1.0,
    fade: float = 0.5,
    grey: bool = True,
) -> Tensor:
    """Lay an RGBA explanation over the image it explains (as captum's
    ``visualize_image_attr(..., "blended_heat_map")`` or pytorch-grad-cam's
    ``show_cam_on_image`` do for heat maps).

    A B-cos explanation's colours *are* the image's colours where the model looks,
    so the image underneath is shown in grey (``grey=True``) and faded towards
    white by ``fade`` (0: as is, 1: white); the explanation is composited on
    top with its own alpha times ``alpha``::

        background = fade + (1 − fade) · grey(image)
        out = a · rgb + (1 − a) · background,   a = alpha · rgba[..., 3]

    Args:
        image: the image, a C×H×W tensor in [0, 1] (C = 1 or 3) or an H×W×C
            numpy array (uint8, or float in [0, 1]).
        rgba: an H×W×4 explanation (one map of :func:`to_rgba`, or of
            :func:`contribution_to_rgba`) of the same H×W.
        alpha: opacity of the explanation, in [0, 1].
        fade: how far the image underneath is faded towards white (0: as is, 1: white).
        grey: show the image underneath in grey.

    Returns:
        An H×W×3 float64 tensor in [0, 1] (:func:`png_bytes` writes it).
    """
    img = _image_hwc(image)
    over = rgba.detach().to("cpu", torch.float64) if isinstance(rgba, Tensor) \
        else torch.from_numpy(np.asarray(rgba, dtype=np.float64))
    if over.dim() != 3 or over.shape[-1] != 4:
        raise ValueError(f"rgba must be one H×W×4 map (e.g. to_rgba(ex)[i, t]), got shape "
                         f"{tuple(over.shape)}")
    if over.shape[:2] != img.shape[:2]:
        raise ValueError(f"the explanation is {over.shape[0]}×{over.shape[1]} pixels but the "
                         f"image {img.shape[0]}×{img.shape[1]}; pass the image the model "
                         "explained (after its resizing)")
    for name, v in (("alpha", alpha), ("fade", fade)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if grey:
        lum = img @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
        img = lum[..., None].expand(-1, -1, 3)
    background = fade + (1 - fade) * img
    a = alpha * over[..., 3:].clamp(0, 1)
    return (a * over[..., :3].clamp(0, 1) + (1 - a) * background).clamp(0, 1)


def _raw_image(inputs: Tensor) -> Tensor | None:
    """The raw image x behind an encoded input [x, 1 − x] (C×H×W), else None."""
    c2 = inputs.shape[0]
    if c2 % 2:
        return None
    x, inv = inputs[: c2 // 2], inputs[c2 // 2:]
    if not torch.allclose(x + inv, torch.ones_like(x), atol=1e-4):
        return None
    return x


def explanation_png(
    ex: Any,
    *,
    index: int = 0,
    overlay_image: bool = False,
    image: Tensor | np.ndarray | None = None,
    alpha: float = 1.0,
    fade: float = 0.5,
    smooth: int = 0,
    percentile: float = 99.5,
) -> bytes:
    """PNG bytes of the colour explanation(s) of image ``index`` of ``ex`` (an
    :class:`~bcosnet.Explanation`), its T targets side by side: an RGBA image
    (transparent where the explanation is), or with ``overlay_image=True`` an
    RGB image of each explanation laid over the image (:func:`overlay`).  See
    :func:`save_explanation` for the arguments."""
    if not (hasattr(ex, "weights") and hasattr(ex, "inputs")):
        raise TypeError(f"ex must be an Explanation (bcosnet.explain's result), got "
                        f"{type(ex).__name__}")
    n = ex.weights.shape[0]
    if not is_int(index) or not -n <= index < n:
        raise ValueError(f"index must be an int in 0..{n - 1} (the explanation holds {n} "
                         f"image{'s' * (n != 1)}), got {index!r}")
    w, x = ex.weights[index:index + 1 or None], ex.inputs[index:index + 1 or None]
    rgba = to_rgba(w.float(), x.float(), smooth=smooth, percentile=percentile)[0]  # T×H×W×4
    if not overlay_image:
        if image is not None:
            raise ValueError("image= is what overlay_image=True lays the explanation over; "
                             "pass overlay_image=True too (or drop image=)")
        return png_bytes(torch.cat(list(rgba), dim=1))  # H×(T·W)×4
    if image is None:
        image = _raw_image(x[0])
        if image is None:
            raise ValueError("the explained input is not an encoding [x, 1 − x], so the image "
                             "cannot be recovered from it; pass image= (C×H×W in [0, 1])")
    elif isinstance(image, Tensor) and image.dim() == 4:
        image = image[index]
    panels = [overlay(image, r, alpha=alpha, fade=fade) for r in rgba]
    return png_bytes(torch.cat(panels, dim=1))  # H×(T·W)×3


def save_explanation(
    ex: Any,
    path: str | os.PathLike[str],
    *,
    index: int = 0,
    overlay: bool = False,
    image: Tensor | np.ndarray | None = None,
    alpha: float = 1.0,
    fade: float = 0.5,
    smooth: int = 0,
    percentile: float = 99.5,
) -> Path:
    """Save the colour explanation of one image as a PNG (atomically; no matplotlib).

    Args:
        ex: an :class:`~bcosnet.Explanation`.
        path: the PNG file to write (missing folders are created).
        index: which image of the batch (0..N−1); its T targets are side by side.
        overlay: False (default): the RGBA explanation alone, transparent where
            the model does not look (what ``bcosnet explain --format rgba``
            writes).  True: an RGB image of the explanation laid over the image
            (:func:`overlay`: the image in grey, faded by ``fade``, under the
            explanation at opacity ``alpha``).
        image: the image to overlay on (C×H×W or N×C×H×W tensor in [0, 1], or
            an H×W×C array); default: recovered from the encoded input
            ``ex.inputs`` (``[x, 1 − x]``), i.e. the image as the model saw it.
        smooth: :func:`to_rgba`'s ``smooth``.
        percentile: :func:`to_rgba`'s ``percentile``.

    Returns:
        The path written.
    """
    from .._utils.io import atomic_write_bytes

    data = explanation_png(ex, index=index, overlay_image=overlay, image=image, alpha=alpha,
                           fade=fade, smooth=smooth, percentile=percentile)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Path(atomic_write_bytes(Path(path), data, sync=False))
