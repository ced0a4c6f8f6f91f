/*
 * Internals shared by core/kafka*.c: configuration building, librdkafka callbacks routed to
 * kf_log, and small helpers. Never included outside core/.
 */
#ifndef KF_KAFKA_INT_H
#define KF_KAFKA_INT_H

#include "kf_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

/* Which kind of client a configuration is built for; decides which kafka.* keys apply when
 * filtering by librdkafka's own property scope (C, P or *). */
typedef enum kf_kafka_role {
    KF_KAFKA_ROLE_PRODUCER,
    KF_KAFKA_ROLE_CONSUMER,
} kf_kafka_role_t;

/* Own (non kafka.*) options of an object, parsed from kf_kafka_kv_t by kf_kafka_opts_parse(). */
typedef enum kf_kafka_opt_type {
    KF_KAFKA_OPT_INT,
    KF_KAFKA_OPT_STR,
} kf_kafka_opt_type_t;

typedef struct kf_kafka_opt {
    const char *name;
    kf_kafka_opt_type_t type;
    long min, max; /* for INT */
    size_t offset; /* offsetof the long / char * field in the target struct */
} kf_kafka_opt_t;

/* Applies kafka.* keys to `rdconf` and the rest to `obj` through `opts` (may be NULL).
 * With `filter` set, kafka.* keys whose librdkafka scope does not fit `role` are skipped
 * (used for the secondary clients a consumer or txn object creates). Unknown or invalid
 * keys fail with KF_ERR_CONFIG naming the key. STR options are strdup'ed into obj (the
 * caller frees them). */
kf_err_t kf_kafka_conf_apply(rd_kafka_conf_t *rdconf,
                             kf_kafka_role_t role,
                             int filter,
                             const kf_kafka_kv_t *conf,
                             size_t conf_count,
                             const kf_kafka_opt_t *opts,
                             void *obj,
                             char *errstr,
                             size_t errstr_size);

/* rd_kafka_conf_set() that formats the error with the key name. */
kf_err_t kf_kafka_conf_set(
    rd_kafka_conf_t *rdconf, const char *key, const char *value, char *errstr, size_t errstr_size);

/* Installs log and error callbacks that forward to kf_log. */
void kf_kafka_conf_set_logging(rd_kafka_conf_t *rdconf);

/* Translates an rd_kafka_error_t (txn API) and copies its text into errstr. */
kf_err_t kf_kafka_err_from_error(const rd_kafka_error_t *error, char *errstr, size_t errstr_size);

/* Builds an rd_kafka_headers_t from msg->headers (NULL when there are none). */
rd_kafka_headers_t *kf_kafka_headers_build(const kf_kafka_msg_t *msg);

/* Fills a borrowed record view of a consumed message. */
void kf_kafka_record_from_rkm(kf_kafka_record_t *rec, const rd_kafka_message_t *rkm);

/* The dead-letter copy of a consumed record: original key, value and headers, plus the kf.*
 * error headers. Everything it points to lives in the struct or in the record. */
typedef struct kf_kafka_dlq {
    kf_kafka_msg_t msg;
    kf_kafka_header_t *hdrs; /* malloc'ed: original headers + the kf.* ones */
    char topic[256];
    char partition[16];
    char offset[24];
} kf_kafka_dlq_t;

/* Builds the DLQ message for `rec` (dlq_topic NULL or "" means "<topic>.dlq"). `cause_text`
 * and `stage` are borrowed and must outlive the send. */
kf_err_t kf_kafka_dlq_init(kf_kafka_dlq_t *dlq,
                           const kf_kafka_record_t *rec,
                           const char *dlq_topic,
                           const char *stage,
                           kf_err_t cause,
                           const char *cause_text);
void kf_kafka_dlq_clear(kf_kafka_dlq_t *dlq);

/* The producer's underlying handle (for the consumer's DLQ path). */
rd_kafka_t *kf_producer_rk(kf_producer_t *producer);

/* Creates a producer, filtering consumer-scope kafka.* keys and ignoring non-kafka keys. */
kf_err_t kf_producer_new_filtered(const kf_kafka_kv_t *conf,
                                  size_t conf_count,
                                  kf_producer_t **out_producer,
                                  char *errstr,
                                  size_t errstr_size);

/* Monotonic milliseconds. */
int64_t kf_kafka_now_ms(void);

/* Sleeps up to ms, waking early when kf_kafka_stop or *flag is set. */
void kf_kafka_sleep_ms(int64_t ms, atomic_int *flag);

/* Splits a comma-separated topic list into an rd_kafka_topic_partition_list_t. NULL when
 * the list is empty. */
rd_kafka_topic_partition_list_t *kf_kafka_topic_list(const char *csv);

/* Reads group.id from a consumer configuration into buf; KF_ERR_CONFIG naming
 * 'kafka.group.id' when it is missing or empty. */
kf_err_t kf_kafka_conf_group_id(
    rd_kafka_conf_t *rdconf, char *buf, size_t size, char *errstr, size_t errstr_size);

/* Creates the consumer from rdconf (always consumed), serves messages, rebalances and errors
 * from the consumer queue, and subscribes to `topics` (the csv that built subs; subs is
 * always destroyed). *out is the consumer even when subscribing fails, for the caller's
 * destroy to close; NULL only when it could not be created. `what` names it in errors. */
kf_err_t kf_kafka_consumer_open(rd_kafka_conf_t *rdconf,
                                rd_kafka_topic_partition_list_t *subs,
                                const char *topics,
                                const char *what,
                                rd_kafka_t **out,
                                char *errstr,
                                size_t errstr_size);

#endif /* KF_KAFKA_INT_H */
