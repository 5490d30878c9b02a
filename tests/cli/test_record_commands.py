"""Issue 24, finding 1: a model trained at 64 px on a folder of colour images is
explained, evaluated and inspected at 64 px with its class names — from the
checkpoint and from the ``.safetensors`` export — and a folder image is the same
tensor in the data set and in ``bcosnet explain``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bcosnet
from bcosnet.cli import main
from bcosnet.data import build_datasets, datasets_for, to_model_input
from bcosnet.training import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    atomic_save,
    load_checkpoint_model,
    train,
)

CLASSES = ("blue", "green", "red")
SIZES = ((72, 88), (80, 80), (96, 70), (64, 64))  # (H, W): the resize rule matters


def _picture(label: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with one dominant colour channel (blue, green or red) in a square."""
    a = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
    ch = {0: 2, 1: 1, 2: 0}[label]
    y, x = rng.integers(0, h // 3), rng.integers(0, w // 3)
    a[y:y + h // 2, x:x + w // 2, ch] = 230
    return a


def _folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                h, w = SIZES[i % len(SIZES)]
                Image.fromarray(_picture(label, h, w, rng)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """fmnist_bcos (RGB, width 4) trained 8 epochs (~1 s) at 64 px on a generated
    folder of 3 colour classes; returns the data root and the TrainResult."""
    root = _folder(tmp_path_factory.mktemp("shapes"), {"train": 12, "val": 6})
    cfg = TrainConfig(
        model=ModelConfig("fmnist_bcos", options={"width": 4, "in_channels": 3}),
        data=DataConfig(dataset="folder", root=str(root), image_size=64, augment=False,
                        eval_batch_size=64),
        optim=OptimConfig(name="adam", lr=3e-3, batch_size=12), epochs=8, precision="fp32",
        out_dir=str(tmp_path_factory.mktemp("run") / "out"), progress=False, threads=1,
        eval_every_epochs=0,
    ).validate()
    return root, train(cfg)


def _reference_accuracy(model: torch.nn.Module, root: Path) -> float:
    """From the rule as written: PIL RGB, shorter side to 64·256/224 = 73, centre crop 64."""
    from torchvision import transforms as T

    t = T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor()])
    right = total = 0
    for label, name in enumerate(CLASSES):
        for f in sorted((root / "val" / name).iterdir()):
            with Image.open(f) as im:
                x = t(im.convert("RGB"))
            with torch.no_grad():
                right += int(model(x[None]).argmax()) == label
            total += 1
    return right / total


def test_the_record_of_a_folder_model(run) -> None:
    root, res = run
    for path in (res.checkpoint, res.weights):
        info = load_checkpoint_model(path).model_info
        assert info.classes == CLASSES and info.in_channels == 3
        assert info.image_size == (64, 64) and info.preprocess.crop_fraction == 224 / 256
        assert info.dataset.name == "folder" and info.dataset.root == str(root.resolve())
        assert (info.dataset.train_split, info.dataset.test_split) == ("train", "val")


def test_accuracy_is_the_same_from_checkpoint_and_export(run, tmp_path, capsys) -> None:
    root, res = run
    top1 = {}
    for name, path in (("ckpt", res.checkpoint), ("export", res.weights)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "accuracy", "--checkpoint", str(path), "--json",
                     str(out)]) == 0
        top1[name] = json.loads(out.read_text())["top1"]
    err = capsys.readouterr().err
    assert "data: folder at" in err and "64×64 px" in err
    # the model as trained (EMA off: raw weights), on pixels made by torchvision's own ops
    ref = _reference_accuracy(load_checkpoint_model(res.weights), root)
    assert top1["ckpt"] == top1["export"] == pytest.approx(ref)
    assert ref >= 0.8  # it learnt (chance: 1/3)
    # another size only on request, with a warning naming the trained size
    out = tmp_path / "28.json"
    assert main(["evaluate", "accuracy", "--checkpoint", str(res.weights), "--image-size",
                 "28", "--json", str(out)]) == 0
    assert ("warning: the model was trained on 64×64 images; feeding 28×28 (--image-size 28)"
            in capsys.readouterr().err)


