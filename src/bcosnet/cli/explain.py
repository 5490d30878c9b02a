"""``bcosnet explain``: one PNG per image (image | colour explanation | contributions).

    bcosnet explain photo.jpg other.png --checkpoint runs/fmnist/checkpoint.pt --out expl/
    bcosnet explain cat.jpg --model resnet18 --target topk:3      # random init: plumbing only

Images of any size and mode are read by :func:`bcosnet.data.open_image` — the
decoder the image-folder data sets use — and turned into model input by
:func:`bcosnet.data.to_model_input` from the model's record: its channel count
(RGBA/LA are composited over white), the image size it was trained at and its
evaluation resize rule (``model.model_info.preprocess``; e.g. a folder-trained
model: shorter side to size·256/224, centre crop).  So an image is explained on
the pixels the model was tested on.  ``--image-size N`` feeds another size (with
a warning naming the trained size); ``--resize stretch`` another rule.  EXIF
orientation is applied (the image is explained as a viewer shows it), 16-bit
images are scaled to [0, 1], an animated image gives its first frame, and an
image whose header claims more than :data:`MAX_IMAGE_PIXELS` pixels is refused
before it is decoded (a decompression bomb).  A folder given as IMAGE stands for
the files in it (sorted, not recursive, hidden files skipped).  A file that
cannot be read is reported and skipped; the others are still written (each
atomically), the bad ones are listed at the end, and the exit code is 1.

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

from ..data.images import MAX_IMAGE_PIXELS
from ._model import RECORD_FLAGS, add_model_args, load_model


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explain a model's predictions on image files (one PNG per image)",
        description="Write one figure per image: the image, the model-inherent colour "
        "explanation and the contribution map of each explained class.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (any PIL format) or folders of them")
    add_model_args(p)
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
    p.add_argument("--image-size", type=int, metavar="N",
                   help="explain N×N images (default: the size the model was trained at; "
                        "another size gets a warning)")
    p.add_argument("--resize", choices=["crop", "stretch"],
                   help="how images are fitted to the size (default: the model's evaluation "
                        "rule, e.g. shorter side to size·256/224 + centre crop for image "
                        "folders; stretch: resize, aspect not kept)")
    p.add_argument("--class-names", help="text file with one class name per line")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images explained per forward/backward pass (default 32)")
    p.set_defaults(func=run, api_flags={"target": "--target", "smooth": "--smooth",
                                        "batch_size": "--batch-size", "resize": "--resize",
                                        **RECORD_FLAGS})


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
    """An image file as an ``in_channels×H×W`` float tensor in [0, 1] of an explicit
    ``size`` (``"crop"``: shorter side scaled to the size, centre crop; ``"stretch"``).
    The command itself feeds images by the model's record
    (:func:`bcosnet.data.to_model_input`).

    Raises FileNotFoundError or ValueError (unreadable/corrupt file) naming the file.
    """
    from ..data import Preprocess, open_image

    if in_channels not in (1, 3):
        raise ValueError(f"models with {in_channels} input channels cannot take image files")
    return Preprocess(tuple(size), resize, 1.0)(open_image(path, in_channels))


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
    from ._model import cli_warnings

    with cli_warnings(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..explanations import explain

    _check_flags(args)
    model = load_model(args.checkpoint, args.model, args.num_classes, seed=args.seed, args=args)
    device = torch.device(args.device)
    model.to(device)
    if getattr(model, "model_info", None) is None:
        raise ValueError("the model has no model_info (build it with bcosnet.create_model)")
    names = class_names_for(model, args.class_names)
    target = parse_target(args.target, names)
    paths = expand_image_paths(args.images)
    if not paths:
        raise ValueError(f"no image files in {', '.join(args.images)}")
    writer = _Writer(args, names)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for start in range(0, len(paths), args.batch_size):
        loaded = writer.load(paths[start:start + args.batch_size], model)
        if not loaded:
            continue
        xs = torch.stack([t for _, t in loaded]).to(device, dtype)
        try:
            ex_all = explain(model, xs, target=target)
        except (ValueError, TypeError) as e:
            for path, _ in loaded:
                writer.fail(path, e)
            continue
        for j, (path, _) in enumerate(loaded):
            writer.write(path, _one(ex_all, j), xs[j:j + 1])
    return writer.finish(len(paths))


def _check_flags(args: argparse.Namespace) -> None:
    """The numeric flags, before anything is loaded."""
    from .._utils.validate import check_int

    if args.image_size is not None:
        check_int("--image-size", args.image_size, 1)
    check_int("--batch-size", args.batch_size, 1)
    if args.smooth is not None and (args.smooth < 0 or (args.smooth > 1 and args.smooth % 2 == 0)):
        raise ValueError(f"--smooth must be 0 or an odd number, got {args.smooth}")


class _Writer:
    """Writes each image's explanation (a figure, or the RGBA colour explanation)
    into ``--out`` under a name no other image of the run takes; collects the
    images that fail and reports them at the end."""

    def __init__(self, args: argparse.Namespace, names: list[str] | None) -> None:
        self.args, self.names = args, names
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()
        self.failures: list[tuple[str, str]] = []

    def fail(self, path: str, e: Exception) -> None:
        from ._common import api_flags, cli_message

        self.failures.append((path, str(e)))
        print(f"bcosnet explain: error: {cli_message(str(e), api_flags(self.args))}",
              file=sys.stderr)

    def load(self, paths: Sequence[str], model: nn.Module) -> list[tuple[str, Tensor]]:
        """The readable images of ``paths`` as model input (the others fail)."""
        from ..data import to_model_input

        loaded = []
        for path in paths:
            try:
                loaded.append((path, to_model_input(path, model, image_size=self.args.image_size,
                                                     resize=self.args.resize)))
            except (FileNotFoundError, ValueError, TypeError) as e:
                self.fail(path, e)
        return loaded

    def _name(self, path: str) -> str:
        """The file stem, numbered when another image of the run had it (same stem
        from different folders: both are kept)."""
        stem = name = Path(path).stem
        i = 1
        while name in self.used:
            name = f"{stem}_{i}"
            i += 1
        self.used.add(name)
        return name

    def write(self, path: str, ex: Any, x: Tensor) -> None:
        """Write the explanation ``ex`` of the one image ``x`` read from ``path``."""
        from ..explanations import save_explanation

        try:
            assert ex.all_logits is not None
            pred = int(ex.all_logits[0].argmax())
            names = self.names
            pname = names[pred] if names and pred < len(names) else f"class {pred}"
            name = self._name(path)
            if self.args.format == "rgba":  # no matplotlib
                dest = save_explanation(ex, self.out / f"{name}.png")
            else:
                import matplotlib.pyplot as plt

                from ..explanations.figures import plot_explanations, save_figure

                fig = plot_explanations(
                    x, ex, class_names=names, smooth=self.args.smooth,
                    title=f"{Path(path).name}: predicted {pname} ({pred}), "
                    f"logit {float(ex.all_logits[0, pred]):.3f}",
                )
                dest = save_figure(fig, self.out / f"{name}.{self.args.format}")
                plt.close(fig)
            print(f"{path}: predicted {pname} ({pred}) -> {dest}")
        except (FileNotFoundError, ValueError, TypeError) as e:
            self.fail(path, e)

    def finish(self, total: int) -> int:
        """The exit code: 1 (the failed images listed on stderr) or 0."""
        if not self.failures:
            return 0
        print(f"bcosnet explain: {len(self.failures)} of {total} image(s) failed:",
              file=sys.stderr)
        for path, _ in self.failures:
            print(f"  {path}", file=sys.stderr)
        return 1
