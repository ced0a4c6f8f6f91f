/*
 * kafka_txn.c: exactly-once consume-transform-produce.
 *
 * Each batch of input records becomes one Kafka transaction holding the outputs AND the
 * input offsets (rd_kafka_send_offsets_to_transaction with the group metadata), so outputs
 * become visible to read_committed readers exactly when the inputs count as consumed. When a
 * transaction has to be aborted, the consumer is rewound to the committed offsets and the
 * batch is read again; nothing of the aborted attempt is ever visible.
 *
 * Error handling follows librdkafka's transactional API contract: retriable errors retry the
 * same call, "requires abort" errors abort and rewind, fatal errors (fenced by a newer
 * instance with the same transactional.id, etc.) end this object's life.
 */
#include "kafka_int.h"
#include "kf_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_TXN_MAX_POISON 64

/* An input whose transform failed fatally after producing outputs: the next attempt sends it
 * straight to the dead-letter topic instead of transforming it again. */
typedef struct kf_txn_poison {
    char topic[256];
    int32_t partition;
    int64_t offset;
    kf_err_t err;  /* what the transform returned */
    char why[256]; /* and said */
} kf_txn_poison_t;

struct kf_txn {
    rd_kafka_t *rk; /* consumer */
    kf_producer_t *producer;
    /* own options */
    char *topics;
    char *dlq_topic;
    char *stage;
    long batch_max;
    long batch_timeout_ms;
    long txn_timeout_ms;
    long backoff_ms;
    long backoff_max_ms;
    /* state */
    char group_id[256];
    int reset_earliest;
    atomic_int stop;
    int batch_invalid;    /* a revoke happened while gathering */
    int in_txn;           /* a transaction is open */
    int record_outputs;   /* outputs produced by the current transform call */
    int failed_attempts;  /* consecutive aborted batches, for backoff */
    atomic_int dr_failed; /* an output failed delivery in this transaction */
    kf_txn_poison_t poison[KF_TXN_MAX_POISON];
    size_t npoison;
};

static const kf_kafka_opt_t kf_txn_optdefs[] = {
    {"txn.topics", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_txn, topics)},
    {"txn.dlq.topic", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_txn, dlq_topic)},
    {"txn.stage", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_txn, stage)},
    {"txn.batch.max", KF_KAFKA_OPT_INT, 1, 100000, offsetof(struct kf_txn, batch_max)},
    {"txn.batch.timeout.ms", KF_KAFKA_OPT_INT, 0, 600000,
     offsetof(struct kf_txn, batch_timeout_ms)},
    {"txn.timeout.ms", KF_KAFKA_OPT_INT, 1000, 3600000, offsetof(struct kf_txn, txn_timeout_ms)},
    {"txn.retry.backoff.ms", KF_KAFKA_OPT_INT, 1, 3600000, offsetof(struct kf_txn, backoff_ms)},
    {"txn.retry.backoff.max.ms", KF_KAFKA_OPT_INT, 1, 3600000,
     offsetof(struct kf_txn, backoff_max_ms)},
    {NULL, 0, 0, 0, 0},
};

