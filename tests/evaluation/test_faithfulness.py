"""Deletion/insertion (evaluation/faithfulness.py) against from-the-definition
computations on a linear model whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bcosnet
from bcosnet.evaluation.faithfulness import deletion_insertion, faithfulness_table, pixel_order


class Linear(nn.Module):
    """logit_c(x) = Σ_p W[c, p] · x[p]: pixel p contributes W[c, p]·x[p] exactly."""

    def __init__(self, k: int, c: int, h: int, w: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(k, c, h, w, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weight)


def _setup(n: int = 3, h: int = 6, w: int = 5):
    torch.manual_seed(0)
    model = Linear(4, 2, h, w)
    x = torch.rand(n, 2, h, w, dtype=torch.float64)
    t = torch.tensor([0, 3, 1][:n])
    contrib = (x * model.weight[t]).sum(1).detach()  # N×H×W, exact per-pixel contributions
    return model, x, t, contrib


def test_deletion_curve_equals_the_definition() -> None:
    model, x, t, contrib = _setup()
    maps = torch.rand(contrib.shape, dtype=torch.float64)  # an arbitrary (tie-free) ranking
    res = deletion_insertion(model, x, maps, t, steps=10, output="logit")
    hw = contrib[0].numel()
    for i in range(x.shape[0]):
        order = np.argsort(-maps[i].flatten().numpy(), kind="stable")
        c = contrib[i].flatten().numpy()[order]
        total = c.sum()
        for k in range(11):
            m = round(k * hw / 10)
            # black baseline: deleting a pixel removes its contribution
            assert res.deletion[i, k].item() == pytest.approx(total - c[:m].sum(), abs=1e-9)
            assert res.insertion[i, k].item() == pytest.approx(c[:m].sum(), abs=1e-9)
    np.testing.assert_allclose(res.deletion_auc.numpy(),
                               np.trapezoid(res.deletion.numpy(), res.fractions.numpy(), axis=1))


def test_the_exact_contributions_are_the_most_faithful_order() -> None:
    model, x, t, contrib = _setup()
    best = deletion_insertion(model, x, contrib, t, steps=30, output="logit")
    rand = deletion_insertion(model, x, torch.zeros_like(contrib), t, steps=30, output="logit")
    worst = deletion_insertion(model, x, -contrib, t, steps=30, output="logit")
    assert (best.deletion_auc < rand.deletion_auc).all()
    assert (rand.deletion_auc < worst.deletion_auc).all()
    assert (best.insertion_auc > rand.insertion_auc).all()
    # removing the largest contributions first gives the lowest score at every step
    assert (best.deletion <= rand.deletion + 1e-12).all()


def test_pixel_order_breaks_ties_by_seed() -> None:
    const = torch.zeros(2, 4, 4)
    a, b = pixel_order(const, seed=1), pixel_order(const, seed=2)
    assert torch.equal(a.sort(1).values, torch.arange(16).expand(2, -1))  # permutations
    assert not torch.equal(a, b) and torch.equal(a, pixel_order(const, seed=1))
    ranked = pixel_order(torch.arange(16.0).view(1, 4, 4))
    assert torch.equal(ranked[0], torch.arange(15, -1, -1))


def test_bcos_net_scores_sigmoid_and_the_table(tiny_bcos, tiny_twin, structured_images) -> None:
    model = tiny_bcos
    x = structured_images[:2, :, :12, :12]
    t = torch.tensor([1, 2])
    ex = bcosnet.explain(model, x, target=t[:, None])
    table = faithfulness_table(
        model, x, t,
        {"bcos": lambda im, tg: ex.contributions[:, 0], "random": "random"}, steps=4,
    )
    with torch.no_grad():
        p = model(x).sigmoid().gather(1, t[:, None])[:, 0].double()
    assert table["bcos"].output == "sigmoid"
    torch.testing.assert_close(table["bcos"].deletion[:, 0], p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(table["random"].insertion[:, -1], p, rtol=1e-5, atol=1e-6)
    assert deletion_insertion(tiny_twin, x, torch.rand(2, 12, 12), t, steps=2).output == "softmax"


def test_bad_input_says_what_to_change() -> None:
    model, x, t, contrib = _setup()
    with pytest.raises(ValueError, match="upsample"):
        deletion_insertion(model, x, contrib[:, :3], t)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, x, contrib, t, steps=0)
    with pytest.raises(ValueError, match="one class per image"):
        deletion_insertion(model, x, contrib, torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- the study function
class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def test_evaluate_faithfulness_matches_the_definition_and_resumes(tmp_path) -> None:
    from bcosnet.evaluation import evaluate_faithfulness

    torch.manual_seed(0)
    model = Linear(4, 1, 5, 4)
    x = torch.rand(12, 1, 5, 4, dtype=torch.float64)
    y = torch.arange(12) % 4
    ds = _Pairs(x, y)

    def exact(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (images * model.weight[targets]).sum(1).detach()  # N×H×W contributions

    res = evaluate_faithfulness(model, ds, {"exact": exact, "random": "random"}, images=7,
                                steps=5, output="logit", attribution_batch_size=3,
                                results_dir=str(tmp_path))
    idx = res.indices
    assert len(idx) == 7 == len(set(idx)) and all(0 <= i < 12 for i in idx)
    xs = x[idx]
    pred = torch.einsum("nchw,kchw->nk", xs, model.weight).argmax(1)  # the predicted class
    assert res.targets == pred.tolist()
    hw = 20
    for j in range(7):  # from the definition: delete the largest contributions first
        c = exact(xs[j:j + 1], pred[j:j + 1])[0].flatten().numpy()
        order = np.argsort(-c, kind="stable")
        for k in range(6):
            m = round(k * hw / 5)
            assert res.curves["exact"].deletion[j, k].item() == pytest.approx(
                c.sum() - c[order[:m]].sum(), abs=1e-9)
    s = res.summary()
    assert s["exact"]["deletion_auc"] < s["random"]["deletion_auc"]
    assert s["exact"]["insertion_auc"] > s["random"]["insertion_auc"]
    table = res.to_markdown("t")
    assert "| exact |" in table and "| random |" in table
    # a re-run loads the finished methods (the callable is not called again) ...
    stamp = (tmp_path / "exact.json").stat().st_mtime_ns

    def boom(images, targets):
        raise AssertionError("recomputed")

    again = evaluate_faithfulness(model, ds, {"exact": boom, "random": "random"}, images=7,
                                  steps=5, output="logit", results_dir=str(tmp_path))
    assert (tmp_path / "exact.json").stat().st_mtime_ns == stamp
    torch.testing.assert_close(again.curves["exact"].deletion, res.curves["exact"].deletion)
    # ... and other settings in the same folder are refused, naming each difference
    with pytest.raises(ValueError, match="other settings.*steps: 5 then, 4 now") as e:
        evaluate_faithfulness(model, ds, {"exact": boom}, images=7, steps=4, output="logit",
                              results_dir=str(tmp_path))
    assert e.value.differences == {"steps": (5, 4)}
    # ... and so is another method setting of one method (its own settings)
    with pytest.raises(ValueError, match=r"exact\.json .*method_settings.k: \(unset\) then"):
        evaluate_faithfulness(model, ds, {"exact": boom}, images=7, steps=5, output="logit",
                              method_settings={"exact": {"k": 1}}, results_dir=str(tmp_path))


def test_evaluate_faithfulness_bad_input() -> None:
    from bcosnet.evaluation import evaluate_faithfulness

    model = Linear(4, 1, 5, 4)
    ds = _Pairs(torch.rand(3, 1, 5, 4, dtype=torch.float64), torch.zeros(3))
    with pytest.raises(ValueError, match="images"):
        evaluate_faithfulness(model, ds, ["random"], images=0)
    with pytest.raises(ValueError, match="target"):
        evaluate_faithfulness(model, ds, ["random"], target="true")
    with pytest.raises(ValueError, match="methods is empty"):
        evaluate_faithfulness(model, ds, [])


def test_fewer_images_for_some_methods_are_the_first_of_the_sample() -> None:
    from bcosnet.evaluation import evaluate_faithfulness

    torch.manual_seed(0)
    model = Linear(4, 1, 5, 4)
    ds = _Pairs(torch.rand(12, 1, 5, 4, dtype=torch.float64), torch.arange(12) % 4)

    def exact(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (images * model.weight[targets]).sum(1).detach()

    full = evaluate_faithfulness(model, ds, {"a": exact}, images=9, steps=4, output="logit")
    part = evaluate_faithfulness(model, ds, {"a": exact, "b": exact}, images=9, steps=4,
                                 output="logit", images_per_method={"b": 4})
    assert part.curves["b"].deletion.shape[0] == 4
    torch.testing.assert_close(part.curves["b"].deletion, full.curves["a"].deletion[:4])
    s = part.summary(first=4)
    assert s["a"]["images"] == s["b"]["images"] == 4
    assert s["a"]["deletion_auc"] == pytest.approx(s["b"]["deletion_auc"])
    assert "every method on the first 4 images" in part.to_markdown()
    with pytest.raises(ValueError, match="images_per_method"):
        evaluate_faithfulness(model, ds, {"a": exact}, images_per_method={"a": 0})


def test_bcos_relative_is_the_exact_change_on_a_linear_bcos_net() -> None:
    # B = 1 without MaxOut: every layer is linear, so W(x) = W and deleting pixel p
    # (to black) changes the logit by exactly the relative map's value at p
    from bcosnet.evaluation.faithfulness import bcos_relative_fn

    torch.manual_seed(0)
    model = bcosnet.create_model("fmnist_bcos", 3, width=4, b=1.0, max_out=1).double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 2])
    rel = bcos_relative_fn(model)(x, t)
    assert rel.shape == (2, 8, 8)
    with torch.no_grad():
        f = model(x).gather(1, t[:, None])[:, 0]
        f0 = model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
        torch.testing.assert_close(rel.sum((1, 2)), f - f0)
        for p in [(0, 0), (3, 5), (7, 2)]:
            xd = x.clone()
            xd[:, 0, p[0], p[1]] = 0.0
            drop = f - model(xd).gather(1, t[:, None])[:, 0]
            torch.testing.assert_close(rel[:, p[0], p[1]], drop)
    # the plain contributions are not that change: the black pixel's inverse channel stays
    con = bcosnet.explain(model, x, target=t[:, None]).contributions[:, 0]
    assert not torch.allclose(con, rel)
    with pytest.raises(ValueError, match="input encoding"):
        bcos_relative_fn(Linear(3, 1, 8, 8))
