/*
 * enrich_int.h: internals shared by the enrich*.c files (never included outside consumers/).
 */
#ifndef KF_ENRICH_INT_H
#define KF_ENRICH_INT_H

#include "kf_audit.h"
#include "kf_enrich.h"

#include <jansson.h>
#include <stdatomic.h>

/* Audit event waiting for its batch to commit (strings owned). */
typedef struct kf_enrich_pending {
    int failed;
    kf_audit_outcome_t outcome;
    char *request_id, *tenant_id, *trace_id, *model, *message, *task, *tmpl;
    double duration_ms;
} kf_enrich_pending_t;

struct kf_enrich {
    char *topic_requests, *topic_market, *topic_jobs, *topic_results, *topic_audit;
    char *template_name;
    int64_t symbols_max;

    kf_pg_t *pg;
    kf_txn_t *txn;
    kf_producer_t *audit_producer;
    kf_audit_t *audit;
    kf_market_state_t *ms;
    kf_market_follower_t *follower;
    kf_enrich_risk_fn risk_fn;
    void *risk_opaque;

    /* Per batch: what becomes visible only if the transaction commits. */
    kf_enrich_pending_t *pending;
    size_t npending, cap_pending;
    uint64_t batch_dlq;
    int batch_retriable;

    atomic_int stop;
    kf_enrich_stats_t stats;
};

/* Outcome of processing one decoded request. */
typedef struct kf_enrich_outcome {
    json_t *record; /* InferenceJob JSON (failed == 0) or InferenceResult JSON (failed == 1) */
    int failed;
    kf_audit_outcome_t audit_outcome;
    char message[512]; /* failure reason, or "" */
    char tmpl[96];     /* "name v3" of the template used, "" when none */
} kf_enrich_outcome_t;

/* Registers the prepared statements on e->pg. */
kf_err_t kf_enrich_ctx_prepare(kf_enrich_t *e, char *errstr, size_t errstr_size);

/* Loads the context of `req` (InferenceRequest JSON), renders the prompt and builds the
 * output record. Returns KF_OK with *out filled (a job or a failed result), or an error that
 * is not about this request's content: retriable ones (PostgreSQL down) abort the batch,
 * others dead-letter the request. */
kf_err_t kf_enrich_process(
    kf_enrich_t *e, const json_t *req, kf_enrich_outcome_t *out, char *errstr, size_t errstr_size);

/* Marks the request enriched in PostgreSQL (idempotent: accepted -> enriched only). */
kf_err_t kf_enrich_mark(kf_enrich_t *e,
                        const char *request_id,
                        const char *tenant_id,
                        char *errstr,
                        size_t errstr_size);

#endif /* KF_ENRICH_INT_H */