static void
kf_txn_rebalance_cb(rd_kafka_t *rk,
                    rd_kafka_resp_err_t err,
                    rd_kafka_topic_partition_list_t *parts,
                    void *opaque)
{
    kf_txn_t *txn = opaque;
    /* NULL while the consumer is closing (a rebalance served by rd_kafka_consumer_close) */
    int coop = kf_kafka_rebalance_cooperative(rk);
    rd_kafka_error_t *error = NULL;
    kf_log(KF_LOG_INFO, "kafka", "txn consumer %s %d partitions",
           err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked", parts->cnt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
    } else {
        /* Offsets are committed only inside transactions, so there is nothing to commit
         * here; records gathered from these partitions must not be processed any more. */
        txn->batch_invalid = 1;
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (error) {
        kf_log(KF_LOG_ERROR, "kafka", "txn (un)assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
}

static void
kf_txn_dr_cb(const kf_kafka_delivery_t *dr, void *msg_opaque)
{
    kf_txn_t *txn = msg_opaque;
    if (dr->err == KF_ERR_CANCELLED) {
        /* Purged by an abort: expected, the batch is read again. */
        kf_log(KF_LOG_DEBUG, "kafka", "transactional output to %s purged by abort", dr->topic);
    } else if (dr->err) {
        /* commit_transaction() will fail too; this just records why. */
        atomic_store(&txn->dr_failed, 1);
        kf_log(KF_LOG_WARN, "kafka", "transactional output to %s failed: %s", dr->topic,
               dr->errmsg);
    }
}

static int
kf_txn_has_key(const kf_kafka_kv_t *conf, size_t conf_count, const char *key)
{
    for (size_t i = 0; i < conf_count; i++)
        if (conf[i].key && !strcmp(conf[i].key, key) && conf[i].value && *conf[i].value)
            return 1;
    return 0;
}

kf_err_t
kf_txn_new(const kf_kafka_kv_t *conf,
           size_t conf_count,
           kf_txn_t **out_txn,
           char *errstr,
           size_t errstr_size)
{
    KF_ASSERT(out_txn);
    *out_txn = NULL;
    kf_err_t err;
    rd_kafka_topic_partition_list_t *subs = NULL;
    kf_txn_t *txn = calloc(1, sizeof(*txn));
    if (!txn)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    txn->batch_max = 100;
    txn->batch_timeout_ms = 200;
    txn->txn_timeout_ms = 30000;
    txn->backoff_ms = 100;
    txn->backoff_max_ms = 5000;
    atomic_init(&txn->stop, 0);
    atomic_init(&txn->dr_failed, 0);

    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    kf_kafka_conf_set_logging(rdconf);
    rd_kafka_conf_set_rebalance_cb(rdconf, kf_txn_rebalance_cb);
    rd_kafka_conf_set_opaque(rdconf, txn);
    err = kf_kafka_conf_set(rdconf, "auto.offset.reset", "earliest", errstr, errstr_size);
    if (!err)
        err = kf_kafka_conf_apply(rdconf, KF_KAFKA_ROLE_CONSUMER, 1, conf, conf_count,
                                  kf_txn_optdefs, txn, errstr, errstr_size);
    /* Forced: only committed inputs, and offsets move only through transactions. */
    if (!err)
        err = kf_kafka_conf_set(rdconf, "isolation.level", "read_committed", errstr, errstr_size);
    if (!err)
        err = kf_kafka_conf_set(rdconf, "enable.auto.commit", "false", errstr, errstr_size);
    if (err)
        goto fail_conf;
    err = kf_kafka_conf_group_id(rdconf, txn->group_id, sizeof(txn->group_id), errstr, errstr_size);
    if (err)
        goto fail_conf;
    char reset[32];
    size_t sz = sizeof(reset);
    txn->reset_earliest =
        rd_kafka_conf_get(rdconf, "auto.offset.reset", reset, &sz) == RD_KAFKA_CONF_OK &&
        (!strcmp(reset, "earliest") || !strcmp(reset, "smallest") || !strcmp(reset, "beginning"));
    if (!kf_txn_has_key(conf, conf_count, "kafka.transactional.id")) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "configuration key 'kafka.transactional.id' is required");
        goto fail_conf;
    }
    subs = kf_kafka_topic_list(txn->topics);
    if (!subs) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "configuration key 'txn.topics' is required");
        goto fail_conf;
    }
    if (txn->backoff_max_ms < txn->backoff_ms)
        txn->backoff_max_ms = txn->backoff_ms;

    err = kf_producer_new_filtered(conf, conf_count, &txn->producer, errstr, errstr_size);
    if (err)
        goto fail_conf;
    /* Fences any earlier instance with this transactional.id and aborts its open
     * transaction, so a restarted stage never races its zombie. */
    rd_kafka_error_t *error =
        rd_kafka_init_transactions(kf_producer_rk(txn->producer), (int)txn->txn_timeout_ms);
    if (error) {
        err = kf_kafka_err_from_error(error, errstr, errstr_size);
        rd_kafka_error_destroy(error);
        goto fail_conf;
    }
    err = kf_kafka_consumer_open(rdconf, subs, txn->topics, "txn consumer", &txn->rk, errstr,
                                 errstr_size);
    rdconf = NULL;
    subs = NULL;
    if (err)
        goto fail;
    kf_log(KF_LOG_INFO, "kafka", "txn stage group %s subscribed to %s", txn->group_id, txn->topics);
    *out_txn = txn;
    return KF_OK;

