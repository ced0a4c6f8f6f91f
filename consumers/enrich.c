/*
 * enrich.c: the Kafka side of the enrichment stage: configuration, start-up (PostgreSQL,
 * topics, market follower catch-up, transactional clients, audit producer), the per-record
 * transform run inside kf_txn transactions, and audit events released only after their
 * transaction committed (an aborted batch is re-read and would otherwise audit twice).
 */
#include "enrich_int.h"

#include "kf_avro.h"
#include "kf_log.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const kf_conf_prop_t kf_enrich_conf_props[] = {
    {.name = "topics.requests",
     .type = KF_CONF_STRING,
     .def = "kinfer.requests",
     .desc = "InferenceRequest topic (input, key = request_id)."},
    {.name = "topics.market",
     .type = KF_CONF_STRING,
     .def = "kinfer.market",
     .desc = "Compacted MarketTick topic (key = symbol), read whole into memory."},
    {.name = "topics.jobs",
     .type = KF_CONF_STRING,
     .def = "kinfer.jobs",
     .desc = "InferenceJob topic (output, key = request_id)."},
    {.name = "topics.results",
     .type = KF_CONF_STRING,
     .def = "kinfer.results",
     .desc = "InferenceResult topic (failed results of requests that cannot be enriched)."},
    {.name = "topics.audit",
     .type = KF_CONF_STRING,
     .def = "kinfer.audit",
     .desc = "AuditEvent topic."},
    {.name = "enrich.group.id",
     .type = KF_CONF_STRING,
     .def = "kinfer-enrich",
     .desc = "Consumer group of the enrichers (kafka.group.id overrides it)."},
    {.name = "enrich.transactional.id",
     .type = KF_CONF_STRING,
     .def = "",
     .desc = "Transactional id of this instance; empty: kinfer-enrich-<hostname>. Must differ "
             "between instances running at the same time."},
    {.name = "enrich.batch.max",
     .type = KF_CONF_INT,
     .def = "50",
     .min = 1,
     .max = 10000,
     .desc = "Requests per Kafka transaction."},
    {.name = "enrich.batch.timeout",
     .type = KF_CONF_DURATION,
     .def = "100ms",
     .min = 0,
     .max = 60000,
     .desc = "How long a transaction gathers requests after its first one."},
    {.name = "enrich.template.name",
     .type = KF_CONF_STRING,
     .def = "default",
     .desc = "Name of the prompt templates to use (prompt_templates.name)."},
    {.name = "enrich.symbols.max",
     .type = KF_CONF_INT,
     .def = "64",
     .min = 1,
     .max = 10000,
     .desc = "Most symbols one request may name."},
    {.name = "enrich.market.catchup.timeout",
     .type = KF_CONF_DURATION,
     .def = "60s",
     .min = 1000,
     .max = 3600000,
     .desc = "How long start-up waits for the market state to reach the high watermarks."},
    {.name = "enrich.topic.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of the topics the enricher creates when they are missing."},
    {.name = NULL}};

kf_err_t
kf_enrich_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_conf_add_table(conf, "enrich", kf_enrich_conf_props, errstr, errstr_size);
    return err ? err : kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, errstr_size);
}

/* ---- kafka configuration --------------------------------------------------------------- */

/* kafka.* pairs from conf; names are stored in `names` (freed by the caller). */
typedef struct kf_enrich_kv {
    kf_kafka_kv_t kv[128];
    char *names[128];
    size_t n;
} kf_enrich_kv_t;

static void
kf_enrich_kv_free(kf_enrich_kv_t *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->names[i]);
    k->n = 0;
}

static kf_err_t
kf_enrich_kv_add(kf_enrich_kv_t *k, const char *key, const char *value)
{
    if (k->n == sizeof(k->kv) / sizeof(k->kv[0]))
        return KF_ERR_LIMIT;
    if (!(k->names[k->n] = strdup(key)))
        return KF_ERR_NOMEM;
    k->kv[k->n].key = k->names[k->n];
    k->kv[k->n++].value = value;
    return KF_OK;
}

