#!/usr/bin/env bash
# The lint and type gate (settings in pyproject.toml): ruff over the code, tests and reference
# topologies, mypy over the package and the topologies. Exits non-zero on any error.
# LINT_PYTHON: an interpreter that has the project, ruff and mypy (skips the set-up).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${LINT_PYTHON:-}" ]; then
  PY="$LINT_PYTHON"
else
  bash scripts/setup.sh || exit 1
  PY=.venv/bin/python
fi
status=0
echo "ruff check streams tests topologies"
"$PY" -m ruff check streams tests topologies || status=1
echo "mypy (streams, topologies)"
"$PY" -m mypy || status=1
exit $status
