/*
 * kafka_consumer.c: the at-least-once group consumer with dead-lettering.
 *
 * A record's offset is stored only after the handler finished with it (or after its
 * dead-letter copy was acknowledged), and commits only ever cover stored offsets, so a crash
 * at any point re-delivers unfinished records and never skips one.
 *
 * Retriable handler failures must neither drop the record nor stall the whole consumer: the
 * partition is paused and the record (plus anything of that partition already returned by
 * librdkafka) is held here in order, retried with exponential backoff, while the loop keeps
 * polling so other partitions progress and rebalances and max.poll.interval.ms are served.
 */
#include "kafka_int.h"
#include "kf_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records of one paused partition, oldest first, waiting for a successful retry. */
typedef struct kf_held_msg {
    rd_kafka_message_t *rkm;
    struct kf_held_msg *next;
} kf_held_msg_t;

typedef struct kf_held_part {
    char *topic;
    int32_t partition;
    kf_held_msg_t *head, *tail;
    int attempts;
    int64_t due_ms;
    struct kf_held_part *next;
} kf_held_part_t;

struct kf_consumer {
    rd_kafka_t *rk;
    kf_producer_t *dlq;
    /* own options (filled through kf_consumer_optdefs) */
    char *topics;
    char *dlq_topic;
    char *stage;
    long backoff_ms;
    long backoff_max_ms;
    long commit_interval_ms;
    long poll_timeout_ms;
    /* state */
    char group_id[256];
    atomic_int stop;
    int dirty; /* offsets stored since the last commit */
    int64_t last_commit_ms;
    kf_held_part_t *held;
    kf_consumer_stats_t stats;
};

static const kf_kafka_opt_t kf_consumer_optdefs[] = {
    {"consumer.topics", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_consumer, topics)},
    {"consumer.dlq.topic", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_consumer, dlq_topic)},
    {"consumer.stage", KF_KAFKA_OPT_STR, 0, 0, offsetof(struct kf_consumer, stage)},
    {"consumer.retry.backoff.ms", KF_KAFKA_OPT_INT, 1, 3600000,
     offsetof(struct kf_consumer, backoff_ms)},
    {"consumer.retry.backoff.max.ms", KF_KAFKA_OPT_INT, 1, 3600000,
     offsetof(struct kf_consumer, backoff_max_ms)},
    {"consumer.commit.interval.ms", KF_KAFKA_OPT_INT, 0, 3600000,
     offsetof(struct kf_consumer, commit_interval_ms)},
    {"consumer.poll.timeout.ms", KF_KAFKA_OPT_INT, 0, 60000,
     offsetof(struct kf_consumer, poll_timeout_ms)},
    {NULL, 0, 0, 0, 0},
};

/* ---- held records ------------------------------------------------------------------------ */

static kf_held_part_t *
kf_consumer_held_find(kf_consumer_t *c, const char *topic, int32_t partition)
{
    for (kf_held_part_t *hp = c->held; hp; hp = hp->next)
        if (hp->partition == partition && !strcmp(hp->topic, topic))
            return hp;
    return NULL;
}

static void
kf_consumer_pause(kf_consumer_t *c, const char *topic, int32_t partition, int pause)
{
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, topic, partition);
    rd_kafka_resp_err_t rerr =
        pause ? rd_kafka_pause_partitions(c->rk, tp) : rd_kafka_resume_partitions(c->rk, tp);
    if (rerr)
        kf_log(KF_LOG_WARN, "kafka", "%s %s [%d]: %s", pause ? "pause" : "resume", topic,
               (int)partition, rd_kafka_err2str(rerr));
    rd_kafka_topic_partition_list_destroy(tp);
}

/* Unlinks and frees hp with whatever it still holds; resumes the partition if asked. */
static void
kf_consumer_held_drop(kf_consumer_t *c, kf_held_part_t *hp, int resume)
{
    kf_held_part_t **pp = &c->held;
    while (*pp && *pp != hp)
        pp = &(*pp)->next;
    if (*pp)
        *pp = hp->next;
    if (resume)
        kf_consumer_pause(c, hp->topic, hp->partition, 0);
    for (kf_held_msg_t *m = hp->head, *next; m; m = next) {
        next = m->next;
        rd_kafka_message_destroy(m->rkm);
        free(m);
    }
    free(hp->topic);
    free(hp);
}

