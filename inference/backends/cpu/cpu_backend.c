/*
 * cpu_backend.c: the reference backend: the llama/qwen2 forward pass on the CPU.
 *
 * One forward call processes the whole batch layer by layer: every matmul multiplies one weight
 * matrix with all batch tokens at once (kf_cpu_matmul, parallel over output rows), so a decode
 * step of B sequences reads the weights once instead of B times. Attention is parallel over
 * (token, head) pairs and reads K/V through each sequence's block table. The K/V storage is
 * allocated here for every block of the kf_kv pool:
 *   block b = [layer 0 K: bt rows of kv_dim][layer 0 V][layer 1 K] ... [layer n-1 V]
 * with elements of the cache dtype (F16 or F32).
 *
 * At init the backend takes its own view of the model's weights: Q8_0 matrices are repacked
 * into the Q8_0x8 layout (cpu_kernels.h) once, and the mapped file pages they came from are
 * released (MADV_DONTNEED; the kernel reads them back from the file should anything else touch
 * them), so resident memory stays about the size of the weights.
 */
#include "cpu_kernels.h"
#include "cpu_pool.h"
#include "kf_backend_int.h"
#include "kf_log.h"
#include "kf_quant.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef struct kf_cpu {
    kf_cpu_pool_t *pool;
    void *cache;
    size_t block_elems;
    int f16;
    uint32_t bt, kv_dim;
    float *inv_freq;
    /* Scratch sized for max_batch tokens. */
    float *x, *xn, *q, *k, *v, *att, *g, *u;
    kf_q8a_t *xq;
    /* Attention runs of the current batch: run r is tokens runs[r] .. runs[r + 1] - 1, at most
     * KF_CPU_ATTN_RUN consecutive tokens of one sequence. */
    uint32_t *runs, n_runs;
    /* The weights the forward pass reads: the model's, with repacked matrices swapped in. */
    kf_model_weights_t w;
    kf_layer_weights_t *layers;
    void **packed; /* buffers of the repacked matrices */
    size_t n_packed, packed_bytes, n_requant;
    int requant_q8; /* kf_backend_conf_t.requant_q8 */
} kf_cpu_t;

static void
kf_cpu_destroy(kf_backend_t *be)
{
    kf_cpu_t *c = be->priv;
    if (!c)
        return;
    kf_cpu_pool_destroy(c->pool);
    free(c->cache);
    free(c->inv_freq);
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->g);
    free(c->u);
    free(c->xq);
    free(c->runs);
    for (size_t i = 0; i < c->n_packed; i++)
        free(c->packed[i]);
    free(c->packed);
    free(c->layers);
    free(c);
    be->priv = NULL;
}

static void *
kf_cpu_alloc(size_t n)
{
    /* 64-byte alignment: cache lines, and whole AVX2 vectors for every row start. */
    void *p = NULL;
    size_t sz = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, sz ? sz : 64))
        return NULL;
    return p;
}

typedef struct kf_pack_task {
    const kf_weight_t *wt;
    void *dst;
    uint64_t n_groups;
    atomic_ulong next;
    atomic_int failed; /* a requantizing worker ran out of memory */
} kf_pack_task_t;

static void
kf_cpu_pack_worker(void *arg, int ith, int nth)
{
    kf_pack_task_t *pt = arg;
    (void)ith;
    (void)nth;
    for (;;) {
        uint64_t g0 = atomic_fetch_add_explicit(&pt->next, 64, memory_order_relaxed);
        if (g0 >= pt->n_groups)
            break;
        uint64_t g1 = g0 + 64 < pt->n_groups ? g0 + 64 : pt->n_groups;
        if (pt->wt->type == KF_TT_Q8_0)
            kf_cpu_q8x8_pack_groups(pt->wt->data, pt->wt->row_bytes, pt->wt->ne0, pt->wt->ne1,
                                    pt->dst, g0, g1);
        else if (kf_cpu_q8x8_requant_groups(pt->wt->type, pt->wt->data, pt->wt->row_bytes,
                                            pt->wt->ne0, pt->wt->ne1, pt->dst, g0, g1))
            atomic_store(&pt->failed, 1);
    }
}

/* Repacks *wt into the Q8_0x8 layout when eligible (else leaves it as it is), on the pool;
 * with c->requant_q8, 4- and 6-bit matrices are converted too. */
