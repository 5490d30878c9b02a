"""Property-based fuzzing (hypothesis) of the public entry points: any input gives
a result or a ValueError/TypeError from bcosnet saying what to change
(docs/reliability.md).  Examples are derandomised (the same on every machine)
and few: the tiny width-4 networks keep every call in milliseconds.  Each test
fuzzes one entry point with a tally of its own and checks and records its counts
(tests/reliability/fuzz.py): no test depends on another having run."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import strategies as st

import bcosnet
from bcosnet.attribution import METHODS
from tests.reliability.fuzz import Tally, fuzz

torch.set_printoptions(threshold=20, edgeitems=2)  # short falsifying examples

_MODELS: dict[str, torch.nn.Module] = {}


def _model(kind: str = "bcos") -> torch.nn.Module:
    if kind not in _MODELS:
        torch.manual_seed(0)
        name = "fmnist_bcos" if kind == "bcos" else "standard_fmnist_bcos"
        _MODELS[kind] = bcosnet.create_model(name, num_classes=10, width=4).eval()
    return _MODELS[kind]


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8,
          torch.int64, torch.bool]


@st.composite
def images(draw, max_side: int = 33):
    """Half the draws are valid grey batches (which parts vary: size, values,
    dtype among the floats, memory layout), half anything."""
    if draw(st.booleans()):
        n = draw(st.sampled_from([1, 2, 3]))
        side = draw(st.sampled_from([8, 16, 28, max_side]))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        x = torch.rand(n, 1, side, side, generator=g)
        x = draw(st.sampled_from([x, x.round(), torch.zeros_like(x), torch.ones_like(x)]))
        layout = draw(st.sampled_from(["plain", "channels_last", "strided"]))
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":
            x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
        return x
    dim = draw(st.sampled_from([4, 4, 4, 4, 3, 2, 5, 0]))
    n = draw(st.sampled_from([1, 2, 0, 3]))
    c = draw(st.sampled_from([1, 1, 1, 3, 2]))
    h = draw(st.sampled_from([28, 28, 1, 2, 7, 16, max_side]))
    w = draw(st.sampled_from([28, 28, h, 1, 5, max_side]))
    shape = [n, c, h, w][4 - min(dim, 4):] if dim <= 4 else [1, n, c, h, w]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(shape, generator=g)
    fill = draw(st.sampled_from(["rand", "rand", "zeros", "ones", "const", "neg", "big",
                                 "nan", "inf"]))
    if fill == "zeros":
        x = torch.zeros(shape)
    elif fill == "ones":
        x = torch.ones(shape)
    elif fill == "const":
        x = torch.full(shape, 0.37)
    elif fill == "neg":
        x = x - 1.5
    elif fill == "big":
        x = x * 300
    elif fill in ("nan", "inf") and x.numel():
        x.view(-1)[0] = math.nan if fill == "nan" else math.inf
    dtype = draw(st.sampled_from(DTYPES[:1] * 4 + DTYPES))
    x = (x * 255).to(dtype) if dtype in (torch.uint8, torch.int64) else x.to(dtype)
    layout = draw(st.sampled_from(["plain", "plain", "channels_last", "strided", "expanded"]))
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided" and x.dim() >= 1:
        x = torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    elif layout == "expanded" and x.dim() == 4 and x.shape[0] == 1:
        x = x.expand(3, *x.shape[1:])
    return x


def _n(x) -> int:
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 4 else 2


@st.composite
def targets(draw, n: int, k: int = 10):
    if draw(st.booleans()):  # a valid target of every form
        return draw(st.sampled_from(["pred", 0, k - 1, ("topk", 2), list(range(n)),
                                     torch.arange(n) % k, torch.zeros(n, 2, dtype=torch.long),
                                     [[1, 2]] * n]))
    form = draw(st.sampled_from(
        ["pred", "int", "int", "list", "tensor1", "tensorNT", "topk", "listlist", "bad"]))
    if form == "pred":
        return draw(st.sampled_from(["pred", "topk:2", "PRED", ""]))
    if form == "int":
        return draw(st.sampled_from([0, 3, k - 1, k, -1, 10**6, True, 2.0]))
    if form == "list":
        m = draw(st.sampled_from([n, n, n + 1, 0]))
        return [draw(st.integers(-1, k)) for _ in range(m)]
    if form == "tensor1":
        m = draw(st.sampled_from([n, n, 1, n + 1]))
        dtype = draw(st.sampled_from([torch.long, torch.int32, torch.float32, torch.bool]))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        return torch.randint(0, k + 1, (m,), generator=g).to(dtype)
    if form == "tensorNT":
        t = draw(st.sampled_from([1, 2, 0]))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        return torch.randint(0, k, (n, t), generator=g)
    if form == "topk":
        return ("topk", draw(st.sampled_from([1, 3, k, k + 1, 0, -2, 2.5])))
    if form == "listlist":
        return [[1, 2] for _ in range(n)] if draw(st.booleans()) else [[1], [1, 2]][:n]
    return draw(st.sampled_from([None, {"a": 1}, object(), "cat", torch.tensor(1.5),
                                 torch.zeros(0, dtype=torch.long)]))


# ----------------------------------------------------------------------------- explain
def _explain_case(tally: Tally, data) -> None:
    x = data.draw(images())
    target = data.draw(targets(_n(x)))
    model = _model()
    ex = tally.call(lambda: bcosnet.explain(model, x, target=target))
    if ex is not None:  # the explanation is exact: contributions + bias = logit
        err = ex.completeness_error.abs().max()
        assert err <= 1e-3 * (1 + ex.logits.abs().max()), err


def test_fuzz_explain(reliability) -> None:
    tally = fuzz("bcosnet.explain", 60, _explain_case, reliability, data=st.data())
    assert tally.counts["handled"] > 0 and tally.refused > 0 and tally.total >= 60


# ----------------------------------------------------------------------------- create_model
NAMES = ["fmnist_bcos", "cifar_bcos", "standard_fmnist_bcos", "resnet18x", "", "FMNIST_BCOS",
         "densenet", 3, None]
KWARGS = st.dictionaries(
    st.sampled_from(["num_classes", "width", "max_out", "in_channels", "b", "colour",
                     "temperature", "logit_bias", "weights"]),
    st.sampled_from([0, 1, 2, 3, -1, 10, 2.5, "3", None, True, [1], math.nan]), max_size=3)


def _create_case(tally: Tally, name, kwargs) -> None:
    if name not in ("fmnist_bcos", "standard_fmnist_bcos"):
        kwargs.pop("width", None)  # keep the larger models out of the loop (time)
    else:
        kwargs.setdefault("width", 4)
    m = tally.call(lambda: bcosnet.create_model(name, **kwargs))
    if m is not None:  # a model that was built must run on what it says it takes
        info = m.model_info
        x = torch.rand(1, info.in_channels, *info.input_size)
        with torch.no_grad():
            assert m.eval()(x).shape[-1] == info.num_classes


def test_fuzz_create_model(reliability) -> None:
    tally = fuzz("bcosnet.create_model", 50, _create_case, reliability,
                 name=st.sampled_from(NAMES), kwargs=KWARGS)
    assert tally.counts["handled"] > 0 and tally.refused > 0


# ----------------------------------------------------------------------------- attribution
# the perturbation methods cost hundreds of forward passes a call: fewer examples
_ATTR_EXAMPLES = {"occlusion": 6, "rise": 6, "lime": 6, "intgrad": 10}


@pytest.mark.parametrize("method", list(METHODS))
def test_fuzz_attribution(method, reliability) -> None:
    settings_ = {"rise": {"n_masks": 20}, "lime": {"n_samples": 20},
                 "intgrad": {"n_steps": 4}, "occlusion": {"patch_size": 7, "stride": 7}}
    kind = "standard" if method != "bcos" else "bcos"

    def case(tally: Tally, data) -> None:
        x = data.draw(images(max_side=20))
        target = data.draw(targets(_n(x)))
        m = bcosnet.attribution.get(method, _model(kind), **settings_.get(method, {}))
        out = tally.call(lambda: m.attribute(x, target=target))
        if out is not None:
            assert torch.isfinite(out).all()

    tally = fuzz(f"attribution {method}.attribute", _ATTR_EXAMPLES.get(method, 20), case,
                 reliability, data=st.data())
    assert tally.counts["handled"] > 0 and tally.refused > 0


# ----------------------------------------------------------------------------- to_rgba
RGBA_ARGS = dict(
    shape=st.sampled_from([(1, 1, 2, 5, 5), (2, 2, 5, 5), (6, 4, 4), (1, 1, 6, 3, 3)] * 2
                          + [(1, 1, 3, 4, 4), (4, 4), (), (0, 1, 2, 4, 4), (1, 1, 2, 1, 1)]),
    inputs=st.sampled_from(["same"] * 4 + ["none", "wrong", "list"]),
    dtype=st.sampled_from([torch.float32] * 3 + [torch.float64, torch.float16,
                                                torch.bfloat16, torch.int64]),
    smooth=st.sampled_from([0, 1, 3] * 2 + [2, -1, 99, 2.0, True, None]),
    percentile=st.sampled_from([99.5, 100, 50] * 2 + [0, -1, 101, math.nan, "50"]),
    positive_only=st.booleans(),
    fill=st.sampled_from(["rand", "rand", "zeros", "nan"]))


def _rgba_case(tally: Tally, shape, inputs, dtype, smooth, percentile, positive_only,
               fill) -> None:
    w = torch.zeros(shape) if fill == "zeros" else torch.randn(shape)
    if fill == "nan" and w.numel():
        w.view(-1)[0] = math.nan
    w = w.to(dtype)
    x = {"same": lambda: torch.rand(shape[-3:]) if len(shape) >= 3 else torch.rand(shape),
         "none": lambda: None, "wrong": lambda: torch.rand(3, 2, 2),
         "list": lambda: [1, 2]}[inputs]()
    kwargs = {"smooth": smooth, "percentile": percentile, "positive_only": positive_only}
    out = tally.call(lambda: bcosnet.to_rgba(w, x, **kwargs))
    if out is not None:
        assert out.shape[-1] == 4 and bool(((out >= 0) & (out <= 1)).all())


def test_fuzz_to_rgba(reliability) -> None:
    tally = fuzz("bcosnet.to_rgba", 60, _rgba_case, reliability, **RGBA_ARGS)
    assert tally.counts["handled"] > 0 and tally.refused > 0


# ----------------------------------------------------------------------------- pointing game
class _Oracle(torch.nn.Module):
    """A 'model' that classifies the generated images perfectly (its logits are the
    label encoded in the image's mean grey level), so grids can always be made."""

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3))
        centres = torch.arange(4, dtype=x.dtype, device=x.device) / 4 + 0.125
        return -((level[:, None] - centres) ** 2) * 400 + 2


