/*
 * kf_enrich: the enrichment stage (`kinfer enrich`) and the in-memory market state it joins.
 *
 * The stage is a consumer group on the requests topic running exactly-once transactions
 * (core kf_txn): for each InferenceRequest it loads the context from PostgreSQL with prepared
 * statements (tenant, customer, portfolio positions with instruments, risk limits, the prompt
 * template of the task), joins the latest market tick of every symbol involved, renders the
 * prompt and produces an InferenceJob that records the market offsets it used (lineage). The
 * job (or a failed InferenceResult when context is missing) and the input offset commit in
 * one Kafka transaction. PostgreSQL outages abort the transaction and retry with backoff;
 * undecodable records go to the dead-letter topic. Rendering rules: docs/enrich.md.
 *
 * The market state is a table of the latest MarketTick per symbol, kept like a Kafka Streams
 * GlobalKTable: a separate consumer (no group) assigned every partition of the compacted
 * market topic from the beginning, in a background thread; kf_enrich_new() returns only once
 * it has caught up with the high watermarks of its start.
 *
 *   kf_conf_t *conf = kf_conf_new();
 *   kf_enrich_conf_register(conf, errstr, sizeof(errstr));
 *   ... kf_conf_load_file / kf_conf_load_env / kf_conf_set ...
 *   kf_enrich_t *e;
 *   if (kf_enrich_new(conf, &e, errstr, sizeof(errstr)) == KF_OK) {
 *       kf_enrich_run(e, errstr, sizeof(errstr));   // until kf_kafka_stop / kf_enrich_stop
 *       kf_enrich_destroy(e);
 *   }
 *
 * Thread-safety: a kf_enrich_t runs in one thread; kf_enrich_stop() may be called from any.
 * The market state is safe for concurrent readers and one writer.
 */
#ifndef KF_ENRICH_H
#define KF_ENRICH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_kafka.h"
#include "kf_pg.h"

/* ---- market state ---------------------------------------------------------------------- */

#define KF_MARKET_SYMBOL_MAX 32
#define KF_MARKET_SOURCE_MAX 128
#define KF_MARKET_TOPIC_MAX  249 /* Kafka's limit on topic names */

/* The latest tick of one symbol and where it was read (topic, partition, offset). */
typedef struct kf_market_entry {
    char symbol[KF_MARKET_SYMBOL_MAX + 1];
    double price;
    int has_bid, has_ask;
    double bid, ask;
    double volume;
    int64_t event_time_ms;
    char source[KF_MARKET_SOURCE_MAX + 1];
    char topic[KF_MARKET_TOPIC_MAX + 1];
    int32_t partition;
    int64_t offset;
} kf_market_entry_t;

typedef struct kf_market_state kf_market_state_t;

kf_err_t kf_market_state_new(kf_market_state_t **out_ms, char *errstr, size_t errstr_size);
void kf_market_state_destroy(kf_market_state_t *ms);

/* Offers a tick. It replaces the stored one when its event time is later, or equal with a
 * higher offset (a replayed or re-sent tick with the same time: the later record wins), and
 * is ignored otherwise, so a late, out-of-order tick never moves the state back in time.
 * Returns 1 when stored, 0 when ignored; -1 when out of memory. */
int kf_market_state_apply(kf_market_state_t *ms, const kf_market_entry_t *entry);

/* A tombstone (null value) for `symbol` read at (partition, offset): removes the entry when
 * that offset is past the stored one's. Returns 1 when removed, 0 otherwise. */
int kf_market_state_remove(kf_market_state_t *ms,
                           const char *symbol,
                           int32_t partition,
                           int64_t offset);

/* Decodes a market topic record (key = symbol, value = MarketTick or null) and applies it.
 * KF_ERR_PARSE / KF_ERR_UNKNOWN_SCHEMA for undecodable values, KF_ERR_INVALID_ARG when the key
 * and the tick's symbol differ or the tick breaks the feed's rules (price <= 0, ...).
 * *out_applied (may be NULL) as kf_market_state_apply. */
kf_err_t kf_market_state_apply_record(kf_market_state_t *ms,
                                      const kf_kafka_record_t *rec,
                                      int *out_applied,
                                      char *errstr,
                                      size_t errstr_size);