static kf_err_t
kf_cpu_repack(kf_cpu_t *c, kf_weight_t *wt, int release_src)
{
    int requant = c->requant_q8 && kf_cpu_q8x8_requant_eligible(wt->type, wt->ne0, wt->ne1);
    if (!wt->data || (!requant && !kf_cpu_q8x8_eligible(wt->type, wt->ne0, wt->ne1)))
        return KF_OK;
    size_t bytes = kf_cpu_q8x8_bytes(wt->ne0, wt->ne1);
    /* (MADV_HUGEPAGE on this buffer was tried: with the kernel's "defrag: madvise" setting
     * every fault compacted memory and packing took 3x longer.) */
    void *dst = kf_cpu_alloc(bytes);
    if (!dst)
        return KF_ERR_NOMEM;
    c->packed[c->n_packed++] = dst;
    c->packed_bytes += bytes;
    kf_pack_task_t pt = {.wt = wt, .dst = dst, .n_groups = (wt->ne1 + 7) / 8};
    atomic_init(&pt.next, 0);
    atomic_init(&pt.failed, 0);
    kf_cpu_pool_run_dyn(c->pool, kf_cpu_pack_worker, &pt);
    if (atomic_load(&pt.failed))
        return KF_ERR_NOMEM;
    c->n_requant += requant;
    if (release_src) {
        /* Only whole pages inside the tensor: its neighbours may still be in use. */
        uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t a = ((uintptr_t)wt->data + pg - 1) & ~(pg - 1);
        uintptr_t e = ((uintptr_t)wt->data + wt->row_bytes * wt->ne1) & ~(pg - 1);
        if (e > a)
            (void)madvise((void *)a, e - a, MADV_DONTNEED);
    }
    wt->type = KF_TT_CPU_Q8_0X8;
    wt->data = dst;
    /* A Q8_0 row's size: 8 of them are one group (the kernels step by it). */
    wt->row_bytes = kf_quant_row_size(KF_TT_Q8_0, (int64_t)wt->ne0);
    return KF_OK;
}

static kf_err_t
kf_cpu_prepare_weights(kf_backend_t *be, kf_cpu_t *c)
{
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    const kf_model_weights_t *mw = kf_model_weights(be->model);
    int release = kf_gguf_is_mapped(kf_model_gguf(be->model));
    c->w = *mw;
    c->layers = calloc(hp->n_layer ? hp->n_layer : 1, sizeof(*c->layers));
    c->packed = calloc((size_t)hp->n_layer * 7 + 2, sizeof(*c->packed));
    if (!c->layers || !c->packed)
        return KF_ERR_NOMEM;
    memcpy(c->layers, mw->layers, sizeof(*c->layers) * hp->n_layer);
    c->w.layers = c->layers;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kf_err_t err = kf_cpu_repack(c, &c->w.tok_embd, release);
    if (!err && mw->output.data == mw->tok_embd.data)
        c->w.output = c->w.tok_embd; /* tied: one copy serves the lookup and the logits */
    else if (!err)
        err = kf_cpu_repack(c, &c->w.output, release);
    for (uint32_t il = 0; il < hp->n_layer && !err; il++) {
        kf_layer_weights_t *L = &c->layers[il];
        kf_weight_t *m[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]) && !err; i++)
            err = kf_cpu_repack(c, m[i], release);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (!err && c->n_requant)
        kf_log(KF_LOG_INFO, "cpu",
               "repacked %zu Q8_0 matrices and requantized %zu Q4_0/Q4_K/Q6_K matrices to "
               "Q8_0x8 (%.1f MiB) in %.0f ms",
               c->n_packed - c->n_requant, c->n_requant, (double)c->packed_bytes / (1 << 20), ms);
    else if (!err && c->n_packed)
        kf_log(KF_LOG_INFO, "cpu", "repacked %zu Q8_0 matrices (%.1f MiB) to Q8_0x8 in %.0f ms",
               c->n_packed, (double)c->packed_bytes / (1 << 20), ms);
    return err;
}

