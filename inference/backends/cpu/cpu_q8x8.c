/*
 * cpu_q8x8.c: the Q8_0x8 layout of Q8_0 matrices and its matmul kernels (see cpu_kernels.h).
 *
 * Why a layout of our own: with GGUF's row-major Q8_0 blocks, every (row, block, token) needs
 * its own 32-byte integer dot product whose 8 partial sums must be converted and scaled
 * separately, and a horizontal sum per output; on AVX2 that is ~7 instructions per 32
 * multiply-adds and the kernel is instruction-bound at about half the FMA peak. Interleaving
 * eight rows four bytes at a time turns the block into eight 32-byte chunks that each meet one
 * broadcast 4-byte word of the activation block: lane r of the running integer sum is row r's
 * partial dot product, so after the eight chunks the vector holds the eight rows' exact block
 * sums, converted, scaled and accumulated with three vector instructions for all eight rows.
 *
 * Weights are stored offset to unsigned (q ^ 0x80 == q + 128) because vpdpbusd multiplies
 * unsigned by signed bytes: sum((q + 128) * x) = sum(q * x) + 128 * sum(x), and the activation
 * block carries nsum128 = -128 * sum(x) as the starting value of the integer sum, which makes
 * it exact. The AVX2 path (no VNNI) undoes the offset once per chunk and uses the sign trick
 * with maddubs instead; both give the same integers, hence the same floats.
 *
 * This file is the only one of kf_engine compiled with AVX512-VNNI enabled (when the build
 * machine has it; inference/CMakeLists.txt): gcc 12 turns plain C loops summing products of
 * two signed chars into vpdpbusd, which treats one operand as unsigned, and so computed wrong
 * sums in the scalar reference kernels. The scalar definition kf_cpu_q8x8_rows_ref therefore
 * lives in cpu_kernels.c, and nothing here is a vectorizable char-product loop.
 */
#include "cpu_kernels.h"
#include "kf_quant.h"

#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define KF_Q8X8_AVX2 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define KF_Q8X8_VNNI 1
#endif
#endif

#define KF_Q8X8_PF (8 * KF_Q8X8_GROUP_BLOCK_BYTES) /* prefetch distance, bytes */

int
kf_cpu_q8x8_vnni(void)
{
#ifdef KF_Q8X8_VNNI
    return 1;
#else
    return 0;
#endif
}

int
kf_cpu_q8x8_eligible(kf_tensor_type_t t, uint64_t ne0, uint64_t ne1)
{
    return t == KF_TT_Q8_0 && ne1 > 0 && ne0 > 0 && ne0 % 32 == 0;
}

size_t
kf_cpu_q8x8_bytes(uint64_t ne0, uint64_t ne1)
{
    return (size_t)((ne1 + 7) / 8) * (size_t)(ne0 / 32) * KF_Q8X8_GROUP_BLOCK_BYTES;
}

void
kf_cpu_q8x8_pack(const void *src, size_t row_bytes, uint64_t ne0, uint64_t ne1, void *dst)
{
    kf_cpu_q8x8_pack_groups(src, row_bytes, ne0, ne1, dst, 0, (ne1 + 7) / 8);
}

void
kf_cpu_q8x8_pack_groups(const void *src,
                        size_t row_bytes,
                        uint64_t ne0,
                        uint64_t ne1,
                        void *dst,
                        uint64_t g0,
                        uint64_t g1)
{
    size_t nb = (size_t)(ne0 / 32);
    uint8_t *o = (uint8_t *)dst + (size_t)g0 * nb * KF_Q8X8_GROUP_BLOCK_BYTES;
    for (uint64_t g = g0; g < g1; g++) {
        for (size_t b = 0; b < nb; b++, o += KF_Q8X8_GROUP_BLOCK_BYTES) {
            for (uint64_t r = 0; r < 8; r++) {
                uint8_t *q = o + KF_Q8X8_QOFF + 4 * r;
                if (8 * g + r >= ne1) {
                    /* Padding rows of the last group: scale 0, quants 0 (stored 0x80). */
                    memset(o + 2 * r, 0, 2);
                    for (int j = 0; j < 8; j++)
                        memset(q + 32 * j, 0x80, 4);
                    continue;
                }
                const uint8_t *blk = (const uint8_t *)src + (8 * g + r) * row_bytes + b * 34;
                memcpy(o + 2 * r, blk, 2);
                for (int j = 0; j < 8; j++) {
                    uint32_t v;
                    memcpy(&v, blk + 2 + 4 * j, 4);
                    v ^= 0x80808080u;
                    memcpy(q + 32 * j, &v, 4);
                }
            }
        }
    }
}

