/*
 * worker_loop.c: the inference worker's Kafka loop around one kf_engine (kf_worker.h).
 *
 * core's kf_txn gathers a batch, transforms it synchronously and commits; an engine finishes
 * jobs asynchronously and out of order, so the worker runs its own loop on librdkafka:
 * a group consumer whose partitions it pauses when the engine is full, a transactional
 * producer that commits results together with the contiguous-completion offsets of
 * kf_worker_track, and an assign-only consumer of the control topic for cancellations.
 * Everything happens on the thread that calls kf_worker_run(); engine callbacks and
 * librdkafka's rebalance callback run on it too, so the job lists need no locks. The
 * optional PostgreSQL `running` update runs on its own thread behind a bounded queue, so a
 * slow database never stalls inference.
 */
#include "kf_worker.h"

#include "kf_audit.h"
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_model.h"
#include "kf_pg.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KF_WK_STAGE         "infer"
#define KF_WK_PG_QUEUE      1024
#define KF_WK_DRAIN_MAX     256 /* records taken per loop turn */
#define KF_WK_ADMIN_TIMEOUT 15000
#define KF_WK_TXN_RETRIES   10 /* retriable errors of one transactional call */

/* ---- configuration ------------------------------------------------------------------------ */

const kf_conf_prop_t kf_worker_conf_props[] = {
    {.name = "worker.model",
     .type = KF_CONF_STRING,
     .desc = "Path of the GGUF model this worker serves (required)."},
    {.name = "worker.model.name",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "Model name written into results; empty: the file name without .gguf."},
    {.name = "worker.device",
     .type = KF_CONF_STRING,
     .def = "auto",
     .choices = "auto|cpu|cuda",
     .desc = "Backend: cpu, cuda, or auto (cuda when built and a device works, else cpu)."},
    {.name = "worker.gpu",
     .type = KF_CONF_INT,
     .def = "0",
     .min = 0,
     .max = 64,
     .desc = "GPU ordinal for the cuda backend."},
    {.name = "worker.threads",
     .type = KF_CONF_INT,
     .def = "0",
     .min = 0,
     .max = 1024,
     .desc = "CPU backend threads; 0: all online cores."},
    {.name = "worker.max.batch.seqs",
     .type = KF_CONF_INT,
     .def = "8",
     .min = 1,
     .max = 4096,
     .desc = "Sequences decoded together in one engine step."},
    {.name = "worker.max.batch.tokens",
     .type = KF_CONF_INT,
     .def = "512",
     .min = 1,
     .max = 65536,
     .desc = "Tokens per forward pass (prefill chunks plus decode tokens)."},
    {.name = "worker.max.queued",
     .type = KF_CONF_INT,
     .def = "8",
     .min = 0,
     .max = 4096,
     .desc = "Jobs waiting in the engine beyond max.batch.seqs before partitions are paused."},
    {.name = "worker.max.wait",
     .type = KF_CONF_DURATION,
     .def = "20ms",
     .min = 0,
     .max = 10000,
     .desc = "How long a small first batch waits for more jobs before it starts."},
    {.name = "worker.kv.mib",
     .type = KF_CONF_INT,
     .def = "256",
     .min = 1,
     .max = 1 << 20,
     .desc = "KV cache budget in MiB."},
    {.name = "worker.kv.f32",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "Keep the KV cache in F32 (exact) instead of F16."},
    {.name = "worker.cpu.requant.q8",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "CPU backend: run Q4_0/Q4_K/Q6_K matrices as Q8_0 (several times faster prefill, "
             "those weights take 8.5 bits instead of 4.5-6.6)."},
    {.name = "worker.ctx",
     .type = KF_CONF_INT,
     .def = "0",
     .min = 0,
     .max = 1 << 24,
     .desc = "Longest prompt plus generation in tokens; 0: the model's context."},
    {.name = "worker.group.id",
     .type = KF_CONF_STRING,
     .def = "kinfer-infer",
     .desc = "Consumer group of the jobs topic."},
    {.name = "worker.transactional.id",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "Transactional id; keep it stable per worker instance so a restart fences its "
             "predecessor. Empty: <group>-<hostname>."},
    {.name = "worker.commit.interval",
     .type = KF_CONF_DURATION,
     .def = "100ms",
     .min = 0,
     .max = 60000,
     .desc = "Longest a finished result waits for its transaction."},
    {.name = "worker.commit.max",
     .type = KF_CONF_INT,
     .def = "64",
     .min = 1,
     .max = 100000,
     .desc = "Finished results that trigger a transaction at once."},
    {.name = "worker.txn.timeout",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 1000,
     .max = 3600000,
     .desc = "Timeout of each transactional call (init, offsets, commit)."},
    {.name = "worker.shutdown.grace",
     .type = KF_CONF_DURATION,
     .def = "5s",
     .min = 0,
     .max = 3600000,
     .desc = "On stop, how long running jobs may finish before they are dropped (redone)."},
    {.name = "worker.cancel.ttl",
     .type = KF_CONF_DURATION,
     .def = "1h",
     .min = 0,
     .max = 604800000,
     .desc = "How long a cancel is remembered for jobs not yet arrived."},
    {.name = "worker.cancel.capacity",
     .type = KF_CONF_INT,
     .def = "4096",
     .min = 1,
     .max = 1000000,
     .desc = "Cancelled request ids remembered."},
    {.name = "worker.token.ids",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "Include the generated token ids in results."},
    {.name = "worker.dlq.topic",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "Dead-letter topic for undecodable jobs; empty: <jobs topic>.dlq."},
    {.name = "worker.topics.create",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Create the jobs, results, control, audit and dead-letter topics at start."},
    {.name = "worker.topics.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of topics the worker creates."},
    {.name = "worker.pg.status",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Set requests.status = 'running' when pg.dsn is configured (best effort)."},
    {.name = "worker.stats.interval",
     .type = KF_CONF_DURATION,
     .def = "10s",
     .min = 0,
     .max = 3600000,
     .desc = "Period of the throughput log line; 0: never."},
    {.name = NULL}};

/* Shared topic keys, one table each, so whichever stage registers first owns the key and the
 * others skip it (kinfer run). */
static const kf_conf_prop_t kf_wk_topic_jobs[] = {
    {.name = "topics.jobs",
     .type = KF_CONF_STRING,
     .def = "kinfer.jobs",
     .desc = "Topic of InferenceJob records (key = request_id)."},
    {.name = NULL}};
static const kf_conf_prop_t kf_wk_topic_results[] = {
    {.name = "topics.results",
     .type = KF_CONF_STRING,
     .def = "kinfer.results",
     .desc = "Topic of InferenceResult records (key = request_id)."},
    {.name = NULL}};
static const kf_conf_prop_t kf_wk_topic_control[] = {
    {.name = "topics.control",
     .type = KF_CONF_STRING,
     .def = "kinfer.control",
     .desc = "Topic of cancellation records (key = request_id, JSON value)."},
    {.name = NULL}};
static const kf_conf_prop_t kf_wk_topic_audit[] = {{.name = "topics.audit",
                                                    .type = KF_CONF_STRING,
                                                    .def = "kinfer.audit",
                                                    .desc = "Topic of AuditEvent records."},
                                                   {.name = NULL}};

kf_err_t
kf_worker_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    KF_ASSERT(conf);
    kf_err_t err = kf_conf_add_table(conf, "worker", kf_worker_conf_props, errstr, errstr_size);
    const kf_conf_prop_t *tabs[] = {kf_wk_topic_jobs, kf_wk_topic_results, kf_wk_topic_control,
                                    kf_wk_topic_audit};
    for (size_t i = 0; !err && i < sizeof(tabs) / sizeof(tabs[0]); i++)
        if (!kf_conf_has(conf, tabs[i][0].name))
            err = kf_conf_add_table(conf, "topics", tabs[i], errstr, errstr_size);
    if (!err && !kf_conf_has(conf, "pg.dsn"))
        err = kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, errstr_size);
    return err;
}

/* ---- types -------------------------------------------------------------------------------- */

/* One input record, from arrival until its output is committed (or it is dropped). */
typedef struct kf_wjob {
    kf_worker_job_t *job; /* NULL for a poison record */
    int32_t partition;
    int64_t offset;
    kf_seq_id_t seq; /* engine id while in the engine */
    int64_t submit_ms;
    int cancel_requested;
    int dropped;
    /* the output, once ready */
    const char *out_topic; /* the worker's results or dead-letter topic name */
    void *out_key;
    size_t out_key_len;
    unsigned char *out_value;
    size_t out_len;
    rd_kafka_headers_t *out_hdrs; /* dead letters only */
    kf_worker_status_t status;
    uint32_t prompt_tokens, completion_tokens;
    double total_ms;
    const char *finish_reason;
    char error[256];
    struct kf_wjob *prev, *next;
} kf_wjob_t;

typedef struct kf_wlist {
    kf_wjob_t *head, *tail;
    size_t n;
} kf_wlist_t;

/* The PostgreSQL side thread: request ids to mark running. */
typedef struct kf_wpg {
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char (*q)[128];
    size_t head, n;
    int stop;
    kf_pg_opts_t opts;
    char *dsn;
    uint64_t dropped;
} kf_wpg_t;