static kf_err_t
kf_cpu_init(kf_backend_t *be, const kf_backend_conf_t *conf)
{
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    if (hp->head_dim > 512) {
        snprintf(be->errstr, sizeof(be->errstr), "head_dim %u above the supported 512",
                 hp->head_dim);
        return KF_ERR_UNSUPPORTED;
    }
    kf_cpu_t *c = calloc(1, sizeof(*c));
    if (!c)
        goto nomem;
    be->priv = c;
    kf_err_t err = kf_cpu_pool_new(conf->n_threads, &c->pool);
    if (err) {
        snprintf(be->errstr, sizeof(be->errstr), "cannot start %d threads: %s", conf->n_threads,
                 kf_err_str(err));
        kf_cpu_destroy(be);
        return err;
    }
    c->requant_q8 = conf->requant_q8;
    c->f16 = kf_kv_dtype(be->kv) == KF_KV_F16;
    c->bt = kf_kv_block_tokens(be->kv);
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    c->block_elems = kf_kv_block_bytes(be->kv) / (c->f16 ? 2 : 4);
    size_t cache_bytes = kf_kv_block_bytes(be->kv) * (size_t)kf_kv_n_blocks(be->kv);
    c->cache = kf_cpu_alloc(cache_bytes);
    if (!c->cache) {
        snprintf(be->errstr, sizeof(be->errstr), "cannot allocate %zu bytes of KV cache",
                 cache_bytes);
        kf_cpu_destroy(be);
        return KF_ERR_NOMEM;
    }
    /* Never-written positions are never read (causal mask), but zeroing keeps any bug that
     * reads them deterministic instead of reading garbage. */
    memset(c->cache, 0, cache_bytes);

    size_t B = be->max_batch, E = hp->n_embd, Q = (size_t)hp->n_head * hp->head_dim;
    size_t K = c->kv_dim, F = hp->n_ff;
    size_t widest = E > F ? E : F;
    widest = widest > Q ? widest : Q;
    c->inv_freq = kf_cpu_alloc(sizeof(float) * (hp->n_rot / 2 + 1));
    c->x = kf_cpu_alloc(sizeof(float) * B * E);
    c->xn = kf_cpu_alloc(sizeof(float) * B * E);
    c->q = kf_cpu_alloc(sizeof(float) * B * Q);
    c->k = kf_cpu_alloc(sizeof(float) * B * K);
    c->v = kf_cpu_alloc(sizeof(float) * B * K);
    c->att = kf_cpu_alloc(sizeof(float) * B * Q);
    c->g = kf_cpu_alloc(sizeof(float) * B * F);
    c->u = kf_cpu_alloc(sizeof(float) * B * F);
    c->xq = kf_cpu_alloc(sizeof(kf_q8a_t) * B * (widest / KF_Q8A_BLOCK + 1));
    c->runs = malloc(sizeof(uint32_t) * (B + 1));
    if (!c->inv_freq || !c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->g || !c->u ||
        !c->xq || !c->runs) {
        kf_cpu_destroy(be);
        goto nomem;
    }
    kf_model_rope_inv_freq(be->model, c->inv_freq);
    if (kf_cpu_prepare_weights(be, c)) {
        kf_cpu_destroy(be);
        snprintf(be->errstr, sizeof(be->errstr), "out of memory for the repacked weights");
        return KF_ERR_NOMEM;
    }
    return KF_OK;
nomem:
    snprintf(be->errstr, sizeof(be->errstr), "out of memory for scratch buffers");
    return KF_ERR_NOMEM;
}

/* Y[i] = W[i] X for n_tok rows, i < n, in one pool run (q, k and v share their input, as do
 * gate and up). When a W wants int8 activations, X is quantized into c->xq unless *xq_ready
 * says an earlier call already quantized this same X; quantization does not depend on the
 * weight type. */
static void
kf_cpu_mm_n(kf_cpu_t *c,
            uint32_t n,
            const kf_weight_t *const *W,
            const float *X,
            uint32_t n_tok,
            float *const *Y,
            const size_t *ldy,
            int *xq_ready)
{
    kf_cpu_mm_t mm[KF_CPU_MM_MAX];
    for (uint32_t i = 0; i < n; i++) {
        mm[i] = (kf_cpu_mm_t){.W = W[i], .X = X, .n_tok = n_tok, .Y = Y[i], .ldy = ldy[i]};
        if (kf_cpu_type_uses_q8a(W[i]->type)) {
            if (!*xq_ready) {
                size_t nb = W[i]->ne0 / KF_Q8A_BLOCK;
                for (uint32_t t = 0; t < n_tok; t++)
                    kf_cpu_quantize_q8a(X + (size_t)t * W[i]->ne0, c->xq + (size_t)t * nb,
                                        W[i]->ne0);
                *xq_ready = 1;
            }
            mm[i].Xq = c->xq;
        }
    }
    kf_cpu_matmul_multi(c->pool, mm, n);
}

static void
kf_cpu_mm(kf_cpu_t *c,
          const kf_weight_t *W,
          const float *X,
          uint32_t n_tok,
          float *Y,
          size_t ldy,
          int *xq_ready)
{
    kf_cpu_mm_n(c, 1, &W, X, n_tok, &Y, &ldy, xq_ready);
}

static void
kf_cpu_add_bias(float *y, const kf_weight_t *b, uint32_t n_tok, size_t n)
{
    if (!b->data)
        return;
    const float *bv = b->data;
    for (uint32_t t = 0; t < n_tok; t++)
        for (size_t i = 0; i < n; i++)
            y[(size_t)t * n + i] += bv[i];
}

