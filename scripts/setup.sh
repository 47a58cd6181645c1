#!/usr/bin/env bash
# Create .venv and install the project with its test and bench extras (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import streams, pytest, hypothesis, yaml, faust, quixstreams, matplotlib, ruff, mypy" 2>/dev/null \
   || [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "installing the project into .venv (log: .venv/install.log) ..."
  if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e '.[test,bench]'; } \
       > .venv/install.log 2>&1; then
    tail -20 .venv/install.log
    echo "error: installing the project failed (see .venv/install.log)" >&2
    exit 1
  fi
  touch .venv/.installed
fi
# Prometheus + promtool for the monitoring tests (tests/integration/test_prometheus.py and
# the config checks); without them those tests are skipped with a reason.
if ! bash scripts/install-prometheus.sh; then
  echo "warning: prometheus not installed; the Prometheus tests will be skipped" >&2
fi
