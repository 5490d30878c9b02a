"""The app's callbacks (bcosnet.app.views) without a browser: their values
against independent computations — bcosnet.explain on the data set's own
image, forward hooks, the pointing game's saved scores — and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bcosnet
from bcosnet.app import AppError, Workspace, load_model, views

from .conftest import BCOS_METHODS, NEURON_LAYER


@pytest.fixture(scope="module")
def ws(main_folder: Path) -> Workspace:
    return Workspace.from_main_job(main_folder)


@pytest.fixture(scope="module")
def lm(ws: Workspace):
    return ws.get("bcos")


def _png(path: Path, array: np.ndarray) -> Path:
    """Save an array as PNG (its dtype and shape give the mode: L, RGB, RGBA, I;16)."""
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


# ----------------------------------------------------------------------------- explain
def test_explanation_values_equal_bcosnet_explain(ws, lm) -> None:
    """Completeness, logits and the top-5 probabilities of the Explain view equal
    bcosnet.explain / the model on the data set's own test image."""
    chosen = views.choose_test_image(ws, lm, "Coat", 2)
    i = ws.test_indices("bcos")[4][2]                    # the 3rd test image of class 4, Coat
    x, y = bcosnet.data.datasets_for(lm.model).test[i]
    assert y == 4 and chosen.label == 4 and torch.equal(chosen.image, x)
    view = views.explain_image(lm, chosen, ["Coat", "Shirt", "Bag"])
    ref = bcosnet.explain(lm.model, x[None], target=torch.tensor([[4, 6, 8]]))
    assert [r["name"] for r in view.rows] == ["Coat", "Shirt", "Bag"]
    for t, r in enumerate(view.rows):
        assert r["value"] == pytest.approx(float(ref.logits[0, t]), abs=1e-6)
        assert r["sum"] == pytest.approx(float(ref.contributions[0, t].double().sum()), abs=1e-5)
        assert r["bias"] == pytest.approx(float(ref.bias[0, t]), abs=1e-6)
        assert abs(r["difference"]) < 1e-4
        exact = (ref.contributions[0, t].double().sum() + ref.bias[0, t].double()
                 - ref.logits[0, t].double())  # the completeness error, in float64
        assert r["difference"] == pytest.approx(float(exact), abs=1e-9)
    with torch.no_grad():
        p = torch.sigmoid(lm.model(x[None]))[0]        # B-cos: trained with BCE
    assert list(view.top.values()) == pytest.approx(p.topk(5).values.tolist(), abs=1e-6)
    for name, prob in view.top.items():  # (names compared by value: ties may swap places)
        assert prob == pytest.approx(float(p[lm.class_names.index(name)]), abs=1e-6)
    assert view.rule == "sigmoid"
    # one column per class, three rows (W(x), contributions, overlay), 28 px shown at 224
    assert view.panel.shape == (3 * 224 + 2 * 4, 3 * 224 + 2 * 4, 3)


def test_default_class_is_the_prediction_and_clicks_toggle(ws, lm) -> None:
    chosen = views.choose_test_image(ws, lm, "Trouser", 0)
    with torch.no_grad():
        pred = int(lm.model(chosen.image[None]).argmax())
    view = views.explain_image(lm, chosen)
    assert view.classes == [lm.class_names[pred]]
    assert views.toggle_class(["Bag"], "Coat") == ["Bag", "Coat"]   # added beside
    assert views.toggle_class(["Bag", "Coat"], "Bag") == ["Coat"]   # removed
    assert views.toggle_class(["Bag"], "Bag") == ["Bag"]            # the only one stays


def test_smoothing_and_percentile_change_the_colour_explanation(ws, lm) -> None:
    view = views.explain_image(lm, views.choose_test_image(ws, lm, "Bag", 0))
    x = views.choose_test_image(ws, lm, "Bag", 0).image
    plain = views.render_explanation(view.explanation, x, smooth=0, percentile=99.5)
    smooth = views.render_explanation(view.explanation, x, smooth=5, percentile=99.5)
    low = views.render_explanation(view.explanation, x, smooth=0, percentile=90)
    h = 224  # first row: W(x) over white; rows 2-3 (contributions) keep their colours
    assert not np.array_equal(plain[:h], smooth[:h]) and not np.array_equal(plain[:h], low[:h])
    # a lower percentile saturates alpha sooner: less white (more explanation) shows
    assert low[:h].mean() < plain[:h].mean()


