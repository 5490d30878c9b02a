"""Grad-CAM: class activation maps from a feature layer's gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.gradients import target_gradients
from .._utils.modules import find_input_encoding, first_output, this_thread_only
from .._utils.validate import check_choice, did_you_mean
from .base import AttributionMethod, Target, resolve_targets

__all__ = ["GradCAM", "spatial_layers"]


def spatial_layers(model: nn.Module, images: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, output shape)`` of every submodule whose output is N×C×h×w with
    ``h·w > 1``, in the order their forward calls *finish* (so a container
    comes after its last child).  One no-grad forward pass of ``images``."""
    encoding = find_input_encoding(model)
    found: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: tuple, out: object) -> None:
            if (
                name not in seen
                and isinstance(out, Tensor)
                and out.dim() == 4
                and out.shape[2] * out.shape[3] > 1
            ):
                seen.add(name)
                found.append((name, tuple(out.shape)))

        return hook

    for name, m in model.named_modules():
        if name and m is not encoding:
            handles.append(m.register_forward_hook(this_thread_only(make_hook(name))))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return found


class GradCAM(AttributionMethod):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(Σ_k α_k A^k)`` with
    ``α_k`` the spatial mean of ``∂ logit_t / ∂ A^k``, upsampled to the input
    size (nearest neighbour by default, as the paper's code).  Raw maps, not
    normalised.

    Args:
        layer: module name (as in ``model.named_modules()``) or module whose
            N×C×h×w output is ``A``.  Default: the model's feature-extractor
            output, ``model.last_feature_layer`` (every ``create_model``
            network names it; the paper's choice).  For a model without that
            attribute it is found automatically — the last module (in forward
            order; containers count after their children) with an N×C×h×w
            output, ``h·w > 1``, skipping a per-location classifier (a layer
            with as many channels as the model has outputs) when an earlier
            candidate exists; the search costs one extra forward pass, once per
            input size.  The chosen name is kept in :attr:`layer_name`.
        relu: apply the ReLU (default True, as in the paper).
        upsample: upsample to the input size (default True); if False the map
            is N×1×h×w.
        interpolation: ``"nearest"`` (default, the paper) or any other
            ``F.interpolate`` mode (``"bilinear"``, ``"bicubic"``, ...).

    If the layer runs several times in one forward, its first call is used.
    One forward pass, the targets' backward passes from the logits to the layer.
    Returns N×1×H×W (N×T×1×H×W for T targets per image).
    """

    name = "gradcam"
    map_kind = "pixel"

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: str | nn.Module | None = None,
        relu: bool = True,
        upsample: bool = True,
        interpolation: str = "nearest",
    ) -> None:
        super().__init__(model)
        if layer is None and isinstance(getattr(model, "last_feature_layer", None), str):
            layer = model.last_feature_layer  # type: ignore[assignment]
        self.layer = layer
        self.relu = bool(relu)
        self.upsample = bool(upsample)
        modes = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
        self.interpolation = check_choice("interpolation", interpolation, modes)
        self.layer_name: str | None = None
        self._auto_cache: dict[tuple[int, ...], str] = {}
        if layer is not None:
            self.layer_name = self._module_and_name(layer)[1]

    def _module_and_name(self, layer: str | nn.Module) -> tuple[nn.Module, str]:
        modules = dict(self.model.named_modules())
        if isinstance(layer, nn.Module):
            for name, m in modules.items():
                if m is layer:
                    return m, name
            raise ValueError("the Grad-CAM layer module is not part of the model")
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name or a module, got {type(layer).__name__}")
        if layer not in modules or layer == "":
            hint = did_you_mean(layer, [n for n in modules if n], n=5)
            raise ValueError(
                f"Grad-CAM layer {layer!r} does not exist in the model{hint} "
                "(names as in model.named_modules())"
            )
        return modules[layer], layer

    def _auto_layer(self, images: Tensor) -> str:
        key = tuple(images.shape[1:])
        if key not in self._auto_cache:
            cands = spatial_layers(self.model, images[:1])
            if not cands:
                raise ValueError(
                    "Grad-CAM found no layer with spatial output (N×C×h×w, h·w > 1) for inputs "
                    f"of size {tuple(images.shape[1:])}; use larger images or pass layer="
                )
            with torch.no_grad():
                k = first_output(self.model(images[:1]), logits=True).shape[1]
            features = [c for c in cands if c[1][1] != k]
            self._auto_cache[key] = (features or cands)[-1][0]
        return self._auto_cache[key]

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        name = self._module_and_name(self.layer)[1] if self.layer is not None else (
            self._auto_layer(images)
        )
        module = self._module_and_name(name)[0]
        self.layer_name = name
        captured: dict[str, Tensor] = {}

        def hook(_m: nn.Module, _inp: tuple, out: object) -> object:
            if "a" in captured:
                return None
            if not isinstance(out, Tensor) or out.dim() != 4:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"Grad-CAM layer {name!r} has no spatial output: got {shape}, need N×C×h×w; "
                    "pick a convolutional feature layer"
                )
            a = out.detach().requires_grad_(True)
            captured["a"] = a
            return a * 1  # not the leaf itself: later in-place ops must not touch it

        handle = module.register_forward_hook(this_thread_only(hook))
        try:
            with torch.enable_grad():
                logits = first_output(self.model(images), logits=True)
                if "a" not in captured:
                    raise ValueError(f"Grad-CAM layer {name!r} was not called in the forward pass")
                t = resolve_targets(target, images.shape[0], logits=logits.detach())
                a = captured["a"]
                g = target_gradients(logits, a, t)  # N×T×C×h×w
        finally:
            handle.remove()
        weights = g.mean((3, 4), keepdim=True)
        cam = (weights * a.detach()[:, None]).sum(2, keepdim=True)  # N×T×1×h×w
        if self.relu:
            cam = cam.clamp_min(0)
        if self.upsample and cam.shape[-2:] != images.shape[-2:]:
            kw = {} if self.interpolation in ("nearest", "nearest-exact", "area") else {
                "align_corners": False}
            n, tt = cam.shape[:2]
            cam = F.interpolate(cam.flatten(0, 1), size=images.shape[-2:],
                                mode=self.interpolation, **kw).view(n, tt, 1, *images.shape[-2:])
        return cam
