/*
 * kf_worker: the inference worker (`kinfer infer`), the Kafka side of the engine.
 *
 * One worker is one member of a consumer group on the jobs topic (InferenceJob records) and
 * owns ONE kf_engine. Its single thread loops over:
 *   1. the control topic (`topics.control`, all partitions, assigned from the end, never a
 *      group): {"request_id","tenant_id","ts"} JSON records cancel matching queued or running
 *      jobs, and are remembered for a while (worker.cancel.ttl) so a job that arrives after its
 *      cancellation is cancelled on arrival;
 *   2. the jobs consumer: each record is decoded and submitted to the engine; records that do
 *      not decode go to the dead-letter topic (inside the transaction) and the worker goes on;
 *      a job whose deadline already passed gets status expired without running;
 *   3. flow control: when worker.max.batch.seqs + worker.max.queued jobs are in the engine,
 *      every assigned partition is PAUSED (the consumer keeps polling, so long generations
 *      never break max.poll.interval.ms) and resumed once the engine is down to
 *      worker.max.batch.seqs;
 *   4. dynamic batching: when only fresh jobs (never stepped) are in the engine and fewer than
 *      max.batch.seqs, the worker waits up to worker.max.wait after the oldest one arrived to
 *      gather more before the first step; running sequences are never stalled;
 *   5. one kf_engine_step();
 *   6. commit: finished jobs become InferenceResult records; they are produced in ONE Kafka
 *      transaction together with the input offsets (send_offsets_to_transaction with the
 *      group metadata). An input offset is committed only when every job at or below it in
 *      its partition has its result (or dead letter) in that transaction
 *      (kf_worker_track_*); results of an aborted transaction are produced again in the next.
 * On a revoke the worker first commits what is finished, then cancels the engine sequences of
 * the revoked partitions and forgets them without committing; the new owner redoes them.
 * On stop it pauses everything, lets running jobs finish for up to worker.shutdown.grace,
 * commits, and drops the rest (redone after the restart).
 *
 * Status mapping (kf_worker_status_of): stop/length -> completed, engine deadline -> expired,
 * cancel record -> cancelled, engine error or a job the engine rejects (bad sampling values,
 * prompt too long) -> failed with the error text. Audit events inference.started /
 * .completed / .expired / .cancelled (and .completed with outcome failure for failed jobs)
 * carry the model, token counts and durations, never the prompt.
 *
 * The first half of this header is pure logic (no Kafka, no engine) that the loop is built
 * from, exported so unit tests and fuzzers can drive it.
 *
 * Thread-safety: the pure helpers hold no global state (one object per thread). A kf_worker_t
 * is driven by one thread (kf_worker_run); kf_worker_stop() and kf_worker_get_stats() may be
 * called from any thread.
 */
#ifndef KF_WORKER_H
#define KF_WORKER_H

#include "kf_conf.h"
#include "kf_engine.h"
#include "kf_err.h"
#include "kf_metrics.h"

#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* ---- per-partition contiguous completion ------------------------------------------------ */

/* Tracks, per partition, the offsets handed to the engine and which of them are complete, to
 * compute how far the partition's committed offset may move: to the first incomplete offset,
 * or past the last received one when all are complete. Offsets between tracked ones (aborted
 * transactions, control records) need no result. */
typedef struct kf_worker_track kf_worker_track_t;

kf_worker_track_t *kf_worker_track_new(void); /* NULL on out of memory */
void kf_worker_track_destroy(kf_worker_track_t *track);
/* Records that `offset` of `partition` was received. Offsets must grow within a partition:
 * KF_ERR_EXISTS for an offset at or below the last one received (a re-delivery the caller
 * skips), KF_ERR_NOMEM. */
