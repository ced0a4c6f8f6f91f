/*
 * Unit tests of kf_conf: table registration, file syntax, validation messages, environment
 * overrides, kafka.* pass-through, dumps with masking, and the generated docs table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kf_conf.h"
#include "kf_log.h"

static const kf_conf_prop_t test_props[] = {
    {.name = "worker.batch.max",
     .type = KF_CONF_INT,
     .def = "32",
     .min = 1,
     .max = 4096,
     .desc = "Batch size."},
    {.name = "worker.temperature",
     .type = KF_CONF_DOUBLE,
     .def = "0.7",
     .min = 0,
     .max = 2,
     .desc = "Default temperature."},
    {.name = "worker.enabled", .type = KF_CONF_BOOL, .def = "true", .desc = "On or off."},
    {.name = "worker.name", .type = KF_CONF_STRING, .def = "w1", .desc = "Name."},
    {.name = "worker.poll.timeout",
     .type = KF_CONF_DURATION,
     .def = "250ms",
     .min = 1,
     .max = 60000,
     .desc = "Poll timeout."},
    {.name = "worker.api.key",
     .type = KF_CONF_STRING,
     .flags = KF_CONF_F_SECRET,
     .desc = "Upstream key."},
    {.name = NULL},
};

static kf_conf_t *
new_conf(void)
{
    kf_conf_t *conf = kf_conf_new();
    char errstr[256] = "";
    assert_int_equal(kf_conf_add_table(conf, "worker", test_props, errstr, sizeof(errstr)), KF_OK);
    return conf;
}

static kf_err_t
load(kf_conf_t *conf, const char *text, char *errstr, size_t size)
{
    return kf_conf_load_string(conf, text, strlen(text), "test.conf", errstr, size);
}

static void
test_defaults(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    assert_string_equal(kf_conf_get_str(conf, "log.level"), "info");
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 32);
    assert_true(kf_conf_get_double(conf, "worker.temperature") == 0.7);
    assert_int_equal(kf_conf_get_bool(conf, "worker.enabled"), 1);
    assert_string_equal(kf_conf_get_str(conf, "worker.name"), "w1");
    assert_int_equal(kf_conf_get_duration_ms(conf, "worker.poll.timeout"), 250);
    assert_null(kf_conf_get_str(conf, "worker.api.key"));
    assert_int_equal(kf_conf_source(conf, "worker.batch.max"), KF_CONF_SRC_DEFAULT);
    assert_true(kf_conf_has(conf, "worker.name"));
    assert_false(kf_conf_has(conf, "worker.nope"));
    kf_conf_destroy(conf);
}

static void
test_file_syntax(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256] = "";
    const char *text = "# a comment\n"
                       "\n"
                       "   worker.batch.max   =   64   # trailing comment\n"
                       "worker.name = \"has # hash and \\\"quotes\\\" \"\r\n"
                       "\t worker.enabled=off\n"
                       "worker.temperature = 1.5\n"
                       "worker.poll.timeout = 2s\n"
                       "worker.api.key = sk-123\n"
                       "kafka.bootstrap.servers = 127.0.0.1:9092\n"
                       "kafka.acks = all"; /* no final newline */
    assert_int_equal(load(conf, text, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 64);
    assert_string_equal(kf_conf_get_str(conf, "worker.name"), "has # hash and \"quotes\" ");
    assert_int_equal(kf_conf_get_bool(conf, "worker.enabled"), 0);
    assert_true(kf_conf_get_double(conf, "worker.temperature") == 1.5);
    assert_int_equal(kf_conf_get_duration_ms(conf, "worker.poll.timeout"), 2000);
    assert_string_equal(kf_conf_get_str(conf, "worker.api.key"), "sk-123");
    assert_int_equal(kf_conf_source(conf, "worker.batch.max"), KF_CONF_SRC_FILE);
    assert_int_equal(kf_conf_source(conf, "log.level"), KF_CONF_SRC_DEFAULT);

    assert_int_equal(kf_conf_kafka_count(conf), 2);
    const char *name, *value;
    kf_conf_kafka_at(conf, 0, &name, &value);
    assert_string_equal(name, "bootstrap.servers");
    assert_string_equal(value, "127.0.0.1:9092");
    kf_conf_kafka_at(conf, 1, &name, &value);
    assert_string_equal(name, "acks");
    assert_string_equal(value, "all");
    assert_int_equal(kf_conf_source(conf, "kafka.acks"), KF_CONF_SRC_FILE);
    kf_conf_destroy(conf);
}

