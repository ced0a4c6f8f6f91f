/*
 * dispatch.c: `kinfer dispatch` (see kf_dispatch.h for the contract).
 *
 * Every record read becomes a job. A job moves through
 *
 *   NEW        decode the record; results are upserted into PostgreSQL
 *   WAIT       held until its attempt is due (retries carry next_attempt_at)
 *   HTTP       one POST running on the curl multi handle
 *   FINAL      bookkeeping after the attempt: PostgreSQL, retry or dead-letter record, audit
 *   PRODUCING  waiting for Kafka to acknowledge that retry or dead-letter record
 *
 * and its record's offset counts as finished only when the job is freed. Each partition keeps
 * the offsets of its unfinished records in order; the committed position is the first
 * unfinished one, so a crash re-reads exactly what was not finished. Re-reading is harmless:
 * before each attempt, PostgreSQL says whether that attempt (or the whole delivery) is already
 * done, so a re-read record is skipped.
 *
 * Steps that fail retriably (PostgreSQL down, a produce error) keep the job and try again a
 * second later; nothing blocks the loop for longer than one poll.
 */
#include "kf_dispatch.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dispatch_int.h"
#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_pg.h"
#include "kf_webhook.h"

#define KF_DQ_RETRY_STEP_MS 1000 /* how soon a step that failed retriably runs again */

