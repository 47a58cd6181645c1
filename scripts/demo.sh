#!/usr/bin/env bash
# Demo: a local Kafka broker, then two reference topologies on generated input:
# profile_notifications (stateless) and trip_stats (windowed aggregations per city and rider, a
# RocksDB table per driver, late rides to rides-late).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
streams kafka start
export STREAMS_BROKER=127.0.0.1:9092
mkdir -p .streams
workers=()
trap 'for w in "${workers[@]}"; do kill -TERM "$w" 2>/dev/null || true; done' EXIT

echo; echo "== topologies"; streams topologies
echo; echo "== generating input: 5000 profile views, 20000 rides"
streams generate profile_notifications --count 5000
streams generate trip_stats --count 20000

echo; echo "== starting one worker per topology (logs in .streams/)"
streams worker profile_notifications --metrics-port 9400 > .streams/demo-profile_notifications.log 2>&1 &
workers+=($!)
streams worker trip_stats --metrics-port 9401 > .streams/demo-trip_stats.log 2>&1 &
workers+=($!)
sleep 15

echo; echo "== profile_notifications: views by recruiters, hiring managers, CEOs, CTOs"
streams consume profile-views --count
streams consume profile-view-notifications --count
streams consume profile-view-notifications --limit 5

echo; echo "== trip_stats: final 1-minute windows per city (each emitted once, when it closes)"
streams consume rides-per-city-1m --count
streams consume rides-per-city-1m --limit 5
echo; echo "== trip_stats: rides later than the 30 s grace, once per windowed aggregation they missed (whole topic, all runs so far)"
streams consume rides-late --count

echo; echo "== trip_stats: the tables (RocksDB, read-only while the worker runs)"
streams tables list trip_stats
streams tables get trip_stats driver-totals d7
streams tables get trip_stats driver-totals d42
echo; echo "== trip_stats: the still-open 5-minute windows of berlin"
streams tables get trip_stats rides-per-city-5m berlin || true
echo; echo "== a few worker metrics (http://127.0.0.1:9401/metrics)"
curl -s http://127.0.0.1:9401/metrics | grep -E '^streams_(events_consumed_total|commits_total|table_keys)' | head -6 || true

echo; echo "== stopping the workers (SIGTERM: finish the batch, commit, exit 0)"
for w in "${workers[@]}"; do kill -TERM "$w"; wait "$w" && echo "worker $w exited cleanly"; done
workers=()
echo; echo "The broker keeps running; stop it with: .venv/bin/streams kafka stop"
