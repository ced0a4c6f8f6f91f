/*
 * kf_report: financial risk reports = metrics + narrative + lineage, rendered as canonical
 * JSON, Markdown and a self-contained HTML page with inline SVG charts; and the batch that
 * produces them through the pipeline (`kinfer report run`, `kinfer report get`).
 *
 * A report is one JSON document (a jansson object) assembled by kf_report_build() from
 *   - the metrics of kf_risk_compute() (kf_risk_report_t, with its daily P&L, value and date
 *     series, which the charts need and the model's prompt does not carry),
 *   - the narrative the model wrote (the InferenceResult text),
 *   - the lineage: portfolio, as-of date, model name and file SHA-256, sampling parameters
 *     and seed, and the market ticks (topic, partition, offset, event time) the prompt used.
 * Every renderer reads only that document, so a stored report can be rendered again in any
 * format, and the renderers treat it as outside input: missing or mistyped fields render as
 * "n/a", never crash. Layout of the document: docs/reports.md.
 *
 *   kf_report_meta_t meta = KF_REPORT_META_INIT;
 *   kf_report_meta_from_result(result_json, &meta, errstr, sizeof(errstr));  // or by hand
 *   json_t *doc;
 *   if (kf_report_build(rep, &meta, &doc, errstr, sizeof(errstr)) == KF_OK) {
 *       kf_buf_t b; kf_buf_init(&b, 0);
 *       kf_report_render(doc, KF_REPORT_HTML, &b, errstr, sizeof(errstr));
 *       ...
 *   }
 *
 * Determinism: for the same inputs every renderer produces the same bytes. Numbers are
 * formatted without the locale (shortest decimal that reads back exactly in JSON; fixed
 * decimals with ',' thousands separators in Markdown and HTML), object keys of the JSON are
 * sorted, nothing reads the clock. The document's "digest" is the SHA-256 of the canonical
 * JSON of everything except "run" (request id, trace id, production time: what differs
 * between two runs of the same report), so two reproducible runs have equal digests.
 *
 * Thread-safety: no global state; distinct documents may be rendered in parallel.
 */
#ifndef KF_REPORT_H
#define KF_REPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kf_buf.h"
#include "kf_conf.h"
#include "kf_err.h"
#include "kf_risk.h"

/* Identifies the document layout; bumped on incompatible changes. */
#define KF_REPORT_FORMAT_ID "kinfer.risk_report.v1"

/* Request metadata keys the batch puts on every InferenceRequest (echoed by the pipeline into
 * InferenceResult.metadata), so a stored result carries the report's parameters. */
#define KF_REPORT_MD_PORTFOLIO  "report.portfolio_id"
#define KF_REPORT_MD_AS_OF      "report.as_of"
#define KF_REPORT_MD_CONFIDENCE "report.confidence"
#define KF_REPORT_MD_HORIZON    "report.horizon_days"
#define KF_REPORT_MD_SAMPLING   "report.sampling" /* canonical JSON of the sampling object */

/* ---- building -------------------------------------------------------------------------- */

/* One market tick that went into the prompt (InferenceResult.lineage[]). */
typedef struct kf_report_tick {
    const char *symbol;
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t event_time_ms;
} kf_report_tick_t;

/* Decoding parameters as submitted (InferenceRequest.sampling). */
typedef struct kf_report_sampling {
    int max_tokens;
    double temperature, top_p;
    int top_k;
    double min_p, repetition_penalty;
    int has_seed; /* 0: the seed was null (drawn by the worker: not reproducible) */
    int64_t seed;
} kf_report_sampling_t;

#define KF_REPORT_SAMPLING_INIT          \
    {                                    \
        256, 0.0, 1.0, 0, 0.0, 1.0, 0, 0 \
    }

/* Everything besides the metrics. All strings are borrowed for the duration of
 * kf_report_build() (which copies them); NULL means absent. */
