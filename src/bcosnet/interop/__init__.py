"""bcosnet in the field's tools: Quantus and Captum (docs/ecosystem.md).

    import quantus, bcosnet
    from bcosnet.interop import BcosAttribution, quantus_explain_func

    metric = quantus.Sparseness(disable_warnings=True)
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=None,
                    explain_func=quantus_explain_func("bcos"))     # any attribution method

    from captum.attr import NoiseTunnel
    smooth = NoiseTunnel(BcosAttribution(model)).attribute(images, target=3, nt_samples=8)

Weights shared through the Hugging Face Hub and ``torch.hub`` are
:func:`bcosnet.from_pretrained`, ``model.save_pretrained`` and the repository's
``hubconf.py``.
"""

from ._captum import BcosAttribution
from ._quantus import quantus_explain_func
from ._shared import encoded_to_raw

__all__ = ["BcosAttribution", "encoded_to_raw", "quantus_explain_func"]