const kf_conf_prop_t kf_dispatch_conf_props[] = {
    {.name = "dispatch.group.id",
     .type = KF_CONF_STRING,
     .def = "kinfer-dispatch",
     .desc = "Kafka consumer group of the dispatcher."},
    {.name = "dispatch.timeout",
     .type = KF_CONF_DURATION,
     .def = "15s",
     .min = 100,
     .max = 600000,
     .desc = "Time limit of one webhook POST, connection included."},
    {.name = "dispatch.connect.timeout",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 100,
     .max = 600000,
     .desc = "Time limit for connecting to a webhook endpoint."},
    {.name = "dispatch.max.inflight",
     .type = KF_CONF_INT,
     .def = "256",
     .min = 1,
     .max = 10000,
     .desc = "Most webhook POSTs running at once."},
    {.name = "dispatch.max.pending",
     .type = KF_CONF_INT,
     .def = "10000",
     .min = 1,
     .max = 1000000,
     .desc = "Most records held at once (waiting, in flight, finishing); beyond it every "
             "partition is paused."},
    {.name = "dispatch.retry.max.held",
     .type = KF_CONF_INT,
     .def = "5000",
     .min = 1,
     .max = 1000000,
     .desc = "Most retries held in memory before they are due; beyond it the retry topic's "
             "partitions are paused."},
    {.name = "dispatch.retry.schedule",
     .type = KF_CONF_STRING,
     .def = KF_WEBHOOK_SCHEDULE_DEFAULT,
     .desc = "Delays before retries 1, 2, ... (units ms, s, m, h); its length is the number of "
             "retries."},
    {.name = "dispatch.retry.jitter",
     .type = KF_CONF_DOUBLE,
     .def = "0.1",
     .min = 0,
     .max = 1,
     .desc = "Each retry delay is scaled by a random factor in [1 - jitter, 1 + jitter]."},
    {.name = "dispatch.retry.after.max",
     .type = KF_CONF_DURATION,
     .def = "24h",
     .min = 0,
     .max = 2592000000.0,
     .desc = "Largest Retry-After honoured; longer requests are cut to it."},
    {.name = "dispatch.allow.cidrs",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "CIDR blocks that webhooks may connect to although the SSRF guard would refuse them "
             "(e.g. 127.0.0.1/32 for tests)."},
    {.name = "dispatch.commit.interval",
     .type = KF_CONF_DURATION,
     .def = "1s",
     .min = 10,
     .max = 60000,
     .desc = "How often finished offsets are committed."},
    {.name = "dispatch.shutdown.timeout",
     .type = KF_CONF_DURATION,
     .def = "20s",
     .min = 0,
     .max = 600000,
     .desc = "How long a stop waits for POSTs in flight to finish."},
    {.name = "dispatch.topics.create",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Create the topics the dispatcher uses at start (idempotent)."},
    {.name = "dispatch.topics.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of topics the dispatcher creates."},
    {.name = "dispatch.audit",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Emit callback.* audit events to topics.audit."},
    {.name = NULL}};

typedef enum kf_dq_state {
    KF_DQ_NEW,
    KF_DQ_WAIT,
    KF_DQ_HTTP,
    KF_DQ_FINAL,
    KF_DQ_PRODUCING,
} kf_dq_state_t;

/* Progress through the FINAL steps, so a step that failed retriably is not redone. */
#define KF_DQ_STEP_DISABLED 0x1
#define KF_DQ_STEP_MARKED   0x2
#define KF_DQ_STEP_PRODUCED 0x4

/* An assigned partition and the offsets of its unfinished records, in read order. */
typedef struct kf_dq_part {
    struct kf_dq_part *next;
    char *topic;
    int32_t partition;
    int is_retry;
    int64_t *offs;
    unsigned char *done;
    size_t head, len, cap; /* unfinished entries live in [head, len) */
    int64_t next_offset;   /* one past the last offset read; -1 before the first */
    int64_t committed;     /* last committed position; -1 none */
    int paused;
} kf_dq_part_t;

typedef struct kf_dq_job {
    struct kf_dq_job *next, *prev;
    struct kf_dispatch *d;
    kf_dq_part_t *part; /* NULL once its partition was revoked */
    int64_t offset;
    int from_retry;
    kf_dq_state_t state;
    int64_t due_ms; /* wall clock */
    /* NEW: the raw record */
    unsigned char *raw;
    size_t raw_len;
    char *key; /* record key, for dead letters */
    size_t key_len;
    /* the delivery */
    char *request_id, *tenant_id, *url, *trace_id, *payload;
    size_t payload_len;
    int attempt;
    int64_t created_at;
    /* the attempt */
    CURL *easy;
    struct curl_slist *hdrs;
    char curl_err[CURL_ERROR_SIZE];
    char retry_after[64];
    int blocked;
    int64_t started_ms;
    double duration_ms;
    long http_status;
    char error[256];
    kf_webhook_decision_t decision;
    int steps;
} kf_dq_job_t;

struct kf_dispatch {
    /* configuration */
    char *results_topic, *retry_topic, *dlq_topic, *audit_topic, *results_dlq, *retry_dlq;
    int64_t timeout_ms, connect_timeout_ms, retry_after_max_ms, commit_interval_ms, shutdown_ms;
    int64_t max_inflight, max_pending, max_held;
    double jitter;
    kf_webhook_schedule_t sched;
    kf_webhook_cidrs_t *allow;
    /* clients */
    rd_kafka_t *rk;
    kf_producer_t *producer;
    kf_audit_t *audit;
    kf_pg_t *pg;
    CURLM *multi;
    kf_metrics_t *metrics;
    int own_metrics;
    kf_metrics_series_t *m_results, *m_attempt[4], *m_delivered, *m_failed, *m_inflight;
    kf_metrics_series_t *m_latency;
    /* state */
    kf_dq_part_t *parts;
    kf_dq_job_t *jobs; /* doubly linked, newest first */
    size_t njobs, ninflight;
    int64_t last_commit_ms;
    uint64_t rng;
    int fatal;
    char fatal_msg[256];
    struct {
        _Atomic uint64_t records, results, attempts, delivered, retries, failed, blocked, gone,
            skipped, dead_lettered, pending, inflight;
    } st;
};

#define KF_DQ_INC(d, f) atomic_fetch_add_explicit(&(d)->st.f, 1, memory_order_relaxed)

/* ---- small helpers ------------------------------------------------------------------------ */

static double
kf_dq_rand(kf_dispatch_t *d)
{
    /* xorshift64*: plenty for jitter, and no global state shared with other stages. */
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return (double)((d->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* Copies text into a fixed buffer, truncating. */
static void
kf_dq_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static char *
kf_dq_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The host[:port] of a URL, for logs and audit (never the path or query: they may hold
 * tokens). */
static void
kf_dq_url_host(const char *url, char *out, size_t size)
{
    const char *p = url ? strstr(url, "://") : NULL;
    p = p ? p + 3 : (url ? url : "");
    size_t n = strcspn(p, "/?#");
    if (n >= size)
        n = size - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* ---- partitions and offsets --------------------------------------------------------------- */

static kf_dq_part_t *
kf_dq_part_find(kf_dispatch_t *d, const char *topic, int32_t partition)
{
    for (kf_dq_part_t *p = d->parts; p; p = p->next)
        if (p->partition == partition && !strcmp(p->topic, topic))
            return p;
    return NULL;
}

static kf_dq_part_t *
kf_dq_part_get(kf_dispatch_t *d, const char *topic, int32_t partition)
{
    kf_dq_part_t *p = kf_dq_part_find(d, topic, partition);
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p || !(p->topic = strdup(topic))) {
        free(p);
        return NULL;
    }
    p->partition = partition;
    p->is_retry = !strcmp(topic, d->retry_topic);
    p->next_offset = -1;
    p->committed = -1;
    p->next = d->parts;
    d->parts = p;
    return p;
}

/* Remembers an offset as unfinished. 0 when out of memory. */
static int
kf_dq_part_track(kf_dq_part_t *p, int64_t offset)
{
    if (p->len == p->cap) {
        if (p->head > 0) {
            /* Slide the live window to the front before growing. */
            memmove(p->offs, p->offs + p->head, (p->len - p->head) * sizeof(*p->offs));
            memmove(p->done, p->done + p->head, p->len - p->head);
            p->len -= p->head;
            p->head = 0;
        }
        if (p->len == p->cap) {
            size_t ncap = p->cap ? p->cap * 2 : 64;
            int64_t *no = realloc(p->offs, ncap * sizeof(*no));
            if (!no)
                return 0;
            p->offs = no;
            unsigned char *nd = realloc(p->done, ncap);
            if (!nd)
                return 0;
            p->done = nd;
            p->cap = ncap;
        }
    }
    p->offs[p->len] = offset;
    p->done[p->len] = 0;
    p->len++;
    p->next_offset = offset + 1;
    return 1;
}

static void
kf_dq_part_done(kf_dq_part_t *p, int64_t offset)
{
    /* Offsets are appended in increasing order: binary search. */
    size_t lo = p->head, hi = p->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->offs[mid] < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < p->len && p->offs[lo] == offset)
        p->done[lo] = 1;
    while (p->head < p->len && p->done[p->head])
        p->head++;
    if (p->head == p->len)
        p->head = p->len = 0;
}

static int64_t
kf_dq_part_position(const kf_dq_part_t *p)
{
    return p->head < p->len ? p->offs[p->head] : p->next_offset;
}

/* Commits the position of every tracked partition (or only those in `only`) that moved. */
static void
kf_dq_commit(kf_dispatch_t *d, const rd_kafka_topic_partition_list_t *only, int sync)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (kf_dq_part_t *p = d->parts; p; p = p->next) {
        if (only && !rd_kafka_topic_partition_list_find(only, p->topic, p->partition))
            continue;
        int64_t pos = kf_dq_part_position(p);
        if (pos < 0 || pos <= p->committed)
            continue;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = pos;
    }
    if (l->cnt > 0) {
        rd_kafka_resp_err_t rerr = rd_kafka_commit(d->rk, l, sync ? 0 : 1);
        if (rerr && rerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            kf_log(KF_LOG_WARN, "dispatch", "commit failed: %s", rd_kafka_err2str(rerr));
        else
            for (int i = 0; i < l->cnt; i++) {
                kf_dq_part_t *p = kf_dq_part_find(d, l->elems[i].topic, l->elems[i].partition);
                if (p)
                    p->committed = l->elems[i].offset;
            }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static void
kf_dq_job_free(kf_dispatch_t *d, kf_dq_job_t *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        d->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    d->njobs--;
    if (job->easy) {
        curl_multi_remove_handle(d->multi, job->easy);
        curl_easy_cleanup(job->easy);
        d->ninflight--;
    }
    curl_slist_free_all(job->hdrs);
    /* Its record is finished: the committed position may move past it. */
    if (job->part)
        kf_dq_part_done(job->part, job->offset);
    free(job->raw);
    free(job->key);
    free(job->request_id);
    free(job->tenant_id);
    free(job->url);
    free(job->trace_id);
    free(job->payload);
    free(job);
}

static kf_dq_job_t *
kf_dq_job_new(kf_dispatch_t *d, kf_dq_part_t *part, const rd_kafka_message_t *rkm)
{
    kf_dq_job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->d = d;
    job->part = part;
    job->offset = rkm->offset;
    job->from_retry = part->is_retry;
    job->state = KF_DQ_NEW;
    job->due_ms = 0;
    job->retry_after[0] = '\0';
    if (rkm->len) {
        job->raw = malloc(rkm->len);
        if (!job->raw) {
            free(job);
            return NULL;
        }
        memcpy(job->raw, rkm->payload, rkm->len);
        job->raw_len = rkm->len;
    }
    if (rkm->key_len) {
        job->key = malloc(rkm->key_len);
        if (job->key) {
            memcpy(job->key, rkm->key, rkm->key_len);
            job->key_len = rkm->key_len;
        }
    }
    job->next = d->jobs;
    if (d->jobs)
        d->jobs->prev = job;
    d->jobs = job;
    d->njobs++;
    return job;
}

/* ---- rebalance ---------------------------------------------------------------------------- */

static void
kf_dq_part_drop(kf_dispatch_t *d, kf_dq_part_t *part)
{
    for (kf_dq_job_t *job = d->jobs, *nx; job; job = nx) {
        nx = job->next;
        if (job->part != part)
            continue;
        /* Jobs that have not started are dropped: the next owner reads them again. Running
         * ones finish here, but their offsets are no longer ours to commit. */
        if (job->state == KF_DQ_NEW || job->state == KF_DQ_WAIT) {
            job->part = NULL;
            kf_dq_job_free(d, job);
        } else {
            job->part = NULL;
        }
    }
    kf_dq_part_t **pp = &d->parts;
    while (*pp && *pp != part)
        pp = &(*pp)->next;
    if (*pp)
        *pp = part->next;
    free(part->offs);
    free(part->done);
    free(part->topic);
    free(part);
}

static void
kf_dq_rebalance(rd_kafka_t *rk,
                rd_kafka_resp_err_t err,
                rd_kafka_topic_partition_list_t *parts,
                void *opaque)
{
    kf_dispatch_t *d = opaque;
    /* NULL while the consumer is closing (a rebalance served by rd_kafka_consumer_close) */
    int coop = kf_kafka_rebalance_cooperative(rk);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            kf_dq_part_t *p = kf_dq_part_get(d, parts->elems[i].topic, parts->elems[i].partition);
            if (p) {
                p->paused = 0;
                p->committed = -1;
            }
        }
        kf_logkv(KF_LOG_INFO, "dispatch", NULL, "assigned %d partitions", parts->cnt);
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e)
                rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(rk, parts);
        }
        return;
    }
    /* Revoked: commit what is finished while the partitions are still ours. */
    kf_dq_commit(d, parts, 1);
    for (int i = 0; i < parts->cnt; i++) {
        kf_dq_part_t *p = kf_dq_part_find(d, parts->elems[i].topic, parts->elems[i].partition);
        if (p)
            kf_dq_part_drop(d, p);
    }
    kf_log(KF_LOG_INFO, "dispatch", "revoked %d partitions", parts->cnt);
    if (coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

/* ---- PostgreSQL --------------------------------------------------------------------------- */

/* Stores a result. A final status already there is kept (never regressed); callback_status
 * becomes pending when there is a URL and no delivery state yet. Zero rows come back when the
 * request id belongs to another tenant. */
static const char kf_dq_sql_upsert[] =
    "INSERT INTO requests (request_id, tenant_id, status, result, callback_url, callback_status,"
    " trace_id, model, error, request, completed_at, updated_at)"
    " VALUES ($1, $2, $3, $4::jsonb, $5, CASE WHEN $5::text IS NULL THEN 'none' ELSE 'pending' END,"
    " $6, $7, $8, '{}'::jsonb, to_timestamp($9::double precision / 1000), now())"
    " ON CONFLICT (request_id) DO UPDATE SET"
    " status = CASE WHEN requests.status IN ('completed','failed','expired','cancelled')"
    "   THEN requests.status ELSE EXCLUDED.status END,"
    " result = CASE WHEN requests.status IN ('completed','failed','expired','cancelled')"
    "   AND requests.result IS NOT NULL THEN requests.result ELSE EXCLUDED.result END,"
    " error = COALESCE(requests.error, EXCLUDED.error),"
    " model = COALESCE(requests.model, EXCLUDED.model),"
    " trace_id = COALESCE(requests.trace_id, EXCLUDED.trace_id),"
    " completed_at = COALESCE(requests.completed_at, EXCLUDED.completed_at),"
    " callback_url = COALESCE(requests.callback_url, EXCLUDED.callback_url),"
    " callback_status = CASE WHEN requests.callback_status = 'none'"
    "   AND COALESCE(requests.callback_url, EXCLUDED.callback_url) IS NOT NULL"
    "   THEN 'pending' ELSE requests.callback_status END,"
    " updated_at = now()"
    " WHERE requests.tenant_id = EXCLUDED.tenant_id"
    " RETURNING status, callback_status, callback_attempts, callback_url";

/* What an attempt needs to know first: the tenant's secret, whether the endpoint was
 * disabled, and how far the delivery already got. */
static const char kf_dq_sql_precheck[] =
    "SELECT t.webhook_secret,"
    " EXISTS (SELECT 1 FROM disabled_endpoints d WHERE d.tenant_id = t.tenant_id AND d.url = $2),"
    " r.callback_status, r.callback_attempts"
    " FROM tenants t LEFT JOIN requests r ON r.request_id = $3 AND r.tenant_id = t.tenant_id"
    " WHERE t.tenant_id = $1";

/* Records an attempt: the count only grows, a final callback status is kept. */
static const char kf_dq_sql_mark[] =
    "UPDATE requests SET callback_attempts = GREATEST(callback_attempts, $2::int),"
    " callback_status = CASE WHEN callback_status IN ('delivered','delivery_failed')"
    "   THEN callback_status ELSE $3 END,"
    " delivered_at = CASE WHEN $3 = 'delivered' THEN COALESCE(delivered_at, now())"
    "   ELSE delivered_at END,"
    " updated_at = now()"
    " WHERE request_id = $1";

static const char kf_dq_sql_disable[] = "INSERT INTO disabled_endpoints (tenant_id, url)"
                                        " VALUES ($1, $2) ON CONFLICT DO NOTHING";

static kf_err_t
kf_dq_pg_prepare(kf_pg_t *pg, char *errstr, size_t errstr_size)
{
    struct {
        const char *name, *sql;
        int n;
    } st[] = {
        {"kf_dq_upsert", kf_dq_sql_upsert, 9},
        {"kf_dq_precheck", kf_dq_sql_precheck, 3},
        {"kf_dq_mark", kf_dq_sql_mark, 3},
        {"kf_dq_disable", kf_dq_sql_disable, 2},
    };
    for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
        kf_err_t err = kf_pg_register(pg, st[i].name, st[i].sql, st[i].n, KF_PG_IDEMPOTENT, errstr,
                                      errstr_size);
        if (err != KF_OK)
            return err;
    }
    return KF_OK;
}

/* ---- audit -------------------------------------------------------------------------------- */

static void
kf_dq_audit(kf_dispatch_t *d,
            const kf_dq_job_t *job,
            const char *action,
            kf_audit_outcome_t outcome,
            const char *message)
{
    if (!d->audit)
        return;
    char attempt[16], status[16], host[128], wid[160];
    snprintf(attempt, sizeof(attempt), "%d", job->attempt);
    snprintf(status, sizeof(status), "%ld", job->http_status);
    kf_dq_url_host(job->url, host, sizeof(host));
    snprintf(wid, sizeof(wid), "msg_%s", job->request_id ? job->request_id : "");
    kf_kafka_kv_t attrs[5] = {
        {"attempt", attempt}, {"http_status", status}, {"url_host", host},
        {"webhook_id", wid},  {"error", job->error},
    };
    kf_audit_event_t ev = {
        .action = action,
        .outcome = outcome,
        .stage = "dispatch",
        .request_id = job->request_id,
        .tenant_id = job->tenant_id,
        .trace_id = job->trace_id && *job->trace_id ? job->trace_id : NULL,
        .duration_ms = job->started_ms ? job->duration_ms : -1,
        .tokens = -1,
        .message = message,
        .attrs = attrs,
        .attr_count = job->error[0] ? 5 : 4,
    };
    kf_err_t err = kf_audit_emit(d->audit, &ev);
    if (err != KF_OK)
        kf_log(KF_LOG_WARN, "dispatch", "audit %s not queued: %s", action, kf_err_str(err));
}

/* ---- NEW: decode and store ---------------------------------------------------------------- */

/* Builds the webhook body from the decoded InferenceResult. */
static char *
kf_dq_payload(json_t *res, const char *status, size_t *out_len)
{
    char ts[32];
    json_t *pa = json_object_get(res, "produced_at");
    kf_dq_iso8601(json_is_integer(pa) ? json_integer_value(pa) : kf_now_ms(), ts);
    char type[64];
    snprintf(type, sizeof(type), "inference.%s", status);

    json_t *result = json_object();
    json_object_set(result, "text", json_object_get(res, "text"));
    json_object_set(result, "finish_reason", json_object_get(res, "finish_reason"));
    json_object_set(result, "model", json_object_get(res, "model"));
    json_t *tok = json_object_get(res, "token_ids");
    if (json_is_array(tok))
        json_object_set(result, "token_ids", tok);
    json_int_t pt = json_integer_value(json_object_get(res, "prompt_tokens"));
    json_int_t ct = json_integer_value(json_object_get(res, "completion_tokens"));
    json_object_set_new(result, "usage",
                        json_pack("{sI sI sI}", "prompt_tokens", pt, "completion_tokens", ct,
                                  "total_tokens", pt + ct));

    json_t *data = json_object();
    json_object_set(data, "request_id", json_object_get(res, "request_id"));
    json_object_set_new(data, "status", json_string(status));
    json_object_set_new(data, "result", result);
    json_object_set(data, "error", json_object_get(res, "error"));
    json_object_set(data, "metadata", json_object_get(res, "metadata"));
    json_object_set(data, "batch_id", json_object_get(res, "batch_id"));
    json_object_set(data, "custom_id", json_object_get(res, "custom_id"));

    json_t *body = json_pack("{ss ss so}", "type", type, "timestamp", ts, "data", data);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text)
        *out_len = strlen(text);
    return text;
}

static const char *
kf_dq_jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Decodes a result, stores it, and prepares its first delivery. Returns KF_OK with the job in
 * WAIT (deliver) or with *out_finished set (nothing to deliver); a retriable error to try
 * again later; any other error to dead-letter the record. */
static kf_err_t
kf_dq_ingest_result(
    kf_dispatch_t *d, kf_dq_job_t *job, int *out_finished, char *errstr, size_t errstr_size)
{
    json_t *res = NULL;
    kf_pg_result_t *pr = NULL;
    char *result_text = NULL;
    kf_err_t err = kf_avro_decode_json(NULL, job->raw, job->raw_len,
                                       kf_avro_schema_get(KF_AVRO_INFERENCE_RESULT), &res, NULL,
                                       errstr, errstr_size);
    if (err != KF_OK)
        goto out;
    const char *rid = kf_dq_jstr(res, "request_id");
    const char *tid = kf_dq_jstr(res, "tenant_id");
    const char *status = kf_dq_jstr(res, "status");
    if (!rid || !*rid || !tid || !*tid || !status) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "InferenceResult without request_id or tenant_id");
        goto out;
    }
    result_text = json_dumps(res, JSON_COMPACT);
    char produced[24];
    json_t *pa = json_object_get(res, "produced_at");
    snprintf(produced, sizeof(produced), "%lld",
             (long long)(json_is_integer(pa) ? json_integer_value(pa) : kf_now_ms()));
    const char *model = kf_dq_jstr(res, "model");
    const char *params[9] = {
        rid,
        tid,
        status,
        result_text,
        kf_dq_jstr(res, "callback_url"),
        kf_dq_jstr(res, "trace_id"),
        model && *model ? model : NULL,
        kf_dq_jstr(res, "error"),
        produced,
    };
    err = kf_pg_exec_prepared(d->pg, "kf_dq_upsert", params, 9, &pr, errstr, errstr_size);
    if (err != KF_OK)
        goto out;
    if (kf_pg_result_ntuples(pr) != 1) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "request %s belongs to another tenant than %s", rid, tid);
        goto out;
    }
    KF_DQ_INC(d, results);
    kf_metrics_add(d->m_results, 1);
    const char *cb_status = kf_pg_result_value(pr, 0, 1);
    const char *attempts = kf_pg_result_value(pr, 0, 2);
    const char *url = kf_pg_result_value(pr, 0, 3);
    if (!url) {
        *out_finished = 1; /* poll-only request */
        goto out;
    }
    /* A delivery that already started belongs to the retry topic from here on (a re-read
     * result must not start a second chain of attempts). */
    if (strcmp(cb_status, "pending") != 0 || atoi(attempts) > 0) {
        KF_DQ_INC(d, skipped);
        *out_finished = 1;
        goto out;
    }
    job->request_id = strdup(rid);
    job->tenant_id = strdup(tid);
    job->url = strdup(url);
    job->trace_id = kf_dq_strdup(kf_dq_jstr(res, "trace_id"));
    job->payload = kf_dq_payload(res, status, &job->payload_len);
    if (!job->request_id || !job->tenant_id || !job->url || !job->payload) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto out;
    }
    job->attempt = 1;
    job->created_at = kf_now_ms();
    job->state = KF_DQ_WAIT;
    job->due_ms = 0;
