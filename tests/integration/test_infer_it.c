/*
 * test_infer_it: `kinfer infer` against the local stack's real Kafka, on a tiny generated
 * model. Each mode uses its own topics and group (prefix kf_it_infer_<mode>_<pid>_<time>):
 *
 *   eos      N jobs -> exactly N committed results (read_committed), each request once,
 *            every text equal to the engine's own greedy generation of the same prompt,
 *            model SHA-256, lineage, trace id and callback url carried over.
 *   poison   undecodable records go to <jobs>.dlq with kf.* headers; jobs around them
 *            still complete.
 *   cancel   a control record cancels a long running job (status cancelled, fewer tokens
 *            than asked); a cancel that arrives before its job cancels it on arrival.
 *   expired  a job whose deadline already passed, and one whose deadline passes during a
 *            long generation, both end with status expired.
 *   kill     kill -9 of the worker mid-run, then a restart with the same transactional id:
 *            every job has exactly one committed result (no loss, no duplicate).
 *   pg       with pg.dsn (a scratch database, migrated), a started job's request row goes
 *            from enriched to running; a row already final is left alone.
 *
 * Usage: test_infer_it MODE KINFER_BINARY. Needs KINFER_KAFKA_BROKERS and KF_TEST_MODEL
 * (exit 77 = SKIP without them). Waits are bounded (a stuck worker fails the test); nothing
 * asserts on speed.
 */
#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_engine.h"
#include "kf_kafka.h"
#include "kf_model.h"
#include "kf_pg.h"
#include "kf_worker.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 64
#define WAIT_MS  90000
#define N_PARTS  3
#define TENANT   "tenant-it"
/* The cancel and deadline jobs: the test model has room for them (infer.cmake, --ctx 32768),
 * and 30000 tokens take seconds even where the engine is fastest (4000 took 1.5 s on a
 * 2-vCPU Zen 4 with AVX-512, which made a 1.5 s deadline race the last token). */
#define LONG_TOKENS 30000

static const char *g_brokers, *g_model, *g_kinfer, *g_mode;
static char g_prefix[96], g_jobs[160], g_results[160], g_control[160], g_audit[160], g_dlq[160];
static char g_conf_path[256];
static kf_producer_t *g_prod;
static int g_failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            g_failures++;                                                   \
        }                                                                   \
    } while (0)

#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static int64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the worker process ---- */

static void
write_config(void)
{
    snprintf(g_conf_path, sizeof(g_conf_path), "/tmp/%s.conf", g_prefix);
    FILE *fp = fopen(g_conf_path, "w");
    REQUIRE(fp, "cannot write %s", g_conf_path);
    fprintf(fp,
            "worker.model = %s\nworker.device = cpu\nworker.threads = 2\n"
            "worker.group.id = %s-g\nworker.transactional.id = %s-t\n"
            "worker.max.batch.seqs = 4\nworker.max.queued = 4\nworker.kv.mib = 64\n"
            "worker.commit.interval = 50ms\nworker.pg.status = false\n"
            "worker.shutdown.grace = 1s\n"
            "topics.jobs = %s\ntopics.results = %s\ntopics.control = %s\ntopics.audit = %s\n"
            "kafka.bootstrap.servers = %s\nkafka.session.timeout.ms = 6000\n"
            "kafka.heartbeat.interval.ms = 1000\nlog.level = info\n",
            g_model, g_prefix, g_prefix, g_jobs, g_results, g_control, g_audit, g_brokers);
    fclose(fp);
}

static pid_t
start_worker(void)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) {
        execl(g_kinfer, g_kinfer, "infer", "--config", g_conf_path, (char *)NULL);
        perror("exec kinfer");
        _exit(127);
    }
    fprintf(stderr, "started worker pid %d\n", (int)pid);
    return pid;
}

