/*
 * quant.c: reference scalar (de)quantization for the tensor types kf_gguf accepts.
 *
 * Block layouts follow ggml's so that files produced by llama.cpp load unchanged; they are
 * described in kf_quant.h. Everything here reads and writes blocks byte by byte through
 * little-endian helpers, so nothing depends on struct packing, alignment or host byte order.
 * Speed is not the point: backends have their own kernels and test them against these.
 */
#include "kf_quant.h"

#include <math.h>

static uint16_t
ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void
st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

uint16_t
kf_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {
        if (x == 0x7f800000u)
            return sign | 0x7c00;
        /* NaN: keep the top payload bits, force the quiet bit so it cannot become inf. */
        return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x3ff);
    }
    /* 65520 is halfway between the largest half (65504) and 2^16: ties-to-even goes up. */
    if (x >= 0x477ff000u)
        return sign | 0x7c00;
    if (x < 0x38800000u) {
        /* Below the smallest normal half (2^-14): result is a multiple of 2^-24. */
        if (x <= 0x33000000u) /* <= 2^-25, which is the tie between 0 and 2^-24: even = 0 */
            return sign;
        uint32_t e = x >> 23;
        uint32_t mant = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = mant * 2^(e-150), unit 2^-24 */
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++; /* may carry into the smallest normal, which encodes correctly */
        return sign | (uint16_t)r;
    }
    /* Normal: rebias the exponent, keep 10 mantissa bits, round on the 13 dropped bits. */
    uint32_t r = ((x >> 23) - 112) << 10 | ((x >> 13) & 0x3ff);
    uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++; /* a mantissa carry bumps the exponent; the overflow case was handled above */
    return sign | (uint16_t)r;
}

uint16_t
kf_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet NaN; the sign and top payload survive */
    /* Adding 0x7fff plus the lowest kept bit rounds to nearest even in one step. */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

size_t
kf_quant_row_size(kf_tensor_type_t type, int64_t n)
{
    uint32_t blk = kf_tensor_type_block(type);
    if (!blk || n < 0 || n % blk)
        return 0;
    return (size_t)(n / blk) * kf_tensor_type_block_bytes(type);
}

/* Q4_K keeps eight 6-bit (scale, min) pairs in 12 bytes: pairs 0-3 in the low 6 bits of
 * bytes 0-3 (scales) and 4-7 (mins); pairs 4-7 as nibbles in bytes 8-11 with their top two
 * bits in the spare high bits of bytes 0-7. */
static void
q4k_get_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void
q4k_put_scale_min(int j, uint8_t *q, uint8_t sc, uint8_t m)
{
    if (j < 4) {
        q[j] = (uint8_t)((q[j] & 0xc0) | (sc & 63));
        q[j + 4] = (uint8_t)((q[j + 4] & 0xc0) | (m & 63));
    } else {
        q[j + 4] = (uint8_t)((sc & 0xf) | ((m & 0xf) << 4));
        q[j - 4] = (uint8_t)((q[j - 4] & 63) | ((sc >> 4) << 6));
        q[j] = (uint8_t)((q[j] & 63) | ((m >> 4) << 6));
    }
}

static void
deq_q8_0(const uint8_t *b, float *y)
{
    float d = kf_fp16_to_fp32(ld16(b));
    for (int i = 0; i < 32; i++)
        y[i] = d * (float)(int8_t)b[2 + i];
}

static void
deq_q4_0(const uint8_t *b, float *y)
{
    float d = kf_fp16_to_fp32(ld16(b));
    const uint8_t *qs = b + 2;
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((qs[i] & 0xf) - 8);
        y[i + 16] = d * (float)((qs[i] >> 4) - 8);
    }
}

static void
deq_q4_k(const uint8_t *b, float *y)
{
    float d = kf_fp16_to_fp32(ld16(b));
    float dmin = kf_fp16_to_fp32(ld16(b + 2));
    const uint8_t *scales = b + 4;
    const uint8_t *qs = b + 16;
    /* Four chunks of 64 elements; each uses 32 bytes of qs and two (scale, min) pairs. */
    for (int c = 0; c < 4; c++) {
        uint8_t sc0, m0, sc1, m1;
        q4k_get_scale_min(2 * c, scales, &sc0, &m0);
        q4k_get_scale_min(2 * c + 1, scales, &sc1, &m1);
        float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
        for (int l = 0; l < 32; l++) {
            y[c * 64 + l] = d0 * (float)(qs[c * 32 + l] & 0xf) - mm0;
            y[c * 64 + 32 + l] = d1 * (float)(qs[c * 32 + l] >> 4) - mm1;
        }
    }
}