fail_conf:
    if (rdconf)
        rd_kafka_conf_destroy(rdconf);
fail:
    if (subs)
        rd_kafka_topic_partition_list_destroy(subs);
    kf_txn_destroy(txn);
    return err;
}

kf_err_t
kf_txn_produce(kf_txn_t *txn, const kf_kafka_msg_t *msg, char *errstr, size_t errstr_size)
{
    KF_ASSERT(txn);
    if (!txn->in_txn)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE,
                          "kf_txn_produce outside a transaction");
    kf_err_t err =
        kf_producer_send_async(txn->producer, msg, kf_txn_dr_cb, txn, errstr, errstr_size);
    if (!err)
        txn->record_outputs++;
    return err;
}

/* Seeks every assigned partition back to its committed offset, so records of an aborted
 * transaction are read again. */
static void
kf_txn_rewind(kf_txn_t *txn)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(txn->rk, &parts) || !parts)
        return;
    if (parts->cnt > 0) {
        rd_kafka_resp_err_t rerr = rd_kafka_committed(txn->rk, parts, (int)txn->txn_timeout_ms);
        if (rerr)
            kf_log(KF_LOG_WARN, "kafka", "rewind: committed(): %s", rd_kafka_err2str(rerr));
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].offset < 0)
                parts->elems[i].offset =
                    txn->reset_earliest ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
        rd_kafka_error_t *error =
            rd_kafka_seek_partitions(txn->rk, parts, (int)txn->txn_timeout_ms);
        if (error) {
            kf_log(KF_LOG_WARN, "kafka", "rewind: seek: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].err)
                kf_log(KF_LOG_WARN, "kafka", "rewind %s [%d]: %s", parts->elems[i].topic,
                       (int)parts->elems[i].partition, rd_kafka_err2str(parts->elems[i].err));
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Aborts the open transaction and rewinds. KF_ERR_KAFKA when the producer is beyond saving. */
static kf_err_t
kf_txn_abort(kf_txn_t *txn, char *errstr, size_t errstr_size)
{
    rd_kafka_t *prk = kf_producer_rk(txn->producer);
    if (txn->in_txn)
        kf_kafka_flush_before_abort(prk, (int)txn->txn_timeout_ms);
    while (txn->in_txn) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(prk, (int)txn->txn_timeout_ms);
        if (!error) {
            txn->in_txn = 0;
            break;
        }
        kf_err_t err = kf_kafka_err_from_error(error, errstr, errstr_size);
        int retry = rd_kafka_error_is_retriable(error);
        rd_kafka_error_destroy(error);
        if (!retry) /* the producer cannot recover: the caller must recreate it */
            return err == KF_OK || kf_err_is_retriable(err) ? KF_ERR_KAFKA : err;
        kf_log(KF_LOG_WARN, "kafka", "abort_transaction: %s; retrying", errstr);
    }
    atomic_store(&txn->dr_failed, 0);
    txn->failed_attempts++;
    kf_txn_rewind(txn);
    return KF_OK;
}

/* Handles an error of a transactional call: 1 = retry the call, 0 = aborted and rewound
 * (the batch will be read again), -1 = fatal (*out_err set). */
static int
kf_txn_on_error(kf_txn_t *txn,
                rd_kafka_error_t *error,
                const char *what,
                kf_err_t *out_err,
                char *errstr,
                size_t errstr_size)
{
    char why[512];
    kf_err_t err = kf_kafka_err_from_error(error, why, sizeof(why));
    int fatal = rd_kafka_error_is_fatal(error);
    int retriable = rd_kafka_error_is_retriable(error);
    int abortable = rd_kafka_error_txn_requires_abort(error);
    rd_kafka_error_destroy(error);
    if (fatal) {
        *out_err = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "%s: %s", what, why);
        (void)err;
        return -1;
    }
    if (retriable && !abortable) {
        kf_log(KF_LOG_WARN, "kafka", "%s: %s; retrying", what, why);
        return 1;
    }
    kf_log(KF_LOG_WARN, "kafka", "%s: %s; aborting transaction", what, why);
    kf_err_t aerr = kf_txn_abort(txn, errstr, errstr_size);
    if (aerr) {
        *out_err = aerr;
        return -1;
    }
    return 0;
}

