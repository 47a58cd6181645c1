#!/usr/bin/env bash
# Demo: local Kafka broker + the profile_notifications topology on generated input.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
streams kafka start
export STREAMS_BROKER=127.0.0.1:9092
echo; echo "== the topology"; streams describe profile_notifications
echo; echo "== generating 5000 profile views"
streams generate profile_notifications --count 5000
echo; echo "== starting a worker (log: .streams/demo-worker.log)"
mkdir -p .streams
streams worker profile_notifications > .streams/demo-worker.log 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true' EXIT
sleep 12
echo; echo "== first notifications in profile-view-notifications"
streams consume profile-view-notifications --limit 8
echo; echo "== stopping the worker (SIGTERM: finish batch, commit, exit)"
kill -TERM $worker; wait $worker && echo "worker exited cleanly"
trap - EXIT
echo; echo "The broker keeps running; stop it with: .venv/bin/streams kafka stop"