static void
deq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = kf_fp16_to_fp32(ld16(b + 208));
    /* Two halves of 128 elements: 64 bytes of ql, 32 of qh and 8 scales each. Byte l of
     * ql holds elements l (low nibble) and l+64 (high); byte l+32 holds l+32 and l+96; qh[l]
     * holds the top two bits of elements l, l+32, l+64, l+96 from its low bits up. */
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            int s = l / 16;
            int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[s] * (float)q1;
            y[l + 32] = d * (float)sc[s + 2] * (float)q2;
            y[l + 64] = d * (float)sc[s + 4] * (float)q3;
            y[l + 96] = d * (float)sc[s + 6] * (float)q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

kf_err_t
kf_dequant_row(kf_tensor_type_t type, const void *src, float *dst, int64_t n)
{
    uint32_t blk = kf_tensor_type_block(type);
    if (!blk)
        return KF_ERR_UNSUPPORTED;
    if (n < 0 || n % blk)
        return KF_ERR_INVALID_ARG;
    const uint8_t *p = src;
    uint32_t bb = kf_tensor_type_block_bytes(type);
    int64_t nb = n / blk;
    switch (type) {
    case KF_TT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return KF_OK;
    case KF_TT_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kf_fp16_to_fp32(ld16(p + 2 * i));
        return KF_OK;
    case KF_TT_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = kf_bf16_to_fp32(ld16(p + 2 * i));
        return KF_OK;
    case KF_TT_Q8_0:
        for (int64_t i = 0; i < nb; i++)
            deq_q8_0(p + i * bb, dst + i * blk);
        return KF_OK;
    case KF_TT_Q4_0:
        for (int64_t i = 0; i < nb; i++)
            deq_q4_0(p + i * bb, dst + i * blk);
        return KF_OK;
    case KF_TT_Q4_K:
        for (int64_t i = 0; i < nb; i++)
            deq_q4_k(p + i * bb, dst + i * blk);
        return KF_OK;
    case KF_TT_Q6_K:
        for (int64_t i = 0; i < nb; i++)
            deq_q6_k(p + i * bb, dst + i * blk);
        return KF_OK;
    }
    return KF_ERR_UNSUPPORTED;
}

static int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void
q_q8_0(const float *x, uint8_t *b)
{
    float amax = 0;
    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    uint16_t dh = kf_fp32_to_fp16(amax / 127.0f);
    /* Scale by the stored (rounded) d so dequantization reproduces q * d exactly. */
    float d = kf_fp16_to_fp32(dh);
    float id = d != 0 ? 1.0f / d : 0.0f;
    st16(b, dh);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)clampi((int)lrintf(x[i] * id), -127, 127);
}

static void
q_q4_0(const float *x, uint8_t *b)
{
    /* The signed value of largest magnitude maps to -8, using the full 16 levels. */
    float amax = 0, max = 0;
    for (int i = 0; i < 32; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    uint16_t dh = kf_fp32_to_fp16(max / -8.0f);
    float d = kf_fp16_to_fp32(dh);
    float id = d != 0 ? 1.0f / d : 0.0f;
    st16(b, dh);
    for (int i = 0; i < 16; i++) {
        int lo = clampi((int)lrintf(x[i] * id) + 8, 0, 15);
        int hi = clampi((int)lrintf(x[i + 16] * id) + 8, 0, 15);
        b[2 + i] = (uint8_t)(lo | hi << 4);
    }
}

static void
q_q4_k(const float *x, uint8_t *b)
{
    float scale[8], minv[8], maxs = 0, maxm = 0;
    /* Per sub-block affine fit: x ~ scale * q - min with q in 0..15 and min >= 0. */
    for (int j = 0; j < 8; j++) {
        float lo = x[j * 32], hi = x[j * 32];
        for (int l = 1; l < 32; l++) {
            lo = fminf(lo, x[j * 32 + l]);
            hi = fmaxf(hi, x[j * 32 + l]);
        }
        if (lo > 0)
            lo = 0;
        scale[j] = (hi - lo) / 15.0f;
        minv[j] = -lo;
        maxs = fmaxf(maxs, scale[j]);
        maxm = fmaxf(maxm, minv[j]);
    }
    uint16_t dh = kf_fp32_to_fp16(maxs / 63.0f), mh = kf_fp32_to_fp16(maxm / 63.0f);
    float d = kf_fp16_to_fp32(dh), dmin = kf_fp16_to_fp32(mh);
    memset(b, 0, 144);
    st16(b, dh);
    st16(b + 2, mh);
    for (int j = 0; j < 8; j++) {
        int sc = d != 0 ? clampi((int)lrintf(scale[j] / d), 0, 63) : 0;
        int m = dmin != 0 ? clampi((int)lrintf(minv[j] / dmin), 0, 63) : 0;
        q4k_put_scale_min(j, b + 4, (uint8_t)sc, (uint8_t)m);
        float ds = d * (float)sc, dm = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int q = ds != 0 ? clampi((int)lrintf((x[j * 32 + l] + dm) / ds), 0, 15) : 0;
            /* Sub-blocks 2c and 2c+1 share bytes 16 + 32c .. : low then high nibble. */
            b[16 + (j / 2) * 32 + l] |= (uint8_t)(j % 2 ? q << 4 : q);
        }
    }
}