/* Copies the entry of `symbol` into *out. KF_ERR_NOT_FOUND when there is none. */
kf_err_t kf_market_state_get(kf_market_state_t *ms, const char *symbol, kf_market_entry_t *out);
size_t kf_market_state_count(kf_market_state_t *ms);

/* The background reader of the market topic. */
typedef struct kf_market_follower kf_market_follower_t;

/* Starts a consumer without a group (kafka.group.id and kafka.transactional.id in `kafka` are
 * ignored), assigned every partition of `topic` from the beginning, feeding `ms` (borrowed;
 * it must outlive the follower) from its own thread. Returns once every partition has been
 * read up to the high watermark it had at the start. Errors: KF_ERR_NOT_FOUND (no such
 * topic), KF_ERR_TIMEOUT (not caught up within catchup_timeout_ms), Kafka errors. Records
 * that cannot be applied are logged and counted, never fatal. */
kf_err_t kf_market_follower_start(const kf_kafka_kv_t *kafka,
                                  size_t kafka_count,
                                  const char *topic,
                                  kf_market_state_t *ms,
                                  int64_t catchup_timeout_ms,
                                  kf_market_follower_t **out_follower,
                                  char *errstr,
                                  size_t errstr_size);
/* Records read, applied (stored or ignored as older) and rejected so far. */
void
kf_market_follower_counts(kf_market_follower_t *follower, uint64_t *out_read, uint64_t *out_bad);
/* Waits until the follower has read every partition up to its CURRENT high watermark (for
 * tests and tools that just published ticks). KF_ERR_TIMEOUT after timeout_ms. */
kf_err_t kf_market_follower_sync(kf_market_follower_t *follower,
                                 int64_t timeout_ms,
                                 char *errstr,
                                 size_t errstr_size);
/* Stops the thread, closes the consumer, frees. NULL is a no-op. */
void kf_market_follower_destroy(kf_market_follower_t *follower);

/* ---- prompt rendering (pure) ----------------------------------------------------------- */

/* A template variable: `{{name}}` in a template is replaced by value. */
typedef struct kf_enrich_var {
    const char *name;
    const char *value;
} kf_enrich_var_t;

/* Renders `tmpl`: every `{{ name }}` (spaces inside the braces optional; names of a-z, 0-9,
 * '_' and '.') is replaced by the value of the variable of that name, verbatim: values are
 * never rendered again, so a "{{...}}" inside a client's prompt stays as it is. Any other text
 * is copied. On KF_OK *out_text is malloc'd (caller frees). Errors: KF_ERR_NOT_FOUND for a
 * placeholder without a variable, KF_ERR_PARSE for an unterminated or malformed placeholder;
 * the message names the placeholder and its byte offset. */
kf_err_t kf_enrich_render(const char *tmpl,
                          const kf_enrich_var_t *vars,
                          size_t nvars,
                          char **out_text,
                          char *errstr,
                          size_t errstr_size);

/* Formats a double as the shorter of %.15g and %.17g that reads back exactly. */
char *kf_enrich_fmt_num(double v, char *buf, size_t size);

/* One market line as rendered into prompts (docs/enrich.md), without a newline:
 *   "- AAPL: price 189.5, bid 189.49, ask 189.51, volume 1200 at 2026-10-30T14:30:00.000Z"
 * with "bid n/a"/"ask n/a" for unknown quotes; e == NULL gives "- SYM: no market data".
 * Appends to the malloc'd NUL-terminated *text (may start NULL); KF_ERR_NOMEM on failure. */
kf_err_t kf_enrich_market_line(const char *symbol, const kf_market_entry_t *e, char **text);

/* ---- the stage ------------------------------------------------------------------------- */

/* Renderer hook of task risk_report: computes the risk metrics of `portfolio_id` as of
 * `as_of` ("YYYY-MM-DD", never NULL: the enricher passes today's UTC date for a null as_of)
 * from PostgreSQL and returns them as a new JSON object. Errors: KF_ERR_NOT_FOUND (unknown
 * portfolio, missing data: the request fails with errstr), retriable errors (the batch is
 * retried), anything else fails the request. */
typedef kf_err_t (*kf_enrich_risk_fn)(void *opaque,
                                      kf_pg_t *pg,
                                      const char *portfolio_id,
                                      const char *as_of,
                                      json_t **out_metrics,
                                      char *errstr,
                                      size_t errstr_size);

