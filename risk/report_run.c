/*
 * report_run.c: `kinfer report run` as a library function (kf_report_run) and the stored
 * result loader behind `kinfer report get` (kf_report_get).
 *
 * The batch talks to the pipeline only through Kafka, like any producer of requests: it
 * writes risk_report InferenceRequests straight to the requests topic (the enricher computes
 * the metrics into the prompt, a worker writes the narrative) and reads the InferenceResults
 * back from the results topic. The metrics in the files are computed here, with the same
 * function, inputs and as-of date the enricher's hook uses (kf_risk_db_load +
 * kf_risk_compute), because the charts need the daily P&L series that the prompt does not
 * carry; point-in-time data makes both computations identical.
 *
 * Collecting results: the consumer is assign()ed (no group: nothing to commit, nothing to
 * rebalance, and two batches never steal each other's records) to every partition of the
 * results topic at the high watermarks read BEFORE the first request is produced, with
 * isolation.level=read_committed, so every result of this batch is seen exactly once and only
 * after the worker's transaction committed. Records of other requests are skipped.
 */
#include "report_int.h"

#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_json.h"
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_pg.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- configuration ---------------------------------------------------------------------- */

const kf_conf_prop_t kf_report_conf_props[] = {
    {.name = "report.model",
     .type = KF_CONF_STRING,
     .def = "kinfer-demo-risk",
     .desc = "Model name put on every risk_report request."},
    {.name = "report.tenant",
     .type = KF_CONF_STRING,
     .desc = "Tenant of the requests; unset: each portfolio's own tenant (portfolios.tenant_id)."},
    {.name = "report.seed",
     .type = KF_CONF_INT,
     .def = "42",
     .min = 0,
     .max = 9.0e15,
     .desc = "Sampling seed of every request (reproducible narratives)."},
    {.name = "report.temperature",
     .type = KF_CONF_DOUBLE,
     .def = "0",
     .min = 0,
     .max = 10,
     .desc = "Sampling temperature; 0 is greedy decoding."},
    {.name = "report.top.p",
     .type = KF_CONF_DOUBLE,
     .def = "1",
     .min = 0.000001,
     .max = 1,
     .desc = "Nucleus sampling mass; 1 disables."},
    {.name = "report.top.k",
     .type = KF_CONF_INT,
     .def = "0",
     .min = 0,
     .max = 1000000,
     .desc = "Keep the k most likely tokens; 0 disables."},
    {.name = "report.max.tokens",
     .type = KF_CONF_INT,
     .def = "256",
     .min = 1,
     .max = 32768,
     .desc = "Longest narrative in tokens."},
    {.name = "report.confidence",
     .type = KF_CONF_DOUBLE,
     .def = "0.99",
     .min = 0.5,
     .max = 0.9999,
     .desc = "Headline VaR/ES confidence (request risk.confidence)."},
    {.name = "report.horizon.days",
     .type = KF_CONF_INT,
     .def = "1",
     .min = 1,
     .max = 250,
     .desc = "Headline VaR/ES horizon in trading days (request risk.horizon_days)."},
    {.name = "report.prompt",
     .type = KF_CONF_STRING,
     .desc = "Extra instruction appended by the risk_report template ({{prompt}}); unset: none."},
    {.name = "report.priority",
     .type = KF_CONF_INT,
     .def = "-1",
     .min = -1000,
     .max = 1000,
     .desc = "Scheduling priority of the requests (batch work is negative)."},
    {.name = "report.timeout",
     .type = KF_CONF_DURATION,
     .def = "10m",
     .min = 1000,
     .max = 86400000,
     .desc = "How long to wait for all results after the last request was sent."},
    {.name = "report.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1024,
     .desc = "Partitions of the requests/results topics when this command creates them."},
    {.name = NULL}};

static const kf_conf_prop_t kf_report_topic_requests[] = {
    {.name = "topics.requests",
     .type = KF_CONF_STRING,
     .def = "kinfer.requests",
     .desc = "Topic of InferenceRequest records."},
    {.name = NULL}};
static const kf_conf_prop_t kf_report_topic_results[] = {
    {.name = "topics.results",
     .type = KF_CONF_STRING,
     .def = "kinfer.results",
     .desc = "Topic of InferenceResult records."},
    {.name = NULL}};