static int
kf_consumer_held_push(kf_held_part_t *hp, rd_kafka_message_t *rkm)
{
    kf_held_msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return -1;
    m->rkm = rkm;
    if (hp->tail)
        hp->tail->next = m;
    else
        hp->head = m;
    hp->tail = m;
    return 0;
}

static int64_t
kf_consumer_backoff(const kf_consumer_t *c, int attempts)
{
    int64_t d = c->backoff_ms;
    for (int i = 1; i < attempts && d < c->backoff_max_ms; i++)
        d *= 2;
    return d < c->backoff_max_ms ? d : c->backoff_max_ms;
}

/* ---- commits and rebalances -------------------------------------------------------------- */

static kf_err_t
kf_consumer_commit_sync(kf_consumer_t *c, char *errstr, size_t errstr_size)
{
    rd_kafka_resp_err_t rerr = rd_kafka_commit(c->rk, NULL, 0);
    c->last_commit_ms = kf_kafka_now_ms();
    if (rerr == RD_KAFKA_RESP_ERR__NO_OFFSET || rerr == RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->dirty = 0;
        return KF_OK;
    }
    return kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "commit: %s",
                      rd_kafka_err2str(rerr));
}

static void
kf_consumer_commit_cb(rd_kafka_t *rk,
                      rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets,
                      void *opaque)
{
    (void)rk;
    (void)offsets;
    kf_consumer_t *c = opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        c->stats.commits++;
    else if (err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        /* Not fatal: the offsets stay stored and the next commit carries them. */
        kf_log(KF_LOG_WARN, "kafka", "offset commit failed: %s", rd_kafka_err2str(err));
}

static void
kf_consumer_log_parts(const char *what, const rd_kafka_topic_partition_list_t *parts)
{
    char buf[768];
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && len < sizeof(buf) - 1; i++) {
        int n = snprintf(buf + len, sizeof(buf) - len, "%s%s[%d]", i ? "," : "",
                         parts->elems[i].topic, (int)parts->elems[i].partition);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    kf_log(KF_LOG_INFO, "kafka", "%s %d partitions: %s", what, parts->cnt, buf);
}

static void
kf_consumer_rebalance_cb(rd_kafka_t *rk,
                         rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    kf_consumer_t *c = opaque;
    /* NULL while the consumer is closing (a rebalance served by rd_kafka_consumer_close) */
    int coop = kf_kafka_rebalance_cooperative(rk);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kf_consumer_log_parts("assigned", parts);
        if (coop) {
            error = rd_kafka_incremental_assign(rk, parts);
            c->stats.assigned += (uint64_t)parts->cnt;
        } else {
            rerr = rd_kafka_assign(rk, parts);
            c->stats.assigned = (uint64_t)parts->cnt;
        }
    } else {
        kf_consumer_log_parts(err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "revoked" : "lost",
                              parts);
        /* Commit what was finished before the partitions move, so the next owner starts
         * right after it. A lost assignment can no longer commit. */
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !rd_kafka_assignment_lost(rk)) {
            char errstr[256];
            if (kf_consumer_commit_sync(c, errstr, sizeof(errstr)))
                kf_log(KF_LOG_WARN, "kafka", "commit on revoke: %s", errstr);
        }
        /* Held records of revoked partitions belong to the next owner now. */
        for (int i = 0; i < parts->cnt; i++) {
            kf_held_part_t *hp =
                kf_consumer_held_find(c, parts->elems[i].topic, parts->elems[i].partition);
            if (hp)
                kf_consumer_held_drop(c, hp, 1);
        }
        if (coop) {
            error = rd_kafka_incremental_unassign(rk, parts);
            c->stats.assigned -= c->stats.assigned >= (uint64_t)parts->cnt ? (uint64_t)parts->cnt
                                                                           : c->stats.assigned;
        } else {
            rerr = rd_kafka_assign(rk, NULL);
            c->stats.assigned = 0;
        }
    }
    if (error) {
        kf_log(KF_LOG_ERROR, "kafka", "incremental (un)assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (rerr) {
        kf_log(KF_LOG_ERROR, "kafka", "assign: %s", rd_kafka_err2str(rerr));
    }
}

/* ---- construction ------------------------------------------------------------------------ */

