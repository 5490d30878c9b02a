"""``bcosnet app`` in a real browser: Debian's headless Chromium driven by
Playwright, against one app process (started with the CLI on a free port of
127.0.0.1 and stopped with Ctrl-C at the end) shared by every test here.

The checks are the subtests of one test, so that pytest-xdist runs them in one
worker against one app (each reports on its own; a failed one does not stop the
others).  With ``BCOSNET_APP_SCREENSHOTS=DIR`` they also write the
screenshots of docs/app.md into DIR; ``BCOSNET_APP_TEST_FOLDER=DIR`` runs them
against another main job's folder than the small one tests/app/conftest.py builds
(it needs a saved ``bcosnet neurons --layer features.2 --limit 300 --top 8`` run
in DIR/neurons; docs/app.md has the commands)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import NEURON_LAYER

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("BCOSNET_APP_SCREENSHOTS")
#: A line of the Explain/Neurons views: Σ contributions S + bias B = T; logit L; difference D
LINE = re.compile(r"(?P<name>[^\n]+?) — Σ contributions (?P<sum>-?[\d.]+) "
                  r"\+ bias (?P<bias>-?[\d.]+) = (?P<total>-?[\d.]+); "
                  r"(?:logit|neuron value) (?P<value>-?[\d.]+); "
                  r"difference (?P<diff>-?[\d.]+e[-+]\d+)")

if CHROMIUM is None:  # the set-up installs it (scripts/setup.sh)
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _App:
    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]) -> None:
        self.proc, self.url, self.lines = proc, url, lines


@pytest.fixture(scope="module")
def app_folder(request: pytest.FixtureRequest) -> Path:
    """The main job's folder the app opens."""
    given = os.environ.get("BCOSNET_APP_TEST_FOLDER")
    return Path(given).resolve() if given else request.getfixturevalue("main_folder")


