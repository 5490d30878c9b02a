"""The convergence study (experiments/convergence.py): its plateau rule on planted
accuracy curves, the learning-rate change of a checkpoint, the 'why' maps against
their definitions, and the whole study with --quick (synthetic data), resumed."""

from __future__ import annotations

import json
import math

import pytest
import torch

import bcosnet.training
from bcosnet.data import build_datasets
from bcosnet.evaluation import GridDataset
from bcosnet.training import ScheduleConfig, TrainConfig, load_checkpoint_model
from experiments import convergence as cv


def _replay(accs: list[float], rule: cv.PlateauRule) -> list[str]:
    """The actions the rule takes epoch by epoch on a planted accuracy curve (as the
    training loop applies them); stops at the first 'stop'."""
    out, phase, decays = [], 0, 0
    for e in range(1, len(accs) + 1):
        action, reason = cv.decide(accs[:e], phase, decays, rule)
        out.append(action + (f":{reason}" if action == "stop" else ""))
        if action == "decay":
            phase, decays = e, decays + 1
        if action == "stop":
            break
    return out


def test_plateau_rule_on_planted_curves() -> None:
    rule = cv.PlateauRule()  # 0.1 point over 3 epochs, 2 decays, cap 40
    # rises by 0.6, 0.3, 0.05, 0.05 … points: epochs 4–6 add 0.14 ≥ 0.1 over epoch 3's
    # best, epochs 5–7 only 0.09 over epoch 4's → plateau at 7 → decay
    acc = [0.800, 0.806, 0.809, 0.8095, 0.8100, 0.8104, 0.8104]
    assert _replay(acc, rule) == ["continue"] * 6 + ["decay"]
    # after the decay at least 3 epochs at the new rate; a jump then a flat stretch
    acc2 = acc + [0.8150, 0.8150, 0.8151, 0.8150]
    # epochs 8, 9 too early; epoch 10: best 0.8151 vs best(1..7) 0.8104 → gain;
    # epoch 11: best(1..11) 0.8151 − best(1..8) 0.8150 < 0.001 → the second decay
    assert _replay(acc2, rule) == ["continue"] * 6 + ["decay"] + ["continue"] * 3 + ["decay"]
    # the third plateau stops (no decay left); a dip followed by a recovery is no gain
    acc3 = acc2[:11] + [0.8120, 0.8140, 0.8152]
    assert _replay(acc3, rule) == (["continue"] * 6 + ["decay"] + ["continue"] * 3 + ["decay"]
                                   + ["continue"] * 2 + ["stop:plateau"])
    # a curve that gains ≥ 0.1 point every epoch runs to the cap
    steady = [0.5 + 0.002 * e for e in range(50)]
    assert _replay(steady, cv.PlateauRule(max_epochs=12)) == ["continue"] * 11 + ["stop:cap"]
    # a plateau at the cap with decays left stops (by the cap)
    assert cv.decide([0.9] * 5, 0, 0, cv.PlateauRule(max_epochs=5)) == ("stop", "cap")
    # a flat curve: the earliest plateau is epoch patience + 1
    assert _replay([0.9] * 9, cv.PlateauRule(patience=2)) == [
        "continue", "continue", "decay", "continue", "decay", "continue", "stop:plateau"]


def test_set_learning_rate_makes_the_resumed_run_continue_at_it(tmp_path) -> None:
    cfg = TrainConfig(epochs=2, max_steps=4, out_dir=str(tmp_path / "run"), device="cpu",
                      progress=False, log_every_steps=1, resume=True,
                      schedule=ScheduleConfig(name="constant"))
    cfg.data.dataset, cfg.data.synthetic_samples = "synthetic", 64
    cfg.optim.batch_size = 16  # 4 steps per epoch
    cfg.model.options = {"width": 4}
    first = bcosnet.training.train(cfg)
    assert first.epoch == 1
    cv.set_learning_rate(first.checkpoint, 2.5e-5)
    cfg.max_steps = 8
    second = bcosnet.training.train(cfg)
    assert second.epoch == 2
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {e["step"]: e["lr"] for e in events if e.get("event") == "train"}
    # the log records the rate after each step's update: steps 1–4 at 1e-3, 5–8 at 2.5e-5
    assert [lrs[s] for s in range(1, 9)] == pytest.approx([1e-3] * 4 + [2.5e-5] * 4)