kf_err_t kf_worker_track_add(kf_worker_track_t *track, int32_t partition, int64_t offset);
/* Marks a received offset complete. KF_ERR_NOT_FOUND when it is not tracked. */
kf_err_t kf_worker_track_done(kf_worker_track_t *track, int32_t partition, int64_t offset);
/* The offset to commit for `partition` (the next one to read). Returns 1 and sets *out_next
 * when it is beyond the last kf_worker_track_committed() value, 0 when there is nothing new
 * to commit (or the partition is unknown). */
int
kf_worker_track_commit_point(const kf_worker_track_t *track, int32_t partition, int64_t *out_next);
/* After a successful commit of `next`: forgets the offsets below it. */
void kf_worker_track_committed(kf_worker_track_t *track, int32_t partition, int64_t next);
/* Forgets a partition (revoked): a later add starts from scratch. */
void kf_worker_track_drop(kf_worker_track_t *track, int32_t partition);
/* Offsets still tracked (received and not committed) in `partition`. */
size_t kf_worker_track_pending(const kf_worker_track_t *track, int32_t partition);
/* Iteration over known partitions: count, then the idx'th partition number. */
size_t kf_worker_track_count(const kf_worker_track_t *track);
int32_t kf_worker_track_partition_at(const kf_worker_track_t *track, size_t idx);

/* ---- dynamic batching and flow control -------------------------------------------------- */

typedef struct kf_worker_batch_in {
    uint32_t n_active;       /* jobs in the engine (waiting or running) */
    uint32_t n_fresh;        /* of them, submitted since the last step */
    int64_t oldest_fresh_ms; /* submit time of the oldest fresh job */
    int64_t now_ms;
    uint32_t max_batch_seqs;
    int64_t max_wait_ms;
    int draining; /* stopping, or partitions paused: no point in waiting */
} kf_worker_batch_in_t;

/* Whether to step now. Returns -1 when the engine is idle, 0 to step now, or N > 0 to wait up
 * to N ms for more jobs first (only when every active job is fresh, there are fewer than
 * max_batch_seqs of them and the oldest arrived less than max_wait_ms ago). */
int64_t kf_worker_batch_decide(const kf_worker_batch_in_t *in);

typedef enum kf_worker_flow {
    KF_WORKER_FLOW_KEEP = 0,
    KF_WORKER_FLOW_PAUSE,
    KF_WORKER_FLOW_RESUME,
} kf_worker_flow_t;

/* Pause when not paused and inflight >= high; resume when paused and inflight <= low. */
kf_worker_flow_t kf_worker_flow_decide(int paused, uint32_t inflight, uint32_t high, uint32_t low);

/* ---- deadlines, cancellations, statuses ------------------------------------------------- */

typedef enum kf_worker_status {
    KF_WORKER_COMPLETED = 0,
    KF_WORKER_FAILED,
    KF_WORKER_EXPIRED,
    KF_WORKER_CANCELLED,
    KF_WORKER_DROP, /* no result: the job is redone by whoever owns its partition next */
} kf_worker_status_t;

/* "completed", "failed", "expired", "cancelled" (the ResultStatus symbols), "drop". */
const char *kf_worker_status_name(kf_worker_status_t status);

/* 1 when a job with absolute deadline `deadline_ms` (epoch ms, <= 0: none) has expired at
 * `now_ms`: the deadline is at or before now. */
int kf_worker_deadline_passed(int64_t deadline_ms, int64_t now_ms);

/* The status of a finished engine sequence. cancel_requested: a cancel record matched it;
 * dropped: its partition was revoked or the worker is shutting down. A sequence that finished
 * normally although a cancel raced it is completed (the text is valid). */
kf_worker_status_t kf_worker_status_of(kf_finish_t finish, int cancel_requested, int dropped);

/* A cancel record's value: {"request_id": "...", "tenant_id": "...", "ts": N}, at most 4 KiB.
 * request_id is required (1..127 bytes), tenant_id optional ("" when absent). Outside bytes:
 * KF_ERR_PARSE / KF_ERR_LIMIT / KF_ERR_INVALID_ARG with the reason, never a crash. */
