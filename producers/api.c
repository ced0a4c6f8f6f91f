/*
 * api.c: the HTTP server of `kinfer api` (kf_api.h), on libmicrohttpd 0.9.75.
 *
 * Life of POST /v1/requests:
 *   1. An MHD pool thread (epoll) routes the request, rejects bad Content-Type (415) or
 *      Content-Length (413) before reading the body, reads the body, then SUSPENDS the
 *      connection and queues it for the workers. MHD threads never wait for PostgreSQL or
 *      Kafka, so slow dependencies cannot stall the accept loop.
 *   2. A worker (one PostgreSQL connection each) authenticates (cached key lookup), takes a
 *      token from the tenant's bucket, validates and builds the InferenceRequest. Workers pull
 *      several queued requests at once and insert them with ONE statement (group commit):
 *      with fsync on, a commit per request would cap throughput at the disk's flush rate.
 *   3. Each inserted request is produced asynchronously (acks=all, idempotent producer). The
 *      delivery report, served by the poller thread, decides the answer: 202 after the ack,
 *      or (on error/timeout) a compensation job that deletes the row and answers 503.
 *   4. The connection is resumed; MHD calls the handler again and it queues the response.
 * Rows get requests.enqueued_at (0004_api.sql) after the ack, in batched UPDATEs off the
 * response path; Idempotency-Key replays use it to tell "in Kafka" from "maybe not".
 */
#include "api_int.h"

#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_json.h"
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_metrics.h"
#include "kf_pg.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration ----------------------------------------------------------------------- */

const kf_conf_prop_t kf_api_conf_props[] = {
    {.name = "api.listen.address",
     .type = KF_CONF_STRING,
     .def = "127.0.0.1",
     .desc = "IPv4 address the HTTP API binds."},
    {.name = "api.listen.port",
     .type = KF_CONF_INT,
     .def = "8080",
     .min = 0,
     .max = 65535,
     .desc = "TCP port of the HTTP API; 0 picks a free one (logged at start)."},
    {.name = "api.threads",
     .type = KF_CONF_INT,
     .def = "2",
     .min = 1,
     .max = 64,
     .desc = "libmicrohttpd pool threads (epoll) that read requests and write responses."},
    {.name = "api.workers",
     .type = KF_CONF_INT,
     .def = "8",
     .min = 1,
     .max = 128,
     .desc = "Worker threads, each with its own PostgreSQL connection."},
    {.name = "api.body.max",
     .type = KF_CONF_INT,
     .def = "1048576",
     .min = 1024,
     .max = 67108864,
     .desc = "Largest POST /v1/requests body in bytes; larger ones get 413 unread."},
    {.name = "api.batch.body.max",
     .type = KF_CONF_INT,
     .def = "16777216",
     .min = 1024,
     .max = 268435456,
     .desc = "Largest POST /v1/batches body in bytes."},
    {.name = "api.batch.max.lines",
     .type = KF_CONF_INT,
     .def = "10000",
     .min = 1,
     .max = 100000,
     .desc = "Most requests in one batch."},
    {.name = "api.max.tokens",
     .type = KF_CONF_INT,
     .def = "4096",
     .min = 1,
     .max = 1048576,
     .desc = "Largest sampling.max_tokens a client may ask for."},
    {.name = "api.max.prompt.bytes",
     .type = KF_CONF_INT,
     .def = "262144",
     .min = 1,
     .max = 67108864,
     .desc = "Longest prompt, and longest message content, in bytes."},
    {.name = "api.max.messages",
     .type = KF_CONF_INT,
     .def = "256",
     .min = 1,
     .max = 100000,
     .desc = "Most chat messages in one request."},
    {.name = "api.auth.cache.ttl",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 0,
     .max = 3600000,
     .desc = "How long a looked-up API key is trusted; a revoked key works this long at most."},
    {.name = "api.auth.cache.negative.ttl",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 0,
     .max = 3600000,
     .desc = "How long an unknown API key is remembered as unknown."},
    {.name = "api.idempotency.stale",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 1000,
     .max = 86400000,
     .desc = "Age after which a replayed request still not acknowledged by Kafka is produced "
             "again (must exceed api.produce.timeout)."},
    {.name = "api.produce.timeout",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 100,
     .max = 300000,
     .desc = "Delivery timeout of a request record (message.timeout.ms); then 503."},
    {.name = "api.linger",
     .type = KF_CONF_DURATION,
     .def = "2ms",
     .min = 0,
     .max = 1000,
     .desc = "Producer linger.ms: how long records wait to share a Kafka batch."},
    {.name = "api.shutdown.timeout",
     .type = KF_CONF_DURATION,
     .def = "15s",
     .min = 0,
     .max = 600000,
     .desc = "How long a graceful stop waits for requests in flight."},
    {.name = "api.retry.after",
     .type = KF_CONF_INT,
     .def = "2",
     .min = 1,
     .max = 3600,
     .desc = "Retry-After seconds on 503 answers."},
    {.name = "api.public.url",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "Prefix of status_url in answers (e.g. https://api.example.com); empty: relative."},
    {.name = "api.topics.create",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Create the requests, control and audit topics at start (idempotent)."},
    {.name = "api.topics.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of topics the API creates."},
    {.name = "api.ready.probe.interval",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 0,
     .max = 600000,
     .desc = "How long /readyz reuses its last Kafka probe."},
    {.name = NULL}};

const kf_conf_prop_t kf_api_topic_conf_props[] = {
    {.name = "topics.requests",
     .type = KF_CONF_STRING,
     .def = "kinfer.requests",
     .desc = "Topic of InferenceRequest records (key = request_id)."},
    {.name = "topics.audit",
     .type = KF_CONF_STRING,
     .def = "kinfer.audit",
     .desc = "Topic of AuditEvent records."},
    {.name = "topics.control",
     .type = KF_CONF_STRING,
     .def = "kinfer.control",
     .desc = "Topic of cancellation records (key = request_id, JSON value)."},
    {.name = NULL}};

kf_err_t
kf_api_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_conf_add_table(conf, "api", kf_api_conf_props, errstr, errstr_size);
    /* Shared keys may already be registered by another stage in the same process. */
    if (!err && !kf_conf_has(conf, "topics.requests"))
        err = kf_conf_add_table(conf, "topics", kf_api_topic_conf_props, errstr, errstr_size);
    if (!err && !kf_conf_has(conf, "pg.dsn"))
        err = kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, errstr_size);
    return err;
}

/* ---- types ------------------------------------------------------------------------------- */

enum { KF_CONN_READ = 0, KF_CONN_QUEUED, KF_CONN_DONE };
enum { KF_JOB_HTTP = 0, KF_JOB_COMPENSATE, KF_JOB_BATCH_FAILED, KF_JOB_MARK };

typedef struct kf_api_conn kf_api_conn_t;

/* A queued unit of worker work, intrusive in its owner (a connection, or the api's one mark
 * job). */
typedef struct kf_api_job {
    int kind;
    kf_api_conn_t *conn;
    struct kf_api_job *next;
} kf_api_job_t;

/* One line of a batch while it is produced. */
typedef struct kf_api_batch_item {
    kf_api_conn_t *conn;
    char request_id[37];
    int failed;
} kf_api_batch_item_t;

typedef struct kf_api_batch {
    char batch_id[37];
    size_t n;
    kf_api_batch_item_t *items;
    atomic_size_t pending;
    atomic_size_t failed;
    char errmsg[256]; /* first delivery error (written before the failed counter) */
} kf_api_batch_t;

/* One HTTP request from first byte to response. */
struct kf_api_conn {
    kf_api_t *api;
    struct MHD_Connection *mhd;
    kf_api_route_id_t rid;
    const kf_api_route_t *route;
    char param[64];
    int phase;
    kf_buf_t body;
    size_t body_max;
    int too_big;
    size_t discarded;
    char *auth;        /* Authorization header value (copied) */
    char *idem;        /* Idempotency-Key */
    char *traceparent; /* W3C traceparent */
    int64_t start_us;
    kf_api_job_t job;

    /* Identity, once known. */
    char tenant_id[128];
    char request_id[37];
    char trace_id[33];
    json_t *ir; /* built InferenceRequest (create) */
    int64_t produce_us;
    char kafka_err[512];
    kf_api_batch_t *batch;

    /* Response. */
    int status;
    char *resp;
    size_t resp_len;
    const char *ctype;
    int retry_after;
    char allow[64];
    int replayed;
    char location[320];
};

typedef struct kf_api_key_ent {
    char hash[65];
    char tenant_id[128];
    int valid;
    double rate;
    double burst;
    int64_t expires_ms;
    struct kf_api_key_ent *next;
} kf_api_key_ent_t;

typedef struct kf_api_tenant_ent {
    char tenant_id[128];
    kf_api_bucket_t bucket;
    struct kf_api_tenant_ent *next;
} kf_api_tenant_ent_t;

#define KF_API_HASH_SIZE  1024
#define KF_API_MAX_KEYS   100000
#define KF_API_GROUP_MAX  64
#define KF_API_JSON_DEPTH 32

typedef struct kf_api_worker {
    kf_api_t *api;
    kf_pg_t *pg;
    pthread_t thread;
    int started;
} kf_api_worker_t;

struct kf_api {
    /* Settings. */
    char listen_addr[64];
    int listen_port;
    int threads;
    int nworkers;
    size_t body_max, batch_body_max, batch_max_lines;
    kf_api_limits_t limits;
    int64_t auth_ttl_ms, auth_neg_ttl_ms, idem_stale_ms, shutdown_ms, probe_interval_ms;
    int retry_after_s;
    char public_url[256];
    char topic_requests[256], topic_audit[256], topic_control[256];
    kf_kafka_kv_t *kconf; /* connection keys for the readiness probe */
    size_t kconf_n;
    char **kconf_strs; /* owned strings behind kconf, kconf_nstrs slots */
    size_t kconf_nstrs;

    /* Clients. */
    kf_producer_t *producer;
    kf_audit_t *audit;
    struct MHD_Daemon *mhd;
    int port;

    /* Workers and their queue. */
    kf_api_worker_t *workers;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    kf_api_job_t *qhead, *qtail;
    int qstop;

    /* Delivery-report poller. */
    pthread_t poller;
    int poller_started;
    atomic_int poller_stop;

    /* Requests between suspend and resume. */
    atomic_long inflight;

    /* Acknowledged request ids waiting for their enqueued_at UPDATE. */
    pthread_mutex_t ackmu;
    char (*acked)[37];
    size_t nacked, capacked;
    int mark_queued;
    kf_api_job_t mark_job;

