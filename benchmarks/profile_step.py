"""Per-op profile (torch.profiler) of one model's training step or no-grad forward.

    python benchmarks/profile_step.py --model resnet18_v2 --size 112 --batch 32 [--mode train|infer]
                                      [--steps 3] [--rows 15] [--threads 2] [--channels-last]

Prints the top ``--rows`` ops by self CPU time (Adam step and BCE loss included in
train mode, as in bench_training.py).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import bcosnet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18_v2")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true",
                   help="model and input in channels-last memory format (as the main job "
                        "evaluates)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    kw = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = bcosnet.create_model(args.model, **kw).to(device)
    in_ch = getattr(getattr(model, "model_info", None), "in_channels", None) or getattr(
        model, "in_channels", 3)
    x = torch.rand(args.batch, in_ch, args.size, args.size, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        if args.mode == "infer":
            model.eval()
            with torch.no_grad():
                model(x)
            return
        model.train()
        out = model(x)
        y = torch.zeros_like(out)
        y[:, 0] = 1
        loss = F.binary_cross_entropy_with_logits(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(args.steps):
            step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.model} {args.mode}, batch {args.batch}, {args.size} px, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, {device}"
          + (", channels-last" if args.channels_last else ""))
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
