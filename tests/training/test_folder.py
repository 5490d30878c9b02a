"""Training on one's own image folder (issue #24): settings read off the data by
stated rules, no preset applied silently, the start-up summary, and the folder
preset learning small data on a CPU."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bcosnet.cli import build_parser, main
from bcosnet.cli.train import config_from_args
from bcosnet.data import survey_image_folder
from bcosnet.models import model_info
from bcosnet.training import get_preset, load_checkpoint_model, load_config, resolve_config, train
from bcosnet.training.summary import thread_origin
from tests.training.shapes import SHAPE_CLASSES, write_shapes_folder

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """3 classes × 5 colour training images (3 val) of 64 px."""
    return write_shapes_folder(tmp_path_factory.mktemp("d") / "shapes", train_per_class=5,
                               val_per_class=3)


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def _write(folder: Path, sizes: list[tuple[int, int]], mode: str = "RGB") -> None:
    """One class 'a' in train/ and val/ with images of the given (W, H)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (folder / split / "a").mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).convert(mode).save(folder / split / "a" / f"{i}.png")


# ----------------------------------------------------------------------------- survey
def test_survey_counts_every_file_and_reads_colour(tmp_path: Path) -> None:
    root = write_shapes_folder(tmp_path / "c", train_per_class=4, val_per_class=2)
    (root / "train" / "disc" / "notes.txt").write_text("not an image")
    s = survey_image_folder(root)
    assert s.classes == SHAPE_CLASSES[:3] and s.train_counts == (4, 4, 4)
    assert s.test_split == "val" and s.test_counts == (2, 2, 2)
    assert (s.sampled, s.grey, s.channels, s.median_short_side) == (12, 0, 3, 64)
    grey = survey_image_folder(write_shapes_folder(tmp_path / "g", train_per_class=2,
                                                   val_per_class=1, grey=True))
    assert (grey.grey, grey.channels) == (6, 1)


def test_survey_grey_rule_counts_rgb_files_with_equal_channels_as_grey(tmp_path: Path) -> None:
    _write(tmp_path / "rgbgrey", [(20, 20)] * 3, mode="L")
    for p in (tmp_path / "rgbgrey" / "train" / "a").iterdir():  # re-save as RGB, R = G = B
        Image.open(p).convert("RGB").save(p)
    assert Image.open(next((tmp_path / "rgbgrey" / "train" / "a").iterdir())).mode == "RGB"
    assert survey_image_folder(tmp_path / "rgbgrey").channels == 1
    # one colour image among grey ones: colour
    _write(tmp_path / "mixed", [(20, 20)] * 3, mode="L")
    Image.fromarray(np.full((20, 20, 3), (200, 10, 10), np.uint8)).save(
        tmp_path / "mixed" / "train" / "a" / "9.png")
    assert survey_image_folder(tmp_path / "mixed").channels == 3


def test_survey_median_of_the_shorter_sides(tmp_path: Path) -> None:
    sizes = [(40, 90), (130, 70), (200, 300), (55, 55), (500, 120)]
    _write(tmp_path / "f", sizes)
    s = survey_image_folder(tmp_path / "f")
    assert sorted(s.short_sides) == sorted(min(w, h) for w, h in sizes)
    assert s.median_short_side == statistics.median_low([40, 70, 200, 55, 120]) == 70


def test_survey_refuses_mismatched_class_folders(tmp_path: Path) -> None:
    root = write_shapes_folder(tmp_path / "m", train_per_class=1, val_per_class=1)
    (root / "val" / "square").rename(root / "val" / "squares")
    with pytest.raises(ValueError, match="only in train: square; only in val: squares"):
        survey_image_folder(root)


# ----------------------------------------------------------------------------- the rules
@pytest.mark.parametrize(("sides", "model", "size"), [
    ([64, 64, 64], "fmnist_bcos", 64),       # small: the compact net, multiple of 4
    ([30, 31, 30], "fmnist_bcos", 28),
    ([96, 97, 96], "fmnist_bcos", 96),       # the largest side for the compact net
    ([150, 150, 150], "resnet18_v2", 128),   # larger: ResNet-18 v2, multiple of 32
    ([300, 600, 400], "resnet18_v2", 224),   # capped at 224
])
def test_folder_rules_pick_model_and_size(tmp_path: Path, sides, model, size) -> None:
    _write(tmp_path / "f", [(s, s + 10) for s in sides])
    cfg = get_preset("folder")
    cfg.data.root = str(tmp_path / "f")
    out, notes = resolve_config(cfg)
    assert (out.model.name, out.data.image_size, out.data.channels) == (model, size, 3)
    assert out.model.num_classes is None and out.out_dir == str(Path("runs") / "f")
    assert size % (32 if max(model_info(model).min_size) >= 32 else 4) == 0
    said = "\n".join(notes)
    assert f"model: {model}" in said and f"image size: {size} px" in said
    assert "channels: 3 (colour" in said and "output folder: runs/f" in said
    assert get_preset("folder").model.name is None  # the preset itself is untouched


