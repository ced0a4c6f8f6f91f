/*
 * kf_dispatch: `kinfer dispatch`, the stage that finishes a request.
 *
 * It is one consumer group (dispatch.group.id) on two topics:
 *
 *   topics.results           InferenceResult records. Each is stored in PostgreSQL
 *                            `requests` (idempotent upsert of the final status, result jsonb
 *                            and completed_at; a final status is never overwritten), and when
 *                            the request has a callback URL its first delivery starts.
 *   topics.callbacks.retry   CallbackAttempt records: deliveries waiting for their next try
 *                            (next_attempt_at). A record that is not due yet is held in memory
 *                            and its offset left uncommitted; the partition is paused when too
 *                            many are held, so the poll loop never sleeps and
 *                            max.poll.interval.ms is never broken. A restart re-reads what was
 *                            not finished: no pending retry is lost.
 *
 * Deliveries follow Standard Webhooks: POST of {"type": "inference.<status>", "timestamp",
 * "data": {...}} with webhook-id ("msg_" + request id, the same on every retry),
 * webhook-timestamp (unix seconds of this attempt) and webhook-signature ("v1," + base64
 * HMAC-SHA256 keyed with the tenant's decoded whsec_ secret). Many run at once on one libcurl
 * multi handle (dispatch.max.inflight); each has dispatch.timeout. 2xx is delivered; transport
 * errors, timeouts, 408, 429 and 5xx are retried on dispatch.retry.schedule with jitter, never
 * sooner than Retry-After; other statuses (3xx included: redirects are not followed) fail at
 * once; 410 also disables the endpoint (table disabled_endpoints) so later callbacks to it fail
 * without a request. After the last attempt the delivery is dead-lettered to
 * topics.callbacks.dlq. requests.callback_status / callback_attempts / delivered_at follow
 * every step, and callback.attempted / callback.delivered / callback.failed are audited.
 *
 * SSRF guard: the address a delivery connects to is checked in curl's open-socket callback,
 * after resolution and before connect(): loopback, private, link-local, metadata, CGNAT,
 * multicast, unspecified and reserved addresses are refused (and the delivery fails for good)
 * unless they fall in dispatch.allow.cidrs. Only http and https, no proxies, no redirects.
 *
 * Delivery is at least once: a crash between a POST and its bookkeeping repeats that POST
 * with the same webhook-id, which receivers use to drop duplicates.
 *
 * Thread-safety: a kf_dispatch_t is driven by one thread (kf_dispatch_poll); only
 * kf_dispatch_get_stats may be called from others.
 */
#ifndef KF_DISPATCH_H
#define KF_DISPATCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_metrics.h"

typedef struct kf_dispatch kf_dispatch_t;

/* dispatch.* keys (group id, timeouts, concurrency, retry schedule, jitter, allowlist...). */
extern const kf_conf_prop_t kf_dispatch_conf_props[];

/* Registers every table the dispatcher reads: dispatch.*, pg.* and the topics.* keys it uses.
 * Call before loading files and environment. */
kf_err_t kf_dispatch_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* Creates the stage from a loaded conf (read now; conf may be destroyed afterwards): connects
 * to PostgreSQL, creates the topics when dispatch.topics.create is on, subscribes. `metrics`
 * (may be NULL: the stage makes its own) is borrowed and receives the kinfer_callback_* and
 * kinfer_dispatch_* families. Errors: KF_ERR_CONFIG (bad schedule, allowlist or Kafka key),
 * KF_ERR_UNAVAILABLE (PostgreSQL or Kafka unreachable), with the cause in errstr. */
kf_err_t kf_dispatch_new(const kf_conf_t *conf,
                         kf_metrics_t *metrics,
                         kf_dispatch_t **out_dispatch,
                         char *errstr,
                         size_t errstr_size);

/* One turn of the loop: reads records, starts deliveries that are due, drives the transfers,
 * finishes completed ones and commits finished offsets; waits at most timeout_ms. Returns
 * KF_OK, or KF_ERR_KAFKA on a fatal consumer error. */
kf_err_t
kf_dispatch_poll(kf_dispatch_t *dispatch, int timeout_ms, char *errstr, size_t errstr_size);

typedef struct kf_dispatch_stats {
    uint64_t records;       /* records read (results and retries) */
    uint64_t results;       /* results stored in PostgreSQL */
    uint64_t attempts;      /* HTTP attempts started */
    uint64_t delivered;     /* deliveries that got a 2xx */
    uint64_t retries;       /* retry records produced */
    uint64_t failed;        /* deliveries that failed for good (incl. blocked, gone) */
    uint64_t blocked;       /* attempts refused by the SSRF guard or the URL check */
    uint64_t gone;          /* 410 answers (endpoint disabled) */
    uint64_t skipped;       /* records whose delivery was already finished or owned elsewhere */
    uint64_t dead_lettered; /* poison records and exhausted deliveries sent to a DLQ */
    uint64_t pending;       /* records held (waiting, in flight or finishing) */
    uint64_t inflight;      /* HTTP transfers running */
} kf_dispatch_stats_t;

/* Snapshot of the counters; safe from any thread. */
void kf_dispatch_get_stats(const kf_dispatch_t *dispatch, kf_dispatch_stats_t *out_stats);

/* Lets transfers in flight finish (up to dispatch.shutdown.timeout), commits finished
 * offsets, leaves the group and frees. Held retries stay uncommitted and are read again by the
 * next owner. NULL is a no-op. */
void kf_dispatch_destroy(kf_dispatch_t *dispatch);

/* new + poll until *stop is set + destroy. */
kf_err_t kf_dispatch_run(const kf_conf_t *conf,
                         volatile sig_atomic_t *stop,
                         char *errstr,
                         size_t errstr_size);

/* `kinfer dispatch [--config FILE] [--set key=value]... [--dump-config]`. */
int kf_cmd_dispatch(int argc, char **argv);

#endif /* KF_DISPATCH_H */
