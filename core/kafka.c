/*
 * kafka.c: what the producer, consumer and transactional helper share. The stop flag and
 * its signal handlers, translation of librdkafka errors into kf_err_t, configuration (the
 * kafka.* pass-through and each object's own option table), librdkafka logs routed to
 * kf_log, record/header accessors, the dead-letter message layout and the admin helper.
 */
#include "kafka_int.h"
#include "kf_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t kf_kafka_stop = 0;

static void
kf_kafka_on_signal(int sig)
{
    (void)sig;
    kf_kafka_stop = 1;
}

kf_err_t
kf_kafka_install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kf_kafka_on_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: a stop request must not turn blocking I/O elsewhere into EINTR failures. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return KF_ERR_INTERNAL;
    return KF_OK;
}

void
kf_kafka_request_stop(void)
{
    kf_kafka_stop = 1;
}

void
kf_kafka_reset_stop(void)
{
    kf_kafka_stop = 0;
}

/* ---- errors ------------------------------------------------------------------------------ */

kf_err_t
kf_kafka_err_from_rd(int rd_err)
{
    switch ((rd_kafka_resp_err_t)rd_err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return KF_OK;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return KF_ERR_TIMEOUT;
    /* Conditions that clear up by themselves once brokers, leaders or coordinators settle. */
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR__RETRY:
    case RD_KAFKA_RESP_ERR__IN_PROGRESS:
    case RD_KAFKA_RESP_ERR__PREV_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR_FETCH_SESSION_ID_NOT_FOUND:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS:
    case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
        return KF_ERR_UNAVAILABLE;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__NOENT:
        return KF_ERR_NOT_FOUND;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return KF_ERR_LIMIT;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
        return KF_ERR_INVALID_ARG;
    case RD_KAFKA_RESP_ERR__STATE:
        return KF_ERR_STATE;
    case RD_KAFKA_RESP_ERR__DESTROY:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
        return KF_ERR_CANCELLED;
    case RD_KAFKA_RESP_ERR__NOT_IMPLEMENTED:
    case RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE:
        return KF_ERR_UNSUPPORTED;
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
        return KF_ERR_EXISTS;
    default:
        return KF_ERR_KAFKA;
    }
}

kf_err_t
kf_kafka_err_from_error(const rd_kafka_error_t *error, char *errstr, size_t errstr_size)
{
    if (!error)
        return KF_OK;
    kf_err_t err;
    /* The error object knows better than the code alone whether a retry can help. */
    if (rd_kafka_error_is_fatal(error))
        err = KF_ERR_KAFKA;
    else if (rd_kafka_error_is_retriable(error)) {
        err = kf_kafka_err_from_rd(rd_kafka_error_code(error));
        if (!kf_err_is_retriable(err))
            err = KF_ERR_UNAVAILABLE;
    } else {
        err = kf_kafka_err_from_rd(rd_kafka_error_code(error));
        if (err == KF_OK || kf_err_is_retriable(err))
            err = KF_ERR_KAFKA;
    }
    return kf_err_set(errstr, errstr_size, err, "%s: %s", rd_kafka_error_name(error),
                      rd_kafka_error_string(error));
}

/* ---- configuration ----------------------------------------------------------------------- */

/* librdkafka's own property table (name -> scope 'C', 'P' or '*'), read once from
 * rd_kafka_conf_properties_show() so the scope of every key matches the library in use. */
typedef struct kf_kafka_prop {
    char *name;
    char scope;
} kf_kafka_prop_t;

static kf_kafka_prop_t *kf_kafka_props;
static size_t kf_kafka_nprops;
static pthread_once_t kf_kafka_props_once = PTHREAD_ONCE_INIT;

static char *
kf_kafka_trim(char *s)
{
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static void
kf_kafka_props_load(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp)
        return;
    rd_kafka_conf_properties_show(fp);
    fclose(fp);
    size_t cap = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        /* Rows look like "name | C/P | range | default | importance | description". */
        char *bar1 = strchr(line, '|');
        if (!bar1)
            continue;
        char *bar2 = strchr(bar1 + 1, '|');
        if (!bar2)
            continue;
        *bar1 = '\0';
        *bar2 = '\0';
        char *name = kf_kafka_trim(line);
        char *scope = kf_kafka_trim(bar1 + 1);
        if (strlen(scope) != 1 || !strchr("CP*", scope[0]) || !*name)
            continue;
        if (kf_kafka_nprops == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            kf_kafka_prop_t *np = realloc(kf_kafka_props, ncap * sizeof(*np));
            if (!np)
                break;
            kf_kafka_props = np;
            cap = ncap;
        }
        kf_kafka_props[kf_kafka_nprops].name = strdup(name);
        kf_kafka_props[kf_kafka_nprops].scope = scope[0];
        if (kf_kafka_props[kf_kafka_nprops].name)
            kf_kafka_nprops++;
    }
    free(buf);
}

