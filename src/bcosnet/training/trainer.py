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

from ..data import DataSplits, EpochSeededDataset, build_datasets, per_class_subset
from ..models import create_finetune_model, create_model, freeze_backbone
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
from .metrics import count_classifications
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
    sharded over processes when distributed.  Returns ``{"acc", "loss", "n"}``.
    Counted by :func:`~bcosnet.training.metrics.count_classifications`, as
    :func:`bcosnet.evaluation.accuracy` counts."""
    from .._utils.progress import progress as tqdm

    env = env or DistEnv()
    sampler = ShardedSampler(len(dataset), env.world_size, env.rank, shuffle=False, pad=False)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    counts = count_classifications(
        model, tqdm(loader, desc="eval", leave=False, disable=not (progress and env.is_main)),
        topk=(1,), device=env.device, dtype=dtype, autocast_dtype=autocast_dtype,
        loss=lambda out, y: combined_loss(out, y, loss)[0])
    sums = torch.tensor([counts.loss_sum, counts.hits.get(1, 0), counts.n],
                        dtype=torch.float64, device=env.device)
    all_reduce_sum(sums, env)
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
    from .resolve import resolve_config
    from .summary import print_summary

    cfg, notes = resolve_config(config, survey=datasets is None)  # settings left to the data
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = init_distributed(cfg.device)
    try:
        run = _Run(cfg, env, datasets, tqdm)
        run.resume()
        print_summary(run, notes)
        run.train_epochs()
        return run.finish()
    finally:
        env.close()


class _Run:
    """One training run, in named steps: set-up (``__init__``), :meth:`resume`,
    :meth:`train_epochs` (each epoch: :meth:`_epoch` of :meth:`_step` calls, then
    :meth:`_end_of_epoch`: evaluation and checkpoint), :meth:`finish` (final
    evaluation, checkpoint, safetensors export)."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, datasets: DataSplits | None,
                 tqdm: Any) -> None:
        self.cfg, self.env, self.tqdm = cfg, env, tqdm
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.resuming = cfg.resume and self.ckpt_path.is_file()
        if self.ckpt_path.is_file() and not cfg.resume:
            raise ValueError(
                f"{self.ckpt_path} already exists: pass resume=True to continue that run, or "
                f"choose another out_dir"
            )
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # Temp files of a write interrupted by a crash (the real files are intact).
            for stale in self.out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):
                stale.unlink(missing_ok=True)
        if cfg.optim.batch_size % env.world_size:
            raise ValueError(
                f"batch size {cfg.optim.batch_size} is not divisible by the {env.world_size} "
                f"processes; the batch size is global, choose a multiple of the process count"
            )
        self.local_bs = cfg.optim.batch_size // env.world_size
        self._build_data(datasets)
        self._build_model()
        self.epoch, self.step, self.step_in_epoch, self.train_time_prev = 0, 0, 0, 0.0
        self.log = _MetricsLog(self.out_dir, env.is_main, cfg.tensorboard)
        self.history: list[dict[str, Any]] = []
        self.info = self._record()
        self.stop_reason = "completed"
        self.epoch_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def _record(self) -> dict[str, Any]:
        """What the checkpoint and the export save besides the weights: the model
        record (``model_info``: :meth:`bcosnet.models.ModelInfo.to_dict`, with the
        data's class names, test transform and data set) and, for readers of
        bcosnet 0.1, its name, options, class count and names.  Also attached to
        the model (``self.model.model_info``)."""
        from dataclasses import replace

        from ..data import Preprocess

        d = self.data
        pre = d.preprocess or Preprocess(tuple(d.image_size), "crop", 1.0)
        info = replace(self.model.model_info, preprocess=pre, dataset=d.dataset)
        classes = list(d.classes)
        info = info.with_classes(classes if len(classes) <= self.num_classes else [])
        self.model.model_info = info
        return {"model_name": info.name, "model_options": dict(info.extra),
                "num_classes": self.num_classes, "classes": classes,
                "model_info": info.to_dict()}

    def _build_data(self, datasets: DataSplits | None) -> None:
        cfg, env, d = self.cfg, self.env, self.cfg.data
        self.data = datasets or build_datasets(
            d.dataset, d.root, image_size=d.image_size, augment=d.augment, download=d.download,
            skip_corrupt=d.skip_corrupt, channels=d.channels, synthetic_samples=d.synthetic_samples,
            synthetic_classes=d.synthetic_classes, synthetic_channels=d.synthetic_channels,
        )
        self.num_classes = cfg.model.num_classes or len(self.data.classes)
        train = self.data.train
        if d.train_per_class is not None:
            train = per_class_subset(train, d.train_per_class, seed=cfg.seed)
        self.train_ds = EpochSeededDataset(train, cfg.seed)
        self.sampler = ShardedSampler(len(self.train_ds), env.world_size, env.rank, shuffle=True,
                                      seed=cfg.seed)
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.local_bs)
        self.loader = DataLoader(
            self.train_ds, batch_size=self.local_bs, sampler=self.sampler,
            num_workers=d.num_workers, pin_memory=env.device.type == "cuda", drop_last=False,
        )

    def _build_model(self) -> None:
        cfg, env = self.cfg, self.env
        torch.manual_seed(cfg.seed)
        self.dtype, self.ac_dtype = _precision(cfg, env.device)
        if cfg.model.init_weights:
            # Built in float64 for fp64 runs, so that float64 weights load without
            # a round trip through float32.
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch.float64 if self.dtype == torch.float64 else previous)
            try:
                model = create_finetune_model(cfg.model.name, self.num_classes,
                                              cfg.model.init_weights,
                                              reset_head=cfg.model.reset_head,
                                              **cfg.model.options)
            finally:
                torch.set_default_dtype(previous)
        else:
            model = create_model(cfg.model.name, self.num_classes, **cfg.model.options)
        self.head_only = cfg.trainable == "head"
        if self.head_only:
            freeze_backbone(model)
        self.model = model.to(device=env.device, dtype=self.dtype)
        self.optimizer = _build_optimizer(self.model, cfg)
        self.limit_s = cfg.time_limit_min * 60.0 if cfg.time_limit_min else None
        self.clock = {"t0": time.monotonic(), "progress": 0.0}  # time-fitted schedule state
        self.fit_time = bool(cfg.schedule.fit_time_limit and self.limit_s is not None)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, cfg.epochs * self.steps_per_epoch,
            self.steps_per_epoch,
            progress=(lambda: self.clock["progress"]) if self.fit_time else None,
        )
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.scaler = (torch.amp.GradScaler(env.device.type)
                       if self.ac_dtype == torch.float16 and env.device.type == "cuda" else None)
        self.net: nn.Module = self.model
        if env.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None
            )
        self.autocast = (torch.autocast(env.device.type, dtype=self.ac_dtype)
                         if self.ac_dtype is not None else contextlib.nullcontext())

    # ------------------------------------------------------------------ resume / checkpoint
    def resume(self) -> None:
        """Load model, optimiser, schedule, EMA, scaler, RNG and position from the
        checkpoint when resuming."""
        if not self.resuming:
            return
        path = self.ckpt_path
        ckpt = load_checkpoint(path, map_location=self.env.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a bcosnet training checkpoint "
                             f"(format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        if ckpt.get("model_name") != self.cfg.model.name:
            raise ValueError(
                f"{path} was trained with model {ckpt.get('model_name')!r}, the config "
                f"asks for {self.cfg.model.name!r}; resume with the same model or a new out_dir"
            )
        load_model_state(self.model, ckpt["model"], what=str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.epoch, self.step, self.step_in_epoch = (ckpt["epoch"], ckpt["step"],
                                                     ckpt["step_in_epoch"])
        self.train_time_prev = float(ckpt.get("train_time_s", 0.0))

    def checkpoint(self, metrics: dict[str, float] | None = None, elapsed: float = 0.0) -> None:
        """Write the checkpoint atomically (main process only)."""
        if not self.env.is_main:
            return
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": get_rng_state(),
                "epoch": self.epoch,
                "step": self.step,
                "step_in_epoch": self.step_in_epoch,
                "train_time_s": self.train_time_prev + elapsed,
                "config": config_to_dict(self.cfg),
                "metrics": metrics or {},
                **self.info,
            },
            self.ckpt_path,
        )

    # ------------------------------------------------------------------ training
    def train_epochs(self) -> None:
        """Epochs until done, ``max_steps`` or the time limit."""
        cfg = self.cfg
        self.log.write({"event": "start", "step": self.step, "epoch": self.epoch,
                        "world_size": self.env.world_size, "resumed": self.resuming,
                        "config": config_to_dict(cfg)})
        self.t0 = self.clock["t0"] = time.monotonic()
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            self.stop_reason = "max_steps"  # resumed a finished run: not one step more
        while self.epoch < cfg.epochs and self.stop_reason == "completed":
            self._epoch()
        self.train_time = time.monotonic() - self.t0

    def _epoch(self) -> None:
        cfg, env = self.cfg, self.env
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * self.local_bs)
        self.train_ds.set_epoch(self.epoch)
        self.net.train()
        if self.head_only:  # the frozen backbone keeps its BatchNorm statistics
            self.model.eval()
            self.model.get_classifier().train()
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss·n, correct, n
        t_epoch, seen = time.monotonic(), 0
        run_loss = run_correct = 0.0
        bar = self.tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch,
                        desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                        disable=not (cfg.progress and env.is_main), leave=False)
        for x, y in self.loader:
            batch, (b_loss, b_correct, b_n) = self._step(x, y)
            sums += batch
            run_loss, run_correct = run_loss + b_loss, run_correct + b_correct
            seen += int(b_n)
            ips = seen / max(time.monotonic() - t_epoch, 1e-9)
            if env.is_main:
                bar.update(1)
                bar.set_postfix(loss=f"{run_loss / max(seen, 1):.4f}",
                                acc=f"{run_correct / max(seen, 1):.3f}",
                                img_s=f"{ips:.0f}", refresh=False)
            if cfg.log_every_steps and self.step % cfg.log_every_steps == 0:
                self.log.write({"event": "train", "epoch": self.epoch, "step": self.step,
                                "loss": b_loss / b_n, "acc": b_correct / b_n,
                                "lr": self.optimizer.param_groups[0]["lr"], "img_per_s": ips})
            if cfg.checkpoint_every_steps and self.step % cfg.checkpoint_every_steps == 0:
                self.checkpoint(elapsed=time.monotonic() - self.t0)
            self.stop_reason = self._stop_reason()
            if self.stop_reason != "completed":
                break
        bar.close()
        if sums[2] > 0:
            self.epoch_stats = {"train_loss": sums[0].item() / sums[2].item(),
                                "train_acc": sums[1].item() / sums[2].item()}
        self._end_of_epoch(t_epoch, seen)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """One optimiser step; returns (loss·n, correct, n) summed over processes, as a
        tensor and as numbers.  A non-finite loss stops the run *before* the update."""
        cfg, env = self.cfg, self.env
        x = x.to(env.device, self.dtype, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        with self.autocast:
            out = self.net(x)
            loss, logits = combined_loss(out, y, cfg.loss, cfg.aux_weight)
        batch = torch.stack([
            loss.detach().double() * len(y),
            (logits.detach().argmax(1) == y).sum().double(),
            torch.tensor(float(len(y)), dtype=torch.float64, device=env.device),
            (~torch.isfinite(loss.detach())).double(),
        ])
        all_reduce_sum(batch, env)
        # One host sync per step for all four numbers (loss, correct, n, non-finite).
        values = batch.tolist()
        if values[3] > 0:
            msg = (f"non-finite loss ({loss.item()}) at epoch {self.epoch + 1}, step "
                   f"{self.step + 1}; stopped without updating the weights. The last good "
                   f"checkpoint is "
                   + (f"{self.ckpt_path} (step {_ckpt_step(self.ckpt_path)})"
                      if self.ckpt_path.is_file() else "none (no checkpoint was written yet)")
                   + ". Lower the learning rate, enable grad_clip or check the data.")
            self.log.write({"event": "error", "step": self.step, "epoch": self.epoch,
                            "message": msg})
            self.log.close()
            raise NonFiniteLossError(msg)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.fit_time:
            # Every process must use the same learning rate: share the largest clock.
            self.clock["progress"] = _max_over_processes(
                (time.monotonic() - self.t0) / self.limit_s, env)  # type: ignore[operator]
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.step_in_epoch += 1
        return batch[:3], values[:3]

    def _stop_reason(self) -> str:
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return "max_steps"
        if self.limit_s is not None and (
            self.clock["progress"] >= 1.0 if self.fit_time
            else broadcast_flag(time.monotonic() - self.t0 >= self.limit_s, self.env)
        ):
            return "time_limit"
        return "completed"

    def _end_of_epoch(self, t_epoch: float, seen: int) -> None:
        """A finished epoch: evaluate when due, log, checkpoint.  An epoch cut short
        by max_steps / the time limit only checkpoints its position."""
        cfg = self.cfg
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            rec = {"event": "epoch", "epoch": self.epoch, "step": self.step, **self.epoch_stats,
                   "epoch_time_s": time.monotonic() - t_epoch,
                   "img_per_s": seen / max(time.monotonic() - t_epoch, 1e-9)}
            final = self.epoch >= cfg.epochs or self.stop_reason != "completed"
            if cfg.eval_every_epochs and self.epoch % cfg.eval_every_epochs == 0 and not final:
                ev = self.evaluate()
                rec.update(test_acc=ev["acc"], test_loss=ev["loss"])
            self.history.append(rec)
            self.log.write(rec)
            if self.env.is_main:
                self.tqdm.write(_fmt_record(rec))
            self.checkpoint(elapsed=time.monotonic() - self.t0)
        elif self.stop_reason != "completed":
            self.checkpoint(elapsed=time.monotonic() - self.t0)

    # ------------------------------------------------------------------ evaluation / finish
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        return evaluate_model(
            self.eval_model, self.data.test, env=self.env, batch_size=cfg.data.eval_batch_size,
            dtype=self.dtype, autocast_dtype=self.ac_dtype, loss=cfg.loss,
            num_workers=cfg.data.num_workers, progress=cfg.progress)

    def finish(self) -> TrainResult:
        """Final evaluation, checkpoint with the metrics, safetensors export, result."""
        t1 = time.monotonic()
        ev = self.evaluate()
        eval_time = time.monotonic() - t1
        metrics = {"test_acc": ev["acc"], "test_loss": ev["loss"], "test_n": ev["n"],
                   **self.epoch_stats}
        self.checkpoint(metrics, elapsed=self.train_time)
        weights: Path | None = None
        if self.env.is_main:
            weights = export_safetensors(
                {k: v.to(torch.float32) if v.is_floating_point() else v
                 for k, v in self.eval_model.state_dict().items()},
                self.out_dir / WEIGHTS_NAME, self.info,
            )
        rec = {"event": "final", "epoch": self.epoch, "step": self.step,
               "stop_reason": self.stop_reason, "train_time_s": self.train_time,
               "eval_time_s": eval_time, **metrics}
        self.history.append(rec)
        self.log.write(rec)
        self.log.close()
        self.env.barrier()
        return TrainResult(self.out_dir, self.ckpt_path, weights, metrics, self.epoch, self.step,
                           self.train_time, eval_time, self.stop_reason, self.history)


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
