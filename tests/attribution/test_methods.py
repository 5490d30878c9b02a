"""bcosnet.attribution: interface, shapes, dtypes, targets, baselines,
Grad-CAM layers, reproducibility and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import bcosnet
from bcosnet import attribution
from bcosnet.attribution import (
    GradCAM,
    Lime,
    Rise,
    count_passes,
    make_baseline,
    rise_masks,
)
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer

# Few samples/steps: these tests check the interface, not the defaults.
FAST = {
    "intgrad": {"n_steps": 4},
    "lime": {"n_samples": 24, "kernel_size": 2, "max_dist": 10},
    "rise": {"n_masks": 16},
    "occlusion": {"patch_size": 8, "stride": 8},
}


def bcos_cnn(num_classes: int = 5, in_ch: int = 3) -> nn.Module:
    """AddInverse → B-cos convs → 1×1 B-cos classifier → global average pool → logits."""
    return nn.Sequential(
        AddInverse(in_ch),
        BcosConv2d(2 * in_ch, 8, 3, padding=1),
        BcosConv2d(8, 8, 3, stride=2, padding=1, max_out=2),
        BcosConv2d(8, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(temperature=0.1, bias=-1.0),
    ).eval()


def standard_cnn(num_classes: int = 5) -> nn.Module:
    """Conventional twin: conv-BN-ReLU, max-pool, conv-ReLU, GAP, linear."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    ).eval()


def blocky_images(n: int, size: int = 32, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Piecewise-constant images (4×4 blocks) so quickshift finds several segments."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=(size, size))


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, int]]:
    """name → (model, image size)."""
    torch.manual_seed(0)
    return {
        "bcos": (bcos_cnn(), 32),
        "standard": (standard_cnn(), 32),
        "torchvision": (torchvision.models.resnet18(num_classes=5).eval(), 64),
    }


# ----------------------------------------------------------------------------- registry


def test_available_lists_every_method():
    names = attribution.available()
    assert names == list(attribution.METHODS)
    assert set(names) == {
        "bcos", "grad", "ixg", "intgrad", "deeplift", "gradcam", "lime", "rise", "occlusion"
    }
    for name in names:
        assert attribution.METHODS[name].name == name


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError) as e:
        attribution.get("intgrads", bcos_cnn())
    msg = str(e.value)
    assert "'intgrads'" in msg and "did you mean 'intgrad'" in msg
    for name in attribution.available():
        assert name in msg


def test_unknown_setting_lists_accepted_settings():
    with pytest.raises(TypeError, match="n_steps"):
        attribution.get("intgrad", bcos_cnn(), steps=10)


# ----------------------------------------------------------------------------- all methods


# 'bcos' is the B-cos networks' own explanation: an error elsewhere (tested below).
METHOD_MODEL = [
    pytest.param(method, model_name, id=f"{method}-{model_name}")
    for method in attribution.available()
    for model_name in ("bcos", "standard", "torchvision")
    if method != "bcos" or model_name == "bcos"
]


@pytest.mark.parametrize("method, model_name", METHOD_MODEL)
def test_every_method_on_every_model(models, model_name, method):
    """Interface: shapes, dtype, device, finiteness, no side effects on the model.
    (Values are checked against known answers in the tests further down; an
    untrained net's near-uniform scores are no known answer.)"""
    model, size = models[model_name]
    images = blocky_images(2, size)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expl = attribution.get(method, model, **FAST.get(method, {}))
    maps = expl.attribute(images, target=torch.tensor([1, 3]))
    channels = {"input": 6 if method == "bcos" else 3, "pixel": 1}[expl.map_kind]
    assert maps.shape == (2, channels, size, size)
    assert maps.dtype == images.dtype and maps.device == images.device
    assert torch.isfinite(maps).all()
    # The model is left as it was: no grads, same mode, same weights and buffers.
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("model_name", ["standard", "torchvision"])
def test_bcos_needs_a_bcos_network(models, model_name):
    with pytest.raises(ValueError, match="no B-cos layers.*'ixg'"):
        attribution.get("bcos", models[model_name][0])


@pytest.mark.parametrize("method", attribution.available())
def test_maps_follow_input_dtype_float64(method):
    torch.manual_seed(1)
    model = bcos_cnn().double()
    images = blocky_images(2).double()
    maps = attribution.get(method, model, **FAST.get(method, {})).attribute(images, target=0)
    assert maps.dtype == torch.float64


