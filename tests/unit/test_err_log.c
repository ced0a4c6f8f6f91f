/*
 * Unit tests for kf_err and kf_log: error names, the retriable split, and the JSON-lines
 * shape of log output including escaping and key=value context.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_err.h"
#include "kf_log.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void
test_err_names(void **state)
{
    (void)state;
    assert_string_equal(kf_err_str(KF_OK), "success");
    assert_string_equal(kf_err_str(KF_ERR_UNKNOWN_SCHEMA), "unknown schema fingerprint");
    assert_string_equal(kf_err_str((kf_err_t)9999), "unknown error");
    for (int e = 0; e < KF_ERR__COUNT; e++)
        assert_string_not_equal(kf_err_str((kf_err_t)e), "unknown error");
}

static void
test_err_retriable(void **state)
{
    (void)state;
    assert_true(kf_err_is_retriable(KF_ERR_TIMEOUT));
    assert_true(kf_err_is_retriable(KF_ERR_UNAVAILABLE));
    assert_false(kf_err_is_retriable(KF_ERR_PARSE));
    assert_false(kf_err_is_retriable(KF_ERR_UNKNOWN_SCHEMA));
    assert_false(kf_err_is_retriable(KF_OK));
}

static void
test_err_set(void **state)
{
    char buf[32];
    (void)state;
    assert_int_equal(kf_err_set(buf, sizeof(buf), KF_ERR_PARSE, "field %s at %d", "x", 7),
                     KF_ERR_PARSE);
    assert_string_equal(buf, "field x at 7");
    assert_int_equal(kf_err_set(NULL, 0, KF_ERR_IO, "ignored"), KF_ERR_IO);
}

static void
test_log_json_line(void **state)
{
    char buf[4096];
    (void)state;
    FILE *fp = fmemopen(buf, sizeof(buf), "w");
    assert_non_null(fp);
    kf_log_set_output(fp);
    kf_log_set_level(KF_LOG_INFO);
    kf_log(KF_LOG_DEBUG, "test", "hidden %d", 1); /* below level: not written */
    kf_logkv(KF_LOG_WARN, "consumer", "topic=t1 partition=3", "quote \" and\nnewline %d", 42);
    fclose(fp);
    kf_log_set_output(NULL);

    /* Exactly one line, valid JSON, with the fields we asked for. */
    assert_non_null(strchr(buf, '\n'));
    assert_null(strchr(strchr(buf, '\n') + 1, '\n'));
    json_error_t jerr;
    json_t *obj = json_loads(buf, 0, &jerr);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(obj, "subsys")), "consumer");
    assert_string_equal(json_string_value(json_object_get(obj, "msg")), "quote \" and\nnewline 42");
    assert_string_equal(json_string_value(json_object_get(obj, "topic")), "t1");
    assert_string_equal(json_string_value(json_object_get(obj, "partition")), "3");
    json_decref(obj);
}

static void
test_log_level_parse(void **state)
{
    (void)state;
    assert_int_equal(kf_log_level_parse("debug"), KF_LOG_DEBUG);
    assert_int_equal(kf_log_level_parse("WARNING"), KF_LOG_WARN);
    assert_int_equal(kf_log_level_parse("loud"), -1);
    assert_int_equal(kf_log_level_parse(NULL), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names),       cmocka_unit_test(test_err_retriable),
        cmocka_unit_test(test_err_set),         cmocka_unit_test(test_log_json_line),
        cmocka_unit_test(test_log_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
