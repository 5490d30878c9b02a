"""The per-target gradient helper (bcosnet._utils.gradients.target_gradients):
batched over targets, the per-target loop and plain autograd on one sample at a
time agree (float64); an op vmap cannot batch falls back to the loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bcosnet._utils.gradients import backward_width, target_gradients
from bcosnet.attribution import count_passes


def small_net(k: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2),
        nn.Softplus(), nn.Flatten(), nn.LazyLinear(k),
    ).double().eval()


def one_sample_gradient(model: nn.Module, x: torch.Tensor, i: int, c: int) -> torch.Tensor:
    """∂ model(x_i)[c] / ∂ x_i with the sample alone in its batch (the definition)."""
    xi = x[i : i + 1].detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xi)[0, c], xi)
    return g[0]


@pytest.mark.parametrize("batched", [True, False])
def test_each_target_gradient_is_the_one_sample_gradient(batched):
    model = small_net()
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[0, 5, 2], [4, 4, 1], [3, 0, 5]])
    model(x)  # materialise the lazy layer
    xr = x.clone().requires_grad_(True)
    g = target_gradients(model(xr), xr, targets, batched=batched)
    assert g.shape == (3, 3, 2, 7, 7)
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(g[i, j], one_sample_gradient(model, x, i, targets[i, j]),
                                       rtol=1e-12, atol=1e-14)


def test_batched_and_looped_agree_and_selection_is_optional():
    model = small_net()
    x = torch.rand(4, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model(x)
    xr = x.clone().requires_grad_(True)
    t = torch.tensor([[1, 2], [0, 3], [5, 5], [2, 4]])
    a = target_gradients(model(xr), xr, t)
    b = target_gradients(model(xr), xr, t, batched=False)  # the loop frees the graph
    c = target_gradients(model(xr).gather(1, t), xr)  # the selection done by the caller
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(c, b, rtol=1e-12, atol=1e-15)


def test_an_input_the_outputs_do_not_use_has_zero_gradient():
    x = torch.rand(2, 3, requires_grad=True)
    unused = torch.rand(2, 5, requires_grad=True)
    out = torch.stack([x.sum(1), (x**2).sum(1)], 1)
    for batched in (True, False):
        g = target_gradients(out, unused, torch.tensor([[0, 1], [1, 0]]), batched=batched)
        assert g.shape == (2, 2, 5) and not g.any()


class _NoVmapSquare(torch.autograd.Function):
    """x² whose backward asks a question vmap cannot answer (a memory-format query)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        g.is_contiguous(memory_format=torch.channels_last)  # raises under vmap
        return 2 * x * g


def test_an_op_vmap_cannot_batch_falls_back_to_one_pass_per_target():
    class Net(nn.Module):
        def forward(self, x):
            return _NoVmapSquare.apply(x).flatten(1) @ torch.arange(12.0, dtype=x.dtype).view(4, 3)

    net = Net()
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0, 2], [1, 0]])
    with count_passes(net) as c:
        g = target_gradients(net(x), x, t)
    w = torch.arange(12.0, dtype=torch.float64).view(4, 3)
    want = torch.stack([torch.stack([2 * x[i].flatten() * w[:, t[i, j]] for j in range(2)])
                        for i in range(2)]).view(2, 2, 1, 2, 2)
    torch.testing.assert_close(g, want.detach())
    assert c.backward_calls >= 2  # the per-target loop ran


def test_a_batched_pass_counts_as_t_backward_passes_in_one_call():
    model = small_net()
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64)
    model(x)
    xr = x.clone().requires_grad_(True)
    with count_passes(model) as c:
        target_gradients(model(xr), xr, torch.tensor([[0, 1, 2, 3]] * 3), batched=True)
    assert (c.backward, c.backward_calls) == (3 * 4, 1)
    assert backward_width() == 1  # restored after the pass


def test_outputs_and_inputs_must_share_the_batch():
    x = torch.rand(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="B×T outputs for B×... inputs"):
        target_gradients(x.sum(1), x)


def test_the_default_on_cpu_is_one_backward_pass_per_target():
    """On CPU the loop was measured faster (benchmarks/bench_batched_targets.py),
    so the default takes T passes there; the gradients are the batched ones."""
    model = small_net()
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    t = torch.tensor([[0, 1, 2, 3]] * 3)
    with count_passes(model) as c:
        g = target_gradients(model(xr), xr, t)
    assert (c.backward, c.backward_calls) == (3 * 4, 4)
    xb = x.clone().requires_grad_(True)
    torch.testing.assert_close(g, target_gradients(model(xb), xb, t, batched=True))
