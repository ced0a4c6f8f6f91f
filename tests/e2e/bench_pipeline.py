#!/usr/bin/env python3
"""Benchmark: what the pipeline adds to each request beyond model time, end to end.

Starts the whole pipeline (`kinfer run`) on the local stack with the e2e harness's isolation
(scratch database, unique topics and groups), a tiny generated model and a callback receiver
that verifies every signature, then sends requests over HTTP and prints per-request figures
from four clocks, all on this machine:

  accepted_at      the API's acceptance time (InferenceRequest.accepted_at, stored in
                   requests.request)
  queue/prefill/decode ms   from the InferenceResult (queue_ms = accepted_at -> the engine
                   admitted the job: includes the API -> Kafka -> enrich -> Kafka -> worker
                   transit and the worker's batching wait)
  produced_at      when the worker built the result
  callback         when the receiver got the (verified) POST

Figures (milliseconds, p50 / p90 / p99 / max):
  e2e              callback - accepted_at
  beyond_model     e2e - (queue + prefill + decode): the definition of the goal "the pipeline
                   adds under 50 ms p50 beyond model time" (post-engine work: transaction
                   commit, dispatcher read, PostgreSQL upsert, signed POST)
  beyond_compute   e2e - (prefill + decode): everything that is not the forward passes,
                   including the pre-engine transit and batching wait (stricter)
  pre_engine       queue_ms
  post_engine      callback - produced_at

Modes: --sequential N (default 100): one request in flight at a time, so queue_ms holds no
wait behind other jobs; --burst N: N requests at once (queueing shows up in queue_ms).

Usage: bench_pipeline.py KINFER [--sequential N] [--burst N] [--max-tokens T] [--set K=V]...
Needs KINFER_KAFKA_BROKERS, KINFER_PG_DSN, KINFER_SEARCH_URL (eval "$(deploy/local/stack env)").
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_lib as E  # noqa: E402


def pct(v, p):
    v = sorted(v)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(name, v):
    return "%-15s p50 %7.1f  p90 %7.1f  p99 %7.1f  max %7.1f" % (
        name, pct(v, 50), pct(v, 90), pct(v, 99), max(v))


def measure(P, rx, port, key, n, burst, max_tokens, label):
    bodies = [{"model": "tiny", "prompt": "Benchmark request %d: one line on rates." % i,
               "sampling": {"max_tokens": max_tokens, "temperature": 0},
               "callback_url": rx.url("/ok/%s/%d" % (label, i))} for i in range(n)]
    ids = []
    if burst:
        res = E.submit_many(port, key, bodies, workers=8)
        ids = [d["id"] for st, d in res if st == 202]
    else:
        for b in bodies:
            st, d, _ = E.http_json("POST", "http://127.0.0.1:%d/v1/requests" % port, b,
                                   {"Authorization": "Bearer " + key})
            if st != 202:
                raise RuntimeError("POST answered %d" % st)
            ids.append(d["id"])
            want = "/ok/%s/" % label

            def got_it(rid=d["id"]):
                return any(c["id"] == "msg_" + rid for c in rx.snapshot()
                           if c["path"].startswith(want))
            if not E.wait_until(got_it, 60, "callback", interval=0.002):
                raise RuntimeError("no callback for %s" % d["id"])
    if len(ids) != n:
        raise RuntimeError("%d of %d requests accepted" % (len(ids), n))
    want = "/ok/%s/" % label
    E.wait_until(lambda: len([c for c in rx.snapshot() if c["path"].startswith(want)]) >= n,
                 300, "callbacks", interval=0.5)
    calls = {c["id"][4:]: c for c in rx.snapshot() if c["path"].startswith(want)}
    bad = [c for c in calls.values() if not c["ok"]]
    if bad:
        raise RuntimeError("%d callbacks failed signature verification" % len(bad))
    rows = E.psql(P.db_dsn, "SELECT request_id, (request->>'accepted_at')::numeric, "
                  "(result->>'queue_ms')::numeric, (result->>'prefill_ms')::numeric, "
                  "(result->>'decode_ms')::numeric, (result->>'produced_at')::numeric, status "
                  "FROM requests WHERE request_id IN (%s)"
                  % ",".join("'%s'" % i for i in ids))
    f = {k: [] for k in ("e2e", "beyond_model", "beyond_compute", "pre_engine", "post_engine",
                         "prefill+decode")}
    for rid, acc, q, pf, dc, prod, status in rows:
        if status != "completed" or rid not in calls:
            raise RuntimeError("request %s: status %s" % (rid, status))
        acc, q, pf, dc, prod = (float(x) for x in (acc, q, pf, dc, prod))
        cb = calls[rid]["t"] * 1000.0
        e2e = cb - acc
        f["e2e"].append(e2e)
        f["beyond_model"].append(e2e - q - pf - dc)
        f["beyond_compute"].append(e2e - pf - dc)
        f["pre_engine"].append(q)
        f["post_engine"].append(cb - prod)
        f["prefill+decode"].append(pf + dc)
    print("\n%s: %d requests, max_tokens %d, %s" % (
        label, n, max_tokens, "all at once" if burst else "one at a time"))
    for k, v in f.items():
        print("  " + summary(k, v))
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kinfer")
    ap.add_argument("--sequential", type=int, default=100)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="configuration override for kinfer run (repeatable)")
    a = ap.parse_args()
    extra = {"worker.threads": "1"}
    for kv in a.set:
        k, _, v = kv.partition("=")
        extra[k] = v
    P = E.Pipeline("bench", os.path.abspath(a.kinfer))
    ok = False
    try:
        secret, key = P.tenant("bench")
        rx = E.Receiver([secret])
        run = P.start_run(P.conf(extra=extra))
        print("configuration overrides: %s" % ", ".join("%s=%s" % kv for kv in extra.items()))
        port = E.api_port(run)
        print("machine: %s, %d cores, load average %.1f at start"
              % (platform.machine(), os.cpu_count(), os.getloadavg()[0]))
        measure(P, rx, port, key, a.warmup, False, a.max_tokens, "warmup")
        if a.sequential:
            measure(P, rx, port, key, a.sequential, False, a.max_tokens, "sequential")
        if a.burst:
            measure(P, rx, port, key, a.burst, True, a.max_tokens, "burst")
        print("\nload average %.1f at the end" % os.getloadavg()[0])
        rx.close()
        ok = True
    finally:
        P.close(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
