#!/usr/bin/env bash
# Install Sluice with its test dependencies into .venv and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch: the CPU wheel (the `torch` extra); a plain `pip install torch` may pull a CUDA build.
.venv/bin/python -m pip install --quiet -e ".[dev]" "torch==2.13.0"

# The dashboard test drives Debian's chromium; install it when we are allowed to.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "warning: could not install chromium"
fi

exec .venv/bin/python -m pytest "$@"