def test_pool_to_keeps_every_block_total() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 9, 84, 84, generator=g, dtype=torch.float64)
    pooled = cv.pool_to(maps, 4)
    assert pooled.shape == maps.shape
    blocks = maps.reshape(2, 9, 21, 4, 21, 4).sum((3, 5))
    assert torch.allclose(pooled.reshape(2, 9, 21, 4, 21, 4).sum((3, 5)), blocks)
    assert torch.allclose(pooled.sum((-2, -1)), maps.sum((-2, -1)))  # the map's total
    # constant within each block; positive and negative evidence cancel, so the
    # positive mass can only shrink
    assert torch.equal(pooled[..., :4, :4], pooled[..., :1, :1].expand(-1, -1, 4, 4))
    assert (pooled.clamp(min=0).sum((-2, -1)) <= maps.clamp(min=0).sum((-2, -1)) + 1e-9).all()
    with pytest.raises(ValueError, match="4×4 blocks"):
        cv.pool_to(torch.zeros(1, 30, 30), 4)


def _planted_grid() -> GridDataset:
    """One 2×2 grid of 4×4 cells: cell 0 has 2 object pixels of value 1, cell 1 has 6 of
    value 0.5, cells 2 and 3 are black but for a pixel of 0.04 (background)."""
    imgs = torch.zeros(4, 1, 4, 4)
    imgs[0, 0, 0, :2] = 1.0
    imgs[1, 0, :2, :3] = 0.5
    imgs[2, 0, 3, 3] = imgs[3, 0, 0, 0] = 0.04
    d = {"n": 2, "cell_size": [4, 4], "source_indices": [[0, 1, 2, 3]],
         "classes": [[0, 1, 2, 3]], "confidences": [[1.0] * 4]}
    return GridDataset.from_dict(d, (imgs, torch.arange(4)))


def test_objectness_and_background_on_a_planted_grid() -> None:
    grid = _planted_grid()
    r = cv.cell_fractions(cv.objectness_fn(0.05), grid, object_threshold=0.05)
    fr = torch.tensor(r["fractions"])  # 1 grid × 4 explained cells × 4 cells
    # 2 and 6 object pixels: every map puts 1/4 and 3/4 of its mass there, whatever class
    assert torch.allclose(fr[0], torch.tensor([[0.25, 0.75, 0.0, 0.0]] * 4, dtype=fr.dtype))
    assert r["background"] == [[0.0] * 4]  # the mask is object pixels only
    # the intensity map weighs by value: 2·1 + 6·0.5 + 2·0.04 = 5.08, of which 0.04 per
    # dark cell is background (value ≤ 0.05)
    r = cv.cell_fractions(cv.objectness_fn(0.05, weighted=True), grid, object_threshold=0.05)
    assert r["fractions"][0][2] == pytest.approx([2 / 5.08, 3 / 5.08, 0.04 / 5.08, 0.04 / 5.08])
    assert r["background"][0] == pytest.approx([0.08 / 5.08] * 4)


def test_time_to_reach_and_the_bcosify_comparison() -> None:
    def run(points: list[tuple[float, float]]) -> dict:
        return {"epochs": [{"epoch": i + 1, "train_time_s": t, "test_acc": a}
                           for i, (t, a) in enumerate(points)]}

    scratch = run([(100, 0.85), (200, 0.89), (300, 0.905), (400, 0.912), (500, 0.913)])
    bcosified = run([(80, 0.90), (160, 0.909), (240, 0.911)])
    c = cv.bcosify_comparison(scratch, bcosified, run([(50, 0.9), (120, 0.91)]))
    # target 0.913 − 0.005 = 0.908: scratch at epoch 4 (400 s), bcosified at epoch 2 (160 s)
    assert c["target_acc"] == pytest.approx(0.908)
    assert c["scratch"] == {"epoch": 4, "train_time_s": 400}
    assert c["bcosified"] == {"epoch": 2, "train_time_s": 160}
    assert c["speedup_finetune_only"] == pytest.approx(2.5)
    assert c["speedup_epochs"] == pytest.approx(2.0)
    assert c["speedup_with_twin"] == pytest.approx(400 / (160 + 120))
    never = cv.bcosify_comparison(scratch, run([(80, 0.5)]), None)
    assert never["bcosified"] is None and "speedup_finetune_only" not in never


def test_unknown_stage_and_missing_twin_are_explained(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        cv.main(["--quick", "--stage", "trian", "--out", str(tmp_path)])
    assert "train-main" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="run --stage train-main first"):
        cv.main(["--quick", "--stage", "train-bcosify", "--out", str(tmp_path), "--no-progress"])


def _test_set() -> tuple[torch.Tensor, torch.Tensor]:
    test = build_datasets("synthetic", augment=False, synthetic_samples=400,
                          synthetic_classes=10).test
    return (torch.stack([test[i][0] for i in range(len(test))]),
            torch.tensor([int(test[i][1]) for i in range(len(test))]))


