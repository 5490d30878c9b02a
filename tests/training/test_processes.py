"""Training with real processes: torchrun + gloo data parallelism, and a run
killed with SIGKILL that resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
import yaml

from bcosnet.data import DataSplits, SyntheticDataset
from bcosnet.training import config_to_dict, load_checkpoint, train
from tests.training.helpers import tiny_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).parents[2] / "src") + os.pathsep + env.get(
        "PYTHONPATH", "")
    return env


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    """One step with 2 processes × 32 images == one step with 1 process × 64 images
    (B-cos network without BatchNorm, float64, Adam)."""
    cfg = tiny_config(tmp_path / "ddp", max_steps=1)
    cfg.optim.batch_size = 64  # global batch: 32 per process with 2 processes
    cfg.optim.lr = 1e-3
    cfg.data.synthetic_samples = 128
    conf = _write_config(cfg, tmp_path / "ddp.yaml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "bcosnet", "train", "--config", str(conf)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    start = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2

    single = tiny_config(tmp_path / "one", max_steps=1)
    single.optim.batch_size, single.optim.lr = 64, 1e-3
    single.data.synthetic_samples = 128
    train(single)

    pd = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    p1 = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    torch.manual_seed(single.seed)
    import bcosnet

    init = bcosnet.create_model("fmnist_bcos", 4, **single.model.options).double().state_dict()
    moved = 0.0
    for k in p1:
        assert p1[k].dtype == torch.float64
        assert torch.allclose(pd[k], p1[k], rtol=0, atol=1e-6), (k, (pd[k] - p1[k]).abs().max())
        moved = max(moved, (p1[k] - init[k]).abs().max().item())
    assert moved > 1e-4  # the step really changed the weights


def test_sigkilled_run_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "kill"
    cfg = tiny_config(out, epochs=200, checkpoint_every_steps=1)
    conf = _write_config(cfg, tmp_path / "kill.yaml")
    cmd = [sys.executable, "-m", "bcosnet", "train", "--config", str(conf)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 120
        steps = 0
        while time.monotonic() < deadline and steps < 6:
            time.sleep(0.05)
            if (out / "metrics.jsonl").is_file():
                steps = sum('"event": "train"' in line
                            for line in (out / "metrics.jsonl").read_text().splitlines())
        assert steps >= 6, "training did not get going"
        proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(ckpt)  # loads: not corrupt, whatever the kill interrupted
    k = state["step"]
    assert k >= 5 and all(torch.isfinite(v).all() for v in state["model"].values())

    cfg.resume, cfg.max_steps = True, k + 3
    res = train(cfg)
    assert res.step == k + 3 and res.stop_reason == "max_steps"
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    starts = [r for r in log if r["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["step"] == k
    assert not list(out.glob(".*.tmp"))  # stale temp files cleaned up


def test_loader_workers_do_not_change_the_result(tmp_path: Path) -> None:
    """Augmentation depends on (seed, epoch, index) only: 2 worker processes give
    bit-identical weights to loading in the main process."""
    results = []
    for workers in (0, 2):
        cfg = tiny_config(tmp_path / f"w{workers}", max_steps=5)
        cfg.data.augment = True
        cfg.data.num_workers = workers
        tr = SyntheticDataset(64, 4, 12, seed=0, transform=T.Compose(
            [T.RandomHorizontalFlip(), T.RandomCrop(12, padding=2)]))
        te = SyntheticDataset(16, 4, 12, seed=1)
        results.append(load_checkpoint(train(cfg, datasets=DataSplits(
            tr, te, tr.classes, 1, (12, 12))).checkpoint)["model"])
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k
