"""Shared machinery of kinfer's end-to-end tests and of the demo (deploy/demo.sh).

Everything here talks to the REAL services of the local stack (deploy/local/stack) and to
the REAL `kinfer` binary started as subprocesses; nothing of kinfer is imported or
re-implemented except what a test must check independently:

* Webhook signatures are verified here with Python's own hmac/hashlib/base64 from the
  Standard Webhooks specification (https://www.standardwebhooks.com), never with kinfer's
  code, so a signing bug cannot hide behind the same bug in the checker.
* Kafka is read with kcat as a `read_committed` consumer (what a downstream reader of the
  results topic sees), PostgreSQL with psql, the search engine over its REST API.

Isolation: every run gets a prefix (`kfe2e_<scenario>_<pid>`) used for topic names, consumer
group ids, transactional ids, the audit index prefix and a scratch database (CREATE DATABASE
+ sql/migrate.sh, dropped at the end), so runs never collide with each other or with the
shared dev stack's own data.

Only the Python 3 standard library is used (deploy/setup-debian.sh installs python3, kcat
and postgresql-client).
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SKIP = 77
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def need_env(*names):
    """Returns {name: value} or exits 77 (SKIP) naming the first missing variable."""
    out = {}
    for n in names:
        v = os.environ.get(n, "")
        if not v:
            print("SKIP: %s is not set (eval \"$(deploy/local/stack env)\")" % n, flush=True)
            sys.exit(SKIP)
        out[n] = v
    return out


def need_tool(name):
    if shutil.which(name) is None:
        print("SKIP: %s is not installed (deploy/setup-debian.sh installs it)" % name)
        sys.exit(SKIP)


class Failures:
    """Collects assertion failures so one run reports every broken count, not just the first."""

    def __init__(self):
        self.items = []

    def check(self, cond, what):
        if cond:
            log("ok   %s" % what)
        else:
            log("FAIL %s" % what)
            self.items.append(what)
        return cond

    def eq(self, got, want, what):
        def short(v):
            r = repr(v)
            return r if len(r) <= 240 else r[:240] + "...(%d chars)" % len(r)
        return self.check(got == want, "%s: got %s, want %s" % (what, short(got), short(want)))

    def once_each(self, got, want, what):
        """`got` (a list) holds every item of `want` exactly once and nothing else."""
        seen = {}
        for g in got:
            seen[g] = seen.get(g, 0) + 1
        dup = sum(1 for v in seen.values() if v > 1)
        missing = sum(1 for w in set(want) if w not in seen)
        extra = sum(1 for g in seen if g not in set(want))
        return self.check(dup == 0 and missing == 0 and extra == 0 and len(got) == len(want),
                          "%s: %d items, %d distinct, %d duplicated, %d missing, %d unexpected"
                          % (what, len(got), len(seen), dup, missing, extra))

    def must_eq(self, got, want, what):
        """Like eq, but stops the scenario: nothing after it could be meaningful."""
        if not self.eq(got, want, what):
            raise RuntimeError("stopping: %s" % what)


def wait_until(fn, timeout, what, interval=0.2):
    """Polls fn() until it returns a true value; returns it, or None after `timeout` s.
    Waiting is not asserting: callers assert exact values on what comes back."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() >= deadline:
            log("gave up waiting for %s after %.0f s" % (what, timeout))
            return None
        time.sleep(interval)


# ----------------------------------------------------------------------------- PostgreSQL --


def psql(dsn, sql, db=None):
    """Runs one SQL text; returns rows as lists of strings (tab-separated, unaligned)."""
    conn = dsn if db is None else "%s dbname=%s" % (dsn, db)
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                        "-d", conn, "-c", sql], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("psql failed: %s\n%s" % (sql, r.stderr))
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def psql_one(dsn, sql, db=None):
    rows = psql(dsn, sql, db)
    return rows[0][0] if rows else None


# ---------------------------------------------------------------------------------- Kafka --


def kafka_records(brokers, topic, fmt="%k\\n"):
    """Every committed record of `topic` (read_committed, from the beginning) formatted by kcat;
    [] when the topic does not exist."""
    r = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-X", "isolation.level=read_committed", "-f", fmt],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        if "Unknown topic" in r.stderr or "UNKNOWN_TOPIC" in r.stderr:
            return []
        raise RuntimeError("kcat on %s failed: %s" % (topic, r.stderr.strip()))
    return [line for line in r.stdout.split("\n") if line != ""]


def kafka_keys(brokers, topic):
    return kafka_records(brokers, topic, "%k\\n")