struct kf_worker {
    /* configuration */
    char *model_path, *model_name, sha256[65];
    char *topic_jobs, *topic_results, *topic_control, *topic_audit, *topic_dlq;
    char *group_id, *txn_id;
    uint32_t max_batch_seqs, high, low;
    int64_t max_wait_ms, commit_interval_ms, txn_timeout_ms, grace_ms, stats_interval_ms;
    size_t commit_max;
    int token_ids;
    /* engine */
    kf_model_t *model;
    kf_engine_t *eng;
    const char *backend;
    /* Kafka */
    rd_kafka_t *consumer, *producer, *control;
    kf_producer_t *audit_producer;
    kf_audit_t *audit;
    /* state */
    kf_worker_track_t *track;
    kf_worker_cancels_t *cancels;
    kf_wlist_t inflight; /* in the engine */
    kf_wlist_t done;     /* output ready, waiting for a transaction */
    uint32_t n_fresh;
    int64_t oldest_fresh_ms, first_done_ms;
    int paused, stopping, drop_all, fatal;
    int protocol_coop;
    int failed_txns;
    int64_t next_commit_ms;
    char fatal_msg[512];
    atomic_int stop;
    /* stats */
    pthread_mutex_t stats_mu;
    kf_worker_stats_t stats;
    uint64_t win_tokens;         /* decode tokens in the current one-second window */
    uint64_t last_decode_tokens; /* the engine's n_decode_tokens at the last look */
    int64_t win_start_ms, last_stats_log_ms;
    /* metrics */
    kf_metrics_t *metrics;
    kf_metrics_series_t *m_jobs[5], *m_tok_prompt, *m_tok_completion, *m_batch, *m_queue,
        *m_running, *m_inflight, *m_tps, *m_paused, *m_dlq, *m_commits, *m_aborts;
    kf_wpg_t *pg;
};

static int64_t
kf_wk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
kf_wlist_push(kf_wlist_t *l, kf_wjob_t *j)
{
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
}

static void
kf_wlist_remove(kf_wlist_t *l, kf_wjob_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
    l->n--;
}

static void
kf_wjob_free(kf_wjob_t *j)
{
    if (!j)
        return;
    kf_worker_job_destroy(j->job);
    free(j->out_key);
    free(j->out_value);
    if (j->out_hdrs)
        rd_kafka_headers_destroy(j->out_hdrs);
    free(j);
}

