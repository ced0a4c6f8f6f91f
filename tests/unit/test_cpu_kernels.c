/*
 * Unit tests of the CPU backend's kernels: every SIMD dot product against its scalar twin and
 * against a plain double-precision dot over dequantized values (dequantized with kf_quant's
 * independent reference code), the four-token kernels bit-identical to single calls,
 * conversions, matmul with odd shapes on a thread pool (against a reference, and batched
 * against one token at a time: bit-identical), the pool's run_dyn() doing every work item
 * exactly once, RMSNorm, RoPE in both orderings against hand-computed values, softmax, and
 * paged attention over a shuffled multi-block table against a contiguous computation.
 */
#include "cpu_kernels.h"
#include "cpu_pool.h"
#include "kf_quant.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Uniform in [-1, 1). */
static float
rng_f(void)
{
    return (float)(rng_u32() & 0xffffff) / 8388608.0f - 1.0f;
}

static void
fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rng_f() * scale;
}

/* |a - b| <= tol * scale, with a message naming the case. */
static void
assert_close(double a, double b, double tol, double scale, const char *what, size_t n)
{
    if (!(fabs(a - b) <= tol * scale)) {
        print_error("%s n=%zu: %.9g vs %.9g (tol %.3g * %.3g)\n", what, n, a, b, tol, scale);
        fail();
    }
}

static void
test_f16_conversions(void **state)
{
    (void)state;
    /* Every half converts exactly and the same way in all three implementations. */
    for (uint32_t h = 0; h < 65536; h++) {
        float a = kf_cpu_f16_to_f32((uint16_t)h), b = kf_cpu_f16_to_f32_ref((uint16_t)h);
        float c = kf_fp16_to_fp32((uint16_t)h);
        if (isnan(c)) {
            assert_true(isnan(a) && isnan(b));
            continue;
        }
        assert_memory_equal(&a, &c, 4);
        assert_memory_equal(&b, &c, 4);
        /* Round trip of every finite half is the identity. */
        assert_int_equal(kf_cpu_f32_to_f16(c), h);
        assert_int_equal(kf_cpu_f32_to_f16_ref(c), h);
    }
    /* Random floats, including ties and the subnormal range, round the same way. */
    for (int i = 0; i < 200000; i++) {
        float f = rng_f() * ldexpf(1.0f, (int)(rng_u32() % 44) - 28);
        assert_int_equal(kf_cpu_f32_to_f16(f), kf_fp32_to_fp16(f));
        assert_int_equal(kf_cpu_f32_to_f16_ref(f), kf_fp32_to_fp16(f));
    }
    assert_int_equal(kf_cpu_f32_to_f16_ref(65520.0f), 0x7c00); /* rounds to +inf */
    assert_int_equal(kf_cpu_f32_to_f16_ref(65504.0f), 0x7bff);
    assert_int_equal(kf_cpu_f32_to_f16_ref(-0.0f), 0x8000);
    float row[19];
    uint16_t hrow[19];
    float back[19];
    fill(row, 19, 3.0f);
    kf_cpu_f32_to_f16_row(row, hrow, 19);
    kf_cpu_f16_to_f32_row(hrow, back, 19);
    for (int i = 0; i < 19; i++) {
        assert_int_equal(hrow[i], kf_fp32_to_fp16(row[i]));
        assert_true(fabsf(back[i] - row[i]) <= fabsf(row[i]) * (1.0f / 1024.0f));
    }
}

static const size_t float_sizes[] = {1, 7, 8, 15, 16, 17, 33, 100, 255, 4099};

static void
test_dot_float(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(float_sizes) / sizeof(float_sizes[0]); k++) {
        size_t n = float_sizes[k];
        float *w = malloc(n * 4), *x = malloc(n * 4);
        uint16_t *h = malloc(n * 2), *b = malloc(n * 2);
        fill(w, n, 1.0f);
        fill(x, n, 1.0f);
        double mag = 0.0, exact = 0.0, exact_h = 0.0, exact_b = 0.0;
        for (size_t i = 0; i < n; i++) {
            h[i] = kf_fp32_to_fp16(w[i]);
            b[i] = kf_fp32_to_bf16(w[i]);
            mag += fabs((double)w[i] * x[i]);
            exact += (double)w[i] * x[i];
            exact_h += (double)kf_fp16_to_fp32(h[i]) * x[i];
            exact_b += (double)kf_bf16_to_fp32(b[i]) * x[i];
        }
        assert_close(kf_cpu_dot_f32(w, x, n), exact, 1e-5, mag + 1e-30, "f32", n);
        assert_close(kf_cpu_dot_f32_ref(w, x, n), exact, 1e-6, mag + 1e-30, "f32 ref", n);
        assert_close(kf_cpu_dot_f16(h, x, n), exact_h, 1e-5, mag + 1e-30, "f16", n);
        assert_close(kf_cpu_dot_f16_ref(h, x, n), exact_h, 1e-6, mag + 1e-30, "f16 ref", n);
        assert_close(kf_cpu_dot_bf16(b, x, n), exact_b, 1e-5, mag + 1e-30, "bf16", n);
        assert_close(kf_cpu_dot_bf16_ref(b, x, n), exact_b, 1e-6, mag + 1e-30, "bf16 ref", n);
        free(w);
        free(x);
        free(h);
        free(b);
    }
}