kf_err_t
kf_report_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_conf_add_table(conf, "report", kf_report_conf_props, errstr, errstr_size);
    /* Shared keys are registered only when no other stage's table has them (kinfer run style). */
    if (!err && !kf_conf_has(conf, "topics.requests"))
        err = kf_conf_add_table(conf, "topics", kf_report_topic_requests, errstr, errstr_size);
    if (!err && !kf_conf_has(conf, "topics.results"))
        err = kf_conf_add_table(conf, "topics", kf_report_topic_results, errstr, errstr_size);
    if (!err && !kf_conf_has(conf, "pg.dsn"))
        err = kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, errstr_size);
    return err;
}

/* ---- per-portfolio state ---------------------------------------------------------------- */

typedef enum { KF_RI_FAILED, KF_RI_PENDING, KF_RI_DONE } kf_ri_state_t;

typedef struct kf_report_item {
    char *portfolio_id, *tenant_id;
    kf_risk_report_t *rep;
    char request_id[37];
    kf_ri_state_t state;
    int failed;     /* counted in ctx->failed */
    json_t *result; /* InferenceResult JSON once collected */
} kf_report_item_t;

typedef struct kf_report_ctx {
    const kf_conf_t *conf;
    const kf_report_batch_t *batch;
    int32_t as_of;
    kf_pg_t *pg;
    kf_report_item_t *items;
    size_t n;
    kf_report_outcome_t *outcomes;
    size_t submitted, done, failed;
} kf_report_ctx_t;

static void
kf_report_progress_emit(kf_report_ctx_t *ctx, const char *pid, const char *what)
{
    if (!ctx->batch->progress)
        return;
    kf_report_progress_t p = {.total = ctx->n,
                              .submitted = ctx->submitted,
                              .done = ctx->done,
                              .failed = ctx->failed,
                              .portfolio_id = pid,
                              .what = what};
    ctx->batch->progress(&p, ctx->batch->progress_opaque);
}

/* Marks item i failed with a reason (once). */
static void kf_report_fail(kf_report_ctx_t *ctx, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
kf_report_fail(kf_report_ctx_t *ctx, size_t i, const char *fmt, ...)
{
    kf_report_outcome_t *o = &ctx->outcomes[i];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof(o->error), fmt, ap);
    va_end(ap);
    o->ok = 0;
    ctx->items[i].state = KF_RI_FAILED;
    if (!ctx->items[i].failed) {
        ctx->items[i].failed = 1;
        ctx->failed++;
    }
    char what[600];
    snprintf(what, sizeof(what), "failed: %s", o->error);
    kf_report_progress_emit(ctx, ctx->items[i].portfolio_id, what);
}

/* ---- portfolios and metrics ------------------------------------------------------------- */

static const char kf_report_sql_all[] =
    "SELECT portfolio_id, tenant_id FROM portfolios ORDER BY portfolio_id";
static const char kf_report_sql_one[] = "SELECT tenant_id FROM portfolios WHERE portfolio_id = $1";

static kf_err_t
kf_report_load_items(kf_report_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    const kf_report_batch_t *b = ctx->batch;
    kf_pg_result_t *res = NULL;
    kf_err_t err;
    if (b->all) {
        if ((err = kf_pg_exec_prepared(ctx->pg, "report_portfolios", NULL, 0, &res, errstr,
                                       errstr_size)))
            return err;
        ctx->n = (size_t)kf_pg_result_ntuples(res);
    } else {
        ctx->n = b->nportfolios;
    }
    if (ctx->n == 0) {
        kf_pg_result_destroy(res);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "no portfolio to report on");
    }
    ctx->items = calloc(ctx->n, sizeof(*ctx->items));
    ctx->outcomes = calloc(ctx->n, sizeof(*ctx->outcomes));
    if (!ctx->items || !ctx->outcomes) {
        kf_pg_result_destroy(res);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < ctx->n; i++) {
        kf_report_item_t *it = &ctx->items[i];
        it->state = KF_RI_PENDING;
        it->portfolio_id = strdup(b->all ? kf_pg_result_value(res, (int)i, 0) : b->portfolios[i]);
        if (b->all)
            it->tenant_id = strdup(kf_pg_result_value(res, (int)i, 1));
        if (!it->portfolio_id || (b->all && !it->tenant_id)) {
            kf_pg_result_destroy(res);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        snprintf(ctx->outcomes[i].portfolio_id, sizeof(ctx->outcomes[i].portfolio_id), "%s",
                 it->portfolio_id);
    }
    kf_pg_result_destroy(res);
    return KF_OK;
}

