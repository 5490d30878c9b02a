"""The docs site (mkdocs.yml: docs/*.md + the API reference from the docstrings) builds
strictly: a broken link, a missing reference, a page left out of the navigation or a
docstring warning (griffe) fails the build, and so this test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(config), "-d", str(site)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)


def nav_pages(nav: list) -> list[str]:
    """The Markdown files of mkdocs.yml's ``nav``, in order."""
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_docs_site_builds_strictly_with_every_page_and_the_api(tmp_path: Path) -> None:
    done = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    warnings = [ln for ln in done.stderr.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert done.returncode == 0, "\n".join(warnings) or done.stderr[-3000:]

    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    assert sorted(nav_pages(config["nav"])) == pages  # every page in the navigation, once
    built = sorted((tmp_path / "site").rglob("index.html"))
    assert len(built) == len(pages), [p.relative_to(tmp_path) for p in built]

    # the API reference is generated from the docstrings: signatures and their text
    api = (tmp_path / "site" / "api" / "bcosnet" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", api)
    for name in ("bcosnet.explain", "bcosnet.create_model", "bcosnet.from_pretrained",
                 "bcosnet.to_rgba", "bcosnet.Explanation"):
        assert f'id="{name}"' in api, name
    assert "The model's parameters receive no gradients" in text  # explain's docstring
    nn_api = (tmp_path / "site" / "api" / "nn" / "index.html").read_text(encoding="utf-8")
    assert 'id="bcosnet.nn.BcosConv2d"' in nn_api


def test_the_site_config_is_strict(tmp_path: Path) -> None:
    """The same configuration turns a broken link and a docstring warning into a failed
    build (what the test above relies on)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    pkg = tmp_path / "src" / "tinypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        'def f(a: int) -> int:\n    """F.\n\n    Args:\n        a, b: two at once.\n    """\n'
        "    return a\n", encoding="utf-8")
    (docs / "api.md").write_text("# api\n\n::: tinypkg\n", encoding="utf-8")

    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n", encoding="utf-8")
    cfg = tmp_path / "mkdocs.yml"
    cfg.write_text(
        f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: {docs}\nnav: [index.md, api.md]\n"
        f"plugins:\n  - mkdocstrings:\n      handlers:\n        python:\n"
        f"          paths: [{tmp_path / 'src'}]\n"
        f"          options: {{docstring_style: google}}\n", encoding="utf-8")
    broken = mkdocs_build(cfg, tmp_path / "site")
    assert broken.returncode != 0
    log = broken.stdout + broken.stderr
    assert "Aborted with 3 warnings in strict mode" in log, log
    assert "contains a link 'missing.md', but the target is not found" in log
    assert "Parameter 'a, b' does not appear in the function signature" in log
