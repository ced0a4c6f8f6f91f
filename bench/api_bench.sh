#!/usr/bin/env bash
# api_bench.sh: throughput and latency of `kinfer api` POST /v1/requests with wrk, over
# loopback, backed by the real local stack (PostgreSQL + Kafka). Not a test: it prints
# figures (docs/benchmarks.md records them with the machine).
#
#   eval "$(deploy/local/stack env)"
#   bench/api_bench.sh [--kinfer build/cli/kinfer] [--duration 15s] [--connections 64]
#                      [--threads 2] [--workers 8] [--api-threads 2]
#
# Uses a scratch database (kf_bench_api_<pid>, dropped at the end) and per-run topics
# (kf.bench.api.<pid>.*), so it never touches the shared dev data.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
kinfer="$root/build/cli/kinfer"
duration=15s connections=64 wthreads=2 workers=8 apithreads=2 linger=2ms
while [ $# -gt 0 ]; do
	case "$1" in
	--kinfer) kinfer=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--connections) connections=$2; shift 2 ;;
	--threads) wthreads=$2; shift 2 ;;
	--workers) workers=$2; shift 2 ;;
	--api-threads) apithreads=$2; shift 2 ;;
	--linger) linger=$2; shift 2 ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "api_bench.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
: "${KINFER_PG_DSN:?set KINFER_PG_DSN (eval \"\$(deploy/local/stack env)\")}"
: "${KINFER_KAFKA_BROKERS:?set KINFER_KAFKA_BROKERS (eval \"\$(deploy/local/stack env)\")}"
command -v wrk >/dev/null || { echo "api_bench.sh: wrk is not installed" >&2; exit 2; }
[ -x "$kinfer" ] || { echo "api_bench.sh: no kinfer binary at $kinfer (--kinfer)" >&2; exit 2; }

db="kf_bench_api_$$"
dsn="$KINFER_PG_DSN dbname=$db"
prefix="kf.bench.api.$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api_pid=""
cleanup() {
	[ -n "$api_pid" ] && kill -TERM "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
	psql -X -q -d "$KINFER_PG_DSN" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -X -q -d "$KINFER_PG_DSN" -c "CREATE DATABASE $db" >/dev/null
"$root/sql/migrate.sh" --quiet ${MIGRATIONS_DIR:+--dir "$MIGRATIONS_DIR"} "$dsn"
"$kinfer" admin --dsn "$dsn" create-tenant --id bench --name Bench --rate 1000000 --burst 1000000 >/dev/null 2>&1
KINFER_BENCH_KEY=$("$kinfer" admin --dsn "$dsn" create-key --tenant bench 2>/dev/null)
export KINFER_BENCH_KEY

KINFER_LOG_LEVEL=warn "$kinfer" api --set api.listen.port="$port" --set pg.dsn="$dsn" \
	--set topics.requests="$prefix.requests" --set topics.control="$prefix.control" \
	--set topics.audit="$prefix.audit" --set api.workers="$workers" \
	--set api.threads="$apithreads" --set api.linger="$linger" 2>"/tmp/$prefix.log" &
api_pid=$!
for _ in $(seq 1 100); do
	curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "api did not become ready" >&2; cat "/tmp/$prefix.log" >&2; exit 1; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "api: threads $apithreads, workers $workers, linger $linger; wrk: threads $wthreads, connections $connections, duration $duration"
# warm-up (connections, prepared statements, producer metadata)
wrk -t"$wthreads" -c"$connections" -d3s -s "$here/api_post.lua" "http://127.0.0.1:$port/v1/requests" >/dev/null
cpu0=$(awk '{print $14 + $15}' "/proc/$api_pid/stat")
wrk -t"$wthreads" -c"$connections" -d"$duration" --latency -s "$here/api_post.lua" "http://127.0.0.1:$port/v1/requests" | tee "/tmp/$prefix.wrk"
cpu1=$(awk '{print $14 + $15}' "/proc/$api_pid/stat")
n=$(awk '/^accepted_202/ {print $2}' "/tmp/$prefix.wrk")
# CPU the API process itself spent per accepted request (the rest of the box runs wrk,
# PostgreSQL and the Kafka broker).
awk -v c0="$cpu0" -v c1="$cpu1" -v n="$n" -v hz="$(getconf CLK_TCK)" \
	'BEGIN { if (n > 0) printf "api_cpu_us_per_request %.0f\n", (c1 - c0) / hz * 1e6 / n }'
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"
rows=$(psql -X -At -d "$dsn" -c "SELECT count(*) FROM requests")
pending=$(psql -X -At -d "$dsn" -c "SELECT count(*) FROM requests WHERE enqueued_at IS NULL")
echo "rows stored: $rows (without enqueued_at: $pending)"
curl -fs "http://127.0.0.1:$port/metrics" | grep -E '^kinfer_api_kafka_produce_duration_seconds_(sum|count)' || true