/* Each bad input must fail with a message naming the line, the key and/or the value. */
static void
test_file_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        kf_err_t err;
        const char *msg;
    } cases[] = {
        {"log.level = info\nworker.bogus = 1\n", KF_ERR_CONFIG,
         "test.conf:2: unknown key 'worker.bogus'"},
        {"worker.batch.max = 0\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.batch.max': value '0' is out of range [1, 4096]"},
        {"\n\nworker.batch.max = 12x\n", KF_ERR_CONFIG,
         "test.conf:3: key 'worker.batch.max': value '12x' is not an integer"},
        {"worker.temperature = hot\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.temperature': value 'hot' is not a finite number"},
        {"worker.temperature = 2.5\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.temperature': value '2.5' is out of range [0, 2]"},
        {"worker.enabled = maybe\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.enabled': value 'maybe' is not a boolean (true/false)"},
        {"worker.poll.timeout = 5 s\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.poll.timeout': value '5 s' is not a duration (e.g. 250ms, "
         "30s, 5m, 1h)"},
        {"worker.poll.timeout = 2m\n", KF_ERR_CONFIG,
         "test.conf:1: key 'worker.poll.timeout': value '2m' is out of range [1ms, 60000ms]"},
        {"log.level = loud\n", KF_ERR_CONFIG,
         "test.conf:1: key 'log.level': value 'loud' is not one of debug|info|warn|error|off"},
        {"worker.name\n", KF_ERR_PARSE, "test.conf:1: expected '=' after the key"},
        {"= 3\n", KF_ERR_PARSE, "test.conf:1: expected a key (letters, digits, '.', '_', '-')"},
        {"worker.name = \"open\n", KF_ERR_PARSE, "test.conf:1: unterminated double quote"},
        {"worker.name = \"a\" b\n", KF_ERR_PARSE,
         "test.conf:1: unexpected text after the closing quote"},
        {"kafka.no.such.property = 1\n", KF_ERR_CONFIG,
         "test.conf:1: key 'kafka.no.such.property': No such configuration property: "
         "\"no.such.property\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kf_conf_t *conf = new_conf();
        char errstr[256] = "";
        kf_err_t err = load(conf, cases[i].text, errstr, sizeof(errstr));
        if (err != cases[i].err || strcmp(errstr, cases[i].msg) != 0)
            fail_msg("case %zu: got %d '%s', want %d '%s'", i, err, errstr, cases[i].err,
                     cases[i].msg);
        kf_conf_destroy(conf);
    }
}

static void
test_failed_value_keeps_old(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256];
    assert_int_equal(kf_conf_set(conf, "worker.batch.max", "100", errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_set(conf, "worker.batch.max", "-1", errstr, sizeof(errstr)),
                     KF_ERR_CONFIG);
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 100);
    assert_int_equal(kf_conf_source(conf, "worker.batch.max"), KF_CONF_SRC_SET);
    assert_int_equal(kf_conf_set(conf, "nope", "1", errstr, sizeof(errstr)), KF_ERR_CONFIG);
    assert_string_equal(errstr, "unknown key 'nope'");
    kf_conf_destroy(conf);
}

