"""docs/your-data.md runs as written: every fenced command of the guide, in order,
on a generated folder of 4 classes of coloured shapes (issue #24), then the
fine-tuning example of docs/training.md on the same folder.

``bcosnet`` commands run in this process (``bcosnet.cli.main``: no interpreter
start per command); Python blocks run in a fresh interpreter, offline
(``tests.test_docs_code.run_block``).  The only changes to the guide's commands are
the two ``--max-steps`` the guide itself announces.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest
import torch

from bcosnet.cli import main
from bcosnet.training import load_checkpoint, load_checkpoint_model
from tests.test_docs_code import run_block
from tests.training.shapes import SHAPE_CLASSES, write_shapes_folder

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "your-data.md"

#: What the test adds to a command (the guide says so in its introduction).
ADDED = {
    "bcosnet train --preset fmnist": "--max-steps 10",
    "--model bcosified_resnet18": "--max-steps 3",
}


def fenced_blocks(markdown: Path, section: str | None = None) -> list[tuple[str, str]]:
    """``(language, code)`` of the fenced blocks of ``markdown`` in order (of the
    section whose heading starts with ``section``, up to the next heading of its level)."""
    text = markdown.read_text(encoding="utf-8")
    if section is not None:
        level = len(section) - len(section.lstrip("#"))
        start = text.index("\n" + section) + 1
        nxt = re.compile(rf"^#{{1,{level}}} ", re.M)
        # headings inside fences do not count: search outside them only
        pos, fenced = start + len(section), False
        end = len(text)
        for line in text[pos:].splitlines(keepends=True):
            if line.startswith("```"):
                fenced = not fenced
            elif not fenced and nxt.match(line):
                end = pos
                break
            pos += len(line)
        text = text[start:end]
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def commands(code: str) -> list[str]:
    """The commands of a bash block: ``\\`` continuations joined, comments dropped."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", code)
    return [c.split(" #")[0].strip() for c in joined.splitlines()
            if c.strip() and not c.strip().startswith("#")]


