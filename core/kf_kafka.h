/*
 * kf_kafka: every Kafka client kinfer runs, on top of librdkafka (2.0.2 or later).
 *
 * Three objects, one per delivery guarantee a stage needs:
 *
 *   kf_producer_t  idempotent producer (enable.idempotence=true, acks=all). Each send gets
 *                  exactly one final result: kf_producer_send() waits for it,
 *                  kf_producer_send_async() hands it to a per-message callback.
 *   kf_consumer_t  consumer-group member with at-least-once processing: the offset of a
 *                  record is stored and committed only after the handler has finished with
 *                  it. Retriable handler errors are retried (never dropped); fatal ones send
 *                  the original record to a dead-letter topic and move on.
 *   kf_txn_t       exactly-once consume-transform-produce: a transactional producer and a
 *                  read_committed consumer; outputs and input offsets commit atomically.
 *
 * Configuration: every constructor takes an array of {key, value} string pairs. Keys that
 * start with "kafka." go to rd_kafka_conf_set() with the prefix removed
 * ("kafka.bootstrap.servers"); other keys are the object's own (listed at each
 * constructor). An unknown key or an invalid value fails the constructor with
 * KF_ERR_CONFIG and an errstr naming the key.
 *
 * Errors: librdkafka codes are translated by kf_kafka_err_from_rd(); retriable conditions
 * (timeouts, brokers down, leader changes) become KF_ERR_TIMEOUT / KF_ERR_UNAVAILABLE,
 * everything else a final error. errstr always carries librdkafka's own text.
 *
 * Shutdown: kf_kafka_install_signal_handlers() makes SIGTERM and SIGINT set kf_kafka_stop;
 * every run loop here returns KF_OK soon after it is set, having committed what it finished.
 *
 * Thread-safety: a producer may be used from several threads. A consumer or txn object
 * belongs to the one thread that runs its loop; only its _stop() may be called from others.
 */
#ifndef KF_KAFKA_H
#define KF_KAFKA_H

#include "kf_err.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* One configuration entry. Both strings are borrowed for the duration of the call. */
typedef struct kf_kafka_kv {
    const char *key;
    const char *value;
} kf_kafka_kv_t;

/* ---- process-wide stop flag -------------------------------------------------------------- */

/* Set (to 1) by the handlers kf_kafka_install_signal_handlers() installs, or by
 * kf_kafka_request_stop(). Run loops poll it; nothing here ever clears it except
 * kf_kafka_reset_stop(). */
extern volatile sig_atomic_t kf_kafka_stop;

/* Installs SIGTERM and SIGINT handlers (sigaction, SA_RESTART) that set kf_kafka_stop.
 * Returns KF_ERR_INTERNAL if sigaction fails. */
kf_err_t kf_kafka_install_signal_handlers(void);
void kf_kafka_request_stop(void);
void kf_kafka_reset_stop(void);

/* ---- errors ------------------------------------------------------------------------------ */

/* 1 when the consumer `rk` (an rd_kafka_t) runs the COOPERATIVE rebalance protocol, 0 for
 * EAGER and while the consumer is closing (librdkafka then reports no protocol). Rebalance
 * callbacks use it to pick incremental_assign/unassign over assign. */
struct rd_kafka_s;
int kf_kafka_rebalance_cooperative(struct rd_kafka_s *rk);

/* Waits (up to timeout_ms, at most 10 s) for the transactional producer's in-flight messages
 * before an abort. librdkafka sends the abort's EndTxn once AddPartitionsToTxn is *sent*, not
 * answered; if the coordinator still sees the transaction as empty it rejects EndTxn with
 * INVALID_TXN_STATE, a fatal error (librdkafka issue 4849, seen here when a transform failed
 * right after its first output). A delivered message proves its partition is registered. */
void kf_kafka_flush_before_abort(struct rd_kafka_s *producer, int timeout_ms);

/* Translates an rd_kafka_resp_err_t (passed as int so this header needs no rdkafka.h).
 * Retriable: timeouts, transport failures, leader / coordinator changes, full queues. */
kf_err_t kf_kafka_err_from_rd(int rd_err);

/* ---- records and headers ----------------------------------------------------------------- */

#define KF_KAFKA_PARTITION_ANY (-1)

/* A header to send. `value` may be NULL (null header value); `size` is its length. */
typedef struct kf_kafka_header {
    const char *name;
    const void *value;
    size_t size;
} kf_kafka_header_t;