    /* Key cache and tenant buckets. */
    pthread_mutex_t authmu;
    kf_api_key_ent_t *keys[KF_API_HASH_SIZE];
    size_t nkeys;
    kf_api_tenant_ent_t *tenants[KF_API_HASH_SIZE];

    /* Readiness. */
    pthread_mutex_t readymu;
    int64_t probe_at_ms;
    int probe_ok;
    char probe_err[256];
    atomic_llong kafka_ok_ms, kafka_err_ms;

    /* Metrics. */
    kf_metrics_t *metrics;
    kf_metrics_family_t *m_requests, *m_latency, *m_produce;
    kf_metrics_series_t *m_rate_limited, *m_delivery_failed, *m_inflight, *m_auth_hit, *m_auth_miss;

    int shut;
};

static int64_t
kf_api_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- responses --------------------------------------------------------------------------- */

/* Takes ownership of body (malloc'd). */
static void
kf_api_set_resp(kf_api_conn_t *c, int status, char *body, const char *ctype)
{
    free(c->resp);
    c->status = status;
    c->resp = body;
    c->resp_len = body ? strlen(body) : 0;
    c->ctype = ctype ? ctype : "application/json";
}

static void
kf_api_set_json(kf_api_conn_t *c, int status, json_t *json)
{
    char *s = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (!s) {
        kf_api_set_resp(c, 500,
                        strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of "
                               "memory\"}}"),
                        NULL);
        return;
    }
    kf_api_set_resp(c, status, s, NULL);
}

static void
kf_api_set_error(kf_api_conn_t *c, const kf_api_error_t *e)
{
    kf_api_set_resp(c, e->status, kf_api_error_body(e), NULL);
    c->retry_after = e->retry_after_s;
}

static void
kf_api_fail(kf_api_conn_t *c, int status, const char *code, const char *msg)
{
    kf_api_error_t e = {0};
    kf_api_error_set(&e, status, code, NULL, "%s", msg);
    if (status == 503)
        e.retry_after_s = c->api->retry_after_s;
    kf_api_set_error(c, &e);
}

/* Emits request.rejected for a request that reached validation. */
static void
kf_api_audit_rejected(kf_api_conn_t *c, const kf_api_error_t *e)
{
    kf_kafka_kv_t attrs[] = {{"code", e->code}, {"field", e->field}, {"status", ""}};
    char st[8];
    snprintf(st, sizeof(st), "%d", e->status);
    attrs[2].value = st;
    kf_audit_emit(
        c->api->audit,
        &(kf_audit_event_t){.action = "request.rejected",
                            .outcome = e->status >= 500 ? KF_AUDIT_FAILURE : KF_AUDIT_REJECTED,
                            .stage = "api",
                            .request_id = c->request_id[0] ? c->request_id : NULL,
                            .tenant_id = c->tenant_id[0] ? c->tenant_id : NULL,
                            .trace_id = c->trace_id[0] ? c->trace_id : NULL,
                            .duration_ms = -1,
                            .tokens = -1,
                            .message = e->message,
                            .attrs = attrs,
                            .attr_count = 3});
}

/* Hands a finished connection back to MHD. Whatever set the response happens-before the
 * MHD thread reads it: MHD_resume_connection takes the daemon's mutex. */
static void
kf_api_finish(kf_api_conn_t *c)
{
    c->phase = KF_CONN_DONE;
    MHD_resume_connection(c->mhd);
}

/* {"id", "status":"accepted", "status_url"}: the 202 body, also replayed for idempotent
 * retries. */
static json_t *
kf_api_accepted_body(kf_api_conn_t *c)
{
    snprintf(c->location, sizeof(c->location), "%s/v1/requests/%s", c->api->public_url,
             c->request_id);
    return json_pack("{s:s, s:s, s:s}", "id", c->request_id, "status", "accepted", "status_url",
                     c->location);
}

/* ---- job queue --------------------------------------------------------------------------- */

static void
kf_api_enqueue(kf_api_t *api, kf_api_job_t *job)
{
    pthread_mutex_lock(&api->qmu);
    job->next = NULL;
    if (api->qtail)
        api->qtail->next = job;
    else
        api->qhead = job;
    api->qtail = job;
    pthread_cond_signal(&api->qcv);
    pthread_mutex_unlock(&api->qmu);
}

/* ---- authentication and rate limiting ---------------------------------------------------- */

static unsigned
kf_api_hash_str(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % KF_API_HASH_SIZE;
}

static void
kf_api_keys_clear(kf_api_t *api)
{
    for (size_t i = 0; i < KF_API_HASH_SIZE; i++) {
        while (api->keys[i]) {
            kf_api_key_ent_t *k = api->keys[i];
            api->keys[i] = k->next;
            free(k);
        }
    }
    api->nkeys = 0;
}

/* Resolves the bearer token to a tenant. KF_OK with c->tenant_id set, or an error response
 * already set on c (401, 503). */
static kf_err_t
kf_api_authenticate(kf_api_worker_t *w, kf_api_conn_t *c, double *out_rate, double *out_burst)
{
    kf_api_t *api = w->api;
    const char *a = c->auth;
    if (!a || strncasecmp(a, "Bearer ", 7) != 0 || !a[7]) {
        kf_api_fail(c, 401, "unauthorized", "missing or malformed Authorization: Bearer header");
        return KF_ERR_INVALID_ARG;
    }
    const char *token = a + 7;
    while (*token == ' ')
        token++;
    char hash[65];
    if (kf_api_key_sha256_hex(token, strlen(token), hash)) {
        kf_api_fail(c, 500, "internal", "hashing failed");
        return KF_ERR_INTERNAL;
    }
    int64_t now = kf_now_ms();
    unsigned h = kf_api_hash_str(hash);
    int found = 0, valid = 0;
    pthread_mutex_lock(&api->authmu);
    for (kf_api_key_ent_t *k = api->keys[h]; k; k = k->next) {
        if (!strcmp(k->hash, hash) && k->expires_ms > now) {
            found = 1;
            valid = k->valid;
            snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", k->tenant_id);
            *out_rate = k->rate;
            *out_burst = k->burst;
            break;
        }
    }
    pthread_mutex_unlock(&api->authmu);
    kf_metrics_add(found ? api->m_auth_hit : api->m_auth_miss, 1);
    if (!found) {
        char errstr[512];
        kf_pg_result_t *res = NULL;
        const char *params[] = {hash};
        kf_err_t err =
            kf_pg_exec_prepared(w->pg, "auth_key", params, 1, &res, errstr, sizeof(errstr));
        if (err) {
            kf_log(KF_LOG_ERROR, "api", "API key lookup failed: %s", errstr);
            kf_api_fail(c, 503, "unavailable", "authentication backend unavailable");
            return err;
        }
        kf_api_key_ent_t ent = {0};
        snprintf(ent.hash, sizeof(ent.hash), "%s", hash);
        if (kf_pg_result_ntuples(res) == 1 &&
            strlen(kf_pg_result_value(res, 0, 0)) < sizeof(ent.tenant_id)) {
            snprintf(ent.tenant_id, sizeof(ent.tenant_id), "%s", kf_pg_result_value(res, 0, 0));
            ent.valid = strcmp(kf_pg_result_value(res, 0, 1), "t") != 0;
            ent.rate = atof(kf_pg_result_value(res, 0, 2));
            ent.burst = atof(kf_pg_result_value(res, 0, 3));
        }
        kf_pg_result_destroy(res);
        int64_t ttl = ent.valid ? api->auth_ttl_ms : api->auth_neg_ttl_ms;
        ent.expires_ms = now + ttl;
        if (ttl > 0) {
            pthread_mutex_lock(&api->authmu);
            /* A bounded cache: when full, start over rather than track recency. */
            if (api->nkeys >= KF_API_MAX_KEYS)
                kf_api_keys_clear(api);
            kf_api_key_ent_t *k = api->keys[h];
            while (k && strcmp(k->hash, hash))
                k = k->next;
            if (!k && (k = malloc(sizeof(*k)))) {
                k->next = api->keys[h];
                api->keys[h] = k;
                api->nkeys++;
            }
            if (k) {
                kf_api_key_ent_t *next = k->next;
                *k = ent;
                k->next = next;
            }
            pthread_mutex_unlock(&api->authmu);
        }
        valid = ent.valid;
        snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", ent.tenant_id);
        *out_rate = ent.rate;
        *out_burst = ent.burst;
    }
    if (!valid) {
        c->tenant_id[0] = '\0';
        kf_api_fail(c, 401, "unauthorized", "invalid or revoked API key");
        return KF_ERR_INVALID_ARG;
    }
    return KF_OK;
}

/* Takes a token from the tenant's bucket, or sets 429 with Retry-After. */
static kf_err_t
kf_api_rate_limit(kf_api_t *api, kf_api_conn_t *c, double rate, double burst)
{
    unsigned h = kf_api_hash_str(c->tenant_id);
    int ok = 1, retry = 1;
    pthread_mutex_lock(&api->authmu);
    kf_api_tenant_ent_t *t = api->tenants[h];
    while (t && strcmp(t->tenant_id, c->tenant_id))
        t = t->next;
    if (!t && (t = calloc(1, sizeof(*t)))) {
        snprintf(t->tenant_id, sizeof(t->tenant_id), "%s", c->tenant_id);
        t->next = api->tenants[h];
        api->tenants[h] = t;
    }
    if (t)
        ok = kf_api_bucket_take(&t->bucket, rate, burst, kf_api_now_us(), &retry);
    pthread_mutex_unlock(&api->authmu);
    if (ok)
        return KF_OK;
    kf_metrics_add(api->m_rate_limited, 1);
    kf_api_error_t e = {0};
    kf_api_error_set(&e, 429, "rate_limited", NULL,
                     "tenant rate limit of %g requests/s (burst %g) exceeded", rate, burst);
    e.retry_after_s = retry;
    kf_api_set_error(c, &e);
    kf_api_audit_rejected(c, &e);
    return KF_ERR_LIMIT;
}

/* ---- producing --------------------------------------------------------------------------- */

static void kf_api_on_delivery(const kf_kafka_delivery_t *dr, void *opaque);
static void kf_api_on_batch_delivery(const kf_kafka_delivery_t *dr, void *opaque);

/* Remembers an acknowledged id for the next enqueued_at UPDATE and makes sure a mark job is
 * queued. */
