#!/usr/bin/env bash
# kinfer's main job on a fresh Debian bookworm machine, end to end: installs what it needs,
# builds, starts the local stack (real Kafka, PostgreSQL and search engine on free ports, state
# under /tmp), loads the sample market data, publishes the sample market feed, creates a demo
# tenant and API key, starts the whole pipeline (`kinfer run`), submits a mix of requests
# through the HTTP API to a local callback receiver that verifies every signature, and prints
# progress, results, statuses, callback and audit counts. Everything is stopped at the end
# unless --keep is given.
# Usage: bash deploy/demo.sh [--keep] [--no-setup] [--model PATH] [--build-dir DIR]
#   --keep        leave the pipeline and the stack running (prints how to use them)
#   --no-setup    skip deploy/setup-debian.sh (packages already installed)
#   --model PATH  GGUF model to serve (default: models/kinfer-demo-risk.gguf when present,
#                 else a small generated test model, said so)
#   --build-dir   build folder (default: build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
keep=0 setup=1 model="" build=build
while [ $# -gt 0 ]; do
    case "$1" in
    --keep) keep=1 ;;
    --no-setup) setup=0 ;;
    --model) model=$(realpath "$2") && shift ;;
    --build-dir) build=$2 && shift ;;
    -h | --help)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown option '$1' (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done
t_start=$(date +%s)
step() { printf '\n==== %s ====\n' "$*" >&2; }
die() {
    echo "demo.sh: error: $*" >&2
    exit 1
}

if [ "$setup" = 1 ]; then
    step "setup: Debian packages and Maven artifacts (deploy/setup-debian.sh)"
    bash deploy/setup-debian.sh
fi

step "build: the kinfer binary"
cmake -S . -B "$build" >/dev/null
cmake --build "$build" -j"$(nproc)" --target kinfer
kinfer=$here/$build/cli/kinfer
t_built=$(date +%s)

work=$(mktemp -d /tmp/kinfer-demo.XXXXXX)
chmod 755 "$work"
run_pid=""
cleanup() {
    if [ "$keep" = 1 ]; then
        return
    fi
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        kill -TERM "$run_pid" 2>/dev/null || true
        wait "$run_pid" 2>/dev/null || true
    fi
    deploy/local/stack down >&2 || true
}
trap cleanup EXIT

step "local stack: Kafka, PostgreSQL, OpenSearch"
# State under /tmp: the postgres OS user must be able to reach it.
export KINFER_STACK_DIR="${KINFER_STACK_DIR:-/tmp/kinfer-demo-stack}"
mkdir -p "$KINFER_STACK_DIR" && chmod 755 "$KINFER_STACK_DIR"
eval "$(deploy/local/stack up)"
echo "kafka $KINFER_KAFKA_BROKERS, postgres port $KINFER_PG_PORT, search $KINFER_SEARCH_URL" >&2

step "database: a fresh 'kinfer_demo' database, migrations, sample market data"
psql -X -q -d "$KINFER_PG_DSN" -c "DROP DATABASE IF EXISTS kinfer_demo WITH (FORCE)" \
    -c "CREATE DATABASE kinfer_demo"
dsn="$KINFER_PG_DSN dbname=kinfer_demo"
sql/migrate.sh "$dsn"
"$kinfer" sample-data --dsn "$dsn"

step "market feed: deploy/sample/market_ticks.csv -> kinfer.market"
"$kinfer" feed --speed max --quiet deploy/sample/market_ticks.csv

step "tenant and API key"
# The sample data's portfolios P001, P002, P005 belong to tenant sample-tenant-a.
tenant=sample-tenant-a
secret=$("$kinfer" admin create-tenant --dsn "$dsn" --id "$tenant" \
    --name "Aldridge & Carrow (demo)" --rate 50 --burst 100)
key=$("$kinfer" admin create-key --dsn "$dsn" --tenant "$tenant" --label demo)
echo "tenant $tenant: API key ${key:0:7}... and webhook secret ${secret:0:9}... (printed once by kinfer admin)" >&2

step "model"
if [ -z "$model" ] && [ -r models/kinfer-demo-risk.gguf ]; then
    model=$here/models/kinfer-demo-risk.gguf
fi
if [ -z "$model" ]; then
    vocab=""
    for v in "${KF_DEMO_VOCAB:-}" "$here/../shared/testdata/tokenizer/ggml-vocab-qwen2.gguf" \
        /work/shared/testdata/tokenizer/ggml-vocab-qwen2.gguf; do
        if [ -n "$v" ] && [ -r "$v" ]; then
            vocab=$v
            break
        fi
    done
    [ -n "$vocab" ] || die "no models/kinfer-demo-risk.gguf and no vocabulary to generate a test model from (set KF_DEMO_VOCAB to a vocab-only GGUF such as ggml-vocab-qwen2.gguf)"
    model=$work/demo-tiny-qwen2.gguf
    echo "models/kinfer-demo-risk.gguf is not there: generating a small RANDOM-WEIGHT test model" >&2
    echo "(qwen2 shape, 64 wide, 2 layers, vocabulary $vocab): its text is gibberish." >&2
    "$kinfer" model-gen --arch qwen2 --type q8_0 --vocab "$vocab" --out "$model" --n-embd 64 \
        --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128 --ctx 4096 --std 0.15 --seed 7 --quiet
fi
echo "model: $model ($(du -h "$model" | cut -f1))" >&2

step "pipeline: kinfer run (api, enrich, infer, dispatch, audit indexer in one process)"
since=$(date -u -d '-2 seconds' +%Y-%m-%dT%H:%M:%SZ)
log=$work/kinfer-run.log
"$kinfer" run --config deploy/demo/demo.conf --set "pg.dsn=$dsn" -m "$model" >"$log" 2>&1 &
run_pid=$!
for i in $(seq 1 1200); do
    if grep -q '"listening on' "$log" && grep -q 'enricher ready' "$log" &&
        grep -q '"worker running' "$log" && grep -q '"dispatching ' "$log" &&
        grep -q '"indexing ' "$log"; then
        break
    fi
    kill -0 "$run_pid" 2>/dev/null || {
        tail -n 30 "$log" >&2
        die "kinfer run exited before every stage was up (log $log)"
    }
    [ "$i" -lt 1200 ] || {
        tail -n 30 "$log" >&2
        die "kinfer run not up after 120 s (log $log)"
    }
    sleep 0.1
done
port=$(sed -n 's/.*"listening on [0-9.]*:\([0-9]*\) .*/\1/p' "$log" | head -n 1)
grep -o '"msg":"worker running[^"]*' "$log" | sed 's/"msg":"/  /' >&2
grep -o '"msg":"engine up[^"]*' "$log" | sed 's/"msg":"/  /' >&2
echo "  API on http://127.0.0.1:$port, log $log" >&2

step "requests: a mix of completions, chat, risk reports (client: deploy/demo/demo.py)"
t_req=$(date +%s)
rc=0
python3 deploy/demo/demo.py --kinfer "$kinfer" --api "http://127.0.0.1:$port" --key "$key" \
    --secret "$secret" --dsn "$dsn" --tenant "$tenant" --since "$since" || rc=$?

step "risk reports: kinfer report run (metrics computed exactly, narrative by the model)"
# Written where they outlive the demo; the tenant's sample portfolios P001, P002 and P005.
reports=${KINFER_DEMO_REPORTS:-/tmp/kinfer-demo-reports}
"$kinfer" report run --as-of 2026-10-30 --portfolio P001,P002,P005 --out "$reports" \
    --dsn "$dsn" --max-tokens 160 --quiet || rc=1
ls -l "$reports" >&2 || true
echo "  open $reports/P001-2026-10-30.html in a browser (self-contained HTML with SVG charts)" >&2

t_end=$(date +%s)
step "done: build $((t_built - t_start)) s, stack+data+pipeline $((t_req - t_built)) s, requests $((t_end - t_req)) s"
if [ "$keep" = 1 ]; then
    cat >&2 <<EOF
--keep: still running (stop with: kill $run_pid; KINFER_STACK_DIR=$KINFER_STACK_DIR deploy/local/stack down)
  eval "\$(KINFER_STACK_DIR=$KINFER_STACK_DIR deploy/local/stack env)"
  curl -s -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \\
       -d '{"model":"demo","prompt":"Hello"}' http://127.0.0.1:$port/v1/requests
  $kinfer audit search --tenant $tenant
EOF
fi
exit $rc
