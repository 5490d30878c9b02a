"""What the Quantus and Captum adapters share: maps on the raw image's channels."""

from __future__ import annotations

from torch import Tensor, nn

from .._utils.modules import find_input_encoding
from ..nn import AddInverse


def encoded_to_raw(maps: Tensor, model: nn.Module, raw_channels: int) -> Tensor:
    """Maps of the encoded input folded onto the raw image's channels.

    ``maps``: N×C'×H×W attributions as :mod:`bcosnet.attribution` returns them.
    A B-cos model with :class:`bcosnet.nn.AddInverse` explains its encoded input
    ``[x, 1 − x]`` (C' = 2C); the raw channel ``c`` gets the encoded channels
    ``c`` and ``c + C`` added (for ``bcos``: ``W_c x_c + W_{c+C} (1 − x_c)``, so the
    map's sum is unchanged and still equals ``logit − bias``).  Maps that already
    have C channels, and per-pixel maps (C' = 1), are returned as they are.
    Returns N×C×H×W (or N×1×H×W).
    """
    c_map = maps.shape[1]
    if c_map in (1, raw_channels):
        return maps
    encoding = find_input_encoding(model)
    if isinstance(encoding, AddInverse) and encoding.dim in (1, -3) \
            and c_map == 2 * raw_channels:
        n, _, h, w = maps.shape
        return maps.reshape(n, 2, raw_channels, h, w).sum(1)
    raise ValueError(
        f"the maps have {c_map} channels and the images {raw_channels}; only an AddInverse "
        f"encoding ([x, 1 - x], {2 * raw_channels} channels) folds onto the image's channels "
        "— sum the maps over channels instead (the per-pixel map)")