/* Copies src into dst[size], cutting it short when needed (error texts are informative). */
static void
kf_wk_copy(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

static void
kf_wk_stat(kf_worker_t *w, uint64_t *field, uint64_t add)
{
    pthread_mutex_lock(&w->stats_mu);
    *field += add;
    pthread_mutex_unlock(&w->stats_mu);
}

/* "request_id=... trace_id=... partition=N offset=N" for kf_logkv. */
static const char *
kf_wk_kv(const kf_wjob_t *j, char *buf, size_t size)
{
    snprintf(buf, size, "request_id=%s trace_id=%s partition=%d offset=%lld",
             j->job && *j->job->request_id ? j->job->request_id : "-",
             j->job && *j->job->trace_id ? j->job->trace_id : "-", (int)j->partition,
             (long long)j->offset);
    return buf;
}

/* ---- PostgreSQL status thread ------------------------------------------------------------- */

static void *
kf_wpg_main(void *arg)
{
    kf_wpg_t *pg = arg;
    kf_pg_t *conn = NULL;
    char errstr[512];
    int64_t next_try = 0;
    pthread_mutex_lock(&pg->mu);
    for (;;) {
        while (!pg->stop && pg->n == 0)
            pthread_cond_wait(&pg->cv, &pg->mu);
        if (pg->stop)
            break;
        char rid[128];
        memcpy(rid, pg->q[pg->head], sizeof(rid));
        pg->head = (pg->head + 1) % KF_WK_PG_QUEUE;
        pg->n--;
        pthread_mutex_unlock(&pg->mu);
        if (!conn && kf_wk_mono_ms() >= next_try) {
            if (kf_pg_new(&pg->opts, &conn, errstr, sizeof(errstr)) ||
                kf_pg_register(conn, "infer_running",
                               "UPDATE requests SET status = 'running', updated_at = now() "
                               "WHERE request_id = $1 AND status IN ('accepted', 'enriched')",
                               1, KF_PG_IDEMPOTENT, errstr, sizeof(errstr))) {
                kf_log(KF_LOG_WARN, KF_WK_STAGE, "status updates paused: %s", errstr);
                kf_pg_destroy(conn);
                conn = NULL;
                next_try = kf_wk_mono_ms() + 5000;
            }
        }
        if (conn) {
            const char *params[] = {rid};
            kf_pg_result_t *res = NULL;
            if (kf_pg_exec_prepared(conn, "infer_running", params, 1, &res, errstr, sizeof(errstr)))
                kf_log(KF_LOG_WARN, KF_WK_STAGE, "status update of %s failed: %s", rid, errstr);
            else
                kf_log(KF_LOG_DEBUG, KF_WK_STAGE, "request %s: status running (%lld rows)", rid,
                       (long long)kf_pg_result_affected(res));
            kf_pg_result_destroy(res);
        }
        pthread_mutex_lock(&pg->mu);
    }
    pthread_mutex_unlock(&pg->mu);
    kf_pg_destroy(conn);
    return NULL;
}

/* Queues a status update; never blocks (drops when the queue is full). */
static void
kf_wpg_running(kf_wpg_t *pg, const char *request_id)
{
    if (!pg)
        return;
    pthread_mutex_lock(&pg->mu);
    if (pg->n < KF_WK_PG_QUEUE) {
        snprintf(pg->q[(pg->head + pg->n) % KF_WK_PG_QUEUE], 128, "%s", request_id);
        pg->n++;
        pthread_cond_signal(&pg->cv);
    } else {
        pg->dropped++;
    }
    pthread_mutex_unlock(&pg->mu);
}

static void
kf_wpg_destroy(kf_wpg_t *pg)
{
    if (!pg)
        return;
    if (pg->started) {
        pthread_mutex_lock(&pg->mu);
        pg->stop = 1;
        pthread_cond_signal(&pg->cv);
        pthread_mutex_unlock(&pg->mu);
        pthread_join(pg->thread, NULL);
    }
    pthread_mutex_destroy(&pg->mu);
    pthread_cond_destroy(&pg->cv);
    free(pg->q);
    free(pg->dsn);
    free(pg);
}

static kf_wpg_t *
kf_wpg_new(const kf_conf_t *conf)
{
    kf_wpg_t *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return NULL;
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
    pg->q = calloc(KF_WK_PG_QUEUE, sizeof(*pg->q));
    kf_pg_opts_from_conf(conf, &pg->opts);
    const char *dsn = kf_conf_get_str(conf, "pg.dsn");
    if (!dsn || !*dsn)
        dsn = getenv("KINFER_PG_DSN");
    pg->dsn = dsn ? strdup(dsn) : NULL;
    pg->opts.dsn = pg->dsn;
    pg->opts.application_name = "kinfer-infer";
    if (!pg->q || !pg->dsn || pthread_create(&pg->thread, NULL, kf_wpg_main, pg)) {
        kf_wpg_destroy(pg);
        return NULL;
    }
    pg->started = 1;
    return pg;
}

/* ---- Kafka configuration ------------------------------------------------------------------ */

/* librdkafka properties that only make sense for the other kind of client; skipping them
 * keeps librdkafka from warning on every start. */
static int
kf_wk_key_is_consumer_only(const char *k)
{
    static const char *const pre[] = {"group.",
                                      "session.timeout",
                                      "heartbeat.",
                                      "max.poll.",
                                      "auto.offset.",
                                      "enable.auto.",
                                      "auto.commit.",
                                      "isolation.",
                                      "partition.assignment",
                                      "fetch.",
                                      "queued.",
                                      "enable.partition.eof",
                                      "check.crcs",
                                      "allow.auto.create",
                                      "coordinator.",
                                      NULL};
    for (int i = 0; pre[i]; i++)
        if (!strncmp(k, pre[i], strlen(pre[i])))
            return 1;
    return 0;
}

static int
kf_wk_key_is_producer_only(const char *k)
{
    static const char *const pre[] = {"transactional.",
                                      "transaction.",
                                      "acks",
                                      "enable.idempotence",
                                      "linger.",
                                      "batch.",
                                      "message.timeout",
                                      "queue.buffering",
                                      "compression",
                                      "request.required.acks",
                                      "delivery.",
                                      "retries",
                                      "sticky.",
                                      "partitioner",
                                      NULL};
    for (int i = 0; pre[i]; i++)
        if (!strncmp(k, pre[i], strlen(pre[i])))
            return 1;
    return 0;
}

/* Brokers: kafka.bootstrap.servers, else $KINFER_KAFKA_BROKERS. NULL when neither. */
static const char *
kf_wk_brokers(const kf_conf_t *conf)
{
    for (size_t i = 0; i < kf_conf_kafka_count(conf); i++) {
        const char *k, *v;
        kf_conf_kafka_at(conf, i, &k, &v);
        if ((!strcmp(k, "bootstrap.servers") || !strcmp(k, "metadata.broker.list")) && v && *v)
            return v;
    }
    const char *env = getenv("KINFER_KAFKA_BROKERS");
    return env && *env ? env : NULL;
}

static void
kf_wk_rdlog(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-3 errors, 4 warnings, 5-6 info, 7 debug */
    kf_log_level_t lv = level <= 3   ? KF_LOG_ERROR
                        : level == 4 ? KF_LOG_WARN
                        : level <= 6 ? KF_LOG_INFO
                                     : KF_LOG_DEBUG;
    kf_log(lv, "rdkafka", "%s: %s", fac, buf);
}

/* A librdkafka configuration: bootstrap, the kafka.* keys that fit `producer`, logging. */
static kf_err_t
kf_wk_rdconf(
    const kf_conf_t *conf, int producer, rd_kafka_conf_t **out, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char rderr[512];
    rd_kafka_conf_set_log_cb(rc, kf_wk_rdlog);
    if (rd_kafka_conf_set(rc, "bootstrap.servers", kf_wk_brokers(conf), rderr, sizeof(rderr)) !=
        RD_KAFKA_CONF_OK)
        goto bad;
    for (size_t i = 0; i < kf_conf_kafka_count(conf); i++) {
        const char *k, *v;
        kf_conf_kafka_at(conf, i, &k, &v);
        if (producer ? kf_wk_key_is_consumer_only(k) : kf_wk_key_is_producer_only(k))
            continue;
        if (rd_kafka_conf_set(rc, k, v, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK)
            goto bad;
    }
    *out = rc;
    return KF_OK;
bad:
    rd_kafka_conf_destroy(rc);
    return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka configuration: %s", rderr);
}

static kf_err_t
kf_wk_set(rd_kafka_conf_t *rc, const char *k, const char *v, char *errstr, size_t errstr_size)
{
    char rderr[512];
    if (rd_kafka_conf_set(rc, k, v, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka.%s: %s", k, rderr);
    return KF_OK;
}

/* The kafka.* keys as "kafka."-prefixed pairs for core's clients (audit producer, admin).
 * Returns a malloc'ed array whose names live in `names` (freed by the caller). */
static kf_kafka_kv_t *
kf_wk_kv_list(const kf_conf_t *conf, char ***names, size_t *n)
{
    size_t cnt = kf_conf_kafka_count(conf);
    kf_kafka_kv_t *kv = calloc(cnt + 1, sizeof(*kv));
    char **nm = calloc(cnt + 2, sizeof(*nm));
    size_t k = 0;
    int have_bootstrap = 0;
    for (size_t i = 0; kv && nm && i < cnt; i++) {
        const char *name, *v;
        kf_conf_kafka_at(conf, i, &name, &v);
        if (kf_wk_key_is_consumer_only(name) || !strncmp(name, "transactional.", 14))
            continue;
        if (!strcmp(name, "bootstrap.servers"))
            have_bootstrap = 1;
        size_t len = strlen(name) + 7;
        nm[k] = malloc(len);
        if (!nm[k])
            break;
        snprintf(nm[k], len, "kafka.%s", name);
        kv[k].key = nm[k];
        kv[k].value = v;
        k++;
    }
    if (kv && nm && !have_bootstrap && getenv("KINFER_KAFKA_BROKERS")) {
        kv[k].key = "kafka.bootstrap.servers";
        kv[k].value = getenv("KINFER_KAFKA_BROKERS");
        k++;
    }
    *names = nm;
    *n = k;
    return kv;
}

static void
kf_wk_kv_free(kf_kafka_kv_t *kv, char **names)
{
    for (size_t i = 0; names && names[i]; i++)
        free(names[i]);
    free(names);
    free(kv);
}

/* ---- outputs ------------------------------------------------------------------------------ */

/* Moves a job to the done list with its output and marks its offset complete. */
static void
kf_wk_ready(kf_worker_t *w, kf_wjob_t *j)
{
    if (kf_worker_track_done(w->track, j->partition, j->offset)) {
        /* Its partition was given up meanwhile: an output without its offset would be
         * duplicated by the new owner, so there must be none. */
        char kv[384];
        kf_logkv(KF_LOG_WARN, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "output of an untracked record discarded");
        kf_wk_stat(w, &w->stats.dropped, 1);
        kf_wjob_free(j);
        return;
    }
    if (w->done.n == 0)
        w->first_done_ms = kf_wk_mono_ms();
    kf_wlist_push(&w->done, j);
}

/* Encodes the result of `j` from `o` (status, text, counts) and makes it ready. A result that
 * cannot be encoded (should not happen) is replaced by a failed one saying why. */
static void
kf_wk_finish(kf_worker_t *w, kf_wjob_t *j, kf_worker_outcome_t *o)
{
    char errstr[512], kv[384];
    o->model = w->model_name;
    o->model_sha256 = w->sha256;
    o->produced_at_ms = kf_now_ms();
    kf_err_t err =
        kf_worker_result_encode(j->job, o, &j->out_value, &j->out_len, errstr, sizeof(errstr));
    if (err) {
        kf_logkv(KF_LOG_ERROR, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "result not encodable (%s); reporting failed", errstr);
        kf_worker_outcome_t f = {.status = KF_WORKER_FAILED,
                                 .error = "result could not be encoded",
                                 .model = w->model_name,
                                 .model_sha256 = w->sha256,
                                 .produced_at_ms = o->produced_at_ms};
        *o = f;
        err =
            kf_worker_result_encode(j->job, o, &j->out_value, &j->out_len, errstr, sizeof(errstr));
        KF_ASSERT(err == KF_OK);
    }
    j->status = o->status;
    j->prompt_tokens = o->prompt_tokens;
    j->completion_tokens = o->completion_tokens;
    j->total_ms = o->prefill_ms + o->decode_ms;
    j->finish_reason = o->finish_reason;
    kf_wk_copy(j->error, sizeof(j->error), o->error);
    j->out_topic = w->topic_results;
    j->out_key = strdup(j->job->request_id);
    j->out_key_len = strlen(j->job->request_id);
    kf_wk_ready(w, j);
}

/* A job that never reaches the engine: expired on arrival, cancelled before it arrived, or
 * rejected by the engine's validation. */
static void
kf_wk_finish_early(kf_worker_t *w, kf_wjob_t *j, kf_worker_status_t st, const char *why)
{
    int64_t now = kf_now_ms();
    kf_worker_outcome_t o = {.status = st,
                             .error = why,
                             .queue_ms = j->job->accepted_at_ms > 0 && now > j->job->accepted_at_ms
                                             ? (double)(now - j->job->accepted_at_ms)
                                             : 0.0};
    kf_wk_finish(w, j, &o);
}

/* A record that cannot be decoded: its original key, value and headers go to the
 * dead-letter topic (inside the transaction), with kf.* headers saying why. */
static void
kf_wk_dead_letter(
    kf_worker_t *w, kf_wjob_t *j, const rd_kafka_message_t *rkm, kf_err_t cause, const char *why)
{
    char kv[384], num[32];
    kf_logkv(KF_LOG_ERROR, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
             "poison job record (%s): %s; dead-lettering", kf_err_str(cause), why);
    rd_kafka_headers_t *src = NULL;
    j->out_hdrs = rd_kafka_message_headers(rkm, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
                      ? rd_kafka_headers_copy(src)
                      : rd_kafka_headers_new(8);
    rd_kafka_header_add(j->out_hdrs, "kf.error", -1, why, -1);
    rd_kafka_header_add(j->out_hdrs, "kf.error.code", -1, kf_err_str(cause), -1);
    rd_kafka_header_add(j->out_hdrs, "kf.original.topic", -1, rd_kafka_topic_name(rkm->rkt), -1);
    snprintf(num, sizeof(num), "%d", (int)rkm->partition);
    rd_kafka_header_add(j->out_hdrs, "kf.original.partition", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", (long long)rkm->offset);
    rd_kafka_header_add(j->out_hdrs, "kf.original.offset", -1, num, -1);
    rd_kafka_header_add(j->out_hdrs, "kf.stage", -1, KF_WK_STAGE, -1);
    if (rkm->key_len) {
        j->out_key = malloc(rkm->key_len);
        if (j->out_key) {
            memcpy(j->out_key, rkm->key, rkm->key_len);
            j->out_key_len = rkm->key_len;
        }
    }
    if (rkm->len) {
        j->out_value = malloc(rkm->len);
        if (j->out_value) {
            memcpy(j->out_value, rkm->payload, rkm->len);
            j->out_len = rkm->len;
        }
    }
    j->out_topic = w->topic_dlq;
    kf_wk_copy(j->error, sizeof(j->error), why);
    kf_wk_stat(w, &w->stats.dead_lettered, 1);
    kf_metrics_add(w->m_dlq, 1);
    kf_wk_ready(w, j);
}

/* ---- engine callbacks --------------------------------------------------------------------- */

static void
kf_wk_on_done(const kf_result_t *res, void *opaque)
{
    kf_worker_t *w = opaque;
    kf_wjob_t *j = res->user;
    char kv[384];
    kf_wlist_remove(&w->inflight, j);
    kf_worker_status_t st =
        kf_worker_status_of(res->finish, j->cancel_requested, j->dropped || w->drop_all);
    if (st == KF_WORKER_DROP) {
        kf_logkv(KF_LOG_INFO, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "job dropped without a result (partition revoked or shutting down)");
        kf_wk_stat(w, &w->stats.dropped, 1);
        kf_wjob_free(j);
        return;
    }
    double pre_queue = 0.0;
    /* queue_ms of a result counts from the API's acceptance, the engine's from submit. */
    if (j->job->accepted_at_ms > 0) {
        int64_t submit_wall = kf_now_ms() - (kf_wk_mono_ms() - j->submit_ms);
        if (submit_wall > j->job->accepted_at_ms)
            pre_queue = (double)(submit_wall - j->job->accepted_at_ms);
    }
    kf_worker_outcome_t o = {
        .status = st,
        .text = st == KF_WORKER_COMPLETED ? res->text : "",
        .text_len = st == KF_WORKER_COMPLETED ? res->text_len : 0,
        .finish_reason = st == KF_WORKER_COMPLETED ? kf_finish_name(res->finish) : NULL,
        .error = st == KF_WORKER_FAILED      ? res->errstr
                 : st == KF_WORKER_EXPIRED   ? "deadline passed during generation"
                 : st == KF_WORKER_CANCELLED ? "cancelled"
                                             : NULL,
        .token_ids = w->token_ids && st == KF_WORKER_COMPLETED ? res->tokens : NULL,
        .n_token_ids = res->n_tokens,
        .prompt_tokens = res->n_prompt_tokens,
        .completion_tokens = res->n_completion_tokens,
        .queue_ms = pre_queue + res->queue_ms,
        .prefill_ms = res->prefill_ms,
        .decode_ms = res->decode_ms,
    };
    kf_logkv(KF_LOG_INFO, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
             "job %s: finish=%s prompt_tokens=%u completion_tokens=%u prefill_ms=%.1f "
             "decode_ms=%.1f",
             kf_worker_status_name(st), kf_finish_name(res->finish), res->n_prompt_tokens,
             res->n_completion_tokens, res->prefill_ms, res->decode_ms);
    kf_wk_finish(w, j, &o);
}

/* ---- cancellations ------------------------------------------------------------------------ */

static void
kf_wk_cancel(kf_worker_t *w, const char *request_id, const char *tenant_id)
{
    kf_worker_cancels_add(w->cancels, request_id, tenant_id, kf_now_ms());
    for (kf_wjob_t *j = w->inflight.head; j; j = j->next) {
        if (j->dropped || j->cancel_requested || strcmp(j->job->request_id, request_id))
            continue;
        if (*tenant_id && *j->job->tenant_id && strcmp(tenant_id, j->job->tenant_id)) {
            kf_log(KF_LOG_WARN, KF_WK_STAGE, "cancel of %s ignored: tenant %s does not own it",
                   request_id, tenant_id);
            continue;
        }
        j->cancel_requested = 1;
        /* The engine delivers the cancelled result on its next step; NOT_FOUND means it just
         * finished, and the finished result stands. */
        kf_engine_cancel(w->eng, j->seq);
        char kv[384];
        kf_logkv(KF_LOG_INFO, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)), "cancel requested");
    }
}

static kf_err_t
kf_wk_poll_control(kf_worker_t *w)
{
    for (int i = 0; i < KF_WK_DRAIN_MAX; i++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->control, 0);
        if (!rkm)
            return KF_OK;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kf_log(KF_LOG_WARN, KF_WK_STAGE, "control consumer: %s",
                       rd_kafka_message_errstr(rkm));
        } else {
            char rid[128], tid[128], errstr[256];
            if (kf_worker_cancel_parse(rkm->payload, rkm->len, rid, tid, errstr, sizeof(errstr)))
                kf_log(KF_LOG_WARN, KF_WK_STAGE,
                       "control record at %s [%d] offset %lld ignored: %s",
                       rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, (long long)rkm->offset,
                       errstr);
            else
                kf_wk_cancel(w, rid, tid);
        }
        rd_kafka_message_destroy(rkm);
    }
    return KF_OK;
}

/* ---- transactions ------------------------------------------------------------------------- */

/* Emits the audit event and metrics of a committed result. */
static void
kf_wk_committed_job(kf_worker_t *w, kf_wjob_t *j)
{
    if (!j->job) /* dead letter: counted when it was found */
        return;
    static const char *const actions[] = {"inference.completed", "inference.completed",
                                          "inference.expired", "inference.cancelled"};
    char pt[16], ct[16];
    snprintf(pt, sizeof(pt), "%u", j->prompt_tokens);
    snprintf(ct, sizeof(ct), "%u", j->completion_tokens);
    kf_kafka_kv_t attrs[] = {{"prompt_tokens", pt},
                             {"completion_tokens", ct},
                             {"status", kf_worker_status_name(j->status)},
                             {"finish_reason", j->finish_reason ? j->finish_reason : ""}};
    kf_audit_event_t ev = {
        .action = actions[j->status <= KF_WORKER_CANCELLED ? j->status : 1],
        .outcome = j->status == KF_WORKER_FAILED ? KF_AUDIT_FAILURE : KF_AUDIT_SUCCESS,
        .stage = KF_WK_STAGE,
        .request_id = j->job->request_id,
        .tenant_id = j->job->tenant_id,
        .trace_id = j->job->trace_id,
        .duration_ms = j->total_ms,
        .model = w->model_name,
        .tokens = (int64_t)j->prompt_tokens + j->completion_tokens,
        .message = j->error[0] ? j->error : NULL,
        .attrs = attrs,
        .attr_count = sizeof(attrs) / sizeof(attrs[0]),
    };
    if (kf_audit_emit(w->audit, &ev))
        kf_log(KF_LOG_WARN, KF_WK_STAGE, "audit event for %s not queued", j->job->request_id);
    pthread_mutex_lock(&w->stats_mu);
    switch (j->status) {
    case KF_WORKER_COMPLETED:
        w->stats.completed++;
        break;
    case KF_WORKER_FAILED:
        w->stats.failed++;
        break;
    case KF_WORKER_EXPIRED:
        w->stats.expired++;
        break;
    case KF_WORKER_CANCELLED:
        w->stats.cancelled++;
        break;
    case KF_WORKER_DROP:
        break;
    }
    w->stats.prompt_tokens += j->prompt_tokens;
    w->stats.completion_tokens += j->completion_tokens;
    pthread_mutex_unlock(&w->stats_mu);
    kf_metrics_add(w->m_jobs[j->status], 1);
    kf_metrics_add(w->m_tok_prompt, j->prompt_tokens);
    kf_metrics_add(w->m_tok_completion, j->completion_tokens);
}

/* Classifies a transactional error: 1 retry the call, 0 abort needed, -1 fatal. */
static int
kf_wk_txn_error(kf_worker_t *w, rd_kafka_error_t *error, const char *what)
{
    int r;
    if (rd_kafka_error_is_fatal(error)) {
        snprintf(w->fatal_msg, sizeof(w->fatal_msg), "%s: %s", what, rd_kafka_error_string(error));
        w->fatal = 1;
        r = -1;
    } else if (rd_kafka_error_is_retriable(error) && !rd_kafka_error_txn_requires_abort(error)) {
        r = 1;
    } else {
        r = 0;
    }
    kf_log(r < 0 ? KF_LOG_ERROR : KF_LOG_WARN, KF_WK_STAGE, "%s: %s%s", what,
           rd_kafka_error_string(error),
           r > 0    ? "; retrying"
           : r == 0 ? "; aborting the transaction"
                    : " (fatal)");
    rd_kafka_error_destroy(error);
    return r;
}

static void
kf_wk_abort(kf_worker_t *w)
{
    kf_kafka_flush_before_abort(w->producer, (int)w->txn_timeout_ms);
    for (int tries = 0; tries < 10; tries++) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(w->producer, (int)w->txn_timeout_ms);
        if (!error)
            break;
        int r = kf_wk_txn_error(w, error, "abort_transaction");
        if (r <= 0)
            break;
    }
    w->failed_txns++;
    kf_wk_stat(w, &w->stats.txn_aborts, 1);
    kf_metrics_add(w->m_aborts, 1);
    /* The outputs stay in the done list and go into the next transaction, after a backoff
     * that grows with consecutive failures. */
    int64_t backoff = 100;
    for (int i = 1; i < w->failed_txns && backoff < 5000; i++)
        backoff *= 2;
    w->next_commit_ms = kf_wk_mono_ms() + (backoff < 5000 ? backoff : 5000);
}

/* One transaction: every ready output, then the contiguous input offsets, then commit. */
static void
kf_wk_commit(kf_worker_t *w)
{
    if (w->done.n == 0 || w->fatal)
        return;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(w->producer);
    if (error) {
        kf_wk_txn_error(w, error, "begin_transaction");
        return;
    }
    for (kf_wjob_t *j = w->done.head; j; j = j->next) {
        rd_kafka_headers_t *h = j->out_hdrs ? rd_kafka_headers_copy(j->out_hdrs) : NULL;
        rd_kafka_resp_err_t rerr;
        for (;;) {
            if (h)
                rerr = rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(j->out_topic),
                                         RD_KAFKA_V_KEY(j->out_key, j->out_key_len),
                                         RD_KAFKA_V_VALUE(j->out_value, j->out_len),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            else
                rerr = rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(j->out_topic),
                                         RD_KAFKA_V_KEY(j->out_key, j->out_key_len),
                                         RD_KAFKA_V_VALUE(j->out_value, j->out_len),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (rerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(w->producer, 50); /* the local queue drains as batches go out */
        }
        if (rerr) {
            if (h)
                rd_kafka_headers_destroy(h);
            kf_log(KF_LOG_WARN, KF_WK_STAGE, "produce to %s: %s; aborting the transaction",
                   j->out_topic, rd_kafka_err2str(rerr));
            kf_wk_abort(w);
            return;
        }
    }
    /* Offsets: for each partition, as far as its contiguous completion reaches. */
    int tries = 0;
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < kf_worker_track_count(w->track); i++) {
        int32_t p = kf_worker_track_partition_at(w->track, i);
        int64_t next;
        if (kf_worker_track_commit_point(w->track, p, &next))
            rd_kafka_topic_partition_list_add(offs, w->topic_jobs, p)->offset = next;
    }
    if (offs->cnt > 0) {
        for (;;) {
            rd_kafka_consumer_group_metadata_t *cgmd =
                rd_kafka_consumer_group_metadata(w->consumer);
            error = rd_kafka_send_offsets_to_transaction(w->producer, offs, cgmd,
                                                         (int)w->txn_timeout_ms);
            rd_kafka_consumer_group_metadata_destroy(cgmd);
            if (!error)
                break;
            int r = kf_wk_txn_error(w, error, "send_offsets_to_transaction");
            /* Bounded: the loop must get back to polling the consumer in time. */
            if (r == 1 && ++tries < KF_WK_TXN_RETRIES)
                continue;
            if (r == 1)
                r = 0;
            if (r == 0)
                kf_wk_abort(w);
            rd_kafka_topic_partition_list_destroy(offs);
            return;
        }
    }
    for (;;) {
        error = rd_kafka_commit_transaction(w->producer, (int)w->txn_timeout_ms);
        if (!error)
            break;
        int r = kf_wk_txn_error(w, error, "commit_transaction");
        /* A retriable commit error leaves the outcome unknown: only retrying the commit
         * (idempotent) tells, an abort now could duplicate outputs that did commit. */
        if (r == 1)
            continue;
        if (r == 0)
            kf_wk_abort(w);
        rd_kafka_topic_partition_list_destroy(offs);
        return;
    }
    /* Committed: the offsets moved, the outputs are visible. */
    for (int i = 0; i < offs->cnt; i++)
        kf_worker_track_committed(w->track, offs->elems[i].partition, offs->elems[i].offset);
    rd_kafka_topic_partition_list_destroy(offs);
    size_t n = w->done.n;
    while (w->done.head) {
        kf_wjob_t *j = w->done.head;
        kf_wlist_remove(&w->done, j);
        kf_wk_committed_job(w, j);
        kf_wjob_free(j);
    }
    w->failed_txns = 0;
    kf_wk_stat(w, &w->stats.txn_commits, 1);
    kf_metrics_add(w->m_commits, 1);
    kf_log(KF_LOG_DEBUG, KF_WK_STAGE, "committed a transaction of %zu outputs", n);
}

/* ---- rebalancing and flow control --------------------------------------------------------- */

/* Forgets everything of `parts`: ready outputs are freed (not committed), engine sequences
 * cancelled and their results discarded when the engine delivers them. */
static void
kf_wk_drop_partitions(kf_worker_t *w, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (strcmp(parts->elems[i].topic, w->topic_jobs))
            continue;
        for (kf_wjob_t *j = w->inflight.head; j; j = j->next)
            if (j->partition == p && !j->dropped) {
                j->dropped = 1;
                kf_engine_cancel(w->eng, j->seq);
            }
        kf_wjob_t *next;
        for (kf_wjob_t *j = w->done.head; j; j = next) {
            next = j->next;
            if (j->partition == p) {
                kf_wlist_remove(&w->done, j);
                kf_wk_stat(w, &w->stats.dropped, 1);
                kf_wjob_free(j);
            }
        }
        kf_worker_track_drop(w->track, p);
    }
}