out:
    kf_pg_result_destroy(pr);
    free(result_text);
    json_decref(res);
    return err;
}

/* Decodes a CallbackAttempt into a WAIT job. Errors are final (dead letter). */
static kf_err_t
kf_dq_ingest_attempt(kf_dispatch_t *d, kf_dq_job_t *job, char *errstr, size_t errstr_size)
{
    (void)d;
    json_t *js = NULL;
    kf_err_t err = kf_avro_decode_json(NULL, job->raw, job->raw_len,
                                       kf_avro_schema_get(KF_AVRO_CALLBACK_ATTEMPT), &js, NULL,
                                       errstr, errstr_size);
    if (err != KF_OK)
        return err;
    const char *rid = kf_dq_jstr(js, "request_id");
    const char *tid = kf_dq_jstr(js, "tenant_id");
    const char *url = kf_dq_jstr(js, "url");
    const char *payload = kf_dq_jstr(js, "payload");
    json_int_t attempt = json_integer_value(json_object_get(js, "attempt"));
    if (!rid || !*rid || !tid || !*tid || !url || !payload || attempt < 1 || attempt > 1000) {
        json_decref(js);
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "CallbackAttempt without request_id, tenant_id, url, payload or a "
                          "valid attempt number");
    }
    job->request_id = strdup(rid);
    job->tenant_id = strdup(tid);
    job->url = strdup(url);
    job->payload = strdup(payload);
    job->payload_len = strlen(payload);
    job->trace_id = kf_dq_strdup(kf_dq_jstr(js, "trace_id"));
    job->attempt = (int)attempt;
    json_t *na = json_object_get(js, "next_attempt_at");
    job->due_ms = json_is_integer(na) ? json_integer_value(na) : 0;
    json_t *ca = json_object_get(js, "created_at");
    job->created_at = json_is_integer(ca) ? json_integer_value(ca) : kf_now_ms();
    json_decref(js);
    if (!job->request_id || !job->tenant_id || !job->url || !job->payload)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    job->state = KF_DQ_WAIT;
    return KF_OK;
}