/* --set KEY=VALUE text: split at the first '=', the value may hold more of them. */
static void
test_set_assignment(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256];
    assert_int_equal(kf_conf_set_assignment(conf, "worker.batch.max=42", errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 42);
    assert_int_equal(
        kf_conf_set_assignment(conf, "kafka.sasl.password=a=b", errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_set_assignment(conf, "worker.batch.max", errstr, sizeof(errstr)),
                     KF_ERR_CONFIG);
    assert_string_equal(errstr, "--set needs KEY=VALUE, got 'worker.batch.max'");
    assert_int_equal(kf_conf_set_assignment(conf, "nope=1", errstr, sizeof(errstr)), KF_ERR_CONFIG);
    assert_string_equal(errstr, "unknown key 'nope'");
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 42);
    kf_conf_destroy(conf);
}

static void
test_env(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256] = "";
    char *const env[] = {"PATH=/bin",
                         "KINFER_WORKER_BATCH_MAX=128",
                         "KINFER_LOG_LEVEL=debug",
                         "KINFER_KAFKA_BOOTSTRAP_SERVERS=broker:9092",
                         "KINFER_KAFKA_BROKERS=127.0.0.1:1", /* dev-stack variable, not a key */
                         "KINFER_STACK_DIR=/tmp/x",
                         NULL};
    assert_int_equal(load(conf, "worker.batch.max = 64\n", errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_load_env(conf, env, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 128);
    assert_int_equal(kf_conf_source(conf, "worker.batch.max"), KF_CONF_SRC_ENV);
    assert_string_equal(kf_conf_get_str(conf, "log.level"), "debug");
    kf_log_level_t before = kf_log_get_level();
    kf_conf_apply_core(conf);
    assert_int_equal(kf_log_get_level(), KF_LOG_DEBUG);
    kf_log_set_level(before);
    assert_int_equal(kf_conf_kafka_count(conf), 1);
    const char *name, *value;
    kf_conf_kafka_at(conf, 0, &name, &value);
    assert_string_equal(name, "bootstrap.servers");
    assert_string_equal(value, "broker:9092");

    char *const bad[] = {"KINFER_WORKER_TEMPERATURE=9", NULL};
    assert_int_equal(kf_conf_load_env(conf, bad, errstr, sizeof(errstr)), KF_ERR_CONFIG);
    assert_string_equal(errstr, "environment KINFER_WORKER_TEMPERATURE: key 'worker.temperature': "
                                "value '9' is out of range [0, 2]");

    char name_buf[64];
    assert_int_equal(kf_conf_env_name("kafka.bootstrap.servers", name_buf, sizeof(name_buf)),
                     strlen("KINFER_KAFKA_BOOTSTRAP_SERVERS"));
    assert_string_equal(name_buf, "KINFER_KAFKA_BOOTSTRAP_SERVERS");
    kf_conf_destroy(conf);
}

static char *
dump_to_string(const kf_conf_t *conf, void (*fn)(const kf_conf_t *, FILE *))
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    assert_non_null(fp);
    fn(conf, fp);
    fclose(fp);
    return text;
}

static void
test_dump(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256] = "";
    assert_int_equal(load(conf,
                          "worker.api.key = sk-secret\nworker.name = \"a # b\"\n"
                          "kafka.sasl.password = hunter2\nkafka.client.id = me\n",
                          errstr, sizeof(errstr)),
                     KF_OK);
    char *const env[] = {"KINFER_WORKER_BATCH_MAX=7", NULL};
    assert_int_equal(kf_conf_load_env(conf, env, errstr, sizeof(errstr)), KF_OK);
    char *text = dump_to_string(conf, kf_conf_dump);
    const char *want = "log.level = info  # default\n"
                       "metrics.port = 0  # default\n"
                       "worker.api.key = ***  # file\n"
                       "worker.batch.max = 7  # env\n"
                       "worker.enabled = true  # default\n"
                       "worker.name = \"a # b\"  # file\n"
                       "worker.poll.timeout = 250ms  # default\n"
                       "worker.temperature = 0.7  # default\n"
                       "kafka.client.id = me  # file\n"
                       "kafka.sasl.password = ***  # file\n";
    assert_string_equal(text, want);
    assert_null(strstr(text, "sk-secret"));
    assert_null(strstr(text, "hunter2"));

    /* The dump (minus masked secrets) loads back to the same values. */
    kf_conf_t *again = new_conf();
    char *copy = strdup(text);
    char *p;
    while ((p = strstr(copy, "***")) != NULL)
        memcpy(p, "xyz", 3);
    assert_int_equal(kf_conf_load_string(again, copy, strlen(copy), "dump", errstr, sizeof(errstr)),
                     KF_OK);
    assert_string_equal(kf_conf_get_str(again, "worker.name"), "a # b");
    assert_int_equal(kf_conf_get_int(again, "worker.batch.max"), 7);
    free(copy);
    kf_conf_destroy(again);
    free(text);
    kf_conf_destroy(conf);
}