static void
kf_api_mark_acked(kf_api_t *api, const char *request_id)
{
    int queue = 0;
    pthread_mutex_lock(&api->ackmu);
    if (api->nacked == api->capacked) {
        size_t cap = api->capacked ? api->capacked * 2 : 256;
        void *p = realloc(api->acked, cap * sizeof(*api->acked));
        if (p) {
            api->acked = p;
            api->capacked = cap;
        }
    }
    /* Without room the id keeps enqueued_at NULL: replays then re-produce it after
     * api.idempotency.stale, which is safe (same key, same request_id). */
    if (api->nacked < api->capacked)
        snprintf(api->acked[api->nacked++], 37, "%s", request_id);
    if (!api->mark_queued) {
        api->mark_queued = 1;
        queue = 1;
    }
    pthread_mutex_unlock(&api->ackmu);
    if (queue)
        kf_api_enqueue(api, &api->mark_job);
}

/* Encodes and queues one InferenceRequest. */
static kf_err_t
kf_api_produce(kf_api_t *api,
               const json_t *ir,
               const char *request_id,
               kf_producer_delivery_cb cb,
               void *opaque,
               char *errstr,
               size_t errstr_size)
{
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST);
    unsigned char *buf = NULL;
    size_t len = 0;
    kf_err_t err = kf_avro_encode_json(schema, ir, &buf, &len, errstr, errstr_size);
    if (err)
        return err;
    kf_kafka_msg_t msg = {.topic = api->topic_requests,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .key = request_id,
                          .key_len = strlen(request_id),
                          .value = buf,
                          .value_len = len};
    err = kf_producer_send_async(api->producer, &msg, cb, opaque, errstr, errstr_size);
    free(buf);
    return err;
}

/* Delivery report of a single request (poller thread). */
static void
kf_api_on_delivery(const kf_kafka_delivery_t *dr, void *opaque)
{
    kf_api_conn_t *c = opaque;
    kf_api_t *api = c->api;
    double secs = (double)(kf_api_now_us() - c->produce_us) / 1e6;
    kf_metrics_observe(kf_metrics_labels(api->m_produce, NULL), secs);
    if (dr->err) {
        atomic_store(&api->kafka_err_ms, kf_now_ms());
        kf_metrics_add(api->m_delivery_failed, 1);
        snprintf(c->kafka_err, sizeof(c->kafka_err), "%s", dr->errmsg);
        c->job.kind = KF_JOB_COMPENSATE;
        kf_api_enqueue(api, &c->job);
        return;
    }
    atomic_store(&api->kafka_ok_ms, kf_now_ms());
    const char *model = NULL;
    json_t *m = json_object_get(c->ir, "model");
    model = json_string_value(m);
    kf_audit_emit(api->audit, &(kf_audit_event_t){
                                  .action = "request.accepted",
                                  .outcome = KF_AUDIT_SUCCESS,
                                  .stage = "api",
                                  .request_id = c->request_id,
                                  .tenant_id = c->tenant_id,
                                  .trace_id = c->trace_id,
                                  .duration_ms = (double)(kf_api_now_us() - c->start_us) / 1000.0,
                                  .model = model,
                                  .tokens = -1});
    kf_api_mark_acked(api, c->request_id);
    kf_api_set_json(c, c->replayed ? 200 : 202, kf_api_accepted_body(c));
    kf_api_finish(c);
}

/* Produces c->ir; on an immediate error, the caller compensates. */
static void
kf_api_produce_conn(kf_api_worker_t *w, kf_api_conn_t *c)
{
    char errstr[512];
    c->produce_us = kf_api_now_us();
    kf_err_t err =
        kf_api_produce(w->api, c->ir, c->request_id, kf_api_on_delivery, c, errstr, sizeof(errstr));
    if (err) {
        snprintf(c->kafka_err, sizeof(c->kafka_err), "%s", errstr);
        c->job.kind = KF_JOB_COMPENSATE;
        kf_api_enqueue(w->api, &c->job);
    }
}

/* Kafka refused a single request: remove its row (only if still unacknowledged) and 503. */
static void
kf_api_compensate(kf_api_worker_t *w, kf_api_conn_t *c)
{
    char errstr[512];
    const char *params[] = {c->request_id};
    kf_err_t err =
        kf_pg_exec_prepared(w->pg, "req_delete", params, 1, NULL, errstr, sizeof(errstr));
    if (err)
        kf_logkv(KF_LOG_ERROR, "api", NULL,
                 "could not delete unacknowledged request %s (its enqueued_at stays NULL): %s",
                 c->request_id, errstr);
    kf_logkv(KF_LOG_WARN, "api", NULL, "request %s not accepted: Kafka: %s", c->request_id,
             c->kafka_err);
    kf_api_error_t e = {0};
    kf_api_error_set(&e, 503, "unavailable", NULL,
                     "the request could not be queued (Kafka: %s); retry later", c->kafka_err);
    e.retry_after_s = w->api->retry_after_s;
    kf_api_set_error(c, &e);
    kf_api_audit_rejected(c, &e);
    kf_api_finish(c);
}

/* ---- POST /v1/requests ------------------------------------------------------------------- */

static void
kf_api_new_ids(kf_api_conn_t *c)
{
    kf_uuid4(c->request_id);
    /* traceparent: 00-<32 hex trace id>-<16 hex parent>-<2 hex flags>; else a fresh id. */
    const char *tp = c->traceparent;
    int ok = tp && strlen(tp) >= 55 && tp[2] == '-' && tp[35] == '-';
    for (int i = 3; ok && i < 35; i++)
        ok = (tp[i] >= '0' && tp[i] <= '9') || (tp[i] >= 'a' && tp[i] <= 'f');
    if (ok && strncmp(tp + 3, "00000000000000000000000000000000", 32) != 0) {
        memcpy(c->trace_id, tp + 3, 32);
    } else {
        char u[37];
        kf_uuid4(u);
        int j = 0;
        for (int i = 0; u[i] && j < 32; i++)
            if (u[i] != '-')
                c->trace_id[j++] = u[i];
    }
    c->trace_id[32] = '\0';
}

static kf_api_limits_t
kf_api_limits_now(const kf_api_t *api)
{
    kf_api_limits_t lim = api->limits;
    lim.now_ms = kf_now_ms();
    return lim;
}

/* Phase 1 of a create: auth, rate, validation. Returns 1 when c is ready to insert. */
static int
kf_api_create_prepare(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_t *api = w->api;
    double rate = 0, burst = 0;
    if (kf_api_authenticate(w, c, &rate, &burst))
        return 0;
    kf_api_new_ids(c);
    if (kf_api_rate_limit(api, c, rate, burst))
        return 0;
    kf_api_error_t e = {0};
    if (c->idem && (!*c->idem || strlen(c->idem) > 255)) {
        kf_api_error_set(&e, 400, "invalid_request", "Idempotency-Key",
                         "header 'Idempotency-Key' must be 1 to 255 bytes");
        kf_api_set_error(c, &e);
        kf_api_audit_rejected(c, &e);
        return 0;
    }
    char errstr[512];
    json_t *body = NULL;
    kf_json_limits_t jl = {.max_bytes = api->body_max, .max_depth = KF_API_JSON_DEPTH};
    if (kf_json_parse_object(c->body.data ? c->body.data : "", c->body.len, &jl, &body, errstr,
                             sizeof(errstr))) {
        kf_api_error_set(&e, 400, "invalid_json", NULL, "%s", errstr);
        kf_api_set_error(c, &e);
        kf_api_audit_rejected(c, &e);
        return 0;
    }
    kf_api_req_ids_t ids = {.request_id = c->request_id,
                            .tenant_id = c->tenant_id,
                            .idempotency_key = c->idem,
                            .trace_id = c->trace_id,
                            .accepted_at_ms = kf_now_ms()};
    kf_api_limits_t lim = kf_api_limits_now(api);
    kf_err_t err = kf_api_request_build(body, &ids, &lim, &c->ir, &e);
    json_decref(body);
    if (err) {
        kf_api_set_error(c, &e);
        kf_api_audit_rejected(c, &e);
        return 0;
    }
    return 1;
}

/* The requests row for one built InferenceRequest (jsonb_to_recordset input). */
static json_t *
kf_api_row(const json_t *ir, long batch_line)
{
    json_t *row =
        json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "request_id",
                  json_object_get(ir, "request_id"), "tenant_id", json_object_get(ir, "tenant_id"),
                  "idempotency_key", json_object_get(ir, "idempotency_key"), "batch_id",
                  json_object_get(ir, "batch_id"), "custom_id", json_object_get(ir, "custom_id"),
                  "callback_url", json_object_get(ir, "callback_url"), "task",
                  json_object_get(ir, "task"), "model", json_object_get(ir, "model"), "trace_id",
                  json_object_get(ir, "trace_id"), "request", ir);
    if (row && batch_line > 0)
        json_object_set_new(row, "batch_line", json_integer(batch_line));
    return row;
}

/* An Idempotency-Key conflict: replay the first request, report it in progress, or take
 * over a stale unacknowledged one. */
static void
kf_api_replay(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_t *api = w->api;
    char errstr[512], stale[24];
    snprintf(stale, sizeof(stale), "%lld", (long long)api->idem_stale_ms);
    const char *params[] = {c->tenant_id, c->idem, stale};
    kf_pg_result_t *res = NULL;
    kf_err_t err =
        kf_pg_exec_prepared(w->pg, "req_by_idem", params, 3, &res, errstr, sizeof(errstr));
    if (err) {
        kf_log(KF_LOG_ERROR, "api", "idempotency lookup failed: %s", errstr);
        kf_api_fail(c, 503, "unavailable", "database unavailable");
        kf_api_finish(c);
        return;
    }
    if (kf_pg_result_ntuples(res) == 0) {
        /* The first request was just withdrawn (Kafka refused it): ask for a retry. */
        kf_pg_result_destroy(res);
        kf_api_error_t e = {0};
        kf_api_error_set(&e, 409, "idempotency_in_progress", "Idempotency-Key",
                         "a request with this Idempotency-Key is being processed; retry");
        e.retry_after_s = 1;
        kf_api_set_error(c, &e);
        kf_api_finish(c);
        return;
    }
    snprintf(c->request_id, sizeof(c->request_id), "%s", kf_pg_result_value(res, 0, 0));
    int enqueued = !strcmp(kf_pg_result_value(res, 0, 1), "t");
    int is_stale = !strcmp(kf_pg_result_value(res, 0, 2), "t");
    kf_pg_result_destroy(res);
    json_decref(c->ir);
    c->ir = NULL;
    c->replayed = 1;
    if (enqueued) {
        kf_api_set_json(c, 200, kf_api_accepted_body(c));
        kf_api_finish(c);
        return;
    }
    if (is_stale) {
        /* Claim it (one process wins) and produce the stored record again: same request_id,
         * so downstream stages see at most a duplicate, never a second request. */
        const char *cp[] = {c->request_id, stale};
        err = kf_pg_exec_prepared(w->pg, "req_claim_stale", cp, 2, &res, errstr, sizeof(errstr));
        if (!err && kf_pg_result_ntuples(res) == 1) {
            const char *txt = kf_pg_result_value(res, 0, 0);
            c->ir = json_loads(txt, 0, NULL);
            json_t *tid = json_object_get(c->ir, "trace_id");
            snprintf(c->trace_id, sizeof(c->trace_id), "%s",
                     json_string_value(tid) ? json_string_value(tid) : "");
        }
        kf_pg_result_destroy(res);
        if (c->ir) {
            kf_api_produce_conn(w, c);
            return;
        }
    }
    kf_api_error_t e = {0};
    kf_api_error_set(&e, 409, "idempotency_in_progress", "Idempotency-Key",
                     "a request with this Idempotency-Key is being processed; retry");
    e.retry_after_s = 1;
    kf_api_set_error(c, &e);
    kf_api_finish(c);
}