@pytest.fixture(scope="module")
def app(app_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """``bcosnet app MAIN_FOLDER`` on a free port; at the end Ctrl-C must stop it
    cleanly (exit code 0, 'stopped')."""
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bcosnet", "app", str(app_folder), "--port", str(port)],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    url = None
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        m = next((re.search(r"serving (http://\S+)", ln) for ln in list(lines)
                  if "serving" in ln), None)
        url = m.group(1) if m else None
        time.sleep(0.2)
    if url is None:
        proc.kill()
        pytest.fail("bcosnet app did not print its address:\n" + "".join(lines))
    assert url == f"http://127.0.0.1:{port}/"
    yield _App(proc, url, lines)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    rc = proc.wait(timeout=60)
    reader.join(timeout=5)
    assert rc == 0, "".join(lines)
    assert "bcosnet app: stopped" in "".join(lines)


@pytest.fixture(scope="module")
def browser_page(app: _App):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.requests = []  # type: ignore[attr-defined]
        page.on("request", lambda r: page.requests.append(r.url))  # type: ignore[attr-defined]
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.wait_for_selector("#upload")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Fashion-MNIST test image as PNG (enlarged 2×), a text file named .png and a
    decompression bomb (a PNG whose header claims 10 000 × 10 000 pixels)."""
    from PIL import Image

    from bcosnet.data import fashion_mnist

    d = tmp_path_factory.mktemp("images")
    test = fashion_mnist(None, "test")
    for i, name in ((0, "boot.png"), (1, "pullover.png")):
        a = (test[i][0][0].numpy() * 255).round().astype(np.uint8).repeat(2, 0).repeat(2, 1)
        Image.fromarray(a, "L").save(d / name)
    (d / "notes.png").write_text("this is not an image\n")
    Image.new("1", (10_000, 10_000)).save(d / "bomb.png")
    return {"good": d / "boot.png", "other": d / "pullover.png", "text": d / "notes.png",
            "bomb": d / "bomb.png"}


def _text(page, selector: str) -> str:
    return page.inner_text(selector)


def _wait_text(page, selector: str, needle: str) -> str:
    page.wait_for_function(
        "([s, n]) => { const e = document.querySelector(s); return e && e.innerText.includes(n); }",
        arg=[selector, needle])
    return _text(page, selector)


def _src(page, selector: str) -> str:
    return page.get_attribute(f"{selector} img", "src") or ""


def _lines(text: str) -> list[dict[str, str]]:
    found = [m.groupdict() for m in LINE.finditer(text)]
    assert found, f"no completeness line in {text!r}"
    return found


def _check_completeness(row: dict[str, str]) -> None:
    s, b, total, value, diff = (float(row[k]) for k in ("sum", "bias", "total", "value", "diff"))
    assert s + b == pytest.approx(total, abs=2e-6)          # the printed sum adds up
    tol = 1e-4 + 1e-6 * abs(value)  # float32 rounding
    assert abs(total - value) < tol                         # Σ contributions + bias = logit
    assert abs(diff) < tol and diff == pytest.approx(total - value, abs=2e-6)


def _shot(page, name: str, selector: str | None = None) -> None:
    """Screenshot for docs/app.md (only with BCOSNET_APP_SCREENSHOTS), shrunk to a
    64-colour palette."""
    if not SHOTS:
        return
    from PIL import Image

    out = Path(SHOTS) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": height})  # lazy images load
    page.wait_for_function("() => [...document.images].every(i => i.complete && "
                           "i.naturalWidth > 0)")
    if selector:
        page.locator(selector).screenshot(path=str(out))
    else:
        page.screenshot(path=str(out), full_page=True)
    page.set_viewport_size(size)
    im = Image.open(out).convert("RGB")
    im.thumbnail((1000, 1400))
    im.quantize(64).save(out, optimize=True)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def _upload(page, path: Path) -> None:
    page.set_input_files("#upload input[type=file]", str(path))


def _ensure_explained(page, images: dict[str, Path]) -> None:
    """An image explained (when a test runs on its own)."""
    if "difference" not in _text(page, "#completeness"):
        _upload(page, images["good"])
        _wait_text(page, "#completeness", "difference")


def check_page_loads_offline_with_the_main_jobs_models(page, app, images, app_folder) -> None:
    assert "fmnist_bcos" in _text(page, "#model-info")
    assert "fashion-mnist" in _text(page, "#model-info")
    hosts = {re.match(r"\w+://([^/]+)", u).group(1) for u in page.requests
             if not u.startswith(("data:", "blob:"))}
    assert hosts == {app.url.split("/")[2]}, f"requests left the machine: {hosts}"


def check_upload_explain_click_a_class(page, app, images, app_folder) -> None:
    _tab(page, "Explain")
    _upload(page, images["good"])
    text = _wait_text(page, "#completeness", "difference")
    first = _lines(text)
    assert len(first) == 1
    _check_completeness(first[0])
    assert "56×56" in _text(page, "#image-notes")          # another size than trained: said
    src1 = _src(page, "#explanation")
    # click another class of the top 5: it is explained beside the first one
    names = page.locator("#top5 button.confidence-set dt").all_inner_texts()
    assert len(names) == 5
    other = next(n for n in names if n != first[0]["name"].strip("*"))
    page.locator(f'#top5 button[data-testid="{other}-confidence-set"]').click()
    text = _wait_text(page, "#completeness", other)
    rows = _lines(text)
    assert [r["name"].strip("*") for r in rows] == [first[0]["name"].strip("*"), other]
    for r in rows:
        _check_completeness(r)
    page.wait_for_function("([s, old]) => { const i = document.querySelector(s + ' img');"
                           " return i && i.src !== old; }", arg=["#explanation", src1])
    _shot(page, "explain")
    # the labelled figure (made just after the explanation is shown) downloads as a PNG
    from PIL import Image

    deadline = time.monotonic() + 30
    while True:
        try:
            with page.expect_download(timeout=5_000) as dl:
                page.click("#download")
            break
        except Exception:  # the figure is still being made
            if time.monotonic() > deadline:
                raise
    fig = Image.open(dl.value.path())
    assert fig.format == "PNG" and fig.width > 200 and fig.height > 200


def check_neuron_and_its_top_images(page, app, images, app_folder) -> None:
    _ensure_explained(page, images)
    _tab(page, "Neurons")
    page.locator("#layer input").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(NEURON_LAYER)} ")).click()
    page.fill("#channel input", "1")
    page.click("#neuron-go")
    text = _wait_text(page, "#neuron-completeness", f"{NEURON_LAYER} channel 1")
    _check_completeness(_lines(text)[0])
    assert _src(page, "#neuron-panel")
    # computed now, over the first 300 test images
    page.fill("#top-limit input", "300")
    page.click("#top-go")
    note = _wait_text(page, "#top-note", "computed now")
    assert "first 300 test images" in note
    page.wait_for_function("() => document.querySelectorAll('#top-gallery img').length >= 8")
    computed = page.locator("#top-gallery .caption-label"
                            ).all_inner_texts()
    _shot(page, "neurons")
    # from the saved `bcosnet neurons` run of the same layer (its --limit was 300 too)
    page.locator("#top-source label", has_text="saved").click()
    page.click("#top-go")
    _wait_text(page, "#top-note", "from the saved run")
    saved = page.locator("#top-gallery .caption-label"
                         ).all_inner_texts()
    assert len(computed) == 8  # both ranked the same 300 images: the same top images
    assert [c.split(",")[0] for c in saved] == [c.split(",")[0] for c in computed]


def check_compare_every_method(page, app, images, app_folder) -> None:
    from bcosnet import attribution

    _ensure_explained(page, images)
    _tab(page, "Compare")
    page.click("#compare-go")
    n = len(attribution.available())
    _wait_text(page, "#compare-status", f"all {n} methods done")
    table = _text(page, "#compare-table")
    for m in attribution.available():
        assert re.search(rf"\b{m}\b", table), f"{m} missing from the timing table"
    page.wait_for_function(f"() => document.querySelectorAll('#compare-gallery img').length "
                           f">= {n + 1}")
    _shot(page, "compare")


def check_browse_a_pointing_game_grid(page, app, images, app_folder) -> None:
    from bcosnet.evaluation.pointing_game import PointingGameResult

    played = PointingGameResult.load(app_folder / "pointing_game" / "bcos" /
                                     "pointing_game.json").methods
    _tab(page, "Pointing game")
    results = _wait_text(page, "#pg-results", "gradcam")
    assert "standard" in results and "bcos" in results
    assert _src(page, "#pg-boxplot")
    page.click("#pg-go")
    _wait_text(page, "#pg-status", f"grid 0: all {len(played)} methods shown")
    caps = page.locator("#pg-gallery .caption-label").all_inner_texts()
    scores = [re.search(r"score ([\d.]+), saved ([\d.]+)", c) for c in caps]
    assert [c.split(":")[0] for c in caps] == played and all(scores), caps
    for m in scores:  # the map recomputed here scores as the game saved it
        assert float(m.group(1)) == pytest.approx(float(m.group(2)), abs=1e-3)
    src0 = _src(page, "#grid-image")
    _shot(page, "pointing_game")
    page.fill("#pg-grid input", "1")
    page.click("#pg-go")
    _wait_text(page, "#pg-status", f"grid 1: all {len(played)} methods shown")
    assert _src(page, "#grid-image") != src0


def check_bad_input_is_reported_and_the_app_keeps_working(page, app, images,
                                                          app_folder) -> None:
    _tab(page, "Explain")
    _upload(page, images["text"])
    msg = _wait_text(page, "#status", "Error")
    assert "notes.png" in msg and "cannot read the image" in msg
    _upload(page, images["bomb"])
    msg = _wait_text(page, "#status", "decompression bomb")
    assert "10000×10000" in msg
    # a checkpoint of another architecture
    page.get_by_text("Load another model").click()
    page.fill("#load-path textarea, #load-path input", str(app_folder / "bcos" /
                                                          "checkpoint.pt"))
    page.locator("#load-arch input").fill("cifar_resnet20")
    page.get_by_role("option", name="cifar_resnet20", exact=True).click()
    page.click("#load")
    msg = _wait_text(page, "#model-status", "Error")
    assert "fmnist_bcos" in msg and "cifar_resnet20" in msg
    # still serving: another image is explained and the message is gone
    src = _src(page, "#explanation")
    _upload(page, images["other"])
    page.wait_for_function("([s, old]) => { const i = document.querySelector(s + ' img');"
                           " return i && i.src !== old; }", arg=["#explanation", src])
    assert "Error" not in _text(page, "#status")
    _check_completeness(_lines(_wait_text(page, "#completeness", "difference"))[0])


CHECKS = [check_page_loads_offline_with_the_main_jobs_models, check_upload_explain_click_a_class,
          check_neuron_and_its_top_images, check_compare_every_method,
          check_browse_a_pointing_game_grid, check_bad_input_is_reported_and_the_app_keeps_working]


def test_the_app_in_a_browser(browser_page, app, images, app_folder, subtests) -> None:
    """Every check above, in this order, on one page of one app."""
    for check in CHECKS:
        with subtests.test(check.__name__.removeprefix("check_")):
            check(browser_page, app, images, app_folder)