/* SIGTERM and wait; returns the exit status (or -1 when it did not exit in time: killed). */
static int
stop_worker(pid_t pid)
{
    kill(pid, SIGTERM);
    int64_t until = mono_ms() + 30000;
    int st;
    while (mono_ms() < until) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* ---- producing ---- */

static void
produce(const char *topic, int32_t partition, const char *key, const void *val, size_t len)
{
    char errstr[512];
    kf_kafka_msg_t msg = {.topic = topic,
                          .partition = partition,
                          .key = key,
                          .key_len = key ? strlen(key) : 0,
                          .value = val,
                          .value_len = len};
    kf_err_t err = kf_producer_send(g_prod, &msg, NULL, errstr, sizeof(errstr));
    REQUIRE(!err, "produce to %s: %s", topic, errstr);
}

static void
produce_job(const char *rid, const char *prompt, int max_tokens, int64_t deadline_ms)
{
    json_t *job = json_pack(
        "{s:s, s:s, s:s, s:s, s:{s:i, s:f, s:o}, s:o, s:I, s:s, s:s, s:[{s:s, s:s, s:i, s:I, "
        "s:I}], s:I, s:{s:s}}",
        "request_id", rid, "tenant_id", TENANT, "model", "tiny", "prompt_text", prompt, "sampling",
        "max_tokens", max_tokens, "temperature", 0.0, "seed", json_integer(1), "deadline",
        deadline_ms > 0 ? json_integer(deadline_ms) : json_null(), "accepted_at",
        (json_int_t)kf_now_ms(), "trace_id", "0123456789abcdef0123456789abcdef", "callback_url",
        "https://example.invalid/cb", "lineage", "symbol", "AAPL", "topic", "kinfer.market",
        "partition", 2, "offset", (json_int_t)77, "event_time", (json_int_t)1700000000000,
        "enriched_at", (json_int_t)kf_now_ms(), "metadata", "origin", "it");
    REQUIRE(job, "json_pack job");
    unsigned char *buf = NULL;
    size_t len = 0;
    char errstr[512];
    kf_err_t err = kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_JOB), job, &buf, &len,
                                       errstr, sizeof(errstr));
    REQUIRE(!err, "encode job: %s", errstr);
    json_decref(job);
    produce(g_jobs, KF_KAFKA_PARTITION_ANY, rid, buf, len);
    free(buf);
}

static void
produce_cancel(const char *rid, int32_t partition)
{
    char val[256];
    snprintf(val, sizeof(val), "{\"request_id\":\"%s\",\"tenant_id\":\"%s\",\"ts\":%lld}", rid,
             TENANT, (long long)kf_now_ms());
    produce(g_control, partition, rid, val, strlen(val));
}

/* ---- reading ---- */

