"""The trainer, configs, losses, schedules and checkpoints (bcosnet.training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bcosnet
from bcosnet.data import DataSplits, SyntheticDataset, TensorImageDataset
from bcosnet.training import (
    ModelConfig,
    NonFiniteLossError,
    ScheduleConfig,
    ShardedSampler,
    atomic_save,
    check_compatible,
    classification_loss,
    combined_loss,
    config_from_dict,
    config_to_dict,
    get_preset,
    list_presets,
    load_checkpoint,
    load_checkpoint_model,
    load_config,
    lr_factor,
    train,
)
from tests.training.helpers import tiny_config


def params(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- losses
def test_bce_loss_is_mean_bce_on_one_hot() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    expected = -(F.one_hot(labels, 3) * F.logsigmoid(logits)
                 + (1 - F.one_hot(labels, 3)) * F.logsigmoid(-logits)).mean()
    assert torch.allclose(classification_loss(logits, labels, "bce"), expected)
    t = torch.full((5, 3), 1 / 3, dtype=torch.float64)
    t[torch.arange(5), labels] = 1.0
    expected_u = F.binary_cross_entropy_with_logits(logits, t)
    assert torch.allclose(classification_loss(logits, labels, "bce_uniform"), expected_u)
    assert torch.allclose(classification_loss(logits, labels, "ce"),
                          F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="unknown loss"):
        classification_loss(logits, labels, "mse")


def test_aux_logits_add_weighted_loss() -> None:
    torch.manual_seed(1)
    main, aux, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    loss, logits = combined_loss((main, aux), y, "bce", aux_weight=1.0)
    assert logits is main
    assert torch.allclose(loss, classification_loss(main, y) + classification_loss(aux, y))
    loss_half, _ = combined_loss((main, aux), y, "bce", aux_weight=0.5)
    assert torch.allclose(loss_half, classification_loss(main, y)
                          + 0.5 * classification_loss(aux, y))


# ----------------------------------------------------------------------------- schedules
def test_cosine_and_step_schedules_with_warmup() -> None:
    cos = ScheduleConfig(name="cosine", min_lr=1e-5, warmup_epochs=1.0, warmup_start_factor=0.1)
    f = [lr_factor(s, 100, 10, cos, 1e-3) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55)
    assert f[10] == pytest.approx(1.0)
    assert f[100] == pytest.approx(1e-2)  # min_lr / lr
    assert f[55] == pytest.approx(1e-2 + (1 - 1e-2) * 0.5)  # half-way through the cosine
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    step = ScheduleConfig(name="step", step_epochs=3, gamma=0.1)
    assert [lr_factor(e * 10, 100, 10, step, 1.0) for e in (0, 2, 3, 6)] == pytest.approx(
        [1, 1, 0.1, 0.01])
    # Time-fitted cosine: progress beyond the step count wins.
    fit = ScheduleConfig(name="cosine", min_lr=0.0)
    assert lr_factor(10, 100, 10, fit, 1.0, progress=0.5) == pytest.approx(0.5)
    assert lr_factor(10, 100, 10, fit, 1.0, progress=1.0) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- configs
def test_presets_exist_and_name_registered_models() -> None:
    names = list_presets()
    for required in ("cifar10-v1", "imagenet-densenet121-v1", "imagenet-resnet50-v1",
                     "imagenet-inception-v3-v1", "imagenet-resnet50-v2", "fmnist",
                     "fmnist-standard"):
        assert required in names
    registered = set(bcosnet.list_models())
    # a preset for image folders may leave the model to the data (None); no other may
    missing = {n: get_preset(n).model.name for n in names
               if get_preset(n).model.name not in registered
               and not (get_preset(n).model.name is None
                        and get_preset(n).data.dataset == "folder")}
    assert not missing, f"presets name unregistered models: {missing}"
    inc = get_preset("imagenet-inception-v3-v1")
    assert inc.data.image_size == 299 and inc.aux_weight == 1.0
    c10 = get_preset("cifar10-v1")
    assert (c10.optim.lr, c10.optim.batch_size, c10.epochs, c10.schedule.min_lr) == (
        1e-3, 64, 100, 1e-5)


def test_yaml_config_round_trip_and_errors(tmp_path: Path) -> None:
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text("preset: fmnist\nepochs: 3\noptim: {lr: 2e-3}\nmodel: {options: {width: 8}}\n")
    cfg = load_config(p)
    assert cfg.epochs == 3 and cfg.optim.lr == 2e-3 and cfg.optim.batch_size == 128
    assert cfg.model.options == {"width": 8} and cfg.model.name == "fmnist_bcos"
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg))))
    assert again == cfg
    p.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="unknown key.*'epoch'.*valid keys: .*epochs"):
        load_config(p)
    p.write_text("optim: {batch_size: many}\n")
    with pytest.raises(ValueError, match="optim.batch_size must be an integer"):
        load_config(p)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("cifar-10-v1")


# ----------------------------------------------------------------------------- sampler
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.integers(1, 4), st.integers(0, 3), st.integers(0, 10))
def test_sharded_sampler_partitions_each_epoch(n: int, world: int, epoch: int, seed: int) -> None:
    shards = []
    for r in range(world):
        s = ShardedSampler(n, world, r, seed=seed)
        s.set_epoch(epoch)
        shards.append(list(s))
        assert len(shards[-1]) == len(s) == math.ceil(n / world)
    flat = [i for pos in range(len(shards[0])) for i in (sh[pos] for sh in shards)]
    assert sorted(set(flat)) == list(range(n))  # every index, padding only repeats
    one = ShardedSampler(n, 1, 0, seed=seed)
    one.set_epoch(epoch)
    assert flat[:n] == list(one)  # interleaved shards == the 1-process order
    evals = [list(ShardedSampler(n, world, r, shuffle=False, pad=False)) for r in range(world)]
    assert sorted(i for e in evals for i in e) == list(range(n))


def test_sampler_order_changes_per_epoch_and_resumes_mid_epoch() -> None:
    s = ShardedSampler(100, 1, 0, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(e0) == sorted(e1)
    s.set_epoch(1, start=30)
    assert list(s) == e1[30:] and len(s) == 70


# ----------------------------------------------------------------------------- trainer
def test_training_learns_and_writes_outputs(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", epochs=5, eval_every_epochs=1)
    res = train(cfg)
    assert res.stop_reason == "completed" and res.epoch == 5 and res.step == 20
    assert res.metrics["test_acc"] >= 0.9  # the synthetic classes are easy (chance: 0.25)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "final" and events.count("epoch") == 5
    epochs = [r for r in records if r["event"] == "epoch"]
    assert "test_acc" in epochs[0] and epochs[0]["img_per_s"] > 0
    assert epochs[0]["train_loss"] > epochs[-1]["train_loss"]
    # The checkpoint and the exported weights rebuild the same model.
    m1 = load_checkpoint_model(res.checkpoint)
    m2 = load_checkpoint_model(res.weights)
    assert m1.class_names == ["class_0", "class_1", "class_2", "class_3"]
    x = torch.rand(3, 1, 12, 12)
    assert torch.allclose(m1.float()(x), m2(x), atol=1e-5)
    assert isinstance(m1, torch.nn.Module) and not m1.training


def test_exact_resume_after_one_epoch(tmp_path: Path) -> None:
    straight = train(tiny_config(tmp_path / "a"))
    first = train(tiny_config(tmp_path / "b", max_steps=4))  # 4 steps = 1 epoch
    assert first.stop_reason == "max_steps" and first.epoch == 1
    resumed = train(tiny_config(tmp_path / "b", resume=True))
    assert resumed.step == straight.step == 8
    pa, pb = params(straight.checkpoint), params(resumed.checkpoint)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    ca, cb = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for ga, gb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(),
                      strict=True):
        assert torch.equal(ga["exp_avg_sq"], gb["exp_avg_sq"])


def test_exact_resume_mid_epoch_with_augmentation_and_ema(tmp_path: Path) -> None:
    kw = {"ema_decay": 0.9, "grad_clip": 1.0}
    a = tiny_config(tmp_path / "a", **kw)
    a.data.augment = True
    splits = _augmented_synthetic()
    straight = train(a, datasets=splits)
    b = tiny_config(tmp_path / "b", max_steps=6, **kw)  # stops in the middle of epoch 2
    part = train(b, datasets=splits)
    assert part.epoch == 1 and load_checkpoint(part.checkpoint)["step_in_epoch"] == 2
    b.max_steps, b.resume = None, True
    resumed = train(b, datasets=splits)
    ca, cb = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
        assert torch.equal(ca["ema"][k], cb["ema"][k]), k


def _augmented_synthetic() -> DataSplits:
    import torchvision.transforms as T

    tr = SyntheticDataset(64, 4, 12, seed=0,
                          transform=T.Compose([T.RandomHorizontalFlip(),
                                               T.RandomCrop(12, padding=2)]))
    te = SyntheticDataset(16, 4, 12, seed=1)
    return DataSplits(tr, te, tr.classes, 1, (12, 12))


def test_refuses_to_overwrite_and_checks_resume_model(tmp_path: Path) -> None:
    train(tiny_config(tmp_path / "r", max_steps=1))
    with pytest.raises(ValueError, match="already exists.*resume"):
        train(tiny_config(tmp_path / "r"))
    other = tiny_config(tmp_path / "r", resume=True)
    other.model = ModelConfig("standard_fmnist_bcos", options={"width": 4})
    with pytest.raises(ValueError, match="trained with model 'fmnist_bcos'"):
        train(other)
    wider = tiny_config(tmp_path / "r", resume=True)
    wider.model.options = {"width": 6}
    with pytest.raises(ValueError, match=r"shape mismatches: .*features\.0\.weight"):
        train(wider)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    base = SyntheticDataset(64, 4, 12, seed=0)
    images = base.images.clone()
    images[37] = float("nan")  # one poisoned image
    splits = DataSplits(TensorImageDataset(images, base.targets, base.classes),
                        SyntheticDataset(16, 4, 12, seed=1), base.classes, 1, (12, 12))
    cfg = tiny_config(tmp_path / "nan", checkpoint_every_steps=1)
    with pytest.raises(NonFiniteLossError, match="non-finite loss") as e:
        train(cfg, datasets=splits)
    ckpt = load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert f"step {ckpt['step']})" in str(e.value)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    log = [json.loads(x) for x in (tmp_path / "nan" / "metrics.jsonl").open()]
    assert log[-1]["event"] == "error"


def test_time_limit_stops_cleanly_with_checkpoint_and_evaluation(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "t", epochs=50, time_limit_min=1e-4)  # 6 ms
    cfg.schedule.fit_time_limit = True
    res = train(cfg)
    assert res.stop_reason == "time_limit" and res.step < 50 * 4
    assert res.metrics["test_n"] == 16
    ck = load_checkpoint(res.checkpoint)
    assert ck["step"] == res.step and ck["metrics"]["test_acc"] == res.metrics["test_acc"]


def test_incompatible_checkpoint_lists_keys_and_shapes(tmp_path: Path) -> None:
    m = bcosnet.create_model("fmnist_bcos", num_classes=4, width=4)
    state = m.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.weight"]
    state["features.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as e:
        check_compatible(m, state)
    msg = str(e.value)
    assert "missing keys: classifier.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "features.0.weight: model (8, 2, 3, 3) vs checkpoint (3, 3)" in msg


def test_corrupt_checkpoint_file_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "c.pt"
    atomic_save({"a": torch.ones(3)}, p)
    assert torch.equal(load_checkpoint(p)["a"], torch.ones(3))
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(p)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]


def test_example_configs_load() -> None:
    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert configs, "no example configs found"
    registered = set(bcosnet.list_models())
    for p in configs:
        cfg = load_config(p)
        assert cfg.model.name in registered or (
            cfg.model.name is None and cfg.data.dataset == "folder"), p


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401

        has_tb = True
    except ImportError:
        has_tb = False
    cfg = tiny_config(tmp_path / "tb", max_steps=1, tensorboard=True)
    if has_tb:
        train(cfg)
        assert (tmp_path / "tb" / "tensorboard").is_dir()
    else:
        with pytest.warns(UserWarning, match="tensorboard is not installed"):
            res = train(cfg)
        assert res.step == 1 and (tmp_path / "tb" / "metrics.jsonl").is_file()


class _AuxNet(torch.nn.Module):
    """Returns (logits, aux_logits) in training mode, logits in eval mode (as Inception)."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.main = torch.nn.Linear(in_channels * 144, num_classes)
        self.aux = torch.nn.Linear(in_channels * 144, num_classes)

    def forward(self, x: torch.Tensor):
        f = x.flatten(1)
        return (self.main(f), self.aux(f)) if self.training else self.main(f)


@pytest.fixture
def aux_model_name():
    """Register _AuxNet for one test only (other tests iterate over the registry)."""
    from bcosnet.models import registry

    bcosnet.register_model("test_aux_net", family="test", kind="standard", input_size=(12, 12),
                           in_channels=1, default_num_classes=4)(_AuxNet)
    yield "test_aux_net"
    registry._REGISTRY.pop("test_aux_net", None)


@pytest.mark.parametrize("aux_weight", [0.0, 1.0])
def test_auxiliary_head_is_trained_with_its_weight(
    tmp_path: Path, aux_weight: float, aux_model_name: str
) -> None:
    cfg = tiny_config(tmp_path / "aux", max_steps=2, aux_weight=aux_weight)
    cfg.model = ModelConfig(aux_model_name)
    res = train(cfg)
    state = load_checkpoint(res.checkpoint)["model"]
    torch.manual_seed(cfg.seed)
    init = _AuxNet().double().state_dict()
    aux_moved = not torch.equal(state["aux.weight"], init["aux.weight"])
    assert aux_moved == (aux_weight > 0)
    assert not torch.equal(state["main.weight"], init["main.weight"])
    assert res.metrics["test_n"] == 16  # eval mode: plain logits
