"""Fine-tuning: weights from another class count, head-only training, small
balanced subsets (issue #16's fine-tuning API and presets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bcosnet.cli import build_parser
from bcosnet.cli.train import config_from_args
from bcosnet.data import TensorImageDataset, per_class_subset
from bcosnet.models import create_finetune_model, create_model, freeze_backbone
from bcosnet.training import get_preset, load_checkpoint, train
from tests.training.helpers import tiny_config


def _labelled(labels: list[int]) -> TensorImageDataset:
    return TensorImageDataset(torch.zeros(len(labels), 1, 4, 4), torch.tensor(labels),
                              [str(c) for c in range(max(labels) + 1)])


# ----------------------------------------------------------------------------- subsets
@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(3, 12), min_size=2, max_size=5),
       k=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_per_class_subset_is_balanced_seeded_and_nested(counts, k, seed) -> None:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    ds = _labelled([labels[i] for i in perm])
    sub = per_class_subset(ds, k, seed=seed)
    got = [int(ds.targets[i]) for i in sub.indices]
    assert sorted(got) == sorted(c for c in range(len(counts)) for _ in range(k))
    assert list(sub.indices) == sorted(sub.indices)
    assert per_class_subset(ds, k, seed=seed).indices == sub.indices
    bigger = per_class_subset(ds, min(counts), seed=seed)
    assert set(sub.indices) <= set(bigger.indices)


def test_per_class_subset_names_the_short_classes() -> None:
    ds = _labelled([0] * 5 + [1] * 2 + [2] * 1)
    with pytest.raises(ValueError, match=r"class 1: 2, class 2: 1.*data\.train_per_class"):
        per_class_subset(ds, 3)
    with pytest.raises(TypeError, match="no .targets"):
        per_class_subset(torch.utils.data.TensorDataset(torch.zeros(3)), 1)


# ----------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 4-class fmnist_bcos (width 8) with random weights, saved as a plain state dict."""
    torch.manual_seed(0)
    model = create_model("fmnist_bcos", 4, width=8)
    path = tmp_path_factory.mktemp("src") / "plain.pt"
    torch.save(model.state_dict(), path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_same_class_count_loads_every_weight(source) -> None:
    path, state = source
    model = create_finetune_model("fmnist_bcos", 4, path, width=8)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("reset_head", [False, True])
def test_other_class_count_keeps_the_backbone_and_resets_the_head(source, reset_head) -> None:
    path, state = source  # a plain state dict: the class count comes from the weight shape
    torch.manual_seed(1)
    model = create_finetune_model("fmnist_bcos", 7, path, width=8, reset_head=reset_head)
    got = model.state_dict()
    assert got["classifier.weight"].shape[0] == 7 * model.get_classifier().max_out
    assert model.num_classes == 7 and model(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    for k, v in state.items():
        if not k.startswith("classifier."):
            assert torch.equal(got[k], v), k


def test_reset_head_with_the_same_class_count_draws_a_new_head(source) -> None:
    path, state = source
    model = create_finetune_model("fmnist_bcos", 4, path, width=8, reset_head=True)
    got = model.state_dict()
    assert not torch.equal(got["classifier.weight"], state["classifier.weight"])
    assert torch.equal(got["features.0.weight"], state["features.0.weight"])


def test_weights_of_another_architecture_still_fail_with_the_loader_message(source) -> None:
    path, _ = source
    with pytest.raises(ValueError, match="fmnist_bcos"):
        create_finetune_model("fmnist_bcos", 4, path, width=16)


def test_freeze_backbone_leaves_only_the_head_trainable() -> None:
    model = create_model("standard_fmnist_bcos", 3, width=8)
    names = freeze_backbone(model)
    assert names == ["classifier.weight", "classifier.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names
    with pytest.raises(TypeError, match="get_classifier"):
        freeze_backbone(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- training
def _train_source(tmp_path: Path, model: str = "fmnist_bcos", **options) -> Path:
    cfg = tiny_config(tmp_path / "src", epochs=1)
    cfg.model.name, cfg.model.options = model, {"width": 8, **options}
    if model.startswith("standard"):
        cfg.loss = "ce"
    return train(cfg).checkpoint


def test_head_only_training_changes_only_the_head(tmp_path) -> None:
    ck = _train_source(tmp_path, "standard_fmnist_bcos")
    before = load_checkpoint(ck)["model"]
    cfg = tiny_config(tmp_path / "ft", epochs=2, trainable="head", loss="ce")
    cfg.model.name, cfg.model.options = "standard_fmnist_bcos", {"width": 8}
    cfg.model.init_weights, cfg.model.num_classes = str(ck), 3
    cfg.data.synthetic_classes, cfg.data.train_per_class = 3, 5
    result = train(cfg)
    after = load_checkpoint(result.checkpoint)["model"]
    assert result.step == 2 * 1  # 15 images, batch 16: one step per epoch
    changed = {k for k in after if after[k].shape != before[k].shape
               or not torch.equal(after[k], before[k])}
    # BatchNorm running statistics included: the frozen backbone ran in eval mode.
    assert changed == {"classifier.weight", "classifier.bias"}
    assert after["classifier.weight"].shape[0] == 3


def test_whole_net_fine_tuning_starts_from_the_weights(tmp_path) -> None:
    ck = _train_source(tmp_path)
    before = load_checkpoint(ck)["model"]
    cfg = tiny_config(tmp_path / "ft", epochs=1, trainable="all", max_steps=1)
    cfg.model.init_weights = str(ck)
    cfg.optim.lr = 1e-6
    after = load_checkpoint(train(cfg).checkpoint)["model"]
    for k in before:  # one Adam step of size ~lr: every weight moved, none far
        assert not torch.equal(after[k], before[k]), k
        assert (after[k] - before[k]).abs().max() < 1e-5, k


def test_config_refuses_unknown_trainable_and_a_reset_without_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="trainable must be one of all, head"):
        tiny_config(tmp_path, trainable="backbone")
    cfg = tiny_config(tmp_path)
    cfg.model.reset_head = True
    with pytest.raises(ValueError, match="init_weights"):
        cfg.validate()


def test_cli_flags_and_presets_set_the_fine_tuning_fields() -> None:
    args = build_parser().parse_args([
        "train", "--preset", "fmnist", "--init-weights", "w.pt", "--trainable", "head",
        "--train-per-class", "20"])
    cfg = config_from_args(args)
    assert (cfg.model.init_weights, cfg.trainable, cfg.data.train_per_class) == (
        "w.pt", "head", 20)
    head, whole = get_preset("fmnist-finetune-head"), get_preset("fmnist-finetune")
    assert (head.trainable, whole.trainable) == ("head", "all")
    for cfg in (head, whole):
        assert cfg.model.init_weights == get_preset("fmnist").out_dir + "/checkpoint.pt"
        assert cfg.model.reset_head and cfg.data.train_per_class == 100
