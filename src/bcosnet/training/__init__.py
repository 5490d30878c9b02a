"""Training: typed configs and presets, the (distributed) trainer, losses,
schedules, EMA and checkpoints.

    from bcosnet.training import get_preset, train, load_checkpoint_model
    result = train(get_preset("fmnist"))
    model = load_checkpoint_model(result.checkpoint)
"""

from .checkpoint import (
    atomic_save,
    check_compatible,
    export_safetensors,
    load_checkpoint,
    load_checkpoint_model,
    load_model_state,
)
from .config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    config_to_dict,
    merge_config,
)
from .distributed import DistEnv, ShardedSampler, init_distributed
from .ema import ModelEMA
from .losses import classification_loss, combined_loss, one_hot_targets
from .presets import PRESETS, config_from_dict, get_preset, list_presets, load_config
from .resolve import resolve_config
from .schedules import build_scheduler, lr_factor
from .summary import startup_summary
from .trainer import CHECKPOINT_NAME, NonFiniteLossError, TrainResult, evaluate_model, train

__all__ = [
    "CHECKPOINT_NAME",
    "DataConfig",
    "DistEnv",
    "ModelConfig",
    "ModelEMA",
    "NonFiniteLossError",
    "OptimConfig",
    "PRESETS",
    "ScheduleConfig",
    "ShardedSampler",
    "TrainConfig",
    "TrainResult",
    "atomic_save",
    "build_scheduler",
    "check_compatible",
    "classification_loss",
    "combined_loss",
    "config_from_dict",
    "config_to_dict",
    "evaluate_model",
    "export_safetensors",
    "get_preset",
    "init_distributed",
    "list_presets",
    "load_checkpoint",
    "load_checkpoint_model",
    "load_config",
    "load_model_state",
    "lr_factor",
    "merge_config",
    "one_hot_targets",
    "resolve_config",
    "startup_summary",
    "train",
]
