/*
 * Unit tests of the enricher's market state (consumers/kf_enrich.h): latest tick by event
 * time with offsets breaking ties, late ticks ignored, tombstones, growth past the initial
 * table size, and decoding of market topic records (good, mismatched key, garbage, null).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_avro.h"
#include "kf_enrich.h"

static kf_market_entry_t
entry(const char *sym, double price, int64_t et, int32_t part, int64_t off)
{
    kf_market_entry_t e;
    memset(&e, 0, sizeof(e));
    snprintf(e.symbol, sizeof(e.symbol), "%s", sym);
    snprintf(e.topic, sizeof(e.topic), "kinfer.market");
    e.price = price;
    e.event_time_ms = et;
    e.partition = part;
    e.offset = off;
    return e;
}

static void
test_latest(void **state)
{
    (void)state;
    kf_market_state_t *ms = NULL;
    char err[256];
    assert_int_equal(kf_market_state_new(&ms, err, sizeof(err)), KF_OK);
    kf_market_entry_t e = entry("AAPL", 100, 1000, 0, 5), got;
    assert_int_equal(kf_market_state_get(ms, "AAPL", &got), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_market_state_apply(ms, &e), 1);
    e = entry("AAPL", 101, 2000, 0, 6);
    assert_int_equal(kf_market_state_apply(ms, &e), 1);
    /* Later offset but earlier event time: a late tick never moves the state back. */
    e = entry("AAPL", 99, 1500, 0, 7);
    assert_int_equal(kf_market_state_apply(ms, &e), 0);
    assert_int_equal(kf_market_state_get(ms, "AAPL", &got), KF_OK);
    assert_true(got.price == 101);
    assert_int_equal(got.offset, 6);
    /* Same event time: the higher offset wins, a lower one does not. */
    e = entry("AAPL", 102, 2000, 0, 8);
    assert_int_equal(kf_market_state_apply(ms, &e), 1);
    e = entry("AAPL", 103, 2000, 0, 4);
    assert_int_equal(kf_market_state_apply(ms, &e), 0);
    assert_int_equal(kf_market_state_get(ms, "AAPL", &got), KF_OK);
    assert_true(got.price == 102);
    assert_int_equal(got.offset, 8);
    assert_string_equal(got.topic, "kinfer.market");
    e = entry("MSFT", 400, 10, 1, 0);
    assert_int_equal(kf_market_state_apply(ms, &e), 1);
    assert_int_equal(kf_market_state_count(ms), 2);

    /* Tombstones delete only what was written before them, on the same partition. */
    assert_int_equal(kf_market_state_remove(ms, "AAPL", 0, 3), 0);
    assert_int_equal(kf_market_state_remove(ms, "AAPL", 1, 30), 0);
    assert_int_equal(kf_market_state_remove(ms, "AAPL", 0, 9), 1);
    assert_int_equal(kf_market_state_get(ms, "AAPL", &got), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_market_state_remove(ms, "NONE", 0, 9), 0);
    assert_int_equal(kf_market_state_count(ms), 1);
    kf_market_state_destroy(ms);
}

static void
test_many(void **state)
{
    (void)state;
    kf_market_state_t *ms = NULL;
    char err[256], sym[16];
    assert_int_equal(kf_market_state_new(&ms, err, sizeof(err)), KF_OK);
    for (int i = 0; i < 5000; i++) {
        snprintf(sym, sizeof(sym), "S%d", i);
        kf_market_entry_t e = entry(sym, i + 1, i, i % 3, i);
        assert_int_equal(kf_market_state_apply(ms, &e), 1);
    }
    assert_int_equal(kf_market_state_count(ms), 5000);
    for (int i = 0; i < 5000; i += 7) {
        snprintf(sym, sizeof(sym), "S%d", i);
        kf_market_entry_t got;
        assert_int_equal(kf_market_state_get(ms, sym, &got), KF_OK);
        assert_true(got.price == i + 1);
        assert_int_equal(got.offset, i);
    }
    kf_market_state_destroy(ms);
}

static unsigned char *
encode_tick(const char *json, size_t *len)
{
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    assert_non_null(j);
    unsigned char *buf = NULL;
    char err[256];
    assert_int_equal(kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_MARKET_TICK), j, &buf, len, err,
                                         sizeof(err)),
                     KF_OK);
    json_decref(j);
    return buf;
}

static void
test_records(void **state)
{
    (void)state;
    kf_market_state_t *ms = NULL;
    char err[256];
    assert_int_equal(kf_market_state_new(&ms, err, sizeof(err)), KF_OK);
    size_t len = 0;
    unsigned char *v = encode_tick("{\"symbol\":\"GOLD\",\"price\":1950.5,\"bid\":1950.25,"
                                   "\"ask\":null,\"volume\":10,\"event_time\":1793370600250,"
                                   "\"source\":\"sample\"}",
                                   &len);
    kf_kafka_record_t rec = {.topic = "t.market",
                             .partition = 2,
                             .offset = 41,
                             .key = "GOLD",
                             .key_len = 4,
                             .value = v,
                             .value_len = len};
    int applied = -1;
    assert_int_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)), KF_OK);
    assert_int_equal(applied, 1);
    kf_market_entry_t got;
    assert_int_equal(kf_market_state_get(ms, "GOLD", &got), KF_OK);
    assert_true(got.price == 1950.5);
    assert_int_equal(got.has_bid, 1);
    assert_true(got.bid == 1950.25);
    assert_int_equal(got.has_ask, 0);
    assert_true(got.volume == 10);
    assert_int_equal(got.event_time_ms, 1793370600250LL);
    assert_string_equal(got.source, "sample");
    assert_string_equal(got.topic, "t.market");
    assert_int_equal(got.partition, 2);
    assert_int_equal(got.offset, 41);

    /* The key must name the tick's symbol. */
    rec.key = "SILVER";
    rec.key_len = 6;
    rec.offset = 42;
    assert_int_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(err, "MarketTick symbol 'GOLD' differs from its key 'SILVER'");
    /* Garbage bytes: a decode error, the state unchanged. */
    rec.key = "GOLD";
    rec.key_len = 4;
    rec.value = "garbage!!!!!";
    rec.value_len = 12;
    assert_int_not_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_market_state_count(ms), 1);
    /* No key at all. */
    rec.key = NULL;
    rec.key_len = 0;
    assert_int_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    /* Tombstone after the tick removes it. */
    rec.key = "GOLD";
    rec.key_len = 4;
    rec.value = NULL;
    rec.value_len = 0;
    rec.offset = 50;
    assert_int_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)), KF_OK);
    assert_int_equal(applied, 1);
    assert_int_equal(kf_market_state_count(ms), 0);
    free(v);

    /* A tick with price 0 is rejected even though it decodes. */
    v = encode_tick("{\"symbol\":\"GOLD\",\"price\":0,\"event_time\":1}", &len);
    rec.value = v;
    rec.value_len = len;
    assert_int_equal(kf_market_state_apply_record(ms, &rec, &applied, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    free(v);
    kf_market_state_destroy(ms);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latest),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