static void
kf_dq_dead_letter_raw(kf_dispatch_t *d, kf_dq_job_t *job, kf_err_t why_err, const char *why)
{
    const char *dlq = job->from_retry ? d->retry_dlq : d->results_dlq;
    const char *src = job->from_retry ? d->retry_topic : d->results_topic;
    char part[16], off[24], perr[256];
    snprintf(part, sizeof(part), "%d", job->part ? (int)job->part->partition : -1);
    snprintf(off, sizeof(off), "%lld", (long long)job->offset);
    const char *code = kf_err_str(why_err);
    kf_kafka_header_t hdrs[] = {
        {"kf.error", why, strlen(why)},           {"kf.error.code", code, strlen(code)},
        {"kf.original.topic", src, strlen(src)},  {"kf.original.partition", part, strlen(part)},
        {"kf.original.offset", off, strlen(off)}, {"kf.stage", "dispatch", 8},
    };
    kf_kafka_msg_t msg = {
        .topic = dlq,
        .partition = KF_KAFKA_PARTITION_ANY,
        .key = job->key,
        .key_len = job->key_len,
        .value = job->raw,
        .value_len = job->raw_len,
        .headers = hdrs,
        .header_count = sizeof(hdrs) / sizeof(hdrs[0]),
    };
    kf_err_t err = kf_producer_send(d->producer, &msg, NULL, perr, sizeof(perr));
    if (err != KF_OK)
        kf_log(KF_LOG_ERROR, "dispatch", "dead letter to %s failed: %s", dlq, perr);
    else
        KF_DQ_INC(d, dead_lettered);
    kf_logkv(KF_LOG_WARN, "dispatch", NULL, "record %s[%s]@%s dead-lettered: %s", src, part, off,
             why);
}

static void
kf_dq_step_new(kf_dispatch_t *d, kf_dq_job_t *job)
{
    char errstr[512] = "";
    int finished = 0;
    kf_err_t err = job->from_retry ? kf_dq_ingest_attempt(d, job, errstr, sizeof(errstr))
                                   : kf_dq_ingest_result(d, job, &finished, errstr, sizeof(errstr));
    if (err != KF_OK && kf_err_is_retriable(err)) {
        kf_log(KF_LOG_WARN, "dispatch", "will retry record at offset %lld: %s",
               (long long)job->offset, errstr);
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
        return;
    }
    if (err != KF_OK) {
        kf_dq_dead_letter_raw(d, job, err, errstr);
        kf_dq_job_free(d, job);
        return;
    }
    if (finished) {
        kf_dq_job_free(d, job);
        return;
    }
    free(job->raw);
    job->raw = NULL;
    job->raw_len = 0;
}

/* ---- WAIT -> HTTP ------------------------------------------------------------------------- */

