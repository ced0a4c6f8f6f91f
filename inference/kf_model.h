/*
 * kf_model: a decoder-only transformer (llama or qwen2 architecture) loaded from a GGUF file.
 *
 * kf_model_load() reads the hyper-parameters from the `{arch}.*` metadata keys, then checks that
 * every tensor the forward pass needs is present with a supported type and the expected shape.
 * The weights are used in place inside the read-only mapping of the file (zero copy for the CPU
 * backend); a GPU backend uploads them from the same pointers. A bad file gives KF_ERR_FORMAT
 * (or the reader's error) with an errstr naming the key or tensor, never a crash.
 *
 * Conventions (the same as llama.cpp, so that converted checkpoints behave the same):
 *   - RMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
 *   - RoPE: llama rotates adjacent pairs (x[2i], x[2i+1]) ("normal" ordering); qwen2 rotates
 *     halves (x[i], x[i + n_rot/2]) ("neox" ordering). theta_i = pos * base^(-2i/n_rot)
 *     * freq_scale, divided by rope_freqs[i] when the model has a rope_freqs.weight tensor
 *     (Llama 3.1 long-context factors). Only the first n_rot dims of each head rotate.
 *   - Attention: grouped-query, query head h reads kv head h / (n_head / n_head_kv), scale
 *     1/sqrt(head_dim), causal. qwen2 adds biases to q, k and v.
 *   - FFN: down(silu(gate(x)) * up(x)).
 *   - Output: output.weight, or token_embd.weight when the file has no output.weight (tied).
 *
 * Weight tensor layout (ggml): a weight of shape ne[0] = n_in, ne[1] = n_out stores n_out rows
 * of n_in elements; y = W x is one dot product per row.
 *
 * Thread-safety: a kf_model_t is immutable after load and may be shared by any number of
 * backends and threads. It must outlive every backend created on it.
 */
#ifndef KF_MODEL_H
#define KF_MODEL_H

#include "kf_err.h"
#include "kf_gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_model kf_model_t;

typedef enum kf_arch {
    KF_ARCH_LLAMA = 0,
    KF_ARCH_QWEN2 = 1,
} kf_arch_t;

typedef enum kf_rope_order {
    KF_ROPE_NORMAL = 0, /* adjacent pairs: llama */
    KF_ROPE_NEOX = 1,   /* first half with second half: qwen2 */
} kf_rope_order_t;

typedef struct kf_hparams {
    kf_arch_t arch;
    uint32_t n_vocab;      /* rows of token_embd.weight */
    uint32_t n_embd;       /* {arch}.embedding_length */
    uint32_t n_layer;      /* {arch}.block_count */
    uint32_t n_ff;         /* {arch}.feed_forward_length */
    uint32_t n_head;       /* {arch}.attention.head_count */
    uint32_t n_head_kv;    /* {arch}.attention.head_count_kv (default n_head) */
    uint32_t head_dim;     /* n_embd / n_head */
    uint32_t n_rot;        /* {arch}.rope.dimension_count (default head_dim) */
    uint32_t n_ctx_train;  /* {arch}.context_length (0 when absent) */
    float rms_eps;         /* {arch}.attention.layer_norm_rms_epsilon */
    float rope_base;       /* {arch}.rope.freq_base (default 10000) */
    float rope_freq_scale; /* 1 / {arch}.rope.scaling.factor for "linear" scaling, else 1 */
    kf_rope_order_t rope_order;
    int tied_output; /* 1 when output.weight is absent and token_embd.weight is reused */
} kf_hparams_t;

/* One weight matrix (or vector: ne1 == 1) inside the mapped file. data == NULL: absent. */
typedef struct kf_weight {
    kf_tensor_type_t type;
    uint64_t ne0;     /* elements per row (input dimension) */
    uint64_t ne1;     /* rows (output dimension) */
    size_t row_bytes; /* bytes per row in `type` */
    const void *data; /* borrowed from the mapping */
} kf_weight_t;

typedef struct kf_layer_weights {
    kf_weight_t attn_norm;  /* F32 [n_embd] */
    kf_weight_t wq;         /* [n_embd] -> [n_head * head_dim] */
    kf_weight_t wk;         /* [n_embd] -> [n_head_kv * head_dim] */
    kf_weight_t wv;         /* [n_embd] -> [n_head_kv * head_dim] */
    kf_weight_t bq, bk, bv; /* F32 biases (qwen2); data NULL for llama */
    kf_weight_t wo;         /* [n_head * head_dim] -> [n_embd] */
    kf_weight_t ffn_norm;   /* F32 [n_embd] */
    kf_weight_t w_gate;     /* [n_embd] -> [n_ff] */
    kf_weight_t w_up;       /* [n_embd] -> [n_ff] */
    kf_weight_t w_down;     /* [n_ff] -> [n_embd] */
} kf_layer_weights_t;

typedef struct kf_model_weights {
    kf_weight_t tok_embd;       /* [n_embd] x n_vocab rows; any supported type */
    kf_weight_t output_norm;    /* F32 [n_embd] */
    kf_weight_t output;         /* [n_embd] -> [n_vocab]; equals tok_embd when tied */
    kf_weight_t rope_freqs;     /* F32 [n_rot / 2] or data NULL */
    kf_layer_weights_t *layers; /* n_layer entries */
} kf_model_weights_t;

/* Opens `path`, reads hyper-parameters and validates every tensor. On failure *out is NULL and
 * errstr names the problem (missing key, missing tensor, wrong shape, unsupported type/arch).
 * Supported tensor types for matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K; norms, biases
 * and rope_freqs must be F32. */
kf_err_t kf_model_load(const char *path, kf_model_t **out, char *errstr, size_t errstr_size);

/* Same over an already opened file. Takes ownership of `gf` on success (closed by
 * kf_model_destroy); on failure the caller keeps it. */
kf_err_t kf_model_load_gguf(kf_gguf_t *gf, kf_model_t **out, char *errstr, size_t errstr_size);

/* Accepts NULL. */
void kf_model_destroy(kf_model_t *model);

const kf_hparams_t *kf_model_hparams(const kf_model_t *model);
const kf_model_weights_t *kf_model_weights(const kf_model_t *model);
/* The underlying file, e.g. for the tokenizer's vocabulary. Borrowed; lives as long as model. */
const kf_gguf_t *kf_model_gguf(const kf_model_t *model);
/* "llama" or "qwen2". */
const char *kf_arch_name(kf_arch_t arch);

/* Fills inv_freq[0 .. n_rot/2) with the per-pair angular frequency, so that the rotation angle
 * of pair i at position p is p * inv_freq[i] (base, linear scaling and rope_freqs applied).
 * Shared by the backends so they agree on RoPE exactly. */
void kf_model_rope_inv_freq(const kf_model_t *model, float *inv_freq);

#endif /* KF_MODEL_H */