@pytest.mark.parametrize("method", attribution.available())
def test_train_mode_model_keeps_mode_and_buffers(method):
    torch.manual_seed(2)
    model = (bcos_cnn() if method == "bcos" else standard_cnn()).train()
    before = [b.clone() for b in model.buffers()]
    attribution.get(method, model, **FAST.get(method, {})).attribute(blocky_images(2), target=1)
    assert model.training
    for b, a in zip(model.buffers(), before):
        assert torch.equal(b, a)


def test_grid_pointing_game_style_sum_over_channels(models):
    """Per-pixel maps of all methods: ``map.sum(1)`` is H×W per image."""
    model, size = models["bcos"]
    images = blocky_images(3, size)
    for method in attribution.available():
        m = attribution.get(method, model, **FAST.get(method, {})).attribute(images, target=2)
        assert m.sum(1).shape == (3, size, size)


# ----------------------------------------------------------------------------- targets


def test_target_forms_agree():
    torch.manual_seed(3)
    model = bcos_cnn()
    images = blocky_images(3)
    grad = attribution.get("grad", model)
    by_int = grad.attribute(images, target=2)
    assert torch.equal(grad.attribute(images, target=[2, 2, 2]), by_int)
    assert torch.equal(grad.attribute(images, target=torch.tensor([2, 2, 2])), by_int)
    assert torch.equal(grad.attribute(images, target=torch.tensor(2)), by_int)
    per_image = grad.attribute(images, target=[0, 2, 4])
    for i, t in enumerate([0, 2, 4]):
        torch.testing.assert_close(per_image[i], grad.attribute(images[i : i + 1], target=t)[0])
    pred = model(images).argmax(1)
    assert torch.equal(grad.attribute(images, target="pred"), grad.attribute(images, target=pred))


@pytest.mark.parametrize("method", attribution.available())
def test_bad_targets_are_clear_errors(method):
    model = bcos_cnn(num_classes=5)
    expl = attribution.get(method, model, **FAST.get(method, {}))
    images = blocky_images(2)
    with pytest.raises(ValueError, match="out of range"):
        expl.attribute(images, target=5)
    with pytest.raises(ValueError, match="one class per image"):
        expl.attribute(images, target=[1, 2, 3])
    with pytest.raises(TypeError, match="integers"):
        expl.attribute(images, target=torch.tensor([1.0, 2.0]))


def test_bad_images_are_clear_errors():
    expl = attribution.get("grad", bcos_cnn())
    with pytest.raises(ValueError, match="unsqueeze"):
        expl.attribute(torch.rand(3, 32, 32), target=0)
    with pytest.raises(TypeError, match="floating-point"):
        expl.attribute(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), target=0)
    with pytest.raises(ValueError, match="NaN"):
        expl.attribute(torch.full((1, 3, 32, 32), float("nan")), target=0)


# ----------------------------------------------------------------------------- baselines


def test_make_baseline_kinds():
    images = blocky_images(2)
    assert torch.equal(make_baseline(images, "black"), torch.zeros_like(images))
    assert torch.equal(make_baseline(images, "white"), torch.ones_like(images))
    mean = make_baseline(images, "mean")
    assert torch.allclose(mean, images.mean((2, 3), keepdim=True).expand_as(images))
    blur = make_baseline(images, "blur", blur_sigma=2.0)
    assert blur.shape == images.shape
    # Blurring keeps the mean roughly and reduces the variation.
    assert (blur - images.mean((2, 3), keepdim=True)).abs().mean() < (
        images - images.mean((2, 3), keepdim=True)
    ).abs().mean()
    assert torch.equal(make_baseline(images, 0.5), torch.full_like(images, 0.5))
    img = torch.rand(3, 32, 32)
    assert torch.equal(make_baseline(images, img), img.expand_as(images))
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline(images, "gray")
    with pytest.raises(ValueError, match="broadcast"):
        make_baseline(images, torch.rand(3, 16, 16))


