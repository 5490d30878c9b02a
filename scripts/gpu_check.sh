#!/usr/bin/env bash
# GPU check (issue 14): correctness on CUDA + the three benchmarks, ≤ 5 minutes on one H100/H200.
#
#   bash scripts/gpu_check.sh [PYTHON]        # PYTHON: an interpreter with torch (CUDA build);
#                                             # default python3.  Needs: torch, numpy, tqdm,
#                                             # safetensors (bcosnet's runtime deps); optional: bcos.
#   OUT=dir bash scripts/gpu_check.sh ...     # results in $OUT (default ./gpu_check_out):
#                                             # gpu_check.md (the summary), one .txt log per part.
#   GPU_CHECK_COMPILE=1 ...                   # also time torch.compile in the training benchmark
#
# Uses the repository's src/ (PYTHONPATH), nothing is installed, no network.  Parts that
# need the `bcos` reference package are skipped with a line saying so when it is absent.
# Exit status: 0 when every check passed, 1 otherwise (benchmarks never fail the run).
set -u
cd "$(dirname "$0")/.."
PY="${1:-}"
if [ -z "$PY" ]; then  # the first interpreter that imports torch
  for c in python3 python .venv/bin/python /opt/conda/bin/python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" 2>/dev/null; then PY=$c; break; fi
  done
  PY="${PY:-python3}"
fi
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# .gpu_pylib/ (git-ignored; optional): extra pure-Python packages for a machine without
# them, e.g. the `bcos` reference: cp -r "$(python -c 'import bcos,os;print(os.path.dirname(bcos.__file__))')" .gpu_pylib/
export PYTHONPATH="$PWD/src${PWD:+:$PWD/.gpu_pylib}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
MD="$OUT/gpu_check.md"
fail=0

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: '$PY' has no CUDA-enabled torch (python -c 'import torch' failed or no GPU)" >&2
  exit 2
fi
if "$PY" -c "import bcos.models.pretrained" 2>/dev/null; then HAVE_BCOS=1; else HAVE_BCOS=0; fi
COMPILE=""
[ "${GPU_CHECK_COMPILE:-0}" = 1 ] && COMPILE="--compile"

{
  echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  "$PY" -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, git', end=' ')"
  git rev-parse --short HEAD 2>/dev/null || echo "(no git)"
  echo
  [ "$HAVE_BCOS" = 1 ] || echo "**The bcos package is not importable: reference comparisons skipped.**"
  echo
} > "$MD"

part() {  # part NAME TIMEOUT_S CMD... : run, keep the log, append its Markdown lines
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  echo "== $name"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "   rc=$rc, $((SECONDS - t0)) s (log: $OUT/$name.txt)"
  {
    echo "## $name (rc $rc, $((SECONDS - t0)) s)"
    echo
    grep -E '^(\||\[(PASS|FAIL|SKIP)\]|torch |geometric|ratio|batch )' "$OUT/$name.txt" || true
    [ $rc -eq 124 ] && echo "**timed out after ${limit} s**"
    [ $rc -ne 0 ] && { echo; echo '```'; tail -n 15 "$OUT/$name.txt"; echo '```'; }
    echo
  } >> "$MD"
  return $rc
}

part checks 150 "$PY" benchmarks/gpu_check.py checks --out "$OUT" || fail=1
GPU_CHECK_RUN_DIR="$OUT/smoke_run" part ddp_nccl 90 \
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/gpu_check.py ddp || fail=1

if [ "$HAVE_BCOS" = 1 ]; then
  # shellcheck disable=SC2086
  part bench_layers 150 "$PY" benchmarks/bench_layers.py --device cuda --repeats 30 --batch 64 \
    $COMPILE
  PAIRS="--pair resnet18_v2 --pair densenet121_v2"
else
  echo "bcos not importable: bench_layers and the ResNet/DenseNet training pairs skipped" | tee -a "$MD"
  PAIRS=""
fi
# shellcheck disable=SC2086
[ "$HAVE_BCOS" = 1 ] && part bench_training_224 100 "$PY" benchmarks/bench_training.py \
  --device cuda --steps 15 --warmup 3 --batch 64 --size 224 $PAIRS $COMPILE
# shellcheck disable=SC2086
part bench_training_fmnist 40 "$PY" benchmarks/bench_training.py --device cuda --pair fmnist \
  --steps 20 --warmup 3 $COMPILE
part bench_infer_fmnist 30 "$PY" benchmarks/bench_training.py --device cuda --infer --pair fmnist \
  --steps 20 --warmup 3
part bench_explain 120 "$PY" benchmarks/bench_explain.py --device cuda --batch 32 --size 224 \
  --repeats 5

echo "summary: $MD"
[ $fail -eq 0 ] && echo "all checks passed" || echo "SOME CHECKS FAILED (see $MD)"
exit $fail
