/*
 * Unit tests for kf_quant: half and bfloat16 conversions (known bit patterns, rounding ties,
 * subnormals, overflow, NaN, an exhaustive half round trip, and a comparison against the
 * compiler's own _Float16 conversion when it has one), dequantization of hand-built blocks of
 * every quantized type checked element by element against an independent reading of the
 * layout plus hand-computed literals, and quantize -> dequantize error bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_quant.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static float
bits_f(uint32_t b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static void
test_fp16_known(void **state)
{
    (void)state;
    static const struct {
        float f;
        uint16_t h;
    } k[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.5f, 0x3800},
        {65504.0f, 0x7bff},                    /* largest half */
        {65519.0f, 0x7bff},                    /* below the tie: stays */
        {65520.0f, 0x7c00},                    /* the tie: even = inf */
        {1e10f, 0x7c00},                       /* overflow */
        {-1e10f, 0xfc00},                      /* overflow, negative */
        {0.1f, 0x2e66},                        /* 0.0999755859375 */
        {1.0f / 3.0f, 0x3555},                 /* 0.333251953125 */
        {6.103515625e-05f, 0x0400},            /* 2^-14, smallest normal */
        {5.9604644775390625e-08f, 0x0001},     /* 2^-24, smallest subnormal */
        {2.98023223876953125e-08f, 0x0000},    /* 2^-25: tie between 0 and 2^-24 -> 0 */
        {8.94069671630859375e-08f, 0x0002},    /* 1.5 * 2^-24: tie -> even (2) */
        {1.4901161193847656e-07f, 0x0002},     /* 2.5 * 2^-24: tie -> even (2) */
        {6.097555160522461e-05f, 0x03ff},      /* largest subnormal, 1023 * 2^-24 */
        {6.10053539276123046875e-05f, 0x0400}, /* 1023.5 * 2^-24: tie -> even (normal) */
        {1.00048828125f, 0x3c00},              /* 1 + 2^-11: tie -> even (1.0) */
        {1.00146484375f, 0x3c02},              /* 1 + 3*2^-11: tie -> even (1 + 2^-9) */
        {1e-10f, 0x0000},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        uint16_t h = kf_fp32_to_fp16(k[i].f);
        if (h != k[i].h)
            fail_msg("fp32_to_fp16(%a) = 0x%04x, want 0x%04x", (double)k[i].f, h, k[i].h);
    }
    /* Decoding of specials and subnormals. */
    assert_true(kf_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));
    assert_true(kf_fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(kf_fp16_to_fp32(0x8001) == -ldexpf(1.0f, -24));
    assert_true(kf_fp16_to_fp32(0x7bff) == 65504.0f);
    assert_true(isinf(kf_fp16_to_fp32(0x7c00)) && kf_fp16_to_fp32(0xfc00) < 0);
    assert_true(isnan(kf_fp16_to_fp32(0x7e00)));
    assert_true(isnan(kf_fp16_to_fp32(0x7c01))); /* signalling NaN pattern stays NaN */
    assert_true(signbit(kf_fp16_to_fp32(0x8000)));
    /* NaN encodes as NaN (never inf), including a payload only in low bits. */
    uint16_t hn = kf_fp32_to_fp16(NAN);
    assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff));
    hn = kf_fp32_to_fp16(bits_f(0x7f800001u));
    assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff));
    hn = kf_fp32_to_fp16(bits_f(0xff800001u));
    assert_true((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) && (hn & 0x8000));
}

static void
test_fp16_exhaustive(void **state)
{
    (void)state;
    /* Every half value survives half -> float -> half exactly (NaN stays NaN). */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kf_fp16_to_fp32((uint16_t)h);
        uint16_t back = kf_fp32_to_fp16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        } else if (back != h) {
            fail_msg("half 0x%04x -> %a -> 0x%04x", h, (double)f, back);
        }
    }
    /* Midpoints between neighbouring halves round to the even one; one ulp of float either
     * side rounds to the nearer one. */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float lo = kf_fp16_to_fp32((uint16_t)h), hi = kf_fp16_to_fp32((uint16_t)(h + 1));
        double mid = ((double)lo + (double)hi) / 2;
        float m = (float)mid; /* exact: halves have few mantissa bits */
        assert_true((double)m == mid);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (kf_fp32_to_fp16(m) != even)
            fail_msg("tie between 0x%04x and 0x%04x went to 0x%04x", h, h + 1, kf_fp32_to_fp16(m));
        assert_int_equal(kf_fp32_to_fp16(nextafterf(m, 0)), h);
        assert_int_equal(kf_fp32_to_fp16(nextafterf(m, INFINITY)), h + 1);
    }
}

