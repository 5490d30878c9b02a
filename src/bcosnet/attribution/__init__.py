"""Post-hoc attribution methods behind one interface (docs/protocol.md §4).

    from bcosnet import attribution
    attribution.available()        # ['bcos', 'grad', 'ixg', 'intgrad', ...]
    maps = attribution.get("intgrad", model, n_steps=50).attribute(images, target=3)

Every method: ``Method(model, **settings).attribute(images, target=...)``.

* ``images``: N×C×H×W raw images in [0, 1] (the model encodes them itself).
* ``target``: the library's one rule (captum's, as :func:`bcosnet.explain`):
  an int (the same class for every image), a list / 1-D tensor of N ints (one
  class per image), an N×T tensor or a list of N lists (T classes per image),
  ``"pred"`` (default) or ``("topk", k)``.
* Result, with the images' device and dtype: N×C'×H×W for one class per image
  (int, N ints, ``"pred"``), N×T×C'×H×W for T classes per image (N×T tensor,
  ``("topk", k)``); all T maps come from one set of passes.  C' is the raw
  image's channels for ``grad``, ``ixg``, ``intgrad``, ``deeplift`` (the
  paper's convention; ``input_space="encoded"`` gives the B-cos v2 code's
  6-channel encoded input), the encoded input's for ``bcos`` (6 for an RGB
  B-cos model), and 1 for ``gradcam``, ``lime``, ``rise``, ``occlusion``.
  ``map.sum(-3)`` is the per-pixel map.
* Baselines (IntGrad, DeepLIFT, occlusion, RISE) are images, black by default.
* Perturbation methods explain the sigmoid of the logits on B-cos networks and
  the softmax on conventional ones (``output="auto"``, :func:`default_output`).

See docs/attribution.md for the methods' settings, what holds on B-cos
networks, and a measured cost table.
"""

from __future__ import annotations

from torch import nn

from .base import (
    AttributionMethod,
    EncodedModel,
    PassCount,
    count_passes,
    default_output,
    is_bcos_model,
    make_baseline,
    resolve_targets,
    target_is_per_image,
)
from .cam import GradCAM, spatial_layers
from .gradient import Bcos, DeepLift, Grad, InputXGradient, IntegratedGradients
from .perturbation import Lime, Occlusion, Rise, rise_masks

__all__ = [
    "METHODS",
    "AttributionMethod",
    "Bcos",
    "DeepLift",
    "EncodedModel",
    "Grad",
    "GradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "Lime",
    "Occlusion",
    "PassCount",
    "Rise",
    "available",
    "count_passes",
    "default_output",
    "get",
    "is_bcos_model",
    "make_baseline",
    "resolve_targets",
    "rise_masks",
    "spatial_layers",
    "target_is_per_image",
]

#: name → method class, in the order of the paper's comparison.
METHODS: dict[str, type[AttributionMethod]] = {
    cls.name: cls
    for cls in (
        Bcos,
        Grad,
        InputXGradient,
        IntegratedGradients,
        DeepLift,
        GradCAM,
        Lime,
        Rise,
        Occlusion,
    )
}


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return list(METHODS)


def get(name: str, model: nn.Module, **settings: object) -> AttributionMethod:
    """``METHODS[name](model, **settings)`` with a helpful error for unknown names
    or settings."""
    if not isinstance(name, str):
        raise TypeError(f"method name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in METHODS:
        from .._utils.validate import did_you_mean

        hint = did_you_mean(key, METHODS, n=1)
        raise ValueError(
            f"unknown attribution method {name!r}{hint}; available: {', '.join(METHODS)}"
        )
    cls = METHODS[key]
    try:
        return cls(model, **settings)  # type: ignore[arg-type]
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            import inspect

            params = [p for p in inspect.signature(cls.__init__).parameters if p not in
                      ("self", "model")]
            raise TypeError(f"{e}; {name!r} accepts: {', '.join(params) or 'no settings'}") from e
        raise