/* Connection keys shared by every client (no group or transactional identity). */
static kf_err_t
kf_enrich_kv_base(const kf_conf_t *conf, kf_enrich_kv_t *k, char *errstr, size_t errstr_size)
{
    int have_bootstrap = 0;
    char key[256];
    for (size_t i = 0; i < kf_conf_kafka_count(conf); i++) {
        const char *name, *value;
        kf_conf_kafka_at(conf, i, &name, &value);
        if (!strcmp(name, "group.id") || !strcmp(name, "transactional.id"))
            continue;
        snprintf(key, sizeof(key), "kafka.%s", name);
        if (kf_enrich_kv_add(k, key, value))
            return kf_err_set(errstr, errstr_size, KF_ERR_LIMIT, "too many kafka.* keys");
        have_bootstrap |= !strcmp(name, "bootstrap.servers");
    }
    if (!have_bootstrap) {
        /* The dev stack exports KINFER_KAFKA_BROKERS; accept it when the key is unset. */
        const char *brokers = getenv("KINFER_KAFKA_BROKERS");
        if (!brokers || !*brokers)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "no brokers: set kafka.bootstrap.servers "
                              "(KINFER_KAFKA_BOOTSTRAP_SERVERS) or KINFER_KAFKA_BROKERS");
        if (kf_enrich_kv_add(k, "kafka.bootstrap.servers", brokers))
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    return KF_OK;
}

/* Looks up a kafka.* key set in conf (NULL when unset). */
static const char *
kf_enrich_kafka_get(const kf_conf_t *conf, const char *name)
{
    for (size_t i = 0; i < kf_conf_kafka_count(conf); i++) {
        const char *n, *v;
        kf_conf_kafka_at(conf, i, &n, &v);
        if (!strcmp(n, name))
            return v;
    }
    return NULL;
}

/* The market topic is compacted: the follower replays it from the beginning. */
static kf_err_t
kf_enrich_create_market_topic(
    const kf_enrich_kv_t *k, const char *topic, int partitions, char *errstr, size_t errstr_size)
{
    static const kf_kafka_kv_t compact[] = {{"cleanup.policy", "compact"}};
    const char *topics[] = {topic};
    return kf_kafka_create_topics_ex(k->kv, k->n, topics, 1, partitions, -1, compact, 1, 15000,
                                     errstr, errstr_size);
}

/* ---- audit ----------------------------------------------------------------------------- */

static char *
kf_enrich_strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void
kf_enrich_pending_clear(kf_enrich_t *e)
{
    for (size_t i = 0; i < e->npending; i++) {
        kf_enrich_pending_t *p = &e->pending[i];
        free(p->request_id);
        free(p->tenant_id);
        free(p->trace_id);
        free(p->model);
        free(p->message);
        free(p->task);
        free(p->tmpl);
    }
    e->npending = 0;
}

static void
kf_enrich_pending_add(kf_enrich_t *e,
                      const json_t *req,
                      const kf_enrich_outcome_t *oc,
                      double duration_ms)
{
    if (e->npending == e->cap_pending) {
        size_t cap = e->cap_pending ? e->cap_pending * 2 : 64;
        kf_enrich_pending_t *grown = realloc(e->pending, cap * sizeof(*grown));
        if (!grown) {
            kf_log(KF_LOG_ERROR, "enrich", "out of memory: audit event dropped");
            return;
        }
        e->pending = grown;
        e->cap_pending = cap;
    }
    kf_enrich_pending_t *p = &e->pending[e->npending++];
    memset(p, 0, sizeof(*p));
    p->failed = oc->failed;
    p->outcome = oc->failed ? oc->audit_outcome : KF_AUDIT_SUCCESS;
    p->duration_ms = duration_ms;
    p->request_id = kf_enrich_strdup_or_null(json_string_value(json_object_get(req, "request_id")));
    p->tenant_id = kf_enrich_strdup_or_null(json_string_value(json_object_get(req, "tenant_id")));
    p->trace_id = kf_enrich_strdup_or_null(json_string_value(json_object_get(req, "trace_id")));
    p->model = kf_enrich_strdup_or_null(json_string_value(json_object_get(req, "model")));
    p->task = kf_enrich_strdup_or_null(json_string_value(json_object_get(req, "task")));
    p->message = oc->failed ? strdup(oc->message) : NULL;
    p->tmpl = oc->tmpl[0] ? strdup(oc->tmpl) : NULL;
}

