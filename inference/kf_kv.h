/*
 * kf_kv: the paged KV cache allocator (vLLM-style block tables).
 *
 * The cache is a pool of fixed-size blocks; each block holds `block_tokens` consecutive positions
 * of ONE sequence, for every layer, K and V, every kv head. A sequence owns a block table: the
 * list of block ids that hold its positions [0, block_tokens), [block_tokens, 2*block_tokens),
 * ... The pool size comes from a memory budget in bytes:
 *     block_bytes = 2 (K,V) * n_layer * block_tokens * n_head_kv * head_dim * sizeof(dtype)
 *     n_blocks    = budget_bytes / block_bytes
 *
 * This module is bookkeeping only: which block belongs to which sequence. The backend owns the
 * storage (host memory for the CPU backend, device memory for CUDA) and sizes it from
 * kf_kv_n_blocks() and kf_kv_block_bytes(). Preemption copies nothing: the scheduler frees the
 * sequence (kf_kv_seq_free) and later recomputes its prefix.
 *
 * Storage dtype: KF_KV_F16 (default; half the memory, ~1e-3 relative rounding of K and V) or
 * KF_KV_F32 (exact; the numpy parity tests use it).
 *
 * Thread-safety: none. One owner (the scheduler) calls it; backends read block tables during
 * kf_backend_forward(), which must not overlap with calls that change them.
 */
#ifndef KF_KV_H
#define KF_KV_H

#include "kf_err.h"
#include "kf_model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_kv kf_kv_t;

typedef enum kf_kv_dtype {
    KF_KV_F16 = 0,
    KF_KV_F32 = 1,
} kf_kv_dtype_t;

typedef struct kf_kv_conf {
    size_t budget_bytes;   /* memory for K and V of all layers; must fit at least one block */
    uint32_t block_tokens; /* positions per block; 0 = 16 */
    uint32_t max_seqs;     /* sequence slots; 0 = 256 */
    kf_kv_dtype_t dtype;
} kf_kv_conf_t;

/* Geometry from the model's hparams (n_layer, n_head_kv, head_dim). KF_ERR_LIMIT when the
 * budget does not hold one block, KF_ERR_INVALID_ARG for bad values. */
kf_err_t kf_kv_new(const kf_model_t *model,
                   const kf_kv_conf_t *conf,
                   kf_kv_t **out,
                   char *errstr,
                   size_t errstr_size);
/* Same, from explicit dimensions (tests, tools). */
kf_err_t kf_kv_new_dims(uint32_t n_layer,
                        uint32_t n_head_kv,
                        uint32_t head_dim,
                        const kf_kv_conf_t *conf,
                        kf_kv_t **out,
                        char *errstr,
                        size_t errstr_size);
/* Accepts NULL. */
void kf_kv_destroy(kf_kv_t *kv);

/* Geometry. */
uint32_t kf_kv_n_blocks(const kf_kv_t *kv);
uint32_t kf_kv_block_tokens(const kf_kv_t *kv);
size_t kf_kv_block_bytes(const kf_kv_t *kv);
kf_kv_dtype_t kf_kv_dtype(const kf_kv_t *kv);
uint32_t kf_kv_n_layer(const kf_kv_t *kv);
uint32_t kf_kv_n_head_kv(const kf_kv_t *kv);
uint32_t kf_kv_head_dim(const kf_kv_t *kv);
uint32_t kf_kv_max_seqs(const kf_kv_t *kv);

/* Blocks not owned by any sequence. */
uint32_t kf_kv_n_free_blocks(const kf_kv_t *kv);
/* Blocks needed to hold n_tokens positions. */
uint32_t kf_kv_blocks_for(const kf_kv_t *kv, uint32_t n_tokens);

/* Takes a free sequence slot in [0, max_seqs) with an empty block table.
 * KF_ERR_LIMIT when all slots are in use. */
kf_err_t kf_kv_seq_new(kf_kv_t *kv, int32_t *out_seq);
/* Grows the block table of `seq` so that positions [0, n_tokens) have blocks. All or nothing:
 * KF_ERR_LIMIT (and no change) when the free blocks do not suffice. Never shrinks. */
kf_err_t kf_kv_seq_reserve(kf_kv_t *kv, int32_t seq, uint32_t n_tokens);
/* Returns the blocks past position n_tokens to the pool (keeps [0, n_tokens)). */
kf_err_t kf_kv_seq_truncate(kf_kv_t *kv, int32_t seq, uint32_t n_tokens);
/* Returns all blocks of `seq` and its slot. Ignores a slot that is not in use. */
void kf_kv_seq_free(kf_kv_t *kv, int32_t seq);
/* 1 when `seq` is a slot in use. */
int kf_kv_seq_valid(const kf_kv_t *kv, int32_t seq);
/* Positions that the current block table can hold (n_blocks * block_tokens); 0 if invalid. */
uint32_t kf_kv_seq_capacity(const kf_kv_t *kv, int32_t seq);
/* The block table of `seq` (borrowed; valid until the next reserve/truncate/free of seq). */
const uint32_t *kf_kv_seq_blocks(const kf_kv_t *kv, int32_t seq, uint32_t *out_n);

#endif /* KF_KV_H */