static void
test_quantize_q8a(void **state)
{
    (void)state;
    float x[96];
    kf_q8a_t q[3];
    fill(x, 96, 5.0f);
    memset(x + 64, 0, 32 * sizeof(float)); /* an all-zero block must give d = 0, qs = 0 */
    kf_cpu_quantize_q8a(x, q, 96);
    for (int b = 0; b < 3; b++) {
        int s0 = 0, s1 = 0, amax = 0;
        for (int i = 0; i < 32; i++) {
            float err = fabsf(q[b].d * q[b].qs[i] - x[b * 32 + i]);
            assert_true(err <= q[b].d * 0.5f + 1e-6f);
            if (i < 16)
                s0 += q[b].qs[i];
            else
                s1 += q[b].qs[i];
            amax = abs(q[b].qs[i]) > amax ? abs(q[b].qs[i]) : amax;
        }
        assert_int_equal(q[b].s16[0], s0);
        assert_int_equal(q[b].s16[1], s1);
        assert_int_equal(amax, b < 2 ? 127 : 0);
    }
    assert_true(q[2].d == 0.0f);
}

typedef float (*dotq_fn)(const void *, const kf_q8a_t *, size_t);

static void
check_dotq(kf_tensor_type_t t, dotq_fn simd, dotq_fn ref, size_t n)
{
    float *wf = malloc(n * 4), *xf = malloc(n * 4), *wd = malloc(n * 4), *wd2 = malloc(n * 4);
    void *wq = malloc(kf_quant_row_size(t, (int64_t)n));
    kf_q8a_t *xq = malloc(sizeof(kf_q8a_t) * (n / 32));
    fill(wf, n, 0.5f);
    fill(xf, n, 2.0f);
    assert_int_equal(kf_quant_row(t, wf, wq, (int64_t)n), KF_OK);
    kf_cpu_quantize_q8a(xf, xq, n);
    /* Our block decoder agrees with kf_quant's independent one. */
    assert_int_equal(kf_dequant_row(t, wq, wd, (int64_t)n), KF_OK);
    kf_cpu_dequant_row(t, wq, wd2, n);
    double exact = 0.0, mag = 0.0;
    for (size_t i = 0; i < n; i++) {
        assert_close(wd2[i], wd[i], 1e-6, fabs(wd[i]) + 1e-6, kf_tensor_type_name(t), i);
        double xv = (double)xq[i / 32].d * xq[i / 32].qs[i % 32];
        exact += (double)wd[i] * xv;
        mag += fabs((double)wd[i] * xv);
    }
    assert_close(ref(wq, xq, n), exact, 1e-5, mag, kf_tensor_type_name(t), n);
    assert_close(simd(wq, xq, n), exact, 1e-5, mag, kf_tensor_type_name(t), n);
    free(wf);
    free(xf);
    free(wd);
    free(wd2);
    free(wq);
    free(xq);
}

typedef void (*dotq4_fn)(const void *, const kf_q8a_t *const[4], size_t, float[4]);

/* The four-token kernel of type t against four single-token calls: bit-identical. */
static void
check_dot_x4(kf_tensor_type_t t, dotq4_fn x4, dotq_fn one, size_t n)
{
    float *wf = malloc(n * 4), *xf = malloc(n * 4);
    void *wq = malloc(kf_quant_row_size(t, (int64_t)n));
    kf_q8a_t *xq = malloc(sizeof(kf_q8a_t) * (n / 32) * 4);
    fill(wf, n, 1.0f);
    assert_int_equal(kf_quant_row(t, wf, wq, (int64_t)n), KF_OK);
    const kf_q8a_t *xs[4];
    for (int k = 0; k < 4; k++) {
        fill(xf, n, (float)(k + 1));
        kf_cpu_quantize_q8a(xf, xq + (size_t)k * (n / 32), n);
        xs[k] = xq + (size_t)k * (n / 32);
    }
    float out[4];
    x4(wq, xs, n, out);
    for (int k = 0; k < 4; k++) {
        float single = one(wq, xs[k], n);
        if (memcmp(&out[k], &single, sizeof(float)) != 0) {
            print_error("%s x4 token %d: %.9g vs single %.9g\n", kf_tensor_type_name(t), k, out[k],
                        single);
            fail();
        }
    }
    free(wf);
    free(xf);
    free(wq);
    free(xq);
}