def test_cli_folder_without_preset_does_not_inherit_fashion_mnist(small: Path) -> None:
    notes: list[str] = []
    cfg = config_from_args(_args("--dataset", "folder", "--data", str(small)), notes)
    assert notes == ["no --preset given: using preset 'folder', the one for --dataset folder "
                     "(--list-presets)"]
    assert cfg.model.name is None and cfg.model.num_classes is None and cfg.threads is None
    out, _ = resolve_config(cfg)
    assert out.model.name == "fmnist_bcos" and out.model.options == {"in_channels": 3}
    assert (out.data.image_size, out.data.channels, out.ema_decay) == (64, 3, None)
    assert out.out_dir == str(Path("runs") / "shapes")
    # a model given on the command line is kept; only its channels follow the data
    out, notes = resolve_config(config_from_args(_args("--dataset", "folder", "--data",
                                                       str(small), "--model", "cifar_bcos_v2")))
    assert out.model.name == "cifar_bcos_v2" and not any("model:" in n for n in notes)


def test_no_preset_and_no_data_set_names_the_fashion_mnist_preset() -> None:
    notes: list[str] = []
    cfg = config_from_args(_args(), notes)
    assert cfg.data.dataset == "fashion-mnist" and cfg.model.num_classes == 10
    assert "using preset 'fmnist'" in notes[0]


def test_a_preset_for_other_data_keeps_its_recipe_and_says_what_it_leaves(small: Path) -> None:
    notes: list[str] = []
    args = _args("--preset", "fmnist-finetune-head", "--init-weights", "w.pt", "--dataset",
                 "folder", "--data", str(small))
    cfg = config_from_args(args, notes)
    head = get_preset("fmnist-finetune-head")
    assert (cfg.model.name, cfg.optim.lr, cfg.trainable, cfg.epochs) == (
        head.model.name, head.optim.lr, "head", head.epochs)
    assert cfg.model.num_classes is None and cfg.data.train_per_class is None
    assert cfg.data.image_size is None and cfg.out_dir == str(
        Path("runs") / "shapes-fmnist-finetune-head")
    (note,) = notes
    assert "preset fmnist-finetune-head is made for fashion-mnist" in note
    assert "--num-classes (was 10)" in note and "--train-per-class (was 100)" in note
    # a flag given on the command line stays
    cfg = config_from_args(_args("--preset", "fmnist-finetune-head", "--dataset", "folder",
                                 "--data", str(small), "--train-per-class", "3"))
    assert cfg.data.train_per_class == 3
    # the same data set: nothing is dropped, nothing said
    notes = []
    cfg = config_from_args(_args("--preset", "fmnist", "--dataset", "fmnist"), notes)
    assert cfg.model.num_classes == 10 and notes == []