/* Tenant and metrics of every portfolio; a portfolio that cannot be computed fails alone. */
static kf_err_t
kf_report_compute_all(kf_report_ctx_t *ctx, char *errstr, size_t errstr_size)
{
    const char *tenant = kf_conf_get_str(ctx->conf, "report.tenant");
    for (size_t i = 0; i < ctx->n; i++) {
        kf_report_item_t *it = &ctx->items[i];
        char why[512] = "";
        if (!it->tenant_id) {
            kf_pg_result_t *res = NULL;
            kf_err_t err =
                kf_pg_exec_prepared(ctx->pg, "report_portfolio", (const char *[]){it->portfolio_id},
                                    1, &res, why, sizeof(why));
            if (err && kf_err_is_retriable(err)) {
                kf_pg_result_destroy(res);
                return kf_err_set(errstr, errstr_size, err, "%s", why);
            }
            if (!err && kf_pg_result_ntuples(res) == 0) {
                kf_pg_result_destroy(res);
                kf_report_fail(ctx, i, "unknown portfolio '%s'", it->portfolio_id);
                continue;
            }
            if (!err)
                it->tenant_id = strdup(kf_pg_result_value(res, 0, 0));
            kf_pg_result_destroy(res);
            if (err || !it->tenant_id) {
                kf_report_fail(ctx, i, "%s", err ? why : "out of memory");
                continue;
            }
        }
        if (tenant && *tenant) {
            free(it->tenant_id);
            it->tenant_id = strdup(tenant);
            if (!it->tenant_id)
                return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        /* The enricher's hook runs exactly this (window 0 = 500, default options). */
        kf_risk_input_t *in = NULL;
        kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
        opts.as_of = ctx->as_of;
        kf_err_t err =
            kf_risk_db_load(ctx->pg, it->portfolio_id, ctx->as_of, 0, &in, why, sizeof(why));
        if (!err)
            err = kf_risk_compute(in, &opts, &it->rep, why, sizeof(why));
        kf_risk_input_destroy(in);
        if (err && kf_err_is_retriable(err))
            return kf_err_set(errstr, errstr_size, err, "%s", why);
        if (err)
            kf_report_fail(ctx, i, "metrics: %s", why);
    }
    return KF_OK;
}

/* ---- Kafka ------------------------------------------------------------------------------ */

/* The kafka.* keys of conf as the kv array the core constructors take ("kafka." prefix
 * kept), plus the dev stack's KINFER_KAFKA_BROKERS as bootstrap when none is configured. */
typedef struct kf_report_kafka {
    kf_kafka_kv_t *kv;
    char **names;
    size_t n;
    char bootstrap[512];
} kf_report_kafka_t;

static void
kf_report_kafka_free(kf_report_kafka_t *k)
{
    for (size_t i = 0; k->names && i < k->n; i++)
        free(k->names[i]);
    free(k->names);
    free(k->kv);
    memset(k, 0, sizeof(*k));
}

static kf_err_t
kf_report_kafka_init(const kf_conf_t *conf, kf_report_kafka_t *k, char *errstr, size_t errstr_size)
{
    memset(k, 0, sizeof(*k));
    size_t n = kf_conf_kafka_count(conf);
    k->kv = calloc(n + 1, sizeof(*k->kv));
    k->names = calloc(n + 1, sizeof(*k->names));
    if (!k->kv || !k->names)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    int have_bootstrap = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        kf_conf_kafka_at(conf, i, &name, &value);
        size_t len = strlen(name) + sizeof("kafka.");
        if (!(k->names[i] = malloc(len)))
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        snprintf(k->names[i], len, "kafka.%s", name);
        k->kv[i] = (kf_kafka_kv_t){k->names[i], value};
        k->n++;
        have_bootstrap |= !strcmp(name, "bootstrap.servers");
    }
    const char *env = getenv("KINFER_KAFKA_BROKERS");
    if (!have_bootstrap && env && *env) {
        snprintf(k->bootstrap, sizeof(k->bootstrap), "%s", env);
        k->kv[k->n++] = (kf_kafka_kv_t){"kafka.bootstrap.servers", k->bootstrap};
        have_bootstrap = 1;
    }
    if (!have_bootstrap)
        return kf_err_set(
            errstr, errstr_size, KF_ERR_CONFIG,
            "no Kafka brokers: set kafka.bootstrap.servers (or KINFER_KAFKA_BROKERS)");
    return KF_OK;
}