static void
kf_wk_rebalance_cb(rd_kafka_t *rk,
                   rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t *parts,
                   void *opaque)
{
    kf_worker_t *w = opaque;
    rd_kafka_error_t *error = NULL;
    /* NULL while the consumer is closing (a rebalance served by rd_kafka_consumer_close) */
    int coop = kf_kafka_rebalance_cooperative(rk);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kf_log(KF_LOG_INFO, KF_WK_STAGE, "assigned %d partitions of %s", parts->cnt, w->topic_jobs);
        for (int i = 0; i < parts->cnt; i++)
            kf_worker_track_drop(w->track, parts->elems[i].partition); /* start clean */
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        /* New partitions arrive unpaused; while the engine is full they must wait too. */
        if (w->paused)
            rd_kafka_pause_partitions(rk, parts);
    } else {
        kf_log(KF_LOG_INFO, KF_WK_STAGE, "revoked %d partitions of %s", parts->cnt, w->topic_jobs);
        /* Commit what is finished while this member still owns the partitions (the
         * generation is still valid), then give up the rest to the next owner. */
        kf_wk_commit(w);
        kf_wk_drop_partitions(w, parts);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (error) {
        kf_log(KF_LOG_ERROR, KF_WK_STAGE, "(un)assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_t *cur = NULL;
    if (!rd_kafka_assignment(rk, &cur) && cur) {
        pthread_mutex_lock(&w->stats_mu);
        w->stats.assigned = (uint32_t)cur->cnt;
        pthread_mutex_unlock(&w->stats_mu);
        rd_kafka_topic_partition_list_destroy(cur);
    }
}

static void
kf_wk_set_paused(kf_worker_t *w, int pause)
{
    rd_kafka_topic_partition_list_t *cur = NULL;
    if (rd_kafka_assignment(w->consumer, &cur) || !cur)
        return;
    rd_kafka_resp_err_t rerr = pause ? rd_kafka_pause_partitions(w->consumer, cur)
                                     : rd_kafka_resume_partitions(w->consumer, cur);
    if (rerr)
        kf_log(KF_LOG_WARN, KF_WK_STAGE, "%s partitions: %s", pause ? "pause" : "resume",
               rd_kafka_err2str(rerr));
    kf_log(KF_LOG_DEBUG, KF_WK_STAGE, "%s %d partitions with %zu jobs in the engine",
           pause ? "paused" : "resumed", cur->cnt, w->inflight.n);
    rd_kafka_topic_partition_list_destroy(cur);
    w->paused = pause;
    pthread_mutex_lock(&w->stats_mu);
    w->stats.paused = pause;
    pthread_mutex_unlock(&w->stats_mu);
    kf_metrics_set(w->m_paused, pause);
}

static void
kf_wk_flow(kf_worker_t *w)
{
    if (w->stopping)
        return;
    kf_worker_flow_t f = kf_worker_flow_decide(w->paused, (uint32_t)w->inflight.n, w->high, w->low);
    if (f != KF_WORKER_FLOW_KEEP)
        kf_wk_set_paused(w, f == KF_WORKER_FLOW_PAUSE);
}

/* ---- jobs --------------------------------------------------------------------------------- */

static void
kf_wk_handle_job(kf_worker_t *w, rd_kafka_message_t *rkm)
{
    char errstr[512], kv[384];
    if (kf_worker_track_add(w->track, rkm->partition, rkm->offset) != KF_OK)
        return; /* re-delivered (or out of memory: it is read again after a restart) */
    kf_wjob_t *j = calloc(1, sizeof(*j));
    if (!j) {
        kf_worker_track_drop(w->track, rkm->partition); /* nothing of it may commit now */
        return;
    }
    j->partition = rkm->partition;
    j->offset = rkm->offset;
    kf_wk_stat(w, &w->stats.jobs_received, 1);
    kf_err_t err = kf_worker_job_decode(rkm->payload, rkm->len, &j->job, errstr, sizeof(errstr));
    if (err) {
        kf_wk_dead_letter(w, j, rkm, err, errstr);
        return;
    }
    kf_worker_job_t *job = j->job;
    int64_t now = kf_now_ms();
    if (kf_worker_cancels_has(w->cancels, job->request_id, job->tenant_id, now)) {
        kf_logkv(KF_LOG_INFO, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "job was cancelled before it arrived");
        kf_wk_finish_early(w, j, KF_WORKER_CANCELLED, "cancelled before it started");
        return;
    }
    if (kf_worker_deadline_passed(job->deadline_ms, now)) {
        kf_logkv(KF_LOG_INFO, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "deadline passed %lld ms before the job arrived",
                 (long long)(now - job->deadline_ms));
        kf_wk_finish_early(w, j, KF_WORKER_EXPIRED, "deadline passed before the job started");
        return;
    }
    kf_request_t req;
    kf_request_init(&req);
    /* Exactly one prompt form: chat turns when the job has them, else the rendered text. */
    if (job->n_messages) {
        req.messages = job->messages;
        req.n_messages = job->n_messages;
    } else {
        req.prompt = job->prompt;
    }
    req.sampling = job->sampling;
    req.stop = job->stop;
    req.n_stop = job->n_stop;
    req.max_tokens = job->max_tokens;
    req.priority = job->priority;
    req.deadline_ms = job->deadline_ms;
    req.user = j;
    err = kf_engine_submit(w->eng, &req, &j->seq, errstr, sizeof(errstr));
    if (err) {
        /* The engine's validation (empty or too long prompt, bad sampling values): this job
         * can never run, so it fails and the client learns why. */
        kf_logkv(KF_LOG_WARN, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)),
                 "engine rejected the job (%s): %s", kf_err_str(err), errstr);
        kf_wk_finish_early(w, j, KF_WORKER_FAILED, errstr);
        return;
    }
    j->submit_ms = kf_wk_mono_ms();
    if (w->n_fresh++ == 0)
        w->oldest_fresh_ms = j->submit_ms;
    kf_wlist_push(&w->inflight, j);
    kf_wpg_running(w->pg, job->request_id);
    kf_audit_emit(w->audit, &(kf_audit_event_t){.action = "inference.started",
                                                .outcome = KF_AUDIT_SUCCESS,
                                                .stage = KF_WK_STAGE,
                                                .request_id = job->request_id,
                                                .tenant_id = job->tenant_id,
                                                .trace_id = job->trace_id,
                                                .duration_ms = -1,
                                                .model = w->model_name,
                                                .tokens = -1});
    kf_logkv(KF_LOG_DEBUG, KF_WK_STAGE, kf_wk_kv(j, kv, sizeof(kv)), "job submitted: %s",
             job->prompt);
}