/* Phase 2: inserts prepared creates with one statement, then produces each new row. */
static void
kf_api_create_commit(kf_api_worker_t *w, kf_api_conn_t **conns, size_t n)
{
    json_t *rows = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(rows, kf_api_row(conns[i]->ir, 0));
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    char errstr[512];
    kf_err_t err = kf_json_dump(rows, &buf);
    json_decref(rows);
    kf_pg_result_t *res = NULL;
    if (!err) {
        const char *params[] = {buf.data};
        err = kf_pg_exec_prepared(w->pg, "req_insert", params, 1, &res, errstr, sizeof(errstr));
    } else {
        snprintf(errstr, sizeof(errstr), "encoding rows: %s", kf_err_str(err));
    }
    kf_buf_free(&buf);
    if (err) {
        kf_log(KF_LOG_ERROR, "api", "inserting %zu requests failed: %s", n, errstr);
        for (size_t i = 0; i < n; i++) {
            kf_api_error_t e = {0};
            kf_api_error_set(&e, 503, "unavailable", NULL,
                             "the request could not be stored; retry later");
            e.retry_after_s = w->api->retry_after_s;
            kf_api_set_error(conns[i], &e);
            kf_api_audit_rejected(conns[i], &e);
            kf_api_finish(conns[i]);
        }
        return;
    }
    /* Rows not returned hit the idempotency index: those are replays. */
    int nt = kf_pg_result_ntuples(res);
    for (size_t i = 0; i < n; i++) {
        int inserted = 0;
        for (int r = 0; r < nt && !inserted; r++)
            inserted = !strcmp(kf_pg_result_value(res, r, 0), conns[i]->request_id);
        if (inserted)
            kf_api_produce_conn(w, conns[i]);
        else
            kf_api_replay(w, conns[i]);
    }
    kf_pg_result_destroy(res);
}

/* ---- GET / DELETE /v1/requests/{id} ------------------------------------------------------ */

/* Runs a statement whose one row, one column is the JSON answer; 404 when no row. */
static void
kf_api_json_query(kf_api_worker_t *w,
                  kf_api_conn_t *c,
                  const char *stmt,
                  const char *const *params,
                  int nparams,
                  const char *what)
{
    char errstr[512];
    kf_pg_result_t *res = NULL;
    kf_err_t err = kf_pg_exec_prepared(w->pg, stmt, params, nparams, &res, errstr, sizeof(errstr));
    if (err) {
        kf_log(KF_LOG_ERROR, "api", "%s failed: %s", stmt, errstr);
        kf_api_fail(c, 503, "unavailable", "database unavailable");
    } else if (kf_pg_result_ntuples(res) == 0) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%s not found", what);
        kf_api_fail(c, 404, "not_found", msg);
    } else {
        kf_api_set_resp(c, 200, strdup(kf_pg_result_value(res, 0, 0)), NULL);
    }
    kf_pg_result_destroy(res);
}

static void
kf_api_request_get(kf_api_worker_t *w, kf_api_conn_t *c)
{
    if (!kf_api_is_uuid(c->param)) {
        kf_api_fail(c, 404, "not_found", "request not found");
        return;
    }
    const char *params[] = {c->param, c->tenant_id, w->api->public_url};
    kf_api_json_query(w, c, "req_get", params, 3, "request");
}

static int
kf_api_status_final(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "expired") ||
           !strcmp(s, "cancelled");
}

/* Cancels: tells workers through the control topic first (so a failure leaves nothing
 * half-done and the client can simply retry), then records it. */
static void
kf_api_request_cancel(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_t *api = w->api;
    char errstr[512];
    if (!kf_api_is_uuid(c->param)) {
        kf_api_fail(c, 404, "not_found", "request not found");
        return;
    }
    const char *params[] = {c->param, c->tenant_id};
    kf_pg_result_t *res = NULL;
    if (kf_pg_exec_prepared(w->pg, "req_status", params, 2, &res, errstr, sizeof(errstr))) {
        kf_log(KF_LOG_ERROR, "api", "status lookup failed: %s", errstr);
        kf_api_fail(c, 503, "unavailable", "database unavailable");
        return;
    }
    if (kf_pg_result_ntuples(res) == 0) {
        kf_pg_result_destroy(res);
        kf_api_fail(c, 404, "not_found", "request not found");
        return;
    }
    char status[32];
    snprintf(status, sizeof(status), "%s", kf_pg_result_value(res, 0, 0));
    kf_pg_result_destroy(res);
    if (kf_api_status_final(status)) {
        char msg[64];
        snprintf(msg, sizeof(msg), "request is already %s", status);
        kf_api_fail(c, 409, "conflict", msg);
        return;
    }
    json_t *v = json_pack("{s:s, s:s, s:I}", "request_id", c->param, "tenant_id", c->tenant_id,
                          "ts", (json_int_t)kf_now_ms());
    char *val = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    kf_kafka_msg_t msg = {.topic = api->topic_control,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .key = c->param,
                          .key_len = strlen(c->param),
                          .value = val,
                          .value_len = val ? strlen(val) : 0};
    kf_err_t err =
        val ? kf_producer_send(api->producer, &msg, NULL, errstr, sizeof(errstr)) : KF_ERR_NOMEM;
    free(val);
    if (err) {
        kf_log(KF_LOG_WARN, "api", "cancel record for %s not delivered: %s", c->param, errstr);
        kf_api_fail(c, 503, "unavailable", "the cancellation could not be queued; retry");
        return;
    }
    if (kf_pg_exec_prepared(w->pg, "req_cancel", params, 2, &res, errstr, sizeof(errstr))) {
        kf_log(KF_LOG_ERROR, "api", "cancel update failed: %s", errstr);
        kf_api_fail(c, 503, "unavailable", "database unavailable");
        return;
    }
    if (kf_pg_result_ntuples(res) == 0) {
        kf_pg_result_destroy(res);
        kf_api_fail(c, 409, "conflict", "request finished before it could be cancelled");
        return;
    }
    kf_pg_result_destroy(res);
    kf_api_set_json(
        c, 200,
        json_pack("{s:s, s:s, s:b}", "id", c->param, "status", "cancelled", "cancel_requested", 1));
}

/* ---- batches ----------------------------------------------------------------------------- */

static void
kf_api_batch_free(kf_api_batch_t *b)
{
    if (!b)
        return;
    free(b->items);
    free(b);
}

/* Last delivery report of a batch decides its answer (poller thread). */
static void
kf_api_on_batch_delivery(const kf_kafka_delivery_t *dr, void *opaque)
{
    kf_api_batch_item_t *it = opaque;
    kf_api_conn_t *c = it->conn;
    kf_api_batch_t *b = c->batch;
    kf_api_t *api = c->api;
    if (dr->err) {
        atomic_store(&api->kafka_err_ms, kf_now_ms());
        kf_metrics_add(api->m_delivery_failed, 1);
        it->failed = 1;
        if (atomic_fetch_add(&b->failed, 1) == 0)
            snprintf(b->errmsg, sizeof(b->errmsg), "%s", dr->errmsg);
    } else {
        atomic_store(&api->kafka_ok_ms, kf_now_ms());
        kf_api_mark_acked(api, it->request_id);
    }
    if (atomic_fetch_sub(&b->pending, 1) != 1)
        return;
    if (atomic_load(&b->failed)) {
        c->job.kind = KF_JOB_BATCH_FAILED;
        kf_api_enqueue(api, &c->job);
        return;
    }
    kf_audit_emit(api->audit, &(kf_audit_event_t){
                                  .action = "request.accepted",
                                  .outcome = KF_AUDIT_SUCCESS,
                                  .stage = "api",
                                  .tenant_id = c->tenant_id,
                                  .trace_id = c->trace_id,
                                  .duration_ms = (double)(kf_api_now_us() - c->start_us) / 1000.0,
                                  .tokens = -1,
                                  .message = "batch accepted",
                                  .attrs = (kf_kafka_kv_t[]){{"batch_id", b->batch_id}},
                                  .attr_count = 1});
    snprintf(c->location, sizeof(c->location), "%s/v1/batches/%s", api->public_url, b->batch_id);
    kf_api_set_json(c, 202,
                    json_pack("{s:s, s:I, s:s, s:s}", "batch_id", b->batch_id, "n",
                              (json_int_t)b->n, "status", "accepted", "status_url", c->location));
    kf_api_finish(c);
}

/* Some lines of a batch were refused by Kafka: they are marked failed (the batch row and
 * the delivered lines stay), and the client gets 503 naming the batch. */
static void
kf_api_batch_failed(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_batch_t *b = c->batch;
    kf_buf_t ids;
    kf_buf_init(&ids, 0);
    kf_buf_append_str(&ids, "{");
    size_t nf = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->items[i].failed)
            kf_buf_appendf(&ids, "%s%s", nf++ ? "," : "", b->items[i].request_id);
    kf_buf_append_str(&ids, "}");
    char errstr[512], why[300];
    snprintf(why, sizeof(why), "not queued: Kafka: %s", b->errmsg);
    const char *params[] = {ids.data, why};
    if (kf_pg_exec_prepared(w->pg, "req_fail_many", params, 2, NULL, errstr, sizeof(errstr)))
        kf_log(KF_LOG_ERROR, "api", "marking %zu batch lines failed: %s", nf, errstr);
    kf_buf_free(&ids);
    kf_api_error_t e = {0};
    kf_api_error_set(&e, 503, "unavailable", NULL,
                     "%zu of %zu lines of batch %s could not be queued (Kafka: %s); they are "
                     "marked failed",
                     nf, b->n, b->batch_id, b->errmsg);
    e.retry_after_s = w->api->retry_after_s;
    kf_api_set_error(c, &e);
    kf_api_audit_rejected(c, &e);
    kf_api_finish(c);
}

/* Validates every line (all or nothing), stores the batch and its requests in one statement,
 * then produces every line. Returns 1 when the answer will come from delivery reports. */