def test_fenced_blocks_and_commands(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("# T\n## A\n```bash\nbcosnet a \\\n    --b 1   # note\n# c\n```\n"
                  "```python\n# ## not a heading\nx = 1\n```\n## B\n```text\nout\n```\n")
    blocks = fenced_blocks(md, "## A")
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    assert commands(blocks[0][1]) == ["bcosnet a --b 1"]
    assert fenced_blocks(md, "## B") == [("text", "out\n")]


def _run(cmd: str, added: dict[str, int]) -> tuple[str, float, float]:
    for key, extra in ADDED.items():
        if cmd == key or (key.startswith("--") and key in cmd):
            cmd += " " + extra
            added[key] = added.get(key, 0) + 1
    argv = shlex.split(cmd)
    assert argv[0] == "bcosnet", f"the guide's bash blocks hold bcosnet commands only: {cmd}"
    t0, c0 = time.monotonic(), time.process_time()
    rc = main(argv[1:])
    assert rc == 0, f"`{cmd}` exited with {rc}"
    return cmd, time.monotonic() - t0, time.process_time() - c0


@pytest.mark.slow
def test_the_guide_runs_as_written_on_a_generated_folder(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    write_shapes_folder(tmp_path / "my-images", classes=SHAPE_CLASSES, train_per_class=20,
                        val_per_class=10)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the guide runs in a checkout
    monkeypatch.chdir(tmp_path)
    ran: list[tuple[str, float, float]] = []  # command, wall s, CPU s of this process
    added: dict[str, int] = {}
    t_start = time.monotonic()
    blocks = [b for b in fenced_blocks(GUIDE) if b[0] in ("bash", "python")]
    assert len(blocks) >= 9
    out_text = ""
    for lang, code in blocks:
        if lang == "python":
            t0 = time.monotonic()
            done = run_block(code, tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            ran.append(("python block (own interpreter)", time.monotonic() - t0, 0.0))
            out_text += done.stdout
            continue
        for cmd in commands(code):
            ran.append(_run(cmd, added))
            out_text += capsys.readouterr().out
    assert added == {k: 1 for k in ADDED}, "a substitution the guide announces did not apply"

    # 2. training: the folder model, its rules stated, learned
    run = tmp_path / "runs" / "my-images"
    ck = load_checkpoint(run / "checkpoint.pt")
    acc = ck["metrics"]["test_acc"]
    assert ck["metrics"]["test_n"] == 40 and acc >= 0.85, ck["metrics"]
    info = load_checkpoint_model(run / "checkpoint.pt").model_info
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == (
        "fmnist_bcos", 4, 3, (64, 64))
    assert list(info.classes) == sorted(SHAPE_CLASSES)
    assert "start-up summary" in out_text and "image size: 64 px (median shorter side" in out_text
    # 3. explanations: one figure per validation disc, and the API block's PNG
    assert len(list((tmp_path / "explanations").glob("*.png"))) == 10
    assert (tmp_path / "disc-000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fmnist_bcos: 4 classes (cross, disc, square, stripes)" in out_text
    # 4. the evaluate command reproduces the trainer's own final evaluation
    top1 = float(re.search(r"top-1\s+([\d.]+) %", out_text).group(1))
    assert top1 == pytest.approx(100 * acc, abs=0.01)
    # 5. neurons: 8 channels of features.6 with their top images
    top = json.loads((tmp_path / "neurons" / "top_features.6.json").read_text())
    assert (tmp_path / "neurons" / "neurons_features.6.png").is_file() and top
    # 6. faithfulness: the explanations beat a random order at deletion
    faith = json.loads((tmp_path / "faithfulness" / "faithfulness.json").read_text())["summary"]
    assert set(faith) == {"bcos", "ixg", "gradcam", "random"}
    assert faith["bcos"]["images"] == 20
    assert faith["bcos"]["deletion_auc"] < faith["random"]["deletion_auc"]
    # 7. localisation on 2×2 grids: the B-cos explanation above the uniform 1/4
    game = json.loads((tmp_path / "localisation" / "pointing_game.json").read_text())
    assert set(game["methods"]) == {"bcos", "ixg", "gradcam"} and game["n"] == 2
    bcos = game["methods"]["bcos"]
    assert 1 <= bcos["grids"] <= 20 and bcos["summary"]["median"] > 0.25
    # 8. the Fashion-MNIST net fine-tuned (head only) on grey versions of the folder
    ft = load_checkpoint_model(tmp_path / "runs" / "my-images-fmnist-finetune-head"
                               / "checkpoint.pt").model_info
    assert (ft.num_classes, ft.in_channels, ft.image_size) == (4, 1, (64, 64))
    # 9. the B-cosified torchvision ResNet-18, fine-tuned and explained
    rn = load_checkpoint_model(tmp_path / "runs" / "my-images-resnet18" / "checkpoint.pt")
    assert (rn.model_info.name, rn.model_info.num_classes) == ("bcosified_resnet18", 4)
    saved = torch.load(tmp_path / "bcos-resnet18.pt", weights_only=True)
    ck_rn = load_checkpoint(tmp_path / "runs" / "my-images-resnet18" / "checkpoint.pt")
    assert ck_rn["step"] == 3
    assert saved["classifier.weight"].shape[0] == 1000
    assert len(list((tmp_path / "explanations-resnet18").glob("*.png"))) == 10

    # docs/training.md's fine-tuning example, on the same folder and source network
    (code,) = [c for lang, c in fenced_blocks(ROOT / "docs" / "training.md", "## Fine-tuning")
               if lang == "bash"]
    for cmd in commands(code):
        ran.append(_run(cmd, added))
    head10 = load_checkpoint(tmp_path / "runs" / "my-images-head-10" / "checkpoint.pt")
    assert head10["config"]["data"]["train_per_class"] == 10

    total = time.monotonic() - t_start
    ft_acc = load_checkpoint(tmp_path / "runs" / "my-images-fmnist-finetune-head"
                             / "checkpoint.pt")["metrics"]["test_acc"]
    print(f"\nwalkthrough: {len(ran)} steps, {total:.0f} s; folder model test accuracy "
          f"{100 * acc:.2f} % (n = 40); Fashion-MNIST head fine-tuned {100 * ft_acc:.2f} %, "
          f"ResNet-18 after 3 steps {100 * ck_rn['metrics']['test_acc']:.2f} %, head on 10 "
          f"per class {100 * head10['metrics']['test_acc']:.2f} %")
    print("faithfulness (deletion ↓ / insertion ↑ AUC): " + ", ".join(
        f"{m} {r['deletion_auc']:.3f}/{r['insertion_auc']:.3f}" for m, r in faith.items()))
    print("localisation 2×2 (grids, median, mean): " + ", ".join(
        f"{m} {r['grids']}, {r['summary']['median']:.3f}, {r['summary']['mean']:.3f}"
        for m, r in game["methods"].items()))
    for cmd, secs, cpu in ran:
        print(f"  {secs:6.1f} s wall {cpu:6.1f} s CPU  {cmd}")
