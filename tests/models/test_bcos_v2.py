"""``load_bcos_v2``: equivalence with the ``bcos`` package's models, and its errors.

The reference models are built by the ``bcos`` package itself with random weights
(``pretrained=False``: nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from bcos.models import pretrained as bcos_pretrained

import bcosnet
from bcosnet.models import load_bcos_v2
from bcosnet.models.bcos_v2 import V2_ARCHS, V2_URLS, convert_bcos_v2_state_dict

from .bcos_reference import bcos_explanation, calibrate_norms


def _reference(arch: str, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    ref = getattr(bcos_pretrained, arch)(pretrained=False, num_classes=num_classes)
    # Random weights and running statistics from one batch, so that the signal
    # neither vanishes nor explodes (fresh running_var = 1 makes it vanish).
    norms = [m for m in ref.modules() if getattr(m, "running_var", None) is not None]
    for m in norms:
        m.momentum = 1.0
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ref.train()
    with torch.no_grad():
        ref(torch.cat([x, 1 - x], 1))
    return ref.eval()


@pytest.mark.parametrize(
    "arch",
    [
        "resnet18",
        pytest.param("resnet34", marks=pytest.mark.slow),
        "resnet50",
        pytest.param("vgg11_bnu", marks=pytest.mark.slow),
        pytest.param("densenet121", marks=pytest.mark.slow),
    ],
)
def test_equivalence_with_bcos_package(arch: str) -> None:
    if V2_ARCHS[arch] not in bcosnet.list_models():
        pytest.fail(f"{V2_ARCHS[arch]} is not registered")
    ref = _reference(arch, num_classes=10)
    # bcos' ImageNet config fixes the logit bias at −log(999) whatever num_classes is.
    ours = load_bcos_v2(arch, ref.state_dict(), num_classes=10,
                        logit_bias=ref.logit_layer.logit_bias)
    assert not ours.training and ours.model_info.name == V2_ARCHS[arch]

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    enc = torch.cat([x, 1 - x], 1)
    target = 3
    ref_out, ref_w = bcos_explanation(ref, enc, target)
    with torch.no_grad():
        out = ours(x)
    bias = ref.logit_layer.logit_bias
    assert (ref_out - bias).abs().max() > 1e-6, "degenerate reference: nothing compared"
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4 * (ref_out - bias).abs().max())

    ex = bcosnet.explain(ours, x, target=target)
    scale = ref_w.abs().max()
    torch.testing.assert_close(ex.weights[:, 0], ref_w, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(ex.inputs, enc)
    torch.testing.assert_close(ex.logits[:, 0], ref_out[:, target], rtol=1e-5, atol=1e-6)


def test_cifar_resnet_equivalence_with_bcos_package() -> None:
    from bcos.models.resnet import cifar10_resnet20
    from bcos.modules import BcosConv2d as RefConv
    from bcos.modules import norms

    torch.manual_seed(0)
    ref = cifar10_resnet20(conv_layer=RefConv,
                           norm_layer=norms.NoBias(norms.BatchNormUncentered2d))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    enc = torch.cat([x, 1 - x], 1)
    calibrate_norms(ref, enc)
    ours = load_bcos_v2("cifar10_resnet20", ref.state_dict())
    assert ours.model_info.num_classes == 10
    ref_out, ref_w = bcos_explanation(ref, enc, target=2)
    assert ref_w.abs().max() > 0
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref_out, rtol=1e-4, atol=1e-5)
    ex = bcosnet.explain(ours, x, target=2)
    torch.testing.assert_close(ex.weights[:, 0], ref_w, rtol=1e-4,
                               atol=1e-4 * ref_w.abs().max())
    with pytest.raises(ValueError, match="no official B-cos v2 weights"):
        load_bcos_v2("cifar10_resnet20")


@pytest.fixture(scope="module")
def resnet18_ref_state() -> dict:
    return _reference("resnet18", num_classes=1000).state_dict()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)))


def test_local_path_and_wrapped_state_dicts(tmp_path, resnet18_ref_state) -> None:
    direct = load_bcos_v2("resnet18", resnet18_ref_state)
    path = tmp_path / "ckpt.pth"
    torch.save(resnet18_ref_state, path)
    from_path = load_bcos_v2("resnet18_v2", str(path))  # bcosnet name accepted too
    torch.testing.assert_close(_logits(from_path), _logits(direct), rtol=0, atol=0)
    # DDP / Lightning style wrappers
    wrapped = {"state_dict": {f"module.{k}": v for k, v in resnet18_ref_state.items()}}
    torch.save(wrapped, path)
    torch.testing.assert_close(_logits(load_bcos_v2("resnet18", path)), _logits(direct))


def test_file_url_with_hash_check(tmp_path, resnet18_ref_state) -> None:
    src = tmp_path / "src.pth"
    torch.save(resnet18_ref_state, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    good = tmp_path / f"resnet_18-{digest[:10]}.pth"
    os.replace(src, good)
    cache = tmp_path / "hub"
    model = load_bcos_v2("resnet18", good.as_uri(), model_dir=cache, progress=False)
    assert (cache / good.name).is_file()  # went through torch's hub cache
    torch.testing.assert_close(_logits(model), _logits(load_bcos_v2("resnet18",
                                                                    resnet18_ref_state)))

    # a file whose content does not match the hash prefix in its name
    bad = tmp_path / "resnet_18-0123456789.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_bcos_v2("resnet18", bad.as_uri(), model_dir=tmp_path / "hub2", progress=False)
    assert not (tmp_path / "hub2" / bad.name).exists()


def test_corrupt_and_unsafe_files_are_rejected(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ValueError, match="could not read checkpoint"):
        load_bcos_v2("resnet18", junk)
    with pytest.raises(ValueError, match="does not exist"):
        load_bcos_v2("resnet18", tmp_path / "missing.pth")
    # a pickle that would run code: refused by weights_only=True
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.linear.weight": _Evil()}, evil)
    with pytest.raises(ValueError, match="could not read checkpoint"):
        load_bcos_v2("resnet18", evil)
    assert not _Evil.ran


class _Evil:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran() -> None:
    _Evil.ran = True


def test_key_and_shape_errors_are_listed(resnet18_ref_state) -> None:
    sd = dict(resnet18_ref_state)
    del sd["layer2.0.conv1.linear.weight"]
    sd["extra.linear.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as ei:
        load_bcos_v2("resnet18", sd)
    msg = str(ei.value)
    assert "missing key(s): layer2.0.conv1.weight" in msg
    assert "unexpected key(s): extra.linear.weight" in msg

    with pytest.raises(ValueError, match=r"shape mismatch.*fc\.linear\.weight.*num_classes="):
        load_bcos_v2("resnet18", resnet18_ref_state, num_classes=10)
    # a checkpoint of another architecture
    with pytest.raises(ValueError, match="missing key"):
        load_bcos_v2("resnet34", resnet18_ref_state)


def test_unknown_arch_and_bad_source() -> None:
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        load_bcos_v2("resnet81", {})
    with pytest.raises(TypeError):
        load_bcos_v2("resnet18", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be tensors"):
        convert_bcos_v2_state_dict({"fc.linear.weight": "oops"}, {})


def test_official_urls_cover_required_archs() -> None:
    for arch in ["resnet18", "resnet34", "resnet50", "densenet121", "vgg11_bnu"]:
        assert arch in V2_ARCHS and V2_URLS[arch].startswith("https://")
        assert V2_URLS[arch].rsplit("-", 1)[-1].removesuffix(".pth").isalnum()