def test_yaml_with_a_preset_for_other_data_warns_through_the_api(tmp_path: Path,
                                                                  small: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(f"preset: fmnist\ndata: {{dataset: folder, root: {small}}}\n")
    with pytest.warns(UserWarning, match="preset fmnist is made for fashion-mnist.*"
                                         "model.num_classes \\(was 10\\)"):
        cfg = load_config(p)
    assert cfg.model.num_classes is None and cfg.model.name == "fmnist_bcos"


def test_class_count_and_channel_contradictions_name_the_flags(tmp_path: Path, small: Path,
                                                                 capsys) -> None:
    rc = main(["train", "--dataset", "folder", "--data", str(small), "--num-classes", "10",
               "--out-dir", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "have 3 classes (disc, square, stripes), --num-classes is 10" in err
    # a grey (1-channel) model fine-tuned on colour images: convert them
    torch.manual_seed(0)
    src = tmp_path / "grey.pt"
    torch.save(__import__("bcosnet").create_model("fmnist_bcos", 3, width=4).state_dict(), src)
    argv = ["train", "--dataset", "folder", "--data", str(small), "--model", "fmnist_bcos",
            "--model-option", "width=4", "--init-weights", str(src), "--out-dir",
            str(tmp_path / "ft"), "--no-progress", "--threads", "1", "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1-channel model and the images are colour (3 channels): set --image-channels 1" in err
    assert main([*argv, "--image-channels", "1"]) == 0
    model = load_checkpoint_model(tmp_path / "ft" / "checkpoint.pt")
    assert model.model_info.in_channels == 1 and model.model_info.image_size == (64, 64)
    # the data set is rebuilt grey: a grey (1-channel) image reaches the model
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 3)


def test_a_model_channel_option_converts_the_images(small: Path) -> None:
    cfg = config_from_args(_args("--dataset", "folder", "--data", str(small), "--model",
                                 "fmnist_bcos", "--model-option", "in_channels=1"))
    out, notes = resolve_config(cfg)
    assert out.data.channels == 1 and "channels: 1 (the model's in_channels option" in notes[0]
    cfg.data.channels = 3
    with pytest.raises(ValueError, match="in_channels=1 and data.channels=3 disagree"):
        resolve_config(cfg)


def test_too_many_images_per_class_names_the_flag(tmp_path: Path, small: Path, capsys) -> None:
    rc = main(["train", "--dataset", "folder", "--data", str(small), "--train-per-class", "9",
               "--out-dir", str(tmp_path / "o"), "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--train-per-class 9 asks for more images" in err
    assert "data.train_per_class" not in err and "per_class=" not in err


def test_custom_folder_yaml_is_the_folder_preset_written_out(small: Path) -> None:
    shipped = load_config(ROOT / "configs" / "custom-folder.yaml")
    preset = get_preset("folder")
    preset.data.root = shipped.data.root
    assert shipped == preset
    text = (ROOT / "docs" / "your-data.md").read_text()
    assert "configs/custom-folder.yaml" in text
    assert yaml.safe_load((ROOT / "configs" / "custom-folder.yaml").read_text())["ema_decay"] \
        is None


# ----------------------------------------------------------------------------- summary
def test_thread_origin_names_its_source(monkeypatch) -> None:
    n = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_origin(None) == f"{n} (OMP_NUM_THREADS=3)"
    assert thread_origin(n) == f"{n} (config threads / --threads), overriding OMP_NUM_THREADS=3"
    monkeypatch.setenv("OMP_NUM_THREADS", str(n))
    assert "overriding" not in thread_origin(n)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_origin(None).startswith(f"{n} (torch's default")


def test_startup_summary_says_what_the_run_will_do(tmp_path: Path, small: Path,
                                                   capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data", str(small), "--out-dir", str(out),
                 "--epochs", "1", "--threads", "1", "--no-progress", "--ema", "0.999"]) == 0
    text = capsys.readouterr().out
    model = load_checkpoint_model(out / "checkpoint.pt")
    params = sum(p.numel() for p in model.parameters())
    assert f"model:     fmnist_bcos, {params:,} parameters, 3 classes, 3 input channels" in text
    assert "15 training images, 9 test images (val split)" in text
    assert "disc 5/3, square 5/3, stripes 5/3" in text
    assert "stops at:  1 epoch (1 step of 16 images)" in text
    assert "this run has 1 step, so the EMA weights lag far behind training" in text
    assert "threads:   1 (config threads / --threads)" in text
    assert f"output:    {out}" in text
    assert "image size: 64 px (median shorter side of 15 sampled images 64 px" in text
    assert text.index("start-up summary") < text.index("done (completed)")


# ----------------------------------------------------------------------------- learning
def test_folder_preset_learns_three_small_classes_on_a_cpu(tmp_path: Path) -> None:
    """The preset's recipe on 3 classes × 50 colour images of 64 px (30 val each):
    ≥ 90 % validation accuracy after 8 of its 20 epochs (the suite stays fast;
    docs/your-data.md has the timed run of the preset as shipped on 2 cores)."""
    root = write_shapes_folder(tmp_path / "shapes")
    cfg = get_preset("folder")
    cfg.data.root, cfg.out_dir, cfg.threads, cfg.progress = str(root), str(tmp_path / "r"), 1, False
    assert cfg.ema_decay is None  # an EMA of 0.999 would still be near its start after 200 steps
    cfg.epochs, cfg.eval_every_epochs = 8, 0
    result = train(cfg)
    assert result.metrics["test_n"] == 90 and result.epoch == 8
    assert result.metrics["test_acc"] >= 0.9, result.history


def test_print_config_shows_the_settings_read_off_the_data(small: Path, capsys) -> None:
    assert main(["train", "--dataset", "folder", "--data", str(small), "--print-config"]) == 0
    out, err = capsys.readouterr()
    cfg = yaml.safe_load(out)
    assert (cfg["model"]["name"], cfg["data"]["image_size"], cfg["data"]["channels"]) == (
        "fmnist_bcos", 64, 3)
    assert "note: image size: 64 px" in err and "using preset 'folder'" in err