static int
kf_api_batch_create(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_t *api = w->api;
    kf_api_error_t e = {0};
    char errstr[512];
    char batch_id[37];
    kf_uuid4(batch_id);
    kf_api_new_ids(c);
    json_t *rows = json_array(), *seen = json_object(), *irs = json_array();
    const char *p = c->body.data ? c->body.data : "";
    const char *end = p + c->body.len;
    long line = 0;
    int failed = 0;
    kf_api_limits_t lim = kf_api_limits_now(api);
    kf_json_limits_t jl = {.max_bytes = api->body_max, .max_depth = KF_API_JSON_DEPTH};
    while (p < end && !failed) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        size_t len = (size_t)(le - p);
        if (len && p[len - 1] == '\r')
            len--;
        size_t k = 0;
        while (k < len && (p[k] == ' ' || p[k] == '\t'))
            k++;
        if (k < len) {
            if (json_array_size(irs) >= api->batch_max_lines) {
                kf_api_error_set(&e, 400, "invalid_request", NULL,
                                 "batch has more than %zu requests", api->batch_max_lines);
                failed = 1;
                break;
            }
            json_t *obj = NULL;
            char rid[37];
            kf_uuid4(rid);
            kf_api_req_ids_t ids = {.request_id = rid,
                                    .tenant_id = c->tenant_id,
                                    .trace_id = c->trace_id,
                                    .accepted_at_ms = kf_now_ms(),
                                    .batch_id = batch_id};
            json_t *ir = NULL;
            if (kf_json_parse_object(p, len, &jl, &obj, errstr, sizeof(errstr))) {
                kf_api_error_set(&e, 400, "invalid_json", NULL, "line %ld: %s", line, errstr);
                failed = 1;
            } else if (kf_api_request_build(obj, &ids, &lim, &ir, &e)) {
                /* Prefix the line number, keeping the message within its buffer. */
                char pre[32];
                size_t pl = (size_t)snprintf(pre, sizeof(pre), "line %ld: ", line);
                size_t ml = strnlen(e.message, sizeof(e.message) - 1);
                if (pl + ml >= sizeof(e.message))
                    ml = sizeof(e.message) - 1 - pl;
                memmove(e.message + pl, e.message, ml);
                memcpy(e.message, pre, pl);
                e.message[pl + ml] = '\0';
                failed = 1;
            } else {
                const char *cid = json_string_value(json_object_get(ir, "custom_id"));
                if (json_object_get(seen, cid)) {
                    kf_api_error_set(&e, 400, "invalid_request", "custom_id",
                                     "line %ld: custom_id '%s' repeats line %lld", line, cid,
                                     (long long)json_integer_value(json_object_get(seen, cid)));
                    failed = 1;
                    json_decref(ir);
                } else {
                    json_object_set_new(seen, cid, json_integer(line));
                    json_array_append_new(rows, kf_api_row(ir, line));
                    json_array_append_new(irs, ir);
                }
            }
            json_decref(obj);
            if (failed)
                e.line = line;
        }
        p = nl ? nl + 1 : end;
    }
    json_decref(seen);
    if (!failed && json_array_size(irs) == 0) {
        kf_api_error_set(&e, 400, "invalid_request", NULL, "batch has no requests");
        failed = 1;
    }
    if (failed) {
        json_decref(rows);
        json_decref(irs);
        kf_api_set_error(c, &e);
        kf_api_audit_rejected(c, &e);
        return 0;
    }
    size_t n = json_array_size(irs);
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    kf_err_t err = kf_json_dump(rows, &buf);
    json_decref(rows);
    char nstr[24];
    snprintf(nstr, sizeof(nstr), "%zu", n);
    if (!err) {
        const char *params[] = {batch_id, c->tenant_id, nstr, buf.data};
        err = kf_pg_exec_prepared(w->pg, "batch_insert", params, 4, NULL, errstr, sizeof(errstr));
    }
    kf_buf_free(&buf);
    if (err) {
        kf_log(KF_LOG_ERROR, "api", "storing batch failed: %s", errstr);
        json_decref(irs);
        kf_api_fail(c, 503, "unavailable", "the batch could not be stored; retry later");
        return 0;
    }
    kf_api_batch_t *b = calloc(1, sizeof(*b));
    if (b)
        b->items = calloc(n, sizeof(*b->items));
    if (!b || !b->items) {
        kf_api_batch_free(b);
        json_decref(irs);
        kf_api_fail(c, 500, "internal", "out of memory");
        return 0;
    }
    snprintf(b->batch_id, sizeof(b->batch_id), "%s", batch_id);
    b->n = n;
    atomic_init(&b->pending, n);
    atomic_init(&b->failed, 0);
    c->batch = b;
    for (size_t i = 0; i < n; i++) {
        json_t *ir = json_array_get(irs, i);
        kf_api_batch_item_t *it = &b->items[i];
        it->conn = c;
        snprintf(it->request_id, sizeof(it->request_id), "%s",
                 json_string_value(json_object_get(ir, "request_id")));
        kf_err_t perr = kf_api_produce(api, ir, it->request_id, kf_api_on_batch_delivery, it,
                                       errstr, sizeof(errstr));
        if (perr) {
            /* Never queued: report it as a failed delivery ourselves. */
            kf_kafka_delivery_t dr = {.err = perr, .errmsg = errstr, .offset = -1};
            kf_api_on_batch_delivery(&dr, it);
        }
    }
    json_decref(irs);
    return 1;
}

static void
kf_api_batch_get(kf_api_worker_t *w, kf_api_conn_t *c)
{
    if (!kf_api_is_uuid(c->param)) {
        kf_api_fail(c, 404, "not_found", "batch not found");
        return;
    }
    const char *params[] = {c->param, c->tenant_id, w->api->public_url};
    kf_api_json_query(w, c, "batch_get", params, 3, "batch");
}

static void
kf_api_batch_results(kf_api_worker_t *w, kf_api_conn_t *c)
{
    if (!kf_api_is_uuid(c->param)) {
        kf_api_fail(c, 404, "not_found", "batch not found");
        return;
    }
    const char *params[] = {c->param, c->tenant_id};
    char errstr[512];
    kf_pg_result_t *res = NULL;
    if (kf_pg_exec_prepared(w->pg, "batch_results", params, 2, &res, errstr, sizeof(errstr))) {
        kf_log(KF_LOG_ERROR, "api", "batch results failed: %s", errstr);
        kf_api_fail(c, 503, "unavailable", "database unavailable");
        return;
    }
    /* Row 0 is the batch itself (its presence proves ownership), then one row per line. */
    if (kf_pg_result_ntuples(res) == 0) {
        kf_pg_result_destroy(res);
        kf_api_fail(c, 404, "not_found", "batch not found");
        return;
    }
    kf_buf_t out;
    kf_buf_init(&out, 0);
    for (int r = 1; r < kf_pg_result_ntuples(res); r++)
        kf_buf_appendf(&out, "%s\n", kf_pg_result_value(res, r, 0));
    kf_pg_result_destroy(res);
    size_t len = 0;
    char *s = kf_buf_steal(&out, &len);
    kf_api_set_resp(c, 200, s, "application/x-ndjson");
}

/* ---- readiness --------------------------------------------------------------------------- */

static void
kf_api_readyz(kf_api_worker_t *w, kf_api_conn_t *c)
{
    kf_api_t *api = w->api;
    char errstr[512];
    const char *pg_state = "ok";
    if (kf_pg_exec_prepared(w->pg, "ping", NULL, 0, NULL, errstr, sizeof(errstr)))
        pg_state = "unreachable";
    /* Kafka: a metadata round trip (idempotent topic creation) at most every probe interval,
     * and no delivery failure newer than the last success. */
    int64_t now = kf_now_ms();
    pthread_mutex_lock(&api->readymu);
    if (!api->probe_at_ms || now - api->probe_at_ms >= api->probe_interval_ms) {
        const char *topics[] = {api->topic_requests};
        char perr[256] = "";
        kf_err_t err = kf_kafka_create_topics(api->kconf, api->kconf_n, topics, 1, 1, -1, 2000,
                                              perr, sizeof(perr));
        api->probe_ok = err == KF_OK;
        snprintf(api->probe_err, sizeof(api->probe_err), "%s", perr);
        api->probe_at_ms = kf_now_ms();
    }
    int kafka_ok = api->probe_ok;
    pthread_mutex_unlock(&api->readymu);
    if (atomic_load(&api->kafka_err_ms) > atomic_load(&api->kafka_ok_ms))
        kafka_ok = 0;
    int ready = kafka_ok && !strcmp(pg_state, "ok");
    kf_api_set_json(c, ready ? 200 : 503,
                    json_pack("{s:s, s:s, s:s}", "status", ready ? "ready" : "not ready",
                              "postgres", pg_state, "kafka", kafka_ok ? "ok" : "unreachable"));
    if (!ready)
        c->retry_after = api->retry_after_s;
}

/* ---- workers ----------------------------------------------------------------------------- */

/* Writes enqueued_at for every acknowledged id gathered so far. */
static void
kf_api_mark(kf_api_worker_t *w)
{
    kf_api_t *api = w->api;
    pthread_mutex_lock(&api->ackmu);
    char(*ids)[37] = api->acked;
    size_t n = api->nacked;
    api->acked = NULL;
    api->nacked = api->capacked = 0;
    api->mark_queued = 0;
    pthread_mutex_unlock(&api->ackmu);
    if (!n) {
        free(ids);
        return;
    }
    kf_buf_t arr;
    kf_buf_init(&arr, 0);
    kf_buf_append_str(&arr, "{");
    for (size_t i = 0; i < n; i++)
        kf_buf_appendf(&arr, "%s%s", i ? "," : "", ids[i]);
    kf_buf_append_str(&arr, "}");
    free(ids);
    char errstr[512];
    const char *params[] = {arr.data};
    if (kf_pg_exec_prepared(w->pg, "req_mark", params, 1, NULL, errstr, sizeof(errstr)))
        kf_log(KF_LOG_WARN, "api", "could not record %zu acknowledgements: %s", n, errstr);
    kf_buf_free(&arr);
}

/* Handles one HTTP job; returns 1 when c was prepared for the grouped insert, else the job
 * is finished or waits for delivery reports. */
