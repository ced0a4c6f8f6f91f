/*
 * test_api_validate: kf_api_request_build() on good and bad client requests. Every field
 * gets at least one rejected value, and each rejection must name that field (the "field" of
 * the 400 body) and say what is wrong. Accepted requests are checked field by field and
 * encoded through the real InferenceRequest schema, so the built JSON always fits it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api_int.h"
#include "kf_avro.h"
#include "kf_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_MS 1900000000000LL /* 2030-03-17 */

static const kf_api_limits_t test_limits = {
    .max_tokens = 4096, .max_prompt_bytes = 1000, .max_messages = 4, .now_ms = NOW_MS};

static kf_api_req_ids_t
test_ids(const char *batch_id)
{
    return (kf_api_req_ids_t){.request_id = "0f8fad5b-d9cb-469f-a165-70867728950e",
                              .tenant_id = "t1",
                              .idempotency_key = NULL,
                              .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                              .accepted_at_ms = NOW_MS,
                              .batch_id = batch_id};
}

/* Builds `text`; returns the IR (caller frees) or NULL with *err filled. */
static json_t *
build(const char *text, const char *batch_id, kf_api_error_t *err)
{
    json_t *body = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(body);
    kf_api_req_ids_t ids = test_ids(batch_id);
    memset(err, 0, sizeof(*err));
    json_t *ir = NULL;
    kf_err_t e = kf_api_request_build(body, &ids, &test_limits, &ir, err);
    json_decref(body);
    if (e) {
        assert_null(ir);
        assert_int_equal(err->status, 400);
    }
    return ir;
}

/* The request must be rejected naming `field`, with `words` in the message. */
static void
expect_bad_in(const char *text, const char *batch_id, const char *field, const char *words)
{
    kf_api_error_t err;
    json_t *ir = build(text, batch_id, &err);
    if (ir) {
        json_decref(ir);
        fail_msg("accepted: %s", text);
    }
    if (strcmp(err.field, field) != 0)
        fail_msg("for %s: field '%s', expected '%s' (message: %s)", text, err.field, field,
                 err.message);
    if (!strstr(err.message, words))
        fail_msg("for %s: message '%s' lacks '%s'", text, err.message, words);
    assert_string_equal(err.code, "invalid_request");
}

static void
expect_bad(const char *text, const char *field, const char *words)
{
    expect_bad_in(text, NULL, field, words);
}

static json_t *
expect_ok(const char *text, const char *batch_id)
{
    kf_api_error_t err;
    json_t *ir = build(text, batch_id, &err);
    if (!ir)
        fail_msg("rejected %s: %s (%s)", text, err.message, err.field);
    /* Every built request must encode with the real schema. */
    unsigned char *buf = NULL;
    size_t len = 0;
    char es[512];
    if (kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST), ir, &buf, &len, es,
                            sizeof(es)))
        fail_msg("does not encode: %s", es);
    free(buf);
    return ir;
}

static void
test_minimal_prompt(void **state)
{
    (void)state;
    json_t *ir = expect_ok("{\"model\":\"tiny\",\"prompt\":\"hello\"}", NULL);
    assert_string_equal(json_string_value(json_object_get(ir, "model")), "tiny");
    assert_string_equal(json_string_value(json_object_get(ir, "prompt")), "hello");
    assert_string_equal(json_string_value(json_object_get(ir, "task")), "completion");
    assert_string_equal(json_string_value(json_object_get(ir, "tenant_id")), "t1");
    assert_int_equal(json_array_size(json_object_get(ir, "messages")), 0);
    json_t *s = json_object_get(ir, "sampling");
    assert_int_equal(json_integer_value(json_object_get(s, "max_tokens")), 256);
    assert_true(json_real_value(json_object_get(s, "temperature")) == 1.0);
    assert_true(json_is_null(json_object_get(s, "seed")));
    assert_true(json_is_null(json_object_get(ir, "risk")));
    assert_true(json_is_null(json_object_get(ir, "deadline")));
    assert_true(json_is_null(json_object_get(ir, "batch_id")));
    assert_int_equal(json_integer_value(json_object_get(ir, "priority")), 0);
    assert_int_equal(json_integer_value(json_object_get(ir, "accepted_at")), NOW_MS);
    json_decref(ir);
}

