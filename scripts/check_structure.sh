#!/usr/bin/env bash
# The code's shape: no import circle in src/bcosnet and no function body over 80
# lines (tests/test_structure.py, also part of the test suite), and at most
# MAX_PAIRS pairs of places in src/ that repeat six or more lines (the same lines
# or the same shape), as the `duplicates` command counts them.  `duplicates` is a
# development tool, not a dependency (CI machines lack it): without it this script
# says so and fails.
#
#   bash scripts/check_structure.sh          # exit 0: all three hold
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_PAIRS=${MAX_PAIRS:-4}
PY=${PYTHON:-.venv/bin/python}

status=0
"$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_structure.py || status=1

if ! command -v duplicates >/dev/null 2>&1; then
    echo "check_structure: the duplicates command is not installed: repeated code not counted" >&2
    exit 1
fi
report=$(duplicates --repo src --most 200 --seconds 120)
if grep -q "^incomplete:" <<<"$report"; then
    echo "$report" >&2
    echo "check_structure: duplicates did not read all of src/ in time" >&2
    exit 1
fi
first=$(head -n 1 <<<"$report")
case "$first" in
    "no duplicates"*) pairs=0 ;;
    *) pairs=$(awk '{print $1}' <<<"$first") ;;
esac
if ! [[ "$pairs" =~ ^[0-9]+$ ]]; then
    echo "check_structure: cannot read the pair count from: $first" >&2
    exit 1
fi
echo "$report"
if (( pairs > MAX_PAIRS )); then
    echo "check_structure: $pairs pairs of repeated places in src/ (at most $MAX_PAIRS)" >&2
    exit 1
fi
echo "check_structure: $pairs pairs of repeated places in src/ (at most $MAX_PAIRS): ok"
exit "$status"