/* Tokens of one sequence that share each widened K/V tile in attention (prefill). */
#define KF_CPU_ATTN_RUN 8

typedef struct kf_attn_task {
    atomic_ulong next; /* work queue over (run, KV head) items */
    kf_backend_t *be;
    const kf_batch_t *batch;
    uint32_t layer;
} kf_attn_task_t;

/* Splits the batch into attention runs (see kf_cpu_t.runs). */
static void
kf_cpu_attn_runs(kf_cpu_t *c, const kf_batch_t *batch)
{
    uint32_t n = 0;
    for (uint32_t t = 0; t < batch->n_tokens; t++)
        if (!n || batch->toks[t].seq != batch->toks[t - 1].seq ||
            t - c->runs[n - 1] >= KF_CPU_ATTN_RUN)
            c->runs[n++] = t;
    c->runs[n] = batch->n_tokens;
    c->n_runs = n;
}

static void
kf_cpu_attn_worker(void *arg, int ith, int nth)
{
    kf_attn_task_t *at = arg;
    kf_backend_t *be = at->be;
    kf_cpu_t *c = be->priv;
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    uint32_t n_kv = hp->n_head_kv, hd = hp->head_dim;
    uint32_t group = hp->n_head / hp->n_head_kv;
    size_t Q = (size_t)hp->n_head * hd;
    uint64_t n_items = (uint64_t)c->n_runs * n_kv;
    (void)ith;
    (void)nth;
    float scale = 1.0f / sqrtf((float)hd);
    kf_cpu_kv_view_t view = {
        .cache = c->cache,
        .f16 = c->f16,
        .block_elems = c->block_elems,
        .bt = c->bt,
        .kv_dim = c->kv_dim,
        .layer = at->layer,
    };
    /* Items have very different costs (a token at position 1000 vs 3), so threads take them
     * one at a time from a shared counter rather than fixed shares. */
    for (;;) {
        uint64_t it = atomic_fetch_add_explicit(&at->next, 1, memory_order_relaxed);
        if (it >= n_items)
            break;
        uint32_t r = (uint32_t)(it / n_kv), kvh = (uint32_t)(it % n_kv);
        uint32_t t0 = c->runs[r], nt = c->runs[r + 1] - t0;
        kf_cpu_attn_tok_t toks[KF_CPU_ATTN_RUN];
        for (uint32_t i = 0; i < nt; i++) {
            /* The query heads of one KV head are adjacent: kvh * group .. + group - 1. */
            size_t qo = (t0 + i) * Q + (size_t)kvh * group * hd;
            toks[i].q = c->q + qo;
            toks[i].out = c->att + qo;
            toks[i].n_pos = (uint32_t)at->batch->toks[t0 + i].pos + 1;
        }
        view.blocks = kf_kv_seq_blocks(be->kv, at->batch->toks[t0].seq, NULL);
        kf_cpu_attn_tokens(&view, toks, nt, group, hd, kvh * hd, scale);
    }
}

/* Writes the batch's K and V rows of `layer` into their cache slots. */
static void
kf_cpu_store_kv(kf_backend_t *be, const kf_batch_t *batch, uint32_t layer)
{
    kf_cpu_t *c = be->priv;
    for (uint32_t t = 0; t < batch->n_tokens; t++) {
        const kf_batch_tok_t *tok = &batch->toks[t];
        const uint32_t *blocks = kf_kv_seq_blocks(be->kv, tok->seq, NULL);
        size_t blk = blocks[(uint32_t)tok->pos / c->bt];
        size_t row = (size_t)((uint32_t)tok->pos % c->bt) * c->kv_dim;
        size_t ko = blk * c->block_elems + (size_t)(2 * layer) * c->bt * c->kv_dim + row;
        size_t vo = ko + (size_t)c->bt * c->kv_dim;
        const float *ks = c->k + (size_t)t * c->kv_dim, *vs = c->v + (size_t)t * c->kv_dim;
        if (c->f16) {
            uint16_t *h = c->cache;
            kf_cpu_f32_to_f16_row(ks, h + ko, c->kv_dim);
            kf_cpu_f32_to_f16_row(vs, h + vo, c->kv_dim);
        } else {
            float *f = c->cache;
            memcpy(f + ko, ks, sizeof(float) * c->kv_dim);
            memcpy(f + vo, vs, sizeof(float) * c->kv_dim);
        }
    }
}