/* Polls the jobs consumer: waits up to timeout_ms for the first event, then takes what is
 * already there (bounded, and not past the pause threshold). */
static void
kf_wk_poll_jobs(kf_worker_t *w, int timeout_ms)
{
    for (int i = 0; i < KF_WK_DRAIN_MAX; i++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->consumer, i == 0 ? timeout_ms : 0);
        if (!rkm)
            return;
        if (rkm->err) {
            if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
                char fatal[400];
                rd_kafka_fatal_error(w->consumer, fatal, sizeof(fatal));
                snprintf(w->fatal_msg, sizeof(w->fatal_msg), "jobs consumer: %s", fatal);
                w->fatal = 1;
            } else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                kf_log(KF_LOG_WARN, KF_WK_STAGE, "jobs consumer: %s: %s",
                       rd_kafka_err2name(rkm->err), rd_kafka_message_errstr(rkm));
            }
        } else {
            kf_wk_handle_job(w, rkm);
        }
        rd_kafka_message_destroy(rkm);
        if (w->fatal || w->inflight.n >= w->high)
            return;
    }
}

/* ---- the loop ----------------------------------------------------------------------------- */

static void
kf_wk_step(kf_worker_t *w)
{
    char errstr[512];
    int busy = 0;
    w->n_fresh = 0;
    kf_err_t err = kf_engine_step(w->eng, &busy, errstr, sizeof(errstr));
    if (err)
        kf_log(KF_LOG_ERROR, KF_WK_STAGE, "engine step failed (%s): %s; its sequences failed",
               kf_err_str(err), errstr);
    /* Sequences admitted by this step (finished ones have left already: a close lower
     * bound of the batch that ran). */
    kf_engine_stats_t es;
    kf_engine_stats(w->eng, &es);
    if (es.n_running > 0)
        kf_metrics_observe(w->m_batch, es.n_running);
}

