/*
 * cpu_kernels.h: the CPU backend's numeric kernels (internal to inference/backends/cpu and its
 * unit tests).
 *
 * Dot products come in two builds selected at compile time: AVX2+FMA+F16C when the compiler
 * targets them (kf_engine is built with -march=native) and a portable scalar path otherwise.
 * kf_cpu_simd_name() says which one is in use. Every SIMD kernel has a scalar twin with the
 * `_ref` suffix so tests can compare them on the same machine.
 *
 * Quantized weights (Q8_0, Q4_0, Q4_K, Q6_K) are multiplied with activations quantized once per
 * token to kf_q8a_t blocks (32 int8 values, a float scale and the sums of each half), so the
 * inner loop is an int8 dot product (the ggml vec_dot_q*_q8 idea). F32/F16/BF16 weights use
 * float activations directly.
 */
#ifndef KF_CPU_KERNELS_H
#define KF_CPU_KERNELS_H

#include "kf_gguf.h"
#include "kf_model.h"

#include <stddef.h>
#include <stdint.h>

struct kf_cpu_pool;

/* Activation block: 32 values x ~= d * qs[i]; s16[h] = sum of qs[16h .. 16h+16);
 * nsum128 = -128 * (sum of all 32 qs), the offset correction of the Q8_0x8 kernels. */
typedef struct kf_q8a {
    float d;
    int16_t s16[2];
    int32_t nsum128;
    int8_t qs[32];
} kf_q8a_t;

#define KF_Q8A_BLOCK 32

const char *kf_cpu_simd_name(void);

/* Half and bfloat16 conversions (round to nearest even). */
float kf_cpu_f16_to_f32(uint16_t h);
uint16_t kf_cpu_f32_to_f16(float f);
float kf_cpu_f16_to_f32_ref(uint16_t h);
uint16_t kf_cpu_f32_to_f16_ref(float f);
float kf_cpu_bf16_to_f32(uint16_t h);
void kf_cpu_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void kf_cpu_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);

/* Quantizes n floats (n % 32 == 0) to n / 32 activation blocks: d = max|x| / 127,
 * qs = round-half-even(x / d). Scalar on purpose: O(n) per token against O(n * rows) for the
 * matmul that consumes it. */
void kf_cpu_quantize_q8a(const float *x, kf_q8a_t *y, size_t n);

/* Widens row `src` of n elements of type `t` to floats. Scalar, any supported type. */
void kf_cpu_dequant_row(kf_tensor_type_t t, const void *src, float *dst, size_t n);

/* Float dot products: w row of n elements, x floats. */
float kf_cpu_dot_f32(const float *w, const float *x, size_t n);
float kf_cpu_dot_f16(const uint16_t *w, const float *x, size_t n);
float kf_cpu_dot_bf16(const uint16_t *w, const float *x, size_t n);
float kf_cpu_dot_f32_ref(const float *w, const float *x, size_t n);
float kf_cpu_dot_f16_ref(const uint16_t *w, const float *x, size_t n);
float kf_cpu_dot_bf16_ref(const uint16_t *w, const float *x, size_t n);

/* Quantized dot products: w is a row of n elements in the GGUF block format, x the same row's
 * activation blocks (n / 32 of them). n is a multiple of the weight type's block. */
