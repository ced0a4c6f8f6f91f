/*
 * cpu_kernels.c: numeric kernels of the CPU backend (see cpu_kernels.h).
 *
 * Block formats (ggml's, as stored in GGUF files):
 *   Q8_0  32 values:  f16 d, int8 q[32]                      x = d * q
 *   Q4_0  32 values:  f16 d, u8 q[16]  (lo nibbles = 0..15, hi = 16..31)   x = d * (q - 8)
 *   Q4_K  256 values: f16 d, f16 dmin, u8 scales[12] (8 x 6-bit scale + 6-bit min),
 *                     u8 q[128]; per 64 values the low nibbles are the first 32, the high
 *                     nibbles the next 32; x = d * sc * q - dmin * m
 *   Q6_K  256 values: u8 ql[128], u8 qh[64], int8 scales[16], f16 d; 6-bit q - 32 with one
 *                     scale per 16 values; x = d * sc * (q - 32)
 * The `_ref` functions are the plain definitions; the others use AVX2 when compiled for it.
 */
#include "cpu_kernels.h"
#include "cpu_pool.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KF_CPU_AVX2 1
#include <immintrin.h>
#endif

#define QK_K 256

const char *
kf_cpu_simd_name(void)
{
#if defined(KF_CPU_AVX2)
    /* This file is built without VNNI (see inference/CMakeLists.txt); cpu_q8x8.c may have it. */
    return kf_cpu_q8x8_vnni() ? "avx2+fma+f16c, q8_0x8 avx512-vnni" : "avx2+fma+f16c";
#else
    return "scalar";
#endif
}

/* ---------- conversions ---------- */

float
kf_cpu_f16_to_f32_ref(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        /* Zero or subnormal: value = mant * 2^-24 is exact in float. */
        float f = (float)mant * (1.0f / 16777216.0f);
        memcpy(&u, &f, 4);
        u |= sign;
    } else {
        u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t
kf_cpu_f32_to_f16_ref(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf stays inf, NaN stays a quiet NaN */
        return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)nearbyintf(a * 16777216.0f);
    }
    /* Rebias the exponent and keep 10 mantissa bits, rounding half to even on the 13 dropped. */
    uint32_t h = (ax >> 13) - ((127u - 15u) << 10);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float
kf_cpu_f16_to_f32(uint16_t h)
{
#ifdef KF_CPU_AVX2
    return _cvtsh_ss(h);
#else
    return kf_cpu_f16_to_f32_ref(h);
#endif
}

uint16_t
kf_cpu_f32_to_f16(float f)
{
#ifdef KF_CPU_AVX2
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    return kf_cpu_f32_to_f16_ref(f);
#endif
}

float
kf_cpu_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void
kf_cpu_f16_to_f32_row(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
#ifdef KF_CPU_AVX2
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = kf_cpu_f16_to_f32(src[i]);
}

void
kf_cpu_f32_to_f16_row(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
#ifdef KF_CPU_AVX2
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++)
        dst[i] = kf_cpu_f32_to_f16(src[i]);
}

/* Unaligned little-endian half load from a block (blocks are packed, not 2-byte aligned). */
static inline float
kf_ld_f16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return kf_cpu_f16_to_f32(h);
}

/* ---------- activation quantization ---------- */

void
kf_cpu_quantize_q8a(const float *x, kf_q8a_t *y, size_t n)
{
    for (size_t b = 0; b < n / KF_Q8A_BLOCK; b++) {
        const float *xb = x + b * KF_Q8A_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < KF_Q8A_BLOCK; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        int s0 = 0, s1 = 0;
        for (int i = 0; i < KF_Q8A_BLOCK; i++) {
            int q = (int)nearbyintf(xb[i] * id);
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            y[b].qs[i] = (int8_t)q;
            if (i < 16)
                s0 += q;
            else
                s1 += q;
        }
        y[b].d = d;
        y[b].s16[0] = (int16_t)s0;
        y[b].s16[1] = (int16_t)s1;
        y[b].nsum128 = -128 * (s0 + s1);
    }
}

/* ---------- scalar dequantization ---------- */

/* 6-bit scale and min number j (0..7) of a Q4_K block's 12 packed bytes. */
static inline void
kf_q4k_scale_min(int j, const uint8_t *s, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void
kf_cpu_dequant_row(kf_tensor_type_t t, const void *src, float *dst, size_t n)
{
    const uint8_t *p = src;
    switch (t) {
    case KF_TT_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case KF_TT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = kf_cpu_f16_to_f32(h);
        }
        return;
    case KF_TT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = kf_cpu_bf16_to_f32(h);
        }
        return;
    case KF_TT_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34) {
            float d = kf_ld_f16(p);
            for (int i = 0; i < 32; i++)
                dst[b * 32 + i] = d * (float)(int8_t)p[2 + i];
        }
        return;
    case KF_TT_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18) {
            float d = kf_ld_f16(p);
            for (int i = 0; i < 16; i++) {
                dst[b * 32 + i] = d * (float)((p[2 + i] & 0x0f) - 8);
                dst[b * 32 + 16 + i] = d * (float)((p[2 + i] >> 4) - 8);
            }
        }
        return;
    case KF_TT_Q4_K:
        for (size_t b = 0; b < n / QK_K; b++, p += 144) {
            float d = kf_ld_f16(p), dmin = kf_ld_f16(p + 2);
            const uint8_t *sc = p + 4, *q = p + 16;
            float *y = dst + b * QK_K;
            for (int j = 0; j < 4; j++, q += 32, y += 64) {
                int s1, m1, s2, m2;
                kf_q4k_scale_min(2 * j, sc, &s1, &m1);
                kf_q4k_scale_min(2 * j + 1, sc, &s2, &m2);
                for (int l = 0; l < 32; l++) {
                    y[l] = d * (float)s1 * (float)(q[l] & 0x0f) - dmin * (float)m1;
                    y[32 + l] = d * (float)s2 * (float)(q[l] >> 4) - dmin * (float)m2;
                }
            }
        }
        return;
    case KF_TT_Q6_K:
        for (size_t b = 0; b < n / QK_K; b++, p += 210) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = kf_ld_f16(p + 208);
            float *y = dst + b * QK_K;
            for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * (float)sc[is] * (float)q1;
                    y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                    y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                    y[l + 96] = d * (float)sc[is + 6] * (float)q4;
                }
            }
        }
        return;
    }
    KF_ASSERT(!"kf_cpu_dequant_row: unsupported type");
}

/* ---------- reference dot products ---------- */

