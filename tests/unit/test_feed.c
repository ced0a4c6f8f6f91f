/*
 * Unit tests of the market feed parser (producers/kf_feed.h): event times, CSV with header
 * and quoting, JSON lines, the field rules with their exact reasons, exact good/bad counts
 * over a whole input, the summary line and the MarketTick encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_avro.h"
#include "kf_feed.h"

static kf_err_t
parse_time(const char *s, int64_t *ms, char *errstr, size_t size)
{
    return kf_feed_parse_time(s, strlen(s), ms, errstr, size);
}

static void
test_time(void **state)
{
    (void)state;
    char e[256];
    int64_t ms = -1;
    assert_int_equal(parse_time("1970-01-01T00:00:00Z", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(ms, 0);
    /* 2026-10-30 is day 20756 since the epoch. */
    assert_int_equal(parse_time("2026-10-30T14:30:00.250Z", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(ms, 20756LL * 86400000 + 14 * 3600000 + 30 * 60000 + 250);
    assert_int_equal(parse_time("2026-10-30 16:30:00.25+02:00", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(ms, 20756LL * 86400000 + 14 * 3600000 + 30 * 60000 + 250);
    assert_int_equal(parse_time("2026-10-30t09:30:00.123456789-05:00", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(ms, 20756LL * 86400000 + 14 * 3600000 + 30 * 60000 + 123);
    assert_int_equal(parse_time("2024-02-29T00:00:00z", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(parse_time("1793370600250", &ms, e, sizeof(e)), KF_OK);
    assert_int_equal(ms, 1793370600250LL);
    char buf[40];
    assert_string_equal(kf_feed_format_time(20756LL * 86400000 + 52200250, buf, sizeof(buf)),
                        "2026-10-30T14:30:00.250Z");

    assert_int_equal(parse_time("2023-02-29T00:00:00Z", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_non_null(strstr(e, "not a valid date"));
    assert_int_equal(parse_time("2026-10-30T14:30:00", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_string_equal(e, "event_time: missing time zone (Z or +HH:MM)");
    assert_int_equal(parse_time("2026-10-30T14:30:60Z", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("2026-10-30T14:30:00.Z", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_string_equal(e, "event_time: fraction of a second needs 1 to 9 digits");
    assert_int_equal(parse_time("2026-10-30T14:30:00+0200", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("2026-10-30T14:30:00Zjunk", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("1969-12-31T23:59:59Z", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("1970-01-01T00:30:00+01:00", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("9999999999999999", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("-5", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_int_equal(parse_time("", &ms, e, sizeof(e)), KF_ERR_PARSE);
    assert_string_equal(e, "event_time is empty");
}

static void
test_format_names(void **state)
{
    (void)state;
    kf_feed_format_t f = KF_FEED_JSONL;
    assert_int_equal(kf_feed_format_from_path("/x/ticks.csv", &f), KF_OK);
    assert_int_equal(f, KF_FEED_CSV);
    assert_int_equal(kf_feed_format_from_path("ticks.ndjson", &f), KF_OK);
    assert_int_equal(f, KF_FEED_JSONL);
    assert_int_equal(kf_feed_format_from_path("ticks.jsonl", &f), KF_OK);
    assert_int_equal(kf_feed_format_from_path("a.csv/ticks", &f), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_feed_format_from_path("ticks.txt", &f), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_feed_format_from_name("csv", &f), KF_OK);
    assert_int_equal(f, KF_FEED_CSV);
    assert_int_equal(kf_feed_format_from_name("xml", &f), KF_ERR_INVALID_ARG);
}

/* Feeds `text` line by line; counts ticks and bad lines, records bad line numbers. */
typedef struct run_result {
    int ticks, bad, fatal_line;
    int bad_lines[32];
    kf_feed_tick_t last;
    char last_err[512];
} run_result_t;

static void
run_text(kf_feed_format_t fmt, const char *text, run_result_t *r)
{
    memset(r, 0, sizeof(*r));
    kf_feed_parser_t *p = NULL;
    char e[512];
    assert_int_equal(kf_feed_parser_new(fmt, &p, e, sizeof(e)), KF_OK);
    const char *s = text;
    int lineno = 0;
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        lineno++;
        kf_feed_tick_t t;
        int is_tick = 0;
        kf_err_t err = kf_feed_parser_line(p, s, len, &t, &is_tick, e, sizeof(e));
        if (err == KF_ERR_FORMAT) {
            r->fatal_line = lineno;
            snprintf(r->last_err, sizeof(r->last_err), "%s", e);
            break;
        }
        if (err) {
            if (r->bad < 32)
                r->bad_lines[r->bad] = lineno;
            r->bad++;
            snprintf(r->last_err, sizeof(r->last_err), "%s", e);
        } else if (is_tick) {
            r->ticks++;
            r->last = t;
        }
        s += len + (nl ? 1 : 0);
    }
    kf_feed_parser_destroy(p);
}

static void
test_csv(void **state)
{
    (void)state;
    run_result_t r;
    const char *text = "# comment\n"
                       "symbol,price,bid,ask,volume,event_time,source\n"
                       "AAPL,189.5,189.49,189.51,1200,2026-10-30T14:30:00Z,nyse\n"
                       "\n"
                       "MSFT,410,,,0,1793370600000,\n" /* 5: ok, no quotes */
                       "GOVT-USD-2Y,99.5,99.6,99.4,10,2026-10-30T14:30:00Z,x\n" /* 6: bid > ask */
                       "BTC,1e4,,,,2026-10-30T14:30:00Z,\"a, \"\"quoted\"\" source\"\r\n"
                       "ETH,nan,,,,2026-10-30T14:30:00Z,x\n"              /* 8: not a number */
                       "ETH,0x10,,,,2026-10-30T14:30:00Z,x\n"             /* 9: hex */
                       "ETH,10,,,,2026-10-30T14:30:00Z\n"                 /* 10: 6 fields */
                       "eth,10,,,,2026-10-30T14:30:00Z,x\n"               /* 11: lower case */
                       "ETH,0,,,,2026-10-30T14:30:00Z,x\n"                /* 12: price 0 */
                       "ETH,1,,,-3,2026-10-30T14:30:00Z,x\n"              /* 13: volume < 0 */
                       "ETH,1,,,,2026-10-30T14:30:00Z,\"open\n"           /* 14: unterminated */
                       "ETH,1,,,,2026-10-30T14:30:00Z,x\"y\n"             /* 15: stray quote */
                       "  ETH , 1 ,,,, 2026-10-30T14:30:00Z , spaced \n"; /* 16: trimmed, ok */
    run_text(KF_FEED_CSV, text, &r);
    assert_int_equal(r.fatal_line, 0);
    assert_int_equal(r.ticks, 4);
    assert_int_equal(r.bad, 9);
    const int want[] = {6, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int i = 0; i < 9; i++)
        assert_int_equal(r.bad_lines[i], want[i]);
    assert_string_equal(r.last.symbol, "ETH");
    assert_true(r.last.price == 1.0);
    assert_string_equal(r.last.source, "spaced");

    /* Field values and the reasons of single lines. */
    const char *hdr = "symbol,price,bid,ask,volume,event_time,source\n";
    char buf[512];
    snprintf(buf, sizeof(buf), "%sBTC,1e4,,,,2026-10-30T14:30:00Z,\"a, \"\"q\"\" s\"\r\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_int_equal(r.ticks, 1);
    assert_true(r.last.price == 10000.0);
    assert_int_equal(r.last.has_bid, 0);
    assert_int_equal(r.last.has_ask, 0);
    assert_true(r.last.volume == 0.0);
    assert_string_equal(r.last.source, "a, \"q\" s");
    snprintf(buf, sizeof(buf), "%sAAPL,189.5,189.49,189.51,1200,2026-10-30T14:30:00Z,nyse\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_int_equal(r.ticks, 1);
    assert_int_equal(r.last.has_bid, 1);
    assert_true(r.last.bid == 189.49);
    assert_true(r.last.ask == 189.51);
    assert_true(r.last.volume == 1200.0);
    assert_int_equal(r.last.event_time_ms, 20756LL * 86400000 + 52200000);
    snprintf(buf, sizeof(buf), "%sGOVT-USD-2Y,99.5,99.6,99.4,10,2026-10-30T14:30:00Z,x\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_string_equal(r.last_err, "bid 99.6 is above ask 99.4");
    snprintf(buf, sizeof(buf), "%sETH,10,,,,2026-10-30T14:30:00Z\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_string_equal(r.last_err, "6 fields, the header has 7");
    snprintf(buf, sizeof(buf), "%sETH,nan,,,,2026-10-30T14:30:00Z,x\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_string_equal(r.last_err, "price is not a decimal number: 'nan'");
    snprintf(buf, sizeof(buf), "%sTOOLONGSYMBOLTOOLONGSYMBOLTOOLONGX,1,,,,0,x\n", hdr);
    run_text(KF_FEED_CSV, buf, &r);
    assert_string_equal(r.last_err, "symbol is longer than 32 characters");

    /* Column order comes from the header; optional columns may be left out. */
    run_text(KF_FEED_CSV, "event_time,price,symbol\n0,2.5,X\n", &r);
    assert_int_equal(r.ticks, 1);
    assert_string_equal(r.last.symbol, "X");
    assert_true(r.last.price == 2.5);
    assert_string_equal(r.last.source, "");

    /* Header problems are fatal, at the header's line. */
    run_text(KF_FEED_CSV, "AAPL,1,,,,0,x\n", &r);
    assert_int_equal(r.fatal_line, 1);
    assert_non_null(strstr(r.last_err, "unknown column 'AAPL'"));
    run_text(KF_FEED_CSV, "#x\nsymbol,price\nA,1\n", &r);
    assert_int_equal(r.fatal_line, 2);
    assert_string_equal(r.last_err, "header: required column 'event_time' is missing");
    run_text(KF_FEED_CSV, "symbol,price,event_time,price\n", &r);
    assert_string_equal(r.last_err, "header: column 'price' repeated");
}

static void
test_jsonl(void **state)
{
    (void)state;
    run_result_t r;
    const char *text =
        "{\"symbol\":\"AAPL\",\"price\":189.5,\"bid\":null,\"ask\":189.6,\"volume\":5,"
        "\"event_time\":\"2026-10-30T14:30:00Z\",\"source\":\"j\"}\n"
        "{\"symbol\":\"AAPL\",\"price\":190,\"event_time\":1793370600001}\n"
        "{\"symbol\":\"AAPL\",\"price\":\"190\",\"event_time\":0}\n"              /* 3 */
        "{\"symbol\":\"AAPL\",\"price\":190,\"event_time\":0,\"extra\":1}\n"      /* 4 */
        "{\"symbol\":\"AAPL\",\"price\":190}\n"                                   /* 5 */
        "[1,2]\n"                                                                 /* 6 */
        "{\"symbol\":\"AAPL\",\"price\":190,\"event_time\":0,\"symbol\":\"X\"}\n" /* 7 */
        "{\"symbol\":\"AAPL\",\"price\":190,\"event_time\":-1}\n"                 /* 8 */
        "not json\n"                                                              /* 9 */
        "   \n"
        "{\"symbol\":\"AAPL\",\"price\":1,\"event_time\":0,\"source\":null}\n";
    run_text(KF_FEED_JSONL, text, &r);
    assert_int_equal(r.fatal_line, 0);
    assert_int_equal(r.ticks, 3);
    assert_int_equal(r.bad, 7);
    const int want[] = {3, 4, 5, 6, 7, 8, 9};
    for (int i = 0; i < 7; i++)
        assert_int_equal(r.bad_lines[i], want[i]);
    run_text(KF_FEED_JSONL, "{\"symbol\":\"AAPL\",\"price\":190,\"event_time\":0,\"extra\":1}", &r);
    assert_string_equal(r.last_err, "unknown key 'extra'");
    run_text(KF_FEED_JSONL, "{\"symbol\":\"AAPL\",\"price\":190}", &r);
    assert_string_equal(r.last_err, "event_time is required");
    run_text(KF_FEED_JSONL,
             "{\"symbol\":\"AAPL\",\"price\":189.5,\"bid\":null,\"ask\":189.6,\"volume\":5,"
             "\"event_time\":\"2026-10-30T14:30:00Z\",\"source\":\"j\"}",
             &r);
    assert_int_equal(r.ticks, 1);
    assert_int_equal(r.last.has_bid, 0);
    assert_int_equal(r.last.has_ask, 1);
    assert_true(r.last.ask == 189.6);
    assert_string_equal(r.last.source, "j");
}

static void
test_long_line(void **state)
{
    (void)state;
    kf_feed_parser_t *p = NULL;
    char e[256];
    assert_int_equal(kf_feed_parser_new(KF_FEED_JSONL, &p, e, sizeof(e)), KF_OK);
    size_t n = KF_FEED_LINE_MAX + 1;
    char *big = malloc(n);
    memset(big, 'a', n);
    kf_feed_tick_t t;
    int is_tick = 1;
    assert_int_equal(kf_feed_parser_line(p, big, n, &t, &is_tick, e, sizeof(e)), KF_ERR_LIMIT);
    assert_int_equal(is_tick, 0);
    assert_int_equal(kf_feed_parser_line(p, "{\"a\":\0}", 7, &t, &is_tick, e, sizeof(e)),
                     KF_ERR_PARSE);
    free(big);
    kf_feed_parser_destroy(p);
}

static void
test_summary(void **state)
{
    (void)state;
    kf_feed_stats_t st = {.published = 470, .bad = 3, .nbad_listed = 3};
    st.bad_lines[0] = 4;
    st.bad_lines[1] = 17;
    st.bad_lines[2] = 230;
    char buf[256];
    kf_feed_summary(&st, buf, sizeof(buf));
    assert_string_equal(buf, "published 470, bad 3 (lines 4, 17, 230)");
    st.bad = 30;
    st.delivery_failed = 2;
    kf_feed_summary(&st, buf, sizeof(buf));
    assert_string_equal(buf, "published 470, bad 30 (lines 4, 17, 230, ...), delivery failed 2");
    kf_feed_stats_t ok = {.published = 480};
    kf_feed_summary(&ok, buf, sizeof(buf));
    assert_string_equal(buf, "published 480, bad 0");
}

static void
test_encode(void **state)
{
    (void)state;
    kf_feed_tick_t t = {.symbol = "CASH-EUR",
                        .price = 1.0,
                        .has_ask = 1,
                        .ask = 1.0001,
                        .volume = 130,
                        .event_time_ms = 1793370600250LL};
    unsigned char *buf = NULL;
    size_t len = 0;
    char e[256];
    assert_int_equal(kf_feed_tick_encode(&t, "feed:x.csv", &buf, &len, e, sizeof(e)), KF_OK);
    json_t *j = NULL;
    assert_int_equal(kf_avro_decode_json(NULL, buf, len, NULL, &j, NULL, e, sizeof(e)), KF_OK);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(s, "{\"ask\":1.0001,\"bid\":null,\"event_time\":1793370600250,\"price\":1."
                           "0,\"source\":\"feed:x.csv\",\"symbol\":\"CASH-EUR\",\"volume\":130.0}");
    free(s);
    json_decref(j);
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),      cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_csv),       cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_long_line), cmocka_unit_test(test_summary),
        cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
