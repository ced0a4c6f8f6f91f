/*
 * kf_quant: reference scalar conversions between float and the tensor types of kf_gguf.h.
 *
 * These are the portable, obviously-correct versions: backends may use faster kernels but
 * are tested against these. Half and bfloat16 conversions round to nearest, ties to even,
 * and handle subnormals, infinities and NaN (NaN stays NaN, quiet).
 *
 * Block layouts (ggml's, little-endian, packed, no padding):
 *   Q8_0 (32 elems, 34 bytes): f16 d; int8 qs[32];               x = d * qs[i]
 *   Q4_0 (32 elems, 18 bytes): f16 d; u8 qs[16];                 x[i] = d * ((qs[i] & 15) - 8),
 *                                                                x[i+16] = d * ((qs[i] >> 4) - 8)
 *   Q4_K (256 elems, 144 bytes): f16 d; f16 dmin; u8 scales[12]; u8 qs[128]
 *        8 sub-blocks of 32 with 6-bit scale sc and min m packed in scales[12];
 *        x = d * sc * q - dmin * m, q 4-bit; each 32 bytes of qs hold two sub-blocks
 *        (low nibbles the first 32 elements, high nibbles the next 32)
 *   Q6_K (256 elems, 210 bytes): u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d
 *        16 sub-blocks of 16; x = d * scales[s] * (q - 32), q 6-bit from ql (low 4) + qh (2)
 *
 * Thread-safety: all functions are pure and reentrant.
 */
#ifndef KF_QUANT_H
#define KF_QUANT_H

#include "kf_err.h"
#include "kf_gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* IEEE binary16 -> binary32 (exact). */
static inline float
kf_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or NaN keeping its payload */
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign; /* signed zero */
        } else {
            /* Subnormal: normalise so the leading 1 sits at bit 10. */
            uint32_t e = 113;
            while (!(mant & 0x400)) {
                mant <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* bfloat16 -> binary32 (exact: bf16 is the top half of a float). */
static inline float
kf_bf16_to_fp32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* binary32 -> binary16, round to nearest even; overflow gives inf, NaN stays (quiet) NaN. */
uint16_t kf_fp32_to_fp16(float f);
/* binary32 -> bfloat16, round to nearest even; NaN stays (quiet) NaN. */
uint16_t kf_fp32_to_bf16(float f);

/* Bytes needed for n elements of `type`; 0 when n is not a multiple of the block size or
 * the type is unknown. */
size_t kf_quant_row_size(kf_tensor_type_t type, int64_t n);

/* Dequantizes n elements (a multiple of the type's block size) from src into dst.
 * KF_ERR_INVALID_ARG for a bad n, KF_ERR_UNSUPPORTED for an unknown type. */
kf_err_t kf_dequant_row(kf_tensor_type_t type, const void *src, float *dst, int64_t n);

/* Quantizes n floats into `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K). The quantizers are
 * simple round-to-nearest reference versions (no importance weighting): good for test data
 * and model-gen, not tuned for quality. dst must hold kf_quant_row_size(type, n) bytes. */
kf_err_t kf_quant_row(kf_tensor_type_t type, const float *src, void *dst, int64_t n);

#endif /* KF_QUANT_H */
