/*
 * kf_audit: emits AuditEvent records (schemas/AuditEvent.avsc) to the audit topic.
 *
 * Every pipeline stage calls kf_audit_emit() at each step it audits (request.accepted,
 * enrich.completed, inference.started, callback.delivered, ...). The record is encoded as
 * Avro single-object bytes, keyed by request id (so one request's events stay ordered in one
 * partition), and sent asynchronously through the stage's own idempotent producer; delivery
 * failures are logged and counted, never fatal to the stage. `kinfer audit` indexes the
 * topic into the search engine.
 *
 * Never put a secret, an API key or a full prompt into an event: `message` and `attributes`
 * are indexed and searchable.
 *
 * Thread-safety: a kf_audit_t may be used from several threads at once (the producer is
 * thread-safe; the counters are atomic).
 */
#ifndef KF_AUDIT_H
#define KF_AUDIT_H

#include "kf_err.h"
#include "kf_kafka.h"

#include <stdint.h>

/* Default topic for audit events. */
#define KF_AUDIT_TOPIC_DEFAULT "kinfer.audit"

typedef struct kf_audit kf_audit_t;

typedef enum kf_audit_outcome {
    KF_AUDIT_SUCCESS = 0,
    KF_AUDIT_FAILURE = 1,
    KF_AUDIT_REJECTED = 2, /* bad input or policy */
    KF_AUDIT_RETRY = 3,    /* transient failure that will be retried */
} kf_audit_outcome_t;

/* One event. Every pointer is borrowed for the duration of kf_audit_emit(); NULL means
 * absent. `attrs` is an array of attr_count {key, value} pairs. */
typedef struct kf_audit_event {
    const char *action; /* required, e.g. "request.accepted" */
    kf_audit_outcome_t outcome;
    const char *stage; /* required, e.g. "api", "enrich", "infer", "dispatch" */
    const char *request_id;
    const char *tenant_id;
    const char *trace_id;
    double duration_ms; /* < 0: absent */
    const char *model;
    int64_t tokens; /* < 0: absent */
    const char *message;
    const kf_kafka_kv_t *attrs;
    size_t attr_count;
} kf_audit_event_t;

/* Creates an emitter sending to `topic` (NULL: KF_AUDIT_TOPIC_DEFAULT) through `producer`
 * (borrowed; it must outlive the emitter). */
kf_err_t kf_audit_new(
    kf_producer_t *producer, const char *topic, kf_audit_t **out, char *errstr, size_t errstr_size);
/* Accepts NULL. Does not flush the producer (its owner does). */
void kf_audit_destroy(kf_audit_t *audit);

/* Builds, encodes and queues one event with a fresh event id and the current time.
 * KF_ERR_INVALID_ARG when action or stage is missing or a string is not valid UTF-8; the
 * producer's error when it cannot queue. Delivery failures are reported asynchronously to
 * the log and kf_audit_failed(). `audit` may be NULL (auditing off): returns KF_OK. */
kf_err_t kf_audit_emit(kf_audit_t *audit, const kf_audit_event_t *ev);

/* Events queued and events whose delivery failed, since creation. */
uint64_t kf_audit_sent(const kf_audit_t *audit);
uint64_t kf_audit_failed(const kf_audit_t *audit);

/* Writes a random RFC 4122 version 4 UUID (36 chars + NUL) into out[37]. Uses OpenSSL's
 * RAND_bytes; KF_ERR_INTERNAL if the RNG fails. Shared by every stage for ids. */
kf_err_t kf_uuid4(char out[37]);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t kf_now_ms(void);

#endif /* KF_AUDIT_H */
