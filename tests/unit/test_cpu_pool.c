/*
 * Unit tests of the CPU backend's thread pool: every index runs exactly once per dispatch,
 * results are visible to the caller when run() returns, across many back-to-back dispatches
 * (the spin path) and dispatches separated by sleeps (the condition-variable path).
 */
#include "cpu_pool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

typedef struct count_task {
    int nth_seen[64];
    long hits[64];
    long round;
    long stamp[64]; /* round number each index last ran in */
} count_task_t;

static void
count_fn(void *arg, int ith, int nth)
{
    count_task_t *ct = arg;
    ct->nth_seen[ith] = nth;
    ct->hits[ith]++;
    ct->stamp[ith] = ct->round;
}

static void
run_rounds(int n_threads, int rounds, int sleep_between)
{
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(n_threads, &pool), KF_OK);
    assert_int_equal(kf_cpu_pool_size(pool), n_threads);
    count_task_t ct;
    memset(&ct, 0, sizeof(ct));
    for (int r = 1; r <= rounds; r++) {
        ct.round = r;
        kf_cpu_pool_run(pool, count_fn, &ct);
        /* Every index finished this round before run() returned. */
        for (int i = 0; i < n_threads; i++) {
            assert_int_equal(ct.stamp[i], r);
            assert_int_equal(ct.nth_seen[i], n_threads);
        }
        if (sleep_between) {
            struct timespec ts = {0, 2000000}; /* 2 ms: past the spin phase */
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < n_threads; i++)
        assert_int_equal(ct.hits[i], rounds);
    for (int i = n_threads; i < 64; i++)
        assert_int_equal(ct.hits[i], 0);
    kf_cpu_pool_destroy(pool);
}

static void
test_pool_spin(void **state)
{
    (void)state;
    run_rounds(4, 2000, 0);
    run_rounds(1, 10, 0);
}

static void
test_pool_sleep(void **state)
{
    (void)state;
    run_rounds(3, 20, 1);
}

static void
test_pool_default_and_null(void **state)
{
    (void)state;
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(0, &pool), KF_OK);
    assert_true(kf_cpu_pool_size(pool) >= 1);
    kf_cpu_pool_destroy(pool);
    kf_cpu_pool_destroy(NULL);
    assert_int_equal(kf_cpu_pool_new(100000, &pool), KF_ERR_INVALID_ARG);
    count_task_t ct;
    memset(&ct, 0, sizeof(ct));
    kf_cpu_pool_run(NULL, count_fn, &ct); /* inline, as index 0 of 1 */
    assert_int_equal(ct.hits[0], 1);
    assert_int_equal(ct.nth_seen[0], 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_spin),
        cmocka_unit_test(test_pool_sleep),
        cmocka_unit_test(test_pool_default_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
