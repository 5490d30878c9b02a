"""bcosnet.attribution.gradient: Integrated Gradients' integration rules and its
one backward pass per chunk of path points for all targets; DeepLIFT's rules as
per-thread forward hooks (the model's forwards untouched, concurrent threads,
torch.compile)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from bcosnet import attribution
from bcosnet.attribution import count_passes
from bcosnet.attribution.gradient import INTEGRATION_RULES, integration_rule
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer


def bcos_net(k: int = 9) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        AddInverse(1), BcosConv2d(2, 6, 3, padding=1), BcosConv2d(6, k, 3, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), LogitLayer(temperature=0.2, bias=-1.0),
    ).double().eval()


class Rendezvous(nn.Module):
    """Identity; with ``barrier`` set, every forward pass waits there for the others."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier: threading.Barrier | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.barrier is not None:
            self.barrier.wait(timeout=60)
        return x


def relu_net() -> nn.Sequential:
    """Conv, BN, a rendezvous, an in-place ReLU used twice, max-pool, linear."""
    torch.manual_seed(4)
    relu = nn.ReLU(inplace=True)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), Rendezvous(), relu,
        nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1), relu, nn.Flatten(), nn.LazyLinear(5),
    ).double().eval()


def images(n: int, seed: int, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, c, size, size, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- IntGrad


@pytest.mark.parametrize("method", INTEGRATION_RULES)
@pytest.mark.parametrize("n", [2, 7, 50])
def test_integration_rule_is_captums(method, n):
    from captum.attr._utils.approximation_methods import approximation_parameters

    steps, alphas = approximation_parameters(method)
    assert integration_rule(method, n) == (steps(n), alphas(n))


def test_integration_rule_refuses_unknown_rules_and_one_riemann_step():
    with pytest.raises(ValueError, match="'gausslegendre', 'riemann_left'"):
        attribution.get("intgrad", bcos_net(), method="simpson")
    with pytest.raises(ValueError, match="n_steps must be an int >= 2"):
        attribution.get("intgrad", bcos_net(), method="riemann_middle", n_steps=1)
    assert len(integration_rule("gausslegendre", 1)[0]) == 1


def test_intgrad_shares_each_chunks_forward_pass_among_all_targets():
    """9 targets, 10 steps in chunks of 5 path images: 2 path forward calls (not
    18) and 9 × 10 images' backward passes, and each target's map is the map of
    a call with that target alone."""
    model, x = bcos_net(), images(1, 0, c=1)
    ig = attribution.get("intgrad", model, n_steps=10, batch_size=5)
    with count_passes(model) as c:
        maps = ig.attribute(x, target=torch.arange(9)[None])
    assert c.forward_calls == 1 + 2
    assert (c.forward, c.backward) == (1 + 10, 9 * 10)
    for t in range(9):
        torch.testing.assert_close(maps[:, t], ig.attribute(x, target=t), rtol=1e-10,
                                   atol=1e-14)


# ----------------------------------------------------------------------------- DeepLIFT


def test_deeplift_leaves_the_model_forwards_and_hooks_as_they_were():
    model = relu_net()
    x = images(2, 1)
    model(x)  # materialise the lazy layer
    seen = []

    def inspect(_m, _inp, _out):  # a user's hook, run during the attribution
        seen.append(any("forward" in m.__dict__ for m in model.modules()))

    user = model[5].register_forward_hook(inspect)
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    attribution.get("deeplift", model).attribute(x, target=1)
    assert seen == [False]
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    user.remove()
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_deeplift_and_grad_in_concurrent_threads_give_their_single_thread_maps():
    """Three threads meet inside their forward passes (before the ReLU): two
    DeepLIFT calls with other images and baselines and a plain gradient.  Each
    gets its single-thread map: no thread's rules reach another's forward."""
    model = relu_net()
    xa, xb, xc = images(2, 2), images(3, 3), images(2, 4)
    model(xa)
    calls = {
        "a": lambda: attribution.get("deeplift", model).attribute(xa, target=1),
        "b": lambda: attribution.get("deeplift", model, baseline="white").attribute(xb, 2),
        "c": lambda: attribution.get("grad", model).attribute(xc, target=3),
    }
    want = {k: f() for k, f in calls.items()}
    model[2].barrier = threading.Barrier(len(calls))
    got: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []

    def run(k: str) -> None:
        try:
            got[k] = calls[k]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    model[2].barrier = None
    assert not errors, errors
    for k in calls:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-15, msg=k)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_deeplift_of_a_compiled_model_is_that_of_the_model():
    model = relu_net()
    x = images(2, 5)
    model(x)
    compiled = torch.compile(model, backend="eager")
    want = attribution.get("deeplift", model).attribute(x, target=2)
    got = attribution.get("deeplift", compiled).attribute(x, target=2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