static void
test_full_request(void **state)
{
    (void)state;
    json_t *ir = expect_ok(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"sampling\":{\"max_tokens\":64,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,"
        "\"min_p\":0.05,\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"\\n\\n\",\"END\"]},"
        "\"customer_id\":\"C1\",\"portfolio_id\":\"P1\",\"symbols\":[\"AAPL\",\"BRK.B\"],"
        "\"callback_url\":\"https://example.com/hook\",\"metadata\":{\"a\":\"1\",\"b\":\"x\"},"
        "\"priority\":5,\"deadline\":\"2030-06-01T12:00:00.5+02:00\"}",
        NULL);
    json_t *m = json_object_get(ir, "messages");
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "content")), "hi");
    json_t *s = json_object_get(ir, "sampling");
    assert_int_equal(json_integer_value(json_object_get(s, "seed")), 42);
    assert_int_equal(json_integer_value(json_object_get(s, "top_k")), 40);
    assert_true(json_real_value(json_object_get(s, "top_p")) == 0.9);
    assert_int_equal(json_array_size(json_object_get(s, "stop")), 2);
    assert_true(json_is_null(json_object_get(ir, "prompt")));
    assert_string_equal(json_string_value(json_object_get(ir, "callback_url")),
                        "https://example.com/hook");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ir, "metadata"), "b")),
                        "x");
    assert_int_equal(json_array_size(json_object_get(ir, "symbols")), 2);
    assert_int_equal(json_integer_value(json_object_get(ir, "priority")), 5);
    /* 2030-06-01T10:00:00.500Z */
    assert_int_equal(json_integer_value(json_object_get(ir, "deadline")), 1906538400500LL);
    json_decref(ir);

    ir = expect_ok("{\"model\":\"m\",\"prompt\":\"p\",\"deadline\":1900000001000}", NULL);
    assert_int_equal(json_integer_value(json_object_get(ir, "deadline")), 1900000001000LL);
    json_decref(ir);
}

static void
test_risk_report(void **state)
{
    (void)state;
    json_t *ir = expect_ok("{\"model\":\"m\",\"task\":\"risk_report\",\"risk\":{\"portfolio_id\":"
                           "\"P7\",\"as_of\":\"2024-02-29\",\"confidence\":0.95,"
                           "\"horizon_days\":10}}",
                           NULL);
    json_t *r = json_object_get(ir, "risk");
    assert_string_equal(json_string_value(json_object_get(r, "portfolio_id")), "P7");
    assert_string_equal(json_string_value(json_object_get(r, "as_of")), "2024-02-29");
    assert_true(json_real_value(json_object_get(r, "confidence")) == 0.95);
    assert_int_equal(json_integer_value(json_object_get(r, "horizon_days")), 10);
    assert_string_equal(json_string_value(json_object_get(ir, "task")), "risk_report");
    json_decref(ir);
    /* portfolio from the context reference; defaults 0.99 / 1 day / latest data */
    ir = expect_ok("{\"model\":\"m\",\"task\":\"risk_report\",\"portfolio_id\":\"P2\"}", NULL);
    r = json_object_get(ir, "risk");
    assert_string_equal(json_string_value(json_object_get(r, "portfolio_id")), "P2");
    assert_true(json_real_value(json_object_get(r, "confidence")) == 0.99);
    assert_int_equal(json_integer_value(json_object_get(r, "horizon_days")), 1);
    assert_true(json_is_null(json_object_get(r, "as_of")));
    json_decref(ir);
}

static void
test_bad_top_level(void **state)
{
    (void)state;
    expect_bad("{\"prompt\":\"x\"}", "model", "required");
    expect_bad("{\"model\":7,\"prompt\":\"x\"}", "model", "string");
    expect_bad("{\"model\":\"\",\"prompt\":\"x\"}", "model", "empty");
    expect_bad("{\"model\":\"m\"}", "prompt", "'prompt' or 'messages' is required");
    expect_bad("{\"model\":\"m\",\"prompt\":\"\"}", "prompt", "empty");
    expect_bad("{\"model\":\"m\",\"prompt\":5}", "prompt", "string");
    char big[1200];
    snprintf(big, sizeof(big), "{\"model\":\"m\",\"prompt\":\"%01001d\"}", 0);
    expect_bad(big, "prompt", "at most 1000 bytes");
    expect_bad("{\"model\":\"m\",\"prompt\":\"x\",\"messages\":[]}", "messages",
               "mutually exclusive");
    expect_bad("{\"model\":\"m\",\"prompt\":\"x\",\"temprature\":1}", "temprature",
               "unknown field");
    expect_bad("{\"model\":\"m\",\"prompt\":\"x\",\"task\":\"summarize\"}", "task",
               "'completion' or 'risk_report'");
    expect_bad("{\"model\":\"m\",\"prompt\":\"x\",\"custom_id\":\"a\"}", "custom_id",
               "only allowed in batches");
}

static void
test_bad_messages(void **state)
{
    (void)state;
    expect_bad("{\"model\":\"m\",\"messages\":{}}", "messages", "array");
    expect_bad("{\"model\":\"m\",\"messages\":[]}", "messages", "empty");
    expect_bad("{\"model\":\"m\",\"messages\":[1]}", "messages[0]", "object");
    expect_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
               "{\"role\":\"bot\",\"content\":\"b\"}]}",
               "messages[1].role", "system, user, assistant");
    expect_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", "messages[0].content",
               "required");
    expect_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":3}]}",
               "messages[0].content", "string");
    expect_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\",\"name\":"
               "\"x\"}]}",
               "messages[0].name", "unknown field");
    expect_bad("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":"
               "\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"},{\"role\":"
               "\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"a\"}]}",
               "messages", "at most 4");
}