static void
test_dot_x4(void **state)
{
    (void)state;
    check_dot_x4(KF_TT_Q8_0, kf_cpu_dot_q8_0_x4, kf_cpu_dot_q8_0, 320);
    check_dot_x4(KF_TT_Q4_0, kf_cpu_dot_q4_0_x4, kf_cpu_dot_q4_0, 320);
    check_dot_x4(KF_TT_Q4_K, kf_cpu_dot_q4_k_x4, kf_cpu_dot_q4_k, 768);
    check_dot_x4(KF_TT_Q6_K, kf_cpu_dot_q6_k_x4, kf_cpu_dot_q6_k, 768);
}

static void
test_dot_quant(void **state)
{
    (void)state;
    for (int rep = 0; rep < 4; rep++) {
        static const size_t n32[] = {32, 64, 96, 4096 + 32};
        static const size_t n256[] = {256, 512, 768, 4096 + 256};
        check_dotq(KF_TT_Q8_0, kf_cpu_dot_q8_0, kf_cpu_dot_q8_0_ref, n32[rep]);
        check_dotq(KF_TT_Q4_0, kf_cpu_dot_q4_0, kf_cpu_dot_q4_0_ref, n32[rep]);
        check_dotq(KF_TT_Q4_K, kf_cpu_dot_q4_k, kf_cpu_dot_q4_k_ref, n256[rep]);
        check_dotq(KF_TT_Q6_K, kf_cpu_dot_q6_k, kf_cpu_dot_q6_k_ref, n256[rep]);
    }
}

static void
test_dequant_float_types(void **state)
{
    (void)state;
    float x[64], y[64];
    uint16_t h[64];
    fill(x, 64, 10.0f);
    kf_cpu_dequant_row(KF_TT_F32, x, y, 64);
    assert_memory_equal(x, y, sizeof(x));
    for (int i = 0; i < 64; i++)
        h[i] = kf_fp32_to_bf16(x[i]);
    kf_cpu_dequant_row(KF_TT_BF16, h, y, 64);
    for (int i = 0; i < 64; i++)
        assert_true(y[i] == kf_bf16_to_fp32(h[i]));
}

/* Matmul on a pool with shapes that do not divide the tile or the thread count. */
static void
check_matmul(kf_cpu_pool_t *pool, kf_tensor_type_t t, size_t n_in, size_t n_out, uint32_t n_tok)
{
    size_t rb = kf_quant_row_size(t, (int64_t)n_in);
    float *wf = malloc(n_in * n_out * 4), *X = malloc(n_in * n_tok * 4);
    uint8_t *W = malloc(rb * n_out);
    float *wd = malloc(n_in * 4), *Y = malloc(n_tok * (n_out + 3) * 4);
    kf_q8a_t *Xq = malloc(sizeof(kf_q8a_t) * (n_in / 32 + 1) * n_tok);
    fill(wf, n_in * n_out, 1.0f);
    fill(X, n_in * n_tok, 1.0f);
    for (size_t r = 0; r < n_out; r++)
        assert_int_equal(kf_quant_row(t, wf + r * n_in, W + r * rb, (int64_t)n_in), KF_OK);
    int q = kf_cpu_type_uses_q8a(t);
    if (q)
        for (uint32_t k = 0; k < n_tok; k++)
            kf_cpu_quantize_q8a(X + k * n_in, Xq + k * (n_in / 32), n_in);
    for (size_t i = 0; i < n_tok * (n_out + 3); i++)
        Y[i] = 12345.0f; /* sentinel for the padding columns */
    kf_weight_t Wt = {.type = t, .ne0 = n_in, .ne1 = n_out, .row_bytes = rb, .data = W};
    kf_cpu_matmul(pool, &Wt, X, q ? Xq : NULL, n_tok, Y, n_out + 3);
    for (size_t r = 0; r < n_out; r++) {
        assert_int_equal(kf_dequant_row(t, W + r * rb, wd, (int64_t)n_in), KF_OK);
        for (uint32_t k = 0; k < n_tok; k++) {
            double e = 0.0, mag = 0.0;
            for (size_t i = 0; i < n_in; i++) {
                double xv = q ? (double)Xq[k * (n_in / 32) + i / 32].d *
                                    Xq[k * (n_in / 32) + i / 32].qs[i % 32]
                              : X[k * n_in + i];
                e += wd[i] * xv;
                mag += fabs(wd[i] * xv);
            }
            assert_close(Y[k * (n_out + 3) + r], e, 1e-5, mag, kf_tensor_type_name(t), r);
        }
    }
    for (uint32_t k = 0; k < n_tok; k++)
        for (size_t r = n_out; r < n_out + 3; r++)
            assert_true(Y[k * (n_out + 3) + r] == 12345.0f);
    free(wf);
    free(X);
    free(W);
    free(wd);
    free(Y);
    free(Xq);
}

