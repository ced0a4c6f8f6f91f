/*
 * dispatch_int.h: helpers shared by the dispatcher (dispatch.c) and the auditor (audit.c),
 * private to consumers/. Both run their own librdkafka consumer loop (they need many records
 * in flight at once, which kf_consumer_t's one-record-at-a-time handler cannot give), so they
 * share the way a kf_conf_t becomes Kafka configuration, the topic keys and the dead-letter
 * record layout.
 */
#ifndef KF_DISPATCH_INT_H
#define KF_DISPATCH_INT_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_kafka.h"

/* Topic keys (topics.results, topics.audit, topics.callbacks.retry, topics.callbacks.dlq), each
 * registered as its own one-key table so several stages in one process (`kinfer run`) may
 * register the same key without a clash (KF_ERR_EXISTS from another owner is ignored). */
kf_err_t kf_dq_register_topics(kf_conf_t *conf, char *errstr, size_t errstr_size);
/* The value of a topic key, or `def` when the key is not registered or empty. */
const char *kf_dq_topic(const kf_conf_t *conf, const char *key, const char *def);

/* Every kafka.* pair of conf as {"kafka.<name>", value}, plus kafka.bootstrap.servers from
 * KINFER_KAFKA_BROKERS when it is not set. Free with kf_dq_kv_free. */
typedef struct kf_dq_kv {
    kf_kafka_kv_t *kv;
    size_t n;
    char **owned; /* strings to free */
    size_t nowned;
} kf_dq_kv_t;
kf_err_t kf_dq_kv_build(const kf_conf_t *conf, kf_dq_kv_t *out, char *errstr, size_t errstr_size);
void kf_dq_kv_free(kf_dq_kv_t *kv);

/* A librdkafka consumer configured from kv (kafka.* keys without the prefix), with group.id,
 * enable.auto.commit=false, enable.auto.offset.store=false, auto.offset.reset=earliest (kv
 * may override the last one), logs routed to kf_log. rebalance_cb may be NULL; opaque is
 * given to it. */
kf_err_t kf_dq_consumer_new(const kf_dq_kv_t *kv,
                            const char *group_id,
                            void (*rebalance_cb)(rd_kafka_t *,
                                                 rd_kafka_resp_err_t,
                                                 rd_kafka_topic_partition_list_t *,
                                                 void *),
                            void *opaque,
                            rd_kafka_t **out_rk,
                            char *errstr,
                            size_t errstr_size);
/* Subscribes to `count` topics. */
kf_err_t kf_dq_subscribe(
    rd_kafka_t *rk, const char *const *topics, size_t count, char *errstr, size_t errstr_size);

/* Sends a poison record to `dlq_topic` with the original key/value and the headers
 * kf.error, kf.error.code, kf.original.topic, kf.original.partition, kf.original.offset and
 * kf.stage (the layout core's consumer uses), waiting for the acknowledgement. */
kf_err_t kf_dq_dead_letter(kf_producer_t *producer,
                           const char *dlq_topic,
                           const rd_kafka_message_t *rkm,
                           const char *stage,
                           kf_err_t err,
                           const char *why,
                           char *errstr,
                           size_t errstr_size);

/* Monotonic clock in milliseconds. */
int64_t kf_dq_mono_ms(void);

/* ISO 8601 UTC with milliseconds ("2026-01-02T03:04:05.678Z") into out[32]. */
void kf_dq_iso8601(int64_t epoch_ms, char out[32]);

#endif /* KF_DISPATCH_INT_H */