/* Scope of a librdkafka property: 'C', 'P', '*', or 0 when unknown. */
static char
kf_kafka_prop_scope(const char *name)
{
    pthread_once(&kf_kafka_props_once, kf_kafka_props_load);
    for (size_t i = 0; i < kf_kafka_nprops; i++)
        if (!strcmp(kf_kafka_props[i].name, name))
            return kf_kafka_props[i].scope;
    return 0;
}

kf_err_t
kf_kafka_conf_set(
    rd_kafka_conf_t *rdconf, const char *key, const char *value, char *errstr, size_t errstr_size)
{
    char rderr[512];
    rd_kafka_conf_res_t res = rd_kafka_conf_set(rdconf, key, value, rderr, sizeof(rderr));
    if (res == RD_KAFKA_CONF_OK)
        return KF_OK;
    return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "configuration key 'kafka.%s': %s", key,
                      rderr);
}

static kf_err_t
kf_kafka_opt_set(const kf_kafka_opt_t *opt,
                 void *obj,
                 const char *key,
                 const char *value,
                 char *errstr,
                 size_t errstr_size)
{
    char *field = (char *)obj + opt->offset;
    if (opt->type == KF_KAFKA_OPT_INT) {
        char *end = NULL;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end != '\0' || v < opt->min || v > opt->max)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "configuration key '%s': '%s' is not an integer in [%ld, %ld]", key,
                              value, opt->min, opt->max);
        memcpy(field, &v, sizeof(v));
        return KF_OK;
    }
    char *copy = strdup(value);
    if (!copy)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    char *old;
    memcpy(&old, field, sizeof(old));
    free(old);
    memcpy(field, &copy, sizeof(copy));
    return KF_OK;
}

kf_err_t
kf_kafka_conf_apply(rd_kafka_conf_t *rdconf,
                    kf_kafka_role_t role,
                    int filter,
                    const kf_kafka_kv_t *conf,
                    size_t conf_count,
                    const kf_kafka_opt_t *opts,
                    void *obj,
                    char *errstr,
                    size_t errstr_size)
{
    for (size_t i = 0; i < conf_count; i++) {
        const char *key = conf[i].key;
        const char *value = conf[i].value;
        if (!key || !value)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "configuration entry %zu has a NULL key or value", i);
        if (!strncmp(key, "kafka.", 6)) {
            const char *rdkey = key + 6;
            if (filter) {
                /* A secondary client takes only the keys meant for its kind, so a consumer's
                 * group.id does not make its dead-letter producer warn. */
                char scope = kf_kafka_prop_scope(rdkey);
                if ((role == KF_KAFKA_ROLE_PRODUCER && scope == 'C') ||
                    (role == KF_KAFKA_ROLE_CONSUMER && scope == 'P'))
                    continue;
            }
            kf_err_t err = kf_kafka_conf_set(rdconf, rdkey, value, errstr, errstr_size);
            if (err)
                return err;
            continue;
        }
        if (!opts) /* secondary clients ignore their owner's options */
            continue;
        const kf_kafka_opt_t *opt = opts;
        while (opt->name && strcmp(opt->name, key))
            opt++;
        if (!opt->name)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "unknown configuration key '%s'",
                              key);
        kf_err_t err = kf_kafka_opt_set(opt, obj, key, value, errstr, errstr_size);
        if (err)
            return err;
    }
    return KF_OK;
}

static void
kf_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0-3 errors, 4 warning, 5-6 notice/info, 7 debug. */
    kf_log_level_t lvl = level <= 3   ? KF_LOG_ERROR
                         : level == 4 ? KF_LOG_WARN
                         : level <= 6 ? KF_LOG_INFO
                                      : KF_LOG_DEBUG;
    kf_log(lvl, "rdkafka", "%s %s: %s", rd_kafka_name(rk), fac, buf);
}

