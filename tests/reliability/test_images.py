"""Untrusted image files through ``bcosnet explain`` (docs/reliability.md): every
file is made here with PIL (or by hand: bad CRC, bomb header)."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bcosnet.cli import main
from bcosnet.cli.explain import load_image
from bcosnet.training import atomic_save

AREA = "images"


def _picture(h=40, w=56, seed=0) -> np.ndarray:
    """An RGB picture with a bright square top-left (to check orientation)."""
    g = np.random.default_rng(seed)
    a = (g.random((h, w, 3)) * 60).astype(np.uint8)
    a[:10, :10] = 255
    return a


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _bomb_png(path: Path, side: int = 100_000) -> None:
    """A PNG header claiming side×side grey pixels, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def grey_checkpoint(tmp_path_factory) -> Path:
    import bcosnet

    torch.manual_seed(0)
    m = bcosnet.create_model("fmnist_bcos", num_classes=10, width=4)
    p = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    atomic_save({"format": "bcosnet-checkpoint-1", "model": m.state_dict(),
                 "model_name": "fmnist_bcos", "model_options": {"width": 4},
                 "num_classes": 10, "classes": [str(i) for i in range(10)]}, p)
    return p


def test_image_kinds(tmp_path, reliability) -> None:
    d = tmp_path
    good = d / "good.jpg"
    Image.fromarray(_picture()).save(good, quality=95)
    data = good.read_bytes()

    # refused, naming the file
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    png = d / "ok.png"
    Image.fromarray(_picture()).save(png)
    raw = bytearray(png.read_bytes())
    raw[-20] ^= 0xFF  # inside the last IDAT chunk: its CRC no longer matches
    (d / "badcrc.png").write_bytes(bytes(raw))
    raw2 = bytearray(png.read_bytes())
    raw2[29] ^= 0xFF  # the IHDR chunk's CRC
    (d / "badcrc_header.png").write_bytes(bytes(raw2))
    (d / "text.png").write_text("not an image at all")
    _bomb_png(d / "bomb.png")
    for name, match in (("empty.jpg", "cannot read"), ("truncated.jpg", "cannot read"),
                        ("badcrc.png", "cannot read"), ("badcrc_header.png", "cannot read"),
                        ("text.png", "cannot read"),
                        ("bomb.png", "refused before decoding")):
        t0 = time.perf_counter()
        reliability.refused(AREA, {"empty.jpg": "0-byte file", "truncated.jpg":
                                   "truncated JPEG (first half)", "badcrc.png":
                                   "PNG with a bad CRC in its image data",
                                   "badcrc_header.png": "PNG with a bad CRC in its header",
                                   "text.png": "a text file named .png",
                                   "bomb.png": "decompression bomb (header: 100000×100000)"}[name],
                            ValueError, f"{name}: .*{match}",
                            lambda name=name: load_image(d / name, 3, (32, 32)))
        assert time.perf_counter() - t0 < 2  # the bomb is refused before decoding
    reliability.refused(AREA, "missing file", FileNotFoundError, "no such file",
                        lambda: load_image(d / "nope.png", 3, (32, 32)))

    # handled
    ref = load_image(good, 3, (40, 56), "stretch")
    cmyk = d / "cmyk.jpg"
    Image.fromarray(_picture()).convert("CMYK").save(cmyk, quality=95)
    x = load_image(cmyk, 3, (40, 56), "stretch")
    assert x.shape == (3, 40, 56) and (x - ref).abs().mean() < 0.05
    reliability.handled(AREA, "CMYK JPEG", "converted to RGB (mean |Δ| < 0.05 vs the RGB file)")

    a16 = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    p16 = d / "grey16.png"
    Image.fromarray(a16).save(p16)
    with Image.open(p16) as im:
        assert im.mode.startswith("I")
    x = load_image(p16, 1, (40, 56), "stretch")
    torch.testing.assert_close(x[0], torch.from_numpy(a16 / 65535).float(), atol=1 / 255,
                               rtol=0)
    reliability.handled(AREA, "16-bit grey PNG", "scaled to [0, 1] (not clipped at 255)")

    pal = Image.fromarray(_picture()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    ppal = d / "palette.png"
    pal.save(ppal, transparency=0)
    x = load_image(ppal, 3, (40, 56), "stretch")
    assert x.shape == (3, 40, 56) and float(x.max()) <= 1
    reliability.handled(AREA, "palette PNG with transparency", "composited over white")

    gif = d / "anim.gif"
    frames = [Image.fromarray(np.full((40, 56, 3), v, np.uint8)) for v in (200, 30, 90)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    x = load_image(gif, 1, (40, 56), "stretch")
    assert abs(float(x.mean()) - 200 / 255) < 0.02
    reliability.handled(AREA, "animated GIF (3 frames)", "the first frame")

    rot = d / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    Image.fromarray(_picture()).save(rot, exif=exif, quality=95)
    x = load_image(rot, 3, (56, 40), "stretch")  # as viewed: 56 high, 40 wide
    # the bright square (top-left in the file) is top-right as viewed
    assert float(x[:, :10, -10:].mean()) > 0.9 and float(x[:, :10, :10].mean()) < 0.5
    reliability.handled(AREA, "EXIF-rotated JPEG (orientation 6)",
                        "rotated as a viewer shows it")

    tiny = d / "one.png"
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tiny)
    x = load_image(tiny, 3, (32, 32))
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.full_like(x, 128 / 255))
    reliability.handled(AREA, "1×1 image", "resized to the model's input size")


