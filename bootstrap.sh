#!/usr/bin/env bash
# Set up hierlens in a virtual environment (.venv) and run one job:
#   bash bootstrap.sh demo    # train a small model and report its accuracy
#   bash bootstrap.sh test    # lint and run the test suite
#   bash bootstrap.sh setup   # only set up the environment
# On a machine without an NVIDIA GPU the CPU build of PyTorch is installed first, so pip never
# pulls the multi-GB CUDA build; with a GPU the regular (CUDA) build is used.
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"
shift || true
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$VPY" -m pip install --quiet "torch>=2.6"
    else
        # CPU-only machine: the CPU wheel from pip's local find-links when there is one (its
        # dependencies then come from the package index with the project's), else from
        # PyTorch's CPU index.
        "$VPY" -m pip install --quiet --no-deps --no-index "torch==2.13.0" 2>/dev/null \
            || "$VPY" -m pip install --quiet "torch>=2.6" --index-url https://download.pytorch.org/whl/cpu \
                --extra-index-url https://pypi.org/simple
    fi
fi
"$VPY" -m pip install --quiet -e ".[dev]"

case "$job" in
    setup)
        ;;
    demo)
        exec .venv/bin/hierlens demo "$@"
        ;;
    test)
        .venv/bin/ruff check .
        exec "$VPY" -m pytest -q "$@"
        ;;
    *)
        echo "usage: bash bootstrap.sh demo|test|setup [extra arguments]" >&2
        exit 2
        ;;
esac