static curl_socket_t
kf_dq_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    kf_dq_job_t *job = clientp;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    /* The address curl resolved and will connect to: the only one worth checking. */
    char why[160];
    if (kf_webhook_addr_check(job->d->allow, &addr->addr, addr->addrlen, why, sizeof(why)) !=
        KF_OK) {
        job->blocked = 1;
        kf_dq_copy(job->error, sizeof(job->error), why);
        kf_logkv(KF_LOG_WARN, "dispatch", NULL, "request %s: %s", job->request_id, why);
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t
kf_dq_on_header(char *buf, size_t size, size_t n, void *userdata)
{
    kf_dq_job_t *job = userdata;
    size_t len = size * n;
    /* A new status line (after 100 Continue, say) starts a new header block. */
    if (len >= 5 && !strncmp(buf, "HTTP/", 5))
        job->retry_after[0] = '\0';
    else if (len > 12 && !strncasecmp(buf, "Retry-After:", 12)) {
        size_t vlen = len - 12;
        if (vlen >= sizeof(job->retry_after))
            vlen = sizeof(job->retry_after) - 1;
        memcpy(job->retry_after, buf + 12, vlen);
        job->retry_after[vlen] = '\0';
    }
    return len;
}

static size_t
kf_dq_on_body(char *buf, size_t size, size_t n, void *userdata)
{
    (void)buf;
    (void)userdata;
    return size * n; /* the receiver's body is not needed */
}

static void kf_dq_finalize(kf_dispatch_t *d, kf_dq_job_t *job);

/* Ends an attempt that never reached the network (blocked, bad secret, disabled endpoint). */
static void
kf_dq_fail_now(kf_dispatch_t *d, kf_dq_job_t *job, int blocked, const char *why)
{
    kf_dq_copy(job->error, sizeof(job->error), why);
    job->blocked = blocked;
    if (blocked)
        KF_DQ_INC(d, blocked);
    job->http_status = 0;
    job->decision = (kf_webhook_decision_t){.outcome = KF_WEBHOOK_FAILED};
    job->state = KF_DQ_FINAL;
    job->due_ms = 0;
    kf_metrics_add(d->m_attempt[KF_WEBHOOK_FAILED], 1);
    kf_dq_finalize(d, job);
}

static void
kf_dq_start(kf_dispatch_t *d, kf_dq_job_t *job)
{
    char errstr[512];
    kf_pg_result_t *pr = NULL;
    const char *params[3] = {job->tenant_id, job->url, job->request_id};
    kf_err_t err =
        kf_pg_exec_prepared(d->pg, "kf_dq_precheck", params, 3, &pr, errstr, sizeof(errstr));
    if (err != KF_OK && kf_err_is_retriable(err)) {
        kf_log(KF_LOG_WARN, "dispatch", "precheck of %s: %s", job->request_id, errstr);
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
        return;
    }
    if (err != KF_OK) {
        kf_dq_fail_now(d, job, 0, errstr);
        return;
    }
    if (kf_pg_result_ntuples(pr) != 1) {
        kf_pg_result_destroy(pr);
        kf_dq_fail_now(d, job, 0, "unknown tenant: no webhook secret");
        return;
    }
    const char *secret = kf_pg_result_value(pr, 0, 0);
    int disabled = !strcmp(kf_pg_result_value(pr, 0, 1), "t");
    const char *cb_status = kf_pg_result_value(pr, 0, 2);
    const char *attempts = kf_pg_result_value(pr, 0, 3);
    /* Already delivered or failed, or this attempt already ran (a re-read record). */
    if ((cb_status && (!strcmp(cb_status, "delivered") || !strcmp(cb_status, "delivery_failed"))) ||
        (attempts && atoi(attempts) >= job->attempt)) {
        kf_pg_result_destroy(pr);
        KF_DQ_INC(d, skipped);
        kf_dq_job_free(d, job);
        return;
    }
    unsigned char key[KF_WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    err = kf_webhook_secret_decode(secret, key, &key_len, errstr, sizeof(errstr));
    kf_pg_result_destroy(pr);
    if (err != KF_OK) {
        kf_dq_fail_now(d, job, 0, errstr);
        return;
    }
    if (disabled) {
        kf_dq_fail_now(d, job, 1, "endpoint disabled (it answered 410 Gone before)");
        return;
    }
    if (kf_webhook_url_check(job->url, errstr, sizeof(errstr)) != KF_OK) {
        kf_dq_fail_now(d, job, 1, errstr);
        return;
    }
    /* Sign for this attempt: the id stays, the timestamp is now. */
    char wid[160], sig[KF_WEBHOOK_SIG_SIZE];
    snprintf(wid, sizeof(wid), "msg_%s", job->request_id);
    int64_t now_s = kf_now_ms() / 1000;
    err = kf_webhook_sign(key, key_len, wid, now_s, job->payload, job->payload_len, sig);
    memset(key, 0, sizeof(key));
    if (err != KF_OK) {
        kf_dq_fail_now(d, job, 0, "signing failed");
        return;
    }
    char h_id[200], h_ts[64], h_sig[80];
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", wid);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", (long long)now_s);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    struct curl_slist *h = NULL, *t;
    const char *lines[] = {"Content-Type: application/json", h_id, h_ts, h_sig,
                           "Expect:" /* no 100-continue round trip */};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        t = curl_slist_append(h, lines[i]);
        if (!t) {
            curl_slist_free_all(h);
            job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
            return;
        }
        h = t;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        curl_slist_free_all(h);
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
        return;
    }
    job->hdrs = h;
    job->easy = e;
    job->blocked = 0;
    job->error[0] = '\0';
    job->curl_err[0] = '\0';
    job->retry_after[0] = '\0';
    job->http_status = 0;
    curl_easy_setopt(e, CURLOPT_URL, job->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, job->payload);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->payload_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "kinfer-dispatch");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)d->connect_timeout_ms);
    /* The guard: no redirects (a 3xx is a final answer), http(s) only, no proxy from the
     * environment (it would make curl connect to the proxy instead of the checked address),
     * and every socket opened through the address check. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, kf_dq_opensocket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, job);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, kf_dq_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, kf_dq_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, job);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->curl_err);
    curl_easy_setopt(e, CURLOPT_PRIVATE, job);
    if (curl_multi_add_handle(d->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        job->easy = NULL;
        job->hdrs = NULL;
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
        return;
    }
    job->state = KF_DQ_HTTP;
    job->started_ms = kf_dq_mono_ms();
    d->ninflight++;
    KF_DQ_INC(d, attempts);
    kf_logkv(KF_LOG_DEBUG, "dispatch", NULL, "POST attempt %d of %s", job->attempt,
             job->request_id);
}

/* ---- HTTP -> FINAL ------------------------------------------------------------------------ */

static void
kf_dq_http_done(kf_dispatch_t *d, kf_dq_job_t *job, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(d->multi, job->easy);
    curl_easy_cleanup(job->easy);
    job->easy = NULL;
    curl_slist_free_all(job->hdrs);
    job->hdrs = NULL;
    d->ninflight--;
    job->duration_ms = (double)(kf_dq_mono_ms() - job->started_ms);
    kf_metrics_observe(d->m_latency, job->duration_ms / 1000.0);

    kf_webhook_attempt_t at = {
        .attempt = job->attempt,
        .http_status = rc == CURLE_OK ? status : 0,
        .transport_error = rc != CURLE_OK,
        .blocked = rc != CURLE_OK && job->blocked,
        .retry_after_ms = -1,
    };
    job->http_status = at.http_status;
    if (at.blocked) {
        KF_DQ_INC(d, blocked);
    } else if (rc != CURLE_OK) {
        kf_dq_copy(job->error, sizeof(job->error),
                   job->curl_err[0] ? job->curl_err : curl_easy_strerror(rc));
    } else if (status < 200 || status > 299) {
        snprintf(job->error, sizeof(job->error), "HTTP %ld", status);
    } else {
        job->error[0] = '\0';
    }
    int64_t ra;
    if (job->retry_after[0] &&
        kf_webhook_retry_after_parse(job->retry_after, kf_now_ms(), &ra) == KF_OK)
        at.retry_after_ms = ra;
    job->decision =
        kf_webhook_decide(&d->sched, &at, d->jitter, kf_dq_rand(d), d->retry_after_max_ms);
    kf_metrics_add(d->m_attempt[job->decision.outcome], 1);
    if (job->decision.outcome == KF_WEBHOOK_GONE)
        KF_DQ_INC(d, gone);
    kf_logkv(KF_LOG_INFO, "dispatch", NULL, "request %s attempt %d: %s (%s)", job->request_id,
             job->attempt, kf_webhook_outcome_str(job->decision.outcome),
             job->error[0] ? job->error : "2xx");
    job->state = KF_DQ_FINAL;
    job->due_ms = 0;
    kf_dq_finalize(d, job);
}

/* ---- FINAL -------------------------------------------------------------------------------- */

static void
kf_dq_on_produced(const kf_kafka_delivery_t *dr, void *opaque)
{
    kf_dq_job_t *job = opaque;
    job->state = KF_DQ_FINAL;
    if (dr->err == KF_OK) {
        job->steps |= KF_DQ_STEP_PRODUCED;
        job->due_ms = 0;
    } else {
        kf_log(KF_LOG_WARN, "dispatch", "produce to %s failed: %s", dr->topic, dr->errmsg);
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
    }
}

/* Sends the CallbackAttempt for the next attempt (to the retry topic) or the last one (to
 * the dead-letter topic); the job waits in PRODUCING for the acknowledgement. */