/* A record to produce. Everything is borrowed and copied by the send call. */
typedef struct kf_kafka_msg {
    const char *topic;
    int32_t partition; /* KF_KAFKA_PARTITION_ANY: the partitioner picks (by key) */
    const void *key;   /* may be NULL */
    size_t key_len;
    const void *value; /* may be NULL (tombstone) */
    size_t value_len;
    const kf_kafka_header_t *headers;
    size_t header_count;
} kf_kafka_msg_t;

/* A consumed record, borrowed by the handler for the duration of the call. */
typedef struct kf_kafka_record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when the broker sent none */
    const void *key;      /* NULL when absent */
    size_t key_len;
    const void *value; /* NULL for tombstones */
    size_t value_len;
    const void *impl; /* internal: the librdkafka message; do not use */
} kf_kafka_record_t;

/* Number of headers on the record. */
size_t kf_kafka_record_header_count(const kf_kafka_record_t *rec);
/* The idx'th header (0-based). Values are borrowed from the record. KF_ERR_NOT_FOUND past
 * the end. */
kf_err_t kf_kafka_record_header_at(const kf_kafka_record_t *rec,
                                   size_t idx,
                                   const char **out_name,
                                   const void **out_value,
                                   size_t *out_size);
/* The LAST header called `name` (Kafka allows repeats; the last one wins, as in
 * rd_kafka_header_get_last). KF_ERR_NOT_FOUND when absent. */
kf_err_t kf_kafka_record_header(const kf_kafka_record_t *rec,
                                const char *name,
                                const void **out_value,
                                size_t *out_size);

/* ---- producer ---------------------------------------------------------------------------- */

typedef struct kf_producer kf_producer_t;

/* Final result of one send. Strings are borrowed for the duration of the callback. */
typedef struct kf_kafka_delivery {
    kf_err_t err;       /* KF_OK when the record is durably written (acks=all) */
    const char *errmsg; /* librdkafka's text; "" on success */
    const char *topic;
    int32_t partition;
    int64_t offset; /* -1 when not delivered */
} kf_kafka_delivery_t;

/* Called exactly once per kf_producer_send_async() that returned KF_OK, from the thread
 * calling kf_producer_poll(), _send(), _flush() or _destroy(). */
typedef void (*kf_producer_delivery_cb)(const kf_kafka_delivery_t *dr, void *msg_opaque);

/* Creates an idempotent producer (enable.idempotence=true, acks=all are set first; kafka.*
 * keys may override other librdkafka settings). Own keys:
 *   producer.flush.timeout.ms  how long _destroy() waits for outstanding sends (10000).
 * librdkafka's logs go to kf_log under subsys "rdkafka". */
kf_err_t kf_producer_new(const kf_kafka_kv_t *conf,
                         size_t conf_count,
                         kf_producer_t **out_producer,
                         char *errstr,
                         size_t errstr_size);

/* Sends one record and waits for its delivery report (librdkafka retries internally until
 * message.timeout.ms, so this can block that long). Returns the report's error, with
 * librdkafka's text in errstr. out_dr (may be NULL) receives partition and offset; its topic
 * is msg->topic and its errmsg is "" (the text is in errstr). While waiting it serves other
 * delivery callbacks of this producer. */
kf_err_t kf_producer_send(kf_producer_t *producer,
                          const kf_kafka_msg_t *msg,
                          kf_kafka_delivery_t *out_dr,
                          char *errstr,
                          size_t errstr_size);

/* Queues one record. On KF_OK, `cb` (may be NULL) will be called exactly once with the final
 * result and `msg_opaque`. Blocks (serving callbacks) while librdkafka's queue is full. On
 * error the callback is never called. */
kf_err_t kf_producer_send_async(kf_producer_t *producer,
                                const kf_kafka_msg_t *msg,
                                kf_producer_delivery_cb cb,
                                void *msg_opaque,
                                char *errstr,
                                size_t errstr_size);

/* Serves delivery callbacks for up to timeout_ms; returns how many were served. */
int kf_producer_poll(kf_producer_t *producer, int timeout_ms);

/* Waits up to timeout_ms for every queued send to get its report. KF_ERR_TIMEOUT (with the
 * count left in errstr) if some remain. */
kf_err_t
kf_producer_flush(kf_producer_t *producer, int timeout_ms, char *errstr, size_t errstr_size);

