"""Per-target gradients: the one helper of ``explain``, Grad, Input×Gradient,
Integrated Gradients, DeepLIFT and Grad-CAM.

As captum's ``compute_gradients``: the explained outputs are selected per
sample (``outputs.gather(1, targets)``) and one ``autograd.grad`` serves the
whole batch — the rows of a batch do not interact (eval mode), so the gradient
of a column's sum with respect to row ``i`` of the input is that of row ``i``'s
own output.  Several targets per sample share the forward pass and take either
one backward pass per target through the same graph (the default on CPU) or one
backward pass batched over the targets (``is_grads_batched``: vmap over one-hot
output gradients; the default on other devices, with the loop as its fallback).
On CPU the batched pass was measured slower: 1.9–2.0× for Integrated Gradients'
9 targets, 1.0–1.1× for the one-pass methods
(``benchmarks/bench_batched_targets.py``, docs/attribution.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["backward_width", "target_gradients"]

_WIDTH: ContextVar[int] = ContextVar("bcosnet_backward_width", default=1)


def backward_width() -> int:
    """How many targets the backward pass now running in this thread carries: T
    inside :func:`target_gradients`' batched pass (a hook on the model output then
    runs once for T backward passes), 1 otherwise.  ``count_passes`` reads it."""
    return _WIDTH.get()


@contextlib.contextmanager
def _width(t: int) -> Iterator[None]:
    token = _WIDTH.set(t)
    try:
        yield
    finally:
        _WIDTH.reset(token)


def target_gradients(
    outputs: Tensor, inputs: Tensor, targets: Tensor | None = None, *,
    batched: bool | None = None,
) -> Tensor:
    """Gradients of T outputs per sample, B×T×(``inputs``' shape[1:]).

    Entry ``[i, j]`` is ``∂ outputs[i, targets[i, j]] / ∂ inputs[i]``; without
    ``targets``, ``outputs`` is already the B×T selection (e.g. neuron values).
    ``outputs`` and ``inputs`` share the batch axis B, and ``inputs`` is a leaf
    (or part) of the graph that made ``outputs``.  Where ``inputs`` does not
    reach the outputs the gradient is zero.

    Args:
        outputs: B×K scores (B×T when ``targets`` is None).
        inputs: B×... tensor requiring gradients.
        targets: B×T long indices into ``outputs``' second axis.
        batched: ``True``: T > 1 targets in one backward pass batched over the
            targets (an op of the model without a batching rule falls back to
            one backward pass per target); ``False``: one pass per target;
            ``None`` (default): ``False`` for inputs on the CPU, where the loop
            is the faster, ``True`` elsewhere.
    """
    values = outputs if targets is None else outputs.gather(1, targets)
    if values.dim() != 2 or values.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"target_gradients needs B×T outputs for B×... inputs, got {tuple(values.shape)} "
            f"and {tuple(inputs.shape)}"
        )
    if batched is None:
        batched = inputs.device.type != "cpu"
    if batched and values.shape[1] > 1:
        grads = _batched_gradients(values, inputs)
        if grads is not None:
            return grads
    return _looped_gradients(values, inputs)


def _batched_gradients(values: Tensor, inputs: Tensor) -> Tensor | None:
    """One backward pass over the T one-hot output gradients, or None when the
    model has an op vmap cannot batch (the graph is kept for the fallback)."""
    t_count = values.shape[1]
    eye = torch.eye(t_count, dtype=values.dtype, device=values.device)
    grad_outputs = eye[:, None, :].expand(t_count, *values.shape)  # T×B×T
    try:
        with _width(t_count):
            (g,) = torch.autograd.grad(values, inputs, grad_outputs=grad_outputs,
                                       retain_graph=True, allow_unused=True,
                                       is_grads_batched=True)
    except (RuntimeError, NotImplementedError):
        return None
    if g is None:
        return inputs.new_zeros(inputs.shape[0], t_count, *inputs.shape[1:])
    return g.transpose(0, 1)


def _looped_gradients(values: Tensor, inputs: Tensor) -> Tensor:
    """One backward pass per target through the same graph."""
    t_count = values.shape[1]
    grads = []
    for j in range(t_count):
        (g,) = torch.autograd.grad(values[:, j].sum(), inputs, retain_graph=j < t_count - 1,
                                   allow_unused=True)
        grads.append(torch.zeros_like(inputs) if g is None else g)
    return torch.stack(grads, 1)
