/*
 * kf_feed: the market data feed (`kinfer feed`). Reads ticks from a CSV or JSON-lines file
 * (or stdin) and publishes them as MarketTick records (schemas/MarketTick.avsc) to the
 * compacted market topic, keyed by symbol, so the topic always holds the latest tick of every
 * instrument (the enricher keeps that state in memory).
 *
 * Input formats (one tick per line; blank lines and lines starting with '#' are skipped):
 *
 *   CSV    a header line first, naming the columns in any order: symbol, price, event_time
 *          (required), bid, ask, volume, source (optional). Fields may be double-quoted
 *          (RFC 4180, "" inside quotes is a quote), a quoted field may not span lines.
 *          Empty bid/ask = unknown (null), empty volume = 0, empty source = the default.
 *   JSONL  one JSON object per line with the same keys; bid/ask may be null, event_time a
 *          string or an integer. Unknown keys are errors.
 *
 * Field rules: symbol 1..32 characters of A-Z 0-9 . - _ / : ^ = starting with a letter,
 * digit or '^'; price finite and > 0; bid/ask finite and >= 0 with bid <= ask when both are
 * given; volume finite and >= 0; event_time RFC 3339 ("2026-10-30T14:30:00.250Z",
 * "2026-10-30 16:30:00+02:00"; fractions beyond milliseconds are truncated) or integer epoch
 * milliseconds, years 1970..9999; source at most 128 bytes of UTF-8. Numbers are plain
 * decimals (no hex, inf or nan).
 *
 * A line that breaks a rule is a "bad line": it is counted and reported with its line number
 * and reason, never published and never dropped silently. A bad CSV header is fatal
 * (every line after it would be misread).
 *
 * Thread-safety: a parser is used by one thread at a time; the free functions are pure.
 */
#ifndef KF_FEED_H
#define KF_FEED_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kf_conf.h"
#include "kf_err.h"
#include "kf_kafka.h"

#define KF_FEED_SYMBOL_MAX   32
#define KF_FEED_SOURCE_MAX   128
#define KF_FEED_LINE_MAX     65536 /* longer lines are bad lines */
#define KF_FEED_BAD_LIST_MAX 20    /* line numbers kept for the summary */

/* Default topic of the market feed (config key topics.market). */
#define KF_FEED_TOPIC_DEFAULT "kinfer.market"

typedef enum kf_feed_format {
    KF_FEED_CSV = 0,
    KF_FEED_JSONL = 1,
} kf_feed_format_t;

/* One parsed tick. source is "" when the line gave none (the publisher fills the default). */
typedef struct kf_feed_tick {
    char symbol[KF_FEED_SYMBOL_MAX + 1];
    double price;
    int has_bid, has_ask;
    double bid, ask;
    double volume;
    int64_t event_time_ms;
    char source[KF_FEED_SOURCE_MAX + 1];
} kf_feed_tick_t;

/* ---- parsing (pure; the fuzz target drives these) ------------------------------------- */

/* "csv" / "jsonl" (also "json", "ndjson"). KF_ERR_INVALID_ARG naming the text otherwise. */
kf_err_t kf_feed_format_from_name(const char *name, kf_feed_format_t *out_format);
/* By extension: .csv -> CSV; .jsonl, .ndjson, .json -> JSONL. KF_ERR_NOT_FOUND otherwise. */
kf_err_t kf_feed_format_from_path(const char *path, kf_feed_format_t *out_format);

/* Parses an event time: RFC 3339 or epoch milliseconds (len bytes, not NUL-terminated).
 * KF_ERR_PARSE with the reason. */
kf_err_t
kf_feed_parse_time(const char *text, size_t len, int64_t *out_ms, char *errstr, size_t errstr_size);
/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) into buf (at least 32 bytes); returns buf. */
char *kf_feed_format_time(int64_t ms, char *buf, size_t size);

typedef struct kf_feed_parser kf_feed_parser_t;

kf_err_t kf_feed_parser_new(kf_feed_format_t format,
                            kf_feed_parser_t **out_parser,
                            char *errstr,
                            size_t errstr_size);
void kf_feed_parser_destroy(kf_feed_parser_t *parser);

