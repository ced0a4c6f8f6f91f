/*
 * market_state_kafka.c: the market follower, kinfer's GlobalKTable. One librdkafka consumer
 * with NO group: it is assigned every partition of the compacted market topic at the
 * beginning, so every enricher instance holds the whole latest state (not a group's share),
 * and it never commits. Start-up reads up to the high watermarks taken before assigning, so
 * "caught up" means every tick published before the enricher started is in the table.
 */
#include "kf_enrich.h"

#include "kf_log.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kf_market_follower {
    rd_kafka_t *rk;
    char *topic;
    kf_market_state_t *ms;
    int npart;
    int64_t *next;   /* next offset to read per partition (-1: unknown yet) */
    int64_t *target; /* offsets to reach before "caught up" (sync targets) */
    pthread_t thread;
    int thread_started;
    atomic_int stop;
    atomic_uint_least64_t nread, nbad;
    pthread_mutex_t mu; /* guards next[], target[], caught_up */
    pthread_cond_t cv;
    int caught_up;
};

static int64_t
kf_follower_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Called with mu held: all partitions at or past their targets? */
static int
kf_follower_reached(const kf_market_follower_t *f)
{
    for (int p = 0; p < f->npart; p++)
        if (f->next[p] < f->target[p])
            return 0;
    return 1;
}

static void
kf_follower_handle(kf_market_follower_t *f, rd_kafka_message_t *rkm)
{
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* EOF carries the next offset: everything before it has been read. */
        pthread_mutex_lock(&f->mu);
        if (rkm->partition >= 0 && rkm->partition < f->npart &&
            rkm->offset > f->next[rkm->partition])
            f->next[rkm->partition] = rkm->offset;
        pthread_mutex_unlock(&f->mu);
        return;
    }
    if (rkm->err) {
        kf_log(KF_LOG_WARN, "market", "market consumer: %s", rd_kafka_message_errstr(rkm));
        return;
    }
    kf_kafka_record_t rec = {.topic = rd_kafka_topic_name(rkm->rkt),
                             .partition = rkm->partition,
                             .offset = rkm->offset,
                             .timestamp_ms = -1,
                             .key = rkm->key,
                             .key_len = rkm->key_len,
                             .value = rkm->payload,
                             .value_len = rkm->len};
    char errstr[512];
    atomic_fetch_add(&f->nread, 1);
    if (kf_market_state_apply_record(f->ms, &rec, NULL, errstr, sizeof(errstr))) {
        /* A bad tick costs that tick only: the state keeps the previous one. */
        atomic_fetch_add(&f->nbad, 1);
        char kv[384];
        snprintf(kv, sizeof(kv), "topic=%s partition=%d offset=%lld", rec.topic, (int)rec.partition,
                 (long long)rec.offset);
        kf_logkv(KF_LOG_WARN, "market", kv, "market record skipped: %s", errstr);
    }
    pthread_mutex_lock(&f->mu);
    if (rkm->partition >= 0 && rkm->partition < f->npart &&
        rkm->offset + 1 > f->next[rkm->partition])
        f->next[rkm->partition] = rkm->offset + 1;
    pthread_mutex_unlock(&f->mu);
}

static void *
kf_follower_main(void *arg)
{
    kf_market_follower_t *f = arg;
    while (!atomic_load(&f->stop)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(f->rk, 100);
        if (rkm) {
            kf_follower_handle(f, rkm);
            rd_kafka_message_destroy(rkm);
        }
        pthread_mutex_lock(&f->mu);
        if (kf_follower_reached(f) && !f->caught_up) {
            f->caught_up = 1;
            pthread_cond_broadcast(&f->cv);
        }
        pthread_mutex_unlock(&f->mu);
    }
    return NULL;
}