def test_explanation_figure_is_a_png(ws, lm, tmp_path) -> None:
    from PIL import Image

    chosen = views.choose_test_image(ws, lm, "Sneaker", 1)
    view = views.explain_image(lm, chosen, ["Sneaker", "Sandal"])
    path = views.explanation_figure(lm, chosen, view, folder=tmp_path)
    assert path.parent == tmp_path and Image.open(path).format == "PNG"


def test_conventional_network_has_no_explain_view(ws) -> None:
    twin = ws.get("standard")
    chosen = views.choose_test_image(ws, twin, "Bag", 0)
    with pytest.raises(AppError, match="conventional network.*Compare"):
        views.explain_image(twin, chosen)


# ----------------------------------------------------------------------------- choosing images
def test_upload_of_another_size_is_fitted_by_the_record_and_said(lm, tmp_path) -> None:
    """A 56×56 PNG of a test image (each pixel doubled) becomes the 28×28 image again
    (within resampling), and the page says it was another size."""
    x, _ = bcosnet.data.fashion_mnist(None, "test")[0]
    a = (x[0].numpy() * 255).round().astype(np.uint8)
    chosen = views.choose_file(lm, _png(tmp_path / "big.png", a.repeat(2, 0).repeat(2, 1)))
    assert chosen.image.shape == (1, 28, 28)
    assert (chosen.image - x).abs().mean() < 0.03
    text = " ".join(chosen.notes)
    assert "another size than the model was trained on" in text and "56×56" in text
    same = views.choose_file(lm, _png(tmp_path / "same.png", a))
    assert torch.allclose(same.image, x, atol=1 / 255)
    assert "another size" not in " ".join(same.notes)


def test_grey_rgba_16bit_and_exif_rotated_files(lm, tmp_path) -> None:
    from PIL import Image

    # RGBA, fully transparent: composited over white, not black
    rgba = np.zeros((28, 28, 4), np.uint8)
    ch = views.choose_file(lm, _png(tmp_path / "clear.png", rgba))
    assert torch.allclose(ch.image, torch.ones(1, 28, 28))
    assert any("transparency composited over white" in n for n in ch.notes)
    # 16-bit grey: scaled to [0, 1], not clipped at 255/65535
    g16 = np.full((28, 28), 65535, np.uint16)
    g16[:, :14] = 32768
    ch = views.choose_file(lm, _png(tmp_path / "deep.png", g16))
    assert float(ch.image[0, 0, 20]) == pytest.approx(1.0, abs=1 / 255)
    assert float(ch.image[0, 0, 0]) == pytest.approx(0.5, abs=1 / 255)
    assert any("16-bit" in n for n in ch.notes)
    # RGB to a grey model: said
    ch = views.choose_file(lm, _png(tmp_path / "colour.png", np.zeros((28, 28, 3), np.uint8)))
    assert any("converted to grey" in n for n in ch.notes)
    # EXIF orientation 6 (rotate 90° clockwise to view): the bright top half of the
    # stored image is on the right as a viewer shows it
    a = np.zeros((28, 28), np.uint8)
    a[:14] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.fromarray(a, "L")
    im.save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    ch = views.choose_file(lm, tmp_path / "turned.jpg")
    assert ch.image[0, :, 18:].mean() > 0.9 and ch.image[0, :, :10].mean() < 0.1
    assert any("EXIF orientation 6 applied" in n for n in ch.notes)


def test_bad_files_raise_clear_messages(lm, tmp_path, reliability) -> None:
    """Shown in the page's status line (tests/app/test_browser.py checks the page)."""
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image")
    reliability.refused("app", "a text file uploaded as an image", AppError,
                        r"notes\.png: cannot read the image",
                        lambda: views.choose_file(lm, tmp_path / "notes.png"))
    good = _png(tmp_path / "cut.png", np.zeros((64, 64), np.uint8))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])        # truncated
    reliability.refused("app", "a truncated PNG uploaded", AppError, r"cut\.png",
                        lambda: views.choose_file(lm, tmp_path / "cut.png"))
    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")        # 10⁸ pixels claimed
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's, as it opens the header
        reliability.refused("app", "a decompression bomb uploaded (10⁸ pixels)", AppError,
                            "decompression bomb",
                            lambda: views.choose_file(lm, tmp_path / "bomb.png"))