static void
test_bad_sampling(void **state)
{
    (void)state;
#define P "{\"model\":\"m\",\"prompt\":\"x\",\"sampling\":"
    expect_bad(P "[]}", "sampling", "object");
    expect_bad(P "{\"max_tokens\":0}}", "sampling.max_tokens", "between 1 and 4096");
    expect_bad(P "{\"max_tokens\":5000}}", "sampling.max_tokens", "between 1 and 4096");
    expect_bad(P "{\"max_tokens\":1.5}}", "sampling.max_tokens", "integer");
    expect_bad(P "{\"temperature\":-0.1}}", "sampling.temperature", "between 0 and 2");
    expect_bad(P "{\"temperature\":\"hot\"}}", "sampling.temperature", "number");
    expect_bad(P "{\"top_p\":0}}", "sampling.top_p", "greater than 0");
    expect_bad(P "{\"top_p\":1.5}}", "sampling.top_p", "at most 1");
    expect_bad(P "{\"top_k\":-1}}", "sampling.top_k", "between 0 and 100000");
    expect_bad(P "{\"min_p\":2}}", "sampling.min_p", "between 0 and 1");
    expect_bad(P "{\"repetition_penalty\":0}}", "sampling.repetition_penalty", "greater than 0");
    expect_bad(P "{\"repetition_penalty\":11}}", "sampling.repetition_penalty", "at most 10");
    expect_bad(P "{\"seed\":-5}}", "sampling.seed", "integer between 0");
    expect_bad(P "{\"seed\":\"1\"}}", "sampling.seed", "integer");
    expect_bad(P "{\"stop\":\"END\"}}", "sampling.stop", "array");
    expect_bad(P "{\"stop\":[\"a\",\"\"]}}", "sampling.stop[1]", "non-empty string");
    expect_bad(P "{\"stop\":[1]}}", "sampling.stop[0]", "non-empty string");
    expect_bad(P "{\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}}",
               "sampling.stop", "at most 8");
    expect_bad(P "{\"beam\":2}}", "sampling.beam", "unknown field");
#undef P
}

static void
test_bad_risk(void **state)
{
    (void)state;
#define R "{\"model\":\"m\",\"task\":\"risk_report\",\"risk\":"
    expect_bad("{\"model\":\"m\",\"task\":\"risk_report\"}", "risk.portfolio_id", "required");
    expect_bad(R "{\"as_of\":\"2024-01-01\"}}", "risk.portfolio_id", "required");
    expect_bad(R "\"P1\"}", "risk", "object");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"as_of\":\"2024-02-30\"}}", "risk.as_of", "YYYY-MM-DD");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"as_of\":\"24-01-01\"}}", "risk.as_of", "YYYY-MM-DD");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"as_of\":20240101}}", "risk.as_of", "YYYY-MM-DD");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"confidence\":0.9}}", "risk.confidence",
               "0.95 or 0.99");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"horizon_days\":5}}", "risk.horizon_days", "1 or 10");
    expect_bad(R "{\"portfolio_id\":\"P1\",\"horizon\":5}}", "risk.horizon", "unknown field");
    expect_bad(R "{\"portfolio_id\":\"\"}}", "risk.portfolio_id", "empty");
    expect_bad("{\"model\":\"m\",\"prompt\":\"x\",\"risk\":{\"portfolio_id\":\"P1\"}}", "risk",
               "only allowed when task is 'risk_report'");
#undef R
}

