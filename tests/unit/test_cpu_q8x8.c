/*
 * Unit tests of the CPU backend's Q8_0x8 layout (inference/backends/cpu/cpu_q8x8.c): packing
 * keeps every value (unpacked rows equal the GGUF rows), the SIMD kernel equals its scalar
 * definition bit for bit for every token count and tile split, results match a
 * double-precision dot product over the same quantized values, extreme bytes (-128 weights,
 * +-127 activations) give exact integer sums, batched matmul equals one token at a time bit
 * for bit (also when the last 8-row group is partial), only Q8_0 matrices are eligible, and
 * requantized Q4_0/Q4_K/Q6_K matrices hold the Q8_0 quantization of their values.
 */
#include "cpu_kernels.h"
#include "cpu_pool.h"
#include "kf_quant.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static float
rng_f(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

typedef struct q8x8_case {
    size_t n_in, n_out, rb, nb;
    uint32_t n_tok;
    uint8_t *W; /* GGUF Q8_0 rows */
    uint8_t *P; /* packed */
    float *X;   /* activations, n_tok rows */
    kf_q8a_t *Xq;
} q8x8_case_t;

static void
case_init(q8x8_case_t *c, size_t n_in, size_t n_out, uint32_t n_tok)
{
    c->n_in = n_in;
    c->n_out = n_out;
    c->n_tok = n_tok;
    c->nb = n_in / 32;
    c->rb = kf_quant_row_size(KF_TT_Q8_0, (int64_t)n_in);
    assert_int_equal(c->rb, c->nb * 34);
    c->W = malloc(c->rb * n_out);
    c->P = malloc(kf_cpu_q8x8_bytes(n_in, n_out));
    c->X = malloc(sizeof(float) * n_in * n_tok);
    c->Xq = malloc(sizeof(kf_q8a_t) * c->nb * n_tok);
    float *row = malloc(sizeof(float) * n_in);
    assert_non_null(c->W);
    assert_non_null(c->P);
    assert_non_null(c->X);
    assert_non_null(c->Xq);
    assert_non_null(row);
    for (size_t r = 0; r < n_out; r++) {
        /* Rows of different magnitudes, so scales differ between the rows of a group. */
        float mag = 0.01f * (float)(1 + r % 7);
        for (size_t i = 0; i < n_in; i++)
            row[i] = rng_f() * mag;
        assert_int_equal(kf_quant_row(KF_TT_Q8_0, row, c->W + r * c->rb, (int64_t)n_in), KF_OK);
    }
    free(row);
    for (size_t i = 0; i < n_in * n_tok; i++)
        c->X[i] = rng_f() * 3.0f;
    for (uint32_t t = 0; t < n_tok; t++)
        kf_cpu_quantize_q8a(c->X + t * n_in, c->Xq + t * c->nb, n_in);
    kf_cpu_q8x8_pack(c->W, c->rb, n_in, n_out, c->P);
}

static void
case_free(q8x8_case_t *c)
{
    free(c->W);
    free(c->P);
    free(c->X);
    free(c->Xq);
}

/* Requantized 4- and 6-bit matrices: every row unpacks to exactly the Q8_0 quantization of
 * the source row's values, which is within half a Q8_0 step of them; partial last group
 * padded; only Q4_0 / Q4_K / Q6_K qualify. */
static void
check_requant(kf_tensor_type_t t, size_t n_in, size_t n_out)
{
    size_t rb = kf_quant_row_size(t, (int64_t)n_in), q8rb = n_in / 32 * 34;
    uint8_t *src = malloc(rb * n_out), *q8 = malloc(q8rb);
    uint8_t *P = malloc(kf_cpu_q8x8_bytes(n_in, n_out));
    float *f = malloc(sizeof(float) * n_in), *want = malloc(sizeof(float) * n_in);
    float *got = malloc(sizeof(float) * n_in);
    for (size_t r = 0; r < n_out; r++) {
        for (size_t i = 0; i < n_in; i++)
            f[i] = rng_f() * 0.02f * (float)(1 + r % 5);
        assert_int_equal(kf_quant_row(t, f, src + r * rb, (int64_t)n_in), KF_OK);
    }
    memset(P, 0x5a, kf_cpu_q8x8_bytes(n_in, n_out));
    uint64_t ng = (n_out + 7) / 8;
    /* In two calls, as the parallel packer splits groups. */
    assert_int_equal(kf_cpu_q8x8_requant_groups(t, src, rb, n_in, n_out, P, 0, ng / 2), KF_OK);
    assert_int_equal(kf_cpu_q8x8_requant_groups(t, src, rb, n_in, n_out, P, ng / 2, ng), KF_OK);
    for (size_t r = 0; r < n_out; r++) {
        kf_cpu_dequant_row(t, src + r * rb, f, n_in);
        assert_int_equal(kf_quant_row(KF_TT_Q8_0, f, q8, (int64_t)n_in), KF_OK);
        kf_cpu_dequant_row(KF_TT_Q8_0, q8, want, n_in);
        kf_cpu_q8x8_dequant_row(P, n_in, r, got);
        assert_memory_equal(want, got, sizeof(float) * n_in);
        for (size_t b = 0; b < n_in / 32; b++) {
            float amax = 0.0f;
            for (int i = 0; i < 32; i++)
                amax = fmaxf(amax, fabsf(f[32 * b + i]));
            for (int i = 0; i < 32; i++)
                assert_true(fabsf(got[32 * b + i] - f[32 * b + i]) <=
                            amax / 254.0f * 1.01f + 1e-9f);
        }
    }
    if (n_out % 8) { /* padding rows of the last group: zero scales */
        const uint8_t *g = P + (ng - 1) * (n_in / 32) * KF_Q8X8_GROUP_BLOCK_BYTES;
        for (size_t r = n_out % 8; r < 8; r++)
            assert_int_equal(g[2 * r] | g[2 * r + 1], 0);
    }
    free(src);
    free(q8);
    free(P);
    free(f);
    free(want);
    free(got);
}

static void
test_requant(void **state)
{
    (void)state;
    check_requant(KF_TT_Q4_0, 96, 13);
    check_requant(KF_TT_Q4_K, 512, 21);
    check_requant(KF_TT_Q6_K, 256, 16);
    assert_true(kf_cpu_q8x8_requant_eligible(KF_TT_Q4_K, 1024, 64));
    assert_true(kf_cpu_q8x8_requant_eligible(KF_TT_Q6_K, 256, 3));
    assert_true(kf_cpu_q8x8_requant_eligible(KF_TT_Q4_0, 32, 1));
    assert_false(kf_cpu_q8x8_requant_eligible(KF_TT_Q8_0, 896, 64)); /* packed, not requantized */
    assert_false(kf_cpu_q8x8_requant_eligible(KF_TT_F16, 896, 64));
    assert_false(kf_cpu_q8x8_requant_eligible(KF_TT_Q4_K, 256, 0));
}

static void
test_eligible(void **state)
{
    (void)state;
    assert_true(kf_cpu_q8x8_eligible(KF_TT_Q8_0, 896, 4864));
    assert_true(kf_cpu_q8x8_eligible(KF_TT_Q8_0, 32, 8));
    assert_true(kf_cpu_q8x8_eligible(KF_TT_Q8_0, 896, 151665)); /* last group padded */
    assert_false(kf_cpu_q8x8_eligible(KF_TT_Q8_0, 48, 8));      /* not whole blocks */
    assert_false(kf_cpu_q8x8_eligible(KF_TT_Q8_0, 896, 0));
    assert_false(kf_cpu_q8x8_eligible(KF_TT_F16, 896, 4864));
    assert_false(kf_cpu_q8x8_eligible(KF_TT_Q4_K, 1024, 64));
    assert_int_equal(kf_cpu_q8x8_bytes(896, 4864), (size_t)4864 * 28 * 34);
    assert_int_equal(kf_cpu_q8x8_bytes(64, 13), (size_t)16 * 2 * 34); /* 2 groups */
    assert_true(kf_cpu_type_uses_q8a(KF_TT_CPU_Q8_0X8));
}

/* Unpacking any row gives exactly the GGUF row's values. */
static void
test_pack_roundtrip(void **state)
{
    (void)state;
    q8x8_case_t c;
    case_init(&c, 160, 21, 1); /* 3 groups, the last with 5 rows */
    float *a = malloc(sizeof(float) * c.n_in), *b = malloc(sizeof(float) * c.n_in);
    for (size_t r = 0; r < c.n_out; r++) {
        kf_cpu_dequant_row(KF_TT_Q8_0, c.W + r * c.rb, a, c.n_in);
        kf_cpu_q8x8_dequant_row(c.P, c.n_in, r, b);
        assert_memory_equal(a, b, sizeof(float) * c.n_in);
    }
    /* And the bytes moved where the layout says: row 13 (group 1, lane 5), block 2, value 9
     * (chunk 2, byte 1) is at group 1 + block 2 * 272 + 16 + 32*2 + 4*5 + 1, offset by 0x80. */
    size_t g1 = 1 * c.nb * KF_Q8X8_GROUP_BLOCK_BYTES;
    assert_int_equal(c.P[g1 + 2 * 272 + 16 + 64 + 20 + 1], c.W[13 * c.rb + 2 * 34 + 2 + 9] ^ 0x80);
    assert_memory_equal(&c.P[g1 + 2 * 272 + 2 * 5], &c.W[13 * c.rb + 2 * 34], 2);
    /* Padding rows 21..23: zero scales, quants stored as 0x80 (zero). */
    size_t g2 = 2 * c.nb * KF_Q8X8_GROUP_BLOCK_BYTES;
    for (size_t k = 0; k < c.nb; k++)
        for (int r = 5; r < 8; r++) {
            const uint8_t *blk = c.P + g2 + k * 272;
            assert_int_equal(blk[2 * r] | blk[2 * r + 1], 0);
            for (int j = 0; j < 8; j++)
                for (int i = 0; i < 4; i++)
                    assert_int_equal(blk[16 + 32 * j + 4 * r + i], 0x80);
        }
    free(a);
    free(b);
    case_free(&c);
}

/* SIMD == scalar definition, bit for bit, for 1..19 tokens (every 8/4/2/1 tile split), and
 * both within 1e-5 of a double dot product of the same quantized values. */
static void
test_rows_match_ref(void **state)
{
    (void)state;
    q8x8_case_t c;
    case_init(&c, 896, 16, 19);
    float *y = malloc(sizeof(float) * 19 * 8), *yr = malloc(sizeof(float) * 19 * 8);
    float *wrow = malloc(sizeof(float) * c.n_in);
    for (uint32_t nt = 1; nt <= 19; nt++) {
        for (size_t g = 0; g < 2; g++) {
            const uint8_t *grp = c.P + g * c.nb * KF_Q8X8_GROUP_BLOCK_BYTES;
            kf_cpu_q8x8_rows(grp, c.n_in, c.Xq, nt, y, 8, 8);
            kf_cpu_q8x8_rows_ref(grp, c.n_in, c.Xq, nt, yr, 8, 8);
            assert_memory_equal(y, yr, sizeof(float) * nt * 8);
            if (nt != 19)
                continue;
            for (unsigned r = 0; r < 8; r++) {
                kf_cpu_dequant_row(KF_TT_Q8_0, c.W + (g * 8 + r) * c.rb, wrow, c.n_in);
                for (uint32_t t = 0; t < nt; t++) {
                    double s = 0.0, mag = 0.0;
                    for (size_t b = 0; b < c.nb; b++)
                        for (int i = 0; i < 32; i++) {
                            double v = (double)wrow[b * 32 + (size_t)i] *
                                       ((double)c.Xq[t * c.nb + b].d * c.Xq[t * c.nb + b].qs[i]);
                            s += v;
                            mag += fabs(v);
                        }
                    double got = y[t * 8 + r];
                    if (fabs(got - s) > 1e-5 * mag + 1e-12) {
                        print_error("group %zu row %u tok %u: %.9g vs double %.9g\n", g, r, t, got,
                                    s);
                        fail();
                    }
                }
            }
        }
    }
    free(y);
    free(yr);
    free(wrow);
    case_free(&c);
}

/* Extreme bytes: weights -128 and 127 against activations +-127 in every position. The
 * integer sums must be exact (the AVX2 path's maddubs must not saturate, the VNNI path's
 * offset correction must cancel exactly). One block, scales 1.0, so y is the integer sum. */
static void
test_extreme_bytes(void **state)
{
    (void)state;
    uint8_t W[8 * 34], P[KF_Q8X8_GROUP_BLOCK_BYTES];
    kf_q8a_t x[3];
    memset(x, 0, sizeof(x));
    for (int r = 0; r < 8; r++) {
        W[r * 34] = 0x00;
        W[r * 34 + 1] = 0x3c; /* f16 1.0 */
        for (int i = 0; i < 32; i++) {
            int8_t q = (int8_t)(((r + i) % 3 == 0) ? -128 : ((r * 7 + i) % 2 ? 127 : -127));
            if (r == 0)
                q = -128; /* a row of -128 only */
            W[r * 34 + 2 + i] = (uint8_t)q;
        }
    }
    for (int t = 0; t < 3; t++) {
        x[t].d = 1.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            int8_t v = (int8_t)(t == 0 ? 127 : (t == 1 ? -127 : ((i % 2) ? 127 : -127)));
            x[t].qs[i] = v;
            sum += v;
        }
        x[t].nsum128 = -128 * sum;
        x[t].s16[0] = x[t].s16[1] = 0; /* unused by this layout */
    }
    kf_cpu_q8x8_pack(W, 34, 32, 8, P);
    float y[3 * 8], yr[3 * 8];
    kf_cpu_q8x8_rows(P, 32, x, 3, y, 8, 8);
    kf_cpu_q8x8_rows_ref(P, 32, x, 3, yr, 8, 8);
    for (int t = 0; t < 3; t++)
        for (int r = 0; r < 8; r++) {
            long want = 0;
            for (int i = 0; i < 32; i++)
                want += (long)(int8_t)W[r * 34 + 2 + i] * x[t].qs[i];
            assert_float_equal(y[t * 8 + r], (float)want, 0.0f);
            assert_float_equal(yr[t * 8 + r], (float)want, 0.0f);
        }
    /* Row 0 against all +127: 32 * -128 * 127. */
    assert_float_equal(y[0], -520192.0f, 0.0f);
}

