#!/usr/bin/env bash
# The main job: set up (idempotent), then train → explain → evaluate on
# Fashion-MNIST and write a report (outputs/main/report.html).  Re-running
# resumes/reuses finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bcosnet main "$@"