def kafka_produce(brokers, topic, key, value):
    """Produces one record with the given key and raw bytes value (a poison record)."""
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(value)
        path = f.name
    try:
        r = subprocess.run(["kcat", "-P", "-b", brokers, "-t", topic, "-k", key,
                            "-X", "enable.idempotence=true", path],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("kcat produce to %s failed: %s" % (topic, r.stderr))
    finally:
        os.unlink(path)


# --------------------------------------------------------------------------------- search --


def search_action_counts(url, index_pattern):
    """{action: count} of audit documents in the indexes matching index_pattern."""
    body = json.dumps({"size": 0, "track_total_hits": True,
                       "aggs": {"a": {"terms": {"field": "event.action", "size": 100}}}})
    req = urllib.request.Request("%s/%s/_search?ignore_unavailable=true&allow_no_indices=true"
                                 % (url.rstrip("/"), index_pattern), data=body.encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise
    buckets = doc.get("aggregations", {}).get("a", {}).get("buckets", [])
    return {b["key"]: b["doc_count"] for b in buckets}


def search_refresh(url, index_pattern):
    req = urllib.request.Request("%s/%s/_refresh?ignore_unavailable=true&allow_no_indices=true"
                                 % (url.rstrip("/"), index_pattern), data=b"", method="POST")
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.HTTPError:
        pass


def search_delete(url, index_pattern):
    req = urllib.request.Request("%s/%s?ignore_unavailable=true&allow_no_indices=true"
                                 % (url.rstrip("/"), index_pattern), method="DELETE")
    try:
        urllib.request.urlopen(req, timeout=30).read()
    except urllib.error.URLError:
        pass


# ------------------------------------------------------------------- webhook verification --


def verify_webhook(secret, headers, body, tolerance_s=300, now=None):
    """Standard Webhooks verification, written from the specification: the HMAC-SHA256 key is
    the base64-decoded part of 'whsec_...', the signed content is '<id>.<timestamp>.<body>', and
    the 'webhook-signature' header holds space-separated 'v1,<base64>' entries of which one must
    match. Returns (ok, reason)."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return False, "missing webhook-* header"
    if not re.fullmatch(r"[0-9]{1,12}", ts):
        return False, "bad webhook-timestamp %r" % ts
    now = time.time() if now is None else now
    if abs(now - int(ts)) > tolerance_s:
        return False, "webhook-timestamp %s outside the tolerance" % ts
    if not secret.startswith("whsec_"):
        return False, "secret is not whsec_"
    key = base64.b64decode(secret[len("whsec_"):])
    content = msg_id.encode() + b"." + ts.encode() + b"." + body
    want = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in sigs.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, want):
            return True, ""
    return False, "no matching v1 signature"


class Receiver:
    """A callback receiver on 127.0.0.1 (or another loopback address) on an ephemeral port.

    It verifies every request's signature with the tenant secrets it was given and records
    (path, webhook-id, verified, reason, json body, time received). Behaviour per path prefix:
      /ok...       200
      /fail3...    503 for the first 3 attempts of each webhook-id, then 200
      /bad...      400 (a 4xx: the dispatcher must not retry)
      anything else 404
    """

    def __init__(self, secrets, host="127.0.0.1"):
        self.secrets = list(secrets)
        self.lock = threading.Lock()
        self.calls = []
        self.seen = {}
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                t = time.time()
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                ok, reason = False, "no secret"
                for s in rx.secrets:
                    ok, reason = verify_webhook(s, hdrs, body)
                    if ok:
                        break
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                wid = hdrs.get("webhook-id", "")
                with rx.lock:
                    k = (self.path, wid)
                    rx.seen[k] = rx.seen.get(k, 0) + 1
                    attempt = rx.seen[k]
                    rx.calls.append({"path": self.path, "id": wid, "ok": ok, "reason": reason,
                                     "body": doc, "t": t, "attempt": attempt})
                if self.path.startswith("/ok"):
                    code = 200
                elif self.path.startswith("/fail3"):
                    code = 503 if attempt <= 3 else 200
                elif self.path.startswith("/bad"):
                    code = 400
                else:
                    code = 404
                out = b'{"ok":true}' if code == 200 else b'{"ok":false}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def snapshot(self):
        with self.lock:
            return list(self.calls)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ processes --


class Proc:
    """One `kinfer` subprocess with its output in a log file."""

    def __init__(self, name, argv, logpath, env=None):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.env = env
        self.p = None
        self.start()

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=self.env, start_new_session=True)

    def text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def wait_log(self, patterns, timeout, since=0):
        """Waits until every regex in `patterns` matched the log (from byte `since`)."""
        def ready():
            t = self.text()[since:]
            if all(re.search(p, t) for p in patterns):
                return True
            if not self.alive():
                raise RuntimeError("%s exited (status %s) before it was ready; log %s:\n%s"
                                   % (self.name, self.p.returncode, self.logpath,
                                      self.text()[-4000:]))
            return False
        if not wait_until(ready, timeout, "%s ready" % self.name):
            raise RuntimeError("%s not ready after %d s; log tail:\n%s"
                               % (self.name, timeout, self.text()[-4000:]))

    def kill9(self):
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.logf.close()

    def stop(self, timeout=60):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.p is None:
            return None
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.logf.close()
        return self.p.returncode


def api_port(proc):
    m = re.search(r"listening on [0-9.]+:([0-9]+)", proc.text())
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------ HTTP API --


def http_json(method, url, body=None, headers=None, timeout=30):
    """Returns (status, parsed JSON or None, headers dict lower-cased)."""
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, rh = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raw, status, rh = e.read(), e.code, e.headers
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    return status, doc, {k.lower(): v for k, v in rh.items()}


# ----------------------------------------------------------------------------- the stack --


class Pipeline:
    """A scratch world on the stack: database, tenant, API key, unique topics and groups,
    a generated model, and `kinfer` processes started from a shared config file."""

    TOPIC_KEYS = ["requests", "market", "jobs", "results", "audit", "control",
                  "callbacks.retry", "callbacks.dlq"]

    def __init__(self, scenario, kinfer, model=None, keep_db=False):
        e = need_env("KINFER_KAFKA_BROKERS", "KINFER_PG_DSN", "KINFER_SEARCH_URL")
        need_tool("kcat")
        need_tool("psql")
        self.brokers = e["KINFER_KAFKA_BROKERS"]
        self.dsn = e["KINFER_PG_DSN"]
        self.search = e["KINFER_SEARCH_URL"]
        self.kinfer = kinfer
        self.keep_db = keep_db
        self.prefix = "kfe2e_%s_%d_%d" % (scenario, os.getpid(), int(time.time()) % 100000)
        self.db = self.prefix
        self.dir = tempfile.mkdtemp(prefix=self.prefix + ".")
        self.procs = []
        self.topics = {k: "%s.%s" % (self.prefix, k.replace("callbacks.", "cb")) for k in
                       self.TOPIC_KEYS}
        self.index_prefix = self.prefix.lower() + "-audit-"
        log("prefix %s, scratch dir %s" % (self.prefix, self.dir))
        psql(self.dsn, "CREATE DATABASE %s" % self.db)
        self.db_dsn = "%s dbname=%s" % (self.dsn, self.db)
        r = subprocess.run(["bash", os.path.join(REPO, "sql", "migrate.sh"), "--quiet",
                            self.db_dsn], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("migrate.sh failed: %s" % r.stderr)
        self.model = model or self.make_model()

    def make_model(self, name="tiny.gguf", seed=11):
        vocab = os.environ.get("KF_E2E_VOCAB") or os.path.join(
            REPO, "..", "shared", "testdata", "tokenizer", "ggml-vocab-qwen2.gguf")
        if not os.path.exists(vocab):
            print("SKIP: no vocabulary %s to generate the test model from (KF_E2E_VOCAB)" % vocab)
            sys.exit(SKIP)
        out = os.path.join(self.dir, name)
        r = subprocess.run([self.kinfer, "model-gen", "--arch", "qwen2", "--type", "q8_0",
                            "--vocab", vocab, "--out", out, "--n-embd", "64", "--n-layer", "2",
                            "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128", "--ctx", "1024",
                            "--std", "0.15", "--seed", str(seed), "--quiet"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("model-gen failed: %s" % r.stderr)
        return out

    def admin(self, *args):
        r = subprocess.run([self.kinfer, "admin"] + list(args) + ["--dsn", self.db_dsn],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("kinfer admin %s failed: %s" % (args[0], r.stderr))
        return r.stdout.strip()

    def tenant(self, tid, name=None, rate=2000, burst=2000):
        """Creates a tenant and one API key; returns (webhook secret, api key)."""
        secret = self.admin("create-tenant", "--id", tid, "--name", name or tid,
                            "--rate", str(rate), "--burst", str(burst))
        key = self.admin("create-key", "--tenant", tid)
        return secret, key

    def stage_keys(self, stage):
        """The configuration keys `kinfer STAGE` accepts (from its --dump-config)."""
        r = subprocess.run([self.kinfer, stage, "--dump-config"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items()
                                if not k.startswith("KINFER_")})
        keys = set()
        for line in r.stdout.splitlines():
            m = re.match(r"^(?:# )?([a-z0-9_.]+)(?: = | is unset)", line)
            if m:
                keys.add(m.group(1))
        if not keys:
            raise RuntimeError("kinfer %s --dump-config printed no keys: %s" % (stage, r.stderr))
        return keys

    def conf(self, name="run.conf", extra=None, stage=None):
        """Writes a config file with every stage's isolation keys; returns its path. With
        `stage`, only the keys that single-stage subcommand accepts (they reject others)."""
        p = self.prefix
        kv = {
            "kafka.bootstrap.servers": self.brokers,
            "pg.dsn": self.db_dsn,
            "search.url": self.search,
            "api.listen.port": "0",
            "api.workers": "4",
            "enrich.group.id": p + "-enrich",
            "enrich.transactional.id": p + "-enrich-t",
            "worker.model": self.model,
            "worker.device": "cpu",
            "worker.threads": "1",
            "worker.group.id": p + "-infer",
            "worker.transactional.id": p + "-infer-t",
            "worker.stats.interval": "0",
            "dispatch.group.id": p + "-dispatch",
            "dispatch.allow.cidrs": "127.0.0.1/32",
            "audit.group.id": p + "-audit",
            "audit.index.prefix": self.index_prefix,
            "audit.bulk.linger": "200ms",
        }
        for k, t in self.topics.items():
            kv["topics." + k] = t
        kv.update(extra or {})
        if stage:
            known = self.stage_keys(stage)
            kv = {k: v for k, v in kv.items() if k.startswith("kafka.") or k in known}
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            for k, v in kv.items():
                f.write('%s = "%s"\n' % (k, v.replace("\\", "\\\\").replace('"', '\\"')))
        return path

    def start(self, name, args, ready):
        """Starts `kinfer ARGS...` and waits until its log matched every `ready` regex."""
        lp = os.path.join(self.dir, name + ".log")
        # KINFER_* variables override a config file (defaults < file < environment < --set):
        # the stack's KINFER_PG_DSN would point the stages at the shared database instead of
        # the scratch one, so the children get an environment without them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINFER_")}
        pr = Proc(name, [self.kinfer] + args, lp, env=env)
        self.procs.append(pr)
        pr.wait_log(ready, 120)
        log("%s up (pid %d)" % (name, pr.p.pid))
        return pr

    RUN_READY = [r'"listening on', r"enricher ready", r'"worker running', r'"dispatching ',
                 r'"indexing ']

    def start_run(self, conf, flags=(), name="run"):
        want = {"--no-api": r'"listening on', "--no-enrich": r"enricher ready",
                "--no-infer": r'"worker running', "--no-dispatch": r'"dispatching ',
                "--no-audit": r'"indexing '}
        ready = [r for r in self.RUN_READY if r not in [want[f] for f in flags]]
        return self.start(name, ["run", "--config", conf] + list(flags), ready)

    # ----- reading what the pipeline did -----

    def status_counts(self):
        rows = psql(self.db_dsn, "SELECT status, callback_status, count(*) FROM requests "
                    "GROUP BY 1, 2 ORDER BY 1, 2")
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def audit_counts(self):
        pat = self.index_prefix + "*"
        search_refresh(self.search, pat)
        return search_action_counts(self.search, pat)

    def close(self, ok):
        for pr in self.procs:
            if pr.alive():
                rc = pr.stop()
                log("%s stopped (exit status %s)" % (pr.name, rc))
        if not ok:
            for pr in self.procs:
                log("---- tail of %s ----\n%s" % (pr.logpath, pr.text()[-3000:]))
        if not self.keep_db:
            try:
                psql(self.dsn, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db)
            except RuntimeError as e:
                log("could not drop %s: %s" % (self.db, e))
            search_delete(self.search, self.index_prefix + "*")
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log("kept %s for inspection" % self.dir)


def submit_many(port, key, bodies, workers=8, idem_keys=None):
    """POSTs every body to /v1/requests with `workers` threads; returns [(status, doc)]."""
    out = [None] * len(bodies)
    idx = {"i": 0}
    lock = threading.Lock()
    url = "http://127.0.0.1:%d/v1/requests" % port

    def work():
        while True:
            with lock:
                i = idx["i"]
                idx["i"] += 1
            if i >= len(bodies):
                return
            h = {"Authorization": "Bearer " + key}
            if idem_keys and idem_keys[i]:
                h["Idempotency-Key"] = idem_keys[i]
            st, doc, _ = http_json("POST", url, bodies[i], h)
            if st == 503:  # Kafka or PostgreSQL busy: the documented answer is "retry"
                time.sleep(1)
                st, doc, _ = http_json("POST", url, bodies[i], h)
            out[i] = (st, doc)

    ts = [threading.Thread(target=work) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out