/* Creates the assigned read_committed consumer positioned at the current end of `topic`. */
static kf_err_t
kf_report_collector_new(const kf_kafka_kv_t *kv,
                        size_t nkv,
                        const char *topic,
                        rd_kafka_t **out_rk,
                        char *errstr,
                        size_t errstr_size)
{
    char rderr[512];
    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    for (size_t i = 0; i < nkv; i++) {
        const char *k = kv[i].key + strlen("kafka.");
        /* Producer-only and group keys do not apply to an assign-only reader. */
        if (!strcmp(k, "group.id") || !strcmp(k, "transactional.id") ||
            !strcmp(k, "enable.idempotence") || !strcmp(k, "acks"))
            continue;
        if (rd_kafka_conf_set(rdconf, k, kv[i].value, rderr, sizeof(rderr)) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(rdconf);
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka.%s: %s", k, rderr);
        }
    }
    /* librdkafka's consumer wants a group id even with assign(); nothing joins or commits. */
    rd_kafka_conf_set(rdconf, "group.id", "kinfer-report-collector", NULL, 0);
    rd_kafka_conf_set(rdconf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(rdconf, "enable.auto.offset.store", "false", NULL, 0);
    rd_kafka_conf_set(rdconf, "isolation.level", "read_committed", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rdconf, rderr, sizeof(rderr));
    if (!rk) {
        rd_kafka_conf_destroy(rdconf);
        return kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "results consumer: %s", rderr);
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t rerr = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (rerr || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        kf_err_t err = kf_err_set(
            errstr, errstr_size, rerr ? kf_kafka_err_from_rd(rerr) : KF_ERR_NOT_FOUND,
            "results topic '%s': %s", topic,
            rerr                                      ? rd_kafka_err2str(rerr)
            : md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                      : "no partitions");
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return err;
    }
    int np = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    kf_err_t err = KF_OK;
    for (int p = 0; p < np && !err; p++) {
        int32_t pid = md->topics[0].partitions[p].id;
        int64_t lo = 0, hi = 0;
        rerr = rd_kafka_query_watermark_offsets(rk, topic, pid, &lo, &hi, 10000);
        if (rerr)
            err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr),
                             "results topic '%s' partition %d: %s", topic, (int)pid,
                             rd_kafka_err2str(rerr));
        else
            rd_kafka_topic_partition_list_add(parts, topic, pid)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    if (!err && (rerr = rd_kafka_assign(rk, parts)))
        err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "assign: %s",
                         rd_kafka_err2str(rerr));
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        rd_kafka_destroy(rk);
        return err;
    }
    *out_rk = rk;
    return KF_OK;
}

/* The InferenceRequest of one portfolio, as JSON for kf_avro_encode_json. */
static json_t *
kf_report_request_json(kf_report_ctx_t *ctx, kf_report_item_t *it, const char *as_of)
{
    const kf_conf_t *conf = ctx->conf;
    kf_report_sampling_t s = KF_REPORT_SAMPLING_INIT;
    s.max_tokens = (int)kf_conf_get_int(conf, "report.max.tokens");
    s.temperature = kf_conf_get_double(conf, "report.temperature");
    s.top_p = kf_conf_get_double(conf, "report.top.p");
    s.top_k = (int)kf_conf_get_int(conf, "report.top.k");
    s.has_seed = 1;
    s.seed = kf_conf_get_int(conf, "report.seed");
    double confidence = kf_conf_get_double(conf, "report.confidence");
    int64_t horizon = kf_conf_get_int(conf, "report.horizon.days");
    const char *prompt = kf_conf_get_str(conf, "report.prompt");

    char trace[33], uuid[37], conf_txt[40], hz_txt[24];
    kf_uuid4(uuid);
    size_t t = 0;
    for (const char *p = uuid; *p && t < 32; p++)
        if (*p != '-')
            trace[t++] = *p;
    trace[t] = '\0';
    kf_report_fmt_num(confidence, conf_txt, sizeof(conf_txt));
    snprintf(hz_txt, sizeof(hz_txt), "%lld", (long long)horizon);
    char *sampling_txt = kf_report_sampling_json(&s);
    if (!sampling_txt)
        return NULL;
    json_t *req = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:{s:I, s:f, s:f, s:I, s:f, s:f, s:I, s:[]}, "
        "s:{s:s, s:s, s:f, s:I}, s:s, s:{s:s, s:s, s:s, s:s, s:s}, s:I, s:I, s:s}",
        "request_id", it->request_id, "tenant_id", it->tenant_id, "model",
        kf_conf_get_str(conf, "report.model"), "task", "risk_report", "prompt",
        prompt ? json_string(prompt) : json_null(), "sampling", "max_tokens",
        (json_int_t)s.max_tokens, "temperature", s.temperature, "top_p", s.top_p, "top_k",
        (json_int_t)s.top_k, "min_p", 0.0, "repetition_penalty", 1.0, "seed", (json_int_t)s.seed,
        "stop", "risk", "portfolio_id", it->portfolio_id, "as_of", as_of, "confidence", confidence,
        "horizon_days", (json_int_t)horizon, "portfolio_id", it->portfolio_id, "metadata",
        KF_REPORT_MD_PORTFOLIO, it->portfolio_id, KF_REPORT_MD_AS_OF, as_of,
        KF_REPORT_MD_CONFIDENCE, conf_txt, KF_REPORT_MD_HORIZON, hz_txt, KF_REPORT_MD_SAMPLING,
        sampling_txt, "priority", (json_int_t)kf_conf_get_int(conf, "report.priority"),
        "accepted_at", (json_int_t)kf_now_ms(), "trace_id", trace);
    free(sampling_txt);
    return req;
}