static void
kf_enrich_pending_emit(kf_enrich_t *e)
{
    for (size_t i = 0; i < e->npending; i++) {
        kf_enrich_pending_t *p = &e->pending[i];
        kf_kafka_kv_t attrs[2];
        size_t na = 0;
        if (p->task)
            attrs[na++] = (kf_kafka_kv_t){"task", p->task};
        if (p->tmpl)
            attrs[na++] = (kf_kafka_kv_t){"template", p->tmpl};
        kf_audit_event_t ev = {.action = p->failed ? "enrich.failed" : "enrich.completed",
                               .outcome = p->outcome,
                               .stage = "enrich",
                               .request_id = p->request_id,
                               .tenant_id = p->tenant_id,
                               .trace_id = p->trace_id && *p->trace_id ? p->trace_id : NULL,
                               .duration_ms = p->duration_ms,
                               .model = p->model,
                               .tokens = -1,
                               .message = p->message,
                               .attrs = attrs,
                               .attr_count = na};
        if (kf_audit_emit(e->audit, &ev))
            kf_log(KF_LOG_WARN, "enrich", "audit event for %s not queued",
                   p->request_id ? p->request_id : "?");
    }
    kf_enrich_pending_clear(e);
}

/* ---- transform ------------------------------------------------------------------------- */

static double
kf_enrich_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static kf_err_t
kf_enrich_transform(
    kf_txn_t *txn, const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    kf_enrich_t *e = opaque;
    double t0 = kf_enrich_mono_ms();
    json_t *req = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    kf_enrich_outcome_t oc;
    memset(&oc, 0, sizeof(oc));
    char kv[384];
    snprintf(kv, sizeof(kv), "topic=%s partition=%d offset=%lld", rec->topic, (int)rec->partition,
             (long long)rec->offset);

    /* Undecodable bytes can never succeed: a fatal error sends them to the dead-letter topic
     * inside this transaction, and the stage goes on. */
    if (!rec->value) {
        e->batch_dlq++;
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "request record without a value");
    }
    kf_err_t err = kf_avro_decode_json(NULL, rec->value, rec->value_len,
                                       kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST), &req, NULL,
                                       errstr, errstr_size);
    if (err) {
        if (!kf_err_is_retriable(err))
            e->batch_dlq++;
        return err;
    }
    err = kf_enrich_process(e, req, &oc, errstr, errstr_size);
    if (err)
        goto out;
    const char *rid = json_string_value(json_object_get(req, "request_id"));
    const char *tenant = json_string_value(json_object_get(req, "tenant_id"));
    err = kf_avro_encode_json(
        kf_avro_schema_get(oc.failed ? KF_AVRO_INFERENCE_RESULT : KF_AVRO_INFERENCE_JOB), oc.record,
        &buf, &len, errstr, errstr_size);
    if (err)
        goto out;
    /* The status moves before the commit: if the transaction then aborts, the request is
     * read again and the update (accepted -> enriched only) is a no-op. */
    if (!oc.failed && (err = kf_enrich_mark(e, rid, tenant, errstr, errstr_size)))
        goto out;
    kf_kafka_msg_t msg = {.topic = oc.failed ? e->topic_results : e->topic_jobs,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .key = rid,
                          .key_len = strlen(rid),
                          .value = buf,
                          .value_len = len};
    if ((err = kf_txn_produce(txn, &msg, errstr, errstr_size)))
        goto out;
    kf_enrich_pending_add(e, req, &oc, kf_enrich_mono_ms() - t0);
    if (oc.failed) {
        char kv2[512];
        snprintf(kv2, sizeof(kv2), "%s request_id=%s", kv, rid);
        kf_logkv(KF_LOG_WARN, "enrich", kv2, "request failed: %s", oc.message);
    }

out:
    if (err) {
        if (kf_err_is_retriable(err)) {
            e->batch_retriable = 1;
            kf_logkv(KF_LOG_WARN, "enrich", kv, "retrying batch: %s", errstr);
        } else if (err != KF_ERR_CANCELLED) {
            e->batch_dlq++;
        }
    }
    free(buf);
    json_decref(oc.record);
    json_decref(req);
    return err;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static char *
kf_enrich_dup_conf(const kf_conf_t *conf, const char *key)
{
    const char *v = kf_conf_get_str(conf, key);
    return strdup(v ? v : "");
}