/* Parses one line (len bytes without the newline; a trailing '\r' is ignored). On KF_OK
 * *out_is_tick is 1 when *out_tick holds a tick, 0 for a skipped line (blank, comment, the
 * CSV header). Errors: KF_ERR_PARSE (a bad line: errstr says why; the parser stays usable),
 * KF_ERR_FORMAT (a bad CSV header or no header: stop reading), KF_ERR_LIMIT (line too long). */
kf_err_t kf_feed_parser_line(kf_feed_parser_t *parser,
                             const char *line,
                             size_t len,
                             kf_feed_tick_t *out_tick,
                             int *out_is_tick,
                             char *errstr,
                             size_t errstr_size);

/* Encodes a tick as a MarketTick single-object record (source: the tick's, else
 * default_source, else ""). *out_buf is malloc'd (caller frees). */
kf_err_t kf_feed_tick_encode(const kf_feed_tick_t *tick,
                             const char *default_source,
                             unsigned char **out_buf,
                             size_t *out_len,
                             char *errstr,
                             size_t errstr_size);

/* ---- publishing ------------------------------------------------------------------------ */

/* Creates the market topic if it does not exist: `partitions` partitions, broker default
 * replication, cleanup.policy=compact. An existing topic is left as it is (KF_OK). kafka
 * carries the kafka.* connection keys. */
kf_err_t kf_feed_create_topic(const kf_kafka_kv_t *kafka,
                              size_t kafka_count,
                              const char *topic,
                              int partitions,
                              char *errstr,
                              size_t errstr_size);

typedef struct kf_feed_opts {
    const kf_kafka_kv_t *kafka; /* kafka.* keys for the producer and the admin client */
    size_t kafka_count;
    const char *topic; /* NULL: KF_FEED_TOPIC_DEFAULT */
    int partitions;    /* when creating the topic; 0: 3 */
    kf_feed_format_t format;
    double speed;           /* 0: as fast as possible; s > 0: event-time gaps divided by s */
    int loop;               /* replay the input forever (it must be seekable) until stopped */
    const char *source;     /* source of ticks that name none; NULL: "feed:<name>" */
    const char *name;       /* input name for messages and the default source ("stdin") */
    int64_t progress_every; /* log progress every N published ticks; 0: never */
    int quiet;              /* 1: no per-line stderr reports (the summary still counts) */
} kf_feed_opts_t;

typedef struct kf_feed_stats {
    uint64_t lines;                           /* lines read (all passes) */
    uint64_t published;                       /* ticks delivered (acks=all) */
    uint64_t bad;                             /* bad lines (all passes) */
    uint64_t delivery_failed;                 /* ticks the broker never acknowledged */
    uint64_t passes;                          /* completed passes over the input */
    uint64_t bad_lines[KF_FEED_BAD_LIST_MAX]; /* first bad line numbers (first pass) */
    size_t nbad_listed;
} kf_feed_stats_t;

/* Publishes every tick of `in` (borrowed), pacing by event time when opts->speed > 0: a tick
 * is sent when (event_time - first event_time) / speed has elapsed since the first one
 * (ticks whose time lies before the previous one go out at once). With loop, pass k adds
 * k * (span + 1 s) to every event time (span = last - first of pass 0), so replayed ticks are
 * newer than the ones before them and the latest state keeps moving. Stops at end of input
 * (no loop), or when kf_kafka_stop is set. Waits for every delivery before returning.
 * Returns KF_OK when the input was read (bad lines are counted in *out_stats, not errors),
 * KF_ERR_FORMAT for a bad CSV header, KF_ERR_IO when reading or rewinding fails, Kafka errors
 * from creating the producer or topic. *out_stats is filled in every case. */
kf_err_t kf_feed_run(const kf_feed_opts_t *opts,
                     FILE *in,
                     kf_feed_stats_t *out_stats,
                     char *errstr,
                     size_t errstr_size);

/* "published N, bad M (lines 4, 17, ...)" (the list only when M > 0; "..." when more than
 * were kept), plus ", delivery failed K" when K > 0. */
void kf_feed_summary(const kf_feed_stats_t *stats, char *buf, size_t size);

/* feed.* and topics.market configuration keys (see docs/enrich.md). */
extern const kf_conf_prop_t kf_feed_conf_props[];

/* `kinfer feed` (declared for cli/main.c). */
int kf_cmd_feed(int argc, char **argv);

#endif /* KF_FEED_H */
