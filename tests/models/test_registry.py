"""Registry-wide checks: every registered model

* explains itself exactly (``Σ contributions + bias == logit``, float64) — B-cos kinds;
* runs forward and backward at its native resolution (batch 1, CPU);
* rejects a wrong channel count / a too-small image early with a clear message;
* and the registry suggests close names for a typo.

Large models are marked ``slow`` (each is built once per test).
"""

from __future__ import annotations

import fnmatch
import math

import pytest
import torch

import bcosnet
from bcosnet.models import model_info

from .bcos_reference import calibrate_norms

ALL = bcosnet.list_models()
BCOS = [n for n in ALL if model_info(n).is_bcos]
# The ViTs' sin-cos positional embedding is an input-independent term inside the
# network, so explain()'s constant f(0) does not complete them; tests/models/test_vit.py
# checks their completeness in (image, positional embedding) instead.
COMPLETE = [n for n in BCOS if model_info(n).family != "vit"
            and not fnmatch.fnmatch(n, "bcosified_vgg*")]
# bcosified_vgg*: torchvision's VGG head (≈ 133 M parameters, no width option) and no
# norms, so a fresh one's B = 2 signal vanishes; tests/models/test_bcosification.py
# checks B-cosified VGGs (equivalence, completeness) on a small torchvision VGG.
NATIVE = [n for n in ALL if not fnmatch.fnmatch(n, "bcosified_vgg*")]

# Models cheap enough for the default run (native-resolution forward/backward).
_FAST_NATIVE = ["resnet18", "resnet18_v2", "standard_resnet18", "*cifar*", "*mnist*"]
# Models too big for a quick float64 completeness check.
_HEAVY = ["*resnet101*", "*resnet152*", "*vgg*", "*densenet161*", "*densenet169*",
          "bcosified_resnet34", "bcosified_resnet50", "bcosified_densenet121",
          "convnext_tiny_v2", "convnext_small_v2", "convnext_base_v2", "convnext_large_v2",
          "*vit*",
          "*densenet201*", "*inception*"]


def _match(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _params(names: list[str], slow_if) -> list:
    return [
        pytest.param(n, marks=pytest.mark.slow) if slow_if(n) else pytest.param(n) for n in names
    ]


def _small_overrides(name: str) -> dict:
    # The 7×7×512→4096 head of VGG dominates its size; its width does not change
    # how completeness is obtained, so the float64 check uses a narrow head.
    if model_info(name).family == "vgg" and model_info(name).kind != "standard":
        return {"hidden_features": 32}
    return {}


@pytest.mark.parametrize("name", _params(COMPLETE, lambda n: _match(n, _HEAVY)))
def test_completeness_every_bcos_model(name: str) -> None:
    info = model_info(name)
    torch.manual_seed(0)
    model = bcosnet.create_model(name, num_classes=4, **_small_overrides(name)).double()
    h, w = info.min_size
    h, w = max(h, 16), max(w, 16)
    g = torch.Generator().manual_seed(1)
    calib = torch.rand(4, info.in_channels, h, w, generator=g, dtype=torch.float64)
    calibrate_norms(model, calib)  # eval: e.g. Inception's auxiliary head is not used
    images = torch.rand(2, info.in_channels, h, w, generator=g, dtype=torch.float64)

    ex = bcosnet.explain(model, images, target=[[0, 3]] * 2)
    with torch.no_grad():
        logits = model(images)
    assert ex.logits.shape == (2, 2)
    # float64: equal up to rounding relative to the logits' size (an absolute 1e-12
    # failed on logits of ~200, relative error 6e-15, after the fused B = 2 path)
    torch.testing.assert_close(ex.logits, logits[:, [0, 3]], rtol=1e-12, atol=1e-12)
    # the explained input is the model's own encoding [x, 1 − x]
    assert ex.inputs.shape[1] == 2 * info.in_channels
    mass = (ex.weights * ex.inputs.unsqueeze(1)).abs().sum((2, 3, 4))
    assert (mass > 0).all(), "explanation is identically zero: nothing was tested"
    err = ex.completeness_error.abs()
    assert (err <= 1e-9 * mass + 1e-12).all(), f"{name}: completeness error {err.max():.3g}"


@pytest.mark.parametrize("name", _params(NATIVE, lambda n: not _match(n, _FAST_NATIVE)))
def test_native_forward_backward_and_bad_input(name: str) -> None:
    info = model_info(name)
    torch.manual_seed(0)
    model = bcosnet.create_model(name).eval()
    if info.kind == "bcos_v2":
        # Fresh uncentred norms have running_var = 1: without batch statistics the
        # signal of a freshly initialised v2 net vanishes (outputs == bias).
        model.train()
    h, w = info.input_size
    c = info.in_channels

    # wrong channel count: the encoded (2C) input, and C+1
    for bad_c in (2 * c, c + 1):
        with pytest.raises(ValueError, match=f"{c}-channel images"):
            model(torch.rand(1, bad_c, h, w))
    # too small
    mh, mw = info.min_size
    if mh > 1:
        with pytest.raises(ValueError, match=r"at least \d+×\d+ pixels"):
            model(torch.rand(1, c, mh - 1, mw))

    x = torch.rand(1, c, h, w, requires_grad=True)
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    assert out.shape == (1, info.num_classes)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # (parameters unused in eval mode, e.g. an auxiliary head, have no gradient)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)


def test_every_model_family_has_bcos_and_standard_kinds() -> None:
    names = set(ALL)
    for base in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg13",
                 "vgg16", "vgg19", "cifar_bcos", "cifar_resnet20", "cifar_resnet56"]:
        assert base in names and f"standard_{base}" in names
        assert model_info(base).kind == "bcos"
        assert model_info(f"standard_{base}").kind == "standard"
    for v2 in ["resnet18_v2", "resnet50_v2", "vgg11_bnu_v2", "cifar_bcos_v2",
               "cifar_resnet20_v2"]:
        assert model_info(v2).kind == "bcos_v2"


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="resnet18") as ei:
        bcosnet.create_model("resnet19")
    assert "did you mean" in str(ei.value)
    with pytest.raises(ValueError, match="vgg11"):
        bcosnet.create_model("vgg_11")


def test_unknown_option_is_rejected_with_valid_options() -> None:
    with pytest.raises(ValueError, match="valid options: .*max_out"):
        bcosnet.create_model("cifar_bcos", maxout=2)


def test_model_info_reflects_overrides() -> None:
    m = bcosnet.create_model("cifar_resnet20", num_classes=7, in_channels=1)
    assert m.model_info.num_classes == 7 and m.model_info.in_channels == 1
    assert m.model_info.input_size == (32, 32)
    out = m(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 7)
    assert math.isclose(model_info("resnet18").min_size[0], 32)