float kf_cpu_dot_q8_0(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q4_0(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q4_k(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q6_k(const void *w, const kf_q8a_t *x, size_t n);
/* Four activation rows at once against one weight row, bit-identical to four calls of the
 * single-token function (the weight block is loaded and unpacked once for all four): the
 * batched matmul's inner kernels. */
void kf_cpu_dot_q8_0_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4]);
void kf_cpu_dot_q4_0_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4]);
void kf_cpu_dot_q4_k_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4]);
void kf_cpu_dot_q6_k_x4(const void *w, const kf_q8a_t *const x[4], size_t n, float out[4]);
float kf_cpu_dot_q8_0_ref(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q4_0_ref(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q4_k_ref(const void *w, const kf_q8a_t *x, size_t n);
float kf_cpu_dot_q6_k_ref(const void *w, const kf_q8a_t *x, size_t n);

/*
 * Q8_0x8: the CPU backend's own layout of a Q8_0 matrix (cpu_q8x8.c; a last group of fewer
 * than 8 rows is padded with zero rows). Eight rows form a group; per 32-column block a group
 * holds the eight f16
 * scales (16 bytes) and then 256 bytes of quants in which 32-byte chunk j carries bytes
 * 4j..4j+3 of rows 0..7 in turn, each stored as q ^ 0x80 (q + 128, unsigned). Same size as
 * the GGUF layout (8 x 34 bytes per block). One 32-byte load then feeds an 8-row partial dot
 * product with one broadcast activation word (AVX-512 VNNI vpdpbusd, or maddubs on AVX2),
 * the 8 lanes of the result are the 8 rows' block sums (no horizontal add), and the scales
 * are applied to 8 rows at once. Every (row, token) output is
 *   acc = 0; for each block b in order: acc = fmaf(d_w[b] * d_x[b], (float)isum[b], acc)
 * with the exact integer block sum isum, in the SIMD and in the scalar build alike, whatever
 * the number of tokens: batched results are bit-identical to single ones.
 */
#define KF_TT_CPU_Q8_0X8          ((kf_tensor_type_t)0x7008)
#define KF_Q8X8_GROUP_BLOCK_BYTES 272
#define KF_Q8X8_QOFF              16 /* offset of the quants in a group block, after the 8 scales */

/* 1 when the Q8_0x8 kernel was built with AVX512-VNNI (else AVX2 maddubs or scalar). */
int kf_cpu_q8x8_vnni(void);
/* 1 when a matrix of type t with ne0 columns can be repacked (Q8_0, any row count). */
int kf_cpu_q8x8_eligible(kf_tensor_type_t t, uint64_t ne0, uint64_t ne1);
/* Bytes of the repacked matrix: ceil(ne1 / 8) groups of ne0 / 32 blocks of 272 bytes (the
 * GGUF size when ne1 is a multiple of 8; the last group is padded with zero rows). */
size_t kf_cpu_q8x8_bytes(uint64_t ne0, uint64_t ne1);
/* Repacks rows [0, ne1) of a GGUF Q8_0 matrix (row stride row_bytes) into dst. */
void kf_cpu_q8x8_pack(const void *src, size_t row_bytes, uint64_t ne0, uint64_t ne1, void *dst);
/* The same for groups [g0, g1) only (8 rows each): parallel packing. */
void kf_cpu_q8x8_pack_groups(const void *src,
                             size_t row_bytes,
                             uint64_t ne0,
                             uint64_t ne1,
                             void *dst,
                             uint64_t g0,
                             uint64_t g1);
/* 1 when a matrix of type t can be converted to Q8_0x8 (Q4_0, Q4_K, Q6_K; opt-in, see
 * kf_backend_conf_t.requant_q8). */
int kf_cpu_q8x8_requant_eligible(kf_tensor_type_t t, uint64_t ne0, uint64_t ne1);
/* Groups [g0, g1) of such a matrix: each row widened to floats, quantized to Q8_0 (per 32
 * values, scale max|x| / 127, round to nearest) and packed. KF_ERR_NOMEM only. */
kf_err_t kf_cpu_q8x8_requant_groups(kf_tensor_type_t t,
                                    const void *src,
                                    size_t row_bytes,
                                    uint64_t ne0,
                                    uint64_t ne1,
                                    void *dst,
                                    uint64_t g0,
                                    uint64_t g1);
/* Widens row `row` of a repacked matrix to ne0 floats (the same values as the Q8_0 row). */
void kf_cpu_q8x8_dequant_row(const void *packed, uint64_t ne0, uint64_t row, float *dst);
/* Y[t][i] for the first nr (1..8) rows i of group `group` (pointer to its first block) and
 * n_tok tokens whose activation rows start at xq + t * (ne0 / 32); Y rows have stride ldy.
 * Group g of a matrix starts at byte g * (ne0 / 32) * KF_Q8X8_GROUP_BLOCK_BYTES. */
void kf_cpu_q8x8_rows(const void *group,
                      uint64_t ne0,
                      const kf_q8a_t *xq,
                      uint32_t n_tok,
                      float *y,
                      size_t ldy,
                      unsigned nr);
/* The scalar definition of the same outputs (tests compare the two bit for bit). */
void kf_cpu_q8x8_rows_ref(const void *group,
                          uint64_t ne0,
                          const kf_q8a_t *xq,
                          uint32_t n_tok,
                          float *y,
                          size_t ldy,
                          unsigned nr);

/* 1 when weights of type t multiply against kf_q8a_t activations (else against floats). */
int kf_cpu_type_uses_q8a(kf_tensor_type_t t);

/* Y[t][o] = sum_i W[o][i] * X[t][i] for t < n_tok, o < W->ne1, run on `pool` (NULL: caller's
 * thread only). X is n_tok rows of W->ne0 floats; Xq (may be NULL when the type does not use
 * it) the same rows already quantized with kf_cpu_quantize_q8a (n_tok * ne0/32 blocks).
 * Y rows have stride ldy floats. Each weight row is read once for all tokens.
 * Every output is computed with the same arithmetic whatever n_tok, the thread count or the
 * position of its token in the batch: batched results are bit-identical to single ones. */
void kf_cpu_matmul(struct kf_cpu_pool *pool,
                   const kf_weight_t *W,
                   const float *X,
                   const kf_q8a_t *Xq,
                   uint32_t n_tok,
                   float *Y,
                   size_t ldy);

/* One product of kf_cpu_matmul_multi: the arguments of kf_cpu_matmul. */
typedef struct kf_cpu_mm {
    const kf_weight_t *W;
    const float *X;
    const kf_q8a_t *Xq;
    uint32_t n_tok;
    float *Y;
    size_t ldy;
} kf_cpu_mm_t;

#define KF_CPU_MM_MAX 4

/* Up to KF_CPU_MM_MAX products in one pool run (q, k and v; gate and up): one dispatch and
 * one wait instead of one each, same results as kf_cpu_matmul on each. */
void kf_cpu_matmul_multi(struct kf_cpu_pool *pool, const kf_cpu_mm_t *mm, uint32_t n);

/* y = x / sqrt(mean(x^2) + eps) * w (in place allowed). */
void kf_cpu_rmsnorm(const float *x, const float *w, float *y, size_t n, float eps);

/* Rotates the first n_rot dims of each of n_heads heads (head stride head_dim) of `x` at
 * position pos; inv_freq[i] as from kf_model_rope_inv_freq(). */
void kf_cpu_rope(float *x,
                 uint32_t n_heads,
                 uint32_t head_dim,
                 uint32_t n_rot,
                 int32_t pos,
                 const float *inv_freq,
                 kf_rope_order_t order);

/* In-place softmax of n floats. */
void kf_cpu_softmax(float *x, size_t n);

/* silu(g) * u, elementwise, into g. */
void kf_cpu_swiglu(float *g, const float *u, size_t n);

/*
 * Attention of one query head over one sequence's paged K/V:
 *   out[d] = sum_j softmax_j(scale * q . K_j) V_j[d],  j = 0..n_pos-1
 * K_j and V_j live in `blocks` (block table) of the cache at `cache`: block b's layer-l K rows
 * start at  cache + b*block_elems + (2*l)*bt*kv_dim, V rows at (2*l+1)*bt*kv_dim, row i of a
 * block holds position b_idx*bt + i, and this head reads the head_dim values at kv_off.
 * f16 != 0: the cache holds uint16 halves, else floats. Offsets are in elements.
 */
typedef struct kf_cpu_kv_view {
    const void *cache;
    int f16;
    size_t block_elems; /* elements per block (all layers, K and V) */
    uint32_t bt;        /* positions per block */
    uint32_t kv_dim;    /* n_head_kv * head_dim */
    uint32_t layer;
    const uint32_t *blocks;
} kf_cpu_kv_view_t;

void kf_cpu_attn_head(const kf_cpu_kv_view_t *kv,
                      const float *q,
                      uint32_t head_dim,
                      uint32_t kv_off,
                      uint32_t n_pos,
                      float scale,
                      float *out);

/* The same for n_q query heads that share the KV head at kv_off (grouped-query attention):
 * q and out hold n_q rows of head_dim. Each K/V row is read once for the group; every head's
 * result is bit-identical to kf_cpu_attn_head on it alone (cpu_attn.c). */
void kf_cpu_attn_group(const kf_cpu_kv_view_t *kv,
                       const float *q,
                       uint32_t n_q,
                       uint32_t head_dim,
                       uint32_t kv_off,
                       uint32_t n_pos,
                       float scale,
                       float *out);

/* One token of kf_cpu_attn_tokens: its n_q query heads (q), where they go (out), and the
 * positions it attends to (its position + 1). */
typedef struct kf_cpu_attn_tok {
    const float *q;
    float *out;
    uint32_t n_pos;
} kf_cpu_attn_tok_t;

/* kf_cpu_attn_group for several tokens of one sequence (same block table): each K/V tile is
 * widened once for all of them (prefill). Each token's result is bit-identical to computing
 * it alone. */
void kf_cpu_attn_tokens(const kf_cpu_kv_view_t *kv,
                        const kf_cpu_attn_tok_t *toks,
                        uint32_t n_tok,
                        uint32_t n_q,
                        uint32_t head_dim,
                        uint32_t kv_off,
                        float scale);

#endif /* KF_CPU_KERNELS_H */