/* Reads the high watermark of every partition into target[]. */
static kf_err_t
kf_follower_targets(kf_market_follower_t *f, int64_t *target, char *errstr, size_t errstr_size)
{
    for (int p = 0; p < f->npart; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t rerr;
        /* A topic created a moment ago may not have elected its leaders yet: retry those
         * answers for up to 10 s instead of failing the stage at start. */
        for (int tries = 0;; tries++) {
            rerr = rd_kafka_query_watermark_offsets(f->rk, f->topic, p, &lo, &hi, 10000);
            if (tries >= 100 || (rerr != RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION &&
                                 rerr != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE &&
                                 rerr != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART))
                break;
            nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
        }
        if (rerr)
            return kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr),
                              "watermarks of %s [%d]: %s", f->topic, p, rd_kafka_err2str(rerr));
        target[p] = hi;
    }
    return KF_OK;
}

static kf_err_t
kf_follower_wait(kf_market_follower_t *f, int64_t timeout_ms, char *errstr, size_t errstr_size)
{
    int64_t deadline = kf_follower_now_ms() + timeout_ms;
    pthread_mutex_lock(&f->mu);
    while (!f->caught_up) {
        int64_t left = deadline - kf_follower_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait_ms = left > 100 ? 100 : left;
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&f->cv, &f->mu, &ts);
    }
    int ok = f->caught_up;
    int64_t behind = 0;
    for (int p = 0; p < f->npart; p++)
        if (f->next[p] < f->target[p])
            behind += f->target[p] - (f->next[p] < 0 ? 0 : f->next[p]);
    pthread_mutex_unlock(&f->mu);
    if (!ok)
        return kf_err_set(errstr, errstr_size, KF_ERR_TIMEOUT,
                          "market topic %s: not caught up after %lld ms (%lld records behind)",
                          f->topic, (long long)timeout_ms, (long long)behind);
    return KF_OK;
}