static void
kf_wk_gauges(kf_worker_t *w)
{
    kf_engine_stats_t es;
    kf_engine_stats(w->eng, &es);
    kf_metrics_set(w->m_queue, es.n_waiting);
    kf_metrics_set(w->m_running, es.n_running);
    kf_metrics_set(w->m_inflight, (double)w->inflight.n);
    pthread_mutex_lock(&w->stats_mu);
    w->stats.inflight = (uint32_t)w->inflight.n;
    pthread_mutex_unlock(&w->stats_mu);
    /* Generated tokens as the engine decodes them, not when jobs finish: a smooth rate. */
    w->win_tokens += es.n_decode_tokens - w->last_decode_tokens;
    w->last_decode_tokens = es.n_decode_tokens;
    int64_t now = kf_wk_mono_ms();
    if (now - w->win_start_ms >= 1000) {
        double tps = (double)w->win_tokens * 1000.0 / (double)(now - w->win_start_ms);
        kf_metrics_set(w->m_tps, tps);
        if (w->stats_interval_ms > 0 && now - w->last_stats_log_ms >= w->stats_interval_ms &&
            (w->win_tokens || w->inflight.n)) {
            kf_log(KF_LOG_INFO, KF_WK_STAGE,
                   "throughput %.1f tokens/s, %u running, %u waiting, %zu in flight%s", tps,
                   es.n_running, es.n_waiting, w->inflight.n, w->paused ? " (paused)" : "");
            w->last_stats_log_ms = now;
        }
        w->win_tokens = 0;
        w->win_start_ms = now;
    }
}

/* Milliseconds until the ready outputs are due for a transaction (0: now, -1: none). */
static int64_t
kf_wk_commit_due(kf_worker_t *w, int64_t now)
{
    if (w->done.n == 0)
        return -1;
    int64_t due = w->first_done_ms + w->commit_interval_ms;
    if (w->done.n >= w->commit_max || w->stopping)
        due = now;
    if (due < w->next_commit_ms)
        due = w->next_commit_ms;
    return due > now ? due - now : 0;
}

static int64_t
kf_wk_decide(kf_worker_t *w, int64_t now)
{
    kf_worker_batch_in_t in = {.n_active = (uint32_t)w->inflight.n,
                               .n_fresh = w->n_fresh,
                               .oldest_fresh_ms = w->oldest_fresh_ms,
                               .now_ms = now,
                               .max_batch_seqs = w->max_batch_seqs,
                               .max_wait_ms = w->max_wait_ms,
                               .draining = w->paused || w->stopping};
    return kf_worker_batch_decide(&in);
}

/* One turn: control records, jobs, flow control, maybe a step, maybe a commit. */
static void
kf_wk_turn(kf_worker_t *w, int accept_jobs)
{
    kf_wk_poll_control(w);
    int64_t now = kf_wk_mono_ms();
    int64_t d = kf_wk_decide(w, now);
    int64_t timeout = d < 0 ? 100 : d;
    int64_t due = kf_wk_commit_due(w, now);
    if (due >= 0 && due < timeout)
        timeout = due;
    /* Even while not accepting jobs the consumer is polled: that serves rebalances and keeps
     * this member inside max.poll.interval.ms. Paused partitions deliver nothing. */
    kf_wk_poll_jobs(w, accept_jobs ? (int)timeout : 0);
    if (w->fatal)
        return;
    kf_wk_flow(w);
    now = kf_wk_mono_ms();
    if (kf_wk_decide(w, now) == 0)
        kf_wk_step(w);
    else if (!accept_jobs && w->inflight.n == 0)
        rd_kafka_poll(w->producer, 10);
    due = kf_wk_commit_due(w, kf_wk_mono_ms());
    if (due == 0)
        kf_wk_commit(w);
    rd_kafka_poll(w->producer, 0);
    kf_wk_gauges(w);
}

kf_err_t
kf_worker_run(kf_worker_t *w, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    KF_ASSERT(w);
    kf_log(KF_LOG_INFO, KF_WK_STAGE,
           "worker running: model %s (sha256 %.12s...) on %s, group %s, jobs %s -> results %s",
           w->model_name, w->sha256, w->backend, w->group_id, w->topic_jobs, w->topic_results);
    w->win_start_ms = w->last_stats_log_ms = kf_wk_mono_ms();
    while (!w->fatal && !atomic_load(&w->stop) && !(stop && *stop))
        kf_wk_turn(w, 1);

    /* Shutdown: take no new jobs, let running ones finish within the grace period, commit,
     * and drop the rest (their offsets stay uncommitted: the next owner redoes them). */
    if (!w->fatal) {
        w->stopping = 1;
        kf_wk_set_paused(w, 1);
        int64_t until = kf_wk_mono_ms() + w->grace_ms;
        while (!w->fatal && w->inflight.n > 0 && kf_wk_mono_ms() < until)
            kf_wk_turn(w, 0);
        kf_wk_commit(w);
    }
    w->drop_all = 1;
    for (kf_wjob_t *j = w->inflight.head; j; j = j->next)
        kf_engine_cancel(w->eng, j->seq);
    while (w->inflight.n > 0) {
        size_t before = w->inflight.n;
        kf_wk_step(w);
        if (w->inflight.n == before)
            break; /* the engine has nothing more to deliver; destroy finishes them */
    }
    if (w->fatal)
        return kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "%s", w->fatal_msg);
    kf_log(KF_LOG_INFO, KF_WK_STAGE, "worker stopped");
    return KF_OK;
}

void
kf_worker_stop(kf_worker_t *w)
{
    KF_ASSERT(w);
    atomic_store(&w->stop, 1);
}

void
kf_worker_get_stats(kf_worker_t *w, kf_worker_stats_t *out)
{
    KF_ASSERT(w && out);
    pthread_mutex_lock(&w->stats_mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->stats_mu);
}

kf_metrics_t *
kf_worker_metrics(kf_worker_t *w)
{
    KF_ASSERT(w);
    return w->metrics;
}

/* ---- construction ------------------------------------------------------------------------- */

