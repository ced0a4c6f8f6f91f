/*
 * Unit tests of kf_json: strict parsing of hostile bytes (limits, UTF-8, duplicates) and the
 * field getters' exact messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_json.h"

static kf_err_t
parse(const char *text, const kf_json_limits_t *lim, json_t **out, char *errstr, size_t size)
{
    return kf_json_parse(text, strlen(text), lim, out, errstr, size);
}

static void
test_parse_ok(void **state)
{
    (void)state;
    json_t *j = NULL;
    char errstr[256] = "";
    assert_int_equal(
        parse("{\"a\": [1, 2, {\"b\": \"\xc3\xa9\"}]}", NULL, &j, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(json_array_size(json_object_get(j, "a")), 3);
    json_decref(j);
    assert_int_equal(parse("42", NULL, &j, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(json_integer_value(j), 42);
    json_decref(j);
}

static void
test_parse_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        kf_err_t err;
        const char *msg;
    } cases[] = {
        {"", KF_ERR_PARSE, "invalid JSON: empty input"},
        {"{\"a\":1,\"a\":2}", KF_ERR_PARSE,
         "invalid JSON at line 1, column 10 (byte 10): duplicate object key near '\"a\"'"},
        {"{\"a\":\"\xff\"}", KF_ERR_PARSE,
         "invalid JSON at line 1, column 6 (byte 6): unable to decode byte 0xff near '\"'"},
        {"\"\\ud800\"", KF_ERR_PARSE,
         "invalid JSON at line 1, column 8 (byte 8): invalid Unicode '\\uD800' near "
         "'\"\\ud800\"'"},
        {"\"a\\u0000b\"", KF_ERR_PARSE,
         "invalid JSON at line 1, column 10 (byte 10): \\u0000 is not allowed without "
         "JSON_ALLOW_NUL near '\"a\\u0000b\"'"},
        {"{} x", KF_ERR_PARSE,
         "invalid JSON at line 1, column 4 (byte 4): end of file expected "
         "near 'x'"},
        {"[[[[1]]]]", KF_ERR_LIMIT, "JSON nesting deeper than 3 at byte 3"},
        {"{\"k\": \"0123456789abcdef\"}", KF_ERR_LIMIT,
         "JSON document of 25 bytes exceeds the limit of 24 bytes"},
    };
    kf_json_limits_t lim = {.max_bytes = 24, .max_depth = 3};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = (json_t *)0x1;
        char errstr[256] = "";
        kf_err_t err = parse(cases[i].text, &lim, &j, errstr, sizeof(errstr));
        if (err != cases[i].err || strcmp(errstr, cases[i].msg) != 0)
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, err, errstr, cases[i].err,
                     cases[i].msg);
        assert_null(j);
    }
}

static void
test_depth_ignores_strings(void **state)
{
    (void)state;
    json_t *j = NULL;
    char errstr[256] = "";
    kf_json_limits_t lim = {.max_depth = 2};
    /* Brackets and escaped quotes inside strings must not count as nesting. */
    assert_int_equal(parse("[{\"k\": \"[[[[{{{{\\\"[[[\"}]", &lim, &j, errstr, sizeof(errstr)),
                     KF_OK);
    json_decref(j);
    assert_int_equal(parse("[[[]]]", &lim, &j, errstr, sizeof(errstr)), KF_ERR_LIMIT);
    /* The default depth stops a deep bomb long before jansson's own 2048 limit. */
    char bomb[5001];
    memset(bomb, '[', 5000);
    bomb[5000] = '\0';
    assert_int_equal(parse(bomb, NULL, &j, errstr, sizeof(errstr)), KF_ERR_LIMIT);
    assert_string_equal(errstr, "JSON nesting deeper than 64 at byte 64");
}

static void
test_parse_object(void **state)
{
    (void)state;
    json_t *j = NULL;
    char errstr[256] = "";
    assert_int_equal(kf_json_parse_object("[1]", 3, NULL, &j, errstr, sizeof(errstr)),
                     KF_ERR_PARSE);
    assert_string_equal(errstr, "JSON body must be an object");
    assert_null(j);
}