def test_black_baseline_is_encoded_not_zero():
    """DeepLIFT on a pure B-cos model (no DeepLIFT rule applies) is (x − x̄) ⊙ ∇f.
    In the encoded space the black baseline is e(0) = [0, 1], so the factor is
    e(x) − e(0) = [x, −x], not e(x); in the raw space it is x."""
    torch.manual_seed(4)
    model = bcos_cnn().double()
    images = blocky_images(2).double()
    enc = AddInverse()(images).requires_grad_(True)
    (g_enc,) = torch.autograd.grad(nn.Sequential(*list(model)[1:])(enc)[:, 1].sum(), enc)
    dl = attribution.get("deeplift", model, input_space="encoded").attribute(images, target=1)
    torch.testing.assert_close(dl, torch.cat([images, -images], 1) * g_enc)
    raw = images.clone().requires_grad_(True)
    (g_raw,) = torch.autograd.grad(model(raw)[:, 1].sum(), raw)
    torch.testing.assert_close(attribution.get("deeplift", model).attribute(images, 1),
                               images * g_raw)


# ----------------------------------------------------------------------------- bcos method


def test_bcos_method_is_explain_contributions():
    torch.manual_seed(5)
    model = bcos_cnn().double()
    images = blocky_images(3).double()
    t = torch.tensor([0, 4, 2])
    ex = bcosnet.explain(model, images, target=t)
    maps = attribution.get("bcos", model).attribute(images, target=t)
    torch.testing.assert_close(maps, ex.contributions_full[:, 0])
    # completeness: Σ map + bias = logit
    torch.testing.assert_close(maps.sum((1, 2, 3)) + ex.bias[:, 0], ex.logits[:, 0])
    weights = attribution.get("bcos", model, output="weights").attribute(images, target=t)
    torch.testing.assert_close(weights * AddInverse()(images), maps)
    with pytest.raises(ValueError, match="contributions"):
        attribution.get("bcos", model, output="rgb")


# ----------------------------------------------------------------------------- Grad-CAM


def test_gradcam_auto_layer_skips_the_classifier(models):
    model, size = models["bcos"]
    cam = GradCAM(model)
    cam.attribute(blocky_images(1, size), target=0)
    # '3' is the 1×1 per-location classifier (5 = num_classes channels); '2' the last features.
    assert cam.layer_name == "2"
    tv, size = models["torchvision"]
    cam = GradCAM(tv)
    cam.attribute(blocky_images(1, size), target=0)
    assert cam.layer_name == "layer4"


@pytest.mark.parametrize("name", ["vgg11", "fmnist_bcos", "standard_fmnist_bcos"])
def test_gradcam_uses_the_feature_extractor_output(name):
    """The paper's Grad-CAM layer is the feature extractor's output
    (``model.last_feature_layer``), not the last spatial layer (on v1 VGG the
    per-location head ``classifier.1`` has a spatial output too)."""
    torch.manual_seed(0)
    kw = {"hidden_features": 16} if name == "vgg11" else {}  # the head's width is irrelevant
    model = bcosnet.create_model(name, num_classes=4, **kw).eval()
    c, size = (3, 64) if name == "vgg11" else (1, 28)
    x = torch.rand(2, c, size, size)
    cam = GradCAM(model)
    got = cam.attribute(x, target=torch.tensor([1, 2]))
    assert cam.layer_name == "features" == model.last_feature_layer
    # Independently: Grad-CAM from the features output, upsampled nearest (the paper).
    store = {}
    h = model.features.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    with torch.enable_grad():
        logits = model(x)
        (g,) = torch.autograd.grad(logits[[0, 1], [1, 2]].sum(), store["a"])
    h.remove()
    a = store["a"].detach()
    expected = (g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp_min(0)
    expected = F.interpolate(expected, size=(size, size), mode="nearest")
    torch.testing.assert_close(got, expected)


def test_gradcam_matches_cam_formula():
    """For features → GAP → linear, Grad-CAM = ReLU(Σ_k w_tk A^k / (h·w)) (CAM up to 1/hw)."""
    torch.manual_seed(6)
    feats = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU())
    fc = nn.Linear(4, 3)
    model = nn.Sequential(feats, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).double().eval()
    images = blocky_images(2).double()
    a = feats(images)
    h, w = a.shape[-2:]
    t = torch.tensor([2, 0])
    expected = (fc.weight[t][:, :, None, None] * a).sum(1, keepdim=True).clamp_min(0) / (h * w)
    raw = GradCAM(model, layer="0", upsample=False).attribute(images, target=t)
    torch.testing.assert_close(raw, expected.detach())
    up = GradCAM(model, layer=feats).attribute(images, target=t)  # nearest: the paper
    nearest = expected.detach().repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(up, nearest)
    smooth = GradCAM(model, layer=feats, interpolation="bilinear").attribute(images, target=t)
    torch.testing.assert_close(
        smooth,
        F.interpolate(expected.detach(), size=(32, 32), mode="bilinear", align_corners=False),
    )
    signed = GradCAM(model, layer="0", relu=False, upsample=False).attribute(images, target=t)
    assert (signed < 0).any() and torch.equal(signed.clamp_min(0), raw)


