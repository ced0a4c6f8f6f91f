/*
 * Unit tests of kf_metrics: the exact exposition text (0.0.4), escaping, histogram
 * accumulation, the series cap, and counts under concurrent updates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "kf_metrics.h"

static void
test_render_exact(void **state)
{
    (void)state;
    kf_metrics_t *reg = kf_metrics_new();
    kf_metrics_family_t *req =
        kf_metrics_counter(reg, "kinfer_requests_total", "Requests accepted.", "route,status");
    kf_metrics_family_t *inflight =
        kf_metrics_gauge(reg, "kinfer_inflight", "Requests in flight.\nSecond \\ line.", NULL);
    static const double bounds[] = {0.1, 0.5, 2.5};
    kf_metrics_family_t *lat =
        kf_metrics_histogram(reg, "kinfer_latency_seconds", "Request latency.", "stage", bounds, 3);

    kf_metrics_series_t *ok = kf_metrics_labels(req, (const char *[]){"/v1/infer", "200"});
    kf_metrics_series_t *odd = kf_metrics_labels(req, (const char *[]){"a\"b\\c\nd", "500"});
    kf_metrics_add(ok, 1);
    kf_metrics_add(ok, 2);
    kf_metrics_add(ok, -5); /* ignored: counters only go up */
    kf_metrics_add(odd, 0.25);
    assert_ptr_equal(kf_metrics_labels(req, (const char *[]){"/v1/infer", "200"}), ok);

    kf_metrics_series_t *g = kf_metrics_labels(inflight, NULL);
    kf_metrics_set(g, 10);
    kf_metrics_add(g, -3.5);
    assert_true(kf_metrics_value(g) == 6.5);

    kf_metrics_series_t *h = kf_metrics_labels(lat, (const char *[]){"decode"});
    kf_metrics_observe(h, 0.05);
    kf_metrics_observe(h, 0.1); /* le is inclusive */
    kf_metrics_observe(h, 1);
    kf_metrics_observe(h, 100);

    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    assert_int_equal(kf_metrics_render(reg, &buf), KF_OK);
    const char *want = "# HELP kinfer_requests_total Requests accepted.\n"
                       "# TYPE kinfer_requests_total counter\n"
                       "kinfer_requests_total{route=\"/v1/infer\",status=\"200\"} 3\n"
                       "kinfer_requests_total{route=\"a\\\"b\\\\c\\nd\",status=\"500\"} 0.25\n"
                       "# HELP kinfer_inflight Requests in flight.\\nSecond \\\\ line.\n"
                       "# TYPE kinfer_inflight gauge\n"
                       "kinfer_inflight 6.5\n"
                       "# HELP kinfer_latency_seconds Request latency.\n"
                       "# TYPE kinfer_latency_seconds histogram\n"
                       "kinfer_latency_seconds_bucket{stage=\"decode\",le=\"0.1\"} 2\n"
                       "kinfer_latency_seconds_bucket{stage=\"decode\",le=\"0.5\"} 2\n"
                       "kinfer_latency_seconds_bucket{stage=\"decode\",le=\"2.5\"} 3\n"
                       "kinfer_latency_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 4\n"
                       "kinfer_latency_seconds_sum{stage=\"decode\"} 101.15\n"
                       "kinfer_latency_seconds_count{stage=\"decode\"} 4\n";
    assert_string_equal(buf.data, want);
    kf_buf_free(&buf);
    kf_metrics_destroy(reg);
}