def test_test_image_index_out_of_range(ws, lm) -> None:
    with pytest.raises(AppError, match=r"has 1000 test images: choose an index in 0\.\.999"):
        views.choose_test_image(ws, lm, "Coat", 1000)
    with pytest.raises(AppError, match="no class 'Cat'; did you mean 'Coat'"):
        views.choose_test_image(ws, lm, "Cat", 0)


def test_sample_photos_are_bundled_and_fed_like_uploads(lm) -> None:
    photos = views.sample_photos()
    assert {"astronaut", "chelsea", "coffee"} <= set(photos)
    ch = views.choose_sample(lm, "chelsea")
    ref = bcosnet.data.to_model_input(photos["chelsea"], lm.model)
    assert torch.equal(ch.image, ref)


def test_checkpoint_of_another_architecture_is_refused(main_folder, reliability) -> None:
    ckpt = main_folder / "bcos" / "checkpoint.pt"
    reliability.refused("app", "a checkpoint loaded as another architecture", ValueError,
                        "fmnist_bcos.*cifar_resnet20|cifar_resnet20.*fmnist_bcos",
                        lambda: load_model(ckpt, "cifar_resnet20"))
    with pytest.raises(FileNotFoundError):
        load_model(main_folder / "nothing.pt")


# ----------------------------------------------------------------------------- compare
def test_compare_yields_each_method_as_it_finishes(ws, lm) -> None:
    chosen = views.choose_test_image(ws, lm, "Dress", 0)
    steps = list(views.compare_methods(lm, chosen, "Dress"))
    names = bcosnet.attribution.available()
    assert [len(p) for p, _ in steps] == [2] + list(range(3, len(names) + 2))  # bcos: 2 panels
    panels = steps[-1][0]
    assert [p.method for p in panels] == ["bcos", *names]
    assert all(p.seconds > 0 for p in panels)
    # the bcos contribution panel is the contribution map of bcosnet.explain, coloured
    ex = bcosnet.explain(lm.model, chosen.image[None], target=lm.class_index("Dress"))
    assert np.array_equal(panels[1].image,
                          views._enlarge(views._heat(ex.contributions[0, 0], 100.0)))


def test_compare_stops_between_methods(ws, lm) -> None:
    """A cancelled comparison (the generator closed) runs no further method."""
    seen: list[str] = []
    gen = views.compare_methods(lm, views.choose_test_image(ws, lm, "Dress", 0), "Dress",
                                progress=lambda i, n, text: seen.append(text))
    next(gen)
    next(gen)
    gen.close()
    assert len(seen) == 2


def test_compare_on_a_conventional_network_skips_bcos(ws) -> None:
    twin = ws.get("standard")
    chosen = views.choose_test_image(ws, twin, "Bag", 0)
    panels, total = next(views.compare_methods(twin, chosen, "Bag", methods=["bcos", "ixg"]))
    assert total == 1 and panels[0].method == "ixg"


# ----------------------------------------------------------------------------- neurons
def _activation(model, layer: str, x: torch.Tensor) -> torch.Tensor:
    """N×C×h×w output of ``layer`` (a forward hook: independent of explain())."""
    out = {}
    h = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, o: out.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return out["a"]


def test_neuron_value_is_the_channel_summed_over_locations(ws, lm) -> None:
    chosen = views.choose_test_image(ws, lm, "Pullover", 0)
    nv = views.neuron_view(lm, chosen, NEURON_LAYER, 3)
    act = _activation(lm.model, NEURON_LAYER, chosen.image[None])
    r = nv.rows[0]
    assert r["value"] == pytest.approx(float(act[0, 3].double().sum()), rel=1e-5)
    assert abs(r["difference"]) <= 1e-4 + 1e-6 * abs(r["value"])
    with pytest.raises(AppError, match=r"has \d+ channels: choose a channel in 0\.\."):
        views.neuron_view(lm, chosen, NEURON_LAYER, 999)
    with pytest.raises(AppError, match="no spatial layer 'features.99'"):
        views.neuron_view(lm, chosen, "features.99", 0)