static void
kf_wk_metrics_init(kf_worker_t *w)
{
    kf_metrics_t *m = w->metrics;
    kf_metrics_family_t *jobs = kf_metrics_counter(m, "kinfer_infer_jobs_total",
                                                   "Jobs with a committed outcome.", "status");
    for (int s = KF_WORKER_COMPLETED; s <= KF_WORKER_DROP; s++)
        w->m_jobs[s] = kf_metrics_labels(jobs, (const char *[]){kf_worker_status_name(s)});
    kf_metrics_family_t *tok =
        kf_metrics_counter(m, "kinfer_infer_tokens_total", "Tokens of committed jobs.", "kind");
    w->m_tok_prompt = kf_metrics_labels(tok, (const char *[]){"prompt"});
    w->m_tok_completion = kf_metrics_labels(tok, (const char *[]){"completion"});
    static const double buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    w->m_batch = kf_metrics_labels(kf_metrics_histogram(m, "kinfer_infer_batch_size",
                                                        "Sequences per engine step.", NULL, buckets,
                                                        sizeof(buckets) / sizeof(buckets[0])),
                                   NULL);
    w->m_queue = kf_metrics_labels(
        kf_metrics_gauge(m, "kinfer_infer_queue_depth", "Jobs waiting in the engine.", NULL), NULL);
    w->m_running = kf_metrics_labels(
        kf_metrics_gauge(m, "kinfer_infer_running", "Sequences running in the engine.", NULL),
        NULL);
    w->m_inflight = kf_metrics_labels(
        kf_metrics_gauge(m, "kinfer_infer_inflight", "Jobs submitted and not finished.", NULL),
        NULL);
    w->m_tps =
        kf_metrics_labels(kf_metrics_gauge(m, "kinfer_infer_tokens_per_second",
                                           "Generated tokens per second (last second).", NULL),
                          NULL);
    w->m_paused = kf_metrics_labels(
        kf_metrics_gauge(m, "kinfer_infer_paused", "1 while the jobs partitions are paused.", NULL),
        NULL);
    w->m_dlq = kf_metrics_labels(
        kf_metrics_counter(m, "kinfer_infer_dead_letters_total", "Poison job records.", NULL),
        NULL);
    kf_metrics_family_t *txn =
        kf_metrics_counter(m, "kinfer_infer_transactions_total", "Kafka transactions.", "outcome");
    w->m_commits = kf_metrics_labels(txn, (const char *[]){"commit"});
    w->m_aborts = kf_metrics_labels(txn, (const char *[]){"abort"});
}

static char *
kf_wk_strdup(const char *s)
{
    return strdup(s ? s : "");
}

/* The model name: configured, else the file name without directories and ".gguf". */
static char *
kf_wk_model_name(const char *configured, const char *path)
{
    if (configured && *configured)
        return strdup(configured);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = strdup(base);
    size_t n = name ? strlen(name) : 0;
    if (n > 5 && !strcmp(name + n - 5, ".gguf"))
        name[n - 5] = '\0';
    return name;
}

/* Loads the model and starts the engine; "auto" falls back to the CPU when CUDA is missing
 * or has no working device. */
static kf_err_t
kf_wk_engine(kf_worker_t *w, const kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    const char *device = kf_conf_get_str(conf, "worker.device");
    kf_err_t err = kf_worker_file_sha256(w->model_path, w->sha256, errstr, errstr_size);
    if (!err)
        err = kf_model_load(w->model_path, &w->model, errstr, errstr_size);
    if (err)
        return err;
    kf_engine_conf_t ec;
    kf_engine_conf_init(&ec);
    ec.n_threads = (int)kf_conf_get_int(conf, "worker.threads");
    ec.device = (int)kf_conf_get_int(conf, "worker.gpu");
    ec.max_batch_seqs = w->max_batch_seqs;
    ec.max_batch_tokens = (uint32_t)kf_conf_get_int(conf, "worker.max.batch.tokens");
    ec.kv_budget_bytes = (size_t)kf_conf_get_int(conf, "worker.kv.mib") << 20;
    ec.kv_f32 = kf_conf_get_bool(conf, "worker.kv.f32");
    ec.cpu_requant_q8 = kf_conf_get_bool(conf, "worker.cpu.requant.q8");
    ec.max_seq_len = (uint32_t)kf_conf_get_int(conf, "worker.ctx");
    ec.on_done = kf_wk_on_done;
    ec.opaque = w;
    w->backend = kf_worker_pick_backend(device);
    ec.backend = w->backend;
    err = kf_engine_new(w->model, &ec, &w->eng, errstr, errstr_size);
    if (err && !strcmp(device, "auto") && !strcmp(w->backend, "cuda")) {
        kf_log(KF_LOG_WARN, KF_WK_STAGE, "cuda backend unusable (%s); falling back to cpu", errstr);
        w->backend = ec.backend = "cpu";
        err = kf_engine_new(w->model, &ec, &w->eng, errstr, errstr_size);
    } else if (!err && !strcmp(device, "auto")) {
        kf_log(KF_LOG_INFO, KF_WK_STAGE, "device auto: using %s%s", w->backend,
               strcmp(w->backend, "cpu") ? "" : " (no cuda backend in this build)");
    }
    return err;
}

/* The control consumer: every partition of the control topic, from its current end. */
static kf_err_t
kf_wk_control(kf_worker_t *w, const kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *rc = NULL;
    char rderr[512], gid[300];
    kf_err_t err = kf_wk_rdconf(conf, 0, &rc, errstr, errstr_size);
    if (err)
        return err;
    /* A group id is required by librdkafka for a consumer, but this one never subscribes or
     * commits: every worker must see every cancellation. */
    snprintf(gid, sizeof(gid), "%s.control", w->group_id);
    if ((err = kf_wk_set(rc, "group.id", gid, errstr, errstr_size)) ||
        (err = kf_wk_set(rc, "enable.auto.commit", "false", errstr, errstr_size)) ||
        (err = kf_wk_set(rc, "enable.auto.offset.store", "false", errstr, errstr_size))) {
        rd_kafka_conf_destroy(rc);
        return err;
    }
    w->control = rd_kafka_new(RD_KAFKA_CONSUMER, rc, rderr, sizeof(rderr));
    if (!w->control) {
        rd_kafka_conf_destroy(rc);
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "control consumer: %s", rderr);
    }
    rd_kafka_poll_set_consumer(w->control);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(w->control, w->topic_control, NULL);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t rerr;
    /* A topic created a moment ago may not be in every broker's metadata yet: retry
     * "unknown topic" and "leader not available" for a while. */
    for (int64_t until = kf_wk_mono_ms() + KF_WK_ADMIN_TIMEOUT;;) {
        rerr = rd_kafka_metadata(w->control, 0, rkt, &md, KF_WK_ADMIN_TIMEOUT);
        rd_kafka_resp_err_t terr = !rerr && md && md->topic_cnt == 1 ? md->topics[0].err : 0;
        int transient = terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                        terr == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                        (!rerr && md && md->topic_cnt == 1 && md->topics[0].partition_cnt == 0);
        if (!transient || kf_wk_mono_ms() >= until)
            break;
        rd_kafka_metadata_destroy(md);
        md = NULL;
        usleep(200 * 1000);
    }
    rd_kafka_topic_destroy(rkt);
    if (rerr || !md || md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt <= 0) {
        rerr = rerr                       ? rerr
               : md && md->topic_cnt == 1 ? md->topics[0].err
                                          : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        if (!rerr) /* known but without partitions */
            rerr = RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
        if (md)
            rd_kafka_metadata_destroy(md);
        return kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "control topic %s: %s",
                          w->topic_control, rd_kafka_err2str(rerr));
    }
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    /* Resolving the end now (not lazily at the first fetch) means every cancellation
     * produced after this worker said ready is seen. */
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        /* Right after the topic was created its leaders may still be moving in: retry
         * "not leader" / "leader not available" / "unknown partition" for a while. */
        for (int64_t until = kf_wk_mono_ms() + KF_WK_ADMIN_TIMEOUT;;) {
            rerr = rd_kafka_query_watermark_offsets(w->control, w->topic_control, p, &lo, &hi,
                                                    KF_WK_ADMIN_TIMEOUT);
            int transient = rerr == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                            rerr == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                            rerr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                            rerr == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
            if (!transient || kf_wk_mono_ms() >= until)
                break;
            usleep(200 * 1000);
        }
        if (rerr)
            break;
        rd_kafka_topic_partition_list_add(parts, w->topic_control, p)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    if (!rerr)
        rerr = rd_kafka_assign(w->control, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (rerr)
        return kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "control topic %s: %s",
                          w->topic_control, rd_kafka_err2str(rerr));
    return KF_OK;
}

