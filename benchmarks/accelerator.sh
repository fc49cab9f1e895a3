#!/usr/bin/env bash
# The prepared accelerator run (issue 30): eval, SFT, DPO and preserve-training figures of ours beside plain lm-eval
# and TRL on one GPU, at most 8 minutes, one JSON (see benchmarks/accelerator.py for what each figure is).
#
#   benchmarks/accelerator.sh [--wheels DIR] [--cpu] [--small] [--out FILE] [--budget-s S] [--model M] [--large-model DIR]
#
# A lent machine reaches no network: what is missing there is installed from local wheels (--wheels, default
# ./.whl, or $LAF_WHEELS) into a venv that sees the system's packages (torch stays the machine's CUDA build).
# Prepare the folder on a machine with network, for the device's Python (3.12 on the lent H100/H200 image):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl lm-eval==0.4.13 trl==1.16.0 pydantic pyyaml rich filelock jinja2
# then drop torch/nvidia wheels from .whl (the machine has them). --cpu --small runs in seconds on any machine
# (tests/test_accelerator.py does, so this script cannot rot).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${LAF_WHEELS:-$REPO/.whl}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || { echo "accelerator.sh: --wheels needs a folder" >&2; exit 2; }; WHEELS="$2"; shift 2 ;;
    --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exec "$PY" "$REPO/benchmarks/accelerator.py" --help ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

# module -> the distribution that provides it; torch is never installed here (a GPU machine keeps its CUDA build)
MISSING="$("$PY" - <<'EOF'
import importlib.util
need = {"transformers": "transformers", "peft": "peft", "lm_eval": "lm-eval", "trl": "trl", "datasets": "datasets",
        "pydantic": "pydantic", "yaml": "pyyaml", "rich": "rich", "filelock": "filelock", "jinja2": "jinja2", "safetensors": "safetensors"}
print(" ".join(d for m, d in need.items() if importlib.util.find_spec(m) is None))
EOF
)"
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "accelerator.sh: torch is not importable with $PY; install the build for your machine (CPU or CUDA) first" >&2
  exit 3
fi
if [ -n "$MISSING" ]; then
  if [ ! -d "$WHEELS" ]; then
    echo "accelerator.sh: missing $MISSING and no wheel folder $WHEELS (see the header of this script)" >&2
    exit 3
  fi
  VENV="${LAF_ACCEL_VENV:-${TMPDIR:-/tmp}/laf-accel-venv}"
  if [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV" 2>/dev/null; then
    echo "accelerator.sh: installing $MISSING from $WHEELS into $VENV" >&2
    # shellcheck disable=SC2086  # one word per distribution
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" $MISSING
    PY="$VENV/bin/python"
  else  # no venv module (a bare image): every wheel of the folder, as files, beside the system's packages
    SITE="${TMPDIR:-/tmp}/laf-accel-site"
    echo "accelerator.sh: no venv module; installing every wheel of $WHEELS into $SITE" >&2
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
cd "$REPO"
exec "$PY" benchmarks/accelerator.py "${ARGS[@]+"${ARGS[@]}"}"