kf_err_t
kf_consumer_new(const kf_kafka_kv_t *conf,
                size_t conf_count,
                kf_consumer_t **out_consumer,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(out_consumer);
    *out_consumer = NULL;
    kf_err_t err;
    rd_kafka_topic_partition_list_t *subs = NULL;
    kf_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    c->backoff_ms = 100;
    c->backoff_max_ms = 5000;
    c->commit_interval_ms = 1000;
    c->poll_timeout_ms = 100;
    atomic_init(&c->stop, 0);

    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    kf_kafka_conf_set_logging(rdconf);
    rd_kafka_conf_set_rebalance_cb(rdconf, kf_consumer_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(rdconf, kf_consumer_commit_cb);
    rd_kafka_conf_set_opaque(rdconf, c);
    err = kf_kafka_conf_set(rdconf, "auto.offset.reset", "earliest", errstr, errstr_size);
    if (!err)
        err = kf_kafka_conf_apply(rdconf, KF_KAFKA_ROLE_CONSUMER, 0, conf, conf_count,
                                  kf_consumer_optdefs, c, errstr, errstr_size);
    /* Forced after the user's keys: commits must follow processing, never a timer. */
    if (!err)
        err = kf_kafka_conf_set(rdconf, "enable.auto.commit", "false", errstr, errstr_size);
    if (!err)
        err = kf_kafka_conf_set(rdconf, "enable.auto.offset.store", "false", errstr, errstr_size);
    if (err)
        goto fail_conf;
    err = kf_kafka_conf_group_id(rdconf, c->group_id, sizeof(c->group_id), errstr, errstr_size);
    if (err)
        goto fail_conf;
    subs = kf_kafka_topic_list(c->topics);
    if (!subs) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "configuration key 'consumer.topics' is required");
        goto fail_conf;
    }
    if (c->backoff_max_ms < c->backoff_ms)
        c->backoff_max_ms = c->backoff_ms;

    /* The dead-letter producer first: if it cannot be built there is no point joining. */
    err = kf_producer_new_filtered(conf, conf_count, &c->dlq, errstr, errstr_size);
    if (err)
        goto fail_conf;
    err = kf_kafka_consumer_open(rdconf, subs, c->topics, "consumer", &c->rk, errstr, errstr_size);
    rdconf = NULL;
    subs = NULL;
    if (err)
        goto fail;
    kf_log(KF_LOG_INFO, "kafka", "consumer group %s subscribed to %s", c->group_id, c->topics);
    *out_consumer = c;
    return KF_OK;

fail_conf:
    if (rdconf)
        rd_kafka_conf_destroy(rdconf);
fail:
    if (subs)
        rd_kafka_topic_partition_list_destroy(subs);
    kf_consumer_destroy(c);
    return err;
}

/* ---- processing -------------------------------------------------------------------------- */

typedef enum { KF_REC_DONE, KF_REC_RETRY, KF_REC_CANCEL } kf_rec_result_t;

static void
kf_consumer_store(kf_consumer_t *c, const rd_kafka_message_t *rkm)
{
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    /* The committed offset is the NEXT record to read, hence +1. */
    rd_kafka_topic_partition_list_add(tp, rd_kafka_topic_name(rkm->rkt), rkm->partition)->offset =
        rkm->offset + 1;
    rd_kafka_resp_err_t rerr = rd_kafka_offsets_store(c->rk, tp);
    if (rerr)
        /* __STATE: the partition was revoked meanwhile; its next owner re-reads it. */
        kf_log(KF_LOG_WARN, "kafka", "store offset %s [%d] %lld: %s", rd_kafka_topic_name(rkm->rkt),
               (int)rkm->partition, (long long)rkm->offset, rd_kafka_err2str(rerr));
    else
        c->dirty = 1;
    rd_kafka_topic_partition_list_destroy(tp);

    if (c->commit_interval_ms == 0) {
        char errstr[256];
        if (kf_consumer_commit_sync(c, errstr, sizeof(errstr)))
            kf_log(KF_LOG_WARN, "kafka", "%s", errstr);
    }
}

