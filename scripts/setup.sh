#!/usr/bin/env bash
# Idempotent set-up: Debian data package, a virtualenv in .venv, bcosnet installed
# editable with its test extra.  Fast when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv

# Real data offline: Fashion-MNIST from Debian (MIT licence).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian package dataset-fashion-mnist"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: /usr/share/datasets/fashion-mnist missing and not root: run" \
         "'sudo apt-get install dataset-fashion-mnist' (or let torchvision download it)" >&2
  fi
fi

# Headless Chromium for the report test (tests/evaluation/test_report.py opens report.html in it).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian package chromium (report test)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium missing and not root: run 'sudo apt-get install chromium' for" \
         "the report test" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi

# Exact versions CI tested (refresh with 'bash scripts/lock.sh'); pyproject.toml
# keeps the ranges for library users.
constraints=requirements/constraints.txt

# Reinstall only when the project metadata or the constraints changed.
stamp="$VENV/.bcosnet-setup"
want=$(cat pyproject.toml scripts/setup.sh requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing bcosnet and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
  # torch/torchvision first, as a pair that imports together.
  "$VENV/bin/python" -m pip install -q -c "$constraints" "torch>=2.1" "torchvision>=0.16" 2>&1 \
    | { grep -v "is ignored" || true; }
  "$VENV/bin/python" -m pip install -q -c "$constraints" -e ".[test]" 2>&1 | { grep -v "is ignored" || true; }
  "$VENV/bin/python" -c "import bcosnet, torch, torchvision" \
    || { echo "setup: bcosnet failed to import" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
