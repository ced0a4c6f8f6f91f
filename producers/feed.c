/*
 * feed.c: publishing side of `kinfer feed`: creates the compacted market topic, reads the
 * input line by line, paces ticks by event time, sends them through the idempotent producer
 * (key = symbol) and keeps the counts behind the final summary. Parsing is in feed_parse.c,
 * the command line in feed_cmd.c.
 */
#include "kf_feed.h"

#include "kf_log.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- topic ----------------------------------------------------------------------------- */

kf_err_t
kf_feed_create_topic(const kf_kafka_kv_t *kafka,
                     size_t kafka_count,
                     const char *topic,
                     int partitions,
                     char *errstr,
                     size_t errstr_size)
{
    /* Compacted: the enricher replays it from the beginning to rebuild the latest state. */
    static const kf_kafka_kv_t compact[] = {{"cleanup.policy", "compact"}};
    const char *topics[] = {topic};
    return kf_kafka_create_topics_ex(kafka, kafka_count, topics, 1, partitions, -1, compact, 1,
                                     15000, errstr, errstr_size);
}

/* ---- run ------------------------------------------------------------------------------- */

static int64_t
kf_feed_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct kf_feed_run_state {
    kf_feed_stats_t *stats;
    uint64_t acked; /* delivery reports received, good or bad */
} kf_feed_run_state_t;

static void
kf_feed_on_delivery(const kf_kafka_delivery_t *dr, void *opaque)
{
    kf_feed_run_state_t *rs = opaque;
    rs->acked++;
    if (dr->err == KF_OK) {
        rs->stats->published++;
    } else {
        rs->stats->delivery_failed++;
        kf_log(KF_LOG_ERROR, "feed", "tick not delivered to %s: %s", dr->topic, dr->errmsg);
    }
}

/* Waits until wall-clock `target` (monotonic ms), serving delivery reports and watching the
 * stop flag. */
static void
kf_feed_wait_until(kf_producer_t *producer, int64_t target)
{
    for (;;) {
        int64_t left = target - kf_feed_mono_ms();
        if (left <= 0 || kf_kafka_stop)
            return;
        kf_producer_poll(producer, (int)(left > 100 ? 100 : left));
    }
}

void
kf_feed_summary(const kf_feed_stats_t *st, char *buf, size_t size)
{
    size_t off = 0;
#define KF_FEED_PUT(...)                                                        \
    do {                                                                        \
        int w_ = snprintf(buf + off, off < size ? size - off : 0, __VA_ARGS__); \
        if (w_ > 0)                                                             \
            off += (size_t)w_;                                                  \
    } while (0)
    KF_FEED_PUT("published %llu, bad %llu", (unsigned long long)st->published,
                (unsigned long long)st->bad);
    if (st->bad > 0 && st->nbad_listed > 0) {
        KF_FEED_PUT(" (line%s ", st->nbad_listed > 1 ? "s" : "");
        for (size_t i = 0; i < st->nbad_listed; i++)
            KF_FEED_PUT("%s%llu", i ? ", " : "", (unsigned long long)st->bad_lines[i]);
        /* More bad lines than were kept (later ones, or repeats in later loop passes). */
        KF_FEED_PUT("%s)", st->bad > st->nbad_listed ? ", ..." : "");
    }
    if (st->delivery_failed)
        KF_FEED_PUT(", delivery failed %llu", (unsigned long long)st->delivery_failed);
#undef KF_FEED_PUT
}