int
kf_cpu_q8x8_requant_eligible(kf_tensor_type_t t, uint64_t ne0, uint64_t ne1)
{
    return (t == KF_TT_Q4_0 || t == KF_TT_Q4_K || t == KF_TT_Q6_K) && ne1 > 0 && ne0 > 0 &&
           ne0 % 32 == 0;
}

kf_err_t
kf_cpu_q8x8_requant_groups(kf_tensor_type_t t,
                           const void *src,
                           size_t row_bytes,
                           uint64_t ne0,
                           uint64_t ne1,
                           void *dst,
                           uint64_t g0,
                           uint64_t g1)
{
    size_t q8_rb = kf_quant_row_size(KF_TT_Q8_0, (int64_t)ne0);
    size_t group_bytes = (size_t)(ne0 / 32) * KF_Q8X8_GROUP_BLOCK_BYTES;
    float *f = malloc(sizeof(float) * (size_t)ne0);
    uint8_t *q8 = malloc(q8_rb * 8);
    kf_err_t err = f && q8 ? KF_OK : KF_ERR_NOMEM;
    for (uint64_t g = g0; g < g1 && !err; g++) {
        uint64_t nr = ne1 - 8 * g < 8 ? ne1 - 8 * g : 8;
        for (uint64_t r = 0; r < nr && !err; r++) {
            kf_cpu_dequant_row(t, (const uint8_t *)src + (8 * g + r) * row_bytes, f, (size_t)ne0);
            err = kf_quant_row(KF_TT_Q8_0, f, q8 + r * q8_rb, (int64_t)ne0);
        }
        /* The group as a matrix of its own nr rows: its group 0, padded like a last group. */
        if (!err)
            kf_cpu_q8x8_pack_groups(q8, q8_rb, ne0, nr, (uint8_t *)dst + g * group_bytes, 0, 1);
    }
    free(f);
    free(q8);
    return err;
}

void
kf_cpu_q8x8_dequant_row(const void *packed, uint64_t ne0, uint64_t row, float *dst)
{
    size_t nb = (size_t)(ne0 / 32);
    const uint8_t *p = (const uint8_t *)packed + (size_t)(row / 8) * nb * KF_Q8X8_GROUP_BLOCK_BYTES;
    unsigned r = (unsigned)(row % 8);
    for (size_t b = 0; b < nb; b++, p += KF_Q8X8_GROUP_BLOCK_BYTES) {
        uint16_t h;
        memcpy(&h, p + 2 * r, 2);
        float d = kf_cpu_f16_to_f32(h);
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 4; i++)
                dst[b * 32 + 4 * (size_t)j + (size_t)i] =
                    d * (float)(int8_t)(p[KF_Q8X8_QOFF + 32 * j + 4 * r + (unsigned)i] ^ 0x80u);
    }
}

#ifdef KF_Q8X8_AVX2

static inline __m256i
kf_bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/*
 * NT tokens against one group, all blocks. The eight 32-byte chunks of a block are loaded once
 * and meet every token; each token keeps one 8-lane float accumulator (lane r = row r). The
 * integer sum of a (block, token) runs in two chains (even and odd chunks) that are added at
 * the end: integer addition is exact, so this changes no result.
 */
