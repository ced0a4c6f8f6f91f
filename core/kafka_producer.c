/*
 * kafka_producer.c: the idempotent producer. Every send carries a small per-message record
 * of who is waiting for it (a blocked kf_producer_send() or an async callback), so the one
 * delivery report librdkafka emits per message reaches exactly that caller.
 */
#include "kafka_int.h"
#include "kf_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kf_producer {
    rd_kafka_t *rk;
    long flush_timeout_ms;
};

/* Own options of kf_producer_new(). */
typedef struct kf_producer_opts {
    long flush_timeout_ms;
} kf_producer_opts_t;

static const kf_kafka_opt_t kf_producer_optdefs[] = {
    {"producer.flush.timeout.ms", KF_KAFKA_OPT_INT, 0, 3600000,
     offsetof(kf_producer_opts_t, flush_timeout_ms)},
    {NULL, 0, 0, 0, 0},
};

/* What a message's _private points to; `kind` tells the two waiters apart. */
enum { KF_DR_SYNC = 1, KF_DR_ASYNC = 2 };

typedef struct kf_dr_sync {
    int kind;
    atomic_int done;
    kf_err_t err;
    int32_t partition;
    int64_t offset;
    char errmsg[512];
} kf_dr_sync_t;

typedef struct kf_dr_async {
    int kind;
    kf_producer_delivery_cb cb;
    void *opaque;
} kf_dr_async_t;

static void
kf_producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)opaque;
    int *kind = rkm->_private;
    kf_err_t err = kf_kafka_err_from_rd(rkm->err);
    char errmsg[512] = "";
    if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
        /* The idempotence guarantee is broken (e.g. sequence gap): say what librdkafka saw. */
        char fatal[400];
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        snprintf(errmsg, sizeof(errmsg), "fatal producer error: %s", fatal);
    } else if (rkm->err) {
        /* Not rd_kafka_message_errstr(): on a delivery report the payload is the record's
         * value (not a NUL-terminated text), which it would return. */
        snprintf(errmsg, sizeof(errmsg), "%s: %s", rd_kafka_err2name(rkm->err),
                 rd_kafka_err2str(rkm->err));
    }
    if (!kind)
        return; /* sent by someone who asked for no report */
    if (*kind == KF_DR_SYNC) {
        kf_dr_sync_t *w = (kf_dr_sync_t *)kind;
        w->err = err;
        w->partition = rkm->partition;
        w->offset = rkm->err ? -1 : rkm->offset;
        snprintf(w->errmsg, sizeof(w->errmsg), "%s", errmsg);
        /* Release: the fields above must be visible to the waiting thread first. */
        atomic_store_explicit(&w->done, 1, memory_order_release);
        return;
    }
    kf_dr_async_t *a = (kf_dr_async_t *)kind;
    if (a->cb) {
        kf_kafka_delivery_t dr = {
            .err = err,
            .errmsg = errmsg,
            .topic = rd_kafka_topic_name(rkm->rkt),
            .partition = rkm->partition,
            .offset = rkm->err ? -1 : rkm->offset,
        };
        a->cb(&dr, a->opaque);
    }
    free(a);
}

static kf_err_t
kf_producer_create(const kf_kafka_kv_t *conf,
                   size_t conf_count,
                   int secondary,
                   kf_producer_t **out_producer,
                   char *errstr,
                   size_t errstr_size)
{
    KF_ASSERT(out_producer);
    *out_producer = NULL;
    char rderr[512];
    kf_producer_opts_t opts = {.flush_timeout_ms = 10000};
    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    kf_kafka_conf_set_logging(rdconf);
    rd_kafka_conf_set_dr_msg_cb(rdconf, kf_producer_dr_cb);
    /* Defaults first so kafka.* keys can still tune them; idempotence implies acks=all. */
    kf_err_t err = kf_kafka_conf_set(rdconf, "enable.idempotence", "true", errstr, errstr_size);
    if (!err)
        err = kf_kafka_conf_set(rdconf, "acks", "all", errstr, errstr_size);
    if (!err)
        err =
            kf_kafka_conf_apply(rdconf, KF_KAFKA_ROLE_PRODUCER, secondary, conf, conf_count,
                                secondary ? NULL : kf_producer_optdefs, &opts, errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(rdconf);
        return err;
    }
    kf_producer_t *p = calloc(1, sizeof(*p));
    if (!p) {
        rd_kafka_conf_destroy(rdconf);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    p->flush_timeout_ms = opts.flush_timeout_ms;
    /* rd_kafka_new() takes the conf only on success. */
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rdconf, rderr, sizeof(rderr));
    if (!p->rk) {
        rd_kafka_conf_destroy(rdconf);
        free(p);
        return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "producer: %s", rderr);
    }
    *out_producer = p;
    return KF_OK;
}

kf_err_t
kf_producer_new(const kf_kafka_kv_t *conf,
                size_t conf_count,
                kf_producer_t **out_producer,
                char *errstr,
                size_t errstr_size)
{
    return kf_producer_create(conf, conf_count, 0, out_producer, errstr, errstr_size);
}

kf_err_t
kf_producer_new_filtered(const kf_kafka_kv_t *conf,
                         size_t conf_count,
                         kf_producer_t **out_producer,
                         char *errstr,
                         size_t errstr_size)
{
    return kf_producer_create(conf, conf_count, 1, out_producer, errstr, errstr_size);
}

rd_kafka_t *
kf_producer_rk(kf_producer_t *producer)
{
    return producer->rk;
}

/* Queues msg with `dr_opaque` as its _private; waits (serving callbacks) while the local
 * queue is full rather than failing, which is the back-pressure callers want. */