def test_top_images_computed_and_saved(ws, lm, main_folder) -> None:
    test = ws.test_data("bcos").test
    xs = torch.stack([test[i][0] for i in range(300)])
    act = _activation(lm.model, NEURON_LAYER, xs)[:, 1].flatten(1).amax(1)  # per image max
    order = act.argsort(descending=True, stable=True)[:8].tolist()
    items, note = views.top_images(ws, lm, NEURON_LAYER, 1, source="compute", limit=300)
    assert "first 300 test images" in note and len(items) == 8
    got = [int(c.split()[0][1:]) for _, c in items]
    assert got == order
    assert float(items[0][1].split("activation ")[1]) == pytest.approx(float(act[order[0]]),
                                                                       rel=1e-2)
    saved, note = views.top_images(ws, lm, NEURON_LAYER, 1, source="saved")
    rec = json.loads((main_folder / "neurons" / f"top_{NEURON_LAYER}.json").read_text())
    assert [int(c.split()[0][1:]) for _, c in saved] == rec["neurons"]["1"]["indices"][:8]
    assert "saved run" in note
    with pytest.raises(AppError, match="holds channels 0, 1, 2 of features.2, not 3"):
        views.top_images(ws, lm, NEURON_LAYER, 3, source="saved")


# ----------------------------------------------------------------------------- pointing game
def test_grid_view_scores_equal_the_saved_game(ws, main_folder) -> None:
    from bcosnet.evaluation.pointing_game import PointingGameResult

    saved = PointingGameResult.load(main_folder / "pointing_game" / "bcos" /
                                    "pointing_game.json")
    assert saved.methods == BCOS_METHODS
    for grid, cell in ((0, None), (1, 2)):
        *_, (img, panels, table, total) = views.grid_view(ws, "bcos", grid, cell)
        c = 4 if cell is None else cell
        assert total == len(BCOS_METHODS) and img.shape[0] == img.shape[1]
        for (_, caption), m in zip(panels, BCOS_METHODS):
            here, then = (float(v) for v in
                          caption.split("score ")[1].split(" (")[0].split(", saved "))
            assert here == pytest.approx(float(saved.scores[m][grid, c]), abs=1e-3)
            assert then == pytest.approx(float(saved.scores[m][grid, c]), abs=5e-4)
        assert [row[0] for row in table] == BCOS_METHODS
        assert table[0][1:] == pytest.approx(saved.scores["bcos"][grid].tolist(), abs=5e-4)
    with pytest.raises(AppError, match=r"has 2 grids: choose one in 0\.\.1"):
        next(views.grid_view(ws, "bcos", 5))


def test_pointing_game_summary_table(ws, main_folder) -> None:
    rows, fig = views.pointing_game_summary(ws)
    for network in ("bcos", "standard"):
        d = json.loads((main_folder / "pointing_game" / network / "pointing_game.json"
                        ).read_text())
        for m, v in d["methods"].items():
            row = next(r for r in rows if r[0] == network and r[1] == m)
            scores = np.asarray(v["scores"]).ravel()
            assert row[2] == v["grids"]
            assert row[3] == pytest.approx(np.median(scores), abs=5e-4)
            assert row[4] == pytest.approx(scores.mean(), abs=5e-4)
    assert fig is not None


def test_workspace_without_main_job(lm) -> None:
    w = Workspace()
    with pytest.raises(AppError, match="no model loaded"):
        w.get(None)
    w.add("m", lm.model, "test")
    assert w.pointing_game_dirs() == {}
    with pytest.raises(AppError, match="no finished pointing game"):
        views.pointing_game_summary(w)


def test_a_model_without_a_data_set_has_no_test_images(tiny_bcos) -> None:
    w = Workspace()
    lm = w.add("random", tiny_bcos, "random initialisation")
    with pytest.raises(AppError, match="records no data set .* upload an image or use a "
                                       "bundled photo"):
        views.choose_test_image(w, lm, "class 1", 0)
    chosen = views.choose_sample(lm, "coffee")           # photos still work
    assert views.explain_image(lm, chosen).classes[0].startswith("class ")