static void
kf_dq_produce_attempt(kf_dispatch_t *d, kf_dq_job_t *job, int final)
{
    int64_t now = kf_now_ms();
    json_t *js =
        json_pack("{ss ss sn ss si so so so ss ss sI}", "request_id", job->request_id, "tenant_id",
                  job->tenant_id, "webhook_id", "url", job->url, "attempt",
                  final ? job->attempt : job->attempt + 1, "next_attempt_at",
                  final ? json_null() : json_integer(now + job->decision.delay_ms), "last_status",
                  job->http_status ? json_integer(job->http_status) : json_null(), "last_error",
                  job->error[0] ? json_string(job->error) : json_null(), "trace_id",
                  job->trace_id ? job->trace_id : "", "payload", job->payload, "created_at",
                  (json_int_t)job->created_at);
    unsigned char *buf = NULL;
    size_t len = 0;
    char errstr[256];
    kf_err_t err = js ? kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_CALLBACK_ATTEMPT), js, &buf,
                                            &len, errstr, sizeof(errstr))
                      : KF_ERR_NOMEM;
    json_decref(js);
    if (err == KF_OK) {
        const char *why = final ? job->error : "";
        kf_kafka_header_t hdr = {"kf.error", why, strlen(why)};
        kf_kafka_msg_t msg = {
            .topic = final ? d->dlq_topic : d->retry_topic,
            .partition = KF_KAFKA_PARTITION_ANY,
            .key = job->request_id,
            .key_len = strlen(job->request_id),
            .value = buf,
            .value_len = len,
            .headers = final ? &hdr : NULL,
            .header_count = final ? 1 : 0,
        };
        err = kf_producer_send_async(d->producer, &msg, kf_dq_on_produced, job, errstr,
                                     sizeof(errstr));
    }
    free(buf);
    if (err != KF_OK) {
        kf_log(KF_LOG_WARN, "dispatch", "cannot queue callback record for %s: %s", job->request_id,
               errstr);
        job->due_ms = now + KF_DQ_RETRY_STEP_MS;
        return;
    }
    job->state = KF_DQ_PRODUCING;
}

/* Runs one PostgreSQL step; 1 when done, 0 when it must be tried again later. Fatal errors
 * are logged and treated as done so one bad row never blocks the partition. */
static int
kf_dq_pg_step(
    kf_dispatch_t *d, kf_dq_job_t *job, const char *stmt, const char *const *params, int n)
{
    char errstr[512];
    kf_err_t err = kf_pg_exec_prepared(d->pg, stmt, params, n, NULL, errstr, sizeof(errstr));
    if (err == KF_OK)
        return 1;
    if (kf_err_is_retriable(err)) {
        kf_log(KF_LOG_WARN, "dispatch", "%s for %s: %s (will retry)", stmt, job->request_id,
               errstr);
        job->due_ms = kf_now_ms() + KF_DQ_RETRY_STEP_MS;
        return 0;
    }
    kf_log(KF_LOG_ERROR, "dispatch", "%s for %s: %s", stmt, job->request_id, errstr);
    return 1;
}

static void
kf_dq_finalize(kf_dispatch_t *d, kf_dq_job_t *job)
{
    char attempts[16];
    snprintf(attempts, sizeof(attempts), "%d", job->attempt);
    kf_webhook_outcome_t oc = job->decision.outcome;
    if (oc == KF_WEBHOOK_DELIVERED) {
        const char *p[3] = {job->request_id, attempts, "delivered"};
        if (!(job->steps & KF_DQ_STEP_MARKED) && !kf_dq_pg_step(d, job, "kf_dq_mark", p, 3))
            return;
        kf_dq_audit(d, job, "callback.attempted", KF_AUDIT_SUCCESS, "webhook answered 2xx");
        kf_dq_audit(d, job, "callback.delivered", KF_AUDIT_SUCCESS, "callback delivered");
        KF_DQ_INC(d, delivered);
        kf_metrics_add(d->m_delivered, 1);
        kf_dq_job_free(d, job);
        return;
    }
    if (oc == KF_WEBHOOK_RETRY) {
        /* The next attempt must be durable before this one is recorded as done. */
        if (!(job->steps & KF_DQ_STEP_PRODUCED)) {
            kf_dq_produce_attempt(d, job, 0);
            return;
        }
        const char *p[3] = {job->request_id, attempts, "pending"};
        if (!(job->steps & KF_DQ_STEP_MARKED)) {
            if (!kf_dq_pg_step(d, job, "kf_dq_mark", p, 3))
                return;
            job->steps |= KF_DQ_STEP_MARKED;
        }
        char msg[96];
        snprintf(msg, sizeof(msg), "attempt failed; next in %lld ms",
                 (long long)job->decision.delay_ms);
        kf_dq_audit(d, job, "callback.attempted", KF_AUDIT_RETRY, msg);
        KF_DQ_INC(d, retries);
        kf_dq_job_free(d, job);
        return;
    }
    /* FAILED or GONE: final. */
    if (oc == KF_WEBHOOK_GONE && !(job->steps & KF_DQ_STEP_DISABLED)) {
        const char *p[2] = {job->tenant_id, job->url};
        if (!kf_dq_pg_step(d, job, "kf_dq_disable", p, 2))
            return;
        job->steps |= KF_DQ_STEP_DISABLED;
    }
    if (!(job->steps & KF_DQ_STEP_MARKED)) {
        const char *p[3] = {job->request_id, attempts, "delivery_failed"};
        if (!kf_dq_pg_step(d, job, "kf_dq_mark", p, 3))
            return;
        job->steps |= KF_DQ_STEP_MARKED;
    }
    if (!(job->steps & KF_DQ_STEP_PRODUCED)) {
        kf_dq_produce_attempt(d, job, 1);
        return;
    }
    KF_DQ_INC(d, dead_lettered);
    const char *msg = oc == KF_WEBHOOK_GONE     ? "endpoint answered 410 Gone and is disabled"
                      : job->decision.exhausted ? "no attempts left"
                      : job->blocked            ? "refused by the SSRF guard"
                                                : "final failure";
    kf_dq_audit(d, job, "callback.attempted", job->blocked ? KF_AUDIT_REJECTED : KF_AUDIT_FAILURE,
                msg);
    kf_dq_audit(d, job, "callback.failed", KF_AUDIT_FAILURE, msg);
    KF_DQ_INC(d, failed);
    kf_metrics_add(d->m_failed, 1);
    kf_dq_job_free(d, job);
}

/* ---- the loop ----------------------------------------------------------------------------- */

static void
kf_dq_handle_msg(kf_dispatch_t *d, rd_kafka_message_t *rkm)
{
    if (rkm->err) {
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            return;
        if (rd_kafka_fatal_error(d->rk, NULL, 0)) {
            d->fatal = 1;
            kf_dq_copy(d->fatal_msg, sizeof(d->fatal_msg), rd_kafka_message_errstr(rkm));
        }
        kf_log(KF_LOG_WARN, "dispatch", "consumer: %s", rd_kafka_message_errstr(rkm));
        return;
    }
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    kf_dq_part_t *part = kf_dq_part_get(d, topic, rkm->partition);
    KF_DQ_INC(d, records);
    if (!part || !kf_dq_part_track(part, rkm->offset)) {
        kf_log(KF_LOG_ERROR, "dispatch", "out of memory tracking %s[%d]", topic,
               (int)rkm->partition);
        return;
    }
    kf_dq_job_t *job = kf_dq_job_new(d, part, rkm);
    if (!job) {
        kf_log(KF_LOG_ERROR, "dispatch", "out of memory for a job");
        return;
    }
    kf_dq_step_new(d, job);
}

/* Pauses or resumes partitions to keep memory bounded: everything when too many records are
 * held, the retry topic alone when too many retries wait for their time. */