static kf_err_t
kf_report_submit(kf_report_ctx_t *ctx,
                 kf_producer_t *producer,
                 const char *topic,
                 char *errstr,
                 size_t errstr_size)
{
    char as_of[11];
    kf_risk_date_format(ctx->as_of, as_of);
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST);
    for (size_t i = 0; i < ctx->n; i++) {
        kf_report_item_t *it = &ctx->items[i];
        if (it->state != KF_RI_PENDING)
            continue;
        if (kf_uuid4(it->request_id))
            return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "no random bytes for ids");
        snprintf(ctx->outcomes[i].request_id, sizeof(ctx->outcomes[i].request_id), "%s",
                 it->request_id);
        json_t *req = kf_report_request_json(ctx, it, as_of);
        unsigned char *buf = NULL;
        size_t len = 0;
        char why[512] = "out of memory";
        kf_err_t err =
            req ? kf_avro_encode_json(schema, req, &buf, &len, why, sizeof(why)) : KF_ERR_NOMEM;
        json_decref(req);
        if (!err) {
            kf_kafka_msg_t msg = {.topic = topic,
                                  .partition = KF_KAFKA_PARTITION_ANY,
                                  .key = it->request_id,
                                  .key_len = strlen(it->request_id),
                                  .value = buf,
                                  .value_len = len};
            err = kf_producer_send(producer, &msg, NULL, why, sizeof(why));
        }
        free(buf);
        if (err) {
            /* A broker that is down fails the whole batch; anything else this request. */
            if (kf_err_is_retriable(err))
                return kf_err_set(errstr, errstr_size, err, "producing to '%s': %s", topic, why);
            kf_report_fail(ctx, i, "request not sent: %s", why);
            continue;
        }
        ctx->submitted++;
        char kvs[256];
        snprintf(kvs, sizeof(kvs), "request_id=%s", it->request_id);
        kf_logkv(KF_LOG_DEBUG, "report", kvs, "risk_report request submitted");
        kf_report_progress_emit(ctx, it->portfolio_id, "submitted");
    }
    return KF_OK;
}

/* Decodes one results record; returns the item index it answers, or -1 (someone else's). */
static long
kf_report_match(kf_report_ctx_t *ctx, const rd_kafka_message_t *rkm, json_t **out_json)
{
    *out_json = NULL;
    if (!rkm->payload || !rkm->key || rkm->key_len != 36)
        return -1;
    long idx = -1;
    for (size_t i = 0; i < ctx->n && idx < 0; i++)
        if (ctx->items[i].state == KF_RI_PENDING && ctx->items[i].request_id[0] &&
            !memcmp(ctx->items[i].request_id, rkm->key, 36))
            idx = (long)i;
    if (idx < 0)
        return -1;
    /* Only our own records are decoded: a foreign poison record is not our business. */
    char why[512];
    avro_value_t val;
    kf_err_t err =
        kf_avro_decode(NULL, rkm->payload, rkm->len, kf_avro_schema_get(KF_AVRO_INFERENCE_RESULT),
                       &val, NULL, why, sizeof(why));
    if (!err) {
        err = kf_avro_to_json(&val, out_json, why, sizeof(why));
        avro_value_decref(&val);
    }
    if (err) {
        kf_report_fail(ctx, (size_t)idx, "undecodable result at %s[%d]@%lld: %s",
                       rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, (long long)rkm->offset,
                       why);
        return -1;
    }
    const char *rid = kf_json_path(*out_json, "request_id")
                          ? json_string_value(kf_json_path(*out_json, "request_id"))
                          : NULL;
    if (!rid || strcmp(rid, ctx->items[idx].request_id)) {
        json_decref(*out_json);
        *out_json = NULL;
        return -1;
    }
    return idx;
}