static kf_err_t
kf_cpu_forward(kf_backend_t *be, const kf_batch_t *batch, kf_logits_t *out)
{
    kf_cpu_t *c = be->priv;
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    const kf_model_weights_t *w = &c->w;
    uint32_t T = batch->n_tokens;
    size_t E = hp->n_embd, Q = (size_t)hp->n_head * hp->head_dim, K = c->kv_dim, F = hp->n_ff;

    /* Token embeddings: one row of tok_embd per token, widened to float. */
    for (uint32_t t = 0; t < T; t++) {
        uint64_t tok = (uint64_t)batch->toks[t].token;
        if (w->tok_embd.type == KF_TT_CPU_Q8_0X8)
            kf_cpu_q8x8_dequant_row(w->tok_embd.data, E, tok, c->x + t * E);
        else
            kf_cpu_dequant_row(w->tok_embd.type,
                               (const uint8_t *)w->tok_embd.data + tok * w->tok_embd.row_bytes,
                               c->x + t * E, E);
    }

    kf_cpu_attn_runs(c, batch);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const kf_layer_weights_t *L = &w->layers[il];
        /* Attention block. */
        for (uint32_t t = 0; t < T; t++)
            kf_cpu_rmsnorm(c->x + t * E, L->attn_norm.data, c->xn + t * E, E, hp->rms_eps);
        int ready = 0;
        const kf_weight_t *qkv_w[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_y[3] = {c->q, c->k, c->v};
        size_t qkv_ld[3] = {Q, K, K};
        kf_cpu_mm_n(c, 3, qkv_w, c->xn, T, qkv_y, qkv_ld, &ready);
        kf_cpu_add_bias(c->q, &L->bq, T, Q);
        kf_cpu_add_bias(c->k, &L->bk, T, K);
        kf_cpu_add_bias(c->v, &L->bv, T, K);
        for (uint32_t t = 0; t < T; t++) {
            int32_t pos = batch->toks[t].pos;
            kf_cpu_rope(c->q + t * Q, hp->n_head, hp->head_dim, hp->n_rot, pos, c->inv_freq,
                        hp->rope_order);
            kf_cpu_rope(c->k + t * K, hp->n_head_kv, hp->head_dim, hp->n_rot, pos, c->inv_freq,
                        hp->rope_order);
        }
        kf_cpu_store_kv(be, batch, il);
        kf_attn_task_t at = {.be = be, .batch = batch, .layer = il};
        atomic_init(&at.next, 0);
        kf_cpu_pool_run_dyn(c->pool, kf_cpu_attn_worker, &at);
        /* Output projection into xn (free now), then the residual add. */
        ready = 0;
        kf_cpu_mm(c, &L->wo, c->att, T, c->xn, E, &ready);
        for (size_t i = 0; i < (size_t)T * E; i++)
            c->x[i] += c->xn[i];

        /* Feed-forward block (SwiGLU). */
        for (uint32_t t = 0; t < T; t++)
            kf_cpu_rmsnorm(c->x + t * E, L->ffn_norm.data, c->xn + t * E, E, hp->rms_eps);
        ready = 0;
        const kf_weight_t *gu_w[2] = {&L->w_gate, &L->w_up};
        float *gu_y[2] = {c->g, c->u};
        size_t gu_ld[2] = {F, F};
        kf_cpu_mm_n(c, 2, gu_w, c->xn, T, gu_y, gu_ld, &ready);
        kf_cpu_swiglu(c->g, c->u, (size_t)T * F);
        ready = 0;
        kf_cpu_mm(c, &L->w_down, c->g, T, c->xn, E, &ready);
        for (size_t i = 0; i < (size_t)T * E; i++)
            c->x[i] += c->xn[i];
    }

    /* Final norm and the vocabulary projection, only for the tokens that want logits. */
    uint32_t n_rows = 0;
    for (uint32_t t = 0; t < T; t++) {
        if (!batch->toks[t].logits)
            continue;
        kf_cpu_rmsnorm(c->x + t * E, w->output_norm.data, c->xn + (size_t)n_rows * E, E,
                       hp->rms_eps);
        n_rows++;
    }
    if (n_rows) {
        int ready = 0;
        kf_cpu_mm(c, &w->output, c->xn, n_rows, out->data, hp->n_vocab, &ready);
    }
    return KF_OK;
}

static int
kf_cpu_n_threads(const kf_backend_t *be)
{
    const kf_cpu_t *c = be->priv;
    return kf_cpu_pool_size(c->pool);
}

const struct kf_backend_ops kf_backend_cpu_ops = {
    .name = "cpu",
    .init = kf_cpu_init,
    .destroy = kf_cpu_destroy,
    .forward = kf_cpu_forward,
    .n_threads = kf_cpu_n_threads,
};