def test_gradcam_layer_errors(models):
    tv, size = models["torchvision"]
    with pytest.raises(ValueError, match="does not exist.*layer4"):
        GradCAM(tv, layer="layer5")
    with pytest.raises(ValueError, match="no spatial output"):
        GradCAM(tv, layer="fc").attribute(blocky_images(1, size), target=0)
    with pytest.raises(ValueError, match="not part of the model"):
        GradCAM(tv, layer=nn.Conv2d(1, 1, 1))
    # A model whose features are all 1×1 at this size has no spatial layer.
    with pytest.raises(ValueError, match="no layer with spatial output"):
        GradCAM(standard_cnn()).attribute(torch.rand(1, 3, 1, 1), target=0)


def test_gradcam_leaves_in_place_relu_model_working(models):
    tv, size = models["torchvision"]
    images = blocky_images(2, size)
    m1 = GradCAM(tv, layer="layer3.1.bn2").attribute(images, target=1)  # followed by += and ReLU_
    assert m1.shape == (2, 1, size, size) and torch.isfinite(m1).all()


# ----------------------------------------------------------------------------- randomness


@pytest.mark.parametrize(
    "cls, settings", [(Rise, FAST["rise"]), (Lime, {**FAST["lime"], "num_features": None})]
)
def test_random_methods_are_reproducible(cls, settings):
    torch.manual_seed(7)
    model = standard_cnn()
    images = blocky_images(2)
    a = cls(model, seed=11, **settings).attribute(images, target=1)
    torch.manual_seed(999)  # the global RNG must not matter
    b = cls(model, seed=11, **settings).attribute(images, target=1)
    c = cls(model, seed=12, **settings).attribute(images, target=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1 = cls(model, generator=torch.Generator().manual_seed(3), **settings)
    g2 = cls(model, generator=torch.Generator().manual_seed(3), **settings)
    assert torch.equal(g1.attribute(images, target=1), g2.attribute(images, target=1))


def test_rise_masks_properties():
    g = torch.Generator().manual_seed(0)
    m = rise_masks(400, (30, 37), s=8, p=0.1, generator=g)
    assert m.shape == (400, 1, 30, 37)
    assert m.min() >= 0 and m.max() <= 1
    assert abs(m.mean().item() - 0.1) < 0.02  # E[mask] = p
    # Smooth: neighbouring pixels differ much less than the mask range.
    assert (m[..., 1:] - m[..., :-1]).abs().max() < 0.5
    # The masks differ from each other.
    assert not torch.equal(m[0], m[1])


def test_rise_on_constant_model_is_uniform():
    """If the score does not depend on the input, RISE gives score · E[M]/p ≈ score."""

    class Const(nn.Module):
        def forward(self, x):
            return x.new_tensor([[2.0, -1.0]]).expand(x.shape[0], 2)

    sal = Rise(Const(), n_masks=500, output="logit").attribute(torch.rand(1, 3, 32, 32), target=0)
    assert abs(sal.mean().item() - 2.0) < 0.2


# LIME tests: tests/attribution/test_perturbation.py


# ----------------------------------------------------------------------------- occlusion


def test_occlusion_on_linear_model_is_patch_contribution():
    """Score = Σ a ⊙ x; non-overlapping black patches: each pixel gets its patch's Σ a ⊙ x."""
    torch.manual_seed(10)
    a = torch.randn(1, 3, 32, 32, dtype=torch.float64)

    class Lin(nn.Module):
        def forward(self, x):
            s = (x * a).flatten(1).sum(1)
            return torch.stack([s, 2 * s], 1)

    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    occ = attribution.get("occlusion", Lin(), patch_size=8, stride=8, output="logit").attribute(
        images, 1)
    contrib = 2 * (a * images).sum(1, keepdim=True)
    expected = F.avg_pool2d(contrib, 8) * 64
    expected = expected.repeat_interleave(8, 2).repeat_interleave(8, 3)
    torch.testing.assert_close(occ, expected)
    # Overlapping windows, odd sizes (the last window of a row/column flush with the
    # border): each pixel gets the mean, over the windows covering it, of that
    # window's drop Σ_window a ⊙ x — computed here window by window.
    occ2 = attribution.get("occlusion", Lin(), patch_size=(5, 7), stride=3,
                           output="logit").attribute(images, 0)
    ys = list(range(0, 28, 3))           # 0 … 27 = 32 − 5: the stride reaches the border
    xs = [*range(0, 26, 3), 25]          # 0 … 24, then 25 = 32 − 7 flush with it
    total = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    count = torch.zeros(32, 32, dtype=torch.float64)
    for y in ys:
        for x in xs:
            drop = (a * images)[:, :, y:y + 5, x:x + 7].sum((1, 2, 3))
            total[:, 0, y:y + 5, x:x + 7] += drop[:, None, None]
            count[y:y + 5, x:x + 7] += 1
    assert (count > 0).all()
    torch.testing.assert_close(occ2, total / count)


def test_occlusion_patch_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="larger than the images"):
        attribution.get("occlusion", standard_cnn(), patch_size=40).attribute(
            torch.rand(1, 3, 32, 32), 0
        )