static void
kf_dq_flow_control(kf_dispatch_t *d, int64_t now)
{
    size_t held = 0;
    for (kf_dq_job_t *j = d->jobs; j; j = j->next)
        if (j->from_retry && j->state == KF_DQ_WAIT && j->due_ms > now)
            held++;
    int all = d->njobs >= (size_t)d->max_pending;
    int retry = all || held >= (size_t)d->max_held;
    for (kf_dq_part_t *p = d->parts; p; p = p->next) {
        int want = p->is_retry ? retry : all;
        if (want == p->paused)
            continue;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        rd_kafka_resp_err_t rerr =
            want ? rd_kafka_pause_partitions(d->rk, l) : rd_kafka_resume_partitions(d->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (!rerr)
            p->paused = want;
    }
}

/* Runs every job whose time has come; returns ms until the next one is due (or -1). */
static int64_t
kf_dq_run_due(kf_dispatch_t *d)
{
    int64_t now = kf_now_ms();
    int64_t next = -1;
    for (kf_dq_job_t *j = d->jobs, *nx; j; j = nx) {
        nx = j->next;
        if (j->state == KF_DQ_HTTP || j->state == KF_DQ_PRODUCING)
            continue;
        if (j->due_ms > now) {
            int64_t w = j->due_ms - now;
            if (next < 0 || w < next)
                next = w;
            continue;
        }
        if (j->state == KF_DQ_NEW) {
            kf_dq_step_new(d, j);
        } else if (j->state == KF_DQ_WAIT) {
            if (d->ninflight >= (size_t)d->max_inflight) {
                next = 0;
                continue;
            }
            kf_dq_start(d, j);
        } else if (j->state == KF_DQ_FINAL) {
            kf_dq_finalize(d, j);
        }
        /* The job may have been freed or a neighbour changed: restart from the head is not
         * needed because only `j` itself can have been freed. */
    }
    return next;
}

static void
kf_dq_drive_http(kf_dispatch_t *d, int wait_ms)
{
    int running = 0;
    if (d->ninflight > 0 && wait_ms > 0)
        curl_multi_poll(d->multi, NULL, 0, wait_ms, NULL);
    curl_multi_perform(d->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        kf_dq_job_t *job = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        CURLcode rc = m->data.result;
        if (job)
            kf_dq_http_done(d, job, rc);
    }
    kf_metrics_set(d->m_inflight, (double)d->ninflight);
}

kf_err_t
kf_dispatch_poll(kf_dispatch_t *d, int timeout_ms, char *errstr, size_t errstr_size)
{
    if (timeout_ms < 0)
        timeout_ms = 0;
    int64_t now = kf_now_ms();
    kf_dq_flow_control(d, now);
    /* Read what is there; wait on Kafka only when nothing else needs the time. */
    int64_t next_due = kf_dq_run_due(d);
    int kwait = (d->ninflight > 0 || next_due == 0) ? 0 : timeout_ms;
    if (next_due > 0 && next_due < kwait)
        kwait = (int)next_due;
    for (int i = 0; i < 500; i++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(d->rk, i == 0 ? kwait : 0);
        if (!rkm)
            break;
        kf_dq_handle_msg(d, rkm);
        rd_kafka_message_destroy(rkm);
        if (d->njobs >= (size_t)d->max_pending)
            break;
    }
    if (d->fatal)
        return kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "fatal consumer error: %s",
                          d->fatal_msg);
    kf_producer_poll(d->producer, 0);
    kf_dq_run_due(d);
    int hwait = timeout_ms < 50 ? timeout_ms : 50;
    kf_dq_drive_http(d, d->ninflight > 0 ? hwait : 0);
    kf_producer_poll(d->producer, 0);
    kf_dq_run_due(d);
    if (kf_dq_mono_ms() - d->last_commit_ms >= d->commit_interval_ms) {
        kf_dq_commit(d, NULL, 0);
        d->last_commit_ms = kf_dq_mono_ms();
    }
    atomic_store_explicit(&d->st.pending, d->njobs, memory_order_relaxed);
    atomic_store_explicit(&d->st.inflight, d->ninflight, memory_order_relaxed);
    return KF_OK;
}

void
kf_dispatch_get_stats(const kf_dispatch_t *d, kf_dispatch_stats_t *o)
{
    kf_dispatch_t *m = (kf_dispatch_t *)d;
#define KF_DQ_LD(f) o->f = atomic_load_explicit(&m->st.f, memory_order_relaxed)
    KF_DQ_LD(records);
    KF_DQ_LD(results);
    KF_DQ_LD(attempts);
    KF_DQ_LD(delivered);
    KF_DQ_LD(retries);
    KF_DQ_LD(failed);
    KF_DQ_LD(blocked);
    KF_DQ_LD(gone);
    KF_DQ_LD(skipped);
    KF_DQ_LD(dead_lettered);
    KF_DQ_LD(pending);
    KF_DQ_LD(inflight);
#undef KF_DQ_LD
}

/* ---- construction ------------------------------------------------------------------------- */

kf_err_t
kf_dispatch_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_conf_add_table(conf, "dispatch", kf_dispatch_conf_props, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_register_topics(conf, errstr, errstr_size);
    return err;
}

static char *
kf_dq_concat(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", a, b);
    return s;
}

