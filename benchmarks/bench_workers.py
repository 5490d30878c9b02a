"""The main job's pointing game in one process against worker processes.

Takes the two trained networks of a finished main job (``--from``, default
``outputs/main``) and plays the main job's pointing-game stage — both networks,
every method, 3×3 grids, the main job's method settings — on a few grids, once
with ``workers=1`` (one process, ``--threads`` torch threads) and once with
``--workers`` processes of ``threads // workers`` threads each, each run in a
fresh results folder; then prints both wall times, their ratio and the largest
score difference between the runs (float rounding only: the same grids and maps).
``--order`` says which runs first (the machine's speed drifts; run both orders).

    python benchmarks/bench_workers.py [--from outputs/main] [--grids 40]
        [--slow-grids 16] [--threads 2] [--workers 2] [--order 1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bcosnet.pipeline import PERTURBATION_METHODS, MainConfig, WorkerPool
from bcosnet.pipeline.pointing_game import pointing_game_stage
from bcosnet.pipeline.stages import eval_inputs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="source", default="outputs/main",
                    help="a finished main job's output folder (its bcos/ and standard/ "
                         "checkpoints are used)")
    ap.add_argument("--grids", type=int, default=40, help="grids of the fast methods and IntGrad")
    ap.add_argument("--slow-grids", type=int, default=16,
                    help="grids of occlusion, RISE and LIME")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--order", default="1,2", help="worker counts in the order run")
    args = ap.parse_args()

    source = Path(args.source)
    ckpts = {"B-cos": source / "bcos" / "checkpoint.pt",
             "standard": source / "standard" / "checkpoint.pt"}
    missing = [str(p) for p in ckpts.values() if not p.is_file()]
    if missing:
        sys.exit(f"no trained networks in {source} ({', '.join(missing)} missing): run "
                 "`bcosnet main` first or pass --from FOLDER")
    order = [int(w) for w in args.order.split(",")]
    base = MainConfig(grids=args.grids, threads=args.threads, progress=False,
                      grids_per_method=dict.fromkeys(PERTURBATION_METHODS, args.slow_grids))
    torch.set_num_threads(args.threads)
    runs = {k: {"checkpoint": str(p)} for k, p in ckpts.items()}
    seconds: dict[int, float] = {}
    scores: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in order:
            workers = 1 if w == 1 else args.workers
            cfg = dataclasses.replace(base, out_dir=str(Path(tmp) / f"w{w}"), workers=workers)
            models = {k: eval_inputs(cfg, v["checkpoint"])[0] for k, v in runs.items()}
            test = eval_inputs(cfg, runs["B-cos"]["checkpoint"])[1]
            t = time.perf_counter()
            with WorkerPool(cfg.workers, cfg.worker_threads()) as pool:
                pg = pointing_game_stage(cfg, Path(cfg.out_dir), pool, runs, models, test)
            seconds[w] = time.perf_counter() - t
            scores[w] = {net: dict(r.scores) for net, r in pg.results.items()}
            print(f"workers={workers} ({cfg.processes_text()}): {seconds[w]:.1f} s",
                  flush=True)
    one, many = 1, next(w for w in order if w != 1)
    diff = max(float(np.abs(scores[one][net][m] - scores[many][net][m]).max())
               for net in scores[one] for m in scores[one][net])
    print(json.dumps({"grids": args.grids, "slow_grids": args.slow_grids,
                      "threads": args.threads, "workers": args.workers,
                      "seconds": {str(k): round(v, 1) for k, v in seconds.items()},
                      "speed_up": round(seconds[one] / seconds[many], 3),
                      "max_abs_score_diff": diff}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