static void
test_matmul(void **state)
{
    (void)state;
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(3, &pool), KF_OK);
    check_matmul(pool, KF_TT_F32, 45, 37, 5);
    check_matmul(pool, KF_TT_F16, 67, 1, 3);
    check_matmul(pool, KF_TT_BF16, 64, 9, 1);
    check_matmul(pool, KF_TT_Q8_0, 96, 37, 5);
    check_matmul(pool, KF_TT_Q8_0, 64, 13, 9); /* two groups of 4 tokens and a tail */
    check_matmul(pool, KF_TT_Q4_0, 64, 17, 2);
    check_matmul(pool, KF_TT_Q4_K, 256, 19, 3);
    check_matmul(pool, KF_TT_Q6_K, 512, 11, 4);
    /* Register-tiled float paths: K slices with a tail, two token blocks, odd row counts. */
    check_matmul(pool, KF_TT_F16, 603, 19, 9);
    check_matmul(pool, KF_TT_F32, 1000, 9, 70);
    check_matmul(pool, KF_TT_BF16, 264, 5, 8);
    check_matmul(pool, KF_TT_Q4_K, 256, 9, 8);
    check_matmul(pool, KF_TT_Q6_K, 256, 9, 5);
    check_matmul(pool, KF_TT_Q4_0, 64, 17, 6);
    check_matmul(NULL, KF_TT_Q8_0, 32, 2, 1);
    kf_cpu_pool_destroy(pool);
}

/* Matmul of n_tok tokens against the same tokens one call each (and on no pool): every
 * output bit-identical. Shapes reach every path of the tiled kernels: 4-token groups with row
 * pairs and an odd last row, the single-token 4-row kernel with its 1-row remainder, K slices
 * (rows longer than 256) with an 8-element tail, and more tokens than one token block (64);
 * with AVX-512, 4-row x 1..6-token register blocks and 1-row blocks, 512-element K slices. */
static void
check_matmul_batch_invariant(
    kf_cpu_pool_t *pool, kf_tensor_type_t t, size_t n_in, size_t n_out, uint32_t n_tok)
{
    size_t rb = kf_quant_row_size(t, (int64_t)n_in);
    float *wf = malloc(n_in * n_out * 4), *X = malloc(n_in * n_tok * 4);
    uint8_t *W = malloc(rb * n_out);
    float *Yb = malloc(n_tok * n_out * 4), *Y1 = malloc(n_out * 4);
    kf_q8a_t *Xq = malloc(sizeof(kf_q8a_t) * (n_in / 32 + 1) * n_tok);
    fill(wf, n_in * n_out, 1.0f);
    fill(X, n_in * n_tok, 1.0f);
    for (size_t r = 0; r < n_out; r++)
        assert_int_equal(kf_quant_row(t, wf + r * n_in, W + r * rb, (int64_t)n_in), KF_OK);
    int q = kf_cpu_type_uses_q8a(t);
    size_t nb = n_in / 32;
    if (q)
        for (uint32_t k = 0; k < n_tok; k++)
            kf_cpu_quantize_q8a(X + k * n_in, Xq + k * nb, n_in);
    kf_weight_t Wt = {.type = t, .ne0 = n_in, .ne1 = n_out, .row_bytes = rb, .data = W};
    kf_cpu_matmul(pool, &Wt, X, q ? Xq : NULL, n_tok, Yb, n_out);
    for (uint32_t k = 0; k < n_tok; k++) {
        kf_cpu_matmul(k % 2 ? pool : NULL, &Wt, X + k * n_in, q ? Xq + k * nb : NULL, 1, Y1, n_out);
        for (size_t r = 0; r < n_out; r++) {
            if (memcmp(&Yb[k * n_out + r], &Y1[r], sizeof(float)) != 0) {
                print_error("%s %zux%zu tok %u/%u row %zu: batched %.9g vs alone %.9g\n",
                            kf_tensor_type_name(t), n_out, n_in, k, n_tok, r, Yb[k * n_out + r],
                            Y1[r]);
                fail();
            }
        }
    }
    free(wf);
    free(X);
    free(W);
    free(Yb);
    free(Y1);
    free(Xq);
}

