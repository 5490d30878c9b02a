"""``bcosnet explain``: one PNG per image (image | colour explanation | contributions).

    bcosnet explain photo.jpg other.png --checkpoint runs/fmnist/checkpoint.pt --out expl/
    bcosnet explain cat.jpg --model resnet18 --target topk:3      # random init: plumbing only

Images of any size and mode are read with PIL, converted to the model's channel
count (RGBA/LA are composited over white) and resized to the model's input size
(``model.model_info.input_size``; shorter side, then centre crop, or
``--resize stretch``).  EXIF orientation is applied (the image is explained as a
viewer shows it), 16-bit images are scaled to [0, 1], an animated image gives
its first frame, and an image whose header claims more than
:data:`MAX_IMAGE_PIXELS` pixels is refused before it is decoded (a
decompression bomb).  A folder given as IMAGE stands for the files in it
(sorted, not recursive, hidden files skipped).  A file that cannot be read is
reported and skipped; the others are still written (each atomically), the bad
ones are listed at the end, and the exit code is 1.

``--format rgba`` writes only the colour explanation (an RGBA PNG per image, the
explained classes side by side), without matplotlib: fast for many images.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MAX_IMAGE_PIXELS", "register", "run", "load_model", "load_image", "parse_target",
           "class_names_for", "expand_image_paths"]

#: Largest image (width × height, from the file's header) ``load_image`` decodes:
#: PIL's own decompression-bomb limit.
MAX_IMAGE_PIXELS = 89_478_485


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a model's predictions on image files (one PNG per image)",
        description="Write one figure per image: the image, the model-inherent colour "
        "explanation and the contribution map of each explained class.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any PIL format) or folders of them")
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
    p.add_argument("--format", default="png", choices=["png", "pdf", "rgba"],
                   help="figure format; rgba: only the colour explanation as an RGBA PNG "
                   "(fast, no matplotlib)")
    p.add_argument(
        "--smooth", type=int, default=None, help="alpha box kernel (odd; default ≈ size/15)"
    )
    p.add_argument("--resize", default="crop", choices=["crop", "stretch"])
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images explained per forward/backward pass (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of a randomly initialised model")
    p.set_defaults(func=run, api_flags={"target": "--target", "smooth": "--smooth",
                                        "batch_size": "--batch-size"})


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
    from PIL import ImageOps

    try:
        with Image.open(p) as im:
            # The header gives the size: refuse a decompression bomb before decoding.
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{p}: {im.width}×{im.height} pixels is more than the "
                    f"{MAX_IMAGE_PIXELS:,} bcosnet decodes (a decompression bomb?); refused "
                    "before decoding — downscale the image first if it is genuine")
            im.seek(0)  # animated images: the first frame
            im.load()
            img = ImageOps.exif_transpose(im)  # as a viewer shows it
            img = img.copy() if img is im else img
    except ValueError as e:
        if str(e).startswith(str(p)):
            raise
        raise ValueError(f"{p}: cannot read the image ({e}); is it a valid image file?") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"{p}: {e} — refused before decoding; downscale the image first if "
                         "it is genuine") from e
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, MemoryError) as e:
        raise ValueError(f"{p}: cannot read the image ({e}); is it a valid image file?") from e
    except Exception as e:  # any other decoder failure on an untrusted file
        raise ValueError(f"{p}: cannot read the image ({type(e).__name__}: {e}); is it a "
                         "valid image file?") from e
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit / 32-bit grey: scale to 8 bits instead of clipping at 255.
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if a.max(initial=0) <= 1 else 255.0
        img = Image.fromarray(np.clip(np.round(a / top * 255), 0, 255).astype(np.uint8), "L")
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


def expand_image_paths(items: Sequence[str]) -> list[str]:
    """Files as given; a folder stands for its (non-hidden) files, sorted."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.iterdir())
                       if not f.name.startswith(".") and not f.is_dir())
        else:
            out.append(item)
    return out


def _one(ex: Any, j: int) -> Any:
    """Image ``j`` of a batch explanation, as a batch of one."""
    import dataclasses

    return dataclasses.replace(ex, **{
        f.name: getattr(ex, f.name)[j:j + 1] for f in dataclasses.fields(ex)
        if isinstance(getattr(ex, f.name), Tensor)})


def run(args: argparse.Namespace) -> int:
    from ..explanations import explain, save_explanation

    if args.format != "rgba":  # matplotlib only when figures are asked for
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
    failures: list[tuple[str, str]] = []
    used: set[str] = set()
    paths = expand_image_paths(args.images)
    if not paths:
        raise ValueError(f"no image files in {', '.join(args.images)}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")

    def fail(path: str, e: Exception) -> None:
        from ._common import api_flags, cli_message

        failures.append((path, str(e)))
        print(f"bcosnet explain: error: {cli_message(str(e), api_flags(args))}",
              file=sys.stderr)

    for start in range(0, len(paths), args.batch_size):
        loaded: list[tuple[str, Tensor]] = []
        for path in paths[start:start + args.batch_size]:
            try:
                loaded.append((path, load_image(path, info.in_channels,
                                                 tuple(info.input_size), args.resize)))
            except (FileNotFoundError, ValueError, TypeError) as e:
                fail(path, e)
        if not loaded:
            continue
        xs = torch.stack([t for _, t in loaded]).to(device, dtype)
        try:
            ex_all = explain(model, xs, target=target)
        except (ValueError, TypeError) as e:
            for path, _ in loaded:
                fail(path, e)
            continue
        for j, (path, _) in enumerate(loaded):
            try:
                ex = _one(ex_all, j)
                x = xs[j:j + 1]
                assert ex.all_logits is not None
                pred = int(ex.all_logits[0].argmax())
                pname = names[pred] if names and pred < len(names) else f"class {pred}"
                stem = Path(path).stem
                name = stem
                i = 1
                while name in used:  # same stem from different folders: keep both
                    name = f"{stem}_{i}"
                    i += 1
                used.add(name)
                if args.format == "rgba":
                    dest = save_explanation(ex, out / f"{name}.png")
                else:
                    fig = plot_explanations(
                        x,
                        ex,
                        class_names=names,
                        smooth=args.smooth,
                        title=f"{Path(path).name}: predicted {pname} ({pred}), "
                        f"logit {float(ex.all_logits[0, pred]):.3f}",
                    )
                    dest = save_figure(fig, out / f"{name}.{args.format}")
                    import matplotlib.pyplot as plt

                    plt.close(fig)
                print(f"{path}: predicted {pname} ({pred}) -> {dest}")
            except (FileNotFoundError, ValueError, TypeError) as e:
                fail(path, e)
    if failures:
        print(f"bcosnet explain: {len(failures)} of {len(paths)} image(s) failed:",
              file=sys.stderr)
        for path, _ in failures:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0
