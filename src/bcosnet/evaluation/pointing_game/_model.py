"""Model helpers of the pointing game: device and dtype (eval mode and the first
output come from :mod:`bcosnet._utils.modules`, the model's fingerprint from
:mod:`bcosnet._utils.store`)."""

from __future__ import annotations

import torch
from torch import nn


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point parameter (or buffer);
    CPU and the default dtype for a model without any."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.get_default_dtype()
