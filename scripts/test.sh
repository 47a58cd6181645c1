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
if [ "$#" -gt 0 ]; then
  python -m pytest -p no:cacheprovider "$@"
  status=$?
else
  # The whole suite as two pytest processes side by side: the shared broker's tests one after
  # another (they share topology topics), and everything else (broker-free tests, tests that
  # start brokers of their own) in the other, whose report follows the first one's.
  others_log="$(mktemp -t streams-tests.XXXXXX)"
  python -m pytest -p no:cacheprovider -m "not shared_broker" >"$others_log" 2>&1 &
  others=$!
  # Interrupted (Ctrl-C, a CI timeout): stop the other process too, through its fixtures'
  # teardown (which stops the brokers its tests started).
  trap 'kill -INT "$others" 2>/dev/null; wait "$others"; rm -f "$others_log"; exit 130' INT TERM
  echo "== tests on the shared broker $STREAMS_BROKER"
  python -m pytest -p no:cacheprovider -m shared_broker
  status=$?
  wait "$others"
  others_status=$?
  echo "== broker-free tests and tests with brokers of their own"
  cat "$others_log"
  rm -f "$others_log"
  if [ "$status" = 0 ]; then status=$others_status; fi
fi
if [ "$started" = 1 ]; then streams kafka stop; fi
exit $status