static inline __attribute__((always_inline)) void
kf_q8x8_kern(const uint8_t *g,
             size_t nb,
             const kf_q8a_t *x,
             size_t ldx,
             int nt,
             float *y,
             size_t ldy,
             unsigned nr)
{
    __m256 acc[8];
    for (int k = 0; k < nt; k++)
        acc[k] = _mm256_setzero_ps();
#ifndef KF_Q8X8_VNNI
    const __m256i off = _mm256_set1_epi8((char)0x80);
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    for (size_t b = 0; b < nb; b++, g += KF_Q8X8_GROUP_BLOCK_BYTES) {
        /* Several tokens consume a block slowly enough that the hardware prefetcher falls
         * behind on matrices streamed from L3 or memory (measured +10% at 8 and 128 tokens on
         * 1536 x 8960); a single token streams fast and does better without. */
        if (nt > 1)
            for (int l = 0; l < 5; l++)
                _mm_prefetch((const char *)g + KF_Q8X8_PF + 64 * l, _MM_HINT_T0);
        __m256 wd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
        __m256i w[8];
        for (int j = 0; j < 8; j++)
            w[j] = _mm256_loadu_si256((const __m256i *)(g + KF_Q8X8_QOFF + 32 * j));
#ifndef KF_Q8X8_VNNI
        __m256i aw[8];
        for (int j = 0; j < 8; j++) {
            w[j] = _mm256_xor_si256(w[j], off); /* back to signed */
            aw[j] = _mm256_sign_epi8(w[j], w[j]);
        }
#endif
        for (int k = 0; k < nt; k++) {
            const kf_q8a_t *xb = x + (size_t)k * ldx + b;
#ifdef KF_Q8X8_VNNI
            __m256i s0 = _mm256_set1_epi32(xb->nsum128), s1 = _mm256_setzero_si256();
            for (int j = 0; j < 8; j += 2) {
                s0 = _mm256_dpbusd_epi32(s0, w[j], kf_bcast4(xb->qs + 4 * j));
                s1 = _mm256_dpbusd_epi32(s1, w[j + 1], kf_bcast4(xb->qs + 4 * j + 4));
            }
#else
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            for (int j = 0; j < 8; j += 2) {
                __m256i p0 =
                    _mm256_maddubs_epi16(aw[j], _mm256_sign_epi8(kf_bcast4(xb->qs + 4 * j), w[j]));
                __m256i p1 = _mm256_maddubs_epi16(
                    aw[j + 1], _mm256_sign_epi8(kf_bcast4(xb->qs + 4 * j + 4), w[j + 1]));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones));
            }
#endif
            __m256 sc = _mm256_mul_ps(wd, _mm256_set1_ps(xb->d));
            acc[k] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), acc[k]);
        }
    }
    for (int k = 0; k < nt; k++) {
        if (nr == 8) {
            _mm256_storeu_ps(y + (size_t)k * ldy, acc[k]);
        } else { /* the last group of a matrix whose rows are not a multiple of 8 */
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[k]);
            memcpy(y + (size_t)k * ldy, tmp, sizeof(float) * nr);
        }
    }
}

#endif

void
kf_cpu_q8x8_rows(const void *group,
                 uint64_t ne0,
                 const kf_q8a_t *xq,
                 uint32_t n_tok,
                 float *y,
                 size_t ldy,
                 unsigned nr)
{
#ifdef KF_Q8X8_AVX2
    size_t nb = (size_t)(ne0 / 32);
    const uint8_t *g = group;
    uint32_t t = 0;
#ifdef KF_Q8X8_VNNI
    for (; t + 8 <= n_tok; t += 8)
        kf_q8x8_kern(g, nb, xq + (size_t)t * nb, nb, 8, y + (size_t)t * ldy, ldy, nr);
#endif
    for (; t + 4 <= n_tok; t += 4)
        kf_q8x8_kern(g, nb, xq + (size_t)t * nb, nb, 4, y + (size_t)t * ldy, ldy, nr);
    for (; t + 2 <= n_tok; t += 2)
        kf_q8x8_kern(g, nb, xq + (size_t)t * nb, nb, 2, y + (size_t)t * ldy, ldy, nr);
    for (; t < n_tok; t++)
        kf_q8x8_kern(g, nb, xq + (size_t)t * nb, nb, 1, y + (size_t)t * ldy, ldy, nr);
#else
    kf_cpu_q8x8_rows_ref(group, ne0, xq, n_tok, y, ldy, nr);
#endif
}