def _oracle_data():
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for i in range(16):
        c = i % 4
        xs.append((torch.rand(1, 8, 8, generator=g) * 0.1 + c / 4 + 0.075).clamp(0, 1))
        ys.append(c)
    return list(zip(xs, ys, strict=True))


PG_ARGS = dict(
    n=st.sampled_from([2] * 6 + [3, 1, 0, -1, "2", 2.0, True]),
    num_grids=st.sampled_from([2] * 4 + [1, None, 0, -1, 10**6, "3", 1.5]),
    methods=st.sampled_from([["grad"]] * 4 + [["grad", "ixg"], "grad", [], ["nope"], [3],
                                              None]),
    threshold=st.sampled_from([None] * 4 + [0.5, -1.0, 2.0, math.nan, "high"]),
    smoothing=st.sampled_from(["auto"] * 4 + [None, 3, 2, -1, "x"]),
    per_method=st.sampled_from([None] * 4 + [{"grad": 1}, {"grad": -1}, {"other": 1},
                                             {"grad": 2.5}]),
    seed=st.sampled_from([0] * 4 + [1, -1, "s", None]))


def _pg_case(tally: Tally, n, num_grids, methods, threshold, smoothing, per_method,
             seed) -> None:
    from bcosnet.evaluation import grid_pointing_game

    res = tally.call(lambda: grid_pointing_game(
        _Oracle(), _oracle_data(), methods, n=n, num_grids=num_grids,
        grids_per_method=per_method, seed=seed, confidence_threshold=threshold,
        allow_fewer=True, smoothing=smoothing, progress=False))
    if res is not None:
        for scores in res.scores.values():
            assert ((scores >= 0) & (scores <= 1)).all()