def test_folder_of_1000_mixed_files(tmp_path, grey_checkpoint, capsys, reliability) -> None:
    """1,000 files: 900 good (PNG/JPEG/GIF/CMYK, 8–40 px), 100 bad (empty, truncated,
    text, bomb header); the good ones are written, the bad ones listed, exit 1."""
    src = tmp_path / "in"
    src.mkdir()
    g = np.random.default_rng(0)
    bad, good = [], []
    jpeg = None
    for i in range(1000):
        kind = i % 10
        if kind == 9:  # every tenth file is broken, four ways
            p = src / f"f{i:04d}.{['jpg', 'png', 'gif', 'png'][(i // 10) % 4]}"
            how = (i // 10) % 4
            if how == 0:
                p.write_bytes(b"")
            elif how == 1:
                p.write_bytes(jpeg[: len(jpeg) // 3] if jpeg else b"\x89PNG")
            elif how == 2:
                p.write_text("GIF89a but not really")
            else:
                _bomb_png(p)
            bad.append(p)
            continue
        side = int(g.integers(8, 41))
        a = (g.random((side, side, 3)) * 255).astype(np.uint8)
        fmt = ["png", "jpg", "gif", "cmyk"][kind % 4]
        p = src / f"f{i:04d}.{'jpg' if fmt == 'cmyk' else fmt}"
        im = Image.fromarray(a)
        (im.convert("CMYK") if fmt == "cmyk" else im).save(p)
        if fmt == "jpg" and jpeg is None:
            jpeg = p.read_bytes()
        good.append(p)
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--checkpoint", str(grey_checkpoint), "--out", str(out),
               "--format", "rgba"])
    err = capsys.readouterr().err
    assert rc == 1
    written = sorted(out.iterdir())
    assert [p.name for p in written] == sorted(f"{p.stem}.png" for p in good)
    assert not list(out.glob(".*"))  # no temporary file left behind
    for p in written[::50]:
        with Image.open(p) as im:
            im.verify()
    listed = err.split("image(s) failed:")[1].split()
    assert sorted(listed) == sorted(str(p) for p in bad)
    reliability.handled(AREA, "a folder of 1,000 mixed files (900 good, 100 broken)",
                        "900 explanations written, the 100 bad files listed, exit code 1, "
                        "no temporary file left")
