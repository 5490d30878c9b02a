"""Post-hoc attribution methods behind one interface (SPEC §4).

    from bcosnet import attribution
    attribution.available()        # ['bcos', 'grad', 'ixg', 'intgrad', ...]
    maps = attribution.get("intgrad", model, n_steps=50).attribute(images, target=3)

Every method: ``Method(model, **settings).attribute(images, target=...)``.

* ``images``: N×C×H×W raw images in [0, 1] (the model encodes them itself).
* ``target``: an int (same class for every image), a list / (N,) tensor of one
  class per image, or ``"pred"`` (default).  Several classes per image: call
  once per class.
* Result: one map per image, with the images' device and dtype —
  N×C_enc×H×W for ``bcos``, ``grad``, ``ixg``, ``intgrad``, ``deeplift`` (with
  respect to the model's encoded input, 6 channels for an RGB B-cos model; the
  raw image for a model without an input encoding), N×1×H×W for ``gradcam``,
  ``lime``, ``rise``, ``occlusion``.  ``map.sum(1)`` is the per-pixel map.
* Baselines (IntGrad, DeepLIFT, occlusion, RISE) are images, black by
  default, encoded by the model like any image.

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
    make_baseline,
    resolve_targets,
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
    "get",
    "make_baseline",
    "resolve_targets",
    "rise_masks",
    "spatial_layers",
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
        import difflib

        close = difflib.get_close_matches(key, METHODS, n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
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