static void
test_matmul_batch_invariant(void **state)
{
    (void)state;
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(2, &pool), KF_OK);
    static const kf_tensor_type_t ft[] = {KF_TT_F32, KF_TT_F16, KF_TT_BF16};
    for (size_t i = 0; i < 3; i++) {
        check_matmul_batch_invariant(pool, ft[i], 45, 13, 11); /* tails everywhere */
        check_matmul_batch_invariant(pool, ft[i], 603, 19, 9); /* K slices + 3-element tail */
        check_matmul_batch_invariant(pool, ft[i], 64, 7, 70);  /* two token blocks */
        check_matmul_batch_invariant(pool, ft[i], 512, 16, 4); /* exact tiles */
        /* AVX-512 tiles: 4-row blocks and 3 single leftover rows (11 = 8 + 3), every token
         * remainder 1..5 of the 6-token groups, a 512-element K slice, one 16-element step
         * after it and a 3-element tail. */
        for (uint32_t nt = 2; nt <= 13; nt++)
            check_matmul_batch_invariant(pool, ft[i], 531, 11, nt);
    }
    check_matmul_batch_invariant(pool, KF_TT_Q8_0, 96, 13, 11);
    check_matmul_batch_invariant(pool, KF_TT_Q4_0, 96, 13, 9);
    check_matmul_batch_invariant(pool, KF_TT_Q4_K, 512, 11, 7);
    check_matmul_batch_invariant(pool, KF_TT_Q6_K, 512, 11, 6);
    kf_cpu_pool_destroy(pool);
}

/* Several products in one pool run (q/k/v, gate/up) equal each run alone, bit for bit, with
 * mixed types (float and int8 activations from the same X), row counts that end mid-tile and
 * a product smaller than one grab of tiles; the output rows just past each product stay
 * untouched. */
static void
test_matmul_multi(void **state)
{
    (void)state;
    enum { N_IN = 96, N_TOK = 5, GUARD = 3 };
    static const kf_tensor_type_t types[4] = {KF_TT_F32, KF_TT_Q8_0, KF_TT_F16, KF_TT_Q4_0};
    static const size_t rows[4] = {45, 13, 3, 70};
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(3, &pool), KF_OK);
    float *X = malloc(sizeof(float) * N_IN * N_TOK);
    kf_q8a_t *Xq = malloc(sizeof(kf_q8a_t) * (N_IN / 32) * N_TOK);
    fill(X, N_IN * N_TOK, 1.0f);
    for (uint32_t t = 0; t < N_TOK; t++)
        kf_cpu_quantize_q8a(X + t * N_IN, Xq + t * (N_IN / 32), N_IN);
    kf_weight_t W[4];
    uint8_t *wd[4];
    float *Ym[4], *Y1[4];
    kf_cpu_mm_t mm[4];
    for (int i = 0; i < 4; i++) {
        size_t rb = kf_quant_row_size(types[i], N_IN);
        float *wf = malloc(sizeof(float) * N_IN * rows[i]);
        fill(wf, N_IN * rows[i], 1.0f);
        wd[i] = malloc(rb * rows[i]);
        for (size_t r = 0; r < rows[i]; r++)
            assert_int_equal(kf_quant_row(types[i], wf + r * N_IN, wd[i] + r * rb, N_IN), KF_OK);
        free(wf);
        W[i] = (kf_weight_t){
            .type = types[i], .ne0 = N_IN, .ne1 = rows[i], .row_bytes = rb, .data = wd[i]};
        size_t ld = rows[i] + GUARD;
        Ym[i] = malloc(sizeof(float) * ld * N_TOK);
        Y1[i] = malloc(sizeof(float) * ld * N_TOK);
        for (size_t k = 0; k < ld * N_TOK; k++)
            Ym[i][k] = Y1[i][k] = -7.0f;
        mm[i] = (kf_cpu_mm_t){.W = &W[i],
                              .X = X,
                              .Xq = kf_cpu_type_uses_q8a(types[i]) ? Xq : NULL,
                              .n_tok = N_TOK,
                              .Y = Ym[i],
                              .ldy = ld};
    }
    for (uint32_t n = 1; n <= 4; n++) {
        kf_cpu_matmul_multi(pool, mm + 4 - n, n); /* the last n products together */
        for (uint32_t j = 4 - n; j < 4; j++) {
            kf_cpu_matmul(NULL, &W[j], X, mm[j].Xq, N_TOK, Y1[j], mm[j].ldy);
            assert_memory_equal(Ym[j], Y1[j], sizeof(float) * mm[j].ldy * N_TOK);
            for (uint32_t t = 0; t < N_TOK; t++)
                for (size_t g = 0; g < GUARD; g++)
                    assert_true(Ym[j][t * mm[j].ldy + rows[j] + g] == -7.0f);
        }
    }
    for (int i = 0; i < 4; i++) {
        free(wd[i]);
        free(Ym[i]);
        free(Y1[i]);
    }
    free(X);
    free(Xq);
    kf_cpu_pool_destroy(pool);
}