kf_err_t
kf_market_follower_start(const kf_kafka_kv_t *kafka,
                         size_t kafka_count,
                         const char *topic,
                         kf_market_state_t *ms,
                         int64_t catchup_timeout_ms,
                         kf_market_follower_t **out_follower,
                         char *errstr,
                         size_t errstr_size)
{
    KF_ASSERT(topic && ms && out_follower);
    char rderr[512];
    kf_err_t err = KF_OK;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    kf_market_follower_t *f = calloc(1, sizeof(*f));
    if (!f || !(f->topic = strdup(topic))) {
        free(f);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    f->ms = ms;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);

    rd_kafka_conf_t *rdconf = rd_kafka_conf_new();
    for (size_t i = 0; i < kafka_count; i++) {
        const char *k = kafka[i].key;
        if (strncmp(k, "kafka.", 6))
            continue;
        k += 6;
        /* Group and transaction identities belong to the stage's own clients: this reader
         * must stay out of the group and must not commit anything. */
        if (!strcmp(k, "group.id") || !strcmp(k, "group.instance.id") ||
            !strcmp(k, "transactional.id") || !strcmp(k, "isolation.level"))
            continue;
        if (rd_kafka_conf_set(rdconf, k, kafka[i].value, rderr, sizeof(rderr)) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(rdconf);
            err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG, "kafka.%s: %s", k, rderr);
            goto fail;
        }
    }
    /* librdkafka wants a group id for its consumer queue even with assign(); nothing joins
     * or commits under it, so one shared name is fine. */
    rd_kafka_conf_set(rdconf, "group.id", "kinfer-market-follower", NULL, 0);
    rd_kafka_conf_set(rdconf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(rdconf, "enable.auto.offset.store", "false", NULL, 0);
    rd_kafka_conf_set(rdconf, "enable.partition.eof", "true", NULL, 0);
    rd_kafka_conf_set(rdconf, "auto.offset.reset", "earliest", NULL, 0);
    f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rdconf, rderr, sizeof(rderr));
    if (!f->rk) {
        rd_kafka_conf_destroy(rdconf);
        err = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "market consumer: %s", rderr);
        goto fail;
    }

    /* Partitions from the metadata of this one topic. The enricher creates the topic just
     * before this call, and a broker answers UNKNOWN_TOPIC_OR_PART / LEADER_NOT_AVAILABLE until
     * the new topic's metadata has propagated, so those answers are retried for up to 10 s. */
    rkt = rd_kafka_topic_new(f->rk, topic, NULL);
    rd_kafka_resp_err_t rerr;
    for (int tries = 0;; tries++) {
        rerr = rd_kafka_metadata(f->rk, 0, rkt, &md, 10000);
        if (rerr || tries >= 100 || md->topic_cnt != 1 ||
            (md->topics[0].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART &&
             md->topics[0].err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE))
            break;
        rd_kafka_metadata_destroy(md);
        md = NULL;
        nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
    }
    if (rerr) {
        err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "metadata of %s: %s",
                         topic, rd_kafka_err2str(rerr));
        goto fail;
    }
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        err =
            kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "market topic %s: %s", topic,
                       md->topic_cnt == 1 && md->topics[0].err ? rd_kafka_err2str(md->topics[0].err)
                                                               : "no partitions");
        goto fail;
    }
    f->npart = md->topics[0].partition_cnt;
    f->next = calloc((size_t)f->npart, sizeof(*f->next));
    f->target = calloc((size_t)f->npart, sizeof(*f->target));
    if (!f->next || !f->target) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int p = 0; p < f->npart; p++)
        f->next[p] = -1;
    if ((err = kf_follower_targets(f, f->target, errstr, errstr_size)))
        goto fail;
    /* Empty partitions are caught up before anything is read. */
    for (int p = 0; p < f->npart; p++)
        if (f->target[p] == 0)
            f->next[p] = 0;

    parts = rd_kafka_topic_partition_list_new(f->npart);
    for (int p = 0; p < f->npart; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rerr = rd_kafka_assign(f->rk, parts);
    if (rerr) {
        err = kf_err_set(errstr, errstr_size, kf_kafka_err_from_rd(rerr), "assign %s: %s", topic,
                         rd_kafka_err2str(rerr));
        goto fail;
    }
    if (pthread_create(&f->thread, NULL, kf_follower_main, f)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "cannot start market thread");
        goto fail;
    }
    f->thread_started = 1;
    if ((err = kf_follower_wait(f, catchup_timeout_ms, errstr, errstr_size)))
        goto fail;
    kf_log(KF_LOG_INFO, "market", "market state of %s caught up: %zu symbols from %d partitions",
           topic, kf_market_state_count(ms), f->npart);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    *out_follower = f;
    return KF_OK;

fail:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    kf_market_follower_destroy(f);
    return err;
}

kf_err_t
kf_market_follower_sync(kf_market_follower_t *f,
                        int64_t timeout_ms,
                        char *errstr,
                        size_t errstr_size)
{
    KF_ASSERT(f);
    int64_t *target = calloc((size_t)f->npart, sizeof(*target));
    if (!target)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    /* rd_kafka_query_watermark_offsets is safe beside the polling thread. */
    kf_err_t err = kf_follower_targets(f, target, errstr, errstr_size);
    if (!err) {
        pthread_mutex_lock(&f->mu);
        memcpy(f->target, target, (size_t)f->npart * sizeof(*target));
        f->caught_up = 0;
        pthread_mutex_unlock(&f->mu);
        err = kf_follower_wait(f, timeout_ms, errstr, errstr_size);
    }
    free(target);
    return err;
}

void
kf_market_follower_counts(kf_market_follower_t *f, uint64_t *out_read, uint64_t *out_bad)
{
    KF_ASSERT(f);
    if (out_read)
        *out_read = atomic_load(&f->nread);
    if (out_bad)
        *out_bad = atomic_load(&f->nbad);
}

void
kf_market_follower_destroy(kf_market_follower_t *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, 1);
    if (f->thread_started)
        pthread_join(f->thread, NULL);
    if (f->rk) {
        rd_kafka_consumer_close(f->rk);
        rd_kafka_destroy(f->rk);
    }
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f->next);
    free(f->target);
    free(f->topic);
    free(f);
}