static void
kf_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    /* Most of these are transient (brokers going away and coming back) and librdkafka
     * recovers on its own; only fatal ones need attention, and the loops check for them. */
    kf_log_level_t lvl = err == RD_KAFKA_RESP_ERR__FATAL ? KF_LOG_ERROR : KF_LOG_WARN;
    kf_log(lvl, "kafka", "%s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

void
kf_kafka_conf_set_logging(rd_kafka_conf_t *rdconf)
{
    rd_kafka_conf_set_log_cb(rdconf, kf_kafka_log_cb);
    rd_kafka_conf_set_error_cb(rdconf, kf_kafka_error_cb);
}

/* ---- records and headers ----------------------------------------------------------------- */

rd_kafka_headers_t *
kf_kafka_headers_build(const kf_kafka_msg_t *msg)
{
    if (!msg->header_count)
        return NULL;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(msg->header_count);
    for (size_t i = 0; i < msg->header_count; i++) {
        const kf_kafka_header_t *h = &msg->headers[i];
        rd_kafka_header_add(hdrs, h->name, -1, h->value, h->value ? (ssize_t)h->size : 0);
    }
    return hdrs;
}

void
kf_kafka_record_from_rkm(kf_kafka_record_t *rec, const rd_kafka_message_t *rkm)
{
    rd_kafka_timestamp_type_t tstype;
    rec->topic = rd_kafka_topic_name(rkm->rkt);
    rec->partition = rkm->partition;
    rec->offset = rkm->offset;
    rec->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
    rec->key = rkm->key;
    rec->key_len = rkm->key_len;
    rec->value = rkm->payload;
    rec->value_len = rkm->len;
    rec->impl = rkm;
}

static rd_kafka_headers_t *
kf_kafka_record_hdrs(const kf_kafka_record_t *rec)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (!rec || !rec->impl)
        return NULL;
    /* rd_kafka_message_headers() only parses; the headers stay owned by the message. */
    if (rd_kafka_message_headers((const rd_kafka_message_t *)rec->impl, &hdrs))
        return NULL;
    return hdrs;
}

size_t
kf_kafka_record_header_count(const kf_kafka_record_t *rec)
{
    rd_kafka_headers_t *hdrs = kf_kafka_record_hdrs(rec);
    return hdrs ? rd_kafka_header_cnt(hdrs) : 0;
}

kf_err_t
kf_kafka_record_header_at(const kf_kafka_record_t *rec,
                          size_t idx,
                          const char **out_name,
                          const void **out_value,
                          size_t *out_size)
{
    rd_kafka_headers_t *hdrs = kf_kafka_record_hdrs(rec);
    const char *name;
    const void *value;
    size_t size;
    if (!hdrs || rd_kafka_header_get_all(hdrs, idx, &name, &value, &size))
        return KF_ERR_NOT_FOUND;
    if (out_name)
        *out_name = name;
    if (out_value)
        *out_value = value;
    if (out_size)
        *out_size = size;
    return KF_OK;
}

kf_err_t
kf_kafka_record_header(const kf_kafka_record_t *rec,
                       const char *name,
                       const void **out_value,
                       size_t *out_size)
{
    rd_kafka_headers_t *hdrs = kf_kafka_record_hdrs(rec);
    const void *value;
    size_t size;
    if (!hdrs || !name || rd_kafka_header_get_last(hdrs, name, &value, &size))
        return KF_ERR_NOT_FOUND;
    if (out_value)
        *out_value = value;
    if (out_size)
        *out_size = size;
    return KF_OK;
}

/* ---- dead-letter message ----------------------------------------------------------------- */

kf_err_t
kf_kafka_dlq_init(kf_kafka_dlq_t *dlq,
                  const kf_kafka_record_t *rec,
                  const char *dlq_topic,
                  const char *stage,
                  kf_err_t cause,
                  const char *cause_text)
{
    memset(dlq, 0, sizeof(*dlq));
    if (dlq_topic && *dlq_topic)
        snprintf(dlq->topic, sizeof(dlq->topic), "%s", dlq_topic);
    else
        snprintf(dlq->topic, sizeof(dlq->topic), "%s.dlq", rec->topic);
    snprintf(dlq->partition, sizeof(dlq->partition), "%d", (int)rec->partition);
    snprintf(dlq->offset, sizeof(dlq->offset), "%lld", (long long)rec->offset);

    size_t norig = kf_kafka_record_header_count(rec);
    dlq->hdrs = calloc(norig + 6, sizeof(*dlq->hdrs));
    if (!dlq->hdrs)
        return KF_ERR_NOMEM;
    /* The original headers first, so anyone replaying the DLQ gets the record as it was. */
    size_t n = 0;
    for (size_t i = 0; i < norig; i++) {
        kf_kafka_header_t *h = &dlq->hdrs[n];
        if (kf_kafka_record_header_at(rec, i, &h->name, &h->value, &h->size) == KF_OK)
            n++;
    }
    const char *code = kf_err_str(cause);
    const char *text = cause_text && *cause_text ? cause_text : code;
    const char *st = stage ? stage : "";
    dlq->hdrs[n++] = (kf_kafka_header_t){"kf.error", text, strlen(text)};
    dlq->hdrs[n++] = (kf_kafka_header_t){"kf.error.code", code, strlen(code)};
    dlq->hdrs[n++] = (kf_kafka_header_t){"kf.original.topic", rec->topic, strlen(rec->topic)};
    dlq->hdrs[n++] =
        (kf_kafka_header_t){"kf.original.partition", dlq->partition, strlen(dlq->partition)};
    dlq->hdrs[n++] = (kf_kafka_header_t){"kf.original.offset", dlq->offset, strlen(dlq->offset)};
    dlq->hdrs[n++] = (kf_kafka_header_t){"kf.stage", st, strlen(st)};

    dlq->msg.topic = dlq->topic;
    dlq->msg.partition = KF_KAFKA_PARTITION_ANY;
    dlq->msg.key = rec->key;
    dlq->msg.key_len = rec->key_len;
    dlq->msg.value = rec->value;
    dlq->msg.value_len = rec->value_len;
    dlq->msg.headers = dlq->hdrs;
    dlq->msg.header_count = n;
    return KF_OK;
}

