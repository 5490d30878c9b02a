"""One image decoder and one preprocessing rule.

* :func:`open_image` decodes an image file as a viewer shows it (EXIF
  orientation, first frame of an animation, 16-bit and float grey scaled to
  [0, 255] instead of clipped, transparency composited over white), refuses a
  decompression bomb before decoding, and converts it to grey (1 channel) or RGB
  (3 channels).  :class:`~bcosnet.data.ImageFolderDataset`, ``bcosnet explain``
  and :func:`to_model_input` all read files through it.
* :class:`Preprocess` is the evaluation transform of a model — the image size it
  was trained at and the resize rule — as a record that travels with the model
  (``model.model_info.preprocess``).  The evaluation transform of an image
  folder *is* a :class:`Preprocess`, so a model is explained and evaluated on
  the pixels it was tested on.
* :func:`to_model_input` turns a file, a PIL image or a tensor into model input
  by a model's record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._utils.validate import is_int

__all__ = ["MAX_IMAGE_PIXELS", "RESIZE_RULES", "CorruptImageError", "Preprocess", "convert_image",
           "model_preprocess", "open_image", "to_model_input"]

#: Largest image (width × height, from the file's header) :func:`open_image`
#: decodes: PIL's own decompression-bomb limit.
MAX_IMAGE_PIXELS = 89_478_485

#: ``"crop"``: scale the image so that it covers ``size / crop_fraction``, then
#: cut the centre ``size``; ``"stretch"``: resize to ``size`` (aspect not kept).
RESIZE_RULES = ("crop", "stretch")

#: ImageNet's evaluation crop: resize the shorter side to ``size·256/224``, cut
#: the centre ``size``.
IMAGENET_CROP_FRACTION = 224 / 256


class CorruptImageError(ValueError):
    """An image file could not be read (named in the message)."""


def open_image(path: str | os.PathLike, channels: int | None = 3) -> Any:
    """Decode an image file into a PIL image as a viewer shows it.

    Args:
        path: the file (any format PIL reads).
        channels: 3 (RGB), 1 (grey) or ``None`` (RGB, or grey for grey files).

    Returns:
        A PIL image in mode ``"RGB"`` or ``"L"``.

    Raises:
        FileNotFoundError: no such file.
        CorruptImageError: (a ``ValueError``) the file cannot be decoded, or its
            header claims more than :data:`MAX_IMAGE_PIXELS` pixels (refused
            before decoding: a decompression bomb); the message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            # The header gives the size: refuse a decompression bomb before decoding.
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise CorruptImageError(
                    f"{p}: {im.width}×{im.height} pixels is more than the "
                    f"{MAX_IMAGE_PIXELS:,} bcosnet decodes (a decompression bomb?); refused "
                    "before decoding — downscale the image first if it is genuine")
            im.seek(0)  # animated images: the first frame
            im.load()
            img = ImageOps.exif_transpose(im)  # as a viewer shows it
            img = img.copy() if img is im else img
    except CorruptImageError:
        raise
    except Image.DecompressionBombError as e:
        raise CorruptImageError(f"{p}: {e} — refused before decoding; downscale the image "
                                "first if it is genuine") from e
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, MemoryError, ValueError) as e:
        raise CorruptImageError(f"{p}: cannot read the image ({e}); is it a valid image file?"
                                ) from e
    except Exception as e:  # any other decoder failure on an untrusted file
        raise CorruptImageError(f"{p}: cannot read the image ({type(e).__name__}: {e}); is it "
                                "a valid image file?") from e
    return convert_image(img, channels)