static kf_rec_result_t
kf_consumer_handle(kf_consumer_t *c,
                   rd_kafka_message_t *rkm,
                   kf_consumer_handler handler,
                   void *opaque)
{
    kf_kafka_record_t rec;
    kf_kafka_record_from_rkm(&rec, rkm);
    char kv[384];
    snprintf(kv, sizeof(kv), "topic=%s partition=%d offset=%lld", rec.topic, (int)rec.partition,
             (long long)rec.offset);
    char herr[512] = "";
    kf_err_t err = handler(&rec, opaque, herr, sizeof(herr));
    if (err == KF_OK) {
        c->stats.processed++;
        kf_consumer_store(c, rkm);
        return KF_REC_DONE;
    }
    if (err == KF_ERR_CANCELLED)
        return KF_REC_CANCEL;
    if (kf_err_is_retriable(err)) {
        c->stats.retried++;
        kf_logkv(KF_LOG_WARN, "kafka", kv, "handler failed (%s), will retry: %s", kf_err_str(err),
                 herr);
        return KF_REC_RETRY;
    }

    /* Fatal for this record: park it in the dead-letter topic, unchanged, with the reason. */
    kf_logkv(KF_LOG_ERROR, "kafka", kv, "handler rejected record (%s): %s; dead-lettering",
             kf_err_str(err), herr);
    kf_kafka_dlq_t dlq;
    char perr[512];
    kf_err_t perr_code = kf_kafka_dlq_init(
        &dlq, &rec, c->dlq_topic, c->stage && *c->stage ? c->stage : c->group_id, err, herr);
    if (perr_code == KF_OK)
        perr_code = kf_producer_send(c->dlq, &dlq.msg, NULL, perr, sizeof(perr));
    else
        snprintf(perr, sizeof(perr), "%s", kf_err_str(perr_code));
    kf_kafka_dlq_clear(&dlq);
    if (perr_code) {
        /* Without the DLQ copy the record must not be committed: retry the whole step. */
        kf_logkv(KF_LOG_ERROR, "kafka", kv, "dead-letter produce failed, will retry: %s", perr);
        c->stats.retried++;
        return KF_REC_RETRY;
    }
    c->stats.dead_lettered++;
    kf_consumer_store(c, rkm);
    return KF_REC_DONE;
}

static void
kf_consumer_maybe_commit(kf_consumer_t *c)
{
    if (!c->dirty || c->commit_interval_ms == 0)
        return;
    int64_t now = kf_kafka_now_ms();
    if (now - c->last_commit_ms < c->commit_interval_ms)
        return;
    c->last_commit_ms = now;
    c->dirty = 0;
    rd_kafka_commit(c->rk, NULL, 1); /* result arrives in kf_consumer_commit_cb */
}

/* Starts holding rkm (which the handler could not finish) and pauses its partition. */
static void
kf_consumer_hold(kf_consumer_t *c, rd_kafka_message_t *rkm)
{
    kf_held_part_t *hp = calloc(1, sizeof(*hp));
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    if (hp)
        hp->topic = strdup(topic);
    if (!hp || !hp->topic || kf_consumer_held_push(hp, rkm)) {
        /* Out of memory: dropping the record would lose it, so rewind the partition to it
         * instead; it is fetched again. */
        if (hp)
            free(hp->topic);
        free(hp);
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(tp, topic, rkm->partition)->offset = rkm->offset;
        rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, tp, 1000);
        if (error)
            rd_kafka_error_destroy(error);
        rd_kafka_topic_partition_list_destroy(tp);
        rd_kafka_message_destroy(rkm);
        return;
    }
    hp->partition = rkm->partition;
    hp->attempts = 1;
    hp->due_ms = kf_kafka_now_ms() + kf_consumer_backoff(c, 1);
    hp->next = c->held;
    c->held = hp;
    kf_consumer_pause(c, hp->topic, hp->partition, 1);
}