/* run_dyn: work drawn from a shared counter is done exactly once per dispatch, whether the
 * workers join or not, across back-to-back dispatches (spin path) and ones separated by
 * sleeps (workers asleep, so the caller usually does everything alone). */
typedef struct dyn_task {
    atomic_int next;
    int n_items;
    atomic_int hits[257];
} dyn_task_t;

static void
dyn_fn(void *arg, int ith, int nth)
{
    dyn_task_t *dt = arg;
    assert_true(ith >= 0 && ith < nth);
    int i;
    while ((i = atomic_fetch_add(&dt->next, 1)) < dt->n_items)
        atomic_fetch_add(&dt->hits[i], 1);
}

static void
test_pool_run_dyn(void **state)
{
    (void)state;
    kf_cpu_pool_t *pool = NULL;
    assert_int_equal(kf_cpu_pool_new(3, &pool), KF_OK);
    for (int round = 0; round < 3000; round++) {
        dyn_task_t dt;
        dt.n_items = 1 + round % 257;
        atomic_init(&dt.next, 0);
        for (int i = 0; i < 257; i++)
            atomic_init(&dt.hits[i], 0);
        kf_cpu_pool_run_dyn(round % 7 ? pool : NULL, dyn_fn, &dt);
        for (int i = 0; i < 257; i++)
            assert_int_equal(atomic_load(&dt.hits[i]), i < dt.n_items ? 1 : 0);
        if (round % 500 == 499) {
            struct timespec ts = {0, 5000000}; /* 5 ms: workers go to sleep */
            nanosleep(&ts, NULL);
        }
    }
    /* The exact-once run() still works on a pool that run_dyn() has used. */
    dyn_task_t dt;
    dt.n_items = 100;
    atomic_init(&dt.next, 0);
    for (int i = 0; i < 257; i++)
        atomic_init(&dt.hits[i], 0);
    kf_cpu_pool_run(pool, dyn_fn, &dt);
    for (int i = 0; i < 100; i++)
        assert_int_equal(atomic_load(&dt.hits[i]), 1);
    kf_cpu_pool_destroy(pool);
}

static void
test_rmsnorm(void **state)
{
    (void)state;
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f}, y[4];
    kf_cpu_rmsnorm(x, w, y, 4, 1e-5f);
    double r = 1.0 / sqrt(30.0 / 4.0 + 1e-5); /* mean of squares = 7.5 */
    assert_close(y[0], 1 * r, 1e-6, 1, "rms", 0);
    assert_close(y[1], 2 * r, 1e-6, 1, "rms", 1);
    assert_close(y[2], 6 * r, 1e-6, 1, "rms", 2);
    assert_close(y[3], 2 * r, 1e-6, 1, "rms", 3);
}

static void
test_rope(void **state)
{
    (void)state;
    /* Two heads of dim 6, rotating the first 4 dims; inv_freq {1, 0.5}; position 2, so the
     * angles are 2 and 1. */
    const float inv[2] = {1.0f, 0.5f};
    float base[12] = {1, 2, 3, 4, 5, 6, -1, 0.5f, 2, -3, 7, 8};
    float x[12];
    double c2 = cos(2.0), s2 = sin(2.0), c1 = cos(1.0), s1 = sin(1.0);

    /* NORMAL: pairs (0,1) at angle 2, (2,3) at angle 1; dims 4,5 untouched. */
    memcpy(x, base, sizeof(x));
    kf_cpu_rope(x, 2, 6, 4, 2, inv, KF_ROPE_NORMAL);
    for (int h = 0; h < 2; h++) {
        const float *b = base + 6 * h;
        const float *o = x + 6 * h;
        assert_close(o[0], b[0] * c2 - b[1] * s2, 1e-6, 1, "normal", 0);
        assert_close(o[1], b[0] * s2 + b[1] * c2, 1e-6, 1, "normal", 1);
        assert_close(o[2], b[2] * c1 - b[3] * s1, 1e-6, 1, "normal", 2);
        assert_close(o[3], b[2] * s1 + b[3] * c1, 1e-6, 1, "normal", 3);
        assert_true(o[4] == b[4] && o[5] == b[5]);
    }
    /* NEOX: pairs (0,2) at angle 2, (1,3) at angle 1. */
    memcpy(x, base, sizeof(x));
    kf_cpu_rope(x, 2, 6, 4, 2, inv, KF_ROPE_NEOX);
    for (int h = 0; h < 2; h++) {
        const float *b = base + 6 * h;
        const float *o = x + 6 * h;
        assert_close(o[0], b[0] * c2 - b[2] * s2, 1e-6, 1, "neox", 0);
        assert_close(o[2], b[0] * s2 + b[2] * c2, 1e-6, 1, "neox", 2);
        assert_close(o[1], b[1] * c1 - b[3] * s1, 1e-6, 1, "neox", 1);
        assert_close(o[3], b[1] * s1 + b[3] * c1, 1e-6, 1, "neox", 3);
        assert_true(o[4] == b[4] && o[5] == b[5]);
    }
    /* Position 0 is the identity. */
    memcpy(x, base, sizeof(x));
    kf_cpu_rope(x, 2, 6, 6, 0, (const float[3]){1, 1, 1}, KF_ROPE_NORMAL);
    assert_memory_equal(x, base, sizeof(x));
}