def test_quick_study_end_to_end_then_resumes_without_recomputing(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    out = tmp_path / "conv"
    argv = ["--quick", "--out", str(out), "--threads", "1", "--no-progress"]
    assert cv.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    rule = cv.PlateauRule(**res["rule"])
    assert set(res["runs"]) == {"twin", "bcos", "bcosified", "b1"}
    x, y = _test_set()
    for st in res["runs"].values():
        eps = st["epochs"]
        accs = [r["test_acc"] for r in eps]
        # the loop stopped where the rule says, and each decay divided the rate by 10
        assert _replay(accs, rule)[-1] == f"stop:{st['stopped']['reason']}"
        assert st["stopped"]["epoch"] == len(eps)
        for a, b in zip(eps, eps[1:], strict=False):
            assert b["lr"] == pytest.approx(a["lr"] * (0.1 if a["action"] == "decay" else 1))
        assert [r["epoch"] for r in eps] == list(range(1, len(eps) + 1))
        # checkpoints at 1, 2, 4, 8 … and the last; each one's accuracy recomputed
        last = len(eps)
        assert sorted(map(int, st["kept"])) == sorted({e for e in cv.KEEP_EPOCHS if e <= last}
                                                      | {last})
        for e, path in st["kept"].items():
            with torch.no_grad():
                acc = (load_checkpoint_model(path)(x).argmax(1) == y).double().mean().item()
            assert acc == pytest.approx(eps[int(e) - 1]["test_acc"], abs=1e-9)
    # the 'why' fractions: rows of shares sum to 1, and the diagonal of the bcos map is
    # the pointing game's score on the same grids (two code paths)
    bcos_last = res["runs"]["bcos"]["stopped"]["epoch"]
    why = json.loads((out / "why" / "bcos" / "3x3" / "bcos.json").read_text())
    fr = torch.tensor(why["fractions"], dtype=torch.float64)
    assert torch.allclose(fr.sum(-1), torch.ones(fr.shape[:2], dtype=torch.float64))
    pg = res["eval"]["bcos"][str(bcos_last)]["methods"]["bcos"]
    assert fr.diagonal(dim1=1, dim2=2).mean().item() == pytest.approx(pg["mean"], abs=1e-9)
    assert pg["grids"] == fr.shape[0]
    # objectness and the pooled bcos map are in the tables; the report exists
    assert {"objectness", "bcos-pooled4", "bcos-x", "bcos-relative"} <= set(
        res["why"]["bcos"]["3x3"])
    assert res["why"]["twin"]["2x2-kinds"]["objectness"]["baseline"] == 0.25
    # the B-cosification comparison is the first epoch at ≥ target, from the records
    bc = res["bcosify"]
    target = res["runs"]["bcos"]["epochs"][-1]["test_acc"] - 0.005
    first = next(r for r in res["runs"]["bcosified"]["epochs"] if r["test_acc"] >= target)
    assert bc["bcosified"]["epoch"] == first["epoch"]
    for f in ("convergence.png", "b_ablation.png", "bcosify.png"):
        assert (out / f).stat().st_size > 1000
    assert "## 4. B-cosification at convergence" in (out / "summary.md").read_text()

    # a second run recomputes nothing: no training, no pointing game, no map
    def refuse(*a, **k):
        raise AssertionError("recomputed a finished item")

    monkeypatch.setattr(bcosnet.training, "train", refuse)
    monkeypatch.setattr("bcosnet.evaluation.grid_pointing_game", refuse)
    monkeypatch.setattr(cv, "cell_fractions", refuse)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")
              if p.name not in ("results.json", "stage_times.json")}
    capsys.readouterr()
    assert cv.main(argv) == 0
    assert "bcos: loaded (" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_interrupted_training_resumes_without_repeating_an_epoch(tmp_path, monkeypatch) -> None:
    out = tmp_path / "conv"
    argv = ["--quick", "--stage", "train-main", "--max-epochs", "4", "--out", str(out),
            "--threads", "1", "--no-progress"]
    real, calls = bcosnet.training.train, []

    def killed_after_third_epoch(*a, **k):
        r = real(*a, **k)  # the trainer has checkpointed the epoch …
        calls.append(r.epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt  # … and the study is killed before recording it
        return r

    monkeypatch.setattr(bcosnet.training, "train", killed_after_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        cv.main(argv)
    state = json.loads((out / "runs" / "twin" / "state.json").read_text())
    assert [r["epoch"] for r in state["epochs"]] == [1, 2] and not state["stopped"]
    monkeypatch.setattr(bcosnet.training, "train", real)
    assert cv.main(argv) == 0
    for net in ("twin", "bcos"):
        state = json.loads((out / "runs" / net / "state.json").read_text())
        assert [r["epoch"] for r in state["epochs"]] == [1, 2, 3, 4]
        log = [json.loads(x) for x in
               (out / "runs" / net / "run" / "metrics.jsonl").read_text().splitlines()]
        trained = [e["epoch"] for e in log if e.get("event") == "epoch"]
        assert trained == [1, 2, 3, 4]  # epoch 3 was trained once, then only evaluated
        assert not math.isnan(state["epochs"][2]["test_acc"])
