"""``bcosnet explain``: real photos, any size/mode, corrupt and missing files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import bcosnet
from bcosnet.cli import main
from bcosnet.cli.explain import load_image, parse_target
from bcosnet.training import atomic_save


def _png_ok(path, min_size=100):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        assert im.width >= min_size and im.height >= min_size
        a = np.asarray(im.convert("RGB"))
    assert a.std() > 0  # not a blank canvas


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import skimage.data as data

    d = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, ext in (("astronaut", "png"), ("coffee", "jpg"), ("chelsea", "png")):
        p = d / f"{name}.{ext}"
        Image.fromarray(getattr(data, name)()).save(p)
        paths[name] = p
    return paths


def test_photos_resnet18_random_init_and_bad_files(photos, tmp_path, capsys):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    argv = ["explain", str(photos["astronaut"]), str(bad), str(photos["coffee"]), str(missing),
            str(photos["chelsea"]), "--model", "resnet18", "--out", str(out)]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert "corrupt.png" in err and "cannot read" in err
    assert "missing.jpg" in err and "no such file" in err
    assert "2 of 5" in err
    for name in ("astronaut", "coffee", "chelsea"):
        _png_ok(out / f"{name}.png")
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]


def _fmnist_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = bcosnet.create_model("fmnist_bcos", num_classes=10, width=4)
    classes = [f"garment{i}" for i in range(10)]
    ckpt = tmp_path / "ckpt.pt"
    atomic_save(
        {
            "model_name": "fmnist_bcos",
            "model_options": {"width": 4},
            "num_classes": 10,
            "classes": classes,
            "model": model.state_dict(),
        },
        ckpt,
    )
    return ckpt, model, classes


def test_checkpoint_grey_model_takes_rgba_any_size_and_topk(tmp_path, capsys):
    ckpt, model, classes = _fmnist_checkpoint(tmp_path)
    rgba = np.random.default_rng(0).integers(0, 256, (45, 70, 4), dtype=np.uint8)
    src = tmp_path / "odd size.png"
    Image.fromarray(rgba, "RGBA").save(src)
    out = tmp_path / "o"
    rc = main(["explain", str(src), "--checkpoint", str(ckpt), "--target", "topk:2",
               "--out", str(out)])
    assert rc == 0
    _png_ok(out / "odd size.png")
    # The prediction printed is the model's own on the converted 1×28×28 image.
    x = load_image(src, 1, (28, 28))
    assert x.shape == (1, 28, 28)
    pred = int(model.eval()(x.unsqueeze(0)).argmax())
    assert f"predicted {classes[pred]} ({pred})" in capsys.readouterr().out


def test_load_image_conversions(tmp_path):
    rgb = tmp_path / "a.png"
    Image.fromarray(np.full((10, 30, 3), 200, np.uint8)).save(rgb)
    x = load_image(rgb, 3, (8, 8))
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(x, torch.full_like(x, 200 / 255))
    # Transparent pixels become white, not black.
    la = tmp_path / "b.png"
    Image.fromarray(np.zeros((6, 6, 4), np.uint8), "RGBA").save(la)
    torch.testing.assert_close(load_image(la, 1, (6, 6)), torch.ones(1, 6, 6))
    # Stretch keeps the whole image; crop keeps the centre.
    grad = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (10, 1))
    g = tmp_path / "g.png"
    Image.fromarray(grad).save(g)
    s = load_image(g, 1, (10, 10), "stretch")
    c = load_image(g, 1, (10, 10), "crop")
    assert s[0, :, 0].mean() < 0.1 and s[0, :, -1].mean() > 0.9
    assert 0.3 < c[0].mean() < 0.7 and c[0, :, -1].mean() < 0.7


def test_parse_target():
    names = ["cat", "dog"]
    assert parse_target("pred", names) == "pred"
    assert parse_target("topk:3", names) == ("topk", 3)
    assert parse_target("1", names) == 1
    assert parse_target("dog", names) == 1
    for bad in ("topk:x", "topk:0", "horse"):
        with pytest.raises(ValueError, match="target"):
            parse_target(bad, names)


def test_needs_a_model(tmp_path, capsys):
    rc = main(["explain", str(tmp_path / "x.png")])
    assert rc == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_plain_state_dict_with_model_name(photos, tmp_path, capsys):
    """What a PyTorch user has: torch.save(model.state_dict()) and the model's name."""
    torch.manual_seed(0)
    model = bcosnet.create_model("cifar_resnet20").eval()
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    loaded = bcosnet.cli.explain.load_model(str(ckpt), "cifar_resnet20")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    out = tmp_path / "out"
    rc = main(["explain", str(photos["coffee"]), "--checkpoint", str(ckpt), "--model",
               "cifar_resnet20", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    _png_ok(out / "coffee.png")
    # the same file given for another architecture: named, not a torch traceback
    with pytest.raises(ValueError, match="does not fit the model"):
        bcosnet.cli.explain.load_model(str(ckpt), "cifar_bcos")