static void
test_getters(void **state)
{
    (void)state;
    const char *doc = "{\"prompt\": \"hi\", \"max_tokens\": 16, \"sampling\": {\"top_p\": 1.5, "
                      "\"temperature\": 0.5, \"greedy\": false, \"seed\": 3.0},"
                      "\"messages\": [{\"role\": \"user\"}, {\"role\": 7}], \"none\": null}";
    json_t *j = NULL;
    char errstr[256] = "";
    assert_int_equal(parse(doc, NULL, &j, errstr, sizeof(errstr)), KF_OK);

    const char *s = NULL;
    assert_int_equal(kf_json_get_str(j, "prompt", 0, &s, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(s, "hi");
    assert_int_equal(kf_json_get_str(j, "messages[0].role", 0, &s, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(s, "user");
    assert_int_equal(kf_json_get_str(j, "messages[1].role", 0, &s, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'messages[1].role' must be a string");
    assert_int_equal(kf_json_get_str(j, "prompt", 1, &s, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'prompt' must be a string of at most 1 bytes");
    assert_int_equal(kf_json_get_str(j, "model", 0, &s, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'model' is required");
    assert_int_equal(kf_json_get_str(j, "none", 0, &s, errstr, sizeof(errstr)), KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'none' is required");

    /* Optional: absent or null keeps the default. */
    s = "default";
    assert_int_equal(kf_json_opt_str(j, "model", 0, &s, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(s, "default");
    assert_int_equal(kf_json_opt_str(j, "none", 0, &s, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(s, "default");

    double d = -1;
    assert_int_equal(kf_json_get_number(j, "sampling.top_p", 0, 1, &d, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'sampling.top_p' must be a number between 0 and 1");
    assert_true(d == -1);
    assert_int_equal(
        kf_json_get_number(j, "sampling.temperature", 0, 2, &d, errstr, sizeof(errstr)), KF_OK);
    assert_true(d == 0.5);
    assert_int_equal(kf_json_get_number(j, "prompt", 0, 2, &d, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'prompt' must be a number between 0 and 2");
    d = 9;
    assert_int_equal(kf_json_opt_number(j, "sampling.min_p", 0, 1, &d, errstr, sizeof(errstr)),
                     KF_OK);
    assert_true(d == 9);

    int64_t n = 0;
    assert_int_equal(kf_json_get_int(j, "max_tokens", 1, 4096, &n, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(n, 16);
    assert_int_equal(kf_json_get_int(j, "max_tokens", 32, 4096, &n, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'max_tokens' must be an integer between 32 and 4096");
    assert_int_equal(
        kf_json_get_int(j, "sampling.seed", INT64_MIN, INT64_MAX, &n, errstr, sizeof(errstr)),
        KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'sampling.seed' must be an integer");
    n = 5;
    assert_int_equal(kf_json_opt_int(j, "absent", 0, 10, &n, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(n, 5);

    int b = -1;
    assert_int_equal(kf_json_get_bool(j, "sampling.greedy", &b, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(b, 0);
    assert_int_equal(kf_json_get_bool(j, "max_tokens", &b, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'max_tokens' must be true or false");
    assert_int_equal(kf_json_opt_bool(j, "x.y", &b, errstr, sizeof(errstr)), KF_OK);

    json_t *arr = NULL, *obj = NULL;
    assert_int_equal(kf_json_get_array(j, "messages", 2, &arr, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(json_array_size(arr), 2);
    assert_int_equal(kf_json_get_array(j, "messages", 1, &arr, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'messages' must be an array of at most 1 items");
    assert_int_equal(kf_json_get_object(j, "sampling", &obj, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_json_get_object(j, "messages", &obj, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "field 'messages' must be an object");

    /* Malformed paths resolve to nothing instead of crashing. */
    assert_null(kf_json_path(j, "messages[9].role"));
    assert_null(kf_json_path(j, "messages[x]"));
    assert_null(kf_json_path(j, "sampling..top_p"));
    assert_null(kf_json_path(j, "sampling."));
    assert_null(kf_json_path(j, "prompt.deeper"));
    json_decref(j);
}

static void
test_dump(void **state)
{
    (void)state;
    json_t *j = json_pack("{s:s, s:[i,b]}", "a", "x\ny", "b", 1, 1);
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    assert_int_equal(kf_json_dump(j, &buf), KF_OK);
    assert_string_equal(buf.data, "{\"a\":\"x\\ny\",\"b\":[1,true]}");
    /* Over the buffer limit: error and the buffer is left as it was. */
    kf_buf_t small;
    kf_buf_init(&small, 8);
    assert_int_equal(kf_buf_append_str(&small, "ab"), KF_OK);
    assert_int_equal(kf_json_dump(j, &small), KF_ERR_LIMIT);
    assert_int_equal(small.len, 2);
    assert_string_equal(small.data, "ab");
    kf_buf_free(&small);
    kf_buf_free(&buf);
    json_decref(j);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_depth_ignores_strings),
        cmocka_unit_test(test_parse_object),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