/* A group-less reader of every partition of `topic` from the beginning. */
static rd_kafka_t *
reader_new(const char *topic, int committed_only)
{
    char errstr[512];
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char gid[200];
    snprintf(gid, sizeof(gid), "%s-reader-%s", g_prefix, topic);
    rd_kafka_conf_set(rc, "bootstrap.servers", g_brokers, errstr, sizeof(errstr));
    rd_kafka_conf_set(rc, "group.id", gid, errstr, sizeof(errstr));
    rd_kafka_conf_set(rc, "enable.auto.commit", "false", errstr, sizeof(errstr));
    rd_kafka_conf_set(rc, "enable.partition.eof", "true", errstr, sizeof(errstr));
    rd_kafka_conf_set(rc, "isolation.level", committed_only ? "read_committed" : "read_uncommitted",
                      errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
    REQUIRE(rk, "reader: %s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(N_PARTS);
    for (int p = 0; p < N_PARTS; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    REQUIRE(!rd_kafka_assign(rk, parts), "assign %s", topic);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static void
reader_destroy(rd_kafka_t *rk)
{
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/* Decoded results by request id (count how often each was seen). */
typedef struct seen {
    char rid[128];
    int count;
    json_t *res; /* the first one */
} seen_t;

static seen_t g_seen[MAX_JOBS * 2];
static size_t g_nseen;
static size_t g_nresults;

static seen_t *
seen_get(const char *rid)
{
    for (size_t i = 0; i < g_nseen; i++)
        if (!strcmp(g_seen[i].rid, rid))
            return &g_seen[i];
    return NULL;
}

static void
seen_reset(void)
{
    for (size_t i = 0; i < g_nseen; i++)
        json_decref(g_seen[i].res);
    memset(g_seen, 0, sizeof(g_seen));
    g_nseen = 0;
    g_nresults = 0;
}

/* Reads results until `rid` (or, with rid NULL, `want` distinct ids) was seen, or until all
 * partitions hit EOF when until_eof is set. Returns 1 when the goal was reached. */
static int
read_results(rd_kafka_t *rk, const char *rid, size_t want, int until_eof, int64_t wait_ms)
{
    int eof[N_PARTS] = {0};
    int64_t until = mono_ms() + wait_ms;
    while (mono_ms() < until) {
        if (!until_eof && rid && seen_get(rid))
            return 1;
        if (!until_eof && !rid && g_nseen >= want)
            return 1;
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 200);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Each partition reports its end once; done when every one has. */
            if (rkm->partition >= 0 && rkm->partition < N_PARTS)
                eof[rkm->partition] = 1;
            int all = 1;
            for (int p = 0; p < N_PARTS; p++)
                all &= eof[p];
            if (until_eof && all) {
                rd_kafka_message_destroy(rkm);
                return 1;
            }
        } else if (!rkm->err) {
            if (rkm->partition >= 0 && rkm->partition < N_PARTS)
                eof[rkm->partition] = 0;
            json_t *res = NULL;
            char errstr[512];
            kf_err_t err = kf_avro_decode_json(NULL, rkm->payload, rkm->len, NULL, &res, NULL,
                                               errstr, sizeof(errstr));
            CHECK(!err, "result at offset %lld does not decode: %s", (long long)rkm->offset,
                  errstr);
            if (!err) {
                const char *id = json_string_value(json_object_get(res, "request_id"));
                seen_t *s = id ? seen_get(id) : NULL;
                if (!s && id && g_nseen < sizeof(g_seen) / sizeof(g_seen[0])) {
                    s = &g_seen[g_nseen++];
                    snprintf(s->rid, sizeof(s->rid), "%s", id);
                    s->res = json_incref(res);
                }
                if (s)
                    s->count++;
                g_nresults++;
                json_decref(res);
            }
        }
        rd_kafka_message_destroy(rkm);
    }
    return 0;
}

static const char *
res_str(const seen_t *s, const char *field)
{
    json_t *v = s && s->res ? json_object_get(s->res, field) : NULL;
    return json_is_string(v) ? json_string_value(v) : "";
}

static long long
res_int(const seen_t *s, const char *field)
{
    return s && s->res ? (long long)json_integer_value(json_object_get(s->res, field)) : -1;
}

/* Waits for an audit event `action` of `rid`. */
static int
wait_audit(rd_kafka_t *rk, const char *action, const char *rid, int64_t wait_ms)
{
    int64_t until = mono_ms() + wait_ms;
    while (mono_ms() < until) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 200);
        if (!rkm)
            continue;
        int hit = 0;
        if (!rkm->err) {
            json_t *ev = NULL;
            char errstr[256];
            if (!kf_avro_decode_json(NULL, rkm->payload, rkm->len, NULL, &ev, NULL, errstr,
                                     sizeof(errstr))) {
                const char *a = json_string_value(json_object_get(ev, "action"));
                const char *r = json_string_value(json_object_get(ev, "request_id"));
                hit = a && r && !strcmp(a, action) && !strcmp(r, rid);
                json_decref(ev);
            }
        }
        rd_kafka_message_destroy(rkm);
        if (hit)
            return 1;
    }
    return 0;
}

/* ---- reference generation ---- */

static char *
reference_text(kf_engine_t *eng, const char *prompt, int max_tokens)
{
    kf_request_t req;
    kf_request_init(&req);
    req.prompt = prompt;
    req.sampling.temperature = 0.0f;
    req.sampling.top_p = 1.0f;
    req.sampling.top_k = 0;
    req.sampling.min_p = 0.0f;
    req.sampling.seed = 1;
    req.max_tokens = (uint32_t)max_tokens;
    kf_result_t *res = NULL;
    char errstr[512];
    kf_err_t err = kf_engine_generate(eng, &req, &res, errstr, sizeof(errstr));
    REQUIRE(!err, "reference generation: %s", errstr);
    /* What a result carries: the text as valid UTF-8. */
    char *text = kf_worker_utf8_sanitize(res->text, res->text_len);
    kf_result_destroy(res);
    return text;
}

/* ---- modes ---- */

static int
mode_eos(void)
{
    enum { N = 12, TOK = 8 };
    char rids[N][128], prompts[N][96];
    char *refs[N];
    /* The references first, from the same engine configuration the worker uses. */
    kf_model_t *model = NULL;
    kf_engine_t *eng = NULL;
    char errstr[512];
    REQUIRE(!kf_model_load(g_model, &model, errstr, sizeof(errstr)), "load: %s", errstr);
    kf_engine_conf_t ec;
    kf_engine_conf_init(&ec);
    ec.backend = "cpu";
    ec.n_threads = 2;
    ec.max_batch_seqs = 4;
    ec.kv_budget_bytes = (size_t)64 << 20;
    REQUIRE(!kf_engine_new(model, &ec, &eng, errstr, sizeof(errstr)), "engine: %s", errstr);
    for (int i = 0; i < N; i++) {
        snprintf(rids[i], sizeof(rids[i]), "%s-job-%02d", g_prefix, i);
        snprintf(prompts[i], sizeof(prompts[i]), "Request %d: the market opened at %d and", i,
                 100 + 7 * i);
        refs[i] = reference_text(eng, prompts[i], TOK);
    }
    kf_engine_destroy(eng);
    kf_model_destroy(model);
    char sha[65];
    REQUIRE(!kf_worker_file_sha256(g_model, sha, errstr, sizeof(errstr)), "sha: %s", errstr);

    for (int i = 0; i < N; i++)
        produce_job(rids[i], prompts[i], TOK, 0);
    pid_t pid = start_worker();
    rd_kafka_t *rk = reader_new(g_results, 1);
    int got = read_results(rk, NULL, N, 0, WAIT_MS);
    CHECK(got, "only %zu of %d results arrived", g_nseen, N);
    int rc = stop_worker(pid);
    CHECK(rc == 0, "worker exit status %d after SIGTERM", rc);
    reader_destroy(rk);

    /* Exactly once: read everything committed from the beginning to the end. */
    seen_reset();
    rk = reader_new(g_results, 1);
    CHECK(read_results(rk, NULL, 0, 1, WAIT_MS), "results topic did not reach EOF");
    reader_destroy(rk);
    CHECK(g_nresults == N, "%zu committed results for %d jobs", g_nresults, N);
    for (int i = 0; i < N; i++) {
        seen_t *s = seen_get(rids[i]);
        CHECK(s && s->count == 1, "%s has %d results", rids[i], s ? s->count : 0);
        if (!s)
            continue;
        CHECK(!strcmp(res_str(s, "status"), "completed"), "%s status %s", rids[i],
              res_str(s, "status"));
        CHECK(!strcmp(res_str(s, "text"), refs[i]), "%s text '%s' != engine '%s'", rids[i],
              res_str(s, "text"), refs[i]);
        CHECK(res_int(s, "completion_tokens") > 0 && res_int(s, "completion_tokens") <= TOK,
              "%s completion_tokens %lld", rids[i], res_int(s, "completion_tokens"));
        CHECK(res_int(s, "prompt_tokens") > 0, "%s prompt_tokens", rids[i]);
        CHECK(!strcmp(res_str(s, "model_sha256"), sha), "%s sha %s", rids[i],
              res_str(s, "model_sha256"));
        CHECK(!strcmp(res_str(s, "tenant_id"), TENANT), "tenant");
        CHECK(!strcmp(res_str(s, "trace_id"), "0123456789abcdef0123456789abcdef"), "trace id");
        CHECK(!strcmp(res_str(s, "callback_url"), "https://example.invalid/cb"), "callback");
        json_t *lin = json_object_get(s->res, "lineage");
        CHECK(json_array_size(lin) == 1 &&
                  json_integer_value(json_object_get(json_array_get(lin, 0), "offset")) == 77,
              "lineage not copied");
        const char *origin =
            json_string_value(json_object_get(json_object_get(s->res, "metadata"), "origin"));
        CHECK(origin && !strcmp(origin, "it"), "metadata not copied");
        free(refs[i]);
    }
    return g_failures ? 1 : 0;
}

static int
mode_poison(void)
{
    char r1[128], r2[128];
    snprintf(r1, sizeof(r1), "%s-before", g_prefix);
    snprintf(r2, sizeof(r2), "%s-after", g_prefix);
    /* All in partition 0 so the poison sits between the two jobs. */
    produce_job(r1, "Before the poison", 4, 0);
    const char *garbage = "this is not an avro record";
    produce(g_jobs, 0, "poison-key", garbage, strlen(garbage));
    unsigned char bad_magic[12] = {0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    produce(g_jobs, 0, "poison-key-2", bad_magic, sizeof(bad_magic));
    produce_job(r2, "After the poison", 4, 0);
    pid_t pid = start_worker();
    rd_kafka_t *rk = reader_new(g_results, 1);
    CHECK(read_results(rk, NULL, 2, 0, WAIT_MS), "only %zu of 2 results", g_nseen);
    reader_destroy(rk);
    CHECK(!strcmp(res_str(seen_get(r1), "status"), "completed"), "before: %s",
          res_str(seen_get(r1), "status"));
    CHECK(!strcmp(res_str(seen_get(r2), "status"), "completed"), "after: %s",
          res_str(seen_get(r2), "status"));
    int rc = stop_worker(pid);
    CHECK(rc == 0, "worker exit status %d", rc);

    /* The dead-letter topic holds both poison records, committed, with the kf.* headers. */
    rk = reader_new(g_dlq, 1);
    int found = 0, eof[N_PARTS] = {0};
    int64_t until = mono_ms() + WAIT_MS;
    while (mono_ms() < until && !(eof[0] && eof[1] && eof[2])) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 200);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (rkm->partition >= 0 && rkm->partition < N_PARTS)
                eof[rkm->partition] = 1;
        } else if (!rkm->err) {
            rd_kafka_headers_t *h = NULL;
            const void *v = NULL;
            size_t vs = 0;
            CHECK(!rd_kafka_message_headers(rkm, &h), "dead letter without headers");
            CHECK(h && !rd_kafka_header_get_last(h, "kf.original.topic", &v, &vs) &&
                      vs == strlen(g_jobs) && !memcmp(v, g_jobs, vs),
                  "kf.original.topic");
            CHECK(h && !rd_kafka_header_get_last(h, "kf.error", &v, &vs) && vs > 0, "kf.error");
            CHECK(h && !rd_kafka_header_get_last(h, "kf.stage", &v, &vs) && vs == 5 &&
                      !memcmp(v, "infer", 5),
                  "kf.stage");
            CHECK(rkm->key_len >= 10 && !memcmp(rkm->key, "poison-key", 10), "dlq key");
            found++;
        }
        rd_kafka_message_destroy(rkm);
    }
    reader_destroy(rk);
    CHECK(found == 2, "%d dead letters, expected 2", found);
    return g_failures ? 1 : 0;
}