kf_err_t
kf_enrich_new(const kf_conf_t *conf, kf_enrich_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(conf && out);
    kf_enrich_kv_t base = {0}, txkv = {0}, ptkv = {0};
    kf_err_t err = KF_OK;
    kf_enrich_t *e = calloc(1, sizeof(*e));
    if (!e)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    e->topic_requests = kf_enrich_dup_conf(conf, "topics.requests");
    e->topic_market = kf_enrich_dup_conf(conf, "topics.market");
    e->topic_jobs = kf_enrich_dup_conf(conf, "topics.jobs");
    e->topic_results = kf_enrich_dup_conf(conf, "topics.results");
    e->topic_audit = kf_enrich_dup_conf(conf, "topics.audit");
    e->template_name = kf_enrich_dup_conf(conf, "enrich.template.name");
    e->symbols_max = kf_conf_get_int(conf, "enrich.symbols.max");
    e->risk_fn = kf_enrich_risk_default;
    if (!e->topic_requests || !e->topic_market || !e->topic_jobs || !e->topic_results ||
        !e->topic_audit || !e->template_name) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }

    /* 1. PostgreSQL: at start it must answer (later outages are waited out). */
    kf_pg_opts_t pgo;
    kf_pg_opts_from_conf(conf, &pgo);
    if (!pgo.application_name)
        pgo.application_name = "kinfer-enrich";
    if ((err = kf_pg_new(&pgo, &e->pg, errstr, errstr_size)))
        goto fail;
    if ((err = kf_enrich_ctx_prepare(e, errstr, errstr_size)))
        goto fail;

    /* 2. Topics. */
    if ((err = kf_enrich_kv_base(conf, &base, errstr, errstr_size)))
        goto fail;
    int parts = (int)kf_conf_get_int(conf, "enrich.topic.partitions");
    if ((err = kf_enrich_create_market_topic(&base, e->topic_market, parts, errstr, errstr_size)))
        goto fail;
    /* The dead-letter topic too: a poison record must not depend on broker auto-creation. */
    char dlq[512];
    snprintf(dlq, sizeof(dlq), "%s.dlq", e->topic_requests);
    const char *topics[] = {e->topic_requests, e->topic_jobs, e->topic_results, e->topic_audit,
                            dlq};
    if ((err = kf_kafka_create_topics(base.kv, base.n, topics, 5, parts, -1, 20000, errstr,
                                      errstr_size)))
        goto fail;

    /* 3. Market state, caught up before the first request is read. */
    if ((err = kf_market_state_new(&e->ms, errstr, errstr_size)))
        goto fail;
    if ((err = kf_market_follower_start(
             base.kv, base.n, e->topic_market, e->ms,
             kf_conf_get_duration_ms(conf, "enrich.market.catchup.timeout"), &e->follower, errstr,
             errstr_size)))
        goto fail;

    /* 4. The transactional pair: group and transactional ids from enrich.* unless kafka.*
     * names them. */
    for (size_t i = 0; i < base.n; i++)
        if ((err = kf_enrich_kv_add(&txkv, base.kv[i].key, base.kv[i].value)))
            goto fail_nomem;
    const char *group = kf_enrich_kafka_get(conf, "group.id");
    const char *tid = kf_enrich_kafka_get(conf, "transactional.id");
    char tid_buf[300];
    if (!tid) {
        tid = kf_conf_get_str(conf, "enrich.transactional.id");
        if (!tid || !*tid) {
            char host[256] = "localhost";
            gethostname(host, sizeof(host) - 1);
            snprintf(tid_buf, sizeof(tid_buf), "kinfer-enrich-%s", host);
            tid = tid_buf;
        }
    }
    char batch_max[32], batch_to[32];
    snprintf(batch_max, sizeof(batch_max), "%lld",
             (long long)kf_conf_get_int(conf, "enrich.batch.max"));
    snprintf(batch_to, sizeof(batch_to), "%lld",
             (long long)kf_conf_get_duration_ms(conf, "enrich.batch.timeout"));
    if ((err = kf_enrich_kv_add(&txkv, "kafka.group.id",
                                group ? group : kf_conf_get_str(conf, "enrich.group.id"))) ||
        (err = kf_enrich_kv_add(&txkv, "kafka.transactional.id", tid)) ||
        (err = kf_enrich_kv_add(&txkv, "txn.topics", e->topic_requests)) ||
        (err = kf_enrich_kv_add(&txkv, "txn.stage", "enrich")) ||
        (err = kf_enrich_kv_add(&txkv, "txn.batch.max", batch_max)) ||
        (err = kf_enrich_kv_add(&txkv, "txn.batch.timeout.ms", batch_to)))
        goto fail_nomem;
    /* kf_kv_add copies keys only; values must outlive kf_txn_new, which they do (stack and
     * conf). */
    if ((err = kf_txn_new(txkv.kv, txkv.n, &e->txn, errstr, errstr_size)))
        goto fail;

    /* 5. Audit: its own idempotent producer, outside the transactions. */
    for (size_t i = 0; i < base.n; i++)
        if ((err = kf_enrich_kv_add(&ptkv, base.kv[i].key, base.kv[i].value)))
            goto fail_nomem;
    if ((err = kf_producer_new(ptkv.kv, ptkv.n, &e->audit_producer, errstr, errstr_size)))
        goto fail;
    if ((err = kf_audit_new(e->audit_producer, e->topic_audit, &e->audit, errstr, errstr_size)))
        goto fail;
    kf_log(KF_LOG_INFO, "enrich", "enricher ready: %s -> %s (transactional.id %s)",
           e->topic_requests, e->topic_jobs, tid);
    kf_enrich_kv_free(&base);
    kf_enrich_kv_free(&txkv);
    kf_enrich_kv_free(&ptkv);
    *out = e;
    return KF_OK;