float
kf_cpu_dot_f32_ref(const float *w, const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)w[i] * x[i];
    return (float)s;
}

float
kf_cpu_dot_f16_ref(const uint16_t *w, const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)kf_cpu_f16_to_f32_ref(w[i]) * x[i];
    return (float)s;
}

float
kf_cpu_dot_bf16_ref(const uint16_t *w, const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)kf_cpu_bf16_to_f32(w[i]) * x[i];
    return (float)s;
}

float
kf_cpu_dot_q8_0_ref(const void *w, const kf_q8a_t *x, size_t n)
{
    const uint8_t *p = w;
    double s = 0.0;
    for (size_t b = 0; b < n / 32; b++, p += 34) {
        int is = 0;
        for (int i = 0; i < 32; i++)
            is += (int8_t)p[2 + i] * x[b].qs[i];
        s += (double)kf_ld_f16(p) * x[b].d * is;
    }
    return (float)s;
}

/* The Q8_0x8 layout's scalar definition (cpu_q8x8.c has the layout and the SIMD kernel). */
void
kf_cpu_q8x8_rows_ref(const void *group,
                     uint64_t ne0,
                     const kf_q8a_t *xq,
                     uint32_t n_tok,
                     float *y,
                     size_t ldy,
                     unsigned nr)
{
    size_t nb = (size_t)(ne0 / 32);
    for (uint32_t t = 0; t < n_tok; t++) {
        const kf_q8a_t *x = xq + (size_t)t * nb;
        for (unsigned r = 0; r < nr; r++) {
            const uint8_t *p = group;
            float acc = 0.0f;
            for (size_t b = 0; b < nb; b++, p += KF_Q8X8_GROUP_BLOCK_BYTES) {
                uint16_t h;
                memcpy(&h, p + 2 * r, 2);
                int32_t is = 0;
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 4; i++)
                        is += (int8_t)(p[KF_Q8X8_QOFF + 32 * j + 4 * r + (unsigned)i] ^ 0x80u) *
                              x[b].qs[4 * j + i];
                acc = fmaf(kf_cpu_f16_to_f32(h) * x[b].d, (float)is, acc);
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

float
kf_cpu_dot_q4_0_ref(const void *w, const kf_q8a_t *x, size_t n)
{
    const uint8_t *p = w;
    double s = 0.0;
    for (size_t b = 0; b < n / 32; b++, p += 18) {
        int is = 0;
        for (int i = 0; i < 16; i++) {
            is += ((p[2 + i] & 0x0f) - 8) * x[b].qs[i];
            is += ((p[2 + i] >> 4) - 8) * x[b].qs[16 + i];
        }
        s += (double)kf_ld_f16(p) * x[b].d * is;
    }
    return (float)s;
}

float
kf_cpu_dot_q4_k_ref(const void *w, const kf_q8a_t *x, size_t n)
{
    const uint8_t *p = w;
    double s = 0.0;
    for (size_t b = 0; b < n / QK_K; b++, p += 144) {
        double d = kf_ld_f16(p), dmin = kf_ld_f16(p + 2);
        const uint8_t *q = p + 16;
        const kf_q8a_t *xb = x + b * 8;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            kf_q4k_scale_min(j, p + 4, &sc, &m);
            const uint8_t *qq = q + 32 * (j / 2);
            int is = 0, xs = 0;
            for (int l = 0; l < 32; l++) {
                int u = (j & 1) ? (qq[l] >> 4) : (qq[l] & 0x0f);
                is += u * xb[j].qs[l];
                xs += xb[j].qs[l];
            }
            s += xb[j].d * (d * sc * is - dmin * m * xs);
        }
    }
    return (float)s;
}

float
kf_cpu_dot_q6_k_ref(const void *w, const kf_q8a_t *x, size_t n)
{
    const uint8_t *p = w;
    double s = 0.0;
    for (size_t b = 0; b < n / QK_K; b++, p += 210) {
        const int8_t *sc = (const int8_t *)(p + 192);
        double d = kf_ld_f16(p + 208);
        for (int k = 0; k < 8; k++) { /* k-th group of 32 values = k-th activation block */
            int h = k / 4, sub = k % 4;
            const uint8_t *ql = p + 64 * h + (sub & 1) * 32, *qh = p + 128 + 32 * h;
            const kf_q8a_t *xb = &x[b * 8 + k];
            int is0 = 0, is1 = 0;
            for (int l = 0; l < 32; l++) {
                int lo = (sub < 2) ? (ql[l] & 0x0f) : (ql[l] >> 4);
                int q = (lo | (((qh[l] >> (2 * sub)) & 3) << 4)) - 32;
                if (l < 16)
                    is0 += q * xb->qs[l];
                else
                    is1 += q * xb->qs[l];
            }
            s += d * xb->d *
                 ((double)sc[8 * h + 2 * sub] * is0 + (double)sc[8 * h + 2 * sub + 1] * is1);
        }
    }
    return (float)s;
}

/* ---------- SIMD dot products ---------- */

#ifdef KF_CPU_AVX2
static inline float
kf_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Signed int8 x signed int8 -> 8 int32 partial sums (maddubs needs one unsigned operand). */
static inline __m256i
kf_dot_i8(__m256i a, __m256i b)
{
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Unsigned (0..63) x signed int8 -> 8 int32 partial sums. */
static inline __m256i
kf_dot_u8i8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#endif

float
kf_cpu_dot_f32(const float *w, const float *x, size_t n)
{
#ifdef KF_CPU_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = kf_hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
#else
    float s = 0.0f;
    for (size_t i = 0; i < n; i++)
        s += w[i] * x[i];
    return s;
#endif
}

float
kf_cpu_dot_f16(const uint16_t *w, const float *x, size_t n)
{
#ifdef KF_CPU_AVX2
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = kf_hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += kf_cpu_f16_to_f32(w[i]) * x[i];
    return s;
#else
    float s = 0.0f;
    for (size_t i = 0; i < n; i++)
        s += kf_cpu_f16_to_f32(w[i]) * x[i];
    return s;
#endif
}

float
kf_cpu_dot_bf16(const uint16_t *w, const float *x, size_t n)
{
#ifdef KF_CPU_AVX2
    __m256 a0 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 wf = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i), a0);
    }
    float s = kf_hsum256(a0);
    for (; i < n; i++)
        s += kf_cpu_bf16_to_f32(w[i]) * x[i];
    return s;
#else
    float s = 0.0f;
    for (size_t i = 0; i < n; i++)
        s += kf_cpu_bf16_to_f32(w[i]) * x[i];
    return s;
#endif
}

