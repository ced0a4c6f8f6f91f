/*
 * Unit tests of the dispatcher's configuration (consumers/kf_dispatch.h) that need no service:
 * the tables register (also twice, and beside the auditor's, as `kinfer run` would), defaults
 * validate, and a bad retry schedule or allowlist fails kf_dispatch_new with KF_ERR_CONFIG
 * naming the entry, before anything is contacted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kf_auditor.h"
#include "kf_dispatch.h"

static kf_conf_t *
new_conf(void)
{
    kf_conf_t *conf = kf_conf_new();
    char err[256];
    assert_int_equal(kf_dispatch_conf_register(conf, err, sizeof(err)), KF_OK);
    /* Registering again, and the auditor's tables beside (shared topics.* keys), is fine. */
    assert_int_equal(kf_dispatch_conf_register(conf, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_auditor_conf_register(conf, err, sizeof(err)), KF_OK);
    return conf;
}

static void
test_defaults(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    assert_string_equal(kf_conf_get_str(conf, "topics.results"), "kinfer.results");
    assert_string_equal(kf_conf_get_str(conf, "topics.callbacks.retry"), "kinfer.callbacks.retry");
    assert_string_equal(kf_conf_get_str(conf, "topics.callbacks.dlq"), "kinfer.callbacks.dlq");
    assert_int_equal(kf_conf_get_duration_ms(conf, "dispatch.timeout"), 15000);
    assert_string_equal(kf_conf_get_str(conf, "dispatch.retry.schedule"),
                        "5s,5m,30m,2h,5h,10h,14h,20h,24h");
    assert_string_equal(kf_conf_get_str(conf, "dispatch.allow.cidrs"), "");
    assert_string_equal(kf_conf_get_str(conf, "audit.index.prefix"), "kinfer-audit-");
    char err[256];
    /* Bounds come from the table. */
    assert_int_equal(kf_conf_set(conf, "dispatch.timeout", "10ms", err, sizeof(err)),
                     KF_ERR_CONFIG);
    assert_int_equal(kf_conf_set(conf, "dispatch.retry.jitter", "1.5", err, sizeof(err)),
                     KF_ERR_CONFIG);
    assert_int_equal(kf_conf_set(conf, "dispatch.max.inflight", "0", err, sizeof(err)),
                     KF_ERR_CONFIG);
    /* Environment overrides reach the keys. */
    char *env[] = {"KINFER_DISPATCH_RETRY_SCHEDULE=200ms,400ms", "KINFER_TOPICS_RESULTS=t.res",
                   NULL};
    assert_int_equal(kf_conf_load_env(conf, env, err, sizeof(err)), KF_OK);
    assert_string_equal(kf_conf_get_str(conf, "dispatch.retry.schedule"), "200ms,400ms");
    assert_string_equal(kf_conf_get_str(conf, "topics.results"), "t.res");
    kf_conf_destroy(conf);
}

static void
test_bad_config_fails_early(void **state)
{
    (void)state;
    char err[256];
    kf_dispatch_t *d = NULL;

    kf_conf_t *conf = new_conf();
    assert_int_equal(kf_conf_set(conf, "dispatch.retry.schedule", "5s,soon", err, sizeof(err)),
                     KF_OK);
    assert_int_equal(kf_dispatch_new(conf, NULL, &d, err, sizeof(err)), KF_ERR_CONFIG);
    assert_null(d);
    assert_non_null(strstr(err, "'soon'"));
    kf_conf_destroy(conf);

    conf = new_conf();
    assert_int_equal(
        kf_conf_set(conf, "dispatch.allow.cidrs", "127.0.0.1/32,10.0.0.0/40", err, sizeof(err)),
        KF_OK);
    assert_int_equal(kf_dispatch_new(conf, NULL, &d, err, sizeof(err)), KF_ERR_CONFIG);
    assert_null(d);
    assert_non_null(strstr(err, "10.0.0.0/40"));
    kf_conf_destroy(conf);

    /* NULL is fine for destroy. */
    kf_dispatch_destroy(NULL);
}

static void
test_help(void **state)
{
    (void)state;
    char *argv[] = {"dispatch", "--help", NULL};
    assert_int_equal(kf_cmd_dispatch(2, argv), 0);
    char *argv2[] = {"audit", "--help", NULL};
    assert_int_equal(kf_cmd_audit(2, argv2), 0);
    char *argv3[] = {"dispatch", "--bogus", NULL};
    assert_int_equal(kf_cmd_dispatch(2, argv3), 2);
    char *argv4[] = {"audit", "search", "--limit", "0", NULL};
    assert_int_equal(kf_cmd_audit(4, argv4), 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bad_config_fails_early),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