kf_err_t
kf_dispatch_new(const kf_conf_t *conf,
                kf_metrics_t *metrics,
                kf_dispatch_t **out_dispatch,
                char *errstr,
                size_t errstr_size)
{
    kf_dq_kv_t kv = {0};
    kf_err_t err;
    kf_dispatch_t *d = calloc(1, sizeof(*d));
    if (!d)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    d->results_topic = strdup(kf_dq_topic(conf, "topics.results", "kinfer.results"));
    d->retry_topic = strdup(kf_dq_topic(conf, "topics.callbacks.retry", "kinfer.callbacks.retry"));
    d->dlq_topic = strdup(kf_dq_topic(conf, "topics.callbacks.dlq", "kinfer.callbacks.dlq"));
    d->audit_topic = strdup(kf_dq_topic(conf, "topics.audit", KF_AUDIT_TOPIC_DEFAULT));
    d->results_dlq = d->results_topic ? kf_dq_concat(d->results_topic, ".dlq") : NULL;
    d->retry_dlq = d->retry_topic ? kf_dq_concat(d->retry_topic, ".dlq") : NULL;
    if (!d->results_topic || !d->retry_topic || !d->dlq_topic || !d->audit_topic ||
        !d->results_dlq || !d->retry_dlq) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    d->timeout_ms = kf_conf_get_duration_ms(conf, "dispatch.timeout");
    d->connect_timeout_ms = kf_conf_get_duration_ms(conf, "dispatch.connect.timeout");
    d->retry_after_max_ms = kf_conf_get_duration_ms(conf, "dispatch.retry.after.max");
    d->commit_interval_ms = kf_conf_get_duration_ms(conf, "dispatch.commit.interval");
    d->shutdown_ms = kf_conf_get_duration_ms(conf, "dispatch.shutdown.timeout");
    d->max_inflight = kf_conf_get_int(conf, "dispatch.max.inflight");
    d->max_pending = kf_conf_get_int(conf, "dispatch.max.pending");
    d->max_held = kf_conf_get_int(conf, "dispatch.retry.max.held");
    d->jitter = kf_conf_get_double(conf, "dispatch.retry.jitter");
    d->rng =
        (uint64_t)kf_now_ms() * 2654435761u ^ (uint64_t)getpid() << 20 ^ (uint64_t)(uintptr_t)d;
    if (!d->rng)
        d->rng = 88172645463325252ULL;
    err = kf_webhook_schedule_parse(kf_conf_get_str(conf, "dispatch.retry.schedule"), &d->sched,
                                    errstr, errstr_size);
    if (err == KF_OK)
        err = kf_webhook_cidrs_parse(kf_conf_get_str(conf, "dispatch.allow.cidrs"), &d->allow,
                                     errstr, errstr_size);
    if (err != KF_OK) {
        err = KF_ERR_CONFIG;
        goto fail;
    }

    d->metrics = metrics;
    if (!d->metrics) {
        d->metrics = kf_metrics_new();
        d->own_metrics = 1;
    }
    d->m_results =
        kf_metrics_labels(kf_metrics_counter(d->metrics, "kinfer_dispatch_results_total",
                                             "Inference results stored by the dispatcher.", NULL),
                          NULL);
    kf_metrics_family_t *fa = kf_metrics_counter(d->metrics, "kinfer_callback_attempts_total",
                                                 "Webhook attempts by outcome.", "outcome");
    for (int i = 0; i <= KF_WEBHOOK_GONE; i++)
        d->m_attempt[i] = kf_metrics_labels(
            fa, (const char *[]){kf_webhook_outcome_str((kf_webhook_outcome_t)i)});
    kf_metrics_family_t *fd = kf_metrics_counter(d->metrics, "kinfer_callback_deliveries_total",
                                                 "Webhook deliveries by final result.", "result");
    d->m_delivered = kf_metrics_labels(fd, (const char *[]){"delivered"});
    d->m_failed = kf_metrics_labels(fd, (const char *[]){"delivery_failed"});
    d->m_inflight = kf_metrics_labels(
        kf_metrics_gauge(d->metrics, "kinfer_callback_inflight", "Webhook POSTs running.", NULL),
        NULL);
    static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15};
    d->m_latency =
        kf_metrics_labels(kf_metrics_histogram(d->metrics, "kinfer_callback_duration_seconds",
                                               "Duration of webhook POSTs.", NULL, buckets,
                                               sizeof(buckets) / sizeof(buckets[0])),
                          NULL);

    kf_pg_opts_t po;
    kf_pg_opts_from_conf(conf, &po);
    if (!po.dsn || !*po.dsn)
        po.dsn = getenv("KINFER_PG_DSN");
    po.application_name = "kinfer-dispatch";
    err = kf_pg_new(&po, &d->pg, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_pg_prepare(d->pg, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;

    err = kf_dq_kv_build(conf, &kv, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    if (kf_conf_get_bool(conf, "dispatch.topics.create")) {
        const char *topics[] = {d->results_topic, d->retry_topic, d->dlq_topic,
                                d->audit_topic,   d->results_dlq, d->retry_dlq};
        err = kf_kafka_create_topics(kv.kv, kv.n, topics, sizeof(topics) / sizeof(topics[0]),
                                     (int)kf_conf_get_int(conf, "dispatch.topics.partitions"), -1,
                                     15000, errstr, errstr_size);
        if (err != KF_OK)
            goto fail;
    }
    err = kf_producer_new(kv.kv, kv.n, &d->producer, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    if (kf_conf_get_bool(conf, "dispatch.audit")) {
        err = kf_audit_new(d->producer, d->audit_topic, &d->audit, errstr, errstr_size);
        if (err != KF_OK)
            goto fail;
    }
    d->multi = curl_multi_init();
    if (!d->multi) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_HTTP, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)d->max_inflight);
    err = kf_dq_consumer_new(&kv, kf_conf_get_str(conf, "dispatch.group.id"), kf_dq_rebalance, d,
                             &d->rk, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    const char *subs[] = {d->results_topic, d->retry_topic};
    err = kf_dq_subscribe(d->rk, subs, 2, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    kf_dq_kv_free(&kv);
    d->last_commit_ms = kf_dq_mono_ms();
    kf_log(KF_LOG_INFO, "dispatch", "dispatching %s and %s (%zu retries, allowlist of %zu blocks)",
           d->results_topic, d->retry_topic, d->sched.n, kf_webhook_cidrs_count(d->allow));
    *out_dispatch = d;
    return KF_OK;
fail:
    kf_dq_kv_free(&kv);
    kf_dispatch_destroy(d);
    return err;
}

void
kf_dispatch_destroy(kf_dispatch_t *d)
{
    if (!d)
        return;
    /* Let running POSTs and their bookkeeping finish, without reading anything new. */
    if (d->rk && d->multi) {
        int64_t deadline = kf_dq_mono_ms() + d->shutdown_ms;
        for (;;) {
            int busy = 0;
            for (kf_dq_job_t *j = d->jobs; j; j = j->next)
                if (j->state == KF_DQ_HTTP || j->state == KF_DQ_PRODUCING ||
                    (j->state == KF_DQ_FINAL && j->due_ms <= kf_now_ms()))
                    busy = 1;
            if (!busy || kf_dq_mono_ms() >= deadline)
                break;
            kf_dq_drive_http(d, 50);
            kf_producer_poll(d->producer, 10);
            for (kf_dq_job_t *j = d->jobs, *nx; j; j = nx) {
                nx = j->next;
                if (j->state == KF_DQ_FINAL && j->due_ms <= kf_now_ms())
                    kf_dq_finalize(d, j);
            }
        }
        kf_dq_commit(d, NULL, 1);
    }
    /* Whatever is left stays uncommitted: the next owner reads it again. */
    while (d->jobs) {
        d->jobs->part = NULL;
        kf_dq_job_free(d, d->jobs);
    }
    if (d->rk) {
        rd_kafka_consumer_close(d->rk);
        rd_kafka_destroy(d->rk);
    }
    while (d->parts) {
        kf_dq_part_t *p = d->parts;
        d->parts = p->next;
        free(p->offs);
        free(p->done);
        free(p->topic);
        free(p);
    }
    if (d->multi)
        curl_multi_cleanup(d->multi);
    kf_audit_destroy(d->audit);
    kf_producer_destroy(d->producer);
    kf_pg_destroy(d->pg);
    kf_webhook_cidrs_destroy(d->allow);
    if (d->own_metrics)
        kf_metrics_destroy(d->metrics);
    free(d->results_topic);
    free(d->retry_topic);
    free(d->dlq_topic);
    free(d->audit_topic);
    free(d->results_dlq);
    free(d->retry_dlq);
    free(d);
}

kf_err_t
kf_dispatch_run(const kf_conf_t *conf,
                volatile sig_atomic_t *stop,
                char *errstr,
                size_t errstr_size)
{
    kf_dispatch_t *d;
    kf_err_t err = kf_dispatch_new(conf, NULL, &d, errstr, errstr_size);
    if (err != KF_OK)
        return err;
    while (!*stop && !kf_kafka_stop) {
        err = kf_dispatch_poll(d, 100, errstr, errstr_size);
        if (err != KF_OK)
            break;
    }
    kf_dispatch_destroy(d);
    return err;
}

/* ---- `kinfer dispatch` -------------------------------------------------------------------- */

static void
kf_dq_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer dispatch [--config FILE] [--set KEY=VALUE]... [--dump-config]\n\n"
                "Stores inference results in PostgreSQL and delivers them to callback URLs as\n"
                "signed Standard Webhooks, retrying from Kafka (topics.callbacks.retry).\n"
                "Runs until SIGTERM or SIGINT.\n\n"
                "Options:\n"
                "  --config FILE     load `key = value` settings from FILE\n"
                "  --set KEY=VALUE   set one key (after file and environment)\n"
                "  --dump-config     print the effective configuration and exit\n"
                "  -h, --help        this text\n\n"
                "Environment: KINFER_<KEY> (e.g. KINFER_DISPATCH_RETRY_SCHEDULE), KINFER_PG_DSN,\n"
                "KINFER_KAFKA_BROKERS. See docs/callbacks.md.\n");
}

int
kf_cmd_dispatch(int argc, char **argv)
{
    char errstr[512];
    const char *file = NULL;
    int dump = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            kf_dq_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--dump-config")) {
            dump = 1;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            i++; /* applied below, after file and environment */
        } else {
            fprintf(stderr, "kinfer dispatch: unknown or incomplete option '%s'\n", argv[i]);
            kf_dq_usage(stderr);
            return 2;
        }
    }
    kf_conf_t *conf = kf_conf_new();
    kf_err_t err = kf_dispatch_conf_register(conf, errstr, sizeof(errstr));
    if (err == KF_OK && file)
        err = kf_conf_load_file(conf, file, errstr, sizeof(errstr));
    if (err == KF_OK)
        err = kf_conf_load_env(conf, NULL, errstr, sizeof(errstr));
    for (int i = 1; err == KF_OK && i < argc; i++) {
        if (strcmp(argv[i], "--set") || i + 1 >= argc)
            continue;
        err = kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr));
    }
    if (err != KF_OK) {
        fprintf(stderr, "kinfer dispatch: %s\n", errstr);
        kf_conf_destroy(conf);
        return 2;
    }
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        kf_conf_destroy(conf);
        return 0;
    }
    kf_kafka_install_signal_handlers();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    err = kf_dispatch_run(conf, &kf_kafka_stop, errstr, sizeof(errstr));
    kf_conf_destroy(conf);
    if (err != KF_OK) {
        fprintf(stderr, "kinfer dispatch: %s\n", errstr);
        return 1;
    }
    return 0;
}