typedef struct kf_report_meta {
    const char *status;        /* InferenceResult status; NULL: "completed" */
    const char *narrative;     /* model text, any bytes (invalid UTF-8 becomes U+FFFD) */
    const char *finish_reason; /* "stop", "length", ... */
    const char *error;         /* why the result is not completed */
    int64_t prompt_tokens, completion_tokens;
    const char *model, *model_sha256;
    kf_report_sampling_t sampling;
    int has_sampling;  /* 0: unknown (a result not produced by `report run`) */
    double confidence; /* headline VaR/ES confidence in (0, 1); 0: 0.99 */
    int horizon_days;  /* headline horizon, >= 1; 0: 1 */
    const kf_report_tick_t *ticks;
    size_t nticks;
    /* run identity: excluded from the digest */
    const char *request_id, *trace_id, *tenant_id;
    int64_t produced_at_ms; /* 0: absent */
} kf_report_meta_t;

#define KF_REPORT_META_INIT                 \
    {                                       \
        .sampling = KF_REPORT_SAMPLING_INIT \
    }

/* Fills meta from an InferenceResult as JSON (kf_avro_to_json of the record, or the
 * requests.result column): status, text, finish_reason, error, token counts, model, SHA-256,
 * lineage, ids, produced_at, and from metadata the report.* keys (confidence, horizon,
 * sampling). Strings are borrowed from `result`; meta->ticks is malloc'd: free it with
 * kf_report_meta_free(). Errors: KF_ERR_INVALID_ARG naming the field that is missing or has
 * the wrong type (request_id, status), KF_ERR_PARSE for a bad report.sampling value. */
kf_err_t kf_report_meta_from_result(const json_t *result,
                                    kf_report_meta_t *meta,
                                    char *errstr,
                                    size_t errstr_size);
void kf_report_meta_free(kf_report_meta_t *meta);

/* The sampling object as compact JSON with sorted keys (malloc'd, caller frees; NULL when
 * out of memory): the value of the report.sampling metadata key, e.g.
 * {"max_tokens":256,"min_p":0.0,"repetition_penalty":1.0,"seed":7,"temperature":0.0,...}. */
char *kf_report_sampling_json(const kf_report_sampling_t *s);

/* Assembles the document (new reference in *out_doc). rep must have been computed (its series
 * are used for the headline VaR/ES at meta->confidence and meta->horizon_days and for the
 * charts); nothing of rep or meta is kept. Errors: KF_ERR_INVALID_ARG for a confidence outside
 * (0, 1), a horizon < 1 or a report without returns; KF_ERR_NOMEM. */
kf_err_t kf_report_build(const kf_risk_report_t *rep,
                         const kf_report_meta_t *meta,
                         json_t **out_doc,
                         char *errstr,
                         size_t errstr_size);

/* Historical VaR and ES of `n` daily P&L scenarios (positive = loss) at confidence c over
 * `horizon_days` (square-root-of-time), with kf_risk's rule: k = ceil(n (1 - c)) clamped to
 * 1..n, VaR = k-th largest loss, ES = mean of the k largest. For c = 0.95/0.99 and horizons
 * 1/10 this equals kf_risk_compute's figures bit for bit. KF_ERR_INVALID_ARG when n == 0. */
kf_err_t kf_report_tail(const double *pnl,
                        size_t n,
                        double confidence,
                        int horizon_days,
                        double *out_var,
                        double *out_es,
                        int *out_k);

/* ---- rendering ------------------------------------------------------------------------- */

typedef enum kf_report_format {
    KF_REPORT_JSON = 0, /* canonical JSON: sorted keys, 2-space indent, trailing newline */
    KF_REPORT_MD,       /* GitHub-flavoured Markdown */
    KF_REPORT_HTML,     /* one self-contained page: inline CSS and SVG, no scripts, no links */
} kf_report_format_t;

/* "json", "md" (or "markdown"), "html". KF_ERR_INVALID_ARG naming the text otherwise. */
kf_err_t kf_report_format_parse(const char *name,
                                kf_report_format_t *out_fmt,
                                char *errstr,
                                size_t errstr_size);
/* File extension without the dot: "json", "md", "html". */
const char *kf_report_format_ext(kf_report_format_t fmt);

/* Appends the rendering of doc to out. Errors: KF_ERR_INVALID_ARG when doc is not an object,
 * KF_ERR_LIMIT / KF_ERR_NOMEM from the buffer. */
kf_err_t kf_report_render(
    const json_t *doc, kf_report_format_t fmt, kf_buf_t *out, char *errstr, size_t errstr_size);