kf_err_t kf_worker_cancel_parse(const void *buf,
                                size_t len,
                                char out_request_id[128],
                                char out_tenant_id[128],
                                char *errstr,
                                size_t errstr_size);

/* Recently cancelled request ids (bounded ring, oldest forgotten first, entries older than
 * ttl_ms ignored), so a job arriving after its cancellation is cancelled on arrival. */
typedef struct kf_worker_cancels kf_worker_cancels_t;

kf_worker_cancels_t *kf_worker_cancels_new(size_t capacity, int64_t ttl_ms);
void kf_worker_cancels_destroy(kf_worker_cancels_t *cancels);
/* Remembers request_id (tenant_id may be "" = any tenant). Strings longer than 127 bytes are
 * ignored. */
void kf_worker_cancels_add(kf_worker_cancels_t *cancels,
                           const char *request_id,
                           const char *tenant_id,
                           int64_t now_ms);
/* 1 when request_id was cancelled within ttl (and the tenants match, when both are known). */
int kf_worker_cancels_has(const kf_worker_cancels_t *cancels,
                          const char *request_id,
                          const char *tenant_id,
                          int64_t now_ms);

/* ---- jobs and results ------------------------------------------------------------------- */

/* A decoded InferenceJob. Strings are borrowed from `json` (the job as kf_avro JSON). */
typedef struct kf_worker_job {
    json_t *json;
    const char *request_id;
    const char *tenant_id;
    const char *model;
    const char *prompt;
    const char *trace_id;
    const char *callback_url; /* NULL when absent */
    kf_sampling_t sampling;
    uint32_t max_tokens;
    const char **stop; /* n_stop strings, malloc'ed array of borrowed strings */
    size_t n_stop;
    /* Chat-style job (InferenceJob.messages non-empty; prompt is then ""): the turns the
     * engine renders with the model's chat template. malloc'ed array of borrowed strings. */
    kf_chat_msg_t *messages;
    size_t n_messages;
    int priority;
    int64_t deadline_ms; /* 0: none */
    int64_t accepted_at_ms;
} kf_worker_job_t;

/* Decodes an InferenceJob record value (Avro single object). Errors (the record is poison):
 * the Avro decoder's, KF_ERR_UNKNOWN_SCHEMA for another record type, KF_ERR_INVALID_ARG for
 * values the engine could never run (empty request_id, max_tokens < 1, ...). On KF_OK *out is
 * owned by the caller: kf_worker_job_destroy(). */
kf_err_t kf_worker_job_decode(
    const void *buf, size_t len, kf_worker_job_t **out, char *errstr, size_t errstr_size);
void kf_worker_job_destroy(kf_worker_job_t *job);

/* Everything a result says besides what it copies from the job. */
typedef struct kf_worker_outcome {
    kf_worker_status_t status;
    const char *text;          /* completed: the generated text (any bytes); NULL = "" */
    size_t text_len;           /* bytes of text; 0 with text set: strlen(text) */
    const char *finish_reason; /* completed: "stop" / "length"; NULL otherwise */
    const char *error;         /* not completed: why; NULL = none */
    const int32_t *token_ids;  /* NULL: token_ids null in the record */
    uint32_t n_token_ids;
    uint32_t prompt_tokens, completion_tokens;
    double queue_ms, prefill_ms, decode_ms;
    const char *model;
    const char *model_sha256;
    int64_t produced_at_ms;
} kf_worker_outcome_t;

/* Encodes the InferenceResult of `job` (request/tenant ids, trace_id, callback_url, metadata,
 * lineage, batch_id and custom_id copied from the job). *out_buf is malloc'ed. */
kf_err_t kf_worker_result_encode(const kf_worker_job_t *job,
                                 const kf_worker_outcome_t *outcome,
                                 unsigned char **out_buf,
                                 size_t *out_len,
                                 char *errstr,
                                 size_t errstr_size);