static kf_err_t
kf_report_collect(kf_report_ctx_t *ctx, rd_kafka_t *rk, char *errstr, size_t errstr_size)
{
    int64_t deadline = kf_now_ms() + kf_conf_get_duration_ms(ctx->conf, "report.timeout");
    size_t waiting = ctx->submitted;
    while (waiting > 0) {
        if ((ctx->batch->stop && *ctx->batch->stop) || kf_kafka_stop)
            return kf_err_set(errstr, errstr_size, KF_ERR_CANCELLED,
                              "stopped with %zu results outstanding", waiting);
        if (kf_now_ms() >= deadline)
            return kf_err_set(errstr, errstr_size, KF_ERR_TIMEOUT,
                              "%zu results did not arrive within report.timeout", waiting);
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 200);
        if (!rkm)
            continue;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kf_log(KF_LOG_WARN, "report", "results consumer: %s", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        json_t *res = NULL;
        long idx = kf_report_match(ctx, rkm, &res);
        rd_kafka_message_destroy(rkm);
        if (idx < 0) {
            /* A decode failure of one of ours already failed it. */
            size_t pending = 0;
            for (size_t i = 0; i < ctx->n; i++)
                pending += ctx->items[i].state == KF_RI_PENDING && ctx->items[i].request_id[0];
            waiting = pending;
            continue;
        }
        kf_report_item_t *it = &ctx->items[idx];
        it->result = res;
        it->state = KF_RI_DONE;
        waiting--;
        const char *status = json_string_value(json_object_get(res, "status"));
        if (!status || strcmp(status, "completed")) {
            const char *e = json_string_value(json_object_get(res, "error"));
            kf_report_fail(ctx, (size_t)idx, "%s: %s", status ? status : "no status",
                           e ? e : "(no error text)");
        } else {
            ctx->done++;
            kf_report_progress_emit(ctx, it->portfolio_id, "completed");
        }
    }
    return KF_OK;
}

/* ---- files ------------------------------------------------------------------------------ */

static kf_err_t
kf_report_mkdirs(const char *dir, char *errstr, size_t errstr_size)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot create '%s': %s", path,
                                  strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return KF_OK;
}

/* Writes base.{json,md,html} for a built document. */
static kf_err_t
kf_report_write_all(const json_t *doc, const char *base, char *errstr, size_t errstr_size)
{
    static const kf_report_format_t fmts[3] = {KF_REPORT_JSON, KF_REPORT_MD, KF_REPORT_HTML};
    kf_err_t err = KF_OK;
    for (int f = 0; !err && f < 3; f++) {
        kf_buf_t b;
        kf_buf_init(&b, 0);
        char path[1100];
        snprintf(path, sizeof(path), "%s.%s", base, kf_report_format_ext(fmts[f]));
        err = kf_report_render(doc, fmts[f], &b, errstr, errstr_size);
        if (!err)
            err = kf_report_write_file(path, b.data, b.len, errstr, errstr_size);
        kf_buf_free(&b);
    }
    return err;
}

