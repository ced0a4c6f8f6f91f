/*
 * cuda_kernels.h: C launchers of the CUDA backend's kernels (cuda_kernels.cu), internal to
 * inference/backends/cuda. The host code (cuda_backend.c) is plain C and only sees these.
 *
 * Every launcher enqueues work on `stream` and returns the launch's cudaError_t as an int
 * (0 = cudaSuccess); nothing here synchronizes. `wt` says the element type of weight matrices
 * and of the activations fed to cuBLAS: KF_CU_F16 or KF_CU_BF16. Activation rows kept in F32
 * (the residual stream, GEMM outputs) are row-major [tokens][width].
 */
#ifndef KF_CUDA_KERNELS_H
#define KF_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { KF_CU_F16 = 0, KF_CU_BF16 = 1 };

/* One query tile of the attention kernel: n consecutive batch tokens of one sequence starting
 * at batch index tok0; max_pos is the largest position among them (the keys to read). */
typedef struct kf_cu_tile {
    int32_t tok0, n, max_pos, pad;
} kf_cu_tile_t;

/* Device-side sampling parameters of one logits row (see kf_cuda.h kf_cuda_sample_t). */
typedef struct kf_cu_sp {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
    float u;
} kf_cu_sp_t;

/* Largest candidate set of the device sampler (top-k cap; see kf_cuda.h). */
#define KF_CU_SAMPLE_CAP 1024

/* Paged KV cache geometry (the CPU backend's layout): block b holds, for each layer l, K rows
 * at b*block_elems + (2l)*bt*kv_dim and V rows at (2l+1)*bt*kv_dim; row i = position
 * blk_idx*bt + i. Sequence s's block table starts at blocktab + seqoff[token]. */
typedef struct kf_cu_kv {
    void *cache;
    int f16; /* 1: halves, 0: floats */
    size_t block_elems;
    int bt, kv_dim, layer;
    const int32_t *blocktab;
    const int32_t *seqoff; /* per batch token */
} kf_cu_kv_t;

/* Weight conversion at load: n elements into dst of type wt. */
int kf_cu_convert_f32(const float *src, void *dst, int wt, size_t n, void *stream);
int kf_cu_convert_f16(const uint16_t *src, void *dst, int wt, size_t n, void *stream);
int kf_cu_convert_bf16(const uint16_t *src, void *dst, int wt, size_t n, void *stream);
/* Q8_0 blocks (34 bytes each: f16 d, int8 qs[32]) -> n_blocks * 32 elements. */
int kf_cu_dequant_q8_0(const void *src, void *dst, int wt, size_t n_blocks, void *stream);

/* x[t] = emb[tok[t]] widened to F32, for n_tok tokens of width E. */
int
kf_cu_embed(const int32_t *tok, const void *emb, int wt, int E, float *x, int n_tok, void *stream);

/* out[r] = x[rows ? rows[r] : r] * rsqrt(mean(x^2) + eps) * w, written as wt. */
int kf_cu_rmsnorm(const float *x,
                  const int32_t *rows,
                  const float *w,
                  float eps,
                  int E,
                  void *out,
                  int wt,
                  int n_rows,
                  void *stream);

/* On qkv rows [T][Q + 2K] (Q = n_head*hd, K = n_kv*hd): adds the bias (may be NULL), rotates
 * q and k (first n_rot dims of each head, angle pos * inv_freq[i] in double), then stores k and
 * v of each token into the cache at its position. */
int kf_cu_qkv_post(float *qkv,
                   const float *bias,
                   const int32_t *pos,
                   const float *inv_freq,
                   int n_head,
                   int n_kv,
                   int hd,
                   int n_rot,
                   int neox,
                   const kf_cu_kv_t *kv,
                   int n_tok,
                   void *stream);

/* Causal attention of every tile's query heads over its sequence's cached keys; reads q from
 * qkv rows, writes att [T][n_head*hd] as wt. hd <= 256, n_head / n_kv <= 32, tile n * group
 * <= 32. n_split > 1 splits each tile's keys over that many blocks (flash-decoding, for few
 * tiles with long contexts) and merges them in a second kernel; `part` then needs
 * n_tiles * n_kv * n_split * 32 * (hd + 2) floats (unused when n_split == 1). */
int kf_cu_attention(const float *qkv,
                    const int32_t *pos,
                    const kf_cu_tile_t *tiles,
                    int n_tiles,
                    int n_head,
                    int n_kv,
                    int hd,
                    const kf_cu_kv_t *kv,
                    void *att,
                    int wt,
                    int n_split,
                    float *part,
                    void *stream);
/* Raises the kernels' dynamic shared-memory limits (call once per device). */
int kf_cu_attention_setup(void);

/* Y[t][o] = W[o] . X[t] + beta * Y[t][o] for n_tok in [1, 8] (W [n_out][n_in], X [n_tok][n_in],
 * both wt; n_in % 8 == 0; Y rows of stride ldy). The decode-step path: one pass over W. */
int kf_cu_gemv(const void *W,
               int wt,
               int n_in,
               int n_out,
               const void *X,
               int n_tok,
               float *Y,
               int ldy,
               float beta,
               void *stream);

/* h[t][i] = silu(gu[t][i]) * gu[t][F + i] as wt, for n_tok rows. */
int kf_cu_swiglu(const float *gu, void *h, int wt, int F, int n_tok, void *stream);

/* One token per logits row (rows of n_vocab floats): greedy when sp[r].temperature <= 0, else
 * top-k (cap KF_CU_SAMPLE_CAP) / top-p / min-p / temperature with draw sp[r].u. */
int kf_cu_sample(
    const float *logits, int n_vocab, const kf_cu_sp_t *sp, int32_t *out, int n_rows, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* KF_CUDA_KERNELS_H */
