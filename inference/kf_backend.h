/*
 * kf_backend: runs the forward pass of a kf_model_t over a batch of tokens (CPU now, CUDA later).
 *
 * A backend is chosen by name ("cpu", "cuda") and bound to one model and one KV cache
 * allocator. Each kf_backend_forward() call takes a flat batch of tokens that may mix any number
 * of sequences: prefill chunks of new sequences and single decode tokens of running ones
 * (continuous batching). Every token says its sequence (a kf_kv slot), its position in that
 * sequence, and whether logits are wanted for it.
 *
 * Semantics of one forward call:
 *   1. K and V of every batch token are written into the cache of its sequence at its position
 *      (through the block table of kf_kv; the scheduler must have reserved blocks covering the
 *      position beforehand with kf_kv_seq_reserve).
 *   2. A token at position p of sequence s attends causally to positions 0..p of s: the cached
 *      ones from earlier calls and the ones written in this call. Earlier positions must have
 *      been computed by some earlier (or this) call; the backend does not check that.
 *   3. For every token with `logits` set, in batch order, one row of n_vocab floats is written
 *      to out->data (row-major [n_rows][n_vocab]).
 * The batch's weights are read once per call for all its tokens, which is what makes batched
 * decoding cheaper per token than one sequence at a time.
 *
 * Thread-safety: one kf_backend_t is used by one thread at a time; several backends may share a
 * model. The CPU backend runs a pool of worker threads inside each forward call.
 */
#ifndef KF_BACKEND_H
#define KF_BACKEND_H

#include "kf_err.h"
#include "kf_kv.h"
#include "kf_model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_backend kf_backend_t;

typedef struct kf_backend_conf {
    int n_threads;      /* CPU worker threads including the caller; 0 = online cores */
    int device;         /* GPU ordinal for "cuda"; ignored by "cpu" */
    uint32_t max_batch; /* most tokens per forward call; 0 = 512 */
    int requant_q8;     /* cpu: also convert Q4_0/Q4_K/Q6_K matrices to Q8_0x8 */
} kf_backend_conf_t;

/* One token of a batch. */
typedef struct kf_batch_tok {
    int32_t token;  /* vocabulary id, [0, n_vocab) */
    int32_t pos;    /* position in its sequence, [0, kf_kv_seq_capacity(seq)) */
    int32_t seq;    /* kf_kv sequence slot (from kf_kv_seq_new) */
    int32_t logits; /* non-zero: produce a logits row for this token */
} kf_batch_tok_t;

typedef struct kf_batch {
    const kf_batch_tok_t *toks;
    uint32_t n_tokens; /* >= 1; at most kf_backend_max_batch() */
} kf_batch_t;

/* Output buffer, owned by the caller. Before the call set data to room for cap_rows rows of
 * n_vocab floats (cap_rows >= number of tokens with logits set). The call sets n_rows and
 * n_vocab. */
typedef struct kf_logits {
    float *data;
    uint32_t cap_rows;
    uint32_t n_rows;
    uint32_t n_vocab;
} kf_logits_t;

/* Creates backend `name` for `model` and `kv` (both borrowed; they must outlive the backend).
 * `conf` may be NULL for defaults. Allocates the KV storage for all kf_kv_n_blocks(kv) blocks.
 * KF_ERR_NOT_FOUND for an unknown name; KF_ERR_UNSUPPORTED for "cuda" in a build without CUDA
 * or without a usable device; KF_ERR_NOMEM when the KV storage cannot be allocated. */
kf_err_t kf_backend_new(const char *name,
                        const kf_model_t *model,
                        kf_kv_t *kv,
                        const kf_backend_conf_t *conf,
                        kf_backend_t **out,
                        char *errstr,
                        size_t errstr_size);
/* Accepts NULL. */
void kf_backend_destroy(kf_backend_t *be);

/* Runs one forward pass (see the semantics above). Validates the batch first: token ids, seq
 * slots, positions within the reserved capacity, out->cap_rows; KF_ERR_INVALID_ARG naming the
 * offending token otherwise (nothing is written). */
kf_err_t kf_backend_forward(
    kf_backend_t *be, const kf_batch_t *batch, kf_logits_t *out, char *errstr, size_t errstr_size);

const char *kf_backend_name(const kf_backend_t *be);
/* Largest n_tokens one forward call accepts (scratch buffers are sized for it). */
uint32_t kf_backend_max_batch(const kf_backend_t *be);
/* Worker threads used (CPU), 1 for GPU backends. */
int kf_backend_n_threads(const kf_backend_t *be);

/* 1 when this build has backend `name` ("cpu" always; "cuda" only with KF_CUDA). */
int kf_backend_available(const char *name);

#endif /* KF_BACKEND_H */