static void
test_bad_context_and_delivery(void **state)
{
    (void)state;
#define P "{\"model\":\"m\",\"prompt\":\"x\","
    expect_bad(P "\"customer_id\":\"\"}", "customer_id", "empty");
    expect_bad(P "\"customer_id\":12}", "customer_id", "string");
    expect_bad(P "\"portfolio_id\":[]}", "portfolio_id", "string");
    expect_bad(P "\"symbols\":\"AAPL\"}", "symbols", "array");
    expect_bad(P "\"symbols\":[\"AAPL\",\"bad symbol\"]}", "symbols[1]", "symbol");
    expect_bad(P "\"symbols\":[\"\"]}", "symbols[0]", "symbol");
    expect_bad(P "\"callback_url\":\"ftp://x/y\"}", "callback_url", "http:// or https://");
    expect_bad(P "\"callback_url\":\"https://\"}", "callback_url", "host");
    expect_bad(P "\"callback_url\":\"https://a b/\"}", "callback_url", "URL");
    expect_bad(P "\"callback_url\":1}", "callback_url", "string");
    expect_bad(P "\"metadata\":[]}", "metadata", "object");
    expect_bad(P "\"metadata\":{\"k\":1}}", "metadata.k", "string");
    expect_bad(P "\"metadata\":{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\","
                 "\"7\":\"\",\"8\":\"\",\"9\":\"\",\"10\":\"\",\"11\":\"\",\"12\":\"\",\"13\":"
                 "\"\",\"14\":\"\",\"15\":\"\",\"16\":\"\",\"17\":\"\"}}",
               "metadata", "at most 16 keys");
    expect_bad(P "\"priority\":1000}", "priority", "between -100 and 100");
    expect_bad(P "\"priority\":\"high\"}", "priority", "integer");
    expect_bad(P "\"deadline\":\"tomorrow\"}", "deadline", "RFC 3339");
    expect_bad(P "\"deadline\":\"2030-13-01T00:00:00Z\"}", "deadline", "RFC 3339");
    expect_bad(P "\"deadline\":\"2030-01-01T00:00:00\"}", "deadline", "RFC 3339");
    expect_bad(P "\"deadline\":\"2020-01-01T00:00:00Z\"}", "deadline", "in the future");
    expect_bad(P "\"deadline\":1000}", "deadline", "in the future");
    expect_bad(P "\"deadline\":true}", "deadline", "RFC 3339");
#undef P
    /* exactly 16 metadata keys is fine */
    json_t *ir = expect_ok(
        "{\"model\":\"m\",\"prompt\":\"x\",\"metadata\":{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":"
        "\"\",\"5\":\"\",\"6\":\"\",\"7\":\"\",\"8\":\"\",\"9\":\"\",\"10\":\"\",\"11\":\"\","
        "\"12\":\"\",\"13\":\"\",\"14\":\"\",\"15\":\"\",\"16\":\"\"}}",
        NULL);
    assert_int_equal(json_object_size(json_object_get(ir, "metadata")), 16);
    json_decref(ir);
}

static void
test_batch_lines(void **state)
{
    (void)state;
    const char *bid = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    expect_bad_in("{\"model\":\"m\",\"prompt\":\"x\"}", bid, "custom_id", "required");
    expect_bad_in("{\"model\":\"m\",\"prompt\":\"x\",\"custom_id\":\"\"}", bid, "custom_id",
                  "empty");
    json_t *ir = expect_ok("{\"model\":\"m\",\"prompt\":\"x\",\"custom_id\":\"line-1\"}", bid);
    assert_string_equal(json_string_value(json_object_get(ir, "custom_id")), "line-1");
    assert_string_equal(json_string_value(json_object_get(ir, "batch_id")), bid);
    assert_int_equal(json_integer_value(json_object_get(ir, "priority")), -1);
    json_decref(ir);
}

static void
test_rfc3339(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(kf_api_parse_rfc3339("1970-01-01T00:00:00Z", &ms), KF_OK);
    assert_int_equal(ms, 0);
    assert_int_equal(kf_api_parse_rfc3339("2000-02-29T23:59:59.999Z", &ms), KF_OK);
    assert_int_equal(ms, 951868799999LL);
    assert_int_equal(kf_api_parse_rfc3339("2000-03-01t01:00:00+01:00", &ms), KF_OK);
    assert_int_equal(ms, 951868800000LL);
    assert_int_equal(kf_api_parse_rfc3339("2001-02-29T00:00:00Z", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_api_parse_rfc3339("2001-01-01T24:00:00Z", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_api_parse_rfc3339("2001-01-01T00:00:00.Z", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_api_parse_rfc3339("2001-01-01T00:00:00Zjunk", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_api_parse_rfc3339("", &ms), KF_ERR_INVALID_ARG);
}

static void
test_error_body(void **state)
{
    (void)state;
    kf_api_error_t e = {0};
    kf_api_error_set(&e, 400, "invalid_request", "sampling.top_p", "field '%s' is bad",
                     "sampling.top_p");
    e.line = 3;
    char *body = kf_api_error_body(&e);
    assert_non_null(body);
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    json_t *err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "invalid_request");
    assert_string_equal(json_string_value(json_object_get(err, "field")), "sampling.top_p");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "field 'sampling.top_p' is bad");
    assert_int_equal(json_integer_value(json_object_get(err, "line")), 3);
    json_decref(j);
    free(body);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_prompt), cmocka_unit_test(test_full_request),
        cmocka_unit_test(test_risk_report),    cmocka_unit_test(test_bad_top_level),
        cmocka_unit_test(test_bad_messages),   cmocka_unit_test(test_bad_sampling),
        cmocka_unit_test(test_bad_risk),       cmocka_unit_test(test_bad_context_and_delivery),
        cmocka_unit_test(test_batch_lines),    cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