/* A copy of text[0..len) that is valid UTF-8: every invalid or truncated sequence (a token
 * boundary can split a character, e.g. at max_tokens) and every NUL byte becomes U+FFFD.
 * NUL-terminated, malloc'ed; NULL on out of memory. */
char *kf_worker_utf8_sanitize(const char *text, size_t len);

/* Hex SHA-256 of a file (out: 64 digits + NUL). KF_ERR_IO when it cannot be read. */
kf_err_t kf_worker_file_sha256(const char *path, char out[65], char *errstr, size_t errstr_size);

/* Picks the backend for `device` ("cpu", "cuda" or "auto"): auto is "cuda" when that backend
 * is built in and available, else "cpu". Returns a static string; NULL for an unknown name. */
const char *kf_worker_pick_backend(const char *device);

/* ---- the worker ------------------------------------------------------------------------- */

typedef struct kf_worker kf_worker_t;

/* worker.* keys (model, device, batching, flow control, commit cadence, group and
 * transactional ids, ...). */
extern const kf_conf_prop_t kf_worker_conf_props[];

/* Registers worker.*, and the topics.jobs/results/control/audit and pg.* keys that no other
 * stage registered yet (kinfer run holds every stage in one kf_conf_t). */
kf_err_t kf_worker_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* Loads worker.model (and its SHA-256), starts the engine on worker.device, creates the
 * topics (worker.topics.create), the clients (jobs consumer in group worker.group.id,
 * transactional producer worker.transactional.id, control consumer, audit producer) and the
 * optional PostgreSQL status updater. conf is read during the call only. Brokers:
 * kafka.bootstrap.servers, else $KINFER_KAFKA_BROKERS. Errors: KF_ERR_CONFIG (missing model,
 * brokers, bad keys), the model loader's and engine's errors, Kafka errors (the transactional
 * init fences an older instance with the same id). */
kf_err_t kf_worker_new(const kf_conf_t *conf, kf_worker_t **out, char *errstr, size_t errstr_size);

/* Runs the loop until *stop (may be NULL) or kf_worker_stop(), then shuts down as described
 * above. KF_OK after a requested stop; KF_ERR_KAFKA on a fatal Kafka error (fenced by a newer
 * instance, ...): destroy the worker and exit. */
kf_err_t
kf_worker_run(kf_worker_t *worker, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size);

/* Makes kf_worker_run() return; any thread. */
void kf_worker_stop(kf_worker_t *worker);

/* Frees everything (kf_worker_run must have returned). NULL is a no-op. */
void kf_worker_destroy(kf_worker_t *worker);

typedef struct kf_worker_stats {
    uint64_t jobs_received;
    uint64_t completed, failed, expired, cancelled;
    uint64_t dropped;       /* revoked or shut down before finishing: redone elsewhere */
    uint64_t dead_lettered; /* poison records */
    uint64_t txn_commits, txn_aborts;
    uint64_t prompt_tokens, completion_tokens;
    uint32_t inflight; /* jobs in the engine */
    uint32_t assigned; /* partitions assigned */
    int paused;        /* partitions currently paused */
    int ready;         /* the control consumer is positioned: cancels are seen */
} kf_worker_stats_t;

void kf_worker_get_stats(kf_worker_t *worker, kf_worker_stats_t *out);

/* The worker's Prometheus registry (kinfer_infer_* families), borrowed. */
kf_metrics_t *kf_worker_metrics(kf_worker_t *worker);

/* new + run + destroy, for `kinfer run`. */
kf_err_t kf_worker_run_conf(const kf_conf_t *conf,
                            volatile sig_atomic_t *stop,
                            char *errstr,
                            size_t errstr_size);

/* `kinfer infer` (cli/main.c table). */
int kf_cmd_infer(int argc, char **argv);

#endif /* KF_WORKER_H */
