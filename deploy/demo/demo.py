#!/usr/bin/env python3
"""The client side of kinfer's demo (deploy/demo.sh runs it once the pipeline is up).

It plays a tenant of the running pipeline: starts a callback receiver on 127.0.0.1 that
verifies every Standard Webhooks signature with the tenant's secret (tests/e2e/e2e_lib.py,
written from the specification, not kinfer's code), submits a mix of requests over HTTP
(plain completions, chat messages, risk reports for the sample portfolios and one for a
portfolio that does not exist), shows progress, then prints the results, the statuses,
the callback verification counts and the audit trail counts from the search engine
(`kinfer audit search`), and the pipeline's own latency beyond model time.

Usage: demo.py --kinfer BIN --api URL --key KEY --secret WHSEC --dsn DSN --tenant T
               --since ISO8601 [--max-tokens N] [--timeout S]
Exit status 0 when every request reached its expected status and every callback verified.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "e2e"))
import e2e_lib as E  # noqa: E402

FINAL = ("completed", "failed", "expired", "cancelled")


def requests_mix(cb, max_tokens, as_of):
    """(label, body, expected status) of every demo request."""
    s = {"max_tokens": max_tokens, "temperature": 0}
    mix = [
        ("completion", {"prompt": "The three main drivers of bond prices are"}, "completed"),
        ("completion", {"prompt": "Write one sentence about diversification."}, "completed"),
        ("completion+market", {"prompt": "Comment on today's moves.",
                               "symbols": ["REDI", "GOLD", "BTC"]}, "completed"),
        ("completion+customer", {"prompt": "Which risks should I watch this week?",
                                 "customer_id": "C001"}, "completed"),
        ("chat", {"messages": [{"role": "system", "content": "You are a concise risk analyst."},
                               {"role": "user", "content": "What is Value at Risk?"}]},
         "completed"),
        ("chat", {"messages": [{"role": "user", "content": "Explain expected shortfall."}]},
         "completed"),
        ("chat+market", {"messages": [{"role": "user", "content": "Is gold up?"}],
                         "symbols": ["GOLD"]}, "completed"),
    ]
    # A risk commentary is a few sentences: more room than the one-liners above.
    rs = {"max_tokens": max(max_tokens, 160), "temperature": 0}
    for pid in ("P001", "P002", "P005"):
        mix.append(("risk_report %s" % pid,
                    {"task": "risk_report", "sampling": dict(rs),
                     "risk": {"portfolio_id": pid, "as_of": as_of, "confidence": 0.99,
                              "horizon_days": 1}}, "completed"))
    mix.append(("risk_report P001 10d 95%",
                {"task": "risk_report", "sampling": dict(rs),
                 "risk": {"portfolio_id": "P001", "as_of": as_of, "confidence": 0.95,
                          "horizon_days": 10}}, "completed"))
    mix.append(("risk_report P999 (unknown)",
                {"task": "risk_report", "risk": {"portfolio_id": "P999", "as_of": as_of}},
                "failed"))
    out = []
    for label, extra, want in mix:
        body = {"model": "demo", "sampling": dict(s), "callback_url": cb,
                "metadata": {"demo": label}}
        body.update(extra)
        out.append((label, body, want))
    return out


def first_line(text, width=88):
    line = (text or "").strip().split("\n", 1)[0]
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= width else line[:width - 3] + "..."


def audit_counts(kinfer, tenant, since):
    """{action: count} of this run's audit events, through `kinfer audit search --json`."""
    r = subprocess.run([kinfer, "audit", "search", "--tenant", tenant, "--since", since,
                        "--limit", "10000", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("kinfer audit search failed: %s" % r.stderr.strip())
    counts = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        a = (doc.get("event") or {}).get("action") or doc.get("event.action")
        counts[a] = counts.get(a, 0) + 1
    return counts


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinfer", required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--since", required=True)
    ap.add_argument("--as-of", default="2026-10-30")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()

    rx = E.Receiver([a.secret])
    auth = {"Authorization": "Bearer " + a.key}
    mix = requests_mix(rx.url("/ok/demo"), a.max_tokens, a.as_of)
    print("callback receiver on %s (verifies webhook signatures)" % rx.url("/"))
    print("submitting %d requests to %s/v1/requests" % (len(mix), a.api))
    ids = []
    for label, body, want in mix:
        st, doc, _ = E.http_json("POST", a.api + "/v1/requests", body, auth)
        if st != 202:
            print("  %-28s -> HTTP %d %s" % (label, st, json.dumps(doc)))
            return 1
        ids.append(doc["id"])
        print("  %-28s -> 202 %s" % (label, doc["id"]))

    # Progress from the public API (GET /v1/requests/{id}), as a client would see it.
    t0 = time.time()
    last = None
    state = {}
    while True:
        for rid in ids:
            if state.get(rid, {}).get("status") in FINAL and \
                    state[rid].get("callback_status") not in ("pending",):
                continue
            st, doc, _ = E.http_json("GET", a.api + "/v1/requests/" + rid, None, auth)
            if st == 200:
                state[rid] = doc
        done = sum(1 for r in ids if state.get(r, {}).get("status") in FINAL)
        delivered = sum(1 for r in ids if state.get(r, {}).get("callback_status")
                        in ("delivered", "delivery_failed"))
        if (done, delivered) != last:
            print("completed %d/%d, callbacks %d/%d  (%.1f s)"
                  % (done, len(ids), delivered, len(ids), time.time() - t0), flush=True)
            last = (done, delivered)
        if done == len(ids) and delivered == len(ids):
            break
        if time.time() - t0 > a.timeout:
            print("timed out after %.0f s" % a.timeout)
            break
        time.sleep(0.5)

    ok = True
    print("\n---- results ----")
    for (label, body, want), rid in zip(mix, ids):
        d = state.get(rid, {})
        res = d.get("result") or {}
        status = d.get("status")
        text = res.get("text") if isinstance(res, dict) else None
        line = first_line(text) if status == "completed" else (d.get("error") or
                                                               res.get("error") or "")
        mark = "ok " if status == want else "BAD"
        ok &= status == want
        print("%s %-28s %-9s %-9s %s" % (mark, label, status, d.get("callback_status"), line))
        if label.startswith("risk_report") and status == "completed" and text:
            # A commentary runs over several lines: show more of it, flattened.
            print("      %s" % first_line(" ".join(text.split()), 200))
        if label.startswith("risk_report P001") and status == "completed":
            print("      prompt_tokens=%s completion_tokens=%s model=%s"
                  % (res.get("prompt_tokens"), res.get("completion_tokens"), res.get("model")))

    rows = E.psql(a.dsn, "SELECT status, callback_status, count(*) FROM requests "
                  "WHERE tenant_id = '%s' GROUP BY 1, 2 ORDER BY 1, 2" % a.tenant)
    print("\n---- statuses in PostgreSQL (status, callback_status, count) ----")
    for r in rows:
        print("  %-10s %-16s %s" % tuple(r))

    time.sleep(0.5)
    calls = rx.snapshot()
    good = sum(1 for c in calls if c["ok"])
    uniq = len({c["id"] for c in calls})
    print("\n---- callbacks ----")
    print("  received %d, signature verified %d, failed verification %d, distinct webhook-ids %d"
          % (len(calls), good, len(calls) - good, uniq))
    types = {}
    for c in calls:
        t = (c["body"] or {}).get("type")
        types[t] = types.get(t, 0) + 1
    print("  by type: %s" % ", ".join("%s %d" % kv for kv in sorted(types.items())))
    ok &= good == len(calls) == len(ids) and uniq == len(ids)

    # Pipeline latency beyond model time, per request: accepted -> callback received.
    acc = {r[0]: int(r[1]) for r in E.psql(
        a.dsn, "SELECT request_id, COALESCE((request->>'accepted_at')::bigint, "
        "(extract(epoch FROM created_at) * 1000)::bigint) FROM requests WHERE tenant_id = '%s'"
        % a.tenant)}
    over = []
    for c in calls:
        rid = c["id"][len("msg_"):]
        d = state.get(rid, {})
        res = d.get("result") or {}
        if d.get("status") != "completed" or rid not in acc:
            continue
        e2e = c["t"] * 1000 - acc[rid]
        model = (res.get("prefill_ms") or 0) + (res.get("decode_ms") or 0)
        over.append((e2e, e2e - model - (res.get("queue_ms") or 0), e2e - model))
    if over:
        print("\n---- latency (ms, %d completed requests; one cold run with default timers, see "
              "docs/benchmarks.md for the measurement) ----" % len(over))
        print("  accepted -> callback received:       p50 %7.1f  max %7.1f"
              % (pct([o[0] for o in over], 50), max(o[0] for o in over)))
        print("  minus queue+prefill+decode (result): p50 %7.1f  max %7.1f"
              % (pct([o[1] for o in over], 50), max(o[1] for o in over)))

    # Audit trail: the indexer bulks every 200 ms; wait for the last callback's event.
    print("\n---- audit events of this run in the search engine (kinfer audit search) ----")
    want_deliv = sum(1 for r in ids if state.get(r, {}).get("callback_status") == "delivered")
    counts = E.wait_until(
        lambda: (lambda c: c if c.get("callback.delivered", 0) >= want_deliv else None)(
            audit_counts(a.kinfer, a.tenant, a.since)), 60, "audit events", interval=1) or \
        audit_counts(a.kinfer, a.tenant, a.since)
    for act in sorted(counts):
        print("  %-22s %d" % (act, counts[act]))
    print("\n  trail of one request (kinfer audit search --request-id %s):" % ids[0])
    r = subprocess.run([a.kinfer, "audit", "search", "--request-id", ids[0]],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        print("  " + line)
    rx.close()
    print("\nDEMO %s" % ("OK" if ok else "FINISHED WITH UNEXPECTED RESULTS"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