def convert_image(img: Any, channels: int | None = 3) -> Any:
    """A decoded PIL image in mode ``"RGB"`` (``channels=3``) or ``"L"`` (1):
    16-bit / 32-bit / float grey scaled to 8 bits (not clipped at 255),
    transparency composited over white (transparent regions do not turn black),
    palette and CMYK images converted.  ``channels=None``: grey stays grey,
    anything else becomes RGB."""
    from PIL import Image

    if channels not in (None, 1, 3):
        raise ValueError(f"image files become 1- or 3-channel images, not {channels}")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if a.max(initial=0) <= 1 else 255.0
        img = Image.fromarray(np.clip(np.round(a / top * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    if channels is None:
        channels = 1 if img.mode in ("L", "1") else 3
    return img.convert("RGB" if channels == 3 else "L")


def _pil_to_tensor(img: Any) -> Tensor:
    a = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    a = a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)
    return a.float().div_(255.0)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes model input: the evaluation transform a model was
    tested with, as a record (JSON-able with :meth:`to_dict`).

    Attributes:
        size: (H, W) in pixels the model is fed.
        resize: ``"crop"`` — scale the image (keeping its aspect) so that it covers
            ``size / crop_fraction``, then cut the centre ``size``; ``"stretch"`` —
            resize to ``size``, aspect not kept.
        crop_fraction: for ``"crop"``: ``224/256`` is ImageNet's rule (resize the
            shorter side to ``size·256/224``, centre crop); ``1.0`` scales the
            shorter side to the size (an image already of ``size`` is unchanged —
            Fashion-MNIST, CIFAR-10 and generated data are tested that way).
        mean, std: per-channel normalisation ``(x − mean)/std`` applied after
            resizing, or ``None``: the model takes raw images in [0, 1] (every
            bcosnet model does: B-cos models encode ``[x, 1 − x]``, the
            conventional twins normalise inside).

    Calling it on a PIL image or a C×H×W / N×C×H×W tensor (uint8 or float in
    [0, 1]) returns float C×H×W / N×C×H×W model input.  PIL images are resized
    with PIL (bilinear, antialiased), tensors with ``torchvision`` (bilinear,
    antialiased).
    """

    size: tuple[int, int]
    resize: str = "crop"
    crop_fraction: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        size = self.size
        if is_int(size):
            size = (size, size)
        try:
            size = tuple(int(s) for s in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"size must be (H, W) in pixels, got {self.size!r}") from None
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (H, W) of positive ints, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {', '.join(map(repr, RESIZE_RULES))}, got "
                             f"{self.resize!r}")
        if not 0.0 < float(self.crop_fraction) <= 1.0:
            raise ValueError(f"crop_fraction must lie in (0, 1], got {self.crop_fraction!r}")
        object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        if (self.mean is None) != (self.std is None):
            raise ValueError("give mean and std together (or neither)")
        if self.mean is not None:
            mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))  # type: ignore
            if len(mean) != len(std) or any(s <= 0 for s in std):
                raise ValueError(f"mean and std need one value per channel and std > 0, got "
                                 f"{mean} and {std}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    # ------------------------------------------------------------------ geometry
    def _resized(self, h: int, w: int) -> tuple[int, int] | int | None:
        """The resize target for an h×w image: None (unchanged), an int (the
        shorter side, torchvision's rule) or (H', W')."""
        H, W = self.size
        if self.resize == "stretch":
            return None if (h, w) == (H, W) else (H, W)
        if self.crop_fraction == 1.0 and (h, w) == (H, W):
            return None
        if H == W:
            return round(H / self.crop_fraction)
        scale = max(H / h, W / w) / self.crop_fraction
        return (max(H, round(h * scale)), max(W, round(w * scale)))

    def describe(self) -> str:
        """The rule in words, e.g. ``"64×64 px: shorter side to 73, centre crop"``."""
        H, W = self.size
        if self.resize == "stretch":
            text = f"{H}×{W} px: stretched to the size (aspect not kept)"
        elif self.crop_fraction == 1.0:
            text = f"{H}×{W} px: shorter side scaled to the size, centre crop"
        else:
            text = (f"{H}×{W} px: scaled to cover {round(H / self.crop_fraction)} px "
                    f"(size/{self.crop_fraction:g}), centre crop")
        if self.mean is not None:
            text += f"; normalised with mean {self.mean}, std {self.std}"
        else:
            text += "; raw [0, 1] values"
        return text

    def __call__(self, img: Any) -> Tensor:
        from torchvision.transforms import functional as TF

        if isinstance(img, Tensor):
            x = img.float().div(255.0) if img.dtype == torch.uint8 else img
            if x.dim() not in (3, 4):
                raise ValueError(f"expected a C×H×W image or an N×C×H×W batch, got shape "
                                 f"{tuple(x.shape)}")
            h, w = x.shape[-2:]
        else:  # PIL
            h, w = img.height, img.width
        target = self._resized(h, w)
        if target is not None:
            img = x if isinstance(img, Tensor) else img
            img = TF.resize(img, target if isinstance(target, int) else list(target),
                            interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        elif isinstance(img, Tensor):
            img = x
        if self.resize == "crop":
            img = TF.center_crop(img, list(self.size))
        out = img if isinstance(img, Tensor) else _pil_to_tensor(img)
        if self.mean is not None:
            shape = (-1, 1, 1)
            out = (out - torch.tensor(self.mean, dtype=out.dtype).view(shape)) / torch.tensor(
                self.std, dtype=out.dtype).view(shape)
        return out

    # ------------------------------------------------------------------ record
    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"size": [H, W], "resize": ..., "crop_fraction": ..., "mean": ...,
        "std": ...}``."""
        return {"size": list(self.size), "resize": self.resize,
                "crop_fraction": self.crop_fraction,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std)}

    @classmethod
    def from_dict(cls, d: Any) -> Preprocess:
        """The inverse of :meth:`to_dict`; ``ValueError`` naming a bad or unknown field."""
        from .._utils.validate import check_record_fields

        check_record_fields(d, ("size", "resize", "crop_fraction", "mean", "std"),
                            "the preprocessing record")
        if "size" not in d:
            raise ValueError("the preprocessing record has no 'size'")
        return cls(size=tuple(d["size"]), resize=d.get("resize", "crop"),  # type: ignore[arg-type]
                   crop_fraction=d.get("crop_fraction", 1.0),
                   mean=None if d.get("mean") is None else tuple(d["mean"]),
                   std=None if d.get("std") is None else tuple(d["std"]))


def to_model_input(
    image: str | os.PathLike | Any,
    model: Any,
    *,
    image_size: int | Sequence[int] | None = None,
    resize: str | None = None,
) -> Tensor:
    """An image file, PIL image or tensor as input of ``model`` — the transform its
    record says it was evaluated with (``model.model_info.preprocess``).

    Args:
        image: a path (decoded by :func:`open_image`), a PIL image, a C×H×W
            tensor or an N×C×H×W batch (uint8, or float in [0, 1]).
        model: a model built by :func:`bcosnet.create_model` (or its
            :class:`~bcosnet.models.ModelInfo`).
        image_size: feed another size than the trained one (an int or (H, W));
            a warning names the trained size.
        resize: another resize rule (``"crop"`` or ``"stretch"``) than the recorded one.

    Returns:
        Float C×H×W (N×C×H×W for a batch) on the CPU (a tensor stays on its device).
    """
    from dataclasses import replace

    info = getattr(model, "model_info", model)
    pre = model_preprocess(info)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if tuple(size) != pre.size:
            warnings.warn(
                f"the model was trained on {pre.size[0]}×{pre.size[1]} images; feeding "
                f"{size[0]}×{size[1]} (image_size={image_size!r}) — its accuracy may differ",
                UserWarning, stacklevel=2)
        pre = replace(pre, size=size)
    if resize is not None:
        pre = replace(pre, resize=resize)
    channels = int(info.in_channels)
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, channels)
    elif not isinstance(image, Tensor):
        image = convert_image(image, channels)
    elif image.shape[-3] != channels:
        raise ValueError(f"the model takes {channels}-channel images, got shape "
                         f"{tuple(image.shape)}")
    return pre(image)


def model_preprocess(info: Any) -> Preprocess:
    """The record's :class:`Preprocess`, or — for a model without one (random
    initialisation, weights without a record) — its architecture's native size,
    shorter side scaled to it and centre-cropped."""
    pre = getattr(info, "preprocess", None)
    if pre is not None:
        return pre
    return Preprocess(tuple(info.input_size), "crop", 1.0)