void
kf_kafka_dlq_clear(kf_kafka_dlq_t *dlq)
{
    free(dlq->hdrs);
    dlq->hdrs = NULL;
}

/* ---- small helpers ----------------------------------------------------------------------- */

int64_t
kf_kafka_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
kf_kafka_sleep_ms(int64_t ms, atomic_int *flag)
{
    int64_t until = kf_kafka_now_ms() + ms;
    /* Short slices so a stop request is honoured within ~20 ms. */
    while (!kf_kafka_stop && !(flag && atomic_load(flag))) {
        int64_t left = until - kf_kafka_now_ms();
        if (left <= 0)
            break;
        if (left > 20)
            left = 20;
        struct timespec ts = {0, (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

rd_kafka_topic_partition_list_t *
kf_kafka_topic_list(const char *csv)
{
    if (!csv)
        return NULL;
    char *copy = strdup(csv);
    if (!copy)
        return NULL;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        t = kf_kafka_trim(t);
        if (*t)
            rd_kafka_topic_partition_list_add(list, t, RD_KAFKA_PARTITION_UA);
    }
    free(copy);
    if (list->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(list);
        return NULL;
    }
    return list;
}

kf_err_t
kf_kafka_conf_group_id(
    rd_kafka_conf_t *rdconf, char *buf, size_t size, char *errstr, size_t errstr_size)
{
    size_t sz = size;
    if (rd_kafka_conf_get(rdconf, "group.id", buf, &sz) != RD_KAFKA_CONF_OK || !buf[0])
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                          "configuration key 'kafka.group.id' is required");
    return KF_OK;
}

kf_err_t
kf_kafka_consumer_open(rd_kafka_conf_t *rdconf,
                       rd_kafka_topic_partition_list_t *subs,
                       const char *topics,
                       const char *what,
                       rd_kafka_t **out,
                       char *errstr,
                       size_t errstr_size)
{
    char rderr[512];
    kf_err_t err = KF_OK;
    *out = rd_kafka_new(RD_KAFKA_CONSUMER, rdconf, rderr, sizeof(rderr));
    if (!*out) {
        rd_kafka_conf_destroy(rdconf);
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "%s: %s", what, rderr);
    } else {
        /* rdconf is owned by the consumer now. One queue for messages, rebalances and
         * errors, all served by the caller's poll. */
        rd_kafka_poll_set_consumer(*out);
        rd_kafka_resp_err_t rerr = rd_kafka_subscribe(*out, subs);
        if (rerr)
            err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "subscribe to %s: %s",
                             topics, rd_kafka_err2str(rerr));
    }
    rd_kafka_topic_partition_list_destroy(subs);
    return err;
}

int
kf_kafka_rebalance_cooperative(rd_kafka_t *rk)
{
    /* NULL while the consumer is closing: a rebalance served from rd_kafka_consumer_close()
     * must not dereference it. */
    const char *proto = rd_kafka_rebalance_protocol(rk);
    return proto && !strcmp(proto, "COOPERATIVE");
}

void
kf_kafka_flush_before_abort(rd_kafka_t *producer, int timeout_ms)
{
    int t = timeout_ms > 0 && timeout_ms < 10000 ? timeout_ms : 10000;
    rd_kafka_resp_err_t err = rd_kafka_flush(producer, t);
    if (err)
        kf_log(KF_LOG_WARN, "kafka", "flush before abort: %s; aborting anyway",
               rd_kafka_err2str(err));
}

/* ---- admin ------------------------------------------------------------------------------- */

