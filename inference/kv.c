/*
 * kv.c: the paged KV cache allocator (see kf_kv.h).
 *
 * Free blocks sit on a LIFO stack, so allocation and release are O(1) per block and a freshly
 * released (cache-warm) block is reused first. Each sequence slot owns a growable array of block
 * ids. Nothing here touches K/V memory: the backend owns it.
 */
#include "kf_kv.h"

#include <stdlib.h>
#include <string.h>

typedef struct kf_kv_seq {
    int in_use;
    uint32_t n_blocks;
    uint32_t cap;
    uint32_t *blocks;
} kf_kv_seq_t;

struct kf_kv {
    uint32_t n_layer, n_head_kv, head_dim;
    uint32_t block_tokens;
    uint32_t n_blocks;
    uint32_t max_seqs;
    size_t block_bytes;
    kf_kv_dtype_t dtype;
    uint32_t *free_stack; /* free block ids; top at n_free - 1 */
    uint32_t n_free;
    kf_kv_seq_t *seqs;
};

kf_err_t
kf_kv_new_dims(uint32_t n_layer,
               uint32_t n_head_kv,
               uint32_t head_dim,
               const kf_kv_conf_t *conf,
               kf_kv_t **out,
               char *errstr,
               size_t errstr_size)
{
    KF_ASSERT(out);
    *out = NULL;
    if (!conf || !n_layer || !n_head_kv || !head_dim)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "kv: zero dimension or missing conf");
    if (conf->dtype != KF_KV_F16 && conf->dtype != KF_KV_F32)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kv: unknown dtype %d",
                          (int)conf->dtype);
    uint32_t bt = conf->block_tokens ? conf->block_tokens : 16;
    uint32_t ms = conf->max_seqs ? conf->max_seqs : 256;
    if (bt > 4096 || ms > (1u << 20))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "kv: block_tokens %u or max_seqs %u too large", bt, ms);
    size_t esz = conf->dtype == KF_KV_F16 ? 2 : 4;
    /* 2 = K and V. Computed in 64 bits: the product cannot overflow with the caps above and
     * realistic head sizes, but check anyway since the dims come from a model file. */
    unsigned long long bb = 2ull * n_layer * bt * n_head_kv * head_dim * esz;
    if (bb == 0 || bb > (1ull << 40))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kv: block size %llu bytes", bb);
    unsigned long long nb = conf->budget_bytes / bb;
    if (nb == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                          "kv: budget of %zu bytes does not hold one block of %llu bytes",
                          conf->budget_bytes, bb);
    if (nb > 0x7fffffffull)
        nb = 0x7fffffffull;

    kf_kv_t *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kv: out of memory");
    kv->n_layer = n_layer;
    kv->n_head_kv = n_head_kv;
    kv->head_dim = head_dim;
    kv->block_tokens = bt;
    kv->n_blocks = (uint32_t)nb;
    kv->max_seqs = ms;
    kv->block_bytes = (size_t)bb;
    kv->dtype = conf->dtype;
    kv->free_stack = malloc(sizeof(uint32_t) * kv->n_blocks);
    kv->seqs = calloc(ms, sizeof(kf_kv_seq_t));
    if (!kv->free_stack || !kv->seqs) {
        kf_kv_destroy(kv);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kv: out of memory");
    }
    /* Push in reverse so that block 0 is handed out first: easier to read in debugging. */
    for (uint32_t i = 0; i < kv->n_blocks; i++)
        kv->free_stack[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    *out = kv;
    return KF_OK;
}

kf_err_t
kf_kv_new(const kf_model_t *model,
          const kf_kv_conf_t *conf,
          kf_kv_t **out,
          char *errstr,
          size_t errstr_size)
{
    KF_ASSERT(model && out);
    const kf_hparams_t *hp = kf_model_hparams(model);
    return kf_kv_new_dims(hp->n_layer, hp->n_head_kv, hp->head_dim, conf, out, errstr, errstr_size);
}

void
kf_kv_destroy(kf_kv_t *kv)
{
    if (!kv)
        return;
    if (kv->seqs)
        for (uint32_t i = 0; i < kv->max_seqs; i++)
            free(kv->seqs[i].blocks);
    free(kv->seqs);
    free(kv->free_stack);
    free(kv);
}

uint32_t
kf_kv_n_blocks(const kf_kv_t *kv)
{
    return kv->n_blocks;
}

uint32_t
kf_kv_block_tokens(const kf_kv_t *kv)
{
    return kv->block_tokens;
}

