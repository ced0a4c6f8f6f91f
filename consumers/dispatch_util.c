/*
 * dispatch_util.c: configuration, consumer set-up and dead-lettering shared by `kinfer
 * dispatch` and `kinfer audit` (see dispatch_int.h).
 */
#include "dispatch_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf_log.h"

/* One table per key: see kf_dq_register_topics(). */
static const kf_conf_prop_t kf_dq_topic_results[] = {
    {.name = "topics.results",
     .type = KF_CONF_STRING,
     .def = "kinfer.results",
     .desc = "Topic of InferenceResult records (key = request id)."},
    {.name = NULL}};
static const kf_conf_prop_t kf_dq_topic_audit[] = {{.name = "topics.audit",
                                                    .type = KF_CONF_STRING,
                                                    .def = "kinfer.audit",
                                                    .desc = "Topic of AuditEvent records."},
                                                   {.name = NULL}};
static const kf_conf_prop_t kf_dq_topic_retry[] = {
    {.name = "topics.callbacks.retry",
     .type = KF_CONF_STRING,
     .def = "kinfer.callbacks.retry",
     .desc = "Topic of CallbackAttempt records: webhook deliveries waiting for a retry."},
    {.name = NULL}};
static const kf_conf_prop_t kf_dq_topic_cbdlq[] = {
    {.name = "topics.callbacks.dlq",
     .type = KF_CONF_STRING,
     .def = "kinfer.callbacks.dlq",
     .desc = "Topic of CallbackAttempt records whose delivery failed for good."},
    {.name = NULL}};

kf_err_t
kf_dq_register_topics(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    const kf_conf_prop_t *tabs[] = {kf_dq_topic_results, kf_dq_topic_audit, kf_dq_topic_retry,
                                    kf_dq_topic_cbdlq};
    for (size_t i = 0; i < sizeof(tabs) / sizeof(tabs[0]); i++) {
        kf_err_t err = kf_conf_add_table(conf, "topics", tabs[i], errstr, errstr_size);
        /* Another stage of the same process owns this key already: share it. */
        if (err != KF_OK && err != KF_ERR_EXISTS)
            return err;
    }
    return KF_OK;
}

const char *
kf_dq_topic(const kf_conf_t *conf, const char *key, const char *def)
{
    if (!kf_conf_has(conf, key))
        return def;
    const char *v = kf_conf_get_str(conf, key);
    return v && *v ? v : def;
}

static int
kf_dq_kv_push(kf_dq_kv_t *kv, char *key, const char *value)
{
    kf_kafka_kv_t *nkv = realloc(kv->kv, (kv->n + 1) * sizeof(*nkv));
    char **nown = realloc(kv->owned, (kv->nowned + 1) * sizeof(*nown));
    if (nkv)
        kv->kv = nkv;
    if (nown)
        kv->owned = nown;
    if (!nkv || !nown) {
        free(key);
        return 0;
    }
    kv->owned[kv->nowned++] = key;
    kv->kv[kv->n].key = key;
    kv->kv[kv->n].value = value;
    kv->n++;
    return 1;
}

kf_err_t
kf_dq_kv_build(const kf_conf_t *conf, kf_dq_kv_t *out, char *errstr, size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    int have_bootstrap = 0;
    size_t n = kf_conf_kafka_count(conf);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        kf_conf_kafka_at(conf, i, &name, &value);
        size_t len = strlen(name) + 7;
        char *key = malloc(len);
        if (!key) {
            kf_dq_kv_free(out);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        snprintf(key, len, "kafka.%s", name);
        if (!strcmp(name, "bootstrap.servers") || !strcmp(name, "metadata.broker.list"))
            have_bootstrap = 1;
        if (!kf_dq_kv_push(out, key, value)) {
            kf_dq_kv_free(out);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
    }
    /* The dev stack exports KINFER_KAFKA_BROKERS; accept it when nothing else names brokers. */
    const char *brokers = getenv("KINFER_KAFKA_BROKERS");
    if (!have_bootstrap && brokers && *brokers) {
        char *key = strdup("kafka.bootstrap.servers");
        if (!key || !kf_dq_kv_push(out, key, brokers)) {
            kf_dq_kv_free(out);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        have_bootstrap = 1;
    }
    if (!have_bootstrap) {
        kf_dq_kv_free(out);
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "no Kafka brokers: set kafka.bootstrap.servers "
                          "(KINFER_KAFKA_BOOTSTRAP_SERVERS) or KINFER_KAFKA_BROKERS");
    }
    return KF_OK;
}

void
kf_dq_kv_free(kf_dq_kv_t *kv)
{
    if (!kv)
        return;
    for (size_t i = 0; i < kv->nowned; i++)
        free(kv->owned[i]);
    free(kv->owned);
    free(kv->kv);
    memset(kv, 0, sizeof(*kv));
}

static void
kf_dq_rd_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug. */
    kf_log_level_t lvl = level <= 3   ? KF_LOG_ERROR
                         : level == 4 ? KF_LOG_WARN
                         : level <= 6 ? KF_LOG_INFO
                                      : KF_LOG_DEBUG;
    kf_log(lvl, "rdkafka", "%s: %s", fac, buf);
}