static void
kf_report_finish(kf_report_ctx_t *ctx)
{
    char as_of[11];
    kf_risk_date_format(ctx->as_of, as_of);
    for (size_t i = 0; i < ctx->n; i++) {
        kf_report_item_t *it = &ctx->items[i];
        kf_report_outcome_t *o = &ctx->outcomes[i];
        if (it->state != KF_RI_DONE || !it->result)
            continue;
        char why[512];
        kf_report_meta_t meta;
        json_t *doc = NULL;
        kf_err_t err = kf_report_meta_from_result(it->result, &meta, why, sizeof(why));
        if (!err)
            err = kf_report_build(it->rep, &meta, &doc, why, sizeof(why));
        kf_report_meta_free(&meta);
        /* File names keep letters, digits, '.', '-' and '_' of the portfolio id. */
        char safe[128];
        size_t k = 0;
        for (const char *p = it->portfolio_id; *p && k + 1 < sizeof(safe); p++)
            safe[k++] = (strchr("._-", *p) || (*p >= '0' && *p <= '9') ||
                         ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
                            ? *p
                            : '_';
        safe[k] = '\0';
        snprintf(o->path, sizeof(o->path), "%s/%s-%s", ctx->batch->out_dir, safe, as_of);
        if (!err)
            err = kf_report_write_all(doc, o->path, why, sizeof(why));
        if (!err) {
            o->ok = 1;
            snprintf(o->digest, sizeof(o->digest), "%s", kf_report_str(doc, "digest", ""));
        } else {
            o->path[0] = '\0';
            ctx->done--;
            kf_report_fail(ctx, i, "%s", why);
        }
        json_decref(doc);
    }
}

kf_err_t
kf_report_run(const kf_conf_t *conf,
              const kf_report_batch_t *batch,
              kf_report_outcome_t **out_outcomes,
              size_t *out_n,
              char *errstr,
              size_t errstr_size)
{
    KF_ASSERT(conf && batch && out_outcomes && out_n);
    *out_outcomes = NULL;
    *out_n = 0;
    kf_report_ctx_t ctx = {.conf = conf, .batch = batch};
    kf_producer_t *producer = NULL;
    rd_kafka_t *rk = NULL;
    kf_report_kafka_t kafka = {0};
    kf_err_t err;

    if (!batch->as_of || !batch->out_dir || (!batch->all && batch->nportfolios == 0))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "a report batch needs an as-of date, an output directory and "
                          "portfolios (or all)");
    if ((err = kf_risk_date_parse(batch->as_of, &ctx.as_of, errstr, errstr_size)))
        return err;
    if ((err = kf_report_mkdirs(batch->out_dir, errstr, errstr_size)))
        return err;

    kf_pg_opts_t pgo;
    kf_pg_opts_from_conf(conf, &pgo);
    if (!pgo.dsn || !*pgo.dsn)
        pgo.dsn = getenv("KINFER_PG_DSN");
    if (!pgo.dsn || !*pgo.dsn)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "no PostgreSQL DSN: set pg.dsn (or KINFER_PG_DSN)");
    if ((err = kf_pg_new(&pgo, &ctx.pg, errstr, errstr_size)))
        goto out;
    if ((err = kf_pg_register(ctx.pg, "report_portfolios", kf_report_sql_all, 0, KF_PG_IDEMPOTENT,
                              errstr, errstr_size)) ||
        (err = kf_pg_register(ctx.pg, "report_portfolio", kf_report_sql_one, 1, KF_PG_IDEMPOTENT,
                              errstr, errstr_size)))
        goto out;
    if ((err = kf_report_load_items(&ctx, errstr, errstr_size)))
        goto out;
    if ((err = kf_report_compute_all(&ctx, errstr, errstr_size)))
        goto out;

    const char *t_req = kf_conf_get_str(conf, "topics.requests");
    const char *t_res = kf_conf_get_str(conf, "topics.results");
    if ((err = kf_report_kafka_init(conf, &kafka, errstr, errstr_size)))
        goto out;
    const char *topics[2] = {t_req, t_res};
    if ((err = kf_kafka_create_topics(kafka.kv, kafka.n, topics, 2,
                                      (int)kf_conf_get_int(conf, "report.partitions"), -1, 15000,
                                      errstr, errstr_size)))
        goto out;
    /* The collector's start offsets are taken before anything is produced. */
    if ((err = kf_report_collector_new(kafka.kv, kafka.n, t_res, &rk, errstr, errstr_size)))
        goto out;
    if ((err = kf_producer_new(kafka.kv, kafka.n, &producer, errstr, errstr_size)))
        goto out;
    if ((err = kf_report_submit(&ctx, producer, t_req, errstr, errstr_size)))
        goto out;
    err = kf_report_collect(&ctx, rk, errstr, errstr_size);
    /* Whatever arrived is written, also after a timeout or a stop. */
    kf_report_finish(&ctx);
    for (size_t i = 0; err && i < ctx.n; i++)
        if (ctx.items[i].state == KF_RI_PENDING && !ctx.outcomes[i].error[0])
            snprintf(ctx.outcomes[i].error, sizeof(ctx.outcomes[i].error), "%s",
                     err == KF_ERR_TIMEOUT ? "no result before report.timeout"
                                           : "stopped before its result arrived");

