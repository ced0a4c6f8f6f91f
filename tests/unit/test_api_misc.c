/*
 * test_api_misc: the HTTP API's token bucket arithmetic, router, key hashing and UUID check,
 * and docs/openapi.json against the server's route table in both directions (every
 * documented operation is served; every served route is documented).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void
test_bucket_burst_then_refill(void **state)
{
    (void)state;
    kf_api_bucket_t b = {0};
    int retry = 0;
    int64_t t = 1000000;
    /* A fresh bucket holds the whole burst. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kf_api_bucket_take(&b, 1.0, 3.0, t, &retry), 1);
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 3.0, t, &retry), 0);
    assert_int_equal(retry, 1);
    /* Half a second refills half a token: still empty, one second to wait (rounded up). */
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 3.0, t + 500000, &retry), 0);
    assert_int_equal(retry, 1);
    assert_true(b.tokens > 0.49 && b.tokens < 0.51);
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 3.0, t + 1000000, &retry), 1);
    assert_true(b.tokens < 1e-9);
    /* Refill never exceeds the burst, however long the pause. */
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 3.0, t + 1000000000LL, &retry), 1);
    assert_true(b.tokens > 1.99 && b.tokens < 2.01);
}

static void
test_bucket_slow_rate_retry_after(void **state)
{
    (void)state;
    kf_api_bucket_t b = {0};
    int retry = 0;
    assert_int_equal(kf_api_bucket_take(&b, 0.1, 1.0, 5000000, &retry), 1);
    assert_int_equal(kf_api_bucket_take(&b, 0.1, 1.0, 5000000, &retry), 0);
    assert_int_equal(retry, 10); /* one token at 0.1/s */
    assert_int_equal(kf_api_bucket_take(&b, 0.1, 1.0, 12000000, &retry), 0);
    assert_int_equal(retry, 3); /* 0.7 tokens there: 0.3 more = 3 s */
    assert_int_equal(kf_api_bucket_take(&b, 0.1, 1.0, 15000000, &retry), 1);
}

static void
test_bucket_rate_sustained(void **state)
{
    (void)state;
    /* 100/s with burst 10 over 10 simulated seconds, asking every millisecond: exactly
     * burst + rate * time tokens are granted. */
    kf_api_bucket_t b = {0};
    int granted = 0, retry;
    for (int64_t ms = 1; ms <= 10000; ms++)
        granted += kf_api_bucket_take(&b, 100.0, 10.0, ms * 1000, &retry);
    assert_true(granted >= 1008 && granted <= 1010);
}

static void
test_bucket_clock_backwards(void **state)
{
    (void)state;
    kf_api_bucket_t b = {0};
    int retry;
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 1.0, 10000000, &retry), 1);
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 1.0, 5000000, &retry), 0);
    assert_int_equal(b.last_us, 10000000);
    assert_int_equal(kf_api_bucket_take(&b, 1.0, 1.0, 11000000, &retry), 1);
}