static kf_err_t
kf_wk_kafka(kf_worker_t *w, const kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    char rderr[512], host[256] = "localhost", tid[600];
    kf_err_t err;
    kf_kafka_kv_t *kv = NULL;
    char **names = NULL;
    size_t nkv = 0;
    if (!kf_wk_brokers(conf))
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "no Kafka brokers: set kafka.bootstrap.servers "
                          "(KINFER_KAFKA_BOOTSTRAP_SERVERS) or KINFER_KAFKA_BROKERS");
    kv = kf_wk_kv_list(conf, &names, &nkv);
    if (!kv || !names) {
        kf_wk_kv_free(kv, names);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    if (kf_conf_get_bool(conf, "worker.topics.create")) {
        const char *topics[] = {w->topic_jobs, w->topic_results, w->topic_control, w->topic_audit,
                                w->topic_dlq};
        err = kf_kafka_create_topics(kv, nkv, topics, 5,
                                     (int)kf_conf_get_int(conf, "worker.topics.partitions"), -1,
                                     KF_WK_ADMIN_TIMEOUT, errstr, errstr_size);
        if (err)
            goto out;
    }
    /* Audit events are best effort and outside the transactions: an idempotent producer. */
    err = kf_producer_new(kv, nkv, &w->audit_producer, errstr, errstr_size);
    if (!err)
        err = kf_audit_new(w->audit_producer, w->topic_audit, &w->audit, errstr, errstr_size);
    if (err)
        goto out;

    /* The transactional producer. A stable id per instance fences a killed predecessor and
     * aborts its open transaction at once instead of after transaction.timeout.ms. */
    rd_kafka_conf_t *rc = NULL;
    if ((err = kf_wk_rdconf(conf, 1, &rc, errstr, errstr_size)))
        goto out;
    const char *ctid = kf_conf_get_str(conf, "worker.transactional.id");
    if (ctid && *ctid) {
        snprintf(tid, sizeof(tid), "%s", ctid);
    } else {
        gethostname(host, sizeof(host) - 1);
        snprintf(tid, sizeof(tid), "%s-%s", w->group_id, host);
    }
    w->txn_id = strdup(tid);
    if ((err = kf_wk_set(rc, "transactional.id", tid, errstr, errstr_size))) {
        rd_kafka_conf_destroy(rc);
        goto out;
    }
    w->producer = rd_kafka_new(RD_KAFKA_PRODUCER, rc, rderr, sizeof(rderr));
    if (!w->producer) {
        rd_kafka_conf_destroy(rc);
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "producer: %s", rderr);
        goto out;
    }
    rd_kafka_error_t *error = rd_kafka_init_transactions(w->producer, (int)w->txn_timeout_ms);
    if (error) {
        err = kf_err_set(errstr, errstr_size,
                         rd_kafka_error_is_retriable(error) ? KF_ERR_UNAVAILABLE : KF_ERR_KAFKA,
                         "init_transactions (transactional.id %s): %s", tid,
                         rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        goto out;
    }

    /* The jobs consumer: read_committed, offsets only through transactions. */
    if ((err = kf_wk_rdconf(conf, 0, &rc, errstr, errstr_size)))
        goto out;
    if ((err = kf_wk_set(rc, "group.id", w->group_id, errstr, errstr_size)) ||
        (err = kf_wk_set(rc, "isolation.level", "read_committed", errstr, errstr_size)) ||
        (err = kf_wk_set(rc, "enable.auto.commit", "false", errstr, errstr_size)) ||
        (err = kf_wk_set(rc, "enable.auto.offset.store", "false", errstr, errstr_size))) {
        rd_kafka_conf_destroy(rc);
        goto out;
    }
    /* A new group starts at the beginning: jobs written before the first worker came up
     * must run too. */
    if (!kf_conf_has(conf, "kafka.auto.offset.reset"))
        kf_wk_set(rc, "auto.offset.reset", "earliest", errstr, errstr_size);
    rd_kafka_conf_set_rebalance_cb(rc, kf_wk_rebalance_cb);
    rd_kafka_conf_set_opaque(rc, w);
    w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, rc, rderr, sizeof(rderr));
    if (!w->consumer) {
        rd_kafka_conf_destroy(rc);
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "jobs consumer: %s", rderr);
        goto out;
    }
    rd_kafka_poll_set_consumer(w->consumer);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, w->topic_jobs, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(w->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (rerr) {
        err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "subscribe to %s: %s",
                         w->topic_jobs, rd_kafka_err2str(rerr));
        goto out;
    }
    err = kf_wk_control(w, conf, errstr, errstr_size);
    if (!err) {
        pthread_mutex_lock(&w->stats_mu);
        w->stats.ready = 1;
        pthread_mutex_unlock(&w->stats_mu);
    }
out:
    kf_wk_kv_free(kv, names);
    return err;
}

kf_err_t
kf_worker_new(const kf_conf_t *conf, kf_worker_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(conf && out);
    *out = NULL;
    kf_err_t err = KF_OK;
    kf_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&w->stats_mu, NULL);
    atomic_init(&w->stop, 0);
    const char *model = kf_conf_get_str(conf, "worker.model");
    if (!model || !*model) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "configuration key 'worker.model' (the GGUF file) is required");
        goto fail;
    }
    w->model_path = strdup(model);
    w->model_name = kf_wk_model_name(kf_conf_get_str(conf, "worker.model.name"), model);
    w->topic_jobs = kf_wk_strdup(kf_conf_get_str(conf, "topics.jobs"));
    w->topic_results = kf_wk_strdup(kf_conf_get_str(conf, "topics.results"));
    w->topic_control = kf_wk_strdup(kf_conf_get_str(conf, "topics.control"));
    w->topic_audit = kf_wk_strdup(kf_conf_get_str(conf, "topics.audit"));
    const char *dlq = kf_conf_get_str(conf, "worker.dlq.topic");
    if (dlq && *dlq) {
        w->topic_dlq = strdup(dlq);
    } else if (w->topic_jobs) {
        size_t n = strlen(w->topic_jobs) + 5;
        w->topic_dlq = malloc(n);
        if (w->topic_dlq)
            snprintf(w->topic_dlq, n, "%s.dlq", w->topic_jobs);
    }
    w->group_id = kf_wk_strdup(kf_conf_get_str(conf, "worker.group.id"));
    w->max_batch_seqs = (uint32_t)kf_conf_get_int(conf, "worker.max.batch.seqs");
    w->high = w->max_batch_seqs + (uint32_t)kf_conf_get_int(conf, "worker.max.queued");
    w->low = w->high / 2;
    w->max_wait_ms = kf_conf_get_duration_ms(conf, "worker.max.wait");
    w->commit_interval_ms = kf_conf_get_duration_ms(conf, "worker.commit.interval");
    w->commit_max = (size_t)kf_conf_get_int(conf, "worker.commit.max");
    w->txn_timeout_ms = kf_conf_get_duration_ms(conf, "worker.txn.timeout");
    w->grace_ms = kf_conf_get_duration_ms(conf, "worker.shutdown.grace");
    w->stats_interval_ms = kf_conf_get_duration_ms(conf, "worker.stats.interval");
    w->token_ids = kf_conf_get_bool(conf, "worker.token.ids");
    w->track = kf_worker_track_new();
    w->cancels = kf_worker_cancels_new((size_t)kf_conf_get_int(conf, "worker.cancel.capacity"),
                                       kf_conf_get_duration_ms(conf, "worker.cancel.ttl"));
    w->metrics = kf_metrics_new();
    if (!w->model_path || !w->model_name || !w->topic_jobs || !w->topic_results ||
        !w->topic_control || !w->topic_audit || !w->topic_dlq || !w->group_id || !w->track ||
        !w->cancels || !w->metrics) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    kf_wk_metrics_init(w);
    if ((err = kf_wk_engine(w, conf, errstr, errstr_size)))
        goto fail;
    if ((err = kf_wk_kafka(w, conf, errstr, errstr_size)))
        goto fail;
    const char *dsn = kf_conf_get_str(conf, "pg.dsn");
    if (kf_conf_get_bool(conf, "worker.pg.status") && ((dsn && *dsn) || getenv("KINFER_PG_DSN"))) {
        w->pg = kf_wpg_new(conf);
        if (!w->pg)
            kf_log(KF_LOG_WARN, KF_WK_STAGE, "PostgreSQL status updates disabled (no thread)");
        else
            kf_log(KF_LOG_INFO, KF_WK_STAGE, "requests.status = 'running' updates enabled");
    }
    kf_log(KF_LOG_INFO, KF_WK_STAGE,
           "worker ready: transactional.id %s, max %u sequences per step, pause at %u jobs",
           w->txn_id, w->max_batch_seqs, w->high);
    *out = w;
    return KF_OK;
fail:
    kf_worker_destroy(w);
    return err;
}

void
kf_worker_destroy(kf_worker_t *w)
{
    if (!w)
        return;
    /* Anything still in the engine is dropped (no result, offsets uncommitted). Leaving the
     * group first runs the revoke callback while the engine and lists are still alive. */
    w->drop_all = 1;
    if (w->consumer) {
        rd_kafka_consumer_close(w->consumer);
        rd_kafka_destroy(w->consumer);
        w->consumer = NULL;
    }
    kf_engine_destroy(w->eng);
    kf_model_destroy(w->model);
    while (w->done.head) {
        kf_wjob_t *j = w->done.head;
        kf_wlist_remove(&w->done, j);
        kf_wjob_free(j);
    }
    if (w->control) {
        rd_kafka_consumer_close(w->control);
        rd_kafka_destroy(w->control);
    }
    if (w->producer) {
        rd_kafka_flush(w->producer, 5000);
        rd_kafka_destroy(w->producer);
    }
    kf_wpg_destroy(w->pg);
    kf_audit_destroy(w->audit);
    kf_producer_destroy(w->audit_producer);
    kf_worker_track_destroy(w->track);
    kf_worker_cancels_destroy(w->cancels);
    kf_metrics_destroy(w->metrics);
    free(w->model_path);
    free(w->model_name);
    free(w->topic_jobs);
    free(w->topic_results);
    free(w->topic_control);
    free(w->topic_audit);
    free(w->topic_dlq);
    free(w->group_id);
    free(w->txn_id);
    pthread_mutex_destroy(&w->stats_mu);
    free(w);
}

kf_err_t
kf_worker_run_conf(const kf_conf_t *conf,
                   volatile sig_atomic_t *stop,
                   char *errstr,
                   size_t errstr_size)
{
    kf_worker_t *w = NULL;
    kf_err_t err = kf_worker_new(conf, &w, errstr, errstr_size);
    if (err)
        return err;
    err = kf_worker_run(w, stop, errstr, errstr_size);
    kf_worker_destroy(w);
    return err;
}
