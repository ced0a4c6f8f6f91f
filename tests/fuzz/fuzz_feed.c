/*
 * libFuzzer target for the market feed line parsers (producers/feed_parse.c).
 *
 * Input: first byte picks the format (even: CSV, odd: JSON lines), the rest is the file.
 * Properties checked on every tick the parser accepts: it obeys the field rules of
 * kf_feed.h, it encodes as a MarketTick the Avro decoder reads back with the same symbol and
 * time, and its event time formatted as RFC 3339 parses back to the same millisecond.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf_avro.h"
#include "kf_feed.h"

static void
kf_fuzz_check(const kf_feed_tick_t *t)
{
    char errstr[512];
    if (!(t->price > 0) || !isfinite(t->price) || t->volume < 0 || !isfinite(t->volume) ||
        (t->has_bid && (t->bid < 0 || !isfinite(t->bid))) ||
        (t->has_ask && (t->ask < 0 || !isfinite(t->ask))) ||
        (t->has_bid && t->has_ask && t->bid > t->ask) || t->event_time_ms < 0 ||
        strlen(t->symbol) == 0)
        abort();
    unsigned char *buf = NULL;
    size_t len = 0;
    if (kf_feed_tick_encode(t, "fuzz", &buf, &len, errstr, sizeof(errstr)) != KF_OK)
        abort();
    json_t *j = NULL;
    if (kf_avro_decode_json(NULL, buf, len, NULL, &j, NULL, errstr, sizeof(errstr)) != KF_OK)
        abort();
    if (strcmp(json_string_value(json_object_get(j, "symbol")), t->symbol) ||
        json_integer_value(json_object_get(j, "event_time")) != t->event_time_ms)
        abort();
    json_decref(j);
    free(buf);
    char ts[64];
    int64_t back = -1;
    kf_feed_format_time(t->event_time_ms, ts, sizeof(ts));
    if (kf_feed_parse_time(ts, strlen(ts), &back, errstr, sizeof(errstr)) != KF_OK ||
        back != t->event_time_ms)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    kf_feed_format_t fmt = (data[0] & 1) ? KF_FEED_JSONL : KF_FEED_CSV;
    const char *s = (const char *)data + 1;
    size_t left = size - 1;
    kf_feed_parser_t *p = NULL;
    char errstr[512];
    if (kf_feed_parser_new(fmt, &p, errstr, sizeof(errstr)) != KF_OK)
        abort();
    while (left > 0) {
        const char *nl = memchr(s, '\n', left);
        size_t len = nl ? (size_t)(nl - s) : left;
        kf_feed_tick_t t;
        int is_tick = 0;
        kf_err_t err = kf_feed_parser_line(p, s, len, &t, &is_tick, errstr, sizeof(errstr));
        if (err == KF_ERR_FORMAT)
            break;
        if (err == KF_OK && is_tick)
            kf_fuzz_check(&t);
        if (err != KF_OK && is_tick)
            abort(); /* a rejected line never yields a tick */
        size_t step = len + (nl ? 1 : 0);
        s += step;
        left -= step;
    }
    kf_feed_parser_destroy(p);
    return 0;
}