static void
q_q6_k(const float *x, uint8_t *b)
{
    float scale[16], amax = 0;
    uint8_t L[256];
    /* Per 16-element sub-block: symmetric scale so q fits -32..31 (uses +-31). */
    for (int s = 0; s < 16; s++) {
        float m = 0;
        for (int l = 0; l < 16; l++)
            m = fmaxf(m, fabsf(x[s * 16 + l]));
        scale[s] = m / 31.0f;
        amax = fmaxf(amax, scale[s]);
    }
    uint16_t dh = kf_fp32_to_fp16(amax / 127.0f);
    float d = kf_fp16_to_fp32(dh);
    memset(b, 0, 210);
    int8_t *sc = (int8_t *)(b + 192);
    for (int s = 0; s < 16; s++) {
        int si = d != 0 ? clampi((int)lrintf(scale[s] / d), -128, 127) : 0;
        sc[s] = (int8_t)si;
        float ds = d * (float)si;
        for (int l = 0; l < 16; l++) {
            int q = ds != 0 ? clampi((int)lrintf(x[s * 16 + l] / ds), -32, 31) : 0;
            L[s * 16 + l] = (uint8_t)(q + 32);
        }
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + h * 128;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((Lh[l] & 0xf) | (Lh[l + 64] & 0xf) << 4);
            ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xf) | (Lh[l + 96] & 0xf) << 4);
            qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                              (Lh[l + 96] >> 4) << 6);
        }
        ql += 64;
        qh += 32;
    }
    st16(b + 208, dh);
}

kf_err_t
kf_quant_row(kf_tensor_type_t type, const float *src, void *dst, int64_t n)
{
    uint32_t blk = kf_tensor_type_block(type);
    if (!blk)
        return KF_ERR_UNSUPPORTED;
    if (n < 0 || n % blk)
        return KF_ERR_INVALID_ARG;
    uint8_t *p = dst;
    uint32_t bb = kf_tensor_type_block_bytes(type);
    int64_t nb = n / blk;
    switch (type) {
    case KF_TT_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return KF_OK;
    case KF_TT_F16:
        for (int64_t i = 0; i < n; i++)
            st16(p + 2 * i, kf_fp32_to_fp16(src[i]));
        return KF_OK;
    case KF_TT_BF16:
        for (int64_t i = 0; i < n; i++)
            st16(p + 2 * i, kf_fp32_to_bf16(src[i]));
        return KF_OK;
    case KF_TT_Q8_0:
        for (int64_t i = 0; i < nb; i++)
            q_q8_0(src + i * blk, p + i * bb);
        return KF_OK;
    case KF_TT_Q4_0:
        for (int64_t i = 0; i < nb; i++)
            q_q4_0(src + i * blk, p + i * bb);
        return KF_OK;
    case KF_TT_Q4_K:
        for (int64_t i = 0; i < nb; i++)
            q_q4_k(src + i * blk, p + i * bb);
        return KF_OK;
    case KF_TT_Q6_K:
        for (int64_t i = 0; i < nb; i++)
            q_q6_k(src + i * blk, p + i * bb);
        return KF_OK;
    }
    return KF_ERR_UNSUPPORTED;
}