static void
test_routing(void **state)
{
    (void)state;
    char param[64], allow[64];
    const kf_api_route_t *r;
    assert_int_equal(
        kf_api_route_match("POST", "/v1/requests", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_REQ_CREATE);
    assert_string_equal(r->label, "requests_create");
    assert_int_equal(kf_api_route_match("GET", "/v1/requests/abc-1", param, sizeof(param), allow,
                                        sizeof(allow), &r),
                     KF_API_ROUTE_REQ_GET);
    assert_string_equal(param, "abc-1");
    assert_int_equal(kf_api_route_match("DELETE", "/v1/requests/x", param, sizeof(param), allow,
                                        sizeof(allow), &r),
                     KF_API_ROUTE_REQ_CANCEL);
    assert_int_equal(
        kf_api_route_match("POST", "/v1/batches", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_BATCH_CREATE);
    assert_int_equal(
        kf_api_route_match("GET", "/v1/batches/b1", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_BATCH_GET);
    assert_string_equal(param, "b1");
    assert_int_equal(kf_api_route_match("GET", "/v1/batches/b2/results", param, sizeof(param),
                                        allow, sizeof(allow), &r),
                     KF_API_ROUTE_BATCH_RESULTS);
    assert_string_equal(param, "b2");
    assert_int_equal(
        kf_api_route_match("GET", "/healthz", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_HEALTHZ);
    assert_int_equal(
        kf_api_route_match("GET", "/readyz", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_READYZ);
    assert_int_equal(
        kf_api_route_match("GET", "/metrics", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_METRICS);

    /* 405 with the methods the path does take. */
    assert_int_equal(
        kf_api_route_match("PUT", "/v1/requests/x", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_METHOD);
    assert_string_equal(allow, "GET, DELETE");
    assert_null(r);
    assert_int_equal(
        kf_api_route_match("GET", "/v1/requests", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(
        kf_api_route_match("POST", "/healthz", param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_METHOD);

    /* 404s: unknown paths, empty or extra segments, trailing slashes. */
    const char *missing[] = {"/",
                             "/v1",
                             "/v1/requests/",
                             "/v1/requests/a/b",
                             "/v1/batches/a/results/x",
                             "/v2/requests",
                             "/healthz/",
                             "/v1/requestsx",
                             "/v1/batches//results"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        if (kf_api_route_match("GET", missing[i], param, sizeof(param), allow, sizeof(allow), &r) !=
            KF_API_ROUTE_NONE)
            fail_msg("'%s' should be 404", missing[i]);

    /* An id longer than the parameter buffer is not a match (404), not a truncation. */
    char longpath[200];
    snprintf(longpath, sizeof(longpath), "/v1/requests/%0100d", 0);
    assert_int_equal(
        kf_api_route_match("GET", longpath, param, sizeof(param), allow, sizeof(allow), &r),
        KF_API_ROUTE_NONE);
}

static void
test_key_hash_and_uuid(void **state)
{
    (void)state;
    char hex[65];
    assert_int_equal(kf_api_key_sha256_hex("abc", 3, hex), KF_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(kf_api_key_sha256_hex("", 0, hex), KF_OK);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    assert_true(kf_api_is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
    assert_true(kf_api_is_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E"));
    assert_false(kf_api_is_uuid("0f8fad5b-d9cb-469f-a165-70867728950"));
    assert_false(kf_api_is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e0"));
    assert_false(kf_api_is_uuid("0f8fad5bxd9cb-469f-a165-70867728950e"));
    assert_false(kf_api_is_uuid("0f8fad5b-d9cb-469f-a165-70867728950g"));
    assert_false(kf_api_is_uuid(""));
    assert_false(kf_api_is_uuid(NULL));
}

/* docs/openapi.json: every (method, path) operation is a served route and every served route
 * is documented; each operation lists responses. */
static void
test_openapi_matches_routes(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *doc = json_load_file(KF_OPENAPI_JSON, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        fail_msg("%s: %s (line %d)", KF_OPENAPI_JSON, jerr.text, jerr.line);
    const char *ver = json_string_value(json_object_get(doc, "openapi"));
    assert_non_null(ver);
    assert_true(!strncmp(ver, "3.0.", 4));
    json_t *paths = json_object_get(doc, "paths");
    assert_true(json_is_object(paths));
    size_t documented = 0;
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        const char *m;
        json_t *op;
        json_object_foreach(item, m, op)
        {
            if (strcmp(m, "get") && strcmp(m, "post") && strcmp(m, "delete") && strcmp(m, "put") &&
                strcmp(m, "patch") && strcmp(m, "head") && strcmp(m, "options"))
                continue; /* parameters, summary, ... */
            char method[16];
            size_t k = 0;
            for (; m[k] && k < sizeof(method) - 1; k++)
                method[k] = (char)toupper((unsigned char)m[k]);
            method[k] = '\0';
            int served = 0;
            for (const kf_api_route_t *r = kf_api_routes; r->method; r++)
                served |= !strcmp(r->method, method) && !strcmp(r->path, path);
            if (!served)
                fail_msg("documented but not served: %s %s", method, path);
            if (!json_is_object(json_object_get(op, "responses")) ||
                json_object_size(json_object_get(op, "responses")) == 0)
                fail_msg("%s %s has no responses", method, path);
            documented++;
        }
    }
    size_t served = 0;
    for (const kf_api_route_t *r = kf_api_routes; r->method; r++, served++) {
        char lower[16];
        size_t k = 0;
        for (; r->method[k] && k < sizeof(lower) - 1; k++)
            lower[k] = (char)tolower((unsigned char)r->method[k]);
        lower[k] = '\0';
        if (!json_object_get(json_object_get(paths, r->path), lower))
            fail_msg("served but not documented: %s %s", r->method, r->path);
    }
    assert_int_equal(documented, served);
    assert_int_equal(served, 9);
    json_decref(doc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_burst_then_refill),
        cmocka_unit_test(test_bucket_slow_rate_retry_after),
        cmocka_unit_test(test_bucket_rate_sustained),
        cmocka_unit_test(test_bucket_clock_backwards),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_key_hash_and_uuid),
        cmocka_unit_test(test_openapi_matches_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