static int
mode_cancel(void)
{
    char lng[128], early[128], warm[128];
    snprintf(lng, sizeof(lng), "%s-long", g_prefix);
    snprintf(early, sizeof(early), "%s-early", g_prefix);
    snprintf(warm, sizeof(warm), "%s-warm", g_prefix);
    pid_t pid = start_worker();
    rd_kafka_t *audit = reader_new(g_audit, 0);
    rd_kafka_t *rk = reader_new(g_results, 1);
    /* LONG_TOKENS take seconds even on a fast machine: the cancel lands long before. */
    produce_job(lng, "A very long story begins", LONG_TOKENS, 0);
    CHECK(wait_audit(audit, "inference.started", lng, WAIT_MS), "long job never started");
    /* Same partition, in order: once the long job's cancel took effect, the early one's
     * cancel has been read too. */
    produce_cancel(early, 0);
    produce_cancel(lng, 0);
    CHECK(read_results(rk, lng, 0, 0, WAIT_MS), "no result for the long job");
    seen_t *s = seen_get(lng);
    CHECK(!strcmp(res_str(s, "status"), "cancelled"), "long job status %s", res_str(s, "status"));
    CHECK(res_int(s, "completion_tokens") < LONG_TOKENS, "long job ran to %lld tokens",
          res_int(s, "completion_tokens"));
    CHECK(!strcmp(res_str(s, "text"), ""), "cancelled result carries text");
    /* The early job arrives after its cancellation. */
    produce_job(early, "Never to be generated", 8, 0);
    produce_job(warm, "Still served", 4, 0);
    CHECK(read_results(rk, NULL, 3, 0, WAIT_MS), "only %zu of 3 results", g_nseen);
    CHECK(!strcmp(res_str(seen_get(early), "status"), "cancelled"), "early job status %s",
          res_str(seen_get(early), "status"));
    CHECK(res_int(seen_get(early), "completion_tokens") == 0, "early job generated tokens");
    CHECK(!strcmp(res_str(seen_get(warm), "status"), "completed"), "other job status %s",
          res_str(seen_get(warm), "status"));
    CHECK(wait_audit(audit, "inference.cancelled", lng, WAIT_MS), "no inference.cancelled audit");
    int rc = stop_worker(pid);
    CHECK(rc == 0, "worker exit status %d", rc);
    reader_destroy(rk);
    reader_destroy(audit);
    return g_failures ? 1 : 0;
}

