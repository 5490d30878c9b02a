#!/usr/bin/env bash
# The docs site (mkdocs.yml: docs/*.md + the API reference from the docstrings).
#   bash scripts/docs.sh              serve it at http://127.0.0.1:8000 (rebuilds on edits)
#   bash scripts/docs.sh build [DIR]  build it strictly into DIR (default: site/, git-ignored);
#                                     any broken link, missing reference or docstring warning fails
# Extra arguments after 'serve' go to 'mkdocs serve' (e.g. -a 0.0.0.0:8001).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_MKDOCS_2_WARNING=1   # mkdocs-material's notice about a future MkDocs, not about our docs
case "${1:-serve}" in
  serve) shift $(( $# > 0 ? 1 : 0 )); exec .venv/bin/mkdocs serve --strict "$@" ;;
  build) exec .venv/bin/mkdocs build --strict --clean -d "${2:-site}" ;;
  *) echo "usage: bash scripts/docs.sh [serve [mkdocs serve options] | build [DIR]]" >&2; exit 2 ;;
esac
