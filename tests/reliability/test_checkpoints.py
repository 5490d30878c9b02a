"""Untrusted checkpoints: plain / bcos v2 / bcosnet files in every slot, truncated,
wrong architecture, code-running pickles, hash mismatches (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import bcosnet
from bcosnet.cli import main
from bcosnet.cli.explain import load_model
from bcosnet.training import load_checkpoint, load_checkpoint_model

ASSET = Path(__file__).parents[1] / "assets" / "v0.1.0_fmnist_bcos_checkpoint.pt"
AREA = "checkpoints"


def _v2_cifar_state() -> dict:
    """A ``bcos`` v2 CIFAR ResNet-20 state dict (its ``*.linear.weight`` key names)."""
    from bcos.models.resnet import cifar10_resnet20
    from bcos.modules import BcosConv2d, norms

    torch.manual_seed(0)
    ref = cifar10_resnet20(conv_layer=BcosConv2d,
                           norm_layer=norms.NoBias(norms.BatchNormUncentered2d)).eval()
    return ref.state_dict()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()
    p = tmp_path / "photo.jpg"
    Image.fromarray(a).save(p)
    return p


def test_explain_takes_plain_and_v2_state_dicts_with_model(photo, tmp_path, capsys,
                                                           reliability) -> None:
    torch.manual_seed(0)
    ours = bcosnet.create_model("cifar_resnet20").eval()
    plain = tmp_path / "model.pt"
    torch.save(ours.state_dict(), plain)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(plain), "cifar_resnet20")(x), ours(x),
                                   rtol=0, atol=0)
    rc = main(["explain", str(photo), "--checkpoint", str(plain), "--model", "cifar_resnet20",
               "--out", str(tmp_path / "o1")])
    assert rc == 0 and (tmp_path / "o1" / "photo.png").is_file(), capsys.readouterr().err
    reliability.handled(AREA, "explain --checkpoint torch.save(model.state_dict()) --model NAME",
                        "loaded strictly; same logits as the saved model; figure written")

    v2 = tmp_path / "v2.pth"
    torch.save(_v2_cifar_state(), v2)
    rc = main(["explain", str(photo), "--checkpoint", str(v2), "--model", "cifar_resnet20_v2",
               "--out", str(tmp_path / "o2")])
    assert rc == 0 and (tmp_path / "o2" / "photo.png").is_file(), capsys.readouterr().err
    reliability.handled(AREA, "explain --checkpoint <bcos v2 state dict> --model NAME_v2",
                        "`*.linear.weight` keys renamed; loaded strictly; figure written")

    # the bcosnet training checkpoint with --model naming it: its weights
    m = load_model(str(ASSET), "fmnist_bcos")
    ref = load_checkpoint_model(ASSET)
    x1 = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(m(x1), ref(x1), rtol=0, atol=0)
    reliability.handled(AREA, "explain --checkpoint <bcosnet training checkpoint> --model NAME",
                        "the checkpoint's (EMA) weights, same logits as load_checkpoint_model")


def test_wrong_architecture_names_expected_and_found(tmp_path, reliability) -> None:
    path = tmp_path / "m.pt"
    torch.save(bcosnet.create_model("cifar_resnet20").state_dict(), path)
    reliability.refused(AREA, "plain state dict of another architecture (--model cifar_bcos)",
                        ValueError, "expected 'cifar_bcos', found .*'cifar_resnet20'",
                        lambda: load_model(str(path), "cifar_bcos"))
    torch.save(bcosnet.create_model("cifar_resnet20", num_classes=7).state_dict(), path)
    reliability.refused(AREA, "plain state dict with another class count", ValueError,
                        r"shape mismatches: fc.weight: model \(20, 64, 1, 1\) vs .* \(14, 64",
                        lambda: load_model(str(path), "cifar_resnet20"))
    reliability.refused(AREA, "bcosnet training checkpoint given for another model", ValueError,
                        "of 'fmnist_bcos', not of --model 'cifar_bcos'.*--model fmnist_bcos",
                        lambda: load_model(str(ASSET), "cifar_bcos"))
    reliability.refused(AREA, "create_model(other name, weights=<training checkpoint>)",
                        ValueError, "trained as 'fmnist_bcos', not 'cifar_bcos'",
                        lambda: bcosnet.create_model("cifar_bcos", weights=ASSET))
    v2 = tmp_path / "v2.pth"
    torch.save(_v2_cifar_state(), v2)
    reliability.refused(AREA, "bcos v2 state dict given to a bcosnet (non-v2) model of "
                        "another architecture", ValueError, "cifar_bcos",
                        lambda: bcosnet.create_model("cifar_bcos", weights=v2))


def test_v2_file_where_bcosnet_checkpoint_expected_and_reverse(tmp_path, capsys,
                                                               reliability, photo) -> None:
    v2 = tmp_path / "v2.pth"
    torch.save(_v2_cifar_state(), v2)
    reliability.refused(AREA, "bcos v2 state dict given to load_checkpoint_model", ValueError,
                        r"not a bcosnet training checkpoint.*create_model\(NAME",
                        lambda: load_checkpoint_model(v2))
    rc = main(["explain", str(photo), "--checkpoint", str(v2), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "records no model name" in err and "Traceback" not in err
    reliability.message(AREA, "bcosnet explain --checkpoint <bcos v2 file> without --model",
                        "refused: exit 2", err)
    # the reverse: a bcosnet training checkpoint where a bcos v2 state dict is expected
    from bcosnet.models.bcos_v2 import load_bcos_v2

    reliability.refused(AREA, "bcosnet training checkpoint given to load_bcos_v2", ValueError,
                        "trained as 'fmnist_bcos'",
                        lambda: load_bcos_v2("cifar10_resnet20", ASSET))


def test_truncated_empty_junk_and_non_dict_files(tmp_path, reliability) -> None:
    data = ASSET.read_bytes()
    for name, content in (("truncated (first half)", data[: len(data) // 2]),
                          ("truncated (last byte cut)", data[:-1]),
                          ("0 bytes", b""), ("random bytes", os.urandom(2048))):
        p = tmp_path / "bad.pt"
        p.write_bytes(content)
        reliability.refused(AREA, f"training checkpoint file: {name}", ValueError,
                            "could not read checkpoint.*corrupt, truncated",
                            lambda p=p: load_checkpoint_model(p))
    p = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], p)
    reliability.refused(AREA, "a torch file holding a list, not a state dict", ValueError,
                        "holds a list, not a state dict",
                        lambda: bcosnet.create_model("fmnist_bcos", weights=p))
    p = tmp_path / "mixed.pt"
    torch.save({"a": torch.zeros(1), "b": 3}, p)
    reliability.refused(AREA, "a state dict with non-tensor entries", ValueError,
                        "not tensors: \\['b'\\]",
                        lambda: bcosnet.create_model("fmnist_bcos", weights=p))
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    reliability.refused(AREA, "corrupt .safetensors", ValueError, "as safetensors",
                        lambda: load_checkpoint_model(st))
    reliability.refused(AREA, "missing checkpoint file", FileNotFoundError, "not found",
                        lambda: load_checkpoint(tmp_path / "nope.pt"))


class _Evil:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran() -> None:
    _Evil.ran = True


def test_pickle_that_would_run_code_is_refused(tmp_path, reliability) -> None:
    state = bcosnet.create_model("fmnist_bcos", width=4).state_dict()
    state["evil"] = _Evil()
    p = tmp_path / "evil.pt"
    torch.save({"format": "bcosnet-checkpoint-1", "model": state, "model_name": "fmnist_bcos"},
               p)
    for what, fn in (("load_checkpoint_model", lambda: load_checkpoint_model(p)),
                     ("create_model(weights=)",
                      lambda: bcosnet.create_model("fmnist_bcos", weights=p)),
                     ("load_checkpoint", lambda: load_checkpoint(p))):
        reliability.refused(AREA, f"pickle with a code-running object via {what}", ValueError,
                            "holds code|not a weights-only", fn)
    assert not _Evil.ran


def test_url_hash_mismatch_is_refused_and_nothing_cached(tmp_path, reliability) -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model("fmnist_bcos", width=4)
    src = tmp_path / "src.pt"
    torch.save(m.state_dict(), src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:10]
    bad = tmp_path / "fmnist-0123456789.pt"
    bad.write_bytes(src.read_bytes())
    cache = tmp_path / "hub"
    reliability.refused(AREA, "file:// URL whose content does not match its SHA-256 prefix",
                        ValueError, "does not match the SHA-256",
                        lambda: bcosnet.models.weights.read_state_dict(
                            bad.as_uri(), model_dir=cache, progress=False))
    assert not cache.exists() or not any(cache.iterdir())
    good = tmp_path / f"fmnist-{digest}.pt"
    os.replace(src, good)
    m2 = bcosnet.create_model("fmnist_bcos", width=4, weights=good.as_uri())
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m.eval()(x), rtol=0, atol=0)
    reliability.handled(AREA, "file:// URL with a matching hash", "downloaded, checked, loaded")


def test_checkpoint_with_options_into_default_model_says_how_to_build(reliability) -> None:
    # the checkpoint records its options and class count: create_model builds with them
    with pytest.warns(UserWarning, match="without a model record"):
        m = bcosnet.create_model("fmnist_bcos", weights=ASSET)
    ref = load_checkpoint_model(ASSET)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)
    assert m.model_info.num_classes == 4 and m.model_info.extra["width"] == 4
    reliability.handled(AREA, "create_model(NAME, weights=<training checkpoint of NAME built "
                        "with non-default options>)", "built with the recorded options and "
                        "class count")
    reliability.refused(AREA, "create_model(NAME, weights=<training checkpoint of NAME>, "
                        "<other options>)", ValueError,
                        r"records num_classes=4 and model_options=\{.*load_checkpoint_model",
                        lambda: bcosnet.create_model("fmnist_bcos", weights=ASSET, width=8))
