"""Correctness checks that matter on a GPU, run by ``scripts/gpu_check.sh``.

    python benchmarks/gpu_check.py checks --out DIR      # writes DIR/checks.md, exit 1 on a failure
    python -m torch.distributed.run --standalone --nproc_per_node 1 \\
        benchmarks/gpu_check.py ddp                      # one NCCL DDP step + a trainer run

Checks (each a row: name | PASS/FAIL/SKIP | detail):

* layer agreement with the `bcos` package (BcosConv2d, max_out 1 and 2): forward
  and input gradient on CUDA, float32, against the reference layer with the same
  weights (skipped when `bcos` is not importable);
* CUDA against CPU float64: the layer and ``explain`` (completeness
  ``Σ contributions + bias = logit`` on CUDA in float32 and float64; explanation
  on CUDA against the CPU float64 one);
* AMP training steps (fp16 with GradScaler, bf16) of fmnist_bcos and resnet18_v2:
  finite losses, parameters change;
* reduced-precision explanations (fp16/bf16 autocast): completeness error
  relative to ``|logit| + Σ|contributions|``, and the distance to the fp32 one;
* ``torch.compile`` (inductor) training step and inference of fmnist_bcos against eager.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import bcosnet
from bcosnet.nn import BcosConv2d

ROWS: list[tuple[str, str, str]] = []


def check(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def deco(fn: Callable[[], str]) -> Callable[[], str]:
        def run() -> str:
            t0 = time.perf_counter()
            try:
                detail = fn()
                status = "SKIP" if detail.startswith("SKIP") else "PASS"
            except AssertionError as e:
                status, detail = "FAIL", str(e)
            except Exception as e:  # noqa: BLE001 — every failure becomes a row
                status, detail = "FAIL", f"{type(e).__name__}: {e}"
                traceback.print_exc()
            detail = f"{detail} ({time.perf_counter() - t0:.1f} s)"
            ROWS.append((name, status, detail.replace("|", "/").replace("\n", " ")))
            print(f"[{status}] {name}: {detail}", flush=True)
            return status
        run.__name__ = fn.__name__
        CHECKS.append(run)
        return run
    return deco


CHECKS: list[Callable[[], str]] = []
DEV = torch.device("cuda")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def _completeness(e: bcosnet.Explanation) -> float:
    scale = e.logits.abs() + e.contributions.abs().sum((-2, -1))
    return (e.completeness_error.abs() / scale.clamp_min(1e-30)).max().item()


def _v2_model(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """resnet18_v2 with random weights and running statistics from one batch."""
    torch.manual_seed(0)
    m = bcosnet.create_model("resnet18_v2", num_classes=10)
    for mod in m.modules():
        if getattr(mod, "running_var", None) is not None:
            mod.momentum = 1.0
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
    m.train()
    with torch.no_grad():
        m(torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return m.eval().to(device, dtype)


@check("layer vs bcos package (CUDA fp32)")
def layer_vs_bcos() -> str:
    try:
        from bcos.modules import BcosConv2d as Ref
    except ImportError:
        return "SKIP: bcos not importable"
    worst = 0.0
    for mo in (1, 2):
        torch.manual_seed(0)
        ours = BcosConv2d(32, 16, 3, padding=1, b=2, max_out=mo).to(DEV)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = Ref(32, 16, 3, padding=1, b=2, max_out=mo).to(DEV)
        with torch.no_grad():
            ref.linear.weight.copy_(ours.weight)
        x = torch.randn(4, 32, 20, 20, device=DEV, requires_grad=True)
        a, b = ours(x), ref(x)
        (ga,) = torch.autograd.grad(a.sum(), x)
        (gb,) = torch.autograd.grad(b.sum(), x)
        worst = max(worst, _rel(a, b), _rel(ga, gb))
    assert worst < 1e-4, f"relative difference {worst:.2e} ≥ 1e-4"
    return f"max relative difference (output, input grad) {worst:.1e}"


@check("layer CUDA fp32 vs CPU fp64 (fwd, grads)")
def layer_vs_cpu() -> str:
    worst = 0.0
    for mo, scale in ((1, None), (2, 3.0)):
        torch.manual_seed(0)
        layer = BcosConv2d(16, 8, 3, padding=1, stride=2, b=2, max_out=mo, scale=scale).double()
        x = torch.randn(4, 16, 17, 17, dtype=torch.float64, requires_grad=True)
        out = layer(x)
        gx, gw = torch.autograd.grad(out.square().sum(), (x, layer.weight))
        lg = layer.to(DEV, torch.float32)
        xg = x.detach().to(DEV, torch.float32).requires_grad_(True)
        og = lg(xg)
        gxg, gwg = torch.autograd.grad(og.square().sum(), (xg, lg.weight))
        worst = max(worst, _rel(og.cpu(), out), _rel(gxg.cpu(), gx), _rel(gwg.cpu(), gw))
    assert worst < 1e-4, f"relative difference {worst:.2e} ≥ 1e-4"
    return f"max relative difference {worst:.1e}"


@check("explain completeness on CUDA fp32/fp64, vs CPU fp64")
def completeness_cuda() -> str:
    out = []
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ref = bcosnet.explain(_v2_model(torch.device("cpu"), torch.float64), x.double(), ("topk", 2))
    # fp32 is compared with TF32 off (true fp32 convolutions); TF32 (cuDNN's default for
    # convolutions on Ampere and later) is reported beside it, not asserted.
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        for dtype, tol, use_tf32 in ((torch.float64, 1e-10, False), (torch.float32, 1e-4, False),
                                     (torch.float32, None, True)):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = use_tf32
            e = bcosnet.explain(_v2_model(DEV, dtype), x.to(DEV, dtype), ("topk", 2))
            c = _completeness(e)
            d = _rel(e.weights.cpu(), ref.weights)
            name = str(dtype)[6:] + (" (TF32 on)" if use_tf32 else "")
            if tol is not None:
                assert c < tol, f"{name}: completeness error {c:.2e} ≥ {tol:g}"
                assert d < 1e-3, f"{name}: W differs from CPU fp64 by {d:.2e}"
            out.append(f"{name}: completeness {c:.1e}, ‖W−W_cpu64‖/‖W‖ {d:.1e}")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return "; ".join(out)


@check("AMP training steps (fp16+GradScaler, bf16)")
def amp_training() -> str:
    out = []
    for name, size in (("fmnist_bcos", 28), ("resnet18_v2", 64)):
        for dtype in (torch.float16, torch.bfloat16):
            torch.manual_seed(0)
            m = bcosnet.create_model(name, num_classes=10).to(DEV).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-3)
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
            x = torch.rand(16, 1 if name == "fmnist_bcos" else 3, size, size, device=DEV)
            y = torch.arange(16, device=DEV) % 10
            before = [p.detach().clone() for p in m.parameters()]
            losses = []
            for _ in range(3):
                with torch.autocast("cuda", dtype):
                    logits = m(x)
                    loss = F.binary_cross_entropy_with_logits(
                        logits.float(), F.one_hot(y, 10).float())
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(loss.item())
            assert all(map(torch.isfinite, map(torch.tensor, losses))), f"{name} {dtype}: {losses}"
            moved = sum(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
            assert moved > 0, f"{name} {dtype}: no parameter changed"
            out.append(f"{name} {str(dtype)[6:]} loss {losses[0]:.3f}→{losses[-1]:.3f}")
    return "; ".join(out)


@check("reduced-precision explanations (autocast fp16/bf16)")
def amp_explain() -> str:
    out = []
    x = torch.rand(8, 3, 64, 64, device=DEV, generator=torch.Generator(DEV).manual_seed(3))
    m = _v2_model(DEV)
    e32 = bcosnet.explain(m, x, ("topk", 2))
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype):
            e = bcosnet.explain(m, x, ("topk", 2))
        c, d = _completeness(e), _rel(e.weights, e32.weights)
        assert c < 5e-2, f"{dtype}: relative completeness error {c:.2e} ≥ 5e-2"
        out.append(f"{str(dtype)[6:]}: rel. completeness {c:.1e}, ‖W−W_fp32‖/‖W‖ {d:.1e}")
    return "; ".join(out)


@check("torch.compile (inductor): training step and inference = eager")
def compiled_model() -> str:
    if os.environ.get("GPU_CHECK_NO_COMPILE"):
        return "SKIP: GPU_CHECK_NO_COMPILE set"
    torch.manual_seed(0)
    m = bcosnet.create_model("fmnist_bcos").to(DEV)
    cm = torch.compile(m)
    x = torch.rand(16, 1, 28, 28, device=DEV)
    y = torch.arange(16, device=DEV) % 10
    grads = []
    for net in (m, cm):
        m.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    dg = _rel(grads[1], grads[0])
    m.eval()
    with torch.no_grad():
        do = _rel(cm(x), m(x))
    assert dg < 1e-4 and do < 1e-5, f"grads {dg:.2e}, outputs {do:.2e}"
    return f"‖g_compiled − g_eager‖/‖g‖ {dg:.1e}, outputs {do:.1e}"


def run_checks(out_dir: Path) -> int:
    if not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    for fn in CHECKS:
        fn()
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["| check | result | detail |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {d} |" for n, s, d in ROWS]
    (out_dir / "checks.md").write_text("\n".join(lines) + "\n")
    return int(any(s == "FAIL" for _, s, _ in ROWS))


def run_ddp() -> int:
    """One DDP step over NCCL (world size as launched), grads equal to a plain step;
    then the trainer's smoke run with the process group up."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    dev = torch.device("cuda", local)
    torch.manual_seed(0)
    m = bcosnet.create_model("resnet18_v2", num_classes=10).to(dev).train()
    plain = bcosnet.create_model("resnet18_v2", num_classes=10).to(dev).train()
    plain.load_state_dict(m.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(m, device_ids=[local])
    x = torch.rand(8, 3, 64, 64, device=dev)
    y = torch.arange(8, device=dev) % 10
    for net in (ddp, plain):
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
    world = dist.get_world_size()
    worst = max(_rel(a.grad, b.grad) for a, b in zip(m.parameters(), plain.parameters()))
    t = torch.ones(1, device=dev)
    dist.all_reduce(t)
    ok = t.item() == world and (world > 1 or worst < 1e-3)
    print(f"[{'PASS' if ok else 'FAIL'}] NCCL DDP step: world {world}, all_reduce {t.item():g}, "
          f"max rel. grad difference to a plain step {worst:.1e}", flush=True)
    from bcosnet.training import get_preset, train

    cfg = get_preset("smoke")
    cfg.out_dir = os.environ.get("GPU_CHECK_RUN_DIR", "gpu_check_out/smoke_run")
    cfg.progress = False
    cfg.device = "cuda"
    res = train(cfg)
    acc = res.metrics.get("test_acc", float("nan"))
    print(f"[PASS] trainer smoke run on CUDA (precision auto, NCCL group up): test_acc {acc:.3f}",
          flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("checks", "ddp"))
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    args = p.parse_args()
    sys.exit(run_checks(Path(args.out)) if args.what == "checks" else run_ddp())


if __name__ == "__main__":
    main()