/* Records queued or in flight, not yet reported. */
int kf_producer_outq_len(kf_producer_t *producer);

/* Flushes for producer.flush.timeout.ms, then purges what is left (those callbacks get
 * an error) and frees everything. NULL is a no-op. */
void kf_producer_destroy(kf_producer_t *producer);

/* ---- consumer ---------------------------------------------------------------------------- */

typedef struct kf_consumer kf_consumer_t;

/* Processes one record. Returns:
 *   KF_OK                          done: the offset is stored and committed.
 *   retriable (kf_err_is_retriable) the same record is retried after a backoff (its
 *                                  partition is paused meanwhile; others go on).
 *   KF_ERR_CANCELLED               the record is left uncommitted and the loop stops.
 *   anything else (fatal)          the record goes to the dead-letter topic with its
 *                                  original key, value and headers plus kf.error (errstr),
 *                                  kf.error.code (kf_err_str), kf.original.topic,
 *                                  kf.original.partition, kf.original.offset, kf.stage;
 *                                  then its offset is committed.
 * errstr describes the failure (it becomes kf.error). */
typedef kf_err_t (*kf_consumer_handler)(const kf_kafka_record_t *rec,
                                        void *opaque,
                                        char *errstr,
                                        size_t errstr_size);

/* Creates a group consumer and subscribes. Forced: enable.auto.commit=false,
 * enable.auto.offset.store=false. Defaults: auto.offset.reset=earliest. kafka.group.id is
 * required. Own keys:
 *   consumer.topics               comma-separated topics to subscribe to (required)
 *   consumer.dlq.topic            dead-letter topic ("" = "<original topic>.dlq")
 *   consumer.stage                value of the kf.stage header (default: the group id)
 *   consumer.retry.backoff.ms     first retry delay (100); doubles per attempt
 *   consumer.retry.backoff.max.ms retry delay cap (5000)
 *   consumer.commit.interval.ms   0: commit synchronously after every record; N: commit
 *                                 stored offsets asynchronously at most every N ms (1000).
 *                                 Either way stored offsets are committed synchronously
 *                                 on revoke and when the loop stops.
 *   consumer.poll.timeout.ms      longest single wait in the loop (100)
 * The dead-letter producer is idempotent and shares the kafka.* keys that apply to a
 * producer (consumer-only ones are left out). */
kf_err_t kf_consumer_new(const kf_kafka_kv_t *conf,
                         size_t conf_count,
                         kf_consumer_t **out_consumer,
                         char *errstr,
                         size_t errstr_size);

/* One step of the loop: processes at most one record (a due retry or a new one), waiting
 * up to timeout_ms for it. *out_handled (may be NULL) is 1 when the handler ran. Returns
 * KF_OK, KF_ERR_CANCELLED when the handler asked to stop, or KF_ERR_KAFKA on a fatal
 * consumer error. */
kf_err_t kf_consumer_poll(kf_consumer_t *consumer,
                          kf_consumer_handler handler,
                          void *opaque,
                          int timeout_ms,
                          int *out_handled,
                          char *errstr,
                          size_t errstr_size);

/* Loops kf_consumer_poll() until kf_kafka_stop or kf_consumer_stop(), then commits the stored
 * offsets synchronously. Returns KF_OK on a requested stop. */
kf_err_t kf_consumer_run(kf_consumer_t *consumer,
                         kf_consumer_handler handler,
                         void *opaque,
                         char *errstr,
                         size_t errstr_size);

/* Makes kf_consumer_run() return; safe from any thread and from the handler. */
void kf_consumer_stop(kf_consumer_t *consumer);

/* Commits stored offsets now, synchronously. KF_OK also when there was nothing to commit. */
kf_err_t kf_consumer_commit(kf_consumer_t *consumer, char *errstr, size_t errstr_size);

typedef struct kf_consumer_stats {
    uint64_t processed;     /* handler returned KF_OK */
    uint64_t retried;       /* handler returned a retriable error */
    uint64_t dead_lettered; /* records written to the dead-letter topic */
    uint64_t commits;       /* successful commits */
    uint64_t assigned;      /* partitions currently assigned */
} kf_consumer_stats_t;
void kf_consumer_get_stats(const kf_consumer_t *consumer, kf_consumer_stats_t *out_stats);