# ----------------------------------------------------------------------------- costs


def test_pass_counts():
    torch.manual_seed(11)
    model = bcos_cnn()
    images = blocky_images(4)
    expected = {  # (forward, backward) images per batch of 4
        "grad": (4, 4),
        "ixg": (4, 4),
        "bcos": (4, 4),  # explain()'s extra forward for the bias is not needed
        "gradcam": (4, 4),  # after the first call's layer search; backward only to the layer
        "deeplift": (8, 8),  # [x; x̄] once
        "intgrad": (4 + 4 * 4, 4 * 4),  # targets + n_steps=4 per image
        "rise": (4 + 16 * 4, 0),
        "occlusion": (4 + 16 * 4, 0),  # 16 windows of 8×8
    }
    for name, (fwd, bwd) in expected.items():
        expl = attribution.get(name, model, **FAST.get(name, {}))
        if name == "gradcam":
            expl.attribute(images, target=1)  # the layer search: once per input size
        with count_passes(model) as c:
            expl.attribute(images, target=1)
        assert (c.forward, c.backward) == (fwd, bwd), name


@pytest.mark.parametrize("method,desc", [("rise", "RISE"), ("occlusion", "occlusion"),
                                         ("lime", "LIME"), ("intgrad", "IntGrad")])
def test_progress_of_slow_calls(method, desc, monkeypatch, capsys):
    """progress=None (default): a bar only on a terminal and only when the call is
    expected to take longer than AUTO_PROGRESS_SECONDS; True: always; False: never.
    The evaluation loops (make_attribution_fn) silence the per-call bar."""
    from bcosnet._utils import progress as prog
    from bcosnet.evaluation.pointing_game import make_attribution_fn

    model, x = bcos_cnn(), blocky_images(1)
    settings = {**FAST[method], "batch_size": 2}  # several chunks per call

    def run(**kw):
        attribution.get(method, model, **settings, **kw).attribute(x, target=1)
        return capsys.readouterr().err

    monkeypatch.setattr(prog, "AUTO_PROGRESS_SECONDS", 0.0)  # every call counts as slow
    assert run() == ""  # off a terminal (tests, logs, the main job's workers): silent
    lines = run(progress=True)  # asked for: one plain line at the end off a terminal
    assert f"{desc}: " in lines and "(100%)" in lines
    monkeypatch.setattr(prog, "is_terminal", lambda stream=None: True)
    assert desc in run()  # a tqdm bar on a terminal
    assert run(progress=False) == ""
    fn = make_attribution_fn(model, method, **settings)
    fn(x, torch.tensor([1]))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(prog, "AUTO_PROGRESS_SECONDS", 1e9)  # a quick call: no bar
    assert run() == ""
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        run(progress="yes")