float
kf_cpu_dot_q8_0(const void *w, const kf_q8a_t *x, size_t n)
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < n / 32; b++, p += 34) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)(p + 2));
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256 d = _mm256_set1_ps(kf_ld_f16(p) * x[b].d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(kf_dot_i8(qw, qx)), acc);
    }
    return kf_hsum256(acc);
#else
    return kf_cpu_dot_q8_0_ref(w, x, n);
#endif
}

void
kf_cpu_dot_q8_0_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4])
{
#ifdef KF_CPU_AVX2
    /* Four tokens per pass over the weight row: the weight block is loaded, its sign split off
     * and its scale widened once instead of four times. Per token the operations are those of
     * kf_cpu_dot_q8_0 in the same order, so the results are bit-identical to it. */
    const uint8_t *p = w;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t b = 0; b < n / 32; b++, p += 34) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)(p + 2));
        __m256i aw = _mm256_sign_epi8(qw, qw);
        /* The scale product as a vector multiply by a broadcast load: the same IEEE product as
         * the scalar wd * d of kf_cpu_dot_q8_0, one instruction fewer per token. */
        __m256 wd = _mm256_set1_ps(kf_ld_f16(p));
        for (int k = 0; k < 4; k++) {
            __m256i qx = _mm256_loadu_si256((const __m256i *)x[k][b].qs);
            __m256i p32 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(qx, qw)), ones);
            __m256 sc = _mm256_mul_ps(wd, _mm256_broadcast_ss(&x[k][b].d));
            acc[k] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p32), acc[k]);
        }
    }
    for (int k = 0; k < 4; k++)
        out[k] = kf_hsum256(acc[k]);
#else
    for (int k = 0; k < 4; k++)
        out[k] = kf_cpu_dot_q8_0(w, x[k], n);
#endif
}

float
kf_cpu_dot_q4_0(const void *w, const kf_q8a_t *x, size_t n)
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc = _mm256_setzero_ps();
    float corr = 0.0f;
    const __m128i m4 = _mm_set1_epi8(0x0f);
    for (size_t b = 0; b < n / 32; b++, p += 18) {
        __m128i q = _mm_loadu_si128((const __m128i *)(p + 2));
        __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        __m256i u = _mm256_set_m128i(hi, lo); /* values 0..15, elements 0..31 in order */
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[b].qs);
        float d = kf_ld_f16(p) * x[b].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(kf_dot_u8i8(u, qx)), acc);
        /* (u - 8) . x = u . x - 8 * sum(x) */
        corr += d * (float)(8 * (x[b].s16[0] + x[b].s16[1]));
    }
    return kf_hsum256(acc) - corr;
#else
    return kf_cpu_dot_q4_0_ref(w, x, n);
#endif
}

float
kf_cpu_dot_q4_k(const void *w, const kf_q8a_t *x, size_t n)
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc = _mm256_setzero_ps();
    float corr = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (size_t b = 0; b < n / QK_K; b++, p += 144) {
        float d = kf_ld_f16(p), dmin = kf_ld_f16(p + 2);
        const uint8_t *q = p + 16;
        const kf_q8a_t *xb = x + b * 8;
        for (int j = 0; j < 4; j++, q += 32) {
            int s1, m1, s2, m2;
            kf_q4k_scale_min(2 * j, p + 4, &s1, &m1);
            kf_q4k_scale_min(2 * j + 1, p + 4, &s2, &m2);
            __m256i qq = _mm256_loadu_si256((const __m256i *)q);
            __m256i lo = _mm256_and_si256(qq, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qq, 4), m4);
            const kf_q8a_t *x1 = &xb[2 * j], *x2 = &xb[2 * j + 1];
            __m256i p1 = kf_dot_u8i8(lo, _mm256_loadu_si256((const __m256i *)x1->qs));
            __m256i p2 = kf_dot_u8i8(hi, _mm256_loadu_si256((const __m256i *)x2->qs));
            acc =
                _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s1 * x1->d), _mm256_cvtepi32_ps(p1), acc);
            acc =
                _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s2 * x2->d), _mm256_cvtepi32_ps(p2), acc);
            corr += dmin * ((float)m1 * x1->d * (float)(x1->s16[0] + x1->s16[1]) +
                            (float)m2 * x2->d * (float)(x2->s16[0] + x2->s16[1]));
        }
    }
    return kf_hsum256(acc) - corr;
#else
    return kf_cpu_dot_q4_k_ref(w, x, n);
#endif
}

float
kf_cpu_dot_q6_k(const void *w, const kf_q8a_t *x, size_t n)
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc = _mm256_setzero_ps();
    float corr = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    for (size_t b = 0; b < n / QK_K; b++, p += 210) {
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = kf_ld_f16(p + 208);
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
            __m256i lo4[4] = {
                _mm256_and_si256(ql0, m4),
                _mm256_and_si256(ql1, m4),
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
            };
            for (int sub = 0; sub < 4; sub++) {
                const kf_q8a_t *xb = &x[b * 8 + 4 * h + sub];
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * sub), m3);
                __m256i u = _mm256_or_si256(lo4[sub], _mm256_slli_epi16(hb, 4)); /* 0..63 */
                __m256i p16 = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)xb->qs));
                int s0 = sc[8 * h + 2 * sub], s1 = sc[8 * h + 2 * sub + 1];
                /* Low 128-bit lane = values 0..15 (scale s0), high lane = 16..31 (scale s1). */
                __m256i scv =
                    _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
                __m256i p32 = _mm256_madd_epi16(p16, scv);
                float dd = d * xb->d;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p32), acc);
                corr += dd * 32.0f * (float)(s0 * xb->s16[0] + s1 * xb->s16[1]);
            }
        }
    }
    return kf_hsum256(acc) - corr;
#else
    return kf_cpu_dot_q6_k_ref(w, x, n);
#endif
}

/* Four-token twins of the Q4_0, Q4_K and Q6_K dot products: the nibble unpacking, the
 * 6-bit scale decoding and the high-bit merging are done once per weight block instead of once
 * per token. For each token the arithmetic is that of the single-token function, in the same
 * order, so the results are bit-identical to four single calls. */