static int
kf_api_handle(kf_api_worker_t *w, kf_api_conn_t *c)
{
    double rate = 0, burst = 0;
    switch (c->rid) {
    case KF_API_ROUTE_READYZ:
        kf_api_readyz(w, c);
        break;
    case KF_API_ROUTE_REQ_CREATE:
        if (kf_api_create_prepare(w, c))
            return 1;
        break;
    case KF_API_ROUTE_BATCH_CREATE:
        if (!kf_api_authenticate(w, c, &rate, &burst) &&
            !kf_api_rate_limit(w->api, c, rate, burst) && kf_api_batch_create(w, c))
            return 0; /* answered by the last delivery report */
        break;
    default:
        if (kf_api_authenticate(w, c, &rate, &burst))
            break;
        if (c->rid == KF_API_ROUTE_REQ_GET)
            kf_api_request_get(w, c);
        else if (c->rid == KF_API_ROUTE_REQ_CANCEL)
            kf_api_request_cancel(w, c);
        else if (c->rid == KF_API_ROUTE_BATCH_GET)
            kf_api_batch_get(w, c);
        else if (c->rid == KF_API_ROUTE_BATCH_RESULTS)
            kf_api_batch_results(w, c);
        else
            kf_api_fail(c, 500, "internal", "unrouted request");
        break;
    }
    kf_api_finish(c);
    return 0;
}

static void *
kf_api_worker_main(void *arg)
{
    kf_api_worker_t *w = arg;
    kf_api_t *api = w->api;
    for (;;) {
        kf_api_job_t *jobs[KF_API_GROUP_MAX];
        size_t njobs = 0;
        pthread_mutex_lock(&api->qmu);
        while (!api->qhead && !api->qstop)
            pthread_cond_wait(&api->qcv, &api->qmu);
        if (!api->qhead && api->qstop) {
            pthread_mutex_unlock(&api->qmu);
            break;
        }
        /* Take what is waiting (up to a group): under load one statement stores many. */
        while (api->qhead && njobs < KF_API_GROUP_MAX) {
            jobs[njobs++] = api->qhead;
            api->qhead = api->qhead->next;
        }
        if (!api->qhead)
            api->qtail = NULL;
        pthread_mutex_unlock(&api->qmu);

        kf_api_conn_t *group[KF_API_GROUP_MAX];
        size_t ngroup = 0;
        for (size_t i = 0; i < njobs; i++) {
            kf_api_job_t *j = jobs[i];
            switch (j->kind) {
            case KF_JOB_HTTP:
                if (kf_api_handle(w, j->conn))
                    group[ngroup++] = j->conn;
                break;
            case KF_JOB_COMPENSATE:
                kf_api_compensate(w, j->conn);
                break;
            case KF_JOB_BATCH_FAILED:
                kf_api_batch_failed(w, j->conn);
                break;
            case KF_JOB_MARK:
                kf_api_mark(w);
                break;
            }
        }
        if (ngroup)
            kf_api_create_commit(w, group, ngroup);
    }
    return NULL;
}

static void *
kf_api_poller_main(void *arg)
{
    kf_api_t *api = arg;
    while (!atomic_load(&api->poller_stop))
        kf_producer_poll(api->producer, 50);
    return NULL;
}

/* ---- MHD glue ---------------------------------------------------------------------------- */

