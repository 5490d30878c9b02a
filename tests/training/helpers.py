"""Helpers shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from bcosnet.training import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)


def tiny_config(out_dir: Path, **kw) -> TrainConfig:
    """fmnist_bcos (width 8, T = 10) on 64 synthetic 12×12 images, float64, 1 thread."""
    cfg = TrainConfig(
        model=ModelConfig("fmnist_bcos", options={"width": 8, "temperature": 10.0}),
        data=DataConfig(dataset="synthetic", image_size=12, synthetic_samples=64,
                        synthetic_classes=4, eval_batch_size=64),
        optim=OptimConfig(name="adam", lr=1e-2, batch_size=16),
        schedule=ScheduleConfig(name="cosine", min_lr=1e-4),
        epochs=2,
        precision="fp64",
        out_dir=str(out_dir),
        progress=False,
        threads=1,
        log_every_steps=1,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg.validate()