static const kf_txn_poison_t *
kf_txn_find_poison(const kf_txn_t *txn, const kf_kafka_record_t *rec)
{
    for (size_t i = 0; i < txn->npoison; i++)
        if (txn->poison[i].offset == rec->offset && txn->poison[i].partition == rec->partition &&
            !strcmp(txn->poison[i].topic, rec->topic))
            return &txn->poison[i];
    return NULL;
}

static void
kf_txn_add_poison(kf_txn_t *txn, const kf_kafka_record_t *rec, kf_err_t err, const char *why)
{
    /* Oldest entries are forgotten first; they have been dead-lettered long ago. */
    if (txn->npoison == KF_TXN_MAX_POISON) {
        memmove(&txn->poison[0], &txn->poison[1], sizeof(txn->poison[0]) * (KF_TXN_MAX_POISON - 1));
        txn->npoison--;
    }
    kf_txn_poison_t *p = &txn->poison[txn->npoison++];
    snprintf(p->topic, sizeof(p->topic), "%s", rec->topic);
    p->partition = rec->partition;
    p->offset = rec->offset;
    p->err = err;
    snprintf(p->why, sizeof(p->why), "%s", why);
}

static int64_t
kf_txn_backoff(const kf_txn_t *txn)
{
    int64_t d = txn->backoff_ms;
    for (int i = 1; i < txn->failed_attempts && d < txn->backoff_max_ms; i++)
        d *= 2;
    return d < txn->backoff_max_ms ? d : txn->backoff_max_ms;
}

/* Polls one consumer event; returns a message, or NULL (also after logging a non-fatal
 * error). *out_err is set on a fatal consumer error. */
static rd_kafka_message_t *
kf_txn_next(kf_txn_t *txn, int timeout_ms, kf_err_t *out_err, char *errstr, size_t errstr_size)
{
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(txn->rk, timeout_ms);
    if (!rkm || !rkm->err)
        return rkm;
    if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[400];
        rd_kafka_fatal_error(txn->rk, fatal, sizeof(fatal));
        *out_err = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "fatal consumer error: %s", fatal);
    } else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        kf_log(KF_LOG_WARN, "kafka", "txn consumer: %s: %s", rd_kafka_err2name(rkm->err),
               rd_kafka_message_errstr(rkm));
    }
    rd_kafka_message_destroy(rkm);
    return NULL;
}

/* Runs the transforms of one gathered batch inside the open transaction. Returns 1 when the
 * batch may be committed, 0 when it was aborted (and rewound), -1 on a fatal error. */