/* Canonical JSON of any jansson value (the KF_REPORT_JSON form): object keys sorted by bytes,
 * arrays of scalars on one line, reals as the shortest of %.15g/%.16g/%.17g that reads back
 * exactly (integral values print without a fraction), non-finite reals as null, strings with
 * only the escapes JSON requires (plus \u007f and below as \uXXXX). */
kf_err_t kf_report_canonical_json(const json_t *json, kf_buf_t *out);

/* Appends text with &, <, >, " and ' escaped for HTML element content and attribute values;
 * invalid UTF-8 sequences and control characters other than \n and \t become U+FFFD. */
kf_err_t kf_report_html_escape(kf_buf_t *out, const char *text);

/* ---- the batch ------------------------------------------------------------------------- */

/* report.* keys (model, sampling, confidence, horizon, timeouts, tenant override, file
 * output) plus topics.requests and topics.results when no other table has them. */
extern const kf_conf_prop_t kf_report_conf_props[];
/* Registers the report table, the topics it needs and pg.* (each only when missing). */
kf_err_t kf_report_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* Progress of a batch: called after every state change (submitted, a result, a failure). */
typedef struct kf_report_progress {
    size_t total, submitted, done, failed;
    const char *portfolio_id; /* the portfolio that changed, or NULL */
    const char *what;         /* "submitted", "completed", "failed: <reason>" */
} kf_report_progress_t;
typedef void (*kf_report_progress_cb)(const kf_report_progress_t *p, void *opaque);

/* Outcome of one portfolio. */
typedef struct kf_report_outcome {
    char portfolio_id[128];
    char request_id[40];
    int ok;          /* files written */
    char digest[65]; /* document digest when ok */
    char error[512]; /* why not ok */
    char path[1024]; /* DIR/<portfolio>-<as_of> without extension, when ok */
} kf_report_outcome_t;

typedef struct kf_report_batch {
    const char *as_of;             /* YYYY-MM-DD (required) */
    const char *const *portfolios; /* NULL with all = 1 */
    size_t nportfolios;
    int all;                     /* every portfolio in the database, in id order */
    const char *out_dir;         /* created when missing */
    volatile sig_atomic_t *stop; /* may be NULL; polled while waiting for results */
    kf_report_progress_cb progress;
    void *progress_opaque;
} kf_report_batch_t;

/* Runs one batch through the pipeline: computes every portfolio's metrics from PostgreSQL as
 * of the date (a portfolio without data fails here and is not submitted), produces one
 * risk_report InferenceRequest per portfolio to topics.requests (tenant = the portfolio's
 * tenant unless report.tenant is set, sampling from report.*, the report.* metadata keys),
 * collects the InferenceResults from topics.results with a read_committed consumer assigned
 * at the end offsets taken before the first request was sent (no group), matching request
 * ids, and writes DIR/<portfolio>-<as_of>.{json,md,html} for every completed one.
 * *out_outcomes (malloc'd, *out_n entries, caller frees) says what happened to each.
 * Returns KF_OK when the batch ran (even if some reports failed: see the outcomes), or an
 * error that stopped it as a whole (PostgreSQL or Kafka unreachable, no portfolio, bad
 * configuration, KF_ERR_TIMEOUT after report.timeout with outcomes still filled). */
kf_err_t kf_report_run(const kf_conf_t *conf,
                       const kf_report_batch_t *batch,
                       kf_report_outcome_t **out_outcomes,
                       size_t *out_n,
                       char *errstr,
                       size_t errstr_size);

/* Loads a stored result from PostgreSQL (requests.result of request_id, any tenant), takes
 * the report parameters from its metadata (else from requests.request.risk), recomputes the
 * metrics as of the date and builds the document. Errors: KF_ERR_NOT_FOUND (no such request,
 * or no result yet: the message gives the status), KF_ERR_INVALID_ARG (not a risk report),
 * database and risk errors. */
kf_err_t kf_report_get(
    kf_pg_t *pg, const char *request_id, json_t **out_doc, char *errstr, size_t errstr_size);

/* `kinfer report` (declared for cli/main.c). */
int kf_cmd_report(int argc, char **argv);

#endif /* KF_REPORT_H */