kf_err_t
kf_feed_run(const kf_feed_opts_t *opts,
            FILE *in,
            kf_feed_stats_t *out_stats,
            char *errstr,
            size_t errstr_size)
{
    KF_ASSERT(opts && in && out_stats);
    memset(out_stats, 0, sizeof(*out_stats));
    const char *topic = opts->topic ? opts->topic : KF_FEED_TOPIC_DEFAULT;
    const char *name = opts->name ? opts->name : "stdin";
    char default_source[KF_FEED_SOURCE_MAX + 1];
    snprintf(default_source, sizeof(default_source), "%s", opts->source ? opts->source : "");
    if (!opts->source) {
        const char *base = strrchr(name, '/');
        snprintf(default_source, sizeof(default_source), "feed:%s", base ? base + 1 : name);
    }
    kf_feed_run_state_t rs = {.stats = out_stats};
    kf_producer_t *producer = NULL;
    kf_feed_parser_t *parser = NULL;
    char *line = NULL;
    size_t cap = 0;
    kf_err_t err =
        kf_feed_create_topic(opts->kafka, opts->kafka_count, topic,
                             opts->partitions > 0 ? opts->partitions : 3, errstr, errstr_size);
    if (err)
        goto out;
    err = kf_producer_new(opts->kafka, opts->kafka_count, &producer, errstr, errstr_size);
    if (err)
        goto out;

    int64_t first_et = 0, last_et = 0, shift = 0, sent = 0;
    int have_et = 0, have_anchor = 0;
    int64_t anchor_wall = 0, anchor_et = 0;
    int64_t t_start = kf_feed_mono_ms();
    for (uint64_t pass = 0; !kf_kafka_stop; pass++) {
        kf_feed_parser_destroy(parser);
        parser = NULL;
        if ((err = kf_feed_parser_new(opts->format, &parser, errstr, errstr_size)))
            goto out;
        uint64_t lineno = 0;
        ssize_t n;
        while (!kf_kafka_stop && (n = getline(&line, &cap, in)) >= 0) {
            lineno++;
            out_stats->lines++;
            size_t len = (size_t)n;
            if (len > 0 && line[len - 1] == '\n')
                len--;
            kf_feed_tick_t tick;
            int is_tick = 0;
            char why[512];
            kf_err_t perr =
                kf_feed_parser_line(parser, line, len, &tick, &is_tick, why, sizeof(why));
            if (perr == KF_ERR_FORMAT) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s:%llu: %s", name,
                                 (unsigned long long)lineno, why);
                goto out;
            }
            if (perr) {
                out_stats->bad++;
                if (pass == 0 && out_stats->nbad_listed < KF_FEED_BAD_LIST_MAX)
                    out_stats->bad_lines[out_stats->nbad_listed++] = lineno;
                if (!opts->quiet)
                    fprintf(stderr, "kinfer feed: %s:%llu: bad line: %s\n", name,
                            (unsigned long long)lineno, why);
                continue;
            }
            if (!is_tick)
                continue;
            if (pass == 0) {
                /* The loop shift spans the whole first pass, in event time. */
                if (!have_et || tick.event_time_ms < first_et)
                    first_et = tick.event_time_ms;
                if (!have_et || tick.event_time_ms > last_et)
                    last_et = tick.event_time_ms;
                have_et = 1;
            }
            tick.event_time_ms += shift;
            if (opts->speed > 0) {
                if (!have_anchor) {
                    anchor_wall = kf_feed_mono_ms();
                    anchor_et = tick.event_time_ms;
                    have_anchor = 1;
                } else if (tick.event_time_ms > anchor_et) {
                    double gap = (double)(tick.event_time_ms - anchor_et) / opts->speed;
                    kf_feed_wait_until(producer, anchor_wall + (int64_t)gap);
                    if (kf_kafka_stop)
                        break;
                }
            }
            unsigned char *buf = NULL;
            size_t buf_len = 0;
            char eerr[512];
            kf_err_t serr =
                kf_feed_tick_encode(&tick, default_source, &buf, &buf_len, eerr, sizeof(eerr));
            if (serr) {
                /* The parser accepted it, so this is a bug, but still a reported bad line. */
                out_stats->bad++;
                if (pass == 0 && out_stats->nbad_listed < KF_FEED_BAD_LIST_MAX)
                    out_stats->bad_lines[out_stats->nbad_listed++] = lineno;
                fprintf(stderr, "kinfer feed: %s:%llu: cannot encode: %s\n", name,
                        (unsigned long long)lineno, eerr);
                continue;
            }
            kf_kafka_msg_t msg = {.topic = topic,
                                  .partition = KF_KAFKA_PARTITION_ANY,
                                  .key = tick.symbol,
                                  .key_len = strlen(tick.symbol),
                                  .value = buf,
                                  .value_len = buf_len};
            serr = kf_producer_send_async(producer, &msg, kf_feed_on_delivery, &rs, eerr,
                                          sizeof(eerr));
            free(buf);
            if (serr) {
                err = kf_err_set(errstr, errstr_size, serr, "producing to %s: %s", topic, eerr);
                goto out;
            }
            sent++;
            kf_producer_poll(producer, 0);
            if (opts->progress_every > 0 && sent % opts->progress_every == 0) {
                double secs = (double)(kf_feed_mono_ms() - t_start) / 1000.0;
                kf_log(
                    KF_LOG_INFO, "feed", "%s: sent %lld ticks (%.0f/s), delivered %llu, bad %llu",
                    name, (long long)sent, secs > 0 ? (double)sent / secs : 0.0,
                    (unsigned long long)out_stats->published, (unsigned long long)out_stats->bad);
            }
        }
        if (ferror(in)) {
            err =
                kf_err_set(errstr, errstr_size, KF_ERR_IO, "reading %s: %s", name, strerror(errno));
            goto out;
        }
        if (kf_kafka_stop)
            break;
        out_stats->passes++;
        if (!opts->loop)
            break;
        if (!have_et) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                             "%s: --loop over an input without a single good tick", name);
            goto out;
        }
        shift += (last_et - first_et) + 1000;
        if (fseek(in, 0, SEEK_SET) != 0) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot rewind %s for --loop: %s",
                             name, strerror(errno));
            goto out;
        }
        clearerr(in);
    }

out:
    if (producer) {
        char ferr[256];
        /* Every send gets its report before the counts are final. */
        if (kf_producer_flush(producer, 30000, ferr, sizeof(ferr)) != KF_OK && !err)
            err = kf_err_set(errstr, errstr_size, KF_ERR_TIMEOUT, "flush: %s", ferr);
        kf_producer_destroy(producer);
    }
    kf_feed_parser_destroy(parser);
    free(line);
    return err;
}