#if defined(__FLT16_MAX__)
static void
test_fp16_vs_compiler(void **state)
{
    (void)state;
    /* The compiler's _Float16 conversion is correctly rounded: agree on many random floats
     * across the whole exponent range. */
    uint64_t s = 12345;
    for (int i = 0; i < 4000000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t b = (uint32_t)(s >> 32);
        float f = bits_f(b);
        if (isnan(f))
            continue;
        _Float16 hf = (_Float16)f;
        uint16_t want;
        memcpy(&want, &hf, 2);
        uint16_t got = kf_fp32_to_fp16(f);
        if (got != want)
            fail_msg("fp32_to_fp16(%a): got 0x%04x, compiler says 0x%04x", (double)f, got, want);
    }
}
#endif

static void
test_bf16(void **state)
{
    (void)state;
    assert_int_equal(kf_fp32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(kf_fp32_to_bf16(-2.5f), 0xc020);
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x3f808000u)), 0x3f80); /* tie -> even */
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x3f818000u)), 0x3f82); /* tie -> even (up) */
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x3f808001u)), 0x3f81); /* above tie */
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to inf */
    assert_int_equal(kf_fp32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(kf_fp32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x00018000u)), 0x0002); /* subnormal tie -> even */
    assert_int_equal(kf_fp32_to_bf16(bits_f(0x00010000u)), 0x0001);
    uint16_t n = kf_fp32_to_bf16(bits_f(0x7f800001u)); /* NaN whose payload is in low bits */
    assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f));
    assert_true(isnan(kf_bf16_to_fp32(n)));
    assert_true(kf_bf16_to_fp32(0x3f80) == 1.0f);
    assert_true(kf_bf16_to_fp32(0x0001) == bits_f(0x00010000u));
    /* Every non-NaN bf16 round-trips exactly. */
    for (uint32_t b = 0; b < 65536; b++) {
        if ((b & 0x7f80) == 0x7f80 && (b & 0x7f))
            continue;
        assert_int_equal(kf_fp32_to_bf16(kf_bf16_to_fp32((uint16_t)b)), b);
    }
}

static void
test_dequant_q8_0(void **state)
{
    (void)state;
    uint8_t b[34];
    b[0] = 0x00, b[1] = 0x38; /* d = 0.5 */
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)(i * 8 - 128);
    float y[32];
    assert_int_equal(kf_dequant_row(KF_TT_Q8_0, b, y, 32), KF_OK);
    assert_true(y[0] == -64.0f); /* -128 * 0.5 */
    assert_true(y[16] == 0.0f);  /* 0 */
    assert_true(y[31] == 60.0f); /* 120 * 0.5 */
    for (int i = 0; i < 32; i++)
        assert_true(y[i] == 0.5f * (float)(i * 8 - 128));
}

static void
test_dequant_q4_0(void **state)
{
    (void)state;
    uint8_t b[18];
    b[0] = 0x00, b[1] = 0x40; /* d = 2.0 */
    for (int i = 0; i < 16; i++)
        b[2 + i] = (uint8_t)(i | (15 - i) << 4);
    float y[32];
    assert_int_equal(kf_dequant_row(KF_TT_Q4_0, b, y, 32), KF_OK);
    assert_true(y[0] == -16.0f);  /* (0 - 8) * 2 */
    assert_true(y[15] == 14.0f);  /* (15 - 8) * 2 */
    assert_true(y[16] == 14.0f);  /* high nibble of byte 0 = 15 */
    assert_true(y[31] == -16.0f); /* high nibble of byte 15 = 0 */
    for (int i = 0; i < 16; i++) {
        assert_true(y[i] == 2.0f * (float)(i - 8));
        assert_true(y[i + 16] == 2.0f * (float)(15 - i - 8));
    }
}

/* Q4_K block with d = 1, dmin = 0.5 and these 6-bit scales/mins (values >= 16 exercise the
 * high bits stored in bytes 0-7). The 12 packed bytes below were worked out by hand. */
static const uint8_t q4k_sc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
static const uint8_t q4k_m[8] = {0, 5, 10, 20, 16, 40, 63, 1};
static const uint8_t q4k_packed[12] = {65, 130, 195, 196, 64, 133, 202, 20, 1, 129, 242, 31};

