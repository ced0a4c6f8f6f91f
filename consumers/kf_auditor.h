/*
 * kf_auditor: `kinfer audit`, the stage that indexes AuditEvent records (topics.audit) into
 * the search engine, and `kinfer audit search`, which finds them again.
 *
 * Indexing: records are read in bulks (audit.bulk.max records or audit.bulk.linger after the
 * first), mapped to ECS-style documents (kf_auditor_event_to_doc) in daily indexes
 * "<audit.index.prefix>YYYY.MM.DD" (UTC day of the event), and sent with one _bulk `create`
 * per document whose _id is the event id, so a redelivered event is answered 409 and never
 * duplicated. Only the items that failed retriably (429, 5xx) are sent again, with an
 * exponential backoff during which the partitions are paused (the consumer keeps polling, so
 * max.poll.interval.ms holds); items the engine refuses for good, and records that are not
 * valid AuditEvents, go to "<topic>.dlq". Offsets are committed only after the whole bulk is
 * acknowledged. At start the index template (kf_auditor_template: number_of_replicas 0,
 * ECS field types) is installed; deploy/search/kinfer-audit-template.json is the same body
 * for the default prefix.
 *
 * Works with Elasticsearch 7.10+/8.x and OpenSearch 2.x (composable templates, _bulk,
 * _search with track_total_hits).
 *
 * Thread-safety: a kf_auditor_t is driven by one thread; kf_auditor_get_stats may be called
 * from others. The pure functions (template, mapping, query) are thread-safe.
 */
#ifndef KF_AUDITOR_H
#define KF_AUDITOR_H

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_search.h"

/* audit.* keys (group id, index prefix, template name, bulk size and linger, backoff). */
extern const kf_conf_prop_t kf_auditor_conf_props[];

/* Registers audit.*, search.* and topics.audit. */
kf_err_t kf_auditor_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* The composable index template for indexes named index_prefix + "*" (new reference). */
json_t *kf_auditor_template(const char *index_prefix);

/* Maps one decoded AuditEvent (the JSON form of schemas/AuditEvent.avsc) to its document:
 *   @timestamp, message, event.{id, action, outcome (ECS: success|failure|unknown), duration
 *   (nanoseconds), kind, dataset, provider (= stage)}, trace.id, service.name,
 *   labels.{tenant_id, request_id}, kinfer.{stage, outcome (kinfer's own), model, tokens,
 *   attributes}.
 * out_index receives index_prefix + "YYYY.MM.DD" of the event's UTC day. KF_ERR_INVALID_ARG
 * when event_id, ts, action or stage is missing or the index name would be invalid. */
kf_err_t kf_auditor_event_to_doc(const json_t *event,
                                 const char *index_prefix,
                                 json_t **out_doc,
                                 char out_index[256],
                                 char *errstr,
                                 size_t errstr_size);

/* ---- the indexer -------------------------------------------------------------------------- */

typedef struct kf_auditor kf_auditor_t;

/* Reads conf now; connects to Kafka, installs the template (audit.template.install), creates
 * the topics (audit.topics.create). */
kf_err_t
kf_auditor_new(const kf_conf_t *conf, kf_auditor_t **out_auditor, char *errstr, size_t errstr_size);

/* Gathers one bulk (waiting up to timeout_ms for its first record), indexes it and commits.
 * Returns KF_OK (also when nothing came), KF_ERR_CANCELLED when a stop interrupted the
 * retries of a bulk (its offsets stay uncommitted), KF_ERR_KAFKA on a fatal consumer error. */
kf_err_t kf_auditor_poll(kf_auditor_t *auditor,
                         int timeout_ms,
                         volatile sig_atomic_t *stop,
                         char *errstr,
                         size_t errstr_size);

typedef struct kf_auditor_stats {
    uint64_t records;       /* records read */
    uint64_t indexed;       /* documents created */
    uint64_t duplicates;    /* documents already there (409) */
    uint64_t retried;       /* items sent again after a retriable failure */
    uint64_t dead_lettered; /* poison records and refused documents */
    uint64_t bulks;         /* bulks committed */
} kf_auditor_stats_t;
void kf_auditor_get_stats(const kf_auditor_t *auditor, kf_auditor_stats_t *out_stats);

/* Commits, leaves the group, frees. NULL is a no-op. */
void kf_auditor_destroy(kf_auditor_t *auditor);

/* new + poll until *stop + destroy. */
kf_err_t kf_auditor_run(const kf_conf_t *conf,
                        volatile sig_atomic_t *stop,
                        char *errstr,
                        size_t errstr_size);

/* ---- search ------------------------------------------------------------------------------- */

typedef struct kf_audit_query {
    const char *request_id; /* exact labels.request_id; NULL: any */
    const char *tenant_id;  /* exact labels.tenant_id */
    const char *action;     /* exact event.action */
    const char *since;      /* @timestamp >= (ISO 8601, epoch ms or date math like now-1h) */
    const char *until;      /* @timestamp <= */
    const char *text;       /* full-text match on message, all words */
    int limit;              /* hits to return (1..10000); 0: 100 */
} kf_audit_query_t;

/* The _search body for q, oldest first (new reference in *out_body). KF_ERR_INVALID_ARG for
 * a limit out of range or an over-long value (each at most 512 bytes). */
kf_err_t kf_auditor_query_body(const kf_audit_query_t *q,
                               json_t **out_body,
                               char *errstr,
                               size_t errstr_size);

/* Runs the query on index_pattern (e.g. "kinfer-audit-*"). *out_total gets the exact number
 * of matching events, *out_hits (may be NULL) a new reference to the hits array (each hit's
 * _source is the document). */
kf_err_t kf_auditor_search(kf_search_t *search,
                           const char *index_pattern,
                           const kf_audit_query_t *q,
                           int64_t *out_total,
                           json_t **out_hits,
                           char *errstr,
                           size_t errstr_size);

/* `kinfer audit [--config FILE] [--set K=V]... [--dump-config]` (the indexer) and
 * `kinfer audit search [--request-id ID] [--tenant T] [--action A] [--since TS] [--until TS]
 *  [--text "words"] [--limit N] [--json]`. */
int kf_cmd_audit(int argc, char **argv);

#endif /* KF_AUDITOR_H */