/* The hook built from risk/kf_risk.h when the consumers library is compiled with access to
 * it (kf_risk_db_load + kf_risk_compute + kf_risk_report_to_json); NULL otherwise, in which
 * case risk_report requests fail with "risk_report not available in this build". */
extern const kf_enrich_risk_fn kf_enrich_risk_default;

/* One-line summary of a risk report (the JSON the risk hook returns) for the {{risk.summary}}
 * placeholder, in the fixed field order the demo model was trained on
 * (tools/demo-model/corpus.py), e.g.
 *   Portfolio P001 as of 2026-10-30: value 32.2M USD; 1-day 99% VaR 1,004,900 (3.12%);
 *   ES 1,102,400 (3.42%); volatility 10.4%; max drawdown -24.9%; top exposures Utilities
 *   37.1%, Corporate 16.7%, Financials 15.6%; VaR limit 2.00%; breaches: 1 (VaR 3.12% >
 *   2.00%); stress gfc_2008 -33.0%.
 * VaR and ES are the historical figures at `confidence` (0.95 or 0.99) and `horizon_days`
 * (1 or 10), amounts rounded to hundreds. Returns a malloc'd string, or NULL when the JSON
 * lacks a required figure (value, the chosen VaR/ES) or memory runs out. */
char *kf_enrich_risk_summary(const json_t *metrics,
                             const char *portfolio_id,
                             const char *as_of,
                             double confidence,
                             int horizon_days);

typedef struct kf_enrich kf_enrich_t;

/* Configuration keys: topics.requests/.market/.jobs/.results/.audit, enrich.* and pg.*. */
extern const kf_conf_prop_t kf_enrich_conf_props[];
/* Registers the enrich and pg tables on conf. */
kf_err_t kf_enrich_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size);

/* Connects to PostgreSQL (failing with KF_ERR_UNAVAILABLE when it is down at start), creates
 * the topics (market compacted), starts the market follower and waits until it has caught
 * up, then creates the transactional consumer/producer and the audit producer. conf is read
 * here and not kept. */
kf_err_t kf_enrich_new(const kf_conf_t *conf, kf_enrich_t **out, char *errstr, size_t errstr_size);

/* Replaces the risk_report hook (NULL: risk_report requests fail as not available). */
void kf_enrich_set_risk_fn(kf_enrich_t *e, kf_enrich_risk_fn fn, void *opaque);

/* One transaction: up to enrich.batch.max requests (waiting up to timeout_ms for the first).
 * Audit events of the batch are emitted only after it committed. *out_committed (may be NULL)
 * gets the number of input records committed. KF_ERR_KAFKA is fatal (destroy and exit). */
kf_err_t kf_enrich_poll(
    kf_enrich_t *e, int timeout_ms, size_t *out_committed, char *errstr, size_t errstr_size);
/* Loops kf_enrich_poll() until kf_kafka_stop or kf_enrich_stop(). */
kf_err_t kf_enrich_run(kf_enrich_t *e, char *errstr, size_t errstr_size);
void kf_enrich_stop(kf_enrich_t *e);

typedef struct kf_enrich_stats {
    uint64_t jobs;        /* InferenceJobs committed */
    uint64_t failed;      /* failed InferenceResults committed (missing context, bad request) */
    uint64_t dead_letter; /* undecodable requests sent to the dead-letter topic */
    uint64_t retries;     /* batches aborted for a retriable error (PostgreSQL down, ...) */
} kf_enrich_stats_t;
void kf_enrich_get_stats(const kf_enrich_t *e, kf_enrich_stats_t *out);

/* The market state of the stage (borrowed, valid until kf_enrich_destroy) and its follower. */
kf_market_state_t *kf_enrich_market(kf_enrich_t *e);
kf_market_follower_t *kf_enrich_follower(kf_enrich_t *e);

/* Aborts an open transaction, stops the follower, flushes audit events, frees. NULL ok. */
void kf_enrich_destroy(kf_enrich_t *e);

/* `kinfer enrich` (declared for cli/main.c). */
int kf_cmd_enrich(int argc, char **argv);

#endif /* KF_ENRICH_H */