def test_fuzz_pointing_game(reliability) -> None:
    tally = fuzz("bcosnet.evaluation.grid_pointing_game", 40, _pg_case, reliability,
                 **PG_ARGS)
    assert tally.counts["handled"] > 0 and tally.refused > 0


# ----------------------------------------------------------------------------- trainer config
VALUES = st.sampled_from([1, 0, -3, 2.5, "x", None, True, [1, 2], {"a": 1}, "1e-3", math.inf])
KEYS = st.sampled_from(["epochs", "seed", "loss", "precision", "grad_clip", "optim",
                        "optim.lr", "optim.name", "optim.batch_size", "optim.betas",
                        "data.dataset", "data.image_size", "model.name", "model.num_classes",
                        "model.options", "schedule", "unknown_key", "optim.unknown",
                        "preset", "time_limit_min", "max_steps"])


def _cfg_case(tally: Tally, entries, top, folder) -> None:
    import yaml

    from bcosnet.training import load_config

    data: dict = {}
    for key, value in entries.items():
        d = data
        *parents, last = key.split(".")
        for p in parents:
            d = d.setdefault(p, {}) if isinstance(d.get(p, {}), dict) else {}
        d[last] = value
    text = {"mapping": lambda: yaml.safe_dump(data), "list": lambda: "- 1\n- 2\n",
            "scalar": lambda: "3\n", "empty": lambda: "",
            "broken": lambda: "epochs: [1, 2\n"}[top]()
    path = folder / "c.yaml"
    path.write_text(text)
    cfg = tally.call(lambda: load_config(path))
    if cfg is not None:
        assert cfg.validate() is cfg


def test_fuzz_train_config(reliability, tmp_path) -> None:
    tally = fuzz("bcosnet.training.load_config (YAML)", 60,
                 lambda tally, **drawn: _cfg_case(tally, folder=tmp_path, **drawn), reliability,
                 entries=st.dictionaries(KEYS, VALUES, max_size=4),
                 top=st.sampled_from(["mapping", "mapping", "mapping", "list", "scalar",
                                      "empty", "broken"]))
    assert tally.counts["handled"] > 0 and tally.refused > 0