static kf_err_t
kf_producer_enqueue(
    kf_producer_t *p, const kf_kafka_msg_t *msg, void *dr_opaque, char *errstr, size_t errstr_size)
{
    if (!msg || !msg->topic || !*msg->topic)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "message without a topic");
    for (;;) {
        rd_kafka_headers_t *hdrs = kf_kafka_headers_build(msg);
        rd_kafka_vu_t vus[8];
        size_t n = 0;
        vus[n].vtype = RD_KAFKA_VTYPE_TOPIC;
        vus[n++].u.cstr = msg->topic;
        vus[n].vtype = RD_KAFKA_VTYPE_PARTITION;
        vus[n++].u.i32 = msg->partition;
        vus[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vus[n++].u.i = RD_KAFKA_MSG_F_COPY;
        vus[n].vtype = RD_KAFKA_VTYPE_KEY;
        vus[n].u.mem.ptr = (void *)msg->key;
        vus[n++].u.mem.size = msg->key ? msg->key_len : 0;
        vus[n].vtype = RD_KAFKA_VTYPE_VALUE;
        vus[n].u.mem.ptr = (void *)msg->value;
        vus[n++].u.mem.size = msg->value ? msg->value_len : 0;
        vus[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
        vus[n++].u.ptr = dr_opaque;
        if (hdrs) {
            vus[n].vtype = RD_KAFKA_VTYPE_HEADERS;
            vus[n++].u.headers = hdrs;
        }
        rd_kafka_error_t *error = rd_kafka_produceva(p->rk, vus, n);
        if (!error)
            return KF_OK; /* librdkafka now owns hdrs */
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        if (code == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_error_destroy(error);
            rd_kafka_poll(p->rk, 100);
            continue;
        }
        kf_err_t err;
        if (code == RD_KAFKA_RESP_ERR__FATAL) {
            char fatal[400];
            rd_kafka_fatal_error(p->rk, fatal, sizeof(fatal));
            err = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "produce to %s: fatal: %s",
                             msg->topic, fatal);
        } else {
            err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(code), "produce to %s: %s",
                             msg->topic, rd_kafka_error_string(error));
        }
        rd_kafka_error_destroy(error);
        return err;
    }
}

kf_err_t
kf_producer_send(kf_producer_t *producer,
                 const kf_kafka_msg_t *msg,
                 kf_kafka_delivery_t *out_dr,
                 char *errstr,
                 size_t errstr_size)
{
    KF_ASSERT(producer);
    kf_dr_sync_t w;
    memset(&w, 0, sizeof(w));
    w.kind = KF_DR_SYNC;
    atomic_init(&w.done, 0);
    kf_err_t err = kf_producer_enqueue(producer, msg, &w, errstr, errstr_size);
    if (err)
        return err;
    /* librdkafka guarantees one report per message (at the latest at message.timeout.ms), so
     * this loop ends; another thread polling may be the one that delivers it to us. */
    while (!atomic_load_explicit(&w.done, memory_order_acquire))
        rd_kafka_poll(producer->rk, 50);
    if (out_dr) {
        out_dr->err = w.err;
        out_dr->errmsg = "";
        out_dr->topic = msg->topic;
        out_dr->partition = w.partition;
        out_dr->offset = w.offset;
    }
    if (w.err)
        return kf_err_set(errstr, errstr_size, w.err, "delivery to %s failed: %s", msg->topic,
                          w.errmsg);
    return KF_OK;
}

kf_err_t
kf_producer_send_async(kf_producer_t *producer,
                       const kf_kafka_msg_t *msg,
                       kf_producer_delivery_cb cb,
                       void *msg_opaque,
                       char *errstr,
                       size_t errstr_size)
{
    KF_ASSERT(producer);
    kf_dr_async_t *a = malloc(sizeof(*a));
    if (!a)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    a->kind = KF_DR_ASYNC;
    a->cb = cb;
    a->opaque = msg_opaque;
    kf_err_t err = kf_producer_enqueue(producer, msg, a, errstr, errstr_size);
    if (err)
        free(a); /* never queued: no report will come */
    return err;
}

int
kf_producer_poll(kf_producer_t *producer, int timeout_ms)
{
    KF_ASSERT(producer);
    return rd_kafka_poll(producer->rk, timeout_ms);
}

kf_err_t
kf_producer_flush(kf_producer_t *producer, int timeout_ms, char *errstr, size_t errstr_size)
{
    KF_ASSERT(producer);
    rd_kafka_resp_err_t rerr = rd_kafka_flush(producer->rk, timeout_ms);
    if (rerr == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return kf_err_set(errstr, errstr_size, KF_ERR_TIMEOUT,
                          "flush timed out after %d ms with %d messages outstanding", timeout_ms,
                          rd_kafka_outq_len(producer->rk));
    return KF_OK;
}

int
kf_producer_outq_len(kf_producer_t *producer)
{
    KF_ASSERT(producer);
    return rd_kafka_outq_len(producer->rk);
}

void
kf_producer_destroy(kf_producer_t *producer)
{
    if (!producer)
        return;
    char errstr[256];
    if (kf_producer_flush(producer, (int)producer->flush_timeout_ms, errstr, sizeof(errstr))) {
        kf_log(KF_LOG_ERROR, "kafka", "producer shutdown: %s; purging", errstr);
        /* Purged messages get a report with ERR__PURGE_*, so every async callback still runs
         * exactly once and its opaque is released. */
        rd_kafka_purge(producer->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(producer->rk, 1000);
        rd_kafka_poll(producer->rk, 0);
    }
    rd_kafka_destroy(producer->rk);
    free(producer);
}
