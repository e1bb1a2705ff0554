#!/usr/bin/env bash
# Create (or reuse) a virtual environment holding Apache Airflow and Sluice (editable), for
# the real-Airflow test of exported DAGs (tests/integration/test_airflow_real.py).
# Usage: bash scripts/airflow_venv.sh [VENV_DIR]
#   VENV_DIR defaults to ${SLUICE_AIRFLOW_VENV:-$HOME/.cache/sluice/airflow-venv}; cache that
#   directory in CI. AIRFLOW_VERSION overrides the pinned release.
# The venv is rebuilt when Airflow is missing or another version, and Sluice is reinstalled
# (incrementally) when this checkout or its pyproject.toml changed.
# Airflow 3.x: Airflow 2.x pins SQLAlchemy<2, which Sluice cannot use.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${SLUICE_AIRFLOW_VENV:-$HOME/.cache/sluice/airflow-venv}}
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.sluice-stamp"
WANTED="airflow=$AIRFLOW_VERSION repo=$REPO pyproject=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"

airflow_ok() {
  [ -x "$VENV/bin/airflow" ] && [ "$("$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("apache-airflow"))' 2>/dev/null)" \
    = "$AIRFLOW_VERSION" ]
}

if ! airflow_ok; then
  echo "building $VENV (apache-airflow $AIRFLOW_VERSION)"
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "error: $VENV exists and is not a virtual environment; not replacing it" >&2
    exit 1
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
  # One resolution for both, so Airflow's pins and Sluice's requirements agree.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "apache-airflow==$AIRFLOW_VERSION" -e "$REPO"
  echo "$WANTED" >"$STAMP"
fi
"$VENV/bin/python" -c "import airflow.sdk, sluice.airflow" ||
  { echo "error: $VENV does not import airflow and sluice" >&2; exit 1; }
echo "ready: $VENV (apache-airflow $AIRFLOW_VERSION)"