static int
kf_txn_transform_batch(kf_txn_t *txn,
                       rd_kafka_message_t **batch,
                       size_t n,
                       kf_txn_transform transform,
                       void *opaque,
                       kf_err_t *out_err,
                       char *errstr,
                       size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        kf_kafka_record_t rec;
        kf_kafka_record_from_rkm(&rec, batch[i]);
        char kv[384];
        snprintf(kv, sizeof(kv), "topic=%s partition=%d offset=%lld", rec.topic, (int)rec.partition,
                 (long long)rec.offset);
        char herr[512] = "";
        kf_err_t err = KF_ERR_PARSE;
        const kf_txn_poison_t *poison = kf_txn_find_poison(txn, &rec);
        int poisoned = poison != NULL;
        if (poisoned) {
            /* Dead-letter it with the reason its transform gave the first time. */
            err = poison->err;
            snprintf(herr, sizeof(herr), "%s", poison->why);
        } else {
            txn->record_outputs = 0;
            err = transform(txn, &rec, opaque, herr, sizeof(herr));
            if (err == KF_OK)
                continue;
        }
        if (err == KF_ERR_CANCELLED || kf_err_is_retriable(err)) {
            kf_logkv(KF_LOG_WARN, "kafka", kv, "transform: %s (%s); aborting batch", herr,
                     kf_err_str(err));
            *out_err = kf_txn_abort(txn, errstr, errstr_size);
            if (*out_err)
                return -1;
            if (err == KF_ERR_CANCELLED) {
                *out_err = kf_err_set(errstr, errstr_size, KF_ERR_CANCELLED, "transform cancelled");
                return -1;
            }
            return 0;
        }
        if (!poisoned && txn->record_outputs > 0) {
            /* Its partial outputs are in this transaction: abort so they never show, and
             * dead-letter the record on the next attempt. */
            kf_logkv(KF_LOG_ERROR, "kafka", kv,
                     "transform failed after producing %d outputs: %s; aborting batch",
                     txn->record_outputs, herr);
            kf_txn_add_poison(txn, &rec, err, herr);
            *out_err = kf_txn_abort(txn, errstr, errstr_size);
            txn->failed_attempts = 0; /* no backoff: the next attempt will succeed */
            return *out_err ? -1 : 0;
        }
        kf_logkv(KF_LOG_ERROR, "kafka", kv, "transform rejected record (%s): %s; dead-lettering",
                 kf_err_str(err), herr);
        kf_kafka_dlq_t dlq;
        const char *stage = txn->stage && *txn->stage ? txn->stage : txn->group_id;
        char perr[512];
        kf_err_t derr = kf_kafka_dlq_init(&dlq, &rec, txn->dlq_topic, stage, err, herr);
        if (!derr)
            derr = kf_txn_produce(txn, &dlq.msg, perr, sizeof(perr));
        kf_kafka_dlq_clear(&dlq);
        if (derr) {
            kf_logkv(KF_LOG_ERROR, "kafka", kv, "dead-letter produce failed: %s", kf_err_str(derr));
            *out_err = kf_txn_abort(txn, errstr, errstr_size);
            return *out_err ? -1 : 0;
        }
    }
    return 1;
}

