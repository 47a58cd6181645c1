#!/usr/bin/env bash
# Run the whole test suite against a real local Kafka broker (started here if none runs).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH"
started=0
if [ -z "${STREAMS_BROKER:-}" ]; then
  if ! streams kafka status >/dev/null 2>&1; then
    streams kafka start || exit 1
    started=1
  fi
  export STREAMS_BROKER=127.0.0.1:9092
fi
# Two pytest workers: the shared broker's tests run one after another on one of them, the
# tests with brokers of their own on the other (see tests/conftest.py).
python -m pytest -p no:cacheprovider -n 2 --dist loadgroup "$@"
status=$?
if [ "$started" = 1 ]; then streams kafka stop; fi
exit $status
