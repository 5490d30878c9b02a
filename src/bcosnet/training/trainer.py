"""The trainer: one code path for 1 process and N (``torchrun``).

    from bcosnet.training import get_preset, train
    cfg = get_preset("fmnist"); cfg.epochs = 1
    result = train(cfg)            # TrainResult: checkpoint, weights, metrics
    model = load_checkpoint_model(result.checkpoint)

Per optimiser step: forward (autocast where the device supports it), loss (BCE on
one-hot targets by default; ``(logits, aux)`` outputs add ``aux_weight·L(aux)``),
a finiteness check (a NaN/Inf loss stops the run *before* the step, so the last
checkpoint on disk stays the last good one), backward, optional clipping,
optimiser and schedule step, optional EMA update.

Reproducibility: data order comes from ``(seed, epoch)`` (:class:`ShardedSampler`)
and augmentation from ``(seed, epoch, index)`` (:class:`EpochSeededDataset`), so
the result does not depend on the number of processes or on interruptions;
checkpoints store model, optimiser, schedule, EMA, scaler, RNG states and the
position (epoch, step in epoch) for exact ``resume``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import DataSplits, EpochSeededDataset, build_datasets
from ..models import create_model
from .checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    export_safetensors,
    get_rng_state,
    load_checkpoint,
    load_model_state,
    set_rng_state,
)
from .config import TrainConfig, config_to_dict
from .distributed import DistEnv, ShardedSampler, all_reduce_sum, broadcast_flag, init_distributed
from .ema import ModelEMA
from .losses import combined_loss
from .schedules import build_scheduler

__all__ = ["TrainResult", "NonFiniteLossError", "train", "evaluate_model", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.safetensors"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the run stopped and the last good checkpoint was kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        out_dir: the run folder.
        checkpoint: the last training checkpoint (``out_dir/checkpoint.pt``).
        weights: exported inference weights (``out_dir/model.safetensors``).
        metrics: final metrics: ``test_acc`` (fraction), ``test_loss``,
            ``train_loss``/``train_acc`` (last epoch's running means).
        epoch: completed epochs; ``step``: optimiser steps in total.
        train_time_s: training wall time of this invocation (excluding data
            loading and the final evaluation); ``eval_time_s``: the final evaluation.
        stop_reason: ``"completed"``, ``"time_limit"`` or ``"max_steps"``.
        history: the per-epoch/-evaluation records also written to ``metrics.jsonl``.
    """

    out_dir: Path
    checkpoint: Path
    weights: Path | None
    metrics: dict[str, float]
    epoch: int
    step: int
    train_time_s: float
    eval_time_s: float
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
class _MetricsLog:
    """JSONL metrics log (+ optional TensorBoard), written by the main process."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                warnings.warn("tensorboard is not installed (pip install tensorboard); "
                              "logging to metrics.jsonl only", stacklevel=3)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time", "epoch"):
                    self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(parameter dtype, autocast dtype or None)."""
    p = cfg.precision
    if p == "fp64":
        return torch.float64, None
    if p == "fp32":
        return torch.float32, None
    if p == "auto":
        if device.type == "cuda":
            return torch.float32, (
                torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            )
        return torch.float32, None
    return torch.float32, torch.bfloat16 if p == "bf16" else torch.float16