void
kf_cpu_dot_q4_0_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4])
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    float corr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const __m128i m4 = _mm_set1_epi8(0x0f);
    for (size_t b = 0; b < n / 32; b++, p += 18) {
        __m128i q = _mm_loadu_si128((const __m128i *)(p + 2));
        __m128i lo = _mm_and_si128(q, m4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        __m256i u = _mm256_set_m128i(hi, lo);
        float wd = kf_ld_f16(p);
        for (int k = 0; k < 4; k++) {
            const kf_q8a_t *xb = &x[k][b];
            __m256i qx = _mm256_loadu_si256((const __m256i *)xb->qs);
            float d = wd * xb->d;
            acc[k] =
                _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(kf_dot_u8i8(u, qx)), acc[k]);
            corr[k] += d * (float)(8 * (xb->s16[0] + xb->s16[1]));
        }
    }
    for (int k = 0; k < 4; k++)
        out[k] = kf_hsum256(acc[k]) - corr[k];
#else
    for (int k = 0; k < 4; k++)
        out[k] = kf_cpu_dot_q4_0(w, x[k], n);
#endif
}

void
kf_cpu_dot_q4_k_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4])
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    float corr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (size_t b = 0; b < n / QK_K; b++, p += 144) {
        float d = kf_ld_f16(p), dmin = kf_ld_f16(p + 2);
        const uint8_t *q = p + 16;
        for (int j = 0; j < 4; j++, q += 32) {
            int s1, m1, s2, m2;
            kf_q4k_scale_min(2 * j, p + 4, &s1, &m1);
            kf_q4k_scale_min(2 * j + 1, p + 4, &s2, &m2);
            __m256i qq = _mm256_loadu_si256((const __m256i *)q);
            __m256i lo = _mm256_and_si256(qq, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qq, 4), m4);
            for (int k = 0; k < 4; k++) {
                const kf_q8a_t *x1 = &x[k][b * 8 + 2 * j], *x2 = x1 + 1;
                __m256i p1 = kf_dot_u8i8(lo, _mm256_loadu_si256((const __m256i *)x1->qs));
                __m256i p2 = kf_dot_u8i8(hi, _mm256_loadu_si256((const __m256i *)x2->qs));
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s1 * x1->d),
                                         _mm256_cvtepi32_ps(p1), acc[k]);
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s2 * x2->d),
                                         _mm256_cvtepi32_ps(p2), acc[k]);
                corr[k] += dmin * ((float)m1 * x1->d * (float)(x1->s16[0] + x1->s16[1]) +
                                   (float)m2 * x2->d * (float)(x2->s16[0] + x2->s16[1]));
            }
        }
    }
    for (int k = 0; k < 4; k++)
        out[k] = kf_hsum256(acc[k]) - corr[k];
#else
    for (int k = 0; k < 4; k++)
        out[k] = kf_cpu_dot_q4_k(w, x[k], n);
#endif
}

void
kf_cpu_dot_q6_k_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4])
{
#ifdef KF_CPU_AVX2
    const uint8_t *p = w;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    float corr[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    for (size_t b = 0; b < n / QK_K; b++, p += 210) {
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = kf_ld_f16(p + 208);
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
            __m256i lo4[4] = {
                _mm256_and_si256(ql0, m4),
                _mm256_and_si256(ql1, m4),
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
            };
            for (int sub = 0; sub < 4; sub++) {
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * sub), m3);
                __m256i u = _mm256_or_si256(lo4[sub], _mm256_slli_epi16(hb, 4));
                int s0 = sc[8 * h + 2 * sub], s1 = sc[8 * h + 2 * sub + 1];
                __m256i scv =
                    _mm256_set_m128i(_mm_set1_epi16((short)s1), _mm_set1_epi16((short)s0));
                for (int k = 0; k < 4; k++) {
                    const kf_q8a_t *xb = &x[k][b * 8 + 4 * h + sub];
                    __m256i p16 =
                        _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)xb->qs));
                    __m256i p32 = _mm256_madd_epi16(p16, scv);
                    float dd = d * xb->d;
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p32), acc[k]);
                    corr[k] += dd * 32.0f * (float)(s0 * xb->s16[0] + s1 * xb->s16[1]);
                }
            }
        }
    }
    for (int k = 0; k < 4; k++)
        out[k] = kf_hsum256(acc[k]) - corr[k];
#else
    for (int k = 0; k < 4; k++)
        out[k] = kf_cpu_dot_q6_k(w, x[k], n);
#endif
}

int
kf_cpu_type_uses_q8a(kf_tensor_type_t t)
{
    return t == KF_TT_CPU_Q8_0X8 || t == KF_TT_Q8_0 || t == KF_TT_Q4_0 || t == KF_TT_Q4_K ||
           t == KF_TT_Q6_K;
}

/* ---------- matmul ---------- */

/*
 * Float weights (F32, F16, BF16) use register-tiled micro-kernels: one weight row against four
 * tokens keeps two 8-lane accumulators per token (even and odd 8-element steps), so one weight
 * load (and F16/BF16 widening) feeds four FMAs, with 8 independent FMA chains in flight. Single
 * tokens (decode) read one row after the other in order with the same two chains: the row
 * streams from memory sequentially, which the hardware prefetcher serves best (interleaving
 * four rows measured half the bandwidth on the 151,936-row output projection).
 *
 * Every kernel computes each (row, token) output with the same operations in the same order
 * (two accumulators over 16-element steps, the shared horizontal sum of their sum, then the
 * scalar tail with fmaf), so a result never depends on which kernel, tile or batch composition
 * produced it: batched decode is bit-identical to decoding alone.
 */