static void
test_unset_in_dump(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char *text = dump_to_string(conf, kf_conf_dump);
    assert_non_null(strstr(text, "# worker.api.key is unset  # default\n"));
    free(text);
    kf_conf_destroy(conf);
}

static void
test_tables(void **state)
{
    (void)state;
    kf_conf_t *conf = new_conf();
    char errstr[256] = "";
    /* The same table again is a no-op; a clashing key is an error naming it. */
    assert_int_equal(kf_conf_add_table(conf, "worker", test_props, errstr, sizeof(errstr)), KF_OK);
    static const kf_conf_prop_t clash[] = {
        {.name = "worker.name", .type = KF_CONF_STRING, .desc = "x"}, {.name = NULL}};
    assert_int_equal(kf_conf_add_table(conf, "other", clash, errstr, sizeof(errstr)),
                     KF_ERR_EXISTS);
    assert_string_equal(errstr, "table 'other': key 'worker.name' is already registered by table "
                                "'worker' with a different type or default");
    /* Two stages declaring the same shared key identically (topics.*, pg.dsn) is fine: the
     * key is kept once and keeps its value. */
    static const kf_conf_prop_t shared_a[] = {
        {.name = "shared.topic", .type = KF_CONF_STRING, .def = "t1", .desc = "a"}, {.name = NULL}};
    static const kf_conf_prop_t shared_b[] = {
        {.name = "shared.topic", .type = KF_CONF_STRING, .def = "t1", .desc = "b"},
        {.name = "shared.other", .type = KF_CONF_INT, .def = "3", .desc = "b"},
        {.name = NULL}};
    static const kf_conf_prop_t shared_c[] = {
        {.name = "shared.topic", .type = KF_CONF_STRING, .def = "t2", .desc = "c"}, {.name = NULL}};
    assert_int_equal(kf_conf_add_table(conf, "a", shared_a, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_set(conf, "shared.topic", "custom", errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_conf_add_table(conf, "b", shared_b, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(kf_conf_get_str(conf, "shared.topic"), "custom");
    assert_int_equal(kf_conf_get_int(conf, "shared.other"), 3);
    assert_int_equal(kf_conf_add_table(conf, "c", shared_c, errstr, sizeof(errstr)), KF_ERR_EXISTS);
    assert_false(kf_conf_has(conf, "missing.key"));
    static const kf_conf_prop_t bad_default[] = {
        {.name = "x.n", .type = KF_CONF_INT, .def = "ten", .desc = "x"}, {.name = NULL}};
    assert_int_equal(kf_conf_add_table(conf, "x", bad_default, errstr, sizeof(errstr)),
                     KF_ERR_CONFIG);
    assert_string_equal(errstr, "key 'x.n': value 'ten' is not an integer");
    assert_false(kf_conf_has(conf, "x.n"));
    static const kf_conf_prop_t kafka_key[] = {
        {.name = "kafka.acks", .type = KF_CONF_STRING, .desc = "x"}, {.name = NULL}};
    assert_int_equal(kf_conf_add_table(conf, "k", kafka_key, errstr, sizeof(errstr)),
                     KF_ERR_CONFIG);
    kf_conf_destroy(conf);
}

static void
test_durations(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(kf_conf_parse_duration("0", &ms), KF_OK);
    assert_int_equal(ms, 0);
    assert_int_equal(kf_conf_parse_duration("1500", &ms), KF_OK);
    assert_int_equal(ms, 1500);
    assert_int_equal(kf_conf_parse_duration("3m", &ms), KF_OK);
    assert_int_equal(ms, 180000);
    assert_int_equal(kf_conf_parse_duration("2h", &ms), KF_OK);
    assert_int_equal(ms, 7200000);
    assert_int_equal(kf_conf_parse_duration("-1s", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_conf_parse_duration("1d", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_conf_parse_duration("", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_conf_parse_duration("99999999999999999999h", &ms), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_conf_parse_duration("9223372036854775h", &ms), KF_ERR_INVALID_ARG);
}

static void
test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/kf_test_conf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs("worker.batch.max = 9\nworker.enabled = nah\n", fp);
    fclose(fp);
    kf_conf_t *conf = new_conf();
    char errstr[512] = "";
    assert_int_equal(kf_conf_load_file(conf, path, errstr, sizeof(errstr)), KF_ERR_CONFIG);
    char want[512];
    snprintf(want, sizeof(want),
             "%s:2: key 'worker.enabled': value 'nah' is not a boolean (true/false)", path);
    assert_string_equal(errstr, want);
    assert_int_equal(kf_conf_get_int(conf, "worker.batch.max"), 9); /* line 1 applied */
    unlink(path);
    assert_int_equal(kf_conf_load_file(conf, path, errstr, sizeof(errstr)), KF_ERR_IO);
    assert_non_null(strstr(errstr, "cannot open"));
    kf_conf_destroy(conf);
}

/* docs/configuration.md must contain the table generated from the registered core tables, so
 * the docs cannot drift from the code. KF_DOCS_FILE is set by the CMake fragment. */
static void
test_docs_in_sync(void **state)
{
    (void)state;
    const char *docs = getenv("KF_DOCS_FILE");
    if (!docs)
        skip();
    extern const kf_conf_prop_t kf_pg_conf_props[], kf_search_conf_props[];
    kf_conf_t *conf = kf_conf_new();
    char errstr[256];
    assert_int_equal(kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(
        kf_conf_add_table(conf, "search", kf_search_conf_props, errstr, sizeof(errstr)), KF_OK);
    char *gen = dump_to_string(conf, kf_conf_write_docs);
    FILE *fp = fopen(docs, "r");
    assert_non_null(fp);
    char *md = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&md, &cap, '\0', fp);
    fclose(fp);
    assert_true(n > 0);
    if (!strstr(md, gen))
        fail_msg("%s is out of date; regenerate the tables with "
                 "`build/tests/unit_conf --write-docs` and paste:\n%s",
                 docs, gen);
    free(md);
    free(gen);
    kf_conf_destroy(conf);
}

int
main(int argc, char **argv)
{
    /* --write-docs: print the generated tables (the generator for docs/configuration.md). */
    if (argc > 1 && strcmp(argv[1], "--write-docs") == 0) {
        extern const kf_conf_prop_t kf_pg_conf_props[], kf_search_conf_props[];
        kf_conf_t *conf = kf_conf_new();
        char errstr[256];
        kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, sizeof(errstr));
        kf_conf_add_table(conf, "search", kf_search_conf_props, errstr, sizeof(errstr));
        kf_conf_write_docs(conf, stdout);
        kf_conf_destroy(conf);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),       cmocka_unit_test(test_file_syntax),
        cmocka_unit_test(test_file_errors),    cmocka_unit_test(test_failed_value_keeps_old),
        cmocka_unit_test(test_set_assignment), cmocka_unit_test(test_env),
        cmocka_unit_test(test_dump),           cmocka_unit_test(test_unset_in_dump),
        cmocka_unit_test(test_tables),         cmocka_unit_test(test_durations),
        cmocka_unit_test(test_load_file),      cmocka_unit_test(test_docs_in_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
