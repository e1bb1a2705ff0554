#!/usr/bin/env bash
# Create the virtual environments of the Kafka benchmark's baselines (benchmarks/kafka.py).
# Each gets its own venv: quixstreams 3.28 pins confluent-kafka < 2.13 and pathway 0.33 pins
# pyarrow < 26, which would downgrade Sluice's own environment.
set -euo pipefail
PYTHON=${PYTHON:-python3}
ROOT=${SLUICE_BENCH_VENVS:-$HOME/.cache/sluice}
mkdir -p "$ROOT"
for spec in "quix:quixstreams[parquet]==3.28.*" "pathway:pathway==0.33.*"; do
  name=${spec%%:*}
  venv="$ROOT/bench-$name"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "${spec#*:}"
  echo "$name: $venv/bin/python"
done