def _build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps,
                                weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps,
                                 weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                           weight_decay=o.weight_decay)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    env: DistEnv | None = None,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
    autocast_dtype: torch.dtype | None = None,
    loss: str = "bce",
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy (fraction) and mean loss of ``model`` on ``dataset``,
    sharded over processes when distributed.  Returns ``{"acc", "loss", "n"}``."""
    from .._utils.progress import progress as tqdm

    env = env or DistEnv()
    was_training = model.training
    model.eval()
    sampler = ShardedSampler(len(dataset), env.world_size, env.rank, shuffle=False, pad=False)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    dev = env.device
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    ac = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
          else contextlib.nullcontext())
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not (progress and env.is_main)):
        x, y = x.to(dev, dtype), y.to(dev)
        with ac:
            out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        lval, _ = combined_loss(out, y, loss)
        sums[0] += lval.double() * len(y)
        sums[1] += (out.argmax(1) == y).sum()
        sums[2] += len(y)
    all_reduce_sum(sums, env)
    model.train(was_training)
    n = max(sums[2].item(), 1.0)
    return {"acc": sums[1].item() / n, "loss": sums[0].item() / n, "n": int(sums[2].item())}


# ----------------------------------------------------------------------------- train
def train(config: TrainConfig, *, datasets: DataSplits | None = None) -> TrainResult:
    """Train (or resume) the run described by ``config``; see the module docstring.

    Args:
        config: a validated :class:`TrainConfig` (e.g. from :func:`get_preset`).
        datasets: use these train/test sets instead of ``config.data``.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (the last checkpoint is kept).
        ValueError / FileNotFoundError: bad config, data or checkpoint.
    """
    from .._utils.progress import progress as tqdm  # plain lines when not on a terminal

    cfg = config.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, env, datasets, tqdm)
    finally:
        env.close()


def _train(cfg: TrainConfig, env: DistEnv, datasets: DataSplits | None, tqdm: Any) -> TrainResult:
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    resuming = cfg.resume and ckpt_path.is_file()
    if ckpt_path.is_file() and not cfg.resume:
        raise ValueError(
            f"{ckpt_path} already exists: pass resume=True (CLI: --resume) to continue that run, "
            f"or choose another out_dir (CLI: --out-dir)"
        )
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        # Temp files of a write interrupted by a crash (the real files are intact).
        for stale in out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)

    if cfg.optim.batch_size % env.world_size:
        raise ValueError(
            f"batch size {cfg.optim.batch_size} is not divisible by the {env.world_size} "
            f"processes; the batch size is global, choose a multiple of the process count"
        )
    local_bs = cfg.optim.batch_size // env.world_size

    # ---- data
    d = cfg.data
    data = datasets or build_datasets(
        d.dataset, d.root, image_size=d.image_size, augment=d.augment, download=d.download,
        skip_corrupt=d.skip_corrupt, synthetic_samples=d.synthetic_samples,
        synthetic_classes=d.synthetic_classes, synthetic_channels=d.synthetic_channels,
    )
    num_classes = cfg.model.num_classes or len(data.classes)
    train_ds = EpochSeededDataset(data.train, cfg.seed)
    sampler = ShardedSampler(len(train_ds), env.world_size, env.rank, shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / local_bs)
    total_steps = cfg.epochs * steps_per_epoch

    # ---- model, optimiser, schedule
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, num_classes, **cfg.model.options)
    dtype, ac_dtype = _precision(cfg, env.device)
    model = model.to(device=env.device, dtype=dtype)
    optimizer = _build_optimizer(model, cfg)
    limit_s = cfg.time_limit_min * 60.0 if cfg.time_limit_min else None
    clock = {"t0": time.monotonic(), "progress": 0.0}  # time-fitted schedule state
    fit_time = cfg.schedule.fit_time_limit and limit_s is not None
    scheduler = build_scheduler(
        optimizer, cfg.schedule, total_steps, steps_per_epoch,
        progress=(lambda: clock["progress"]) if fit_time else None,
    )
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None
    scaler = (torch.amp.GradScaler(env.device.type)
              if ac_dtype == torch.float16 and env.device.type == "cuda" else None)

    epoch, step, step_in_epoch, train_time_prev = 0, 0, 0, 0.0
    if resuming:
        ckpt = load_checkpoint(ckpt_path, map_location=env.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a bcosnet training checkpoint "
                             f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        if ckpt.get("model_name") != cfg.model.name:
            raise ValueError(
                f"{ckpt_path} was trained with model {ckpt.get('model_name')!r}, the config "
                f"asks for {cfg.model.name!r}; resume with the same model or a new out_dir"
            )
        load_model_state(model, ckpt["model"], what=str(ckpt_path))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, step, step_in_epoch = ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]
        train_time_prev = float(ckpt.get("train_time_s", 0.0))

    net: nn.Module = model
    if env.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    loader = DataLoader(
        train_ds, batch_size=local_bs, sampler=sampler, num_workers=cfg.data.num_workers,
        pin_memory=env.device.type == "cuda", drop_last=False,
    )
    log = _MetricsLog(out_dir, env.is_main, cfg.tensorboard)
    history: list[dict[str, Any]] = []
    info = {
        "model_name": cfg.model.name,
        "model_options": dict(cfg.model.options),
        "num_classes": num_classes,
        "classes": list(data.classes),
    }

    def save(metrics: dict[str, float] | None = None, elapsed: float = 0.0) -> None:
        if not env.is_main:
            return
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": get_rng_state(),
                "epoch": epoch,
                "step": step,
                "step_in_epoch": step_in_epoch,
                "train_time_s": train_time_prev + elapsed,
                "config": config_to_dict(cfg),
                "metrics": metrics or {},
                **info,
            },
            ckpt_path,
        )

    log.write({"event": "start", "step": step, "epoch": epoch, "world_size": env.world_size,
               "resumed": resuming, "config": config_to_dict(cfg)})
    ac = (torch.autocast(env.device.type, dtype=ac_dtype) if ac_dtype is not None
          else contextlib.nullcontext())
    stop_reason = "completed"
    t0 = clock["t0"] = time.monotonic()
    epoch_stats: dict[str, float] = {}

    while epoch < cfg.epochs and stop_reason == "completed":
        sampler.set_epoch(epoch, start=step_in_epoch * local_bs)
        train_ds.set_epoch(epoch)
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss·n, correct, n
        t_epoch, seen = time.monotonic(), 0
        run_loss = run_correct = 0.0
        bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/"
                   f"{cfg.epochs}", disable=not (cfg.progress and env.is_main), leave=False)
        for x, y in loader:
            x = x.to(env.device, dtype, non_blocking=True)
            y = y.to(env.device, non_blocking=True)
            with ac:
                out = net(x)
                loss, logits = combined_loss(out, y, cfg.loss, cfg.aux_weight)
            batch = torch.stack([
                loss.detach().double() * len(y),
                (logits.detach().argmax(1) == y).sum().double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=env.device),
                (~torch.isfinite(loss.detach())).double(),
            ])
            all_reduce_sum(batch, env)
            # One host sync per step for all four numbers (loss, correct, n, non-finite).
            b_loss, b_correct, b_n, b_bad = batch.tolist()
            if b_bad > 0:
                msg = (f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1}; "
                       f"stopped without updating the weights. The last good checkpoint is "
                       + (f"{ckpt_path} (step {_ckpt_step(ckpt_path)})" if ckpt_path.is_file()
                          else "none (no checkpoint was written yet)")
                       + ". Lower the learning rate, enable grad_clip or check the data.")
                log.write({"event": "error", "step": step, "epoch": epoch, "message": msg})
                log.close()
                raise NonFiniteLossError(msg)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if fit_time:
                # Every process must use the same learning rate: share the largest clock.
                clock["progress"] = _max_over_processes((time.monotonic() - t0) / limit_s, env)
            scheduler.step()
            if ema is not None:
                ema.update(model)
            step += 1
            step_in_epoch += 1
            sums += batch[:3]
            run_loss, run_correct = run_loss + b_loss, run_correct + b_correct
            seen += int(b_n)
            ips = seen / max(time.monotonic() - t_epoch, 1e-9)
            if env.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{run_loss / max(seen, 1):.4f}",
                                acc=f"{run_correct / max(seen, 1):.3f}",
                                img_s=f"{ips:.0f}", refresh=False)
            if cfg.log_every_steps and step % cfg.log_every_steps == 0:
                log.write({"event": "train", "epoch": epoch, "step": step,
                           "loss": b_loss / b_n,
                           "acc": b_correct / b_n,
                           "lr": optimizer.param_groups[0]["lr"], "img_per_s": ips})
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:
                save(elapsed=time.monotonic() - t0)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop_reason = "max_steps"
            elif limit_s is not None and (
                clock["progress"] >= 1.0 if fit_time
                else broadcast_flag(time.monotonic() - t0 >= limit_s, env)
            ):
                stop_reason = "time_limit"
            if stop_reason != "completed":
                break
        bar.close()
        if sums[2] > 0:
            epoch_stats = {"train_loss": sums[0].item() / sums[2].item(),
                           "train_acc": sums[1].item() / sums[2].item()}
        if step_in_epoch >= steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
            rec = {"event": "epoch", "epoch": epoch, "step": step, **epoch_stats,
                   "epoch_time_s": time.monotonic() - t_epoch,
                   "img_per_s": seen / max(time.monotonic() - t_epoch, 1e-9)}
            final = epoch >= cfg.epochs or stop_reason != "completed"
            if cfg.eval_every_epochs and epoch % cfg.eval_every_epochs == 0 and not final:
                ev = evaluate_model(
                    ema.module if ema is not None else model, data.test, env=env,
                    batch_size=cfg.data.eval_batch_size, dtype=dtype, autocast_dtype=ac_dtype,
                    loss=cfg.loss, num_workers=cfg.data.num_workers, progress=cfg.progress)
                rec.update(test_acc=ev["acc"], test_loss=ev["loss"])
            history.append(rec)
            log.write(rec)
            if env.is_main:
                tqdm.write(_fmt_record(rec))
            save(elapsed=time.monotonic() - t0)
        elif stop_reason != "completed":
            save(elapsed=time.monotonic() - t0)
    train_time = time.monotonic() - t0

    # ---- final evaluation, checkpoint, export
    t1 = time.monotonic()
    eval_model = ema.module if ema is not None else model
    ev = evaluate_model(eval_model, data.test, env=env, batch_size=cfg.data.eval_batch_size,
                        dtype=dtype, autocast_dtype=ac_dtype, loss=cfg.loss,
                        num_workers=cfg.data.num_workers, progress=cfg.progress)
    eval_time = time.monotonic() - t1
    metrics = {"test_acc": ev["acc"], "test_loss": ev["loss"], "test_n": ev["n"], **epoch_stats}
    save(metrics, elapsed=train_time)
    weights: Path | None = None
    if env.is_main:
        weights = export_safetensors(
            {k: v.to(torch.float32) if v.is_floating_point() else v
             for k, v in eval_model.state_dict().items()},
            out_dir / WEIGHTS_NAME, info,
        )
    rec = {"event": "final", "epoch": epoch, "step": step, "stop_reason": stop_reason,
           "train_time_s": train_time, "eval_time_s": eval_time, **metrics}
    history.append(rec)
    log.write(rec)
    log.close()
    env.barrier()
    return TrainResult(out_dir, ckpt_path, weights, metrics, epoch, step, train_time, eval_time,
                       stop_reason, history)


def _max_over_processes(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def _ckpt_step(path: Path) -> Any:
    try:
        return load_checkpoint(path).get("step")
    except (ValueError, FileNotFoundError):
        return "unreadable"


def _fmt_record(rec: dict[str, Any]) -> str:
    parts = [f"epoch {rec['epoch']}"]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "img_per_s", "epoch_time_s"):
        if k in rec:
            parts.append(f"{k} {rec[k]:.4g}")
    return "  ".join(parts)
