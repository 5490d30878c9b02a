"""The B-cos explanation as a Captum attribution method."""

from __future__ import annotations

from typing import Any

from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from .._utils.validate import check_choice
from ..attribution import Bcos
from ..explanations.core import Target
from ._shared import encoded_to_raw


class BcosAttribution(GradientAttribution):
    """``W(x) ⊙ x``, the model-inherent explanation of a B-cos network, as a Captum
    ``Attribution``: ``captum.attr.NoiseTunnel``, ``captum.attr.visualization``
    and ``captum.metrics`` take it like Captum's own methods.

    ``BcosAttribution(model).attribute(images, target=3)`` is
    :func:`bcosnet.explain`'s ``contributions_full`` for that class (the
    ``bcos`` method of :mod:`bcosnet.attribution`), shaped like the inputs as
    Captum expects: with ``channels="raw"`` (default) the encoded input's two
    halves ``[x, 1 − x]`` are added per raw channel
    (:func:`bcosnet.interop.encoded_to_raw`; the sum over channels and pixels is
    still ``logit − bias``); ``channels="encoded"`` returns the N×2C×H×W map
    itself.  It is gradient-based and multiplies by the inputs (Captum's
    ``multiplies_by_inputs`` is True).

    Args:
        model: a B-cos network (:func:`bcosnet.nn.is_bcos_model`); any other
            network is a ValueError, as for :func:`bcosnet.explain`.
        channels: ``"raw"`` or ``"encoded"``.
    """

    def __init__(self, model: nn.Module, *, channels: str = "raw") -> None:
        self._method = Bcos(model)  # the B-cos rule, checked once
        super().__init__(model)
        self.model = model
        self.channels = check_choice("channels", channels, ("raw", "encoded"))

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @log_usage()
    def attribute(self, inputs: Tensor | tuple[Tensor], target: Target | None = None,
                  **unused: Any) -> Tensor | tuple[Tensor]:
        """Contributions of ``inputs`` (N×C×H×W raw images in [0, 1], or a 1-tuple of
        them as Captum allows) to ``target``: an int, N ints (a list or a (N,)
        tensor), a one-element tensor (one class for every image, as Captum reads
        it), ``"pred"`` or anything of the library's target rule
        (:func:`bcosnet.attribution.resolve_targets`).  ``target`` is required:
        under ``NoiseTunnel`` ``"pred"`` would be each noisy copy's own prediction.

        Returns N×C×H×W (``channels="raw"``) or N×C_enc×H×W, N×T×… for T classes
        per image; a 1-tuple when ``inputs`` was one.  Captum's
        ``additional_forward_args`` are refused (the models take one image batch).
        """
        if unused.get("additional_forward_args") is not None:
            raise TypeError("additional_forward_args: bcosnet models take one image batch")
        extra = sorted(k for k in unused if k != "additional_forward_args")
        if extra:
            raise TypeError(f"BcosAttribution.attribute got {', '.join(extra)}; it takes "
                            "inputs and target")
        as_tuple = isinstance(inputs, tuple)
        if as_tuple:
            if len(inputs) != 1:
                raise ValueError(f"inputs: bcosnet models take one image batch, got a tuple "
                                 f"of {len(inputs)}")
            (inputs,) = inputs
        if target is None:
            raise ValueError("target is required: a class index, one per image, or 'pred'")
        if isinstance(target, Tensor) and target.numel() == 1:
            target = int(target.reshape(()))  # Captum: one class for every example
        maps = self._method.attribute(inputs.detach(), target=target)
        if self.channels == "raw":
            per_image = maps.dim() == 4
            flat = maps if per_image else maps.flatten(0, 1)
            flat = encoded_to_raw(flat, self.model, inputs.shape[1])
            maps = flat if per_image else flat.unflatten(0, maps.shape[:2])
        return (maps,) if as_tuple else maps
