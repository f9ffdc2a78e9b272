#!/usr/bin/env bash
# Set up hierlens in a virtual environment (.venv) from the committed lock and run one job:
#   bash bootstrap.sh demo          # the core install only; train a small model, write a report
#   bash bootstrap.sh test          # the dev install (all extras) and browser; lint and test
#   bash bootstrap.sh setup         # only set up the dev environment
#   bash bootstrap.sh lock          # re-resolve requirements/lock.txt and oldest.txt (uv)
#   bash bootstrap.sh test-newest   # the suite against the newest releases (.venv-newest)
#   bash bootstrap.sh test-oldest   # the suite against the oldest supported (.venv-oldest)
# Extra arguments go to the job (pytest for the test jobs, the CLI for demo).
# requirements/lock.txt pins every dependency but torch: on a machine without an NVIDIA GPU
# the tested CPU build (torch 2.13.0) is installed first, so pip never pulls the multi-GB CUDA
# build; with a GPU the regular (CUDA) build is used and kept.
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"
shift || true
PY="${PYTHON:-python3}"
LOCK=requirements/lock.txt
OLDEST=requirements/oldest.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1

make_venv() {  # make_venv DIR: a venv with torch in it
    local dir=$1
    [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
    if ! "$dir/bin/python" -c "import torch" >/dev/null 2>&1; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            "$dir/bin/python" -m pip install --quiet "torch>=2.6"
        else
            # CPU-only machine: the CPU wheel from pip's local find-links when there is one,
            # else from PyTorch's CPU index.
            "$dir/bin/python" -m pip install --quiet --no-deps --no-index "torch==2.13.0" 2>/dev/null \
                || "$dir/bin/python" -m pip install --quiet "torch==2.13.0" \
                    --index-url https://download.pytorch.org/whl/cpu \
                    --extra-index-url https://pypi.org/simple
        fi
    fi
}

# Headless Chromium for the report's browser tests: installed where this user may (root with
# apt-get); elsewhere the browser tests skip and say so.
browser_note=""
has_program() {  # has_program NAME: an executable NAME on PATH (bash's command -v alone also
    # reports a file that is not executable)
    local found
    found=$(command -v "$1" 2>/dev/null) && [ -x "$found" ]
}
provision_browser() {
    if has_program chromium && has_program chromedriver; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing headless Chromium for the browser tests (apt-get) ..." >&2
        if apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; then
            return
        fi
    fi
    browser_note="Chromium or chromedriver is missing and could not be installed here (needs root and apt-get): the browser tests were skipped. Install them with: apt-get install -y chromium chromium-driver"
}

run_tests() {  # run_tests VENV [pytest args]: the suite; exit status of pytest
    local venv=$1
    shift
    provision_browser
    local status=0
    "$venv/bin/python" -m pytest -q "$@" || status=$?
    if [ -n "$browser_note" ]; then
        echo "note: $browser_note" >&2
    fi
    return $status
}

case "$job" in
    setup)
        make_venv .venv
        .venv/bin/python -m pip install --quiet -c "$LOCK" -e ".[dev]"
        ;;
    demo)
        make_venv .venv
        .venv/bin/python -m pip install --quiet -c "$LOCK" -e .
        exec .venv/bin/hierlens demo "$@"
        ;;
    test)
        make_venv .venv
        .venv/bin/python -m pip install --quiet -c "$LOCK" -e ".[dev]"
        .venv/bin/ruff check .  # lint with the locked ruff (its rules move between releases)
        run_tests .venv "$@"
        ;;
    test-newest)
        # the newest releases the ranges in pyproject.toml admit, ignoring the lock: run before
        # refreshing the lock (bash bootstrap.sh lock), so a release that breaks fails here
        # (torch stays the build make_venv chose: an eager upgrade would swap a CPU build for
        # the multi-GB CUDA one)
        make_venv .venv-newest
        torch_pin=$(.venv-newest/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch'))")
        .venv-newest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
            -e ".[dev]" "$torch_pin"
        .venv-newest/bin/python -m pip list --format=freeze 2>/dev/null \
            | grep -iE '^(transformers|transformer-lens|numpy|scipy)==' >&2
        run_tests .venv-newest "$@"
        ;;
    test-oldest)
        # the lowest version of every direct dependency (requirements/oldest.txt)
        make_venv .venv-oldest
        .venv-oldest/bin/python -m pip install --quiet -c "$OLDEST" -e ".[dev]"
        run_tests .venv-oldest "$@"
        ;;
    lock)
        make_venv .venv
        .venv/bin/python -m pip install --quiet uv
        .venv/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
            --override requirements/no-torch.txt --upgrade -o "$LOCK"
        .venv/bin/uv pip compile pyproject.toml --extra dev --resolution lowest-direct \
            --python-version 3.11 --override requirements/no-torch.txt --upgrade -o "$OLDEST"
        echo "lock refreshed: run bash bootstrap.sh test and test-oldest before committing" >&2
        ;;
    *)
        echo "usage: bash bootstrap.sh demo|test|setup|lock|test-newest|test-oldest [arguments]" >&2
        exit 2
        ;;
esac