#ifdef KF_CPU_AVX2
static inline __m256
kf_ld8_f32(const float *p)
{
    return _mm256_loadu_ps(p);
}
static inline __m256
kf_ld8_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256
kf_ld8_bf16(const uint16_t *p)
{
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
#endif
static inline float
kf_w1_f32(const float *p)
{
    return *p;
}
static inline float
kf_w1_f16(const uint16_t *p)
{
    return kf_cpu_f16_to_f32(*p);
}
static inline float
kf_w1_bf16(const uint16_t *p)
{
    return kf_cpu_bf16_to_f32(*p);
}

/* Kernels for one weight element type WT. The AVX2 tiles take their accumulators from and
 * back to memory so a long row can be split into K blocks that stay in L1 (see kf_tile_*):
 * storing an 8-lane accumulator and reloading it continues the very same FMA chain, so the
 * blocking changes no result. The scalar build computes every output with the 1x1 loop, which
 * is trivially identical across shapes. */
#ifdef KF_CPU_AVX2
#define KF_FLOAT_KERNELS(NAME, WT)                                                              \
    static inline float kf_fin_##NAME(__m256 a_even, __m256 a_odd, const WT *w, const float *x, \
                                      size_t i, size_t n)                                       \
    {                                                                                           \
        float s = kf_hsum256(_mm256_add_ps(a_even, a_odd));                                     \
        for (; i < n; i++)                                                                      \
            s = fmaf(kf_w1_##NAME(w + i), x[i], s);                                             \
        return s;                                                                               \
    }                                                                                           \
    /* acc[2t], acc[2t+1] += w[k0..k1) . x[t][k0..k1) over even / odd 8-element steps;          \
     * k1 - k0 is a multiple of 16. */                                                          \
    static inline void kf_mm_##NAME##_1x4(const WT *w, const float *x, size_t ldx, size_t k0,   \
                                          size_t k1, __m256 *acc)                               \
    {                                                                                           \
        __m256 a0 = acc[0], b0 = acc[1], a1 = acc[2], b1 = acc[3];                              \
        __m256 a2 = acc[4], b2 = acc[5], a3 = acc[6], b3 = acc[7];                              \
        const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;               \
        for (size_t i = k0; i < k1; i += 16) {                                                  \
            __m256 v = kf_ld8_##NAME(w + i), u = kf_ld8_##NAME(w + i + 8);                      \
            a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x0 + i), a0);                               \
            b0 = _mm256_fmadd_ps(u, _mm256_loadu_ps(x0 + i + 8), b0);                           \
            a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x1 + i), a1);                               \
            b1 = _mm256_fmadd_ps(u, _mm256_loadu_ps(x1 + i + 8), b1);                           \
            a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x2 + i), a2);                               \
            b2 = _mm256_fmadd_ps(u, _mm256_loadu_ps(x2 + i + 8), b2);                           \
            a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x3 + i), a3);                               \
            b3 = _mm256_fmadd_ps(u, _mm256_loadu_ps(x3 + i + 8), b3);                           \
        }                                                                                       \
        acc[0] = a0, acc[1] = b0, acc[2] = a1, acc[3] = b1;                                     \
        acc[4] = a2, acc[5] = b2, acc[6] = a3, acc[7] = b3;                                     \
    }                                                                                           \
    /* One row, one token, whole row, read in order: the decode case, bandwidth-bound. */       \
    static float kf_mm_##NAME##_1x1(const WT *w, const float *x, size_t n)                      \
    {                                                                                           \
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;                                               \
        size_t i = 0;                                                                           \
        for (; i + 16 <= n; i += 16) {                                                          \
            a0 = _mm256_fmadd_ps(kf_ld8_##NAME(w + i), _mm256_loadu_ps(x + i), a0);             \
            b0 = _mm256_fmadd_ps(kf_ld8_##NAME(w + i + 8), _mm256_loadu_ps(x + i + 8), b0);     \
        }                                                                                       \
        return kf_fin_##NAME(a0, b0, w, x, i, n);                                               \
    }
#else
#define KF_FLOAT_KERNELS(NAME, WT)                                         \
    static float kf_mm_##NAME##_1x1(const WT *w, const float *x, size_t n) \
    {                                                                      \
        float s = 0.0f;                                                    \
        for (size_t i = 0; i < n; i++)                                     \
            s = fmaf(kf_w1_##NAME(w + i), x[i], s);                        \
        return s;                                                          \
    }
#endif

KF_FLOAT_KERNELS(f32, float)
KF_FLOAT_KERNELS(f16, uint16_t)
KF_FLOAT_KERNELS(bf16, uint16_t)

typedef float (*kf_dotq_fn)(const void *w, const kf_q8a_t *x, size_t n);

/* Rows per tile: the tile's weights (a few tens of KB) stay in L1/L2 while every token of the
 * batch streams past them, so each weight byte comes from memory once per call. */
#define KF_MM_TILE 8
_Static_assert(KF_MM_TILE == 8, "a Q8_0x8 group is one tile");

/* Token and K blocking of the float tiles: KF_MM_TB tokens (groups of 4) at a time, rows in
 * KF_MM_KB-element slices. A slice of the tile's weights (8 rows x 256 = 4 KB of F16) and of
 * one token group (4 KB) sit in L1 while they meet; without the K split a 4864-wide row of
 * four tokens (78 KB) would stream from L2 for every row pair. The accumulators of the token
 * block live in `acc` between slices (16 groups x 4 row pairs x 8 vectors = 16 KB). */
#define KF_MM_KB 256
#define KF_MM_TB 64

/* Single tokens (and the scalar build): row after row, each read in order. */
#define KF_FLOAT_TILE_1(NAME, WT)                                                            \
    static void kf_tile1_##NAME(const kf_cpu_mm_t *mt, uint32_t t, uint64_t r0, uint64_t r1) \
    {                                                                                        \
        const kf_weight_t *W = mt->W;                                                        \
        size_t n = (size_t)W->ne0;                                                           \
        const uint8_t *base = W->data;                                                       \
        const float *x = mt->X + (size_t)t * n;                                              \
        float *y = mt->Y + (size_t)t * mt->ldy;                                              \
        for (uint64_t r = r0; r < r1; r++)                                                   \
            y[r] = kf_mm_##NAME##_1x1((const WT *)(base + r * W->row_bytes), x, n);          \
    }

#if defined(KF_CPU_AVX2) && defined(__AVX512F__)
/*
 * AVX-512 tiles (two or more tokens). One 16-lane accumulator per (row, token) holds exactly
 * the two 8-lane accumulators of the kernels above: lanes 0-7 are the even 8-element steps,
 * lanes 8-15 the odd ones, each lane the same FMA chain. Adding its halves before the shared
 * horizontal sum is the same add, so these tiles give the bits of kf_mm_*_1x1 (single tokens
 * keep that kernel: one row streamed in order). The 32 vector registers hold a KF_MMZ_R x
 * KF_MMZ_T block of accumulators: per 16-element step R weight loads (and widenings) and T
 * activation loads feed R * T FMAs, so the FMA units rather than the loads set the pace (the
 * 1x4 ymm kernel needs 10 loads per 8 ymm FMAs and is load-bound at about 60% of peak).
 */
#define KF_MMZ_R  4   /* rows per register block (divides KF_MM_TILE) */
#define KF_MMZ_T  6   /* tokens per register block: 24 accumulators + 4 weights + 1 token */
#define KF_MMZ_KB 512 /* K slice, elements */
#define KF_MMZ_TB 64  /* token block: accumulators kept between slices (32 KB) */

static inline __attribute__((always_inline)) __m512
kf_ld16(const void *w, size_t i, kf_tensor_type_t ty)
{
    if (ty == KF_TT_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    if (ty == KF_TT_BF16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_loadu_ps((const float *)w + i);
}

/* acc[t * KF_MM_TILE + r] += w[r][k0..k1) . x[t][k0..k1) in 16-element steps, r < R, t < T;
 * R and T are constants once inlined, so the accumulators live in registers. Each step also
 * prefetches the weights `pf` bytes past the ones it reads (see kf_tilez). */
static inline __attribute__((always_inline)) void
kf_mmz(const void *const *w,
       kf_tensor_type_t ty,
       int R,
       const float *x,
       size_t ldx,
       int T,
       size_t k0,
       size_t k1,
       size_t pf,
       __m512 *acc)
{
    size_t es = ty == KF_TT_F32 ? 4 : 2;
    __m512 a[KF_MMZ_R][KF_MMZ_T];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            a[r][t] = acc[t * KF_MM_TILE + r];
    for (size_t i = k0; i < k1; i += 16) {
        __m512 v[KF_MMZ_R];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            v[r] = kf_ld16(w[r], i, ty);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            _mm_prefetch((const char *)w[r] + (i * es + pf), _MM_HINT_T2);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            __m512 u = _mm512_loadu_ps(x + (size_t)t * ldx + i);
            /* One load per token and step: left alone, gcc folds the load into each of the R
             * FMAs, and R times the loads make the loop load-bound. */
            __asm__("" : "+v"(u));
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                a[r][t] = _mm512_fmadd_ps(v[r], u, a[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            acc[t * KF_MM_TILE + r] = a[r][t];
}

typedef void (*kf_mmz_fn)(
    const void *const *w, const float *x, size_t ldx, size_t k0, size_t k1, size_t pf, __m512 *acc);

#define KF_MMZ_FN(NAME, TY, R, T)                                                           \
    static void kf_mmz_##NAME##_##R##x##T(const void *const *w, const float *x, size_t ldx, \
                                          size_t k0, size_t k1, size_t pf, __m512 *acc)     \
    {                                                                                       \
        kf_mmz(w, TY, R, x, ldx, T, k0, k1, pf, acc);                                       \
    }
/* Kernels for R rows (KF_MMZ_R, or 1 for a tile's leftover rows) x 1..KF_MMZ_T tokens. */
#define KF_MMZ_FNS(NAME, TY, R, TAB)                                                       \
    KF_MMZ_FN(NAME, TY, R, 1)                                                              \
    KF_MMZ_FN(NAME, TY, R, 2)                                                              \
    KF_MMZ_FN(NAME, TY, R, 3)                                                              \
    KF_MMZ_FN(NAME, TY, R, 4)                                                              \
    KF_MMZ_FN(NAME, TY, R, 5)                                                              \
    KF_MMZ_FN(NAME, TY, R, 6)                                                              \
    static const kf_mmz_fn kf_mmz_##NAME##_##TAB[KF_MMZ_T + 1] = {NULL,                    \
                                                                  kf_mmz_##NAME##_##R##x1, \
                                                                  kf_mmz_##NAME##_##R##x2, \
                                                                  kf_mmz_##NAME##_##R##x3, \
                                                                  kf_mmz_##NAME##_##R##x4, \
                                                                  kf_mmz_##NAME##_##R##x5, \
                                                                  kf_mmz_##NAME##_##R##x6};
#define KF_MMZ_FNS_X(NAME, TY, R, TAB) KF_MMZ_FNS(NAME, TY, R, TAB)
_Static_assert(KF_MMZ_T == 6, "KF_MMZ_FNS lists the kernels for 1..6 tokens");

/* Rows [r0, r1) (at most KF_MM_TILE) x tokens [0, n_tok) of a float-weight matmul, n_tok > 1.
 * Tokens go in blocks of KF_MMZ_TB, rows in KB-element slices: a slice of the tile's weights
 * (8 rows x 512 = 8 KB of F16) stays in L1 while all token groups of the block pass it, and each
 * group's activation slice (6 x 2 KB) serves both row blocks from L1. The accumulators wait in
 * `acc` between slices; storing and reloading one continues the same FMA chain.
 * Rows are contiguous, so the first token group of each slice prefetches the same slice two
 * tiles ahead into L2: with few tokens the tile's compute is short and the short row streams
 * do not wake the hardware prefetcher (8 tokens, 151936 x 896 F16 from DRAM: 64 -> 89 GFLOP/s;
 * into L1 it measured 64, as the prefetches then hold the L1 miss buffers). Later groups
 * "prefetch" the lines they read (pf 0), a hit. */
static void
kf_tilez(const kf_cpu_mm_t *mt,
         uint64_t r0,
         uint64_t r1,
         const kf_mmz_fn *fr,
         const kf_mmz_fn *f1,
         float (*fin)(__m512, const void *, const float *, size_t, size_t))
{
    const kf_weight_t *W = mt->W;
    size_t n = (size_t)W->ne0, n16 = n & ~(size_t)15, ldy = mt->ldy;
    const uint8_t *base = W->data;
    const void *w[KF_MM_TILE];
    uint32_t nr = (uint32_t)(r1 - r0);
    for (uint32_t j = 0; j < nr; j++)
        w[j] = base + (r0 + j) * W->row_bytes;
    static _Thread_local __m512 acc[KF_MMZ_TB][KF_MM_TILE];
    size_t pf = r1 + 2 * KF_MM_TILE <= W->ne1 ? 2 * KF_MM_TILE * W->row_bytes : 0;
    for (uint32_t tb = 0; tb < mt->n_tok; tb += KF_MMZ_TB) {
        uint32_t nt = mt->n_tok - tb < KF_MMZ_TB ? mt->n_tok - tb : KF_MMZ_TB;
        const float *xb = mt->X + (size_t)tb * n;
        for (uint32_t t = 0; t < nt; t++)
            for (uint32_t j = 0; j < nr; j++)
                acc[t][j] = _mm512_setzero_ps();
        for (size_t k0 = 0; k0 < n16; k0 += KF_MMZ_KB) {
            size_t k1 = k0 + KF_MMZ_KB < n16 ? k0 + KF_MMZ_KB : n16;
            for (uint32_t t = 0; t < nt; t += KF_MMZ_T) {
                uint32_t tt = nt - t < KF_MMZ_T ? nt - t : KF_MMZ_T;
                uint32_t j = 0;
                for (; j + KF_MMZ_R <= nr; j += KF_MMZ_R)
                    fr[tt](w + j, xb + (size_t)t * n, n, k0, k1, t ? 0 : pf, &acc[t][j]);
                for (; j < nr; j++)
                    f1[tt](w + j, xb + (size_t)t * n, n, k0, k1, t ? 0 : pf, &acc[t][j]);
            }
        }
        for (uint32_t t = 0; t < nt; t++) {
            float *y = mt->Y + (size_t)(tb + t) * ldy + r0;
            for (uint32_t j = 0; j < nr; j++)
                y[j] = fin(acc[t][j], w[j], xb + (size_t)t * n, n16, n);
        }
    }
}

#define KF_FLOAT_TILE(NAME, WT, TY)                                                            \
    KF_FLOAT_TILE_1(NAME, WT)                                                                  \
    KF_MMZ_FNS_X(NAME, TY, KF_MMZ_R, rows)                                                     \
    KF_MMZ_FNS_X(NAME, TY, 1, row1)                                                            \
    static float kf_finz_##NAME(__m512 a, const void *w, const float *x, size_t i, size_t n)   \
    {                                                                                          \
        return kf_fin_##NAME(_mm512_castps512_ps256(a),                                        \
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)), \
                             (const WT *)w, x, i, n);                                          \
    }                                                                                          \
    static void kf_tile_##NAME(const kf_cpu_mm_t *mt, uint64_t r0, uint64_t r1)                \
    {                                                                                          \
        if (mt->n_tok == 1)                                                                    \
            kf_tile1_##NAME(mt, 0, r0, r1);                                                    \
        else                                                                                   \
            kf_tilez(mt, r0, r1, kf_mmz_##NAME##_rows, kf_mmz_##NAME##_row1, kf_finz_##NAME);  \
    }
#elif defined(KF_CPU_AVX2)
/* Rows [r0, r1) (at most KF_MM_TILE) x all tokens of a float-weight matmul. */
#define KF_FLOAT_TILE(NAME, WT, TY)                                                     \
    KF_FLOAT_TILE_1(NAME, WT)                                                           \
    static void kf_tile_##NAME(const kf_cpu_mm_t *mt, uint64_t r0, uint64_t r1)         \
    {                                                                                   \
        const kf_weight_t *W = mt->W;                                                   \
        size_t n = (size_t)W->ne0, n16 = n & ~(size_t)15, ldy = mt->ldy;                \
        const uint8_t *base = W->data;                                                  \
        const WT *w[KF_MM_TILE];                                                        \
        for (uint64_t r = r0; r < r1; r++)                                              \
            w[r - r0] = (const WT *)(base + r * W->row_bytes);                          \
        uint32_t nr = (uint32_t)(r1 - r0), n4 = mt->n_tok & ~3u;                        \
        static _Thread_local __m256 acc[KF_MM_TB / 4][KF_MM_TILE][8];                   \
        for (uint32_t tb = 0; tb < n4; tb += KF_MM_TB) {                                \
            uint32_t te = tb + KF_MM_TB < n4 ? tb + KF_MM_TB : n4, ng = (te - tb) / 4;  \
            for (uint32_t g = 0; g < ng; g++)                                           \
                for (uint32_t j = 0; j < nr; j++)                                       \
                    for (int k = 0; k < 8; k++)                                         \
                        acc[g][j][k] = _mm256_setzero_ps();                             \
            for (size_t k0 = 0; k0 < n16; k0 += KF_MM_KB) {                             \
                size_t k1 = k0 + KF_MM_KB < n16 ? k0 + KF_MM_KB : n16;                  \
                for (uint32_t g = 0; g < ng; g++) {                                     \
                    const float *x = mt->X + (size_t)(tb + 4 * g) * n;                  \
                    for (uint32_t j = 0; j < nr; j++)                                   \
                        kf_mm_##NAME##_1x4(w[j], x, n, k0, k1, acc[g][j]);              \
                }                                                                       \
            }                                                                           \
            for (uint32_t g = 0; g < ng; g++) {                                         \
                const float *x = mt->X + (size_t)(tb + 4 * g) * n;                      \
                float *y = mt->Y + (size_t)(tb + 4 * g) * ldy;                          \
                for (uint32_t j = 0; j < nr; j++)                                       \
                    for (uint32_t k = 0; k < 4; k++)                                    \
                        y[(size_t)k * ldy + r0 + j] =                                   \
                            kf_fin_##NAME(acc[g][j][2 * k], acc[g][j][2 * k + 1], w[j], \
                                          x + (size_t)k * n, n16, n);                   \
            }                                                                           \
        }                                                                               \
        for (uint32_t t = n4; t < mt->n_tok; t++)                                       \
            kf_tile1_##NAME(mt, t, r0, r1);                                             \
    }
#else
#define KF_FLOAT_TILE(NAME, WT, TY)                                             \
    KF_FLOAT_TILE_1(NAME, WT)                                                   \
    static void kf_tile_##NAME(const kf_cpu_mm_t *mt, uint64_t r0, uint64_t r1) \
    {                                                                           \
        for (uint32_t t = 0; t < mt->n_tok; t++)                                \
            kf_tile1_##NAME(mt, t, r0, r1);                                     \
    }
#endif

KF_FLOAT_TILE(f32, float, KF_TT_F32)
KF_FLOAT_TILE(f16, uint16_t, KF_TT_F16)
KF_FLOAT_TILE(bf16, uint16_t, KF_TT_BF16)

typedef void (*kf_dotq4_fn)(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4]);

/* Rows [r0, r1) x all tokens of a matmul with int8 activations: groups of four tokens through
 * the type's x4 kernel (weights unpacked once per four tokens), the remainder one by one. */
static void
kf_tile_q(const kf_cpu_mm_t *mt, kf_dotq_fn dq, kf_dotq4_fn dq4, uint64_t r0, uint64_t r1)
{
    const kf_weight_t *W = mt->W;
    size_t n = (size_t)W->ne0, nb = n / KF_Q8A_BLOCK;
    const uint8_t *base = W->data;
    uint32_t t = 0;
    for (; t + 4 <= mt->n_tok; t += 4) {
        const kf_q8a_t *xs[4];
        for (int k = 0; k < 4; k++)
            xs[k] = mt->Xq + (size_t)(t + (uint32_t)k) * nb;
        for (uint64_t r = r0; r < r1; r++) {
            float v[4];
            dq4(base + (size_t)r * W->row_bytes, xs, n, v);
            for (int k = 0; k < 4; k++)
                mt->Y[(size_t)(t + (uint32_t)k) * mt->ldy + r] = v[k];
        }
    }
    for (; t < mt->n_tok; t++) {
        float *y = mt->Y + (size_t)t * mt->ldy;
        for (uint64_t r = r0; r < r1; r++)
            y[r] = dq(base + (size_t)r * W->row_bytes, mt->Xq + (size_t)t * nb, n);
    }
}

/* Rows rt .. re - 1 (one tile) of mt's product. */
static void
kf_matmul_tile(const kf_cpu_mm_t *mt, uint64_t rt, uint64_t re)
{
    const kf_weight_t *W = mt->W;
    kf_dotq_fn dq = NULL;
    kf_dotq4_fn dq4 = NULL;
    switch (W->type) {
    case KF_TT_Q8_0:
        dq = kf_cpu_dot_q8_0, dq4 = kf_cpu_dot_q8_0_x4;
        break;
    case KF_TT_Q4_0:
        dq = kf_cpu_dot_q4_0, dq4 = kf_cpu_dot_q4_0_x4;
        break;
    case KF_TT_Q4_K:
        dq = kf_cpu_dot_q4_k, dq4 = kf_cpu_dot_q4_k_x4;
        break;
    case KF_TT_Q6_K:
        dq = kf_cpu_dot_q6_k, dq4 = kf_cpu_dot_q6_k_x4;
        break;
    default:
        break;
    }
    if (W->type == KF_TT_CPU_Q8_0X8)
        /* Tiles are 8 rows: one group each (the last one may be partial). */
        kf_cpu_q8x8_rows((const uint8_t *)W->data + rt * W->row_bytes, W->ne0, mt->Xq, mt->n_tok,
                         mt->Y + rt, mt->ldy, (unsigned)(re - rt));
    else if (dq)
        kf_tile_q(mt, dq, dq4, rt, re);
    else if (W->type == KF_TT_F16)
        kf_tile_f16(mt, rt, re);
    else if (W->type == KF_TT_BF16)
        kf_tile_bf16(mt, rt, re);
    else
        kf_tile_f32(mt, rt, re);
}

/* Several products in one pool run: their tiles numbered one after the other. */
typedef struct kf_matmul_multi {
    atomic_ulong next_tile; /* work queue: tiles are grabbed in chunks */
    uint64_t chunk;         /* tiles per grab */
    uint32_t n;
    uint64_t first[KF_CPU_MM_MAX + 1]; /* product i has tiles first[i] .. first[i + 1] - 1 */
    kf_cpu_mm_t mt[KF_CPU_MM_MAX];
} kf_matmul_multi_t;

static void
kf_matmul_worker(void *arg, int ith, int nth)
{
    kf_matmul_multi_t *mm = arg;
    uint64_t n_tiles = mm->first[mm->n];
    (void)ith;
    (void)nth;
    /* Dynamic chunks instead of a fixed share per thread: a thread that is descheduled (busy
     * machine) or slower does less, and the others pick up its rows. Each row is still computed
     * by exactly one thread with the same arithmetic, so results do not depend on threads. */
    for (;;) {
        uint64_t c0 = atomic_fetch_add_explicit(&mm->next_tile, mm->chunk, memory_order_relaxed);
        if (c0 >= n_tiles)
            break;
        uint64_t c1 = c0 + mm->chunk < n_tiles ? c0 + mm->chunk : n_tiles;
        uint32_t i = 0;
        for (uint64_t tile = c0; tile < c1; tile++) {
            while (tile >= mm->first[i + 1])
                i++;
            const kf_cpu_mm_t *mt = &mm->mt[i];
            uint64_t rt = (tile - mm->first[i]) * KF_MM_TILE;
            uint64_t re = rt + KF_MM_TILE < mt->W->ne1 ? rt + KF_MM_TILE : mt->W->ne1;
            kf_matmul_tile(mt, rt, re);
        }
    }
}

void
kf_cpu_matmul_multi(kf_cpu_pool_t *pool, const kf_cpu_mm_t *mm, uint32_t n)
{
    KF_ASSERT(n >= 1 && n <= KF_CPU_MM_MAX);
    kf_matmul_multi_t run = {.n = n};
    for (uint32_t i = 0; i < n; i++) {
        KF_ASSERT(!kf_cpu_type_uses_q8a(mm[i].W->type) || mm[i].Xq);
        run.mt[i] = mm[i];
        run.first[i + 1] = run.first[i] + (mm[i].W->ne1 + KF_MM_TILE - 1) / KF_MM_TILE;
    }
    /* About 8 grabs per thread: few atomics, still fine-grained enough to rebalance. */
    uint64_t chunk = run.first[n] / (8u * (uint64_t)kf_cpu_pool_size(pool));
    run.chunk = chunk ? chunk : 1;
    atomic_init(&run.next_tile, 0);
    kf_cpu_pool_run_dyn(pool, kf_matmul_worker, &run);
}

void
kf_cpu_matmul(kf_cpu_pool_t *pool,
              const kf_weight_t *W,
              const float *X,
              const kf_q8a_t *Xq,
              uint32_t n_tok,
              float *Y,
              size_t ldy)
{
    kf_cpu_mm_t mm = {.W = W, .X = X, .Xq = Xq, .n_tok = n_tok, .Y = Y, .ldy = ldy};
    kf_cpu_matmul_multi(pool, &mm, 1);
}

/* ---------- small ops ---------- */

void
kf_cpu_rmsnorm(const float *x, const float *w, float *y, size_t n, float eps)
{
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

void
kf_cpu_rope(float *x,
            uint32_t n_heads,
            uint32_t head_dim,
            uint32_t n_rot,
            int32_t pos,
            const float *inv_freq,
            kf_rope_order_t order)
{
    uint32_t half = n_rot / 2;
    for (uint32_t i = 0; i < half; i++) {
        /* Angle in double: positions reach 1e5+, where float products lose the low bits. */
        double th = (double)pos * (double)inv_freq[i];
        float c = (float)cos(th), s = (float)sin(th);
        uint32_t i0 = order == KF_ROPE_NEOX ? i : 2 * i;
        uint32_t i1 = order == KF_ROPE_NEOX ? i + half : 2 * i + 1;
        for (uint32_t h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)h * head_dim;
            float a = xh[i0], b = xh[i1];
            xh[i0] = a * c - b * s;
            xh[i1] = a * s + b * c;
        }
    }
}

void
kf_cpu_softmax(float *x, size_t n)
{
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

void
kf_cpu_swiglu(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
