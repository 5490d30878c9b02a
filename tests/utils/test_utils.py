"""bcosnet._utils: the one home of the shared helpers."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from torch import nn

from bcosnet._utils.io import atomic_write, atomic_write_json, save_figure
from bcosnet._utils.modules import (
    eval_mode,
    first_output,
    frozen_params,
    resolve_layer,
    this_thread_only,
)
from bcosnet._utils.validate import (
    check_choice,
    check_image_batch,
    check_int,
    did_you_mean,
    is_int,
)


def test_eval_mode_restores_every_flag_even_on_error() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    m.train()
    m[1].eval()  # a mixed model keeps its mix
    with pytest.raises(RuntimeError), eval_mode(m):
        assert not any(x.training for x in m.modules())
        raise RuntimeError("boom")
    assert [x.training for x in m.modules()] == [True, True, False, True]


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path) -> None:
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})

    def broken(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("{half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, broken)
    assert json.loads(p.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(ValueError, match="figure format"):
        save_figure(object(), tmp_path / "fig.jpeg")


def test_names_and_ints() -> None:
    m = nn.Sequential()
    m.add_module("features", nn.Linear(1, 1))
    with pytest.raises(ValueError, match="did you mean 'features'"):
        resolve_layer(m, "feature")
    assert resolve_layer(m, "features") is m.features
    assert did_you_mean("zzz", ["features"]) == ""
    assert check_int("k", 3, 1) == 3
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            check_int("k", bad, 1)
    assert check_int("index", 4, 0, 4) == 4 and is_int(3) and not is_int(True)
    with pytest.raises(ValueError, match="index must be an int in 0..4, got 5"):
        check_int("index", 5, 0, 4)
    assert check_choice("output", "logit", ("logit", "sigmoid")) == "logit"
    with pytest.raises(ValueError, match="one of 'logit', 'sigmoid', got 'sigmod'; did you "
                                         "mean 'sigmoid'"):
        check_choice("output", "sigmod", ("logit", "sigmoid"))
    t = torch.ones(1, 2)
    assert first_output(t) is t and first_output((t, None)) is t
    assert first_output((t, None), logits=True) is t
    with pytest.raises(ValueError, match="N×K logits, got \\(1, 2, 1\\)"):
        first_output(torch.ones(1, 2, 1), logits=True)
    with pytest.raises(TypeError, match="got dict"):
        first_output({"logits": t})


def test_frozen_params_nested_and_in_threads_restore_each_flag() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    m[1].bias.requires_grad_(False)
    flags = [p.requires_grad for p in m.parameters()]
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:  # enters first, leaves while the second still holds the parameters
        with frozen_params(m):
            first_in.set()
            second_in.wait(timeout=30)
        first_out.set()

    def second() -> None:
        first_in.wait(timeout=30)
        with frozen_params(m):
            second_in.set()
            first_out.wait(timeout=30)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with frozen_params(m):
        with frozen_params(m):
            assert not any(p.requires_grad for p in m.parameters())
        assert not any(p.requires_grad for p in m.parameters())
    assert [p.requires_grad for p in m.parameters()] == flags


def test_this_thread_only_hooks_leave_other_threads_alone() -> None:
    m = nn.Identity()
    seen: list[str] = []
    handle = m.register_forward_hook(this_thread_only(lambda _m, _i, out: out + 1))
    other = threading.Thread(target=lambda: seen.append(str(m(torch.zeros(1)).item())))
    other.start()
    other.join(timeout=30)
    assert seen == ["0.0"] and m(torch.zeros(1)).item() == 1.0
    handle.remove()


def test_image_batch_messages_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="the model encodes them itself"):
        check_image_batch(torch.rand(1, 6, 8, 8), in_channels=3)
    with pytest.raises(TypeError, match=r"x.float\(\) / 255"):
        check_image_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), in_channels=3)
    with pytest.raises(ValueError, match="unsqueeze"):
        check_image_batch(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="at least 16×16"):
        check_image_batch(torch.rand(1, 3, 8, 8), min_size=(16, 16))
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_image_batch(torch.full((1, 1, 2, 2), float("nan")), finite=True)
    check_image_batch(torch.rand(0, 3, 8, 8), in_channels=3, allow_empty=True)