static void
test_dequant_q4_k(void **state)
{
    (void)state;
    uint8_t b[144];
    b[0] = 0x00, b[1] = 0x3c; /* d = 1.0 */
    b[2] = 0x00, b[3] = 0x38; /* dmin = 0.5 */
    memcpy(b + 4, q4k_packed, 12);
    for (int k = 0; k < 128; k++)
        b[16 + k] = (uint8_t)(k * 7 + 3);
    float y[256];
    assert_int_equal(kf_dequant_row(KF_TT_Q4_K, b, y, 256), KF_OK);
    /* Hand-computed: element 0 = low nibble of qs[0] = 3 -> 1*1*3 - 0.5*0 = 3. */
    assert_true(y[0] == 3.0f);
    /* Element 32 (sub-block 1) = high nibble of qs[0] = 0 -> 0 - 0.5*5 = -2.5. */
    assert_true(y[32] == -2.5f);
    /* Element 131 (sub-block 4, chunk 2, l 3): qs[67] = 216, low nibble 8 -> 17*8 - 8 = 128. */
    assert_true(y[131] == 128.0f);
    /* Element 255 (sub-block 7): qs[127] = 124 (0x7c), high nibble 7 -> 63*7 - 0.5 = 440.5. */
    assert_true(y[255] == 440.5f);
    /* Every element, from the layout description: sub-block j = e/32, byte 32*(e/64) + e%32,
     * low nibble for even j and high for odd. */
    for (int e = 0; e < 256; e++) {
        int j = e / 32;
        uint8_t q = b[16 + 32 * (e / 64) + e % 32];
        int nib = (j % 2) ? q >> 4 : q & 15;
        float want = 1.0f * q4k_sc[j] * (float)nib - 0.5f * q4k_m[j];
        if (y[e] != want)
            fail_msg("q4_k element %d: %g want %g", e, (double)y[e], (double)want);
    }
}

static void
test_dequant_q6_k(void **state)
{
    (void)state;
    uint8_t b[210];
    for (int k = 0; k < 128; k++)
        b[k] = (uint8_t)(k * 13 + 1);
    for (int k = 0; k < 64; k++)
        b[128 + k] = (uint8_t)(k * 29 + 7);
    for (int s = 0; s < 16; s++)
        b[192 + s] = (uint8_t)(int8_t)(s - 8);
    b[208] = 0x00, b[209] = 0x34; /* d = 0.25 */
    float y[256];
    assert_int_equal(kf_dequant_row(KF_TT_Q6_K, b, y, 256), KF_OK);
    /* Hand-computed: element 0: ql[0] = 1 (low nibble 1), qh[0] = 7 (bits 0-1 = 3):
     * q = 1 | 3<<4 = 49 -> 0.25 * (-8) * (49 - 32) = -34. */
    assert_true(y[0] == -34.0f);
    /* Element 200: half 1, r 72, group 2 (high nibble of ql[64 + 8] = ql[72] = 169 -> 10),
     * qh[32 + 8] = qh[40] = 143 -> bits 4-5 = 0: q = 10 -> 0.25 * sc[12]=4 * (10 - 32) = -22. */
    assert_true(y[200] == -22.0f);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
        uint8_t qlb = b[h * 64 + l + ((g & 1) ? 32 : 0)];
        int lo = (g >= 2) ? qlb >> 4 : qlb & 15;
        int hi = (b[128 + h * 32 + l] >> (2 * g)) & 3;
        int q = lo | hi << 4;
        float want = 0.25f * (float)(int8_t)b[192 + e / 16] * (float)(q - 32);
        if (y[e] != want)
            fail_msg("q6_k element %d: %g want %g", e, (double)y[e], (double)want);
    }
}

