"""``bcosnet explain``: one PNG per image (image | colour explanation | contributions).

    bcosnet explain photo.jpg other.png --checkpoint runs/fmnist/checkpoint.pt --out expl/
    bcosnet explain cat.jpg --model resnet18 --target topk:3      # random init: plumbing only

Images of any size and mode are read with PIL, converted to the model's channel
count (RGBA/LA are composited over white) and resized to the model's input size
(``model.model_info.input_size``; shorter side, then centre crop, or
``--resize stretch``).  A file that cannot be read is reported and skipped; the
others are still written, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["register", "run", "load_model", "load_image", "parse_target", "class_names_for"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a model's predictions on image files (one PNG per image)",
        description="Write one figure per image: the image, the model-inherent colour "
        "explanation and the contribution map of each explained class.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any PIL format)")
    p.add_argument("--checkpoint", help="training checkpoint (.pt) or exported .safetensors")
    p.add_argument(
        "--model",
        help="registered model name; without --checkpoint it is randomly initialised "
        "(for trying the plumbing)",
    )
    p.add_argument("--num-classes", type=int, help="outputs of a --model without checkpoint")
    p.add_argument(
        "--target",
        default="pred",
        help="'pred' (default), 'topk:K', or a class index or class name",
    )
    p.add_argument("--out", default="explanations", help="output folder (default: explanations)")
    p.add_argument("--format", default="png", choices=["png", "pdf"], help="figure format")
    p.add_argument(
        "--smooth", type=int, default=None, help="alpha box kernel (odd; default ≈ size/15)"
    )
    p.add_argument("--resize", default="crop", choices=["crop", "stretch"])
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised model")
    p.set_defaults(func=run)


def load_model(
    checkpoint: str | None, model_name: str | None, num_classes: int | None = None, *, seed: int = 0
) -> nn.Module:
    """The model to explain, in eval mode.

    ``checkpoint`` alone: a bcosnet training checkpoint or export (it names its
    model).  ``checkpoint`` and ``model_name``: any weights file of that model —
    a bcosnet checkpoint, a plain ``torch.save(model.state_dict())``, or a
    ``bcos`` v2 state dict (``create_model(model_name, weights=checkpoint)``).
    ``model_name`` alone: a randomly initialised registered model."""
    if checkpoint is None and model_name is None:
        raise ValueError("give --checkpoint CKPT (a trained model) or --model NAME (random init)")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        from ..training import load_checkpoint_model

        if model_name is not None:
            from ..models import create_model
            from ..models.weights import read_state_dict

            # A bcosnet checkpoint/export records the options its model was built
            # with (width, class count, ...): build it from those, not the defaults.
            state, meta = read_state_dict(checkpoint)
            found = meta.get("model_name")
            if found and found != model_name:
                raise ValueError(
                    f"{checkpoint} is a bcosnet checkpoint of {found!r}, not of --model "
                    f"{model_name!r}: drop --model (the checkpoint names its model) or pass "
                    f"--model {found}"
                )
            if found:
                return load_checkpoint_model(checkpoint).eval()
            return create_model(model_name, num_classes, weights=checkpoint).eval()

        return load_checkpoint_model(checkpoint).eval()
    from ..models import create_model

    torch.manual_seed(seed)
    print(
        f"note: --model {model_name} without --checkpoint is randomly initialised; "
        "its explanations show the plumbing, not a trained model",
        file=sys.stderr,
    )
    return create_model(model_name, num_classes).eval()  # type: ignore[arg-type]


def class_names_for(model: nn.Module, path: str | None = None) -> list[str] | None:
    """Class names: ``--class-names`` file, else the checkpoint's, else the
    ImageNet names (bundled with torchvision) for a 1000-class model."""
    k = getattr(getattr(model, "model_info", None), "num_classes", None)
    if path is not None:
        names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
        if k is not None and len(names) != k:
            raise ValueError(f"{path} lists {len(names)} class names; the model has {k} classes")
        return names
    names = list(getattr(model, "class_names", None) or [])
    if names:
        return names
    if k == 1000:
        try:
            from torchvision.models import ResNet18_Weights

            return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
        except Exception:  # names are a nicety; never fail on them
            return None
    return None


def parse_target(text: str, class_names: Sequence[str] | None) -> Any:
    """'pred' → 'pred'; 'topk:K' → ('topk', K); an int or a class name → int."""
    t = text.strip()
    if t == "pred":
        return "pred"
    if t.startswith("topk:"):
        try:
            k = int(t[5:])
        except ValueError:
            raise ValueError(f"--target {text!r}: expected topk:K with an integer K") from None
        if k < 1:
            raise ValueError(f"--target {text!r}: K must be >= 1")
        return ("topk", k)
    try:
        return int(t)
    except ValueError:
        pass
    if class_names is not None and t in class_names:
        return list(class_names).index(t)
    raise ValueError(
        f"--target {text!r} is not 'pred', 'topk:K', a class index or a known class name"
    )


def load_image(path: str | Path, in_channels: int, size: tuple[int, int], resize: str = "crop"
               ) -> Tensor:
    """Read an image file into a ``in_channels×H×W`` float tensor in [0, 1] of the given size.

    Raises FileNotFoundError or ValueError (unreadable/corrupt file) naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            im.load()
            img = im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{p}: cannot read the image ({e}); is it a valid image file?") from e
    # Composite transparency over white so transparent regions do not turn black.
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    if in_channels == 3:
        img = img.convert("RGB")
    elif in_channels == 1:
        img = img.convert("L")
    else:
        raise ValueError(f"models with {in_channels} input channels cannot take image files")
    h, w = size
    if resize == "stretch":
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    else:
        scale = max(h / img.height, w / img.width)
        nw, nh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - w) // 2, (nh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    import numpy as np

    a = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(a.copy())
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def run(args: argparse.Namespace) -> int:
    from ..explanations import explain
    from ..explanations.figures import plot_explanations, save_figure

    model = load_model(args.checkpoint, args.model, args.num_classes, seed=args.seed)
    device = torch.device(args.device)
    model.to(device)
    info = getattr(model, "model_info", None)
    if info is None:
        raise ValueError("the model has no model_info (build it with bcosnet.create_model)")
    names = class_names_for(model, args.class_names)
    target = parse_target(args.target, names)
    if args.smooth is not None and (args.smooth < 0 or (args.smooth > 1 and args.smooth % 2 == 0)):
        raise ValueError(f"--smooth must be 0 or an odd number, got {args.smooth}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    used: set[str] = set()
    for path in args.images:
        try:
            x = load_image(path, info.in_channels, tuple(info.input_size), args.resize)
            x = x.unsqueeze(0).to(device)
            ex = explain(model, x, target=target)
            assert ex.all_logits is not None
            pred = int(ex.all_logits[0].argmax())
            pname = names[pred] if names and pred < len(names) else f"class {pred}"
            fig = plot_explanations(
                x,
                ex,
                class_names=names,
                smooth=args.smooth,
                title=f"{Path(path).name}: predicted {pname} ({pred}), "
                f"logit {float(ex.all_logits[0, pred]):.3f}",
            )
            stem = Path(path).stem
            name = stem
            i = 1
            while name in used:  # same stem from different folders: keep both
                name = f"{stem}_{i}"
                i += 1
            used.add(name)
            dest = save_figure(fig, out / f"{name}.{args.format}")
            print(f"{path}: predicted {pname} ({pred}) -> {dest}")
        except (FileNotFoundError, ValueError) as e:
            failures += 1
            print(f"bcosnet explain: error: {e}", file=sys.stderr)
    if failures:
        print(
            f"bcosnet explain: {failures} of {len(args.images)} image(s) failed", file=sys.stderr
        )
        return 1
    return 0