size_t
kf_kv_block_bytes(const kf_kv_t *kv)
{
    return kv->block_bytes;
}

kf_kv_dtype_t
kf_kv_dtype(const kf_kv_t *kv)
{
    return kv->dtype;
}

uint32_t
kf_kv_n_layer(const kf_kv_t *kv)
{
    return kv->n_layer;
}

uint32_t
kf_kv_n_head_kv(const kf_kv_t *kv)
{
    return kv->n_head_kv;
}

uint32_t
kf_kv_head_dim(const kf_kv_t *kv)
{
    return kv->head_dim;
}

uint32_t
kf_kv_max_seqs(const kf_kv_t *kv)
{
    return kv->max_seqs;
}

uint32_t
kf_kv_n_free_blocks(const kf_kv_t *kv)
{
    return kv->n_free;
}

uint32_t
kf_kv_blocks_for(const kf_kv_t *kv, uint32_t n_tokens)
{
    return (uint32_t)(((uint64_t)n_tokens + kv->block_tokens - 1) / kv->block_tokens);
}

int
kf_kv_seq_valid(const kf_kv_t *kv, int32_t seq)
{
    return kv && seq >= 0 && (uint32_t)seq < kv->max_seqs && kv->seqs[seq].in_use;
}

kf_err_t
kf_kv_seq_new(kf_kv_t *kv, int32_t *out_seq)
{
    KF_ASSERT(kv && out_seq);
    /* Linear scan: max_seqs is small (hundreds) and this runs once per request. */
    for (uint32_t i = 0; i < kv->max_seqs; i++) {
        if (!kv->seqs[i].in_use) {
            kv->seqs[i].in_use = 1;
            kv->seqs[i].n_blocks = 0;
            *out_seq = (int32_t)i;
            return KF_OK;
        }
    }
    *out_seq = -1;
    return KF_ERR_LIMIT;
}

kf_err_t
kf_kv_seq_reserve(kf_kv_t *kv, int32_t seq, uint32_t n_tokens)
{
    if (!kf_kv_seq_valid(kv, seq))
        return KF_ERR_INVALID_ARG;
    kf_kv_seq_t *s = &kv->seqs[seq];
    uint32_t need = kf_kv_blocks_for(kv, n_tokens);
    if (need <= s->n_blocks)
        return KF_OK;
    uint32_t add = need - s->n_blocks;
    /* All or nothing, so a failed reserve never leaves a half-grown table behind. */
    if (add > kv->n_free)
        return KF_ERR_LIMIT;
    if (need > s->cap) {
        uint32_t cap = s->cap ? s->cap : 4;
        while (cap < need)
            cap *= 2;
        uint32_t *nbl = realloc(s->blocks, sizeof(uint32_t) * cap);
        if (!nbl)
            return KF_ERR_NOMEM;
        s->blocks = nbl;
        s->cap = cap;
    }
    for (uint32_t i = 0; i < add; i++)
        s->blocks[s->n_blocks++] = kv->free_stack[--kv->n_free];
    return KF_OK;
}

kf_err_t
kf_kv_seq_truncate(kf_kv_t *kv, int32_t seq, uint32_t n_tokens)
{
    if (!kf_kv_seq_valid(kv, seq))
        return KF_ERR_INVALID_ARG;
    kf_kv_seq_t *s = &kv->seqs[seq];
    uint32_t keep = kf_kv_blocks_for(kv, n_tokens);
    while (s->n_blocks > keep)
        kv->free_stack[kv->n_free++] = s->blocks[--s->n_blocks];
    return KF_OK;
}

void
kf_kv_seq_free(kf_kv_t *kv, int32_t seq)
{
    if (!kf_kv_seq_valid(kv, seq))
        return;
    kf_kv_seq_truncate(kv, seq, 0);
    kv->seqs[seq].in_use = 0;
}

uint32_t
kf_kv_seq_capacity(const kf_kv_t *kv, int32_t seq)
{
    if (!kf_kv_seq_valid(kv, seq))
        return 0;
    return kv->seqs[seq].n_blocks * kv->block_tokens;
}

const uint32_t *
kf_kv_seq_blocks(const kf_kv_t *kv, int32_t seq, uint32_t *out_n)
{
    if (!kf_kv_seq_valid(kv, seq)) {
        if (out_n)
            *out_n = 0;
        return NULL;
    }
    if (out_n)
        *out_n = kv->seqs[seq].n_blocks;
    return kv->seqs[seq].blocks;
}