static double
rnd_normal(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((double)(*s >> 11) + 1) / 9007199254740993.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (double)(*s >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

static void
test_quant_round_trip(void **state)
{
    (void)state;
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    static const struct {
        kf_tensor_type_t t;
        double max_rel_rms;
    } cases[] = {
        {KF_TT_F32, 0.0},   {KF_TT_F16, 0.001}, {KF_TT_BF16, 0.005}, {KF_TT_Q8_0, 0.01},
        {KF_TT_Q6_K, 0.03}, {KF_TT_Q4_0, 0.12}, {KF_TT_Q4_K, 0.12},
    };
    uint64_t s = 7;
    for (int i = 0; i < N; i++)
        x[i] = (float)(0.02 * rnd_normal(&s));
    x[5] = 0.3f; /* an outlier */
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        kf_tensor_type_t t = cases[c].t;
        memset(q, 0xa5, sizeof(q));
        assert_int_equal(kf_quant_row(t, x, q, N), KF_OK);
        assert_int_equal(kf_dequant_row(t, q, y, N), KF_OK);
        double se = 0, sx = 0;
        for (int i = 0; i < N; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        if (rel > cases[c].max_rel_rms)
            fail_msg("%s: relative RMS error %g > %g", kf_tensor_type_name(t), rel,
                     cases[c].max_rel_rms);
        /* Quantizing the dequantized values again is stable (same bytes) for Q8_0. */
        if (t == KF_TT_Q8_0) {
            static uint8_t q2[N * 4];
            assert_int_equal(kf_quant_row(t, y, q2, N), KF_OK);
            assert_memory_equal(q, q2, kf_quant_row_size(t, N));
        }
    }
    /* Q8_0: every element within half a step of its block's scale. */
    assert_int_equal(kf_quant_row(KF_TT_Q8_0, x, q, N), KF_OK);
    assert_int_equal(kf_dequant_row(KF_TT_Q8_0, q, y, N), KF_OK);
    for (int i = 0; i < N; i++) {
        float d = kf_fp16_to_fp32((uint16_t)(q[(i / 32) * 34] | q[(i / 32) * 34 + 1] << 8));
        assert_true(fabsf(y[i] - x[i]) <= 0.5f * d * 1.0001f);
    }
    /* All-zero input quantizes to zeros (no division by zero). */
    memset(x, 0, sizeof(x));
    static const kf_tensor_type_t all[] = {KF_TT_Q8_0, KF_TT_Q4_0, KF_TT_Q4_K, KF_TT_Q6_K};
    for (size_t c = 0; c < 4; c++) {
        assert_int_equal(kf_quant_row(all[c], x, q, 256), KF_OK);
        assert_int_equal(kf_dequant_row(all[c], q, y, 256), KF_OK);
        for (int i = 0; i < 256; i++)
            assert_true(y[i] == 0.0f);
    }
}

static void
test_q4k_scale_packing(void **state)
{
    (void)state;
    /* The quantizer's scale packing reproduces the hand-packed bytes: build a block whose
     * sub-block ranges force those scales (d = 1, dmin = 0.5 exactly representable). */
    float x[256];
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++) {
            /* values span [-0.5*m, -0.5*m + 15*sc]: quantizer picks scale sc and min m */
            float lo = -0.5f * q4k_m[j], hi = lo + 15.0f * q4k_sc[j];
            x[j * 32 + l] = l == 0 ? lo : l == 1 ? hi : lo;
        }
    }
    /* Make the maxima exactly 63 * d and 63 * dmin so d = 1 and dmin = 0.5. */
    uint8_t b[144];
    assert_int_equal(kf_quant_row(KF_TT_Q4_K, x, b, 256), KF_OK);
    assert_int_equal(b[0] | b[1] << 8, 0x3c00);
    assert_int_equal(b[2] | b[3] << 8, 0x3800);
    assert_memory_equal(b + 4, q4k_packed, 12);
    float y[256];
    assert_int_equal(kf_dequant_row(KF_TT_Q4_K, b, y, 256), KF_OK);
    for (int i = 0; i < 256; i++)
        assert_true(y[i] == x[i]);
}

static void
test_bad_args(void **state)
{
    (void)state;
    float y[64];
    uint8_t b[256] = {0};
    assert_int_equal(kf_dequant_row(KF_TT_Q8_0, b, y, 33), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_dequant_row(KF_TT_Q4_K, b, y, 32), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_dequant_row((kf_tensor_type_t)3, b, y, 32), KF_ERR_UNSUPPORTED);
    assert_int_equal(kf_quant_row(KF_TT_Q4_0, y, b, 31), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_quant_row((kf_tensor_type_t)99, y, b, 32), KF_ERR_UNSUPPORTED);
    assert_int_equal(kf_quant_row_size(KF_TT_Q6_K, 512), 420);
    assert_int_equal(kf_quant_row_size(KF_TT_Q8_0, 64), 68);
    assert_int_equal(kf_quant_row_size(KF_TT_BF16, 3), 6);
    assert_int_equal(kf_quant_row_size(KF_TT_Q8_0, 40), 0);
    assert_int_equal(kf_quant_row_size((kf_tensor_type_t)5, 32), 0);
    assert_int_equal(kf_dequant_row(KF_TT_Q8_0, b, y, 0), KF_OK);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known),
        cmocka_unit_test(test_fp16_exhaustive),
#if defined(__FLT16_MAX__)
        cmocka_unit_test(test_fp16_vs_compiler),
#endif
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_q8_0),
        cmocka_unit_test(test_dequant_q4_0),
        cmocka_unit_test(test_dequant_q4_k),
        cmocka_unit_test(test_dequant_q6_k),
        cmocka_unit_test(test_quant_round_trip),
        cmocka_unit_test(test_q4k_scale_packing),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