@pytest.mark.parametrize("which", ["checkpoint", "weights"])
def test_explain_uses_the_trained_size_and_class_names(run, tmp_path, capsys, which) -> None:
    root, res = run
    model = load_checkpoint_model(res.weights)
    val = datasets_for(model).test
    files = [Path(p) for p, _ in val.samples]
    out = tmp_path / "ex"
    assert main(["explain", *map(str, files[:4]), "--checkpoint", str(getattr(res, which)),
                 "--format", "rgba", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    for i, f in enumerate(files[:4]):
        with Image.open(out / f"{f.stem}.png") as im:
            assert im.size == (64, 64)  # the explained tensor: 64×64, not the registry's 28
        with torch.no_grad():
            pred = int(model(val[i][0][None]).argmax())
        assert f"{f}: predicted {CLASSES[pred]} ({pred})" in captured.out
    assert "model: fmnist_bcos: 3 classes (blue, green, red); input 3×64×64 px" in captured.err
    assert "warning" not in captured.err
    # another size: explicit, and warned about
    out2 = tmp_path / "ex28"
    assert main(["explain", str(files[0]), "--checkpoint", str(getattr(res, which)),
                 "--format", "rgba", "--image-size", "28", "--out", str(out2)]) == 0
    with Image.open(out2 / f"{files[0].stem}.png") as im:
        assert im.size == (28, 28)
    assert ("warning: the model was trained on 64×64 images; feeding 28×28 (--image-size 28)"
            in capsys.readouterr().err)


def test_neurons_reads_the_data_set_from_the_record(run, tmp_path, capsys) -> None:
    root, res = run
    out = tmp_path / "n"
    assert main(["neurons", "--checkpoint", str(res.weights), "--layer", "features.3",
                 "--channels", "0", "--top", "5", "--images-per-neuron", "2",
                 "--out", str(out)]) == 0
    rec = json.loads((out / "top_features.3.json").read_text())
    assert rec["dataset"] == "folder" and rec["root"] == str(root.resolve())
    assert rec["classes"] == list(CLASSES)
    # the old spelling: --data NAME --data-root DIR, with a message naming the new flags
    out2 = tmp_path / "n2"
    assert main(["neurons", "--checkpoint", str(res.weights), "--layer", "features.3",
                 "--channels", "0", "--top", "5", "--images-per-neuron", "2",
                 "--data", "folder", "--data-root", str(root), "--out", str(out2)]) == 0
    err = capsys.readouterr().err
    assert "write --dataset folder" in err and "--data-root is deprecated: write --data ROOT" \
        in err
    assert json.loads((out2 / "top_features.3.json").read_text())["neurons"] == rec["neurons"]


# ----------------------------------------------------------------------------- one decoder
def _odd_files(d: Path) -> dict[str, Path]:
    """The kinds of file a real folder holds (all 60×80 as viewed)."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pic = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    files = {}
    Image.fromarray(pic).save(files.setdefault("upright", d / "upright.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; a viewer turns it 90° clockwise
    Image.fromarray(np.rot90(pic, 1).copy()).save(files.setdefault("exif", d / "exif.png"),
                                                  exif=exif)
    rgba = np.dstack([pic, np.where(np.arange(80) < 40, 255, 0)[None].repeat(60, 0)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(files.setdefault("rgba", d / "rgba.png"))
    grey16 = (np.linspace(0, 65535, 60 * 80).reshape(60, 80)).astype(np.uint16)
    Image.fromarray(grey16).save(files.setdefault("grey16", d / "grey16.png"))
    Image.fromarray(pic[..., 0]).save(files.setdefault("grey", d / "grey.png"))
    return files


@pytest.mark.parametrize("channels", [3, 1])
def test_a_folder_image_is_the_same_tensor_in_the_data_set_and_in_explain(
        tmp_path, channels, monkeypatch) -> None:
    for split in ("train", "val"):
        files = _odd_files(tmp_path / split / "odd")
    splits = build_datasets("folder", tmp_path, image_size=64, channels=channels,
                            augment=False)
    info = replace(bcosnet.create_model("fmnist_bcos", 1, in_channels=channels, width=4)
                   .model_info, preprocess=splits.preprocess, dataset=splits.dataset)
    test = splits.test
    by_name = {Path(p).stem: i for i, (p, _) in enumerate(test.samples)}
    x = {}
    for kind, f in files.items():
        x[kind] = test[by_name[kind]][0]
        assert x[kind].shape == (channels, 64, 64)
        assert torch.equal(to_model_input(f, info), x[kind]), kind  # the API
        from bcosnet.cli.explain import load_image  # the explicit-size helper
        assert torch.equal(load_image(f, channels, (64, 64)), bcosnet.data.Preprocess(
            (64, 64))(bcosnet.data.open_image(f, channels)))
    # bcosnet explain itself: the batch it explains holds the data set's tensors
    model = bcosnet.create_model("fmnist_bcos", 1, in_channels=channels, width=4)
    model.model_info = info
    ckpt = tmp_path / "m.pt"
    atomic_save({"model": model.state_dict(), "model_name": info.name,
                 "model_info": info.to_dict()}, ckpt)
    seen = []

    def spy(model, images, **kw):
        seen.append(images.clone())
        return explain(model, images, **kw)

    from bcosnet import explanations
    from bcosnet.explanations import explain

    monkeypatch.setattr(explanations, "explain", spy)
    order = list(files)
    assert main(["explain", *(str(files[k]) for k in order), "--checkpoint", str(ckpt),
                 "--format", "rgba", "--out", str(tmp_path / "ex")]) == 0
    batch = torch.cat(seen)
    for j, kind in enumerate(order):
        assert torch.equal(batch[j], x[kind]), kind
    # what the decoder does, checked against the pixels written
    assert torch.equal(x["exif"], x["upright"])  # EXIF orientation applied
    # the transparent half (right) is white after compositing; the opaque half unchanged
    assert torch.all(x["rgba"][..., 40:] == 1.0)
    assert torch.allclose(x["rgba"][..., :20], x["upright"][..., :20])
    # 16-bit grey scaled to [0, 1], not clipped at 255: a ramp from ~0.1 to ~0.9
    ramp = x["grey16"].mean(0)
    assert 0.05 < float(ramp[0].mean()) < 0.3 and 0.7 < float(ramp[-1].mean()) < 0.95
