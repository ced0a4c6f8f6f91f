/*
 * Unit tests of the pg.* and search.* tables and of the clients' behaviour when their server is
 * unreachable (a closed port on 127.0.0.1): retriable errors, every bulk item marked for retry,
 * bad arguments refused before any I/O. The live paths are covered by tests/integration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "kf_conf.h"
#include "kf_pg.h"
#include "kf_search.h"

/* A TCP port on 127.0.0.1 that nobody listens on (bound, read, closed). */
static unsigned
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void
test_opts_from_conf(void **state)
{
    (void)state;
    kf_conf_t *conf = kf_conf_new();
    char errstr[256] = "";
    assert_int_equal(kf_conf_add_table(conf, "pg", kf_pg_conf_props, errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(
        kf_conf_add_table(conf, "search", kf_search_conf_props, errstr, sizeof(errstr)), KF_OK);
    char *const env[] = {"KINFER_PG_DSN=host=h dbname=d password=secret",
                         "KINFER_SEARCH_URL=http://127.0.0.1:9", "KINFER_PG_RETRY_DEADLINE=0",
                         NULL};
    const char *text = "pg.statement.timeout = 2s\npg.reconnect.backoff.max = 1m\n"
                       "search.password = pw\nsearch.tls.insecure = yes\n";
    assert_int_equal(kf_conf_load_string(conf, text, strlen(text), "t", errstr, sizeof(errstr)),
                     KF_OK);
    assert_int_equal(kf_conf_load_env(conf, env, errstr, sizeof(errstr)), KF_OK);

    kf_pg_opts_t po;
    kf_pg_opts_from_conf(conf, &po);
    assert_string_equal(po.dsn, "host=h dbname=d password=secret");
    assert_int_equal(po.statement_timeout_ms, 2000);
    assert_int_equal(po.connect_timeout_ms, 5000);
    assert_int_equal(po.backoff_initial_ms, 100);
    assert_int_equal(po.backoff_max_ms, 60000);
    assert_true(po.retry_deadline_ms < 0); /* 0 in config means "never retry" */

    kf_search_opts_t so;
    kf_search_opts_from_conf(conf, &so);
    assert_string_equal(so.url, "http://127.0.0.1:9");
    assert_string_equal(so.password, "pw");
    assert_null(so.username);
    assert_int_equal(so.insecure, 1);
    assert_int_equal(so.timeout_ms, 30000);

    /* Secrets never appear in the dump. */
    char *dump = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&dump, &len);
    kf_conf_dump(conf, fp);
    fclose(fp);
    assert_null(strstr(dump, "secret"));
    assert_non_null(strstr(dump, "pg.dsn = ***  # env\n"));
    assert_non_null(strstr(dump, "search.password = ***  # file\n"));
    free(dump);
    kf_conf_destroy(conf);
}

static void
test_pg_unreachable(void **state)
{
    (void)state;
    char dsn[128], errstr[512] = "";
    snprintf(dsn, sizeof(dsn), "host=127.0.0.1 port=%u dbname=x user=x password=hunter2",
             closed_port());
    kf_pg_opts_t opts = {.dsn = dsn};
    kf_pg_t *pg = (kf_pg_t *)0x1;
    assert_int_equal(kf_pg_new(&opts, &pg, errstr, sizeof(errstr)), KF_ERR_UNAVAILABLE);
    assert_null(pg);
    assert_non_null(strstr(errstr, "postgres: connect failed: "));
    assert_non_null(strstr(errstr, "Connection refused"));
    assert_null(strstr(errstr, "hunter2"));

    opts.dsn = "host=127.0.0.1 port";
    assert_int_equal(kf_pg_new(&opts, &pg, errstr, sizeof(errstr)), KF_ERR_DB);
    assert_non_null(strstr(errstr, "missing \"=\""));
    opts.dsn = NULL;
    assert_int_equal(kf_pg_new(&opts, &pg, errstr, sizeof(errstr)), KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "postgres: a connection string (pg.dsn) is required");
}

static void
test_search_unreachable(void **state)
{
    (void)state;
    char url[64], errstr[512] = "";
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", closed_port());
    kf_search_opts_t opts = {.url = url};
    kf_search_t *s = NULL;
    assert_int_equal(kf_search_new(&opts, &s, errstr, sizeof(errstr)), KF_OK);

    json_t *src = json_pack("{s:s}", "a", "b");
    kf_search_doc_t docs[2] = {{.id = "1", .source = src}, {.id = "2", .source = src}};
    kf_search_item_t items[2];
    kf_search_bulk_stats_t st;
    assert_int_equal(kf_search_bulk_create(s, "idx", docs, 2, items, &st, errstr, sizeof(errstr)),
                     KF_ERR_UNAVAILABLE);
    assert_int_equal(st.retry, 2);
    assert_int_equal(items[0].status, KF_SEARCH_ITEM_RETRY);
    assert_int_equal(items[1].status, KF_SEARCH_ITEM_RETRY);
    int64_t n = 0;
    assert_int_equal(kf_search_count(s, "idx", NULL, &n, errstr, sizeof(errstr)),
                     KF_ERR_UNAVAILABLE);
    assert_int_equal(n, -1);

    /* Refused before any I/O. */
    assert_int_equal(kf_search_bulk_create(s, "Bad", docs, 2, items, &st, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "invalid index name 'Bad'");
    kf_search_doc_t noid[1] = {{.id = "", .source = src}};
    assert_int_equal(kf_search_bulk_create(s, "idx", noid, 1, items, &st, errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "bulk: document 0 needs a non-empty id and an object source");
    assert_int_equal(kf_search_delete_index(s, "kinfer-*", errstr, sizeof(errstr)),
                     KF_ERR_INVALID_ARG);
    assert_true(kf_search_valid_index("kinfer-audit-2026.11", 0));
    assert_false(kf_search_valid_index("_all", 0));
    assert_false(kf_search_valid_index("a/b", 0));
    assert_true(kf_search_valid_index("kinfer-*", 1));
    json_decref(src);
    kf_search_destroy(s);

    opts.url = "ftp://x";
    assert_int_equal(kf_search_new(&opts, &s, errstr, sizeof(errstr)), KF_ERR_INVALID_ARG);
    assert_string_equal(errstr, "search URL 'ftp://x' must start with http:// or https://");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts_from_conf),
        cmocka_unit_test(test_pg_unreachable),
        cmocka_unit_test(test_search_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
