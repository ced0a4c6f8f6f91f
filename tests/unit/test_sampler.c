/*
 * Unit tests for kf_sampler: exact picks on hand-built logits for every stage (greedy, repetition
 * penalty, top-k, top-p, min-p), distribution checks with fixed seeds (deterministic, so they
 * cannot flake), seed reproducibility, argument validation, and the stop-string helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static kf_sampler_t *
mk(const kf_sampling_t *sp, int32_t n_vocab)
{
    kf_sampler_t *smp = NULL;
    char err[256] = "";
    assert_int_equal(kf_sampler_new(sp, n_vocab, &smp, err, sizeof(err)), KF_OK);
    assert_non_null(smp);
    return smp;
}

/* Sampling with every filter off: only temperature shapes the distribution. */
static kf_sampling_t
plain(float temp, uint64_t seed)
{
    kf_sampling_t sp;
    kf_sampling_defaults(&sp);
    sp.temperature = temp;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = seed;
    return sp;
}

static void
test_greedy_picks(void **state)
{
    (void)state;
    kf_sampling_t sp;
    kf_sampling_greedy(&sp);
    kf_sampler_t *smp = mk(&sp, 5);
    float a[5] = {0.1f, 2.0f, -3.0f, 1.9f, 0.0f};
    assert_int_equal(kf_sampler_sample(smp, a), 1);
    /* Ties go to the lowest id. */
    float b[5] = {1.0f, 3.0f, 3.0f, -1.0f, 3.0f};
    assert_int_equal(kf_sampler_sample(smp, b), 1);
    /* NaN is never picked, -inf only when nothing else exists. */
    float c[5] = {NAN, -INFINITY, -5.0f, NAN, -6.0f};
    assert_int_equal(kf_sampler_sample(smp, c), 2);
    float d[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(kf_sampler_sample(smp, d), 0);
    /* The input row is not modified. */
    assert_true(a[1] == 2.0f && a[3] == 1.9f);
    kf_sampler_destroy(smp);
}

static void
test_repeat_penalty(void **state)
{
    (void)state;
    kf_sampling_t sp;
    kf_sampling_greedy(&sp);
    sp.repeat_penalty = 1.5f;
    sp.repeat_last_n = 2;
    kf_sampler_t *smp = mk(&sp, 4);
    float row[4] = {2.0f, 1.5f, -1.0f, -1.2f};
    assert_int_equal(kf_sampler_sample(smp, row), 0); /* no history yet */
    kf_sampler_accept(smp, 0);
    /* 2.0 / 1.5 = 1.333 < 1.5: token 1 wins. */
    assert_int_equal(kf_sampler_sample(smp, row), 1);
    /* Repeating a token in the window penalizes it once, not twice. */
    kf_sampler_accept(smp, 0);
    float row2[4] = {2.0f, 1.2f, -1.0f, -1.2f};
    assert_int_equal(kf_sampler_sample(smp, row2), 0); /* 1.333 > 1.2 */
    /* Window of 2: after two more tokens, token 0 leaves it and is no longer penalized. */
    kf_sampler_accept(smp, 2);
    kf_sampler_accept(smp, 3);
    assert_int_equal(kf_sampler_sample(smp, row), 0);
    kf_sampler_destroy(smp);

    /* Negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2, so token 3 beats token 2. */
    sp.repeat_last_n = 64;
    smp = mk(&sp, 4);
    float neg[4] = {-5.0f, -5.0f, -1.0f, -1.2f};
    kf_sampler_accept(smp, 2);
    assert_int_equal(kf_sampler_sample(smp, neg), 3);
    assert_int_equal(kf_sampler_n_accepted(smp), 1);
    kf_sampler_destroy(smp);
}

/* Counts picks over n draws. */
static void
histogram(kf_sampler_t *smp, const float *row, int n, int *counts, int n_vocab)
{
    memset(counts, 0, sizeof(int) * (size_t)n_vocab);
    for (int i = 0; i < n; i++) {
        int32_t t = kf_sampler_sample(smp, row);
        assert_true(t >= 0 && t < n_vocab);
        counts[t]++;
    }
}

static void
test_top_k(void **state)
{
    (void)state;
    kf_sampling_t sp = plain(1.0f, 7);
    sp.top_k = 1;
    kf_sampler_t *smp = mk(&sp, 6);
    float row[6] = {0.5f, 0.4f, 0.6f, 0.3f, 0.59f, 0.1f};
    for (int i = 0; i < 200; i++)
        assert_int_equal(kf_sampler_sample(smp, row), 2);
    kf_sampler_destroy(smp);

    /* top_k = 2 of 6 nearly equal logits: only ids 2 and 4 ever come out. */
    sp.top_k = 2;
    smp = mk(&sp, 6);
    int counts[6];
    histogram(smp, row, 4000, counts, 6);
    assert_int_equal(counts[0] + counts[1] + counts[3] + counts[5], 0);
    assert_true(counts[2] > 1700 && counts[4] > 1700);
    kf_sampler_destroy(smp);
}

static void
test_top_p_min_p(void **state)
{
    (void)state;
    float p[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float row[4];
    for (int i = 0; i < 4; i++)
        row[i] = logf(p[i]);
    int counts[4];

    /* top_p 0.7: 0.5 < 0.7, 0.8 >= 0.7 -> keep {0, 1}, renormalized to 0.625 / 0.375. */
    kf_sampling_t sp = plain(1.0f, 42);
    sp.top_p = 0.7f;
    kf_sampler_t *smp = mk(&sp, 4);
    histogram(smp, row, 20000, counts, 4);
    assert_int_equal(counts[2] + counts[3], 0);
    assert_true(fabs(counts[0] / 20000.0 - 0.625) < 0.015);
    kf_sampler_destroy(smp);

    /* top_p 0.45 keeps exactly the first token (its 0.5 already reaches it). */
    sp.top_p = 0.45f;
    smp = mk(&sp, 4);
    histogram(smp, row, 500, counts, 4);
    assert_int_equal(counts[0], 500);
    kf_sampler_destroy(smp);

    /* min_p 0.35: keep p >= 0.175 -> {0, 1}; min_p 0.25: keep p >= 0.125 -> {0, 1, 2}. */
    sp = plain(1.0f, 43);
    sp.min_p = 0.35f;
    smp = mk(&sp, 4);
    histogram(smp, row, 20000, counts, 4);
    assert_int_equal(counts[2] + counts[3], 0);
    assert_true(fabs(counts[1] / 20000.0 - 0.375) < 0.015);
    kf_sampler_destroy(smp);
    sp.min_p = 0.25f;
    smp = mk(&sp, 4);
    histogram(smp, row, 20000, counts, 4);
    assert_int_equal(counts[3], 0);
    assert_true(counts[2] > 0);
    assert_true(fabs(counts[2] / 20000.0 - 0.15 / 0.95) < 0.015);
    kf_sampler_destroy(smp);
}

static void
test_distribution_temperature(void **state)
{
    (void)state;
    float p[4] = {0.4f, 0.3f, 0.2f, 0.1f};
    float row[4];
    for (int i = 0; i < 4; i++)
        row[i] = logf(p[i]) + 3.0f; /* a shift must not matter */
    int counts[4];
    const int n = 50000;

    /* T = 1 reproduces p. */
    kf_sampling_t sp = plain(1.0f, 1234);
    kf_sampler_t *smp = mk(&sp, 4);
    histogram(smp, row, n, counts, 4);
    for (int i = 0; i < 4; i++)
        assert_true(fabs((double)counts[i] / n - p[i]) < 0.01);
    kf_sampler_destroy(smp);

    /* T = 0.5 squares the probabilities: p^2 / sum(p^2) = .16,.09,.04,.01 / .30. */
    sp = plain(0.5f, 99);
    smp = mk(&sp, 4);
    histogram(smp, row, n, counts, 4);
    double sq = 0.16 + 0.09 + 0.04 + 0.01;
    double want[4] = {0.16 / sq, 0.09 / sq, 0.04 / sq, 0.01 / sq};
    for (int i = 0; i < 4; i++)
        assert_true(fabs((double)counts[i] / n - want[i]) < 0.01);
    kf_sampler_destroy(smp);
}

static void
test_seed_reproducible(void **state)
{
    (void)state;
    enum { V = 50, N = 300 };
    float row[V];
    for (int i = 0; i < V; i++)
        row[i] = (float)((i * 37) % 11) * 0.3f;
    kf_sampling_t sp;
    kf_sampling_defaults(&sp);
    sp.seed = 2024;
    sp.top_k = 20;
    sp.repeat_penalty = 1.1f;
    kf_sampler_t *a = mk(&sp, V), *b = mk(&sp, V);
    int32_t ta[N];
    int differs_from_greedy = 0;
    for (int i = 0; i < N; i++) {
        ta[i] = kf_sampler_sample(a, row);
        kf_sampler_accept(a, ta[i]);
        int32_t tb = kf_sampler_sample(b, row);
        kf_sampler_accept(b, tb);
        assert_int_equal(ta[i], tb);
        if (ta[i] != ta[0])
            differs_from_greedy = 1;
    }
    assert_true(differs_from_greedy); /* it really sampled */
    assert_int_equal(kf_sampler_seed(a), 2024);
    kf_sampler_destroy(a);
    kf_sampler_destroy(b);

    /* A different seed gives a different sequence. */
    sp.seed = 2025;
    kf_sampler_t *c = mk(&sp, V);
    int same = 1;
    for (int i = 0; i < N; i++) {
        int32_t t = kf_sampler_sample(c, row);
        kf_sampler_accept(c, t);
        if (t != ta[i])
            same = 0;
    }
    assert_false(same);
    kf_sampler_destroy(c);

    /* Random seeds are reported and usable. */
    sp.seed = KF_SAMPLER_SEED_RANDOM;
    c = mk(&sp, V);
    assert_true(kf_sampler_seed(c) != KF_SAMPLER_SEED_RANDOM);
    kf_sampler_destroy(c);
}

static void
test_validation(void **state)
{
    (void)state;
    char err[256];
    kf_sampling_t sp;
    kf_sampler_t *smp = (kf_sampler_t *)1;
    kf_sampling_defaults(&sp);
    sp.top_p = 0.0f;
    assert_int_equal(kf_sampler_new(&sp, 10, &smp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_null(smp);
    assert_non_null(strstr(err, "top_p"));
    kf_sampling_defaults(&sp);
    sp.temperature = NAN;
    assert_int_equal(kf_sampling_check(&sp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "temperature"));
    kf_sampling_defaults(&sp);
    sp.repeat_penalty = 0.0f;
    assert_int_equal(kf_sampling_check(&sp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_sampling_defaults(&sp);
    sp.min_p = 1.5f;
    assert_int_equal(kf_sampling_check(&sp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_sampling_defaults(&sp);
    sp.repeat_last_n = -2;
    assert_int_equal(kf_sampling_check(&sp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_sampling_defaults(&sp);
    assert_int_equal(kf_sampler_new(&sp, 0, &smp, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_sampling_check(&sp, err, sizeof(err)), KF_OK);
    kf_sampler_destroy(NULL);
}

static void
test_stop_strings(void **state)
{
    (void)state;
    const char *stops[] = {"</end>", "STOP", "", NULL};
    size_t pos = 99;
    const char *t1 = "hello </en";
    assert_int_equal(kf_stop_find(t1, strlen(t1), 0, stops, 4, &pos), 0);
    /* "</en" may become "</end>": hold 4 bytes back. */
    assert_int_equal(kf_stop_partial(t1, strlen(t1), stops, 4), 4);
    /* The next token completes the stop string across the boundary. */
    const char *t2 = "hello </end> more";
    assert_int_equal(kf_stop_find(t2, strlen(t2), strlen(t1), stops, 4, &pos), 1);
    assert_int_equal(pos, 6);
    /* Earliest match wins between stop strings. */
    const char *t3 = "aSTOPb</end>";
    assert_int_equal(kf_stop_find(t3, strlen(t3), 0, stops, 4, &pos), 1);
    assert_int_equal(pos, 1);
    /* A match entirely before `from` was already seen and is not reported again. */
    assert_int_equal(kf_stop_find(t3, 6, 6, stops, 2, &pos), 0);
    /* Partial: "ST" may become STOP; nothing to hold for plain text. */
    assert_int_equal(kf_stop_partial("xxST", 4, stops, 4), 2);
    assert_int_equal(kf_stop_partial("xxSx", 4, stops, 4), 0);
    assert_int_equal(kf_stop_partial("", 0, stops, 4), 0);
    /* A full match is not a "proper prefix". */
    assert_int_equal(kf_stop_partial("STOP", 4, stops + 1, 1), 0);
}

static void
test_utf8_tail(void **state)
{
    (void)state;
    const char *e = "caf\xC3\xA9"; /* complete 2-byte char */
    assert_int_equal(kf_utf8_incomplete_tail(e, 5), 0);
    assert_int_equal(kf_utf8_incomplete_tail(e, 4), 1);
    const char *th = "\xE2\x96\x81"; /* 3-byte char, cut after 1 and 2 bytes */
    assert_int_equal(kf_utf8_incomplete_tail(th, 1), 1);
    assert_int_equal(kf_utf8_incomplete_tail(th, 2), 2);
    assert_int_equal(kf_utf8_incomplete_tail(th, 3), 0);
    const char *emoji = "a\xF0\x9F\x98\x80";
    assert_int_equal(kf_utf8_incomplete_tail(emoji, 4), 3);
    assert_int_equal(kf_utf8_incomplete_tail(emoji, 5), 0);
    assert_int_equal(kf_utf8_incomplete_tail("\x80\x80", 2), 0);
    assert_int_equal(kf_utf8_incomplete_tail("", 0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_picks),
        cmocka_unit_test(test_repeat_penalty),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p_min_p),
        cmocka_unit_test(test_distribution_temperature),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_utf8_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