static enum MHD_Result
kf_api_queue_response(kf_api_conn_t *c)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(c->resp_len, c->resp ? c->resp : "",
                                        c->resp ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    c->resp = NULL; /* MHD frees it */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            c->ctype ? c->ctype : "application/json");
    if (c->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", c->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (c->allow[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, c->allow);
    if (c->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (c->replayed)
        MHD_add_response_header(r, "Idempotent-Replayed", "true");
    if (c->location[0] && (c->status == 202 || c->status == 200) &&
        (c->rid == KF_API_ROUTE_REQ_CREATE || c->rid == KF_API_ROUTE_BATCH_CREATE))
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, c->location);
    if (c->trace_id[0])
        MHD_add_response_header(r, "X-Trace-Id", c->trace_id);
    enum MHD_Result ret = MHD_queue_response(c->mhd, (unsigned)c->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Answers at once, from the MHD thread (routing errors, 413/415, health, metrics). */
static enum MHD_Result
kf_api_answer_now(kf_api_conn_t *c, int status, const char *code, const char *msg)
{
    kf_api_fail(c, status, code, msg);
    c->phase = KF_CONN_DONE;
    return kf_api_queue_response(c);
}

static int
kf_api_ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    return ct && !strncasecmp(ct, want, n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static char *
kf_api_header_dup(struct MHD_Connection *mc, const char *name)
{
    const char *v = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, name);
    return v ? strdup(v) : NULL;
}

static enum MHD_Result
kf_api_on_request(void *cls,
                  struct MHD_Connection *mc,
                  const char *url,
                  const char *method,
                  const char *version,
                  const char *upload_data,
                  size_t *upload_data_size,
                  void **con_cls)
{
    (void)version;
    kf_api_t *api = cls;
    kf_api_conn_t *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        *con_cls = c;
        c->api = api;
        c->mhd = mc;
        c->start_us = kf_api_now_us();
        c->job.kind = KF_JOB_HTTP;
        c->job.conn = c;
        c->rid = kf_api_route_match(method, url, c->param, sizeof(c->param), c->allow,
                                    sizeof(c->allow), &c->route);
        if (c->rid == KF_API_ROUTE_NONE)
            return kf_api_answer_now(c, 404, "not_found", "no such route");
        if (c->rid == KF_API_ROUTE_METHOD)
            return kf_api_answer_now(c, 405, "method_not_allowed",
                                     "method not allowed on this path");
        c->allow[0] = '\0';
        if (c->rid == KF_API_ROUTE_HEALTHZ) {
            c->phase = KF_CONN_DONE;
            kf_api_set_resp(c, 200, strdup("{\"status\":\"ok\"}"), NULL);
            return kf_api_queue_response(c);
        }
        if (c->rid == KF_API_ROUTE_METRICS) {
            kf_buf_t page;
            kf_buf_init(&page, 0);
            kf_metrics_set(api->m_inflight, (double)atomic_load(&api->inflight));
            kf_metrics_render(api->metrics, &page);
            size_t len = 0;
            c->phase = KF_CONN_DONE;
            kf_api_set_resp(c, 200, kf_buf_steal(&page, &len), KF_METRICS_CONTENT_TYPE);
            return kf_api_queue_response(c);
        }
        c->auth = kf_api_header_dup(mc, MHD_HTTP_HEADER_AUTHORIZATION);
        c->idem = kf_api_header_dup(mc, "Idempotency-Key");
        c->traceparent = kf_api_header_dup(mc, "traceparent");
        if (c->rid == KF_API_ROUTE_REQ_CREATE || c->rid == KF_API_ROUTE_BATCH_CREATE) {
            int batch = c->rid == KF_API_ROUTE_BATCH_CREATE;
            const char *ct =
                MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
            int ct_ok = batch ? kf_api_ctype_is(ct, "application/x-ndjson") ||
                                    kf_api_ctype_is(ct, "application/jsonl")
                              : kf_api_ctype_is(ct, "application/json");
            if (!ct_ok)
                return kf_api_answer_now(c, 415, "unsupported_media_type",
                                         batch ? "Content-Type must be application/x-ndjson or "
                                                 "application/jsonl"
                                               : "Content-Type must be application/json");
            c->body_max = batch ? api->batch_body_max : api->body_max;
            kf_buf_init(&c->body, c->body_max);
            const char *cl =
                MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            /* Refuse before reading a byte: the client learns at once, we store nothing. */
            if (cl && strtoull(cl, NULL, 10) > c->body_max)
                return kf_api_answer_now(c, 413, "payload_too_large",
                                         "request body exceeds the size limit");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Chunked bodies have no Content-Length: count as we go. After the limit the rest is
         * discarded (a 413 cannot be queued mid-body in MHD 0.9), and a client that keeps
         * sending far past it is cut off. */
        if (!c->too_big && c->body_max &&
            kf_buf_append(&c->body, upload_data, *upload_data_size) != KF_OK) {
            c->too_big = 1;
            kf_buf_free(&c->body);
        }
        if (c->too_big) {
            c->discarded += *upload_data_size;
            if (c->discarded > 4 * c->body_max)
                return MHD_NO;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->phase == KF_CONN_READ) {
        if (c->too_big)
            return kf_api_answer_now(c, 413, "payload_too_large",
                                     "request body exceeds the size limit");
        c->phase = KF_CONN_QUEUED;
        atomic_fetch_add(&api->inflight, 1);
        MHD_suspend_connection(mc);
        kf_api_enqueue(api, &c->job);
        return MHD_YES;
    }
    if (c->phase == KF_CONN_DONE) {
        atomic_fetch_sub(&api->inflight, 1);
        return kf_api_queue_response(c);
    }
    return MHD_YES;
}

static void
kf_api_on_completed(void *cls,
                    struct MHD_Connection *mc,
                    void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    (void)toe;
    kf_api_t *api = cls;
    kf_api_conn_t *c = *con_cls;
    if (!c)
        return;
    *con_cls = NULL;
    const char *label = c->route ? c->route->label : "unmatched";
    char code[8];
    snprintf(code, sizeof(code), "%d", c->status);
    kf_metrics_add(kf_metrics_labels(api->m_requests, (const char *[]){label, code}), 1);
    kf_metrics_observe(kf_metrics_labels(api->m_latency, (const char *[]){label}),
                       (double)(kf_api_now_us() - c->start_us) / 1e6);
    kf_logkv(KF_LOG_DEBUG, "api", NULL, "%s %d %.3f ms request_id=%s", label, c->status,
             (double)(kf_api_now_us() - c->start_us) / 1000.0, c->request_id);
    kf_buf_free(&c->body);
    free(c->auth);
    free(c->idem);
    free(c->traceparent);
    free(c->resp);
    json_decref(c->ir);
    kf_api_batch_free(c->batch);
    free(c);
}

/* libmicrohttpd's own messages, as kf_log lines. */
static void kf_api_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
kf_api_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    kf_log(KF_LOG_WARN, "mhd", "%s", msg);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *sql;
    int nparams;
    int flags;
} kf_api_stmts[] = {
    {"ping", "SELECT 1", 0, KF_PG_IDEMPOTENT},
    {"auth_key",
     "SELECT k.tenant_id, k.revoked, t.rate_per_sec, t.rate_burst FROM api_keys k "
     "JOIN tenants t USING (tenant_id) WHERE k.key_sha256 = $1",
     1, KF_PG_IDEMPOTENT},
    {"req_insert",
     "INSERT INTO requests (request_id, tenant_id, idempotency_key, batch_id, custom_id, "
     "batch_line, callback_url, callback_status, task, model, trace_id, request) "
     "SELECT x.request_id, x.tenant_id, x.idempotency_key, x.batch_id, x.custom_id, "
     "x.batch_line, x.callback_url, "
     "CASE WHEN x.callback_url IS NULL THEN 'none' ELSE 'pending' END, x.task, x.model, "
     "x.trace_id, x.request FROM jsonb_to_recordset($1::jsonb) AS x(request_id text, "
     "tenant_id text, idempotency_key text, batch_id text, custom_id text, batch_line int, "
     "callback_url text, task text, model text, trace_id text, request jsonb) "
     "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
     "RETURNING request_id",
     1, 0},
    {"batch_insert",
     "WITH b AS (INSERT INTO batches (batch_id, tenant_id, n_requests) VALUES ($1, $2, $3) "
     "RETURNING batch_id) "
     "INSERT INTO requests (request_id, tenant_id, batch_id, custom_id, batch_line, "
     "callback_url, callback_status, task, model, trace_id, request) "
     "SELECT x.request_id, x.tenant_id, (SELECT batch_id FROM b), x.custom_id, x.batch_line, "
     "x.callback_url, CASE WHEN x.callback_url IS NULL THEN 'none' ELSE 'pending' END, x.task, "
     "x.model, x.trace_id, x.request FROM jsonb_to_recordset($4::jsonb) AS x(request_id text, "
     "tenant_id text, custom_id text, batch_line int, callback_url text, task text, "
     "model text, trace_id text, request jsonb)",
     4, 0},
    {"req_by_idem",
     "SELECT request_id, enqueued_at IS NOT NULL, "
     "updated_at < now() - $3::bigint * interval '1 millisecond' "
     "FROM requests WHERE tenant_id = $1 AND idempotency_key = $2",
     3, KF_PG_IDEMPOTENT},
    {"req_claim_stale",
     "UPDATE requests SET updated_at = now() WHERE request_id = $1 AND enqueued_at IS NULL "
     "AND updated_at < now() - $2::bigint * interval '1 millisecond' RETURNING request::text",
     2, 0},
    {"req_delete", "DELETE FROM requests WHERE request_id = $1 AND enqueued_at IS NULL", 1,
     KF_PG_IDEMPOTENT},
    {"req_mark",
     "UPDATE requests SET enqueued_at = now() WHERE request_id = ANY($1::text[]) "
     "AND enqueued_at IS NULL",
     1, KF_PG_IDEMPOTENT},
    {"req_fail_many",
     "UPDATE requests SET status = 'failed', error = $2, updated_at = now(), "
     "completed_at = now() WHERE request_id = ANY($1::text[]) AND enqueued_at IS NULL",
     2, KF_PG_IDEMPOTENT},
    {"req_get",
     "SELECT json_build_object('id', request_id, 'status', status, 'callback_status', "
     "callback_status, 'callback_attempts', callback_attempts, 'model', model, 'task', task, "
     "'batch_id', batch_id, 'custom_id', custom_id, 'cancel_requested', cancel_requested, "
     "'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
     "'updated_at', to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
     "'completed_at', to_char(completed_at AT TIME ZONE 'UTC', "
     "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
     "'delivered_at', to_char(delivered_at AT TIME ZONE 'UTC', "
     "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
     "'error', error, 'result', result, 'status_url', $3 || '/v1/requests/' || request_id)::text "
     "FROM requests WHERE request_id = $1 AND tenant_id = $2",
     3, KF_PG_IDEMPOTENT},
    {"req_status", "SELECT status FROM requests WHERE request_id = $1 AND tenant_id = $2", 2,
     KF_PG_IDEMPOTENT},
    {"req_cancel",
     "UPDATE requests SET cancel_requested = true, status = 'cancelled', updated_at = now(), "
     "completed_at = coalesce(completed_at, now()) WHERE request_id = $1 AND tenant_id = $2 "
     "AND status NOT IN ('completed', 'failed', 'expired', 'cancelled') RETURNING status",
     2, KF_PG_IDEMPOTENT},
    {"batch_get",
     "SELECT json_build_object('batch_id', b.batch_id, 'n', b.n_requests, 'created_at', "
     "to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
     "'counts', json_build_object("
     "'accepted', count(r.*) FILTER (WHERE r.status = 'accepted'), "
     "'enriched', count(r.*) FILTER (WHERE r.status = 'enriched'), "
     "'running', count(r.*) FILTER (WHERE r.status = 'running'), "
     "'completed', count(r.*) FILTER (WHERE r.status = 'completed'), "
     "'failed', count(r.*) FILTER (WHERE r.status = 'failed'), "
     "'expired', count(r.*) FILTER (WHERE r.status = 'expired'), "
     "'cancelled', count(r.*) FILTER (WHERE r.status = 'cancelled')), "
     "'callback_counts', json_build_object("
     "'pending', count(r.*) FILTER (WHERE r.callback_status = 'pending'), "
     "'delivered', count(r.*) FILTER (WHERE r.callback_status = 'delivered'), "
     "'delivery_failed', count(r.*) FILTER (WHERE r.callback_status = 'delivery_failed')), "
     "'done', count(r.*) FILTER (WHERE r.status IN ('completed', 'failed', 'expired', "
     "'cancelled')) = b.n_requests, "
     "'status_url', $3 || '/v1/batches/' || b.batch_id, "
     "'results_url', $3 || '/v1/batches/' || b.batch_id || '/results')::text "
     "FROM batches b LEFT JOIN requests r ON r.batch_id = b.batch_id "
     "WHERE b.batch_id = $1 AND b.tenant_id = $2 GROUP BY b.batch_id",
     3, KF_PG_IDEMPOTENT},
    {"batch_results",
     "SELECT line FROM ("
     "SELECT 0 AS ord, '' AS line FROM batches WHERE batch_id = $1 AND tenant_id = $2 "
     "UNION ALL "
     "SELECT coalesce(batch_line, 0) + 1, json_build_object('custom_id', custom_id, "
     "'request_id', request_id, 'status', status, 'result', result, 'error', error)::text "
     "FROM requests WHERE batch_id = $1 AND tenant_id = $2 "
     "AND EXISTS (SELECT 1 FROM batches WHERE batch_id = $1 AND tenant_id = $2)"
     ") s ORDER BY ord",
     2, KF_PG_IDEMPOTENT},
};

/* Builds the producer configuration: connection keys from conf (or $KINFER_KAFKA_BROKERS)
 * plus the API's delivery settings, which explicit kafka.* keys override. */
static kf_err_t
kf_api_kafka_conf(kf_api_t *api, const kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    size_t nk = kf_conf_kafka_count(conf);
    api->kconf = calloc(nk + 4, sizeof(*api->kconf));
    api->kconf_strs = calloc(2 * (nk + 4), sizeof(char *));
    api->kconf_nstrs = api->kconf_strs ? 2 * (nk + 4) : 0;
    if (!api->kconf || !api->kconf_strs)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    int have_bootstrap = 0, have_linger = 0, have_timeout = 0;
    size_t n = 0, ns = 0;
    for (size_t i = 0; i < nk; i++) {
        const char *name, *value;
        kf_conf_kafka_at(conf, i, &name, &value);
        have_bootstrap |= !strcmp(name, "bootstrap.servers");
        have_linger |= !strcmp(name, "linger.ms");
        have_timeout |= !strcmp(name, "message.timeout.ms");
        size_t len = strlen(name) + 7;
        char *key = malloc(len);
        if (!key)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        snprintf(key, len, "kafka.%s", name);
        api->kconf_strs[ns++] = key;
        api->kconf[n++] = (kf_kafka_kv_t){key, value ? strdup(value) : NULL};
        api->kconf_strs[ns++] = (char *)api->kconf[n - 1].value;
    }
    if (!have_bootstrap) {
        const char *b = getenv("KINFER_KAFKA_BROKERS");
        if (!b || !*b)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "no Kafka brokers: set kafka.bootstrap.servers "
                              "(KINFER_KAFKA_BOOTSTRAP_SERVERS) or KINFER_KAFKA_BROKERS");
        api->kconf_strs[ns++] = strdup(b);
        api->kconf[n++] = (kf_kafka_kv_t){"kafka.bootstrap.servers", api->kconf_strs[ns - 1]};
    }
    if (!have_linger) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)kf_conf_get_duration_ms(conf, "api.linger"));
        api->kconf_strs[ns++] = strdup(v);
        api->kconf[n++] = (kf_kafka_kv_t){"kafka.linger.ms", api->kconf_strs[ns - 1]};
    }
    if (!have_timeout) {
        char v[32];
        snprintf(v, sizeof(v), "%lld",
                 (long long)kf_conf_get_duration_ms(conf, "api.produce.timeout"));
        api->kconf_strs[ns++] = strdup(v);
        api->kconf[n++] = (kf_kafka_kv_t){"kafka.message.timeout.ms", api->kconf_strs[ns - 1]};
    }
    api->kconf_n = n;
    for (size_t i = 0; i < n; i++)
        if (!api->kconf[i].value)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    return KF_OK;
}

static void
kf_api_metrics_init(kf_api_t *api)
{
    static const double lat[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    api->metrics = kf_metrics_new();
    api->m_requests =
        kf_metrics_counter(api->metrics, "kinfer_api_http_requests_total",
                           "HTTP requests answered, by route and status code.", "route,code");
    api->m_latency = kf_metrics_histogram(api->metrics, "kinfer_api_http_request_duration_seconds",
                                          "Time from first byte to response, by route.", "route",
                                          lat, sizeof(lat) / sizeof(lat[0]));
    api->m_produce =
        kf_metrics_histogram(api->metrics, "kinfer_api_kafka_produce_duration_seconds",
                             "Time from producing a request record to its delivery report.", NULL,
                             lat, sizeof(lat) / sizeof(lat[0]));
    api->m_rate_limited = kf_metrics_labels(
        kf_metrics_counter(api->metrics, "kinfer_api_rate_limited_total",
                           "Requests refused with 429 by a tenant's token bucket.", NULL),
        NULL);
    api->m_delivery_failed = kf_metrics_labels(
        kf_metrics_counter(api->metrics, "kinfer_api_kafka_delivery_failures_total",
                           "Request records Kafka did not acknowledge (answered 503).", NULL),
        NULL);
    api->m_inflight = kf_metrics_labels(
        kf_metrics_gauge(api->metrics, "kinfer_api_inflight_requests",
                         "Requests being processed (between body and response).", NULL),
        NULL);
    kf_metrics_family_t *auth = kf_metrics_counter(api->metrics, "kinfer_api_auth_cache_total",
                                                   "API key cache lookups.", "result");
    api->m_auth_hit = kf_metrics_labels(auth, (const char *[]){"hit"});
    api->m_auth_miss = kf_metrics_labels(auth, (const char *[]){"miss"});
}

static kf_err_t
kf_api_start_mhd(kf_api_t *api, char *errstr, size_t errstr_size)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)api->listen_port);
    if (inet_pton(AF_INET, api->listen_addr, &sa.sin_addr) != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "api.listen.address '%s' is not an IPv4 address", api->listen_addr);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    /* The logger goes first so MHD reports option errors through it too. */
    api->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, kf_api_on_request, api, MHD_OPTION_EXTERNAL_LOGGER, kf_api_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)api->threads, MHD_OPTION_NOTIFY_COMPLETED, kf_api_on_completed, api,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)10000, MHD_OPTION_END);
    if (!api->mhd)
        return kf_err_set(errstr, errstr_size, KF_ERR_IO,
                          "cannot listen on %s:%d (in use, or not permitted)", api->listen_addr,
                          api->listen_port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : api->listen_port;
    return KF_OK;
}