static int
mode_expired(void)
{
    char past[128], during[128];
    snprintf(past, sizeof(past), "%s-past", g_prefix);
    snprintf(during, sizeof(during), "%s-during", g_prefix);
    produce_job(past, "Too late", 8, kf_now_ms() - 60000);
    pid_t pid = start_worker();
    rd_kafka_t *rk = reader_new(g_results, 1);
    CHECK(read_results(rk, past, 0, 0, WAIT_MS), "no result for the expired job");
    seen_t *s = seen_get(past);
    CHECK(!strcmp(res_str(s, "status"), "expired"), "status %s", res_str(s, "status"));
    CHECK(res_int(s, "completion_tokens") == 0, "expired job generated %lld tokens",
          res_int(s, "completion_tokens"));
    /* The worker is up: this one starts and runs out of time mid-generation. */
    produce_job(during, "A story that cannot finish in time", LONG_TOKENS, kf_now_ms() + 1500);
    CHECK(read_results(rk, during, 0, 0, WAIT_MS), "no result for the deadline job");
    s = seen_get(during);
    CHECK(!strcmp(res_str(s, "status"), "expired"), "status %s", res_str(s, "status"));
    CHECK(res_int(s, "completion_tokens") < LONG_TOKENS, "ran to %lld tokens",
          res_int(s, "completion_tokens"));
    int rc = stop_worker(pid);
    CHECK(rc == 0, "worker exit status %d", rc);
    reader_destroy(rk);
    return g_failures ? 1 : 0;
}

