"""Latency of ``bcosnet app``: from an image chosen (uploaded) to its explanation
shown in the browser.

For each model, the app is started as a user starts it (``bcosnet app --model NAME``,
random initialisation — the latency does not depend on the weights — in its own
process with ``OMP_NUM_THREADS=--threads``), and headless Chromium (Playwright,
Debian's ``/usr/bin/chromium``) uploads photos scikit-image bundles, one after
another (each a different photo, so every upload is explained anew).  Timed: from
``set_input_files`` to the moment the page shows the new explanation image and its
completeness line — decoding, the model's preprocessing, one forward and one
backward pass, rendering, the round trips and the browser drawing the image.  Also:
a click on another class of the top 5 until its explanation is shown beside the
first, and the server side alone (``views.choose_file`` + ``views.explain_image``
in this process, same threads).  Medians of ``--repeats`` after one warm-up.

Targets (issue 26): ≤ 1 s for ``fmnist_bcos`` (28 px), ≤ 3 s for ``resnet18`` at
224 px, CPU, 2 threads.

    python benchmarks/bench_app.py [--repeats 7] [--threads 2] [--models fmnist_bcos,resnet18]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera", "coins", "moon", "page")
TARGETS = {"fmnist_bcos": 1.0, "resnet18": 3.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: str, threads: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_TEMP_DIR": str(tmp),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bcosnet", "app", "--model", model,
                             "--port", str(port)], env=env, cwd=tmp, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                     daemon=True).start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        for ln in list(lines):
            m = re.search(r"serving (http://\S+)", ln)
            if m:
                return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bcosnet app did not start:\n" + "".join(lines))


def _browser_latencies(url: str, photos: list[Path], repeats: int) -> tuple[list[float],
                                                                             list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    uploads: list[float] = []
    clicks: list[float] = []
    changed = ("([old, n]) => { const i = document.querySelector('#explanation img');"
               " const c = document.querySelector('#completeness');"
               " return i && i.src !== old && c && "
               " (c.innerText.match(/difference/g) || []).length === n; }")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.wait_for_selector("#upload input[type=file]", state="attached")
        for i in range(repeats + 1):
            photo = photos[i % len(photos)]
            old = page.get_attribute("#explanation img", "src") if page.locator(
                "#explanation img").count() else ""
            page.wait_for_selector("#upload input[type=file]", state="attached")
            t0 = time.perf_counter()
            page.set_input_files("#upload input[type=file]", str(photo))
            page.wait_for_function(changed, arg=[old, 1], polling="raf")
            dt = time.perf_counter() - t0
            # a click on the second class of the top 5: both classes side by side
            old = page.get_attribute("#explanation img", "src")
            second = page.locator("#top5 button.confidence-set").nth(1)
            t0 = time.perf_counter()
            second.click()
            page.wait_for_function(changed, arg=[old, 2], polling="raf")
            dc = time.perf_counter() - t0
            if i:  # the first is the warm-up
                uploads.append(dt)
                clicks.append(dc)
            page.wait_for_timeout(300)  # let the figure for the download be made
        browser.close()
    return uploads, clicks


def _server_side(model_name: str, photos: list[Path], repeats: int) -> list[float]:
    import torch

    import bcosnet
    from bcosnet.app import Workspace, views

    torch.manual_seed(0)
    ws = Workspace()
    lm = ws.add(model_name, bcosnet.create_model(model_name), "random init")
    out = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        views.explain_image(lm, views.choose_file(lm, photos[i % len(photos)]))
        if i:
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed uploads per model (≥ 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the app")
    ap.add_argument("--models", default="fmnist_bcos,resnet18")
    args = ap.parse_args()
    if args.repeats < 5:
        ap.error("--repeats must be >= 5 (medians of at least 5)")
    import torch
    from skimage import data

    torch.set_num_threads(args.threads)
    photos = [Path(data.data_dir) / f"{n}.png" for n in PHOTOS]
    photos = [p if p.exists() else p.with_suffix(".jpg") for p in photos]
    print(f"bcosnet app latency, CPU, {args.threads} threads, medians of {args.repeats} "
          f"(after 1 warm-up); load average at start {os.getloadavg()[0]:.2f}")
    print()
    print("| model | input | image chosen → explanation shown (median, min–max) | target | "
          "class clicked → shown beside | server side only |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
            proc, url = _start(name, args.threads, Path(tmp))
            try:
                up, cl = _browser_latencies(url, photos, args.repeats)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        srv = _server_side(name, photos, args.repeats)
        import bcosnet

        info = bcosnet.create_model(name).model_info
        med = statistics.median(up)
        target = TARGETS.get(name)
        met = "met" if target is not None and med <= target else "NOT met"
        verdict = "" if target is None else f"≤ {target:g} s: {met}"
        print(f"| {name} | {info.in_channels}×{info.image_size[0]}×{info.image_size[1]} | "
              f"**{med:.3f} s** ({min(up):.3f}–{max(up):.3f}) | {verdict} | "
              f"{statistics.median(cl):.3f} s | {statistics.median(srv):.3f} s |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