/* Through kf_cpu_matmul on a pool: batched == one token at a time, bit for bit, and equal to
 * the per-group scalar definition. */
static void
check_matmul(kf_cpu_pool_t *pool, size_t n_in, size_t n_out, uint32_t n_tok)
{
    q8x8_case_t c;
    case_init(&c, n_in, n_out, n_tok);
    kf_weight_t W = {
        .type = KF_TT_CPU_Q8_0X8, .ne0 = c.n_in, .ne1 = c.n_out, .row_bytes = c.rb, .data = c.P};
    /* One spare float after each output row: a partial last group must not write past it. */
    size_t ldy = c.n_out + 1;
    float *Yb = malloc(sizeof(float) * ldy * c.n_tok), *Y1 = malloc(sizeof(float) * ldy);
    float *Yr = malloc(sizeof(float) * ldy * c.n_tok);
    for (size_t i = 0; i < ldy * c.n_tok; i++)
        Yb[i] = Yr[i] = -7.0f;
    kf_cpu_matmul(pool, &W, c.X, c.Xq, c.n_tok, Yb, ldy);
    for (size_t g = 0; g < (c.n_out + 7) / 8; g++) {
        unsigned nr = (unsigned)(c.n_out - 8 * g < 8 ? c.n_out - 8 * g : 8);
        kf_cpu_q8x8_rows_ref(c.P + g * c.nb * KF_Q8X8_GROUP_BLOCK_BYTES, c.n_in, c.Xq, c.n_tok,
                             Yr + g * 8, ldy, nr);
    }
    assert_memory_equal(Yb, Yr, sizeof(float) * ldy * c.n_tok);
    for (uint32_t t = 0; t < c.n_tok; t++)
        assert_float_equal(Yb[t * ldy + c.n_out], -7.0f, 0.0f);
    for (uint32_t t = 0; t < c.n_tok; t++) {
        kf_cpu_matmul(t % 2 ? pool : NULL, &W, c.X + t * c.n_in, c.Xq + t * c.nb, 1, Y1, ldy);
        assert_memory_equal(Y1, Yb + t * ldy, sizeof(float) * c.n_out);
    }
    free(Yb);
    free(Y1);
    free(Yr);
    case_free(&c);
}

static void
test_matmul_batch_invariant(void **state)
{
    (void)state;
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(2, &pool), KF_OK);
    check_matmul(pool, 256, 72, 21); /* whole groups */
    check_matmul(pool, 96, 29, 13);  /* last group of 5 rows */
    check_matmul(pool, 32, 3, 9);    /* one partial group only */
    kf_cpu_pool_destroy(pool);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eligible),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_rows_match_ref),
        cmocka_unit_test(test_extreme_bytes),
        cmocka_unit_test(test_matmul_batch_invariant),
        cmocka_unit_test(test_requant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