static int
mode_kill(void)
{
    enum { N = 24, TOK = 24 };
    char rids[N][128];
    for (int i = 0; i < N; i++) {
        snprintf(rids[i], sizeof(rids[i]), "%s-k%02d", g_prefix, i);
        char prompt[64];
        snprintf(prompt, sizeof(prompt), "Kill test prompt number %d", i);
        produce_job(rids[i], prompt, TOK, 0);
    }
    pid_t pid = start_worker();
    rd_kafka_t *rk = reader_new(g_results, 1);
    /* Kill it once some results are committed and others are surely in flight. */
    CHECK(read_results(rk, NULL, 4, 0, WAIT_MS), "first worker committed only %zu", g_nseen);
    size_t before = g_nseen;
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    fprintf(stderr, "killed the worker after %zu committed results\n", before);
    CHECK(before < N, "all jobs finished before the kill; the test proves nothing");
    pid = start_worker();
    CHECK(read_results(rk, NULL, N, 0, WAIT_MS), "after restart only %zu of %d results", g_nseen,
          N);
    int rc = stop_worker(pid);
    CHECK(rc == 0, "restarted worker exit status %d", rc);
    reader_destroy(rk);

    seen_reset();
    rk = reader_new(g_results, 1);
    CHECK(read_results(rk, NULL, 0, 1, WAIT_MS), "results topic did not reach EOF");
    reader_destroy(rk);
    CHECK(g_nresults == N, "%zu committed results for %d jobs", g_nresults, N);
    for (int i = 0; i < N; i++) {
        seen_t *s = seen_get(rids[i]);
        CHECK(s && s->count == 1, "%s has %d committed results", rids[i], s ? s->count : 0);
        CHECK(s && !strcmp(res_str(s, "status"), "completed"), "%s status %s", rids[i],
              res_str(s, "status"));
    }
    return g_failures ? 1 : 0;
}