static void
test_softmax_swiglu(void **state)
{
    (void)state;
    float x[3] = {1, 2, 3};
    kf_cpu_softmax(x, 3);
    double z = exp(1) + exp(2) + exp(3);
    assert_close(x[0], exp(1) / z, 1e-6, 1, "softmax", 0);
    assert_close(x[2], exp(3) / z, 1e-6, 1, "softmax", 2);
    float big[2] = {1000.0f, 1000.0f}; /* no overflow thanks to the max shift */
    kf_cpu_softmax(big, 2);
    assert_close(big[0], 0.5, 1e-6, 1, "softmax big", 0);
    float g[2] = {1.0f, -2.0f}, u[2] = {3.0f, 0.5f};
    kf_cpu_swiglu(g, u, 2);
    assert_close(g[0], 1.0 / (1.0 + exp(-1.0)) * 3.0, 1e-6, 1, "swiglu", 0);
    assert_close(g[1], -2.0 / (1.0 + exp(2.0)) * 0.5, 1e-6, 1, "swiglu", 1);
}

/* Attention through a shuffled block table equals attention over contiguous K/V rows, in
 * double precision; a group of query heads gives each head's bits alone, and so does a set of
 * tokens. hd % 8 != 0 takes the portable path; bt > 16 splits blocks into tiles; q_scale 40
 * makes scores span hundreds, so most exponentials underflow to 0. */