out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    kf_producer_destroy(producer);
    kf_report_kafka_free(&kafka);
    for (size_t i = 0; i < ctx.n && ctx.items; i++) {
        free(ctx.items[i].portfolio_id);
        free(ctx.items[i].tenant_id);
        kf_risk_report_destroy(ctx.items[i].rep);
        json_decref(ctx.items[i].result);
    }
    free(ctx.items);
    kf_pg_destroy(ctx.pg);
    if (ctx.outcomes && (!err || err == KF_ERR_TIMEOUT || err == KF_ERR_CANCELLED)) {
        *out_outcomes = ctx.outcomes;
        *out_n = ctx.n;
    } else {
        free(ctx.outcomes);
    }
    return err;
}

/* ---- kinfer report get ------------------------------------------------------------------ */

static const char kf_report_sql_get[] =
    "SELECT status, result::text, request::text FROM requests WHERE request_id = $1";

kf_err_t
kf_report_get(
    kf_pg_t *pg, const char *request_id, json_t **out_doc, char *errstr, size_t errstr_size)
{
    KF_ASSERT(pg && request_id && out_doc);
    *out_doc = NULL;
    kf_pg_result_t *res = NULL;
    json_t *result = NULL, *request = NULL;
    kf_risk_input_t *in = NULL;
    kf_risk_report_t *rep = NULL;
    kf_report_meta_t meta = KF_REPORT_META_INIT;
    kf_err_t err = kf_pg_register(pg, "report_get", kf_report_sql_get, 1, KF_PG_IDEMPOTENT, errstr,
                                  errstr_size);
    if (!err)
        err = kf_pg_exec_prepared(pg, "report_get", (const char *[]){request_id}, 1, &res, errstr,
                                  errstr_size);
    if (err)
        goto out;
    if (kf_pg_result_ntuples(res) == 0) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "no request '%s'", request_id);
        goto out;
    }
    const char *status = kf_pg_result_value(res, 0, 0);
    const char *rtext = kf_pg_result_value(res, 0, 1);
    const char *qtext = kf_pg_result_value(res, 0, 2);
    if (!rtext) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                         "request '%s' has no result yet (status %s)", request_id,
                         status ? status : "unknown");
        goto out;
    }
    kf_json_limits_t lim = {.max_bytes = 64u << 20};
    if ((err = kf_json_parse_object(rtext, strlen(rtext), &lim, &result, errstr, errstr_size)))
        goto out;
    if (qtext && kf_json_parse_object(qtext, strlen(qtext), &lim, &request, NULL, 0))
        request = NULL;
    if ((err = kf_report_meta_from_result(result, &meta, errstr, errstr_size)))
        goto out;
    /* Parameters: the batch's metadata, else the request as the API stored it. */
    /* Metadata keys contain dots, so no kf_json_path here. */
    const json_t *md = json_object_get(result, "metadata");
    const char *pid = json_string_value(json_object_get(md, KF_REPORT_MD_PORTFOLIO));
    const char *as_of = json_string_value(json_object_get(md, KF_REPORT_MD_AS_OF));
    if (!pid)
        pid = kf_report_str(request, "risk.portfolio_id",
                            kf_report_str(request, "portfolio_id", NULL));
    if (!as_of)
        as_of = kf_report_str(request, "risk.as_of", NULL);
    if (!meta.confidence && json_is_number(kf_json_path(request, "risk.confidence")))
        meta.confidence = json_number_value(kf_json_path(request, "risk.confidence"));
    if (!meta.horizon_days && json_is_integer(kf_json_path(request, "risk.horizon_days")))
        meta.horizon_days = (int)json_integer_value(kf_json_path(request, "risk.horizon_days"));
    if (!pid || !as_of) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "request '%s' is not a risk report with a portfolio and an as-of date "
                         "(metadata %s / %s or request risk.*)",
                         request_id, KF_REPORT_MD_PORTFOLIO, KF_REPORT_MD_AS_OF);
        goto out;
    }
    int32_t day;
    if ((err = kf_risk_date_parse(as_of, &day, errstr, errstr_size)))
        goto out;
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    opts.as_of = day;
    if (!(err = kf_risk_db_load(pg, pid, day, 0, &in, errstr, errstr_size)))
        err = kf_risk_compute(in, &opts, &rep, errstr, errstr_size);
    if (!err)
        err = kf_report_build(rep, &meta, out_doc, errstr, errstr_size);
out:
    kf_report_meta_free(&meta);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
    json_decref(result);
    json_decref(request);
    kf_pg_result_destroy(res);
    return err;
}