/* Runs one SQL statement on `pg` (failing the test on error); returns the first value of the
 * first row, or "" (static buffer). */
static const char *
sql1(kf_pg_t *pg, const char *sql)
{
    static char out[256];
    char errstr[512];
    kf_pg_result_t *res = NULL;
    kf_err_t err = kf_pg_exec(pg, sql, 0, &res, errstr, sizeof(errstr));
    REQUIRE(!err, "%s: %s", sql, errstr);
    out[0] = '\0';
    if (kf_pg_result_ntuples(res) > 0 && kf_pg_result_nfields(res) > 0 &&
        kf_pg_result_value(res, 0, 0))
        snprintf(out, sizeof(out), "%s", kf_pg_result_value(res, 0, 0));
    kf_pg_result_destroy(res);
    return out;
}

static int
mode_pg(void)
{
    static char dsn[512];
    const char *env = getenv("KINFER_PG_DSN");
    if (!env || !*env) {
        printf("SKIP: KINFER_PG_DSN is not set\n");
        return 77;
    }
    snprintf(dsn, sizeof(dsn), "%s", env); /* kept: the variable is unset below */
    char db[64], scratch[1024], cmd[2048], sql[512], errstr[512];
    snprintf(db, sizeof(db), "kf_test_infer_%d", (int)getpid());
    snprintf(scratch, sizeof(scratch), "%s dbname=%s", dsn, db);
    kf_pg_t *admin = NULL, *pg = NULL;
    kf_pg_opts_t o = {.dsn = dsn};
    REQUIRE(!kf_pg_new(&o, &admin, errstr, sizeof(errstr)), "connect: %s", errstr);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    sql1(admin, sql);
    snprintf(cmd, sizeof(cmd), "%s/sql/migrate.sh --quiet '%s'", KF_SOURCE_DIR, scratch);
    REQUIRE(system(cmd) == 0, "migrations failed: %s", cmd);
    o.dsn = scratch;
    REQUIRE(!kf_pg_new(&o, &pg, errstr, sizeof(errstr)), "connect scratch: %s", errstr);
    char run[128], done[128];
    snprintf(run, sizeof(run), "%s-pg-run", g_prefix);
    snprintf(done, sizeof(done), "%s-pg-done", g_prefix);
    sql1(pg, "INSERT INTO tenants (tenant_id, name, webhook_secret) "
             "VALUES ('" TENANT "', 'it', 'whsec_AAAA')");
    snprintf(sql, sizeof(sql),
             "INSERT INTO requests (request_id, tenant_id, status, request) VALUES "
             "('%s', '" TENANT "', 'enriched', '{}'), ('%s', '" TENANT "', 'completed', '{}')",
             run, done);
    sql1(pg, sql);
    /* The worker gets the scratch database (the environment would win over the file). */
    unsetenv("KINFER_PG_DSN");
    FILE *fp = fopen(g_conf_path, "a");
    REQUIRE(fp, "config");
    fprintf(fp, "worker.pg.status = true\npg.dsn = \"%s\"\n", scratch);
    fclose(fp);
    /* Same partition, in order: the finished request's update is tried first. */
    produce_job(done, "Already finished elsewhere", 4, 0);
    produce_job(run, "Mark me running", 4, 0);
    pid_t pid = start_worker();
    rd_kafka_t *rk = reader_new(g_results, 1);
    CHECK(read_results(rk, NULL, 2, 0, WAIT_MS), "only %zu of 2 results", g_nseen);
    reader_destroy(rk);
    /* The update is asynchronous (never blocks inference): wait for it, bounded. */
    snprintf(sql, sizeof(sql), "SELECT status FROM requests WHERE request_id = '%s'", run);
    int64_t until = mono_ms() + 30000;
    while (strcmp(sql1(pg, sql), "running") && mono_ms() < until)
        usleep(100000);
    CHECK(!strcmp(sql1(pg, sql), "running"), "status %s, expected running", sql1(pg, sql));
    snprintf(sql, sizeof(sql), "SELECT status FROM requests WHERE request_id = '%s'", done);
    CHECK(!strcmp(sql1(pg, sql), "completed"), "a final status was overwritten: %s", sql1(pg, sql));
    int rc = stop_worker(pid);
    CHECK(rc == 0, "worker exit status %d", rc);
    kf_pg_destroy(pg);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", db);
    sql1(admin, sql);
    kf_pg_destroy(admin);
    return g_failures ? 1 : 0;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_infer_it eos|poison|cancel|expired|kill|pg KINFER\n");
        return 2;
    }
    g_mode = argv[1];
    g_kinfer = argv[2];
    g_brokers = getenv("KINFER_KAFKA_BROKERS");
    g_model = getenv("KF_TEST_MODEL");
    if (!g_brokers || !*g_brokers) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    if (!g_model || access(g_model, R_OK)) {
        printf("SKIP: KF_TEST_MODEL (%s) is not readable: no test model\n",
               g_model ? g_model : "unset");
        return 77;
    }
    snprintf(g_prefix, sizeof(g_prefix), "kf_it_infer_%s_%d_%lld", g_mode, (int)getpid(),
             (long long)time(NULL));
    snprintf(g_jobs, sizeof(g_jobs), "%s.jobs", g_prefix);
    snprintf(g_results, sizeof(g_results), "%s.results", g_prefix);
    snprintf(g_control, sizeof(g_control), "%s.control", g_prefix);
    snprintf(g_audit, sizeof(g_audit), "%s.audit", g_prefix);
    snprintf(g_dlq, sizeof(g_dlq), "%s.jobs.dlq", g_prefix);
    char errstr[512];
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", g_brokers}};
    const char *topics[] = {g_jobs, g_results, g_control, g_audit, g_dlq};
    REQUIRE(!kf_kafka_create_topics(kv, 1, topics, 5, N_PARTS, -1, 30000, errstr, sizeof(errstr)),
            "create topics: %s", errstr);
    REQUIRE(!kf_producer_new(kv, 1, &g_prod, errstr, sizeof(errstr)), "producer: %s", errstr);
    write_config();
    int rc;
    if (!strcmp(g_mode, "eos"))
        rc = mode_eos();
    else if (!strcmp(g_mode, "poison"))
        rc = mode_poison();
    else if (!strcmp(g_mode, "cancel"))
        rc = mode_cancel();
    else if (!strcmp(g_mode, "expired"))
        rc = mode_expired();
    else if (!strcmp(g_mode, "kill"))
        rc = mode_kill();
    else if (!strcmp(g_mode, "pg"))
        rc = mode_pg();
    else {
        fprintf(stderr, "unknown mode %s\n", g_mode);
        rc = 2;
    }
    kf_producer_destroy(g_prod);
    seen_reset();
    unlink(g_conf_path);
    if (rc == 0)
        printf("PASS %s\n", g_mode);
    return rc;
}
