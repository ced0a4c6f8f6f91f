#!/bin/sh
# `kinfer run` smoke test: every stage (or those named by $2: "infer" = the worker alone)
# starts on unique topics and groups, runs until each stage logged that it is up, then
# SIGTERM must stop all of them cleanly (exit status 0, every stage "stopped").
# Usage: infer_run_smoke.sh KINFER all|infer MODEL
# SKIP (77) without the stack variables the chosen stages need or without the model.
set -u
kinfer=$1 mode=$2 model=$3
[ -n "${KINFER_KAFKA_BROKERS:-}" ] || { echo "SKIP: KINFER_KAFKA_BROKERS is not set"; exit 77; }
[ -r "$model" ] || { echo "SKIP: no test model $model"; exit 77; }
if [ "$mode" = all ]; then
    [ -n "${KINFER_PG_DSN:-}" ] || { echo "SKIP: KINFER_PG_DSN is not set"; exit 77; }
    [ -n "${KINFER_SEARCH_URL:-}" ] || { echo "SKIP: KINFER_SEARCH_URL is not set"; exit 77; }
    flags="" want="api enrich infer dispatch audit"
else
    flags="--no-api --no-enrich --no-dispatch --no-audit" want="infer"
fi
p=kf_it_run_${mode}_$$_$(date +%s)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/run.conf" <<CONF
worker.model = $model
worker.device = cpu
worker.threads = 1
worker.group.id = $p-infer
worker.transactional.id = $p-infer-t
enrich.group.id = $p-enrich
enrich.transactional.id = $p-enrich-t
dispatch.group.id = $p-dispatch
audit.group.id = $p-audit
audit.index.prefix = $p-audit-
topics.requests = $p.requests
topics.jobs = $p.jobs
topics.results = $p.results
topics.control = $p.control
topics.audit = $p.audit
topics.market = $p.market
topics.callbacks.retry = $p.cbretry
topics.callbacks.dlq = $p.cbdlq
api.listen.port = 0
kafka.bootstrap.servers = $KINFER_KAFKA_BROKERS
CONF
if [ "$mode" = all ]; then
    printf 'pg.dsn = "%s"\nsearch.url = %s\n' "$KINFER_PG_DSN" "$KINFER_SEARCH_URL" >> "$dir/run.conf"
fi
"$kinfer" run --config "$dir/run.conf" $flags > "$dir/log" 2>&1 &
pid=$!
# Up: the worker is consuming, the API listens, the enricher and the others said so.
ready() {
    grep -q '"worker running' "$dir/log" || return 1
    [ "$mode" = all ] || return 0
    grep -q '"listening on' "$dir/log" && grep -q 'enricher ready' "$dir/log" &&
        grep -q '"dispatching ' "$dir/log" && grep -q '"indexing ' "$dir/log"
}
i=0
while ! ready; do
    if ! kill -0 $pid 2>/dev/null; then
        echo "FAIL: kinfer run exited before every stage was up"; cat "$dir/log"; exit 1
    fi
    i=$((i + 1))
    [ $i -lt 600 ] || { echo "FAIL: stages not up after 60 s"; kill -9 $pid; cat "$dir/log"; exit 1; }
    sleep 0.1
done
kill -TERM $pid
wait $pid
rc=$?
fail=0
[ $rc -eq 0 ] || { echo "FAIL: exit status $rc after SIGTERM"; fail=1; }
for s in $want; do
    grep -q "\"stage $s stopped\"" "$dir/log" || { echo "FAIL: stage $s did not stop cleanly"; fail=1; }
done
[ $fail -eq 0 ] || { cat "$dir/log"; exit 1; }
echo "PASS: kinfer run ($want) started and stopped cleanly"