static void
check_attention(int f16, uint32_t hd, uint32_t bt, uint32_t npos, float q_scale)
{
    enum { NKV = 2, LAYERS = 3, GROUP = 5 };
    const uint32_t kv_dim = NKV * hd, layer = 1, head = 1;
    const uint32_t nblk = (npos + bt - 1) / bt + 3;
    const size_t block_elems = (size_t)2 * LAYERS * bt * kv_dim;
    uint32_t *table = malloc(sizeof(uint32_t) * nblk);
    for (uint32_t b = 0; b < nblk; b++) /* block b holds positions b*bt..: reversed order */
        table[b] = nblk - 1 - b;
    float *Kc = malloc(sizeof(float) * npos * hd), *Vc = malloc(sizeof(float) * npos * hd);
    float *cf = calloc(block_elems * nblk, sizeof(float));
    uint16_t *ch = calloc(block_elems * nblk, sizeof(uint16_t));
    fill(Kc, (size_t)npos * hd, 1.5f);
    fill(Vc, (size_t)npos * hd, 1.0f);
    if (f16) /* compare against the values the cache can represent */
        for (size_t i = 0; i < (size_t)npos * hd; i++) {
            Kc[i] = kf_fp16_to_fp32(kf_fp32_to_fp16(Kc[i]));
            Vc[i] = kf_fp16_to_fp32(kf_fp32_to_fp16(Vc[i]));
        }
    /* Fill the whole cache with junk first: only the right rows may be read. */
    for (size_t i = 0; i < block_elems * nblk; i++) {
        cf[i] = 100.0f + rng_f();
        ch[i] = kf_fp32_to_fp16(cf[i]);
    }
    for (uint32_t p = 0; p < npos; p++) {
        size_t blk = table[p / bt], row = (size_t)(p % bt) * kv_dim + head * hd;
        size_t ko = blk * block_elems + (size_t)(2 * layer) * bt * kv_dim + row;
        size_t vo = blk * block_elems + (size_t)(2 * layer + 1) * bt * kv_dim + row;
        for (uint32_t d = 0; d < hd; d++) {
            cf[ko + d] = Kc[(size_t)p * hd + d];
            cf[vo + d] = Vc[(size_t)p * hd + d];
            ch[ko + d] = kf_fp32_to_fp16(Kc[(size_t)p * hd + d]);
            ch[vo + d] = kf_fp32_to_fp16(Vc[(size_t)p * hd + d]);
        }
    }
    float *q = malloc(sizeof(float) * GROUP * hd), *out = malloc(sizeof(float) * GROUP * hd);
    float *one = malloc(sizeof(float) * hd);
    double *s = malloc(sizeof(double) * npos);
    fill(q, (size_t)GROUP * hd, q_scale);
    kf_cpu_kv_view_t view = {.cache = f16 ? (const void *)ch : (const void *)cf,
                             .f16 = f16,
                             .block_elems = block_elems,
                             .bt = bt,
                             .kv_dim = kv_dim,
                             .layer = layer,
                             .blocks = table};
    const char *what = f16 ? "attn f16" : "attn f32";
    float scale = 1.0f / sqrtf((float)hd);
    uint32_t step = npos > 40 ? 13 : 5;
    for (uint32_t n_pos = 1; n_pos <= npos;
         n_pos = n_pos + step <= npos || n_pos == npos ? n_pos + step : npos) {
        kf_cpu_attn_group(&view, q, GROUP, hd, head * hd, n_pos, scale, out);
        for (uint32_t g = 0; g < GROUP; g++) {
            const float *qg = q + (size_t)g * hd;
            kf_cpu_attn_head(&view, qg, hd, head * hd, n_pos, scale, one);
            assert_memory_equal(one, out + (size_t)g * hd, sizeof(float) * hd);
            double mx = -1e300, z = 0.0;
            for (uint32_t j = 0; j < n_pos; j++) {
                double dot = 0.0;
                for (uint32_t d = 0; d < hd; d++)
                    dot += (double)qg[d] * Kc[(size_t)j * hd + d];
                s[j] = dot * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (uint32_t j = 0; j < n_pos; j++)
                z += (s[j] = exp(s[j] - mx));
            for (uint32_t d = 0; d < hd; d++) {
                double e = 0.0;
                for (uint32_t j = 0; j < n_pos; j++)
                    e += s[j] / z * Vc[(size_t)j * hd + d];
                /* float scores of magnitude ~|q||K| carry relative error 1e-7 each, which
                 * the exponential turns into absolute error of the weights */
                assert_close(out[(size_t)g * hd + d], e, q_scale > 10.0f ? 2e-4 : 1e-5, 1.0, what,
                             n_pos);
            }
        }
    }
    /* Several tokens at once (more than one call's worth), in no particular order of
     * position: each gets exactly its result alone. */
    enum { NT = 11 };
    kf_cpu_attn_tok_t toks[NT];
    float *qs = malloc(sizeof(float) * NT * GROUP * hd),
          *outs = malloc(sizeof(float) * NT * GROUP * hd);
    float *alone = malloc(sizeof(float) * GROUP * hd);
    fill(qs, (size_t)NT * GROUP * hd, q_scale);
    for (uint32_t t = 0; t < NT; t++) {
        toks[t].q = qs + (size_t)t * GROUP * hd;
        toks[t].out = outs + (size_t)t * GROUP * hd;
        toks[t].n_pos = 1 + (t * 37 + 5) % npos;
    }
    kf_cpu_attn_tokens(&view, toks, NT, GROUP, hd, head * hd, scale);
    for (uint32_t t = 0; t < NT; t++) {
        kf_cpu_attn_group(&view, toks[t].q, GROUP, hd, head * hd, toks[t].n_pos, scale, alone);
        assert_memory_equal(alone, toks[t].out, sizeof(float) * GROUP * hd);
    }
    free(qs);
    free(outs);
    free(alone);
    free(table);
    free(Kc);
    free(Vc);
    free(cf);
    free(ch);
    free(q);
    free(out);
    free(one);
    free(s);
}

static void
test_attention_paged(void **state)
{
    (void)state;
    for (int f16 = 0; f16 <= 1; f16++) {
        check_attention(f16, 40, 4, 11, 1.0f);    /* small blocks, each its own tile */
        check_attention(f16, 64, 16, 100, 1.0f);  /* tiles = blocks, many of them */
        check_attention(f16, 64, 40, 90, 1.0f);   /* blocks split into 16, 16, 8 */
        check_attention(f16, 36, 16, 50, 1.0f);   /* head_dim not a multiple of 8 */
        check_attention(f16, 128, 16, 70, 40.0f); /* peaky softmax, underflowing weights */
    }
}

int
main(void)
{
    print_message("cpu kernels: %s\n", kf_cpu_simd_name());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_conversions), cmocka_unit_test(test_dot_float),
        cmocka_unit_test(test_quantize_q8a),    cmocka_unit_test(test_dot_quant),
        cmocka_unit_test(test_dot_x4),          cmocka_unit_test(test_dequant_float_types),
        cmocka_unit_test(test_matmul),          cmocka_unit_test(test_matmul_batch_invariant),
        cmocka_unit_test(test_matmul_multi),    cmocka_unit_test(test_pool_run_dyn),
        cmocka_unit_test(test_rmsnorm),         cmocka_unit_test(test_rope),
        cmocka_unit_test(test_softmax_swiglu),  cmocka_unit_test(test_attention_paged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