/* Waits until the broker's metadata shows `topic` with a leader for every partition, for up to
 * about timeout_ms. CreateTopics answers once the controller has the topic, but the broker's
 * metadata cache follows a moment later; a consumer that subscribes in that window sees
 * "Unknown topic or partition" and is not assigned the topic's partitions until its next
 * metadata refresh (topic.metadata.refresh.interval.ms, 5 minutes by default). Best effort:
 * returns silently when the deadline passes. */
static void
kf_kafka_wait_topic_visible(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return;
    /* A monotonic deadline: each metadata request may itself take a while. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t deadline = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + timeout_ms;
    for (;;) {
        const rd_kafka_metadata_t *md = NULL;
        int ready = 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = deadline - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0)
            break;
        if (!rd_kafka_metadata(rk, 0, rkt, &md, left < 5000 ? (int)left : 5000) &&
            md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0) {
            ready = 1;
            for (int p = 0; p < md->topics[0].partition_cnt; p++)
                if (md->topics[0].partitions[p].err || md->topics[0].partitions[p].leader < 0)
                    ready = 0;
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        if (ready)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    rd_kafka_topic_destroy(rkt);
}

kf_err_t
kf_kafka_create_topics(const kf_kafka_kv_t *conf,
                       size_t conf_count,
                       const char *const *topics,
                       size_t topic_count,
                       int partitions,
                       int replication,
                       int timeout_ms,
                       char *errstr,
                       size_t errstr_size)
{
    return kf_kafka_create_topics_ex(conf, conf_count, topics, topic_count, partitions, replication,
                                     NULL, 0, timeout_ms, errstr, errstr_size);
}

kf_err_t
kf_kafka_create_topics_ex(const kf_kafka_kv_t *conf,
                          size_t conf_count,
                          const char *const *topics,
                          size_t topic_count,
                          int partitions,
                          int replication,
                          const kf_kafka_kv_t *topic_conf,
                          size_t topic_conf_count,
                          int timeout_ms,
                          char *errstr,
                          size_t errstr_size)
{
    KF_ASSERT(topics || topic_count == 0);
    kf_err_t err = KF_OK;
    char rderr[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_NewTopic_t **nts = calloc(topic_count ? topic_count : 1, sizeof(*nts));
    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    if (!nts) {
        rd_kafka_conf_destroy(rdconf);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    kf_kafka_conf_set_logging(rdconf);
    err = kf_kafka_conf_apply(rdconf, KF_KAFKA_ROLE_PRODUCER, 1, conf, conf_count, NULL, NULL,
                              errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(rdconf);
        goto out;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, rdconf, rderr, sizeof(rderr));
    if (!rk) {
        rd_kafka_conf_destroy(rdconf);
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "admin client: %s", rderr);
        goto out;
    }
    for (size_t i = 0; i < topic_count; i++) {
        nts[i] = rd_kafka_NewTopic_new(topics[i], partitions, replication, rderr, sizeof(rderr));
        if (!nts[i]) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "topic '%s': %s", topics[i],
                             rderr);
            goto out;
        }
        for (size_t c = 0; c < topic_conf_count; c++) {
            rd_kafka_resp_err_t cerr =
                rd_kafka_NewTopic_set_config(nts[i], topic_conf[c].key, topic_conf[c].value);
            if (cerr) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "topic '%s': config %s=%s: %s", topics[i], topic_conf[c].key,
                                 topic_conf[c].value, rd_kafka_err2str(cerr));
                goto out;
            }
        }
    }
    q = rd_kafka_queue_new(rk);
    aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(aopts, timeout_ms, rderr, sizeof(rderr));
    rd_kafka_AdminOptions_set_request_timeout(aopts, timeout_ms, rderr, sizeof(rderr));
    rd_kafka_CreateTopics(rk, nts, topic_count, aopts, q);
    ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_TIMEOUT, "CreateTopics timed out");
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rd_kafka_event_error(ev)),
                         "CreateTopics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    size_t nres = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
    for (size_t i = 0; i < nres; i++) {
        rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(res[i]);
        if (terr && terr != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(terr),
                             "create topic '%s': %s", rd_kafka_topic_result_name(res[i]),
                             rd_kafka_topic_result_error_string(res[i]));
            goto out;
        }
    }
    for (size_t i = 0; i < topic_count; i++)
        kf_kafka_wait_topic_visible(rk, topics[i], timeout_ms);
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (aopts)
        rd_kafka_AdminOptions_destroy(aopts);
    if (q)
        rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < topic_count; i++)
        if (nts[i])
            rd_kafka_NewTopic_destroy(nts[i]);
    free(nts);
    if (rk)
        rd_kafka_destroy(rk);
    return err;
}