static void
test_unlabelled_and_reregister(void **state)
{
    (void)state;
    kf_metrics_t *reg = kf_metrics_new();
    kf_metrics_family_t *c = kf_metrics_counter(reg, "a_total", "A.", NULL);
    assert_ptr_equal(kf_metrics_counter(reg, "a_total", "A.", NULL), c);
    static const double b[] = {1};
    kf_metrics_family_t *h = kf_metrics_histogram(reg, "h", "H.", "", b, 1);
    kf_metrics_family_t *g = kf_metrics_gauge(reg, "g", "G.", NULL);
    kf_metrics_set(kf_metrics_labels(g, NULL), -1e300);
    kf_metrics_observe(kf_metrics_labels(h, NULL), 0.1);
    kf_metrics_family_t *empty = kf_metrics_counter(reg, "e_total", "E.", "x");
    (void)empty;
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    assert_int_equal(kf_metrics_render(reg, &buf), KF_OK);
    assert_string_equal(buf.data, "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n"
                                  "# HELP h H.\n# TYPE h histogram\n"
                                  "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
                                  "h_sum 0.1\nh_count 1\n"
                                  "# HELP g G.\n# TYPE g gauge\ng -1e+300\n"
                                  "# HELP e_total E.\n# TYPE e_total counter\n");
    /* A capped buffer reports the limit instead of growing. */
    kf_buf_t small;
    kf_buf_init(&small, 32);
    assert_int_equal(kf_metrics_render(reg, &small), KF_ERR_LIMIT);
    kf_buf_free(&small);
    kf_buf_free(&buf);
    kf_metrics_destroy(reg);
}

static void
test_series_cap(void **state)
{
    (void)state;
    kf_metrics_t *reg = kf_metrics_new();
    kf_metrics_family_t *c = kf_metrics_counter(reg, "c_total", "C.", "id");
    char id[32];
    for (int i = 0; i < KF_METRICS_MAX_SERIES; i++) {
        snprintf(id, sizeof(id), "%d", i);
        assert_non_null(kf_metrics_labels(c, (const char *[]){id}));
    }
    kf_metrics_series_t *over = kf_metrics_labels(c, (const char *[]){"one-too-many"});
    assert_null(over);
    kf_metrics_add(over, 1); /* a no-op, not a crash */
    assert_true(kf_metrics_value(over) == 0);
    kf_metrics_destroy(reg);
}

#define THREADS    4
#define PER_THREAD 100000

static void *
hammer(void *arg)
{
    kf_metrics_series_t **s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        kf_metrics_add(s[0], 1);
        kf_metrics_observe(s[1], (i % 2) ? 0.5 : 5);
    }
    return NULL;
}

static void
test_concurrent(void **state)
{
    (void)state;
    kf_metrics_t *reg = kf_metrics_new();
    static const double b[] = {1};
    kf_metrics_series_t *s[2] = {
        kf_metrics_labels(kf_metrics_counter(reg, "n_total", "N.", NULL), NULL),
        kf_metrics_labels(kf_metrics_histogram(reg, "x", "X.", NULL, b, 1), NULL)};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, s);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_true(kf_metrics_value(s[0]) == THREADS * PER_THREAD);
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    assert_int_equal(kf_metrics_render(reg, &buf), KF_OK);
    assert_non_null(strstr(buf.data, "n_total 400000\n"));
    assert_non_null(strstr(buf.data, "x_bucket{le=\"1\"} 200000\n"));
    assert_non_null(strstr(buf.data, "x_bucket{le=\"+Inf\"} 400000\n"));
    assert_non_null(strstr(buf.data, "x_sum 1100000\n"));
    assert_non_null(strstr(buf.data, "x_count 400000\n"));
    kf_buf_free(&buf);
    kf_metrics_destroy(reg);
}

static void
test_buf(void **state)
{
    (void)state;
    kf_buf_t b;
    kf_buf_init(&b, 0);
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kf_buf_appendf(&b, "%s-%d", big, 7), KF_OK);
    assert_int_equal(b.len, 1001);
    assert_string_equal(b.data + 999, "-7");
    kf_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    size_t n = 99;
    char *s = kf_buf_steal(&b, &n);
    assert_string_equal(s, "");
    assert_int_equal(n, 0);
    assert_null(b.data);
    free(s);
    kf_buf_t capped;
    kf_buf_init(&capped, 4);
    assert_int_equal(kf_buf_append(&capped, "abcd", 4), KF_OK);
    assert_int_equal(kf_buf_append(&capped, "e", 1), KF_ERR_LIMIT);
    assert_string_equal(capped.data, "abcd");
    kf_buf_free(&capped);
    kf_buf_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact), cmocka_unit_test(test_unlabelled_and_reregister),
        cmocka_unit_test(test_series_cap),   cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
