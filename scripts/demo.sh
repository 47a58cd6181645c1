#!/usr/bin/env bash
# Demo: a local Kafka broker, then four reference topologies on generated input, with what
# THIS run did (records after the offsets marked at its start; earlier runs are left out):
#   trip_stats       windows per city, rider and driver (event time, grace, late rides)
#   order_shipments  a stream-stream join within 7 days, and the orders that never shipped
#   enrichment       stream-table joins (users table, products global table) and branches
#   payments         exactly-once debits and credits, duplicates and bad input
# and three ways to look at a running worker: a table read (`streams tables get`), a metric
# (its /metrics endpoint, found through its Prometheus discovery file), and an interactive
# query over HTTP. Run it again: event time continues where the last run left it, so every
# run shows the same kind of picture.
#
# Usage: bash scripts/demo.sh [--port P]   (the broker's port, default 9092; started if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
port=9092
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    *) echo "usage: bash scripts/demo.sh [--port P]" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
streams kafka start --port "$port"
export STREAMS_BROKER="127.0.0.1:$port"
work=".streams/demo-$port"             # logs, offsets marked at the start, settings
export STREAMS_STATE_DIR="$work/state"  # the workers' RocksDB state, kept across runs
mkdir -p "$work"
demo() { python -m streams.devtools.demo "$@"; }
section() { echo; echo "== $*"; }

workers=()
declare -A pid_of
trap 'for w in "${workers[@]}"; do kill -TERM "$w" 2>/dev/null || true; done' EXIT
# order_shipments: the generated shipments are up to 9 days after their orders, i.e. days
# ahead of the wall clock, which workers otherwise treat as bad timestamps (max_future_ms).
printf 'max_future_ms = -1\n' > "$work/order_shipments.toml"

section "topologies"
streams topologies

section "marking where this run starts (end offsets of the demo's topics)"
demo mark "$work/start-offsets.json"
echo "saved in $work/start-offsets.json; the counts below are of records after these offsets"

section "generating input (event time continues after what the topics already hold)"
# Before the workers start: a worker loads its global tables (enrichment's products) to the
# end before it processes any stream record, so no transaction misses a product sent first.
gens=()
streams generate trip_stats --count 4000 & gens+=($!)
streams generate order_shipments --count 1500 & gens+=($!)
streams generate enrichment --count 3000 & gens+=($!)
streams generate payments --count 3000 --accounts 100 & gens+=($!)
for g in "${gens[@]}"; do wait "$g"; done
echo "(order_shipments' event time moves 9 days per run: shipments come up to 9 days after their"
echo " orders, and each run starts after the newest event of the last)"

section "starting one worker per topology (logs in $work/; metrics on a free port each)"
for name in trip_stats order_shipments enrichment payments; do
  extra=()
  [ "$name" = order_shipments ] && extra=(--config "$work/order_shipments.toml")
  streams worker "$name" --metrics-port 0 "${extra[@]}" > "$work/$name.log" 2>&1 &
  workers+=($!)
  pid_of[$name]=$!
  echo "$name: pid $!"
done

section "waiting until each topology's consumer group has caught up"
if ! demo wait trip_stats order_shipments enrichment payments --timeout 120; then
  echo "the workers' logs: $work/*.log"; exit 1
fi

demo report "$work/start-offsets.json" trip_stats order_shipments enrichment payments

section "table reads (RocksDB, read-only next to the running workers); tables hold every run so far"
echo "driver-totals is not windowed: d7's rides and fares of all runs"
echo "\$ streams tables get trip_stats driver-totals d7"
streams tables get trip_stats driver-totals d7
echo "the 5-minute windows of berlin still open (they close as event time moves on)"
echo "\$ streams tables get trip_stats rides-per-city-5m berlin"
streams tables get trip_stats rides-per-city-5m berlin || true
echo "acc7's balance: its deposits, debits and credits of all runs"
echo "\$ streams tables get payments balances acc7"
streams tables get payments balances acc7

section "service discovery: the workers' files for Prometheus (config/prometheus.yml reads them)"
discovery_file() {  # the file of the worker with pid $2 of topology $1
  ls .streams/discovery/"$1"-*-"$2".json 2>/dev/null | head -1
}
for name in trip_stats payments; do
  file=$(discovery_file "$name" "${pid_of[$name]}")
  echo "$file: $(cat "$file")"
done
payments_target=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["targets"][0])' \
  "$(discovery_file payments "${pid_of[payments]}")")

section "a metric: payments' committed transactions (curl http://$payments_target/metrics)"
curl -s "http://$payments_target/metrics" | grep '^streams_transactions_total{.*result="committed"' || true

section "an interactive query: a table read through the worker's HTTP endpoint"
# Any worker answers: a key owned by another worker is forwarded to its owner (README,
# "Interactive queries and health").
echo "\$ curl http://$payments_target/tables/balances/keys/acc7"
curl -s "http://$payments_target/tables/balances/keys/acc7"; echo
echo "\$ streams tables get trip_stats rides-per-city-1m berlin --worker auto   (the last 3 windows)"
streams tables get trip_stats rides-per-city-1m berlin --worker auto | tail -3
echo "\$ curl http://$payments_target/health"
curl -s "http://$payments_target/health"; echo

section "stopping the workers (SIGTERM: finish the batch, commit, remove the discovery file, exit 0)"
for name in trip_stats order_shipments enrichment payments; do
  w=${pid_of[$name]}
  kill -TERM "$w"
  wait "$w"
  left=$(discovery_file "$name" "$w" || true)
  echo "$name (pid $w) exited cleanly; its discovery file: ${left:-removed}"
done
workers=()
echo; echo "The broker keeps running; stop it with: .venv/bin/streams kafka stop --port $port"
