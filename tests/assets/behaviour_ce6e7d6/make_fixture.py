"""Behaviour fixture of commit ce6e7d6: two small Fashion-MNIST networks,
the main job's pointing-game settings on 2 grids of every method, and test accuracies.
Run with PYTHONPATH=<worktree at ce6e7d6>/src."""
import json, sys, tempfile
from pathlib import Path
import torch
import bcosnet
from bcosnet.training import get_preset, train
from bcosnet.training.checkpoint import export_safetensors, load_checkpoint
from bcosnet.training import load_checkpoint_model
from bcosnet.data import build_datasets
from bcosnet.evaluation import grid_pointing_game
from bcosnet.evaluation.accuracy import accuracy
from bcosnet.pipeline import METHOD_SETTINGS, BCOS_METHODS, STANDARD_METHODS

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
test = build_datasets("fashion-mnist", augment=False).test
expected = {"commit": "ce6e7d6", "networks": {}}
for name, preset, methods in (("bcos", "fmnist", BCOS_METHODS), ("standard", "fmnist-standard", STANDARD_METHODS)):
    tc = get_preset(preset)
    tc.model.options = {"width": 8}
    tc.max_steps = 400; tc.time_limit_min = None; tc.schedule.fit_time_limit = False
    tc.epochs = 1; tc.threads = 1; tc.progress = False; tc.seed = 0
    tc.out_dir = tempfile.mkdtemp()
    res = train(tc)
    ck = load_checkpoint(res.checkpoint)
    meta = {"model_name": ck["model_name"], "model_options": ck["model_options"],
            "num_classes": ck["num_classes"], "classes": ck["classes"]}
    f = out / f"{name}.safetensors"
    export_safetensors(ck["model"], f, meta)
    model = load_checkpoint_model(f)
    acc = accuracy(model, test, batch_size=500)
    model = model.to(memory_format=torch.channels_last)
    r = grid_pointing_game(model, test, list(methods), n=3, num_grids=2, seed=0,
                           confidence_threshold=0.5, allow_fewer=True,
                           method_settings={m: s for m, s in METHOD_SETTINGS.items() if m in methods},
                           results_dir=out / f"pg_{name}", progress=False)
    expected["networks"][name] = {
        "weights": f.name, "top1": acc.top1, "per_class": acc.per_class,
        "methods": list(methods), "classes": r.classes.tolist(),
        "scores": {m: s.tolist() for m, s in r.scores.items()}, "settings": {k: v for k, v in r.settings.items() if isinstance(v, (int, float, str, type(None)))},
    }
    print(name, acc.top1, {m: float(s.mean()) for m, s in r.scores.items()}, flush=True)
(out / "expected.json").write_text(json.dumps(expected, indent=1))