/* Commits stored offsets, leaves the group (rd_kafka_consumer_close) and frees. NULL ok. */
void kf_consumer_destroy(kf_consumer_t *consumer);

/* ---- exactly-once consume-transform-produce ---------------------------------------------- */

typedef struct kf_txn kf_txn_t;

/* Transforms one input record, producing zero or more outputs with kf_txn_produce(). Return
 * values as for kf_consumer_handler: retriable -> the whole batch is aborted and retried
 * after a backoff; fatal -> the input goes to the dead-letter topic inside the same
 * transaction (if it had already produced outputs, the batch is aborted first so they never
 * become visible). */
typedef kf_err_t (*kf_txn_transform)(
    kf_txn_t *txn, const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size);

/* Creates the pair. kafka.* keys go to both clients, each getting only the keys whose scope
 * fits it; kafka.transactional.id and kafka.group.id are required. Forced:
 * isolation.level=read_committed, enable.auto.commit=false. Own keys:
 *   txn.topics             comma-separated input topics (required)
 *   txn.batch.max          records per transaction (100)
 *   txn.batch.timeout.ms   how long to gather a batch after its first record (200)
 *   txn.timeout.ms         timeout for init/commit/abort calls (30000)
 *   txn.dlq.topic          dead-letter topic ("" = "<input topic>.dlq")
 *   txn.stage              kf.stage header value (default: the group id)
 *   txn.retry.backoff.ms   / txn.retry.backoff.max.ms   as for the consumer (100 / 5000)
 * Calls rd_kafka_init_transactions(), which fences earlier producers with the same id. */
kf_err_t kf_txn_new(const kf_kafka_kv_t *conf,
                    size_t conf_count,
                    kf_txn_t **out_txn,
                    char *errstr,
                    size_t errstr_size);

/* Produces one output inside the current transaction (call only from the transform). */
kf_err_t kf_txn_produce(kf_txn_t *txn, const kf_kafka_msg_t *msg, char *errstr, size_t errstr_size);

/* Gathers one batch (waiting up to timeout_ms for its first record) and runs it as one
 * transaction: begin, transform each record, send the consumer offsets, commit. On an
 * abortable error the transaction is aborted and the consumer rewound to the committed
 * offsets, so the batch is read again. *out_committed (may be NULL) gets the number of input
 * records committed. Returns KF_OK (also after an abort-and-rewind), KF_ERR_KAFKA on a fatal
 * error (fenced by a newer instance, etc.: destroy and exit), or KF_ERR_CANCELLED. */
kf_err_t kf_txn_poll(kf_txn_t *txn,
                     kf_txn_transform transform,
                     void *opaque,
                     int timeout_ms,
                     size_t *out_committed,
                     char *errstr,
                     size_t errstr_size);

/* Loops kf_txn_poll() until kf_kafka_stop or kf_txn_stop(). KF_OK on a requested stop. */
kf_err_t kf_txn_run(
    kf_txn_t *txn, kf_txn_transform transform, void *opaque, char *errstr, size_t errstr_size);

void kf_txn_stop(kf_txn_t *txn);

/* Aborts an open transaction, closes both clients, frees. NULL ok. */
void kf_txn_destroy(kf_txn_t *txn);

/* ---- admin ------------------------------------------------------------------------------- */

/* Creates topics (CreateTopics) with `partitions` partitions and `replication` replicas
 * (-1: broker default). A topic that already exists is not an error. `conf` carries the
 * kafka.* connection keys (other keys are ignored). */
kf_err_t kf_kafka_create_topics(const kf_kafka_kv_t *conf,
                                size_t conf_count,
                                const char *const *topics,
                                size_t topic_count,
                                int partitions,
                                int replication,
                                int timeout_ms,
                                char *errstr,
                                size_t errstr_size);

/* Same, with topic-level configs applied to every created topic (e.g. {"cleanup.policy",
 * "compact"} for the market topic). An existing topic keeps its configs. */
kf_err_t kf_kafka_create_topics_ex(const kf_kafka_kv_t *conf,
                                   size_t conf_count,
                                   const char *const *topics,
                                   size_t topic_count,
                                   int partitions,
                                   int replication,
                                   const kf_kafka_kv_t *topic_conf,
                                   size_t topic_conf_count,
                                   int timeout_ms,
                                   char *errstr,
                                   size_t errstr_size);

#endif /* KF_KAFKA_H */