kf_err_t
kf_consumer_poll(kf_consumer_t *consumer,
                 kf_consumer_handler handler,
                 void *opaque,
                 int timeout_ms,
                 int *out_handled,
                 char *errstr,
                 size_t errstr_size)
{
    KF_ASSERT(consumer && handler);
    kf_consumer_t *c = consumer;
    if (out_handled)
        *out_handled = 0;

    /* 1. A held record whose backoff has passed goes first: it is older than anything new. */
    int64_t now = kf_kafka_now_ms();
    int64_t next_due = -1;
    for (kf_held_part_t *hp = c->held; hp; hp = hp->next) {
        if (hp->due_ms > now) {
            if (next_due < 0 || hp->due_ms < next_due)
                next_due = hp->due_ms;
            continue;
        }
        kf_rec_result_t r = kf_consumer_handle(c, hp->head->rkm, handler, opaque);
        if (out_handled)
            *out_handled = 1;
        if (r == KF_REC_CANCEL)
            return kf_err_set(errstr, errstr_size, KF_ERR_CANCELLED, "handler cancelled");
        if (r == KF_REC_RETRY) {
            hp->attempts++;
            hp->due_ms = kf_kafka_now_ms() + kf_consumer_backoff(c, hp->attempts);
            return KF_OK;
        }
        kf_held_msg_t *m = hp->head;
        hp->head = m->next;
        if (!hp->head)
            hp->tail = NULL;
        rd_kafka_message_destroy(m->rkm);
        free(m);
        hp->attempts = 0;
        if (!hp->head)
            kf_consumer_held_drop(c, hp, 1); /* caught up: fetch the partition again */
        kf_consumer_maybe_commit(c);
        return KF_OK;
    }

    /* 2. Otherwise wait for a new record, but not past the next held record's due time. */
    int wait = timeout_ms;
    if (next_due >= 0 && next_due - now < wait)
        wait = (int)(next_due - now);
    if (wait < 0)
        wait = 0;
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, wait);
    if (!rkm) {
        kf_consumer_maybe_commit(c);
        return KF_OK;
    }
    if (rkm->err) {
        rd_kafka_resp_err_t rerr = rkm->err;
        kf_err_t err = KF_OK;
        if (rerr == RD_KAFKA_RESP_ERR__FATAL) {
            char fatal[400];
            rd_kafka_fatal_error(c->rk, fatal, sizeof(fatal));
            err = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "fatal consumer error: %s", fatal);
        } else if (rerr != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Consumer errors are informational; librdkafka keeps retrying underneath. */
            kf_log(KF_LOG_WARN, "kafka", "consumer: %s: %s", rd_kafka_err2name(rerr),
                   rd_kafka_message_errstr(rkm));
        }
        rd_kafka_message_destroy(rkm);
        return err;
    }
    kf_held_part_t *hp = kf_consumer_held_find(c, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    if (hp) {
        /* Its partition waits on an older record: keep order, handle it after that one. */
        if (kf_consumer_held_push(hp, rkm)) {
            rd_kafka_message_destroy(rkm);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        }
        return KF_OK;
    }
    kf_rec_result_t r = kf_consumer_handle(c, rkm, handler, opaque);
    if (out_handled)
        *out_handled = 1;
    if (r == KF_REC_DONE) {
        rd_kafka_message_destroy(rkm);
        kf_consumer_maybe_commit(c);
        return KF_OK;
    }
    /* Retry or cancel: either way the record stays ours, uncommitted, in order. */
    kf_consumer_hold(c, rkm);
    if (r == KF_REC_CANCEL)
        return kf_err_set(errstr, errstr_size, KF_ERR_CANCELLED, "handler cancelled");
    return KF_OK;
}

kf_err_t
kf_consumer_run(kf_consumer_t *consumer,
                kf_consumer_handler handler,
                void *opaque,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(consumer && handler);
    kf_err_t err = KF_OK;
    while (!kf_kafka_stop && !atomic_load(&consumer->stop)) {
        err = kf_consumer_poll(consumer, handler, opaque, (int)consumer->poll_timeout_ms, NULL,
                               errstr, errstr_size);
        if (err)
            break;
    }
    char cerr[256];
    if (kf_consumer_commit_sync(consumer, cerr, sizeof(cerr)))
        kf_log(KF_LOG_WARN, "kafka", "final %s", cerr);
    return err;
}

void
kf_consumer_stop(kf_consumer_t *consumer)
{
    KF_ASSERT(consumer);
    atomic_store(&consumer->stop, 1);
}

kf_err_t
kf_consumer_commit(kf_consumer_t *consumer, char *errstr, size_t errstr_size)
{
    KF_ASSERT(consumer);
    return kf_consumer_commit_sync(consumer, errstr, errstr_size);
}

void
kf_consumer_get_stats(const kf_consumer_t *consumer, kf_consumer_stats_t *out_stats)
{
    KF_ASSERT(consumer && out_stats);
    *out_stats = consumer->stats;
}

void
kf_consumer_destroy(kf_consumer_t *consumer)
{
    if (!consumer)
        return;
    kf_consumer_t *c = consumer;
    if (c->rk) {
        char errstr[256];
        if (kf_consumer_commit_sync(c, errstr, sizeof(errstr)))
            kf_log(KF_LOG_WARN, "kafka", "commit at close: %s", errstr);
        while (c->held)
            kf_consumer_held_drop(c, c->held, 0);
        /* Leaves the group now (the revoke callback runs) instead of at session timeout. */
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    kf_producer_destroy(c->dlq);
    free(c->topics);
    free(c->dlq_topic);
    free(c->stage);
    free(c);
}
