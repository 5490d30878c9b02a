"""Weights in the registry: create_model(name, weights=...) for registered
entries, files of every kind we accept, and clear refusals."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
import torch

import bcosnet
from bcosnet.models import Weights, get_weights, list_weights
from bcosnet.models.bcos_v2 import V2_ARCHS, V2_URLS

from .bcos_reference import calibrate_norms


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _trained_like(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = bcosnet.create_model(name)
    with torch.no_grad():  # move the weights away from any deterministic init
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m.eval()


def test_every_official_v2_checkpoint_is_a_registered_entry() -> None:
    for arch, url in V2_URLS.items():
        name = V2_ARCHS[arch]
        assert list_weights(name) == ["bcos_v2_imagenet"]
        w = get_weights(name, "DEFAULT")
        assert w.url == url and w.key_format == "bcos_v2" and w.num_classes == 1000
        # torch.hub's convention: the hash prefix is the file name's last '-' part.
        assert url.rsplit("-", 1)[1].startswith(w.sha256_prefix)
        assert 60 < w.metrics["imagenet_top1"] < 85
    with pytest.raises(ValueError, match="no weights named 'imagenet'.*bcos_v2_imagenet"):
        bcosnet.create_model("resnet18_v2", weights="imagenet")
    with pytest.raises(ValueError, match="has no registered weights"):
        bcosnet.create_model("resnet18", weights="DEFAULT")


def test_plain_state_dict_file_loads(tmp_path: Path) -> None:
    ref = _trained_like("cifar_resnet20")
    path = tmp_path / "model.pt"
    torch.save(ref.state_dict(), path)  # what a PyTorch user has
    m = bcosnet.create_model("cifar_resnet20", weights=path)
    assert not m.training
    with torch.no_grad():
        torch.testing.assert_close(m(_x()), ref(_x()), rtol=0, atol=0)
    # the same from memory, and wrapped the way other trainers save it
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, path)
    m2 = bcosnet.create_model("cifar_resnet20", weights=path)
    with torch.no_grad():
        torch.testing.assert_close(m2(_x()), ref(_x()), rtol=0, atol=0)


def test_wrong_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(bcosnet.create_model("cifar_resnet20").state_dict(), path)
    with pytest.raises(ValueError, match="does not fit the model.*missing keys"):
        bcosnet.create_model("cifar_bcos", weights=path)
    with pytest.raises(ValueError, match="does not exist"):
        bcosnet.create_model("cifar_bcos", weights=tmp_path / "nope.pt")


def test_training_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    data = Path(__file__).parents[1] / "assets" / "v0.1.0_fmnist_bcos_checkpoint.pt"
    with pytest.raises(ValueError, match="trained as 'fmnist_bcos', not 'cifar_bcos'"):
        bcosnet.create_model("cifar_bcos", weights=data)


def test_a_registered_entry_downloads_checks_its_hash_and_converts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bcos_pretrained = pytest.importorskip("bcos.models.pretrained")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    ref = bcos_pretrained.resnet18(pretrained=False, num_classes=10)
    calibrate_norms(ref, torch.cat([_x(), 1 - _x()], 1))
    src = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:10]
    good = tmp_path / f"resnet18-{digest}.pth"
    os.replace(src, good)
    # The bcos factory keeps the ImageNet logit bias −log(999) whatever num_classes:
    # the entry's model_options say so.
    entry = Weights(name="test", url=good.as_uri(), sha256_prefix=digest, source="a test",
                    num_classes=10, key_format="bcos_v2",
                    model_options={"logit_bias": -math.log(999)})
    m = bcosnet.create_model("resnet18_v2", weights=entry)
    assert m.num_classes == 10  # the entry's class count
    with torch.no_grad():
        enc = torch.cat([_x(), 1 - _x()], 1)  # the bcos model takes encoded images
        torch.testing.assert_close(m(_x()), ref(enc), rtol=1e-5, atol=1e-5)
    bad = tmp_path / "resnet18-0123456789.pth"
    bad.write_bytes(good.read_bytes())
    entry_bad = Weights(name="bad", url=bad.as_uri(), sha256_prefix="0123456789",
                        source="a test", num_classes=10, key_format="bcos_v2")
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        bcosnet.create_model("resnet18_v2", weights=entry_bad)


def test_key_names_fold_in_one_place() -> None:
    from bcosnet.models.weights import map_state_keys

    ours = ["conv1.weight", "fc.weight", "bn1.running_var", "to_patch_embedding.linear.weight"]
    # the bcos package's spelling: B-cos weights in a `linear` sub-module, a wrapper prefix
    theirs = ["module.conv1.linear.weight", "module.fc.linear.weight", "module.bn1.running_var",
              "module.to_patch_embedding.linear.linear.weight", "module.extra.linear.weight"]
    assert map_state_keys(theirs, ours) == {
        "module.conv1.linear.weight": "conv1.weight", "module.fc.linear.weight": "fc.weight",
        "module.bn1.running_var": "bn1.running_var",
        # a layer *named* linear keeps its name: only the extra level is folded
        "module.to_patch_embedding.linear.linear.weight": "to_patch_embedding.linear.weight"}
    assert map_state_keys(ours, ours) == {k: k for k in ours}


def test_guessed_model_names_read_the_bcos_spelling() -> None:
    from bcosnet.models.factory import guess_model_names

    state = bcosnet.create_model("cifar_resnet20_v2").state_dict()
    v2 = {("module." + k[: -len(".weight")] + ".linear.weight"
           if k.endswith(".weight") and "bn" not in k and "downsample.1" not in k else
           "module." + k): v for k, v in state.items() if "num_batches_tracked" not in k}
    assert "cifar_resnet20_v2" in guess_model_names(v2)
    assert "cifar_resnet20_v2" in guess_model_names(state)
    assert "cifar_resnet56_v2" not in guess_model_names(state)