kf_err_t
kf_txn_poll(kf_txn_t *txn,
            kf_txn_transform transform,
            void *opaque,
            int timeout_ms,
            size_t *out_committed,
            char *errstr,
            size_t errstr_size)
{
    KF_ASSERT(txn && transform);
    if (out_committed)
        *out_committed = 0;
    kf_err_t err = KF_OK;
    rd_kafka_t *prk = kf_producer_rk(txn->producer);
    rd_kafka_topic_partition_list_t *offsets = NULL;
    rd_kafka_consumer_group_metadata_t *cgmd = NULL;
    rd_kafka_message_t **batch = calloc((size_t)txn->batch_max, sizeof(*batch));
    size_t n = 0;
    if (!batch)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");

    /* 1. Gather: the first record may take timeout_ms, the rest share batch.timeout.ms. */
    txn->batch_invalid = 0;
    rd_kafka_message_t *rkm = kf_txn_next(txn, timeout_ms, &err, errstr, errstr_size);
    if (!rkm)
        goto out;
    batch[n++] = rkm;
    int64_t deadline = kf_kafka_now_ms() + txn->batch_timeout_ms;
    while (n < (size_t)txn->batch_max && !kf_kafka_stop && !atomic_load(&txn->stop)) {
        int64_t left = deadline - kf_kafka_now_ms();
        if (left <= 0)
            break;
        rkm = kf_txn_next(txn, (int)left, &err, errstr, errstr_size);
        if (err)
            goto out;
        if (rkm)
            batch[n++] = rkm;
    }
    if (txn->batch_invalid) {
        /* The assignment changed under us: drop the batch, read again from committed. */
        kf_txn_rewind(txn);
        goto out;
    }

    /* 2. One transaction: outputs (and dead letters), then the input offsets, then commit. */
    rd_kafka_error_t *error = rd_kafka_begin_transaction(prk);
    if (error) {
        err = kf_kafka_err_from_error(error, errstr, errstr_size);
        rd_kafka_error_destroy(error);
        if (!err)
            err = KF_ERR_KAFKA;
        goto out;
    }
    txn->in_txn = 1;
    int r = kf_txn_transform_batch(txn, batch, n, transform, opaque, &err, errstr, errstr_size);
    if (r <= 0) {
        if (r == 0 && txn->failed_attempts > 0)
            kf_kafka_sleep_ms(kf_txn_backoff(txn), &txn->stop);
        goto out;
    }

    offsets = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        const char *topic = rd_kafka_topic_name(batch[i]->rkt);
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(offsets, topic, batch[i]->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(offsets, topic, batch[i]->partition);
        if (batch[i]->offset + 1 > tp->offset)
            tp->offset = batch[i]->offset + 1; /* the next record to read */
    }
    for (;;) {
        cgmd = rd_kafka_consumer_group_metadata(txn->rk);
        error = rd_kafka_send_offsets_to_transaction(prk, offsets, cgmd, (int)txn->txn_timeout_ms);
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        cgmd = NULL;
        if (!error)
            break;
        r = kf_txn_on_error(txn, error, "send_offsets_to_transaction", &err, errstr, errstr_size);
        if (r == 1 && !kf_kafka_stop && !atomic_load(&txn->stop))
            continue;
        if (r == 1) /* stopping: give the attempt up */
            err = kf_txn_abort(txn, errstr, errstr_size);
        goto out;
    }
    for (;;) {
        error = rd_kafka_commit_transaction(prk, (int)txn->txn_timeout_ms);
        if (!error)
            break;
        r = kf_txn_on_error(txn, error, "commit_transaction", &err, errstr, errstr_size);
        if (r == 1 && !kf_kafka_stop && !atomic_load(&txn->stop))
            continue; /* retrying commit is always safe: it is idempotent */
        if (r == 1)   /* stopping: abort; the batch is read again after a restart */
            err = kf_txn_abort(txn, errstr, errstr_size);
        goto out;
    }
    txn->in_txn = 0;
    txn->failed_attempts = 0;
    atomic_store(&txn->dr_failed, 0);
    /* Dead-lettered poison records are now committed past; forget them. */
    txn->npoison = 0;
    if (out_committed)
        *out_committed = n;

out:
    if (txn->in_txn && !err) /* defensive: never leave a transaction open between polls */
        err = kf_txn_abort(txn, errstr, errstr_size);
    if (offsets)
        rd_kafka_topic_partition_list_destroy(offsets);
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(batch[i]);
    free(batch);
    return err;
}

kf_err_t
kf_txn_run(
    kf_txn_t *txn, kf_txn_transform transform, void *opaque, char *errstr, size_t errstr_size)
{
    KF_ASSERT(txn && transform);
    while (!kf_kafka_stop && !atomic_load(&txn->stop)) {
        kf_err_t err = kf_txn_poll(txn, transform, opaque, 100, NULL, errstr, errstr_size);
        if (err)
            return err;
    }
    return KF_OK;
}

void
kf_txn_stop(kf_txn_t *txn)
{
    KF_ASSERT(txn);
    atomic_store(&txn->stop, 1);
}

void
kf_txn_destroy(kf_txn_t *txn)
{
    if (!txn)
        return;
    if (txn->in_txn && txn->producer) {
        rd_kafka_error_t *error =
            rd_kafka_abort_transaction(kf_producer_rk(txn->producer), (int)txn->txn_timeout_ms);
        if (error)
            rd_kafka_error_destroy(error);
    }
    if (txn->rk) {
        rd_kafka_consumer_close(txn->rk);
        rd_kafka_destroy(txn->rk);
    }
    kf_producer_destroy(txn->producer);
    free(txn->topics);
    free(txn->dlq_topic);
    free(txn->stage);
    free(txn);
}