fail_nomem:
    err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "configuration: out of memory");
fail:
    kf_enrich_kv_free(&base);
    kf_enrich_kv_free(&txkv);
    kf_enrich_kv_free(&ptkv);
    kf_enrich_destroy(e);
    return err;
}

void
kf_enrich_set_risk_fn(kf_enrich_t *e, kf_enrich_risk_fn fn, void *opaque)
{
    KF_ASSERT(e);
    e->risk_fn = fn;
    e->risk_opaque = opaque;
}

kf_err_t
kf_enrich_poll(
    kf_enrich_t *e, int timeout_ms, size_t *out_committed, char *errstr, size_t errstr_size)
{
    KF_ASSERT(e);
    size_t committed = 0;
    e->batch_dlq = 0;
    e->batch_retriable = 0;
    kf_enrich_pending_clear(e);
    kf_err_t err =
        kf_txn_poll(e->txn, kf_enrich_transform, e, timeout_ms, &committed, errstr, errstr_size);
    if (committed > 0) {
        /* Committed: what the batch produced is visible now, so are its audit events. */
        for (size_t i = 0; i < e->npending; i++) {
            if (e->pending[i].failed)
                e->stats.failed++;
            else
                e->stats.jobs++;
        }
        e->stats.dead_letter += e->batch_dlq;
        kf_enrich_pending_emit(e);
    } else {
        if (e->batch_retriable)
            e->stats.retries++;
        kf_enrich_pending_clear(e);
    }
    if (out_committed)
        *out_committed = committed;
    kf_producer_poll(e->audit_producer, 0);
    return err;
}

kf_err_t
kf_enrich_run(kf_enrich_t *e, char *errstr, size_t errstr_size)
{
    KF_ASSERT(e);
    while (!kf_kafka_stop && !atomic_load(&e->stop)) {
        kf_err_t err = kf_enrich_poll(e, 100, NULL, errstr, errstr_size);
        if (err == KF_ERR_CANCELLED)
            return KF_OK;
        if (err)
            return err;
    }
    return KF_OK;
}

void
kf_enrich_stop(kf_enrich_t *e)
{
    KF_ASSERT(e);
    atomic_store(&e->stop, 1);
    if (e->txn)
        kf_txn_stop(e->txn);
}

void
kf_enrich_get_stats(const kf_enrich_t *e, kf_enrich_stats_t *out)
{
    KF_ASSERT(e && out);
    *out = e->stats;
}

kf_market_state_t *
kf_enrich_market(kf_enrich_t *e)
{
    return e->ms;
}

kf_market_follower_t *
kf_enrich_follower(kf_enrich_t *e)
{
    return e->follower;
}

void
kf_enrich_destroy(kf_enrich_t *e)
{
    if (!e)
        return;
    kf_txn_destroy(e->txn);
    kf_market_follower_destroy(e->follower);
    kf_market_state_destroy(e->ms);
    kf_audit_destroy(e->audit);
    kf_producer_destroy(e->audit_producer); /* flushes queued audit events */
    kf_pg_destroy(e->pg);
    kf_enrich_pending_clear(e);
    free(e->pending);
    free(e->topic_requests);
    free(e->topic_market);
    free(e->topic_jobs);
    free(e->topic_results);
    free(e->topic_audit);
    free(e->template_name);
    free(e);
}