kf_err_t
kf_api_new(const kf_conf_t *conf, kf_api_t **out_api, char *errstr, size_t errstr_size)
{
    KF_ASSERT(conf && out_api);
    *out_api = NULL;
    kf_api_t *api = calloc(1, sizeof(*api));
    if (!api)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&api->qmu, NULL);
    pthread_cond_init(&api->qcv, NULL);
    pthread_mutex_init(&api->ackmu, NULL);
    pthread_mutex_init(&api->authmu, NULL);
    pthread_mutex_init(&api->readymu, NULL);
    api->mark_job.kind = KF_JOB_MARK;
    atomic_init(&api->inflight, 0);
    atomic_init(&api->poller_stop, 0);
    atomic_init(&api->kafka_ok_ms, 0);
    atomic_init(&api->kafka_err_ms, 0);

    snprintf(api->listen_addr, sizeof(api->listen_addr), "%s",
             kf_conf_get_str(conf, "api.listen.address"));
    api->listen_port = (int)kf_conf_get_int(conf, "api.listen.port");
    api->threads = (int)kf_conf_get_int(conf, "api.threads");
    api->nworkers = (int)kf_conf_get_int(conf, "api.workers");
    api->body_max = (size_t)kf_conf_get_int(conf, "api.body.max");
    api->batch_body_max = (size_t)kf_conf_get_int(conf, "api.batch.body.max");
    api->batch_max_lines = (size_t)kf_conf_get_int(conf, "api.batch.max.lines");
    api->limits.max_tokens = kf_conf_get_int(conf, "api.max.tokens");
    api->limits.max_prompt_bytes = (size_t)kf_conf_get_int(conf, "api.max.prompt.bytes");
    api->limits.max_messages = (size_t)kf_conf_get_int(conf, "api.max.messages");
    api->auth_ttl_ms = kf_conf_get_duration_ms(conf, "api.auth.cache.ttl");
    api->auth_neg_ttl_ms = kf_conf_get_duration_ms(conf, "api.auth.cache.negative.ttl");
    api->idem_stale_ms = kf_conf_get_duration_ms(conf, "api.idempotency.stale");
    api->shutdown_ms = kf_conf_get_duration_ms(conf, "api.shutdown.timeout");
    api->probe_interval_ms = kf_conf_get_duration_ms(conf, "api.ready.probe.interval");
    api->retry_after_s = (int)kf_conf_get_int(conf, "api.retry.after");
    const char *pub = kf_conf_get_str(conf, "api.public.url");
    snprintf(api->public_url, sizeof(api->public_url), "%s", pub ? pub : "");
    size_t pl = strlen(api->public_url);
    while (pl && api->public_url[pl - 1] == '/')
        api->public_url[--pl] = '\0';
    snprintf(api->topic_requests, sizeof(api->topic_requests), "%s",
             kf_conf_get_str(conf, "topics.requests"));
    snprintf(api->topic_audit, sizeof(api->topic_audit), "%s",
             kf_conf_get_str(conf, "topics.audit"));
    snprintf(api->topic_control, sizeof(api->topic_control), "%s",
             kf_conf_get_str(conf, "topics.control"));
    kf_api_metrics_init(api);

    kf_err_t err = kf_api_kafka_conf(api, conf, errstr, errstr_size);
    if (err)
        goto fail;
    kf_pg_opts_t pgo;
    kf_pg_opts_from_conf(conf, &pgo);
    pgo.application_name = "kinfer-api";
    if (!pgo.dsn || !*pgo.dsn) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "no PostgreSQL DSN: set pg.dsn (KINFER_PG_DSN)");
        goto fail;
    }
    if (kf_conf_get_bool(conf, "api.topics.create")) {
        const char *topics[] = {api->topic_requests, api->topic_control, api->topic_audit};
        err = kf_kafka_create_topics(api->kconf, api->kconf_n, topics, 3,
                                     (int)kf_conf_get_int(conf, "api.topics.partitions"), -1, 10000,
                                     errstr, errstr_size);
        if (err)
            goto fail;
    }
    /* The producer gets the kafka.* keys plus its flush budget for shutdown. */
    {
        kf_kafka_kv_t *pc = calloc(api->kconf_n + 1, sizeof(*pc));
        if (!pc) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(pc, api->kconf, api->kconf_n * sizeof(*pc));
        char flush[32];
        snprintf(flush, sizeof(flush), "%lld", (long long)api->shutdown_ms);
        pc[api->kconf_n] = (kf_kafka_kv_t){"producer.flush.timeout.ms", flush};
        err = kf_producer_new(pc, api->kconf_n + 1, &api->producer, errstr, errstr_size);
        free(pc);
        if (err)
            goto fail;
    }
    err = kf_audit_new(api->producer, api->topic_audit, &api->audit, errstr, errstr_size);
    if (err)
        goto fail;

    api->workers = calloc((size_t)api->nworkers, sizeof(*api->workers));
    if (!api->workers) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < api->nworkers; i++) {
        kf_api_worker_t *w = &api->workers[i];
        w->api = api;
        err = kf_pg_new(&pgo, &w->pg, errstr, errstr_size);
        for (size_t s = 0; !err && s < sizeof(kf_api_stmts) / sizeof(kf_api_stmts[0]); s++)
            err =
                kf_pg_register(w->pg, kf_api_stmts[s].name, kf_api_stmts[s].sql,
                               kf_api_stmts[s].nparams, kf_api_stmts[s].flags, errstr, errstr_size);
        if (err)
            goto fail;
    }
    for (int i = 0; i < api->nworkers; i++) {
        if (pthread_create(&api->workers[i].thread, NULL, kf_api_worker_main, &api->workers[i])) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "cannot start worker thread");
            goto fail;
        }
        api->workers[i].started = 1;
    }
    if (pthread_create(&api->poller, NULL, kf_api_poller_main, api)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "cannot start poller thread");
        goto fail;
    }
    api->poller_started = 1;
    err = kf_api_start_mhd(api, errstr, errstr_size);
    if (err)
        goto fail;
    kf_log(KF_LOG_INFO, "api", "listening on %s:%d (threads %d, workers %d, topic %s)",
           api->listen_addr, api->port, api->threads, api->nworkers, api->topic_requests);
    *out_api = api;
    return KF_OK;
fail:
    kf_api_destroy(api);
    return err;
}

int
kf_api_port(const kf_api_t *api)
{
    return api ? api->port : -1;
}

/* Waits until no request is between suspend and resume, or the deadline passes. */
static int
kf_api_drain(kf_api_t *api, int64_t deadline_us)
{
    while (atomic_load(&api->inflight) > 0 && kf_api_now_us() < deadline_us) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&api->inflight) == 0;
}

void
kf_api_shutdown(kf_api_t *api)
{
    if (!api || api->shut)
        return;
    api->shut = 1;
    int64_t deadline = kf_api_now_us() + api->shutdown_ms * 1000;
    if (api->mhd) {
        /* Stop accepting; connections already open finish their requests. */
        MHD_socket fd = MHD_quiesce_daemon(api->mhd);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        if (!kf_api_drain(api, deadline))
            kf_log(KF_LOG_WARN, "api", "shutdown: %ld requests still in flight after %lld ms",
                   (long)atomic_load(&api->inflight), (long long)api->shutdown_ms);
    }
    /* Workers finish their queue (including pending mark jobs), then exit. */
    pthread_mutex_lock(&api->qmu);
    api->qstop = 1;
    pthread_cond_broadcast(&api->qcv);
    pthread_mutex_unlock(&api->qmu);
    for (int i = 0; api->workers && i < api->nworkers; i++)
        if (api->workers[i].started) {
            pthread_join(api->workers[i].thread, NULL);
            api->workers[i].started = 0;
        }
    if (api->mhd && atomic_load(&api->inflight) == 0) {
        MHD_stop_daemon(api->mhd);
        api->mhd = NULL;
    }
    if (api->poller_started) {
        atomic_store(&api->poller_stop, 1);
        pthread_join(api->poller, NULL);
        api->poller_started = 0;
    }
    if (api->producer) {
        char errstr[256];
        if (kf_producer_flush(api->producer, (int)api->shutdown_ms, errstr, sizeof(errstr)))
            kf_log(KF_LOG_WARN, "api", "shutdown: %s", errstr);
    }
    kf_log(KF_LOG_INFO, "api", "stopped");
}

void
kf_api_destroy(kf_api_t *api)
{
    if (!api)
        return;
    kf_api_shutdown(api);
    /* A daemon with requests still suspended cannot be stopped safely; leak it rather than
     * crash (only after a shutdown timeout). */
    kf_audit_destroy(api->audit);
    kf_producer_destroy(api->producer);
    for (int i = 0; api->workers && i < api->nworkers; i++)
        kf_pg_destroy(api->workers[i].pg);
    free(api->workers);
    kf_api_keys_clear(api);
    for (size_t i = 0; i < KF_API_HASH_SIZE; i++)
        while (api->tenants[i]) {
            kf_api_tenant_ent_t *t = api->tenants[i];
            api->tenants[i] = t->next;
            free(t);
        }
    free(api->acked);
    for (size_t i = 0; i < api->kconf_nstrs; i++)
        free(api->kconf_strs[i]);
    free(api->kconf_strs);
    free(api->kconf);
    kf_metrics_destroy(api->metrics);
    pthread_mutex_destroy(&api->qmu);
    pthread_cond_destroy(&api->qcv);
    pthread_mutex_destroy(&api->ackmu);
    pthread_mutex_destroy(&api->authmu);
    pthread_mutex_destroy(&api->readymu);
    free(api);
}

kf_err_t
kf_api_run(const kf_conf_t *conf, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    kf_api_t *api = NULL;
    kf_err_t err = kf_api_new(conf, &api, errstr, errstr_size);
    if (err)
        return err;
    while (!*stop) {
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    kf_log(KF_LOG_INFO, "api", "stop requested: draining");
    kf_api_destroy(api);
    return KF_OK;
}
