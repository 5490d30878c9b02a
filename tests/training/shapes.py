"""A generated image folder for the folder-training tests: coloured shapes and textures.

Up to four classes, each a form with a colour of its own (the figure's hue is
drawn near the class's hue; background, position, size, shade and noise are
random per image):

* ``disc``: a filled red disc;
* ``square``: a filled blue square;
* ``stripes``: a square patch of green stripes (random angle and period);
* ``cross``: a yellow plus sign (a fourth class, for 2×2 pointing-game grids).

The figure covers 10–30 % of the image, so the mean colour alone does not give
the class away: a model has to find the figure.  Nothing is committed: tests write
the folder into a temporary directory.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SHAPE_CLASSES", "write_shapes_folder", "shape_image"]

SHAPE_CLASSES = ("disc", "square", "stripes", "cross")
_HUES = {"disc": 0.0, "square": 0.62, "stripes": 0.33, "cross": 0.15}


def shape_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One H×W×3 uint8 image of class ``kind`` (``size`` px square)."""
    if kind not in _HUES:
        raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPE_CLASSES)}")
    hue = (_HUES[kind] + rng.uniform(-0.06, 0.06)) % 1.0
    fg = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)))
    bg = 255 * np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.6),
                                            rng.uniform(0.15, 0.95)))
    img = np.broadcast_to(bg, (size, size, 3)) + rng.normal(0, 12, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = rng.uniform(0.18, 0.32) * size
    cy, cx = rng.uniform(r + 1, size - r - 1, 2)
    if kind == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif kind == "square":
        mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.12, 0.22) * size
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        box = (np.abs(yy - cy) <= r * 1.2) & (np.abs(xx - cx) <= r * 1.2)
        mask = box & ((phase % 1.0) < 0.5)
    elif kind == "cross":
        arm = r * rng.uniform(0.3, 0.45)
        mask = (((np.abs(yy - cy) <= arm) & (np.abs(xx - cx) <= r))
                | ((np.abs(xx - cx) <= arm) & (np.abs(yy - cy) <= r)))
    else:  # pragma: no cover - _HUES[kind] raised already
        raise ValueError(f"unknown shape {kind!r}; choose one of {', '.join(SHAPE_CLASSES)}")
    img = np.where(mask[..., None], fg + rng.normal(0, 12, (size, size, 3)), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_shapes_folder(
    root: str | Path,
    *,
    train_per_class: int = 50,
    val_per_class: int = 30,
    size: int = 64,
    classes: tuple[str, ...] = SHAPE_CLASSES[:3],
    grey: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val}/<class>/<i>.png`` and return ``root``.

    ``grey=True`` saves single-channel ("L") images.  Deterministic in ``seed``;
    the val images are drawn after the training images (no image appears twice).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                im = Image.fromarray(shape_image(c, size, rng))
                (im.convert("L") if grey else im).save(folder / f"{i:03d}.png")
    return root