static kf_err_t
kf_dq_rd_set(rd_kafka_conf_t *rkc, const char *k, const char *v, char *errstr, size_t errstr_size)
{
    char rerr[256];
    if (rd_kafka_conf_set(rkc, k, v, rerr, sizeof(rerr)) != RD_KAFKA_CONF_OK)
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka.%s: %s", k, rerr);
    return KF_OK;
}

kf_err_t
kf_dq_consumer_new(const kf_dq_kv_t *kv,
                   const char *group_id,
                   void (*rebalance_cb)(rd_kafka_t *,
                                        rd_kafka_resp_err_t,
                                        rd_kafka_topic_partition_list_t *,
                                        void *),
                   void *opaque,
                   rd_kafka_t **out_rk,
                   char *errstr,
                   size_t errstr_size)
{
    rd_kafka_conf_t *rkc = rd_kafka_conf_new();
    kf_err_t err = kf_dq_rd_set(rkc, "auto.offset.reset", "earliest", errstr, errstr_size);
    for (size_t i = 0; err == KF_OK && i < kv->n; i++) {
        const char *k = kv->kv[i].key + 6; /* past "kafka." */
        /* Producer-only properties are shared in the same namespace: skip those the
         * consumer rejects rather than failing (the producer will check them). */
        char rerr[256];
        rd_kafka_conf_res_t r = rd_kafka_conf_set(rkc, k, kv->kv[i].value, rerr, sizeof(rerr));
        if (r == RD_KAFKA_CONF_INVALID)
            err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka.%s: %s", k, rerr);
    }
    if (err == KF_OK)
        err = kf_dq_rd_set(rkc, "group.id", group_id, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_rd_set(rkc, "enable.auto.commit", "false", errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_rd_set(rkc, "enable.auto.offset.store", "false", errstr, errstr_size);
    if (err != KF_OK) {
        rd_kafka_conf_destroy(rkc);
        return err;
    }
    rd_kafka_conf_set_log_cb(rkc, kf_dq_rd_log);
    if (rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(rkc, rebalance_cb);
    rd_kafka_conf_set_opaque(rkc, opaque);
    char rerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rkc, rerr, sizeof(rerr));
    if (!rk) {
        rd_kafka_conf_destroy(rkc);
        return kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "cannot create consumer: %s", rerr);
    }
    /* Route the main queue to the consumer queue so one poll serves everything. */
    rd_kafka_poll_set_consumer(rk);
    *out_rk = rk;
    return KF_OK;
}

kf_err_t
kf_dq_subscribe(
    rd_kafka_t *rk, const char *const *topics, size_t count, char *errstr, size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)count);
    for (size_t i = 0; i < count; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (rerr)
        return kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "subscribe: %s",
                          rd_kafka_err2str(rerr));
    return KF_OK;
}

kf_err_t
kf_dq_dead_letter(kf_producer_t *producer,
                  const char *dlq_topic,
                  const rd_kafka_message_t *rkm,
                  const char *stage,
                  kf_err_t err,
                  const char *why,
                  char *errstr,
                  size_t errstr_size)
{
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)rkm->partition);
    snprintf(off, sizeof(off), "%lld", (long long)rkm->offset);
    const char *code = kf_err_str(err);
    kf_kafka_header_t hdrs[] = {
        {"kf.error", why, strlen(why)},
        {"kf.error.code", code, strlen(code)},
        {"kf.original.topic", topic, strlen(topic)},
        {"kf.original.partition", part, strlen(part)},
        {"kf.original.offset", off, strlen(off)},
        {"kf.stage", stage, strlen(stage)},
    };
    kf_kafka_msg_t msg = {
        .topic = dlq_topic,
        .partition = KF_KAFKA_PARTITION_ANY,
        .key = rkm->key,
        .key_len = rkm->key_len,
        .value = rkm->payload,
        .value_len = rkm->len,
        .headers = hdrs,
        .header_count = sizeof(hdrs) / sizeof(hdrs[0]),
    };
    return kf_producer_send(producer, &msg, NULL, errstr, errstr_size);
}

int64_t
kf_dq_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
kf_dq_iso8601(int64_t epoch_ms, char out[32])
{
    time_t secs = (time_t)(epoch_ms / 1000);
    int ms = (int)(epoch_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Formatted into a roomy buffer: the compiler cannot know tm's fields are in range. */
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    size_t n = strlen(tmp);
    if (n > 31)
        n = 31;
    memcpy(out, tmp, n);
    out[n] = '\0';
}
