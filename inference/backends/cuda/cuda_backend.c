/*
 * cuda_backend.c: the llama/qwen2 forward pass on one NVIDIA GPU (host side, plain C).
 *
 * At init every weight is uploaded once. Matrices are held in one element type for the whole
 * model, F16 (or BF16 when the file has BF16 matrices): F16/BF16 are copied as they are, F32 and
 * Q8_0 are converted on the device, Q4_0/Q4_K/Q6_K are dequantized on the host by kf_quant and
 * converted. So a Q8_0 model costs 2 bytes per weight on the device (1.88x its file size) and
 * decodes at the F16 speed; see docs/cuda.md. Q, K and V are concatenated into one matrix per
 * layer, as are gate and up, so each is one GEMM. KV blocks live in device memory: one
 * allocation of kf_kv_n_blocks() * kf_kv_block_bytes() (the configured budget), laid out like
 * the CPU backend's.
 *
 * One forward call:
 *   1. the host packs the batch's metadata (token ids, positions, each token's block-table
 *      offset, logits rows, attention tiles, the block tables of its sequences) into one pinned
 *      buffer and uploads it with one copy;
 *   2. embedding, then per layer: RMSNorm -> QKV GEMM -> bias/RoPE/KV store -> attention ->
 *      output GEMM accumulated into the residual (beta = 1) -> RMSNorm -> gate/up GEMM -> SwiGLU
 *      -> down GEMM accumulated into the residual; GEMMs are cuBLAS GemmEx with F16/BF16 inputs
 *      and F32 accumulation and output;
 *   3. the final norm and vocabulary GEMM for the rows that want logits, in chunks of at most
 *      `lrows` rows, then either a copy of the logits to the caller or, for
 *      kf_cuda_forward_sample(), the device sampler and a copy of the token ids.
 * Pure decode batches (one token per sequence) whose logits fit one chunk are captured as a
 * CUDA graph on first sight of their (tokens, rows, mode) shape and replayed afterwards: every
 * kernel reads its per-step data from the metadata buffer, whose layout depends only on that
 * shape, so the same graph serves every step. KINFER_CUDA_GRAPHS=0 turns graphs off.
 */
#include "cublas_dl.h"
#include "cuda_kernels.h"
#include "kf_backend_int.h"
#include "kf_cuda.h"
#include "kf_log.h"
#include "kf_quant.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_CU_MAX_GRAPHS  48
#define KF_CU_STAGE_BYTES ((size_t)64 << 20)
#define KF_CU_CUBLAS_WS   ((size_t)32 << 20)
#define KF_CU_LOGIT_BYTES ((size_t)256 << 20)
#define KF_CU_GEMV_MAX    2

typedef struct kf_cu_mat {
    void *d;
    uint32_t n_in, n_out;
} kf_cu_mat_t;

typedef struct kf_cu_layer {
    kf_cu_mat_t qkv, o, gu, down;
    float *attn_norm, *ffn_norm, *bqkv; /* bqkv NULL without biases */
} kf_cu_layer_t;

typedef struct kf_cu_graph {
    uint32_t T, R;
    int smp;
    cudaGraphExec_t exec;
} kf_cu_graph_t;

typedef struct kf_cuda {
    int dev, cc;
    char dev_name[128];
    cudaStream_t st;
    const kf_cublas_api_t *cb;
    kf_cublas_handle_t cbh;
    void *cb_ws;
    int wt;       /* KF_CU_F16 / KF_CU_BF16 */
    size_t wsize; /* bytes per weight element */
    /* Geometry. */
    uint32_t E, Q, K, F, V, hd, n_head, n_kv, n_layer, n_rot, group, tq;
    float eps;
    int neox;
    /* Weights. */
    kf_cu_layer_t *L;
    kf_cu_mat_t embd, out;
    int out_is_embd;
    float *out_norm, *inv_freq;
    size_t weight_bytes;
    /* KV cache. */
    void *cache;
    size_t cache_bytes, block_elems;
    int f16;
    uint32_t bt;
    /* Scratch (device): residual x, GEMM outputs, GEMM inputs, logits. */
    float *x, *qkv, *gu, *logits, *part;
    uint32_t part_blocks; /* attention split partials: (tile, kv head, split) slots */
    int n_sm;
    void *xn, *att, *h;
    uint32_t lrows;
    size_t scratch_bytes;
    /* Per-call metadata: pinned host mirror and device copy. */
    int32_t *h_meta, *d_meta;
    size_t meta_cap; /* int32 entries */
    kf_cu_sp_t *h_sp, *d_sp;
    int32_t *h_ids, *d_ids;
    /* Graphs. */
    kf_cu_graph_t graphs[KF_CU_MAX_GRAPHS];
    int n_graphs, use_graphs;
    /* Small-batch GEMV instead of cuBLAS for <= gemv_max tokens. */
    int gemv_max;
    /* Stage profiling (kf_cuda_set_profile): events around each stage, graphs bypassed. */
    int prof, prof_stage;
    cudaEvent_t prof_ev[2];
    double stage_ms[KF_CUDA_N_STAGES];
    /* Set by kf_cuda_forward_sample() around its kf_backend_forward() call. */
    int smp_mode;
    const kf_cuda_sample_t *smp_params;
    int32_t *smp_out;
} kf_cuda_t;

/* Offsets (in int32 entries) of the metadata sections for a batch of T tokens and R rows. They
 * depend on (T, R) only, which is what lets a captured graph be replayed. */
typedef struct kf_cu_layout {
    size_t tok, pos, seqoff, rows, tiles, btab;
} kf_cu_layout_t;

static kf_cu_layout_t
kf_cu_layout(uint32_t T, uint32_t R)
{
    kf_cu_layout_t lo;
    lo.tok = 0;
    lo.pos = T;
    lo.seqoff = 2 * (size_t)T;
    lo.rows = 3 * (size_t)T;
    lo.tiles = (3 * (size_t)T + R + 3) & ~(size_t)3; /* 16-byte aligned tile structs */
    lo.btab = lo.tiles + 4 * (size_t)T;
    return lo;
}

static kf_err_t
kf_cu_fail(kf_backend_t *be, cudaError_t e, const char *what)
{
    snprintf(be->errstr, sizeof(be->errstr), "%s: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
    return e == cudaErrorMemoryAllocation ? KF_ERR_NOMEM : KF_ERR_INTERNAL;
}

#define KF_CU_CHECK(be, call, what)              \
    do {                                         \
        cudaError_t e_ = (cudaError_t)(call);    \
        if (e_ != cudaSuccess)                   \
            return kf_cu_fail((be), e_, (what)); \
    } while (0)

int
kf_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error for later calls */
        return 0;
    }
    return n;
}

static void
kf_cuda_destroy(kf_backend_t *be)
{
    kf_cuda_t *c = be->priv;
    if (!c)
        return;
    cudaSetDevice(c->dev);
    if (c->st)
        cudaStreamSynchronize(c->st);
    for (int i = 0; i < c->n_graphs; i++)
        cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->L) {
        for (uint32_t il = 0; il < c->n_layer; il++) {
            kf_cu_layer_t *L = &c->L[il];
            cudaFree(L->qkv.d);
            cudaFree(L->o.d);
            cudaFree(L->gu.d);
            cudaFree(L->down.d);
            cudaFree(L->attn_norm);
            cudaFree(L->ffn_norm);
            cudaFree(L->bqkv);
        }
        free(c->L);
    }
    cudaFree(c->embd.d);
    if (!c->out_is_embd)
        cudaFree(c->out.d);
    cudaFree(c->out_norm);
    cudaFree(c->inv_freq);
    cudaFree(c->cache);
    cudaFree(c->x);
    cudaFree(c->qkv);
    cudaFree(c->gu);
    cudaFree(c->logits);
    cudaFree(c->part);
    cudaFree(c->xn);
    cudaFree(c->att);
    cudaFree(c->h);
    cudaFree(c->d_meta);
    cudaFree(c->d_sp);
    cudaFree(c->d_ids);
    cudaFreeHost(c->h_meta);
    cudaFreeHost(c->h_sp);
    cudaFreeHost(c->h_ids);
    if (c->cbh)
        c->cb->destroy(c->cbh);
    cudaFree(c->cb_ws);
    if (c->st)
        cudaStreamDestroy(c->st);
    if (c->prof_ev[0])
        cudaEventDestroy(c->prof_ev[0]);
    if (c->prof_ev[1])
        cudaEventDestroy(c->prof_ev[1]);
    free(c);
    be->priv = NULL;
}

/* ---------- weight upload ---------- */

static kf_err_t
kf_cu_malloc(kf_backend_t *be, void **p, size_t bytes, const char *what)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        cudaGetLastError();
        snprintf(be->errstr, sizeof(be->errstr),
                 "cannot allocate %zu bytes of device memory for %s: %s", bytes, what,
                 cudaGetErrorString(e));
        return KF_ERR_NOMEM;
    }
    return KF_OK;
}

typedef struct kf_cu_stage {
    void *d;  /* device staging, KF_CU_STAGE_BYTES */
    float *h; /* host staging for host-side dequantization, KF_CU_STAGE_BYTES */
} kf_cu_stage_t;

/* Uploads weight `w` (ne1 rows of ne0) into dst, converting to c->wt. */
static kf_err_t
kf_cu_upload(kf_backend_t *be, kf_cu_stage_t *sg, const kf_weight_t *w, void *dst)
{
    kf_cuda_t *c = be->priv;
    size_t n_el = (size_t)w->ne0 * w->ne1;
    int native = (w->type == KF_TT_F16 && c->wt == KF_CU_F16) ||
                 (w->type == KF_TT_BF16 && c->wt == KF_CU_BF16);
    if (native) {
        KF_CU_CHECK(be, cudaMemcpyAsync(dst, w->data, n_el * 2, cudaMemcpyHostToDevice, c->st),
                    "weight upload");
        KF_CU_CHECK(be, cudaStreamSynchronize(c->st), "weight upload");
        return KF_OK;
    }
    /* Converted in row chunks through the staging buffers: the widest form of a row is F32. */
    size_t row_stage = w->row_bytes > w->ne0 * 4 ? w->row_bytes : w->ne0 * 4;
    size_t rows_per = KF_CU_STAGE_BYTES / row_stage;
    if (rows_per == 0) {
        snprintf(be->errstr, sizeof(be->errstr), "weight row of %llu elements is too wide",
                 (unsigned long long)w->ne0);
        return KF_ERR_UNSUPPORTED;
    }
    for (size_t r0 = 0; r0 < w->ne1; r0 += rows_per) {
        size_t nr = w->ne1 - r0 < rows_per ? w->ne1 - r0 : rows_per;
        const uint8_t *src = (const uint8_t *)w->data + r0 * w->row_bytes;
        void *d_out = (uint8_t *)dst + r0 * w->ne0 * c->wsize;
        size_t n = nr * w->ne0;
        int rc;
        switch (w->type) {
        case KF_TT_F32:
        case KF_TT_F16:
        case KF_TT_BF16:
        case KF_TT_Q8_0:
            /* Same stream as the conversion: a plain cudaMemcpy from pageable memory may
             * return before its DMA lands. */
            KF_CU_CHECK(
                be, cudaMemcpyAsync(sg->d, src, nr * w->row_bytes, cudaMemcpyHostToDevice, c->st),
                "weight upload");
            if (w->type == KF_TT_F32)
                rc = kf_cu_convert_f32(sg->d, d_out, c->wt, n, c->st);
            else if (w->type == KF_TT_F16)
                rc = kf_cu_convert_f16(sg->d, d_out, c->wt, n, c->st);
            else if (w->type == KF_TT_BF16)
                rc = kf_cu_convert_bf16(sg->d, d_out, c->wt, n, c->st);
            else
                rc = kf_cu_dequant_q8_0(sg->d, d_out, c->wt, n / 32, c->st);
            break;
        default:
            for (size_t r = 0; r < nr; r++) {
                kf_err_t err = kf_dequant_row(w->type, src + r * w->row_bytes, sg->h + r * w->ne0,
                                              (int64_t)w->ne0);
                if (err) {
                    snprintf(be->errstr, sizeof(be->errstr), "cannot dequantize a %s weight",
                             kf_tensor_type_name(w->type));
                    return err;
                }
            }
            KF_CU_CHECK(be, cudaMemcpyAsync(sg->d, sg->h, n * 4, cudaMemcpyHostToDevice, c->st),
                        "weight upload");
            rc = kf_cu_convert_f32(sg->d, d_out, c->wt, n, c->st);
            break;
        }
        KF_CU_CHECK(be, rc, "weight conversion kernel");
        /* The next chunk overwrites the staging buffer. */
        KF_CU_CHECK(be, cudaStreamSynchronize(c->st), "weight conversion");
    }
    return KF_OK;
}

/* Allocates a matrix of n_out rows x n_in and uploads the given parts (stacked by rows). */
static kf_err_t
kf_cu_upload_mat(kf_backend_t *be,
                 kf_cu_stage_t *sg,
                 kf_cu_mat_t *m,
                 const kf_weight_t *const *parts,
                 int n_parts,
                 const char *what)
{
    kf_cuda_t *c = be->priv;
    m->n_in = (uint32_t)parts[0]->ne0;
    m->n_out = 0;
    for (int i = 0; i < n_parts; i++)
        m->n_out += (uint32_t)parts[i]->ne1;
    size_t bytes = (size_t)m->n_in * m->n_out * c->wsize;
    kf_err_t err = kf_cu_malloc(be, &m->d, bytes, what);
    if (err)
        return err;
    c->weight_bytes += bytes;
    size_t row0 = 0;
    for (int i = 0; i < n_parts; i++) {
        err = kf_cu_upload(be, sg, parts[i], (uint8_t *)m->d + row0 * m->n_in * c->wsize);
        if (err)
            return err;
        row0 += parts[i]->ne1;
    }
    return KF_OK;
}

static kf_err_t
kf_cu_upload_f32(kf_backend_t *be, float **dst, const float *src, size_t n, const char *what)
{
    kf_cuda_t *c = be->priv;
    kf_err_t err = kf_cu_malloc(be, (void **)dst, n * 4, what);
    if (err)
        return err;
    c->weight_bytes += n * 4;
    KF_CU_CHECK(be, cudaMemcpyAsync(*dst, src, n * 4, cudaMemcpyHostToDevice, c->st), what);
    /* src may be a temporary of the caller. */
    KF_CU_CHECK(be, cudaStreamSynchronize(c->st), what);
    return KF_OK;
}

static int
kf_cu_is_bf16_model(const kf_model_weights_t *w, uint32_t n_layer)
{
    if (w->tok_embd.type == KF_TT_BF16 || w->output.type == KF_TT_BF16)
        return 1;
    for (uint32_t il = 0; il < n_layer; il++) {
        const kf_layer_weights_t *L = &w->layers[il];
        const kf_weight_t *m[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
            if (m[i]->type == KF_TT_BF16)
                return 1;
    }
    return 0;
}

static kf_err_t
kf_cu_upload_weights(kf_backend_t *be)
{
    kf_cuda_t *c = be->priv;
    const kf_model_weights_t *w = kf_model_weights(be->model);
    kf_cu_stage_t sg = {0};
    kf_err_t err = kf_cu_malloc(be, &sg.d, KF_CU_STAGE_BYTES, "weight staging");
    if (err)
        return err;
    sg.h = malloc(KF_CU_STAGE_BYTES);
    float *bias = malloc(sizeof(float) * (c->Q + 2 * (size_t)c->K));
    if (!sg.h || !bias) {
        snprintf(be->errstr, sizeof(be->errstr), "out of host memory for weight staging");
        err = KF_ERR_NOMEM;
        goto out;
    }
    const kf_weight_t *embd[] = {&w->tok_embd};
    err = kf_cu_upload_mat(be, &sg, &c->embd, embd, 1, "token embeddings");
    if (err)
        goto out;
    /* Tied output: the vocabulary projection reuses the embedding matrix. */
    c->out_is_embd = w->output.data == w->tok_embd.data;
    if (c->out_is_embd) {
        c->out = c->embd;
    } else {
        const kf_weight_t *outw[] = {&w->output};
        err = kf_cu_upload_mat(be, &sg, &c->out, outw, 1, "output weights");
        if (err)
            goto out;
    }
    err = kf_cu_upload_f32(be, &c->out_norm, w->output_norm.data, c->E, "output norm");
    if (err)
        goto out;
    for (uint32_t il = 0; il < c->n_layer; il++) {
        const kf_layer_weights_t *lw = &w->layers[il];
        kf_cu_layer_t *L = &c->L[il];
        const kf_weight_t *qkv[] = {&lw->wq, &lw->wk, &lw->wv};
        const kf_weight_t *o[] = {&lw->wo};
        const kf_weight_t *gu[] = {&lw->w_gate, &lw->w_up};
        const kf_weight_t *down[] = {&lw->w_down};
        if ((err = kf_cu_upload_mat(be, &sg, &L->qkv, qkv, 3, "attention weights")) ||
            (err = kf_cu_upload_mat(be, &sg, &L->o, o, 1, "attention output weights")) ||
            (err = kf_cu_upload_mat(be, &sg, &L->gu, gu, 2, "feed-forward weights")) ||
            (err = kf_cu_upload_mat(be, &sg, &L->down, down, 1, "feed-forward down weights")) ||
            (err = kf_cu_upload_f32(be, &L->attn_norm, lw->attn_norm.data, c->E, "norms")) ||
            (err = kf_cu_upload_f32(be, &L->ffn_norm, lw->ffn_norm.data, c->E, "norms")))
            goto out;
        if (lw->bq.data || lw->bk.data || lw->bv.data) {
            /* Missing parts of a partial bias set are zero. */
            memset(bias, 0, sizeof(float) * (c->Q + 2 * (size_t)c->K));
            if (lw->bq.data)
                memcpy(bias, lw->bq.data, sizeof(float) * c->Q);
            if (lw->bk.data)
                memcpy(bias + c->Q, lw->bk.data, sizeof(float) * c->K);
            if (lw->bv.data)
                memcpy(bias + c->Q + c->K, lw->bv.data, sizeof(float) * c->K);
            err = kf_cu_upload_f32(be, &L->bqkv, bias, c->Q + 2 * (size_t)c->K, "biases");
            if (err)
                goto out;
        }
    }
out:
    cudaFree(sg.d);
    free(sg.h);
    free(bias);
    return err;
}

/* ---------- init ---------- */

static kf_err_t
kf_cuda_init(kf_backend_t *be, const kf_backend_conf_t *conf)
{
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        snprintf(be->errstr, sizeof(be->errstr), "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return KF_ERR_UNSUPPORTED;
    }
    if (conf->device < 0 || conf->device >= n_dev) {
        snprintf(be->errstr, sizeof(be->errstr), "device %d does not exist (%d devices)",
                 conf->device, n_dev);
        return KF_ERR_INVALID_ARG;
    }
    if (hp->head_dim > 256 || hp->head_dim % 2 || hp->n_head % hp->n_head_kv ||
        hp->n_head / hp->n_head_kv > 32) {
        snprintf(be->errstr, sizeof(be->errstr),
                 "unsupported attention shape: head_dim %u (even, <= 256), %u heads over %u kv "
                 "heads (group <= 32)",
                 hp->head_dim, hp->n_head, hp->n_head_kv);
        return KF_ERR_UNSUPPORTED;
    }
    const kf_cublas_api_t *cb;
    kf_err_t err = kf_cublas_load(&cb, be->errstr, sizeof(be->errstr));
    if (err)
        return err;

    kf_cuda_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(be->errstr, sizeof(be->errstr), "out of memory");
        return KF_ERR_NOMEM;
    }
    be->priv = c;
    c->dev = conf->device;
    c->cb = cb;
    c->E = hp->n_embd;
    c->hd = hp->head_dim;
    c->n_head = hp->n_head;
    c->n_kv = hp->n_head_kv;
    c->Q = hp->n_head * hp->head_dim;
    c->K = hp->n_head_kv * hp->head_dim;
    c->F = hp->n_ff;
    c->V = hp->n_vocab;
    c->n_layer = hp->n_layer;
    c->n_rot = hp->n_rot;
    c->eps = hp->rms_eps;
    c->neox = hp->rope_order == KF_ROPE_NEOX;
    c->group = hp->n_head / hp->n_head_kv;
    c->tq = 32 / c->group; /* attention tile: tokens x group heads <= 32 rows */
    const char *g = getenv("KINFER_CUDA_GRAPHS");
    c->use_graphs = !(g && !strcmp(g, "0"));
    /* Batches of up to gemv_max tokens use the GEMV kernel (measured on the H100, see
     * docs/cuda.md); KINFER_CUDA_GEMV=N overrides (0 = cuBLAS always, at most 8). */
    g = getenv("KINFER_CUDA_GEMV");
    c->gemv_max = g && *g ? atoi(g) : KF_CU_GEMV_MAX;
    c->gemv_max = c->gemv_max < 0 ? 0 : c->gemv_max > 8 ? 8 : c->gemv_max;

#define INIT_CHECK(call, what)                \
    do {                                      \
        cudaError_t e_ = (call);              \
        if (e_ != cudaSuccess) {              \
            err = kf_cu_fail(be, e_, (what)); \
            goto fail;                        \
        }                                     \
    } while (0)

    INIT_CHECK(cudaSetDevice(c->dev), "cudaSetDevice");
    struct cudaDeviceProp prop;
    INIT_CHECK(cudaGetDeviceProperties(&prop, c->dev), "cudaGetDeviceProperties");
    snprintf(c->dev_name, sizeof(c->dev_name), "%.127s", prop.name);
    c->cc = prop.major * 10 + prop.minor;
    c->n_sm = prop.multiProcessorCount;
    INIT_CHECK(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking), "cudaStreamCreate");
    INIT_CHECK(cudaEventCreate(&c->prof_ev[0]), "cudaEventCreate");
    INIT_CHECK(cudaEventCreate(&c->prof_ev[1]), "cudaEventCreate");
    INIT_CHECK((cudaError_t)kf_cu_attention_setup(), "attention kernel setup");

    kf_cublas_status_t cs = cb->create(&c->cbh);
    if (cs != 0) {
        c->cbh = NULL;
        snprintf(be->errstr, sizeof(be->errstr), "cublasCreate (%.150s): %s", cb->path,
                 kf_cublas_status_str(cb, cs));
        err = KF_ERR_UNSUPPORTED;
        goto fail;
    }
    cs = cb->set_stream(c->cbh, c->st);
    if (cs == 0)
        cs = cb->set_math_mode(c->cbh, KF_CUBLAS_DEFAULT_MATH);
    if (cs == 0 && cb->set_workspace) {
        /* A fixed workspace keeps cuBLAS from allocating inside a graph capture. */
        if ((err = kf_cu_malloc(be, &c->cb_ws, KF_CU_CUBLAS_WS, "cuBLAS workspace")))
            goto fail;
        cs = cb->set_workspace(c->cbh, c->cb_ws, KF_CU_CUBLAS_WS);
    }
    if (cs != 0) {
        snprintf(be->errstr, sizeof(be->errstr), "cuBLAS setup: %s", kf_cublas_status_str(cb, cs));
        err = KF_ERR_INTERNAL;
        goto fail;
    }

    /* Weights. */
    const kf_model_weights_t *w = kf_model_weights(be->model);
    c->wt = kf_cu_is_bf16_model(w, c->n_layer) ? KF_CU_BF16 : KF_CU_F16;
    c->wsize = 2;
    c->L = calloc(c->n_layer, sizeof(*c->L));
    if (!c->L) {
        snprintf(be->errstr, sizeof(be->errstr), "out of memory");
        err = KF_ERR_NOMEM;
        goto fail;
    }
    if ((err = kf_cu_upload_weights(be)))
        goto fail;
    {
        float *inv = malloc(sizeof(float) * (c->n_rot / 2 + 1));
        if (!inv) {
            snprintf(be->errstr, sizeof(be->errstr), "out of memory");
            err = KF_ERR_NOMEM;
            goto fail;
        }
        kf_model_rope_inv_freq(be->model, inv);
        err = kf_cu_upload_f32(be, &c->inv_freq, inv, c->n_rot / 2 + 1, "rope frequencies");
        free(inv);
        if (err)
            goto fail;
    }

    /* KV cache: every block of the pool, in device memory. */
    c->f16 = kf_kv_dtype(be->kv) == KF_KV_F16;
    c->bt = kf_kv_block_tokens(be->kv);
    c->block_elems = kf_kv_block_bytes(be->kv) / (c->f16 ? 2 : 4);
    c->cache_bytes = kf_kv_block_bytes(be->kv) * (size_t)kf_kv_n_blocks(be->kv);
    if ((err = kf_cu_malloc(be, &c->cache, c->cache_bytes, "the KV cache")))
        goto fail;
    /* Never-written positions are never read (causal mask); zeroing keeps a bug that reads
     * them deterministic, as on the CPU. */
    INIT_CHECK(cudaMemsetAsync(c->cache, 0, c->cache_bytes, c->st), "KV cache clear");

    /* Scratch for max_batch tokens. */
    size_t B = be->max_batch;
    c->part_blocks = 4 * (uint32_t)c->n_sm;
    c->lrows = (uint32_t)(KF_CU_LOGIT_BYTES / ((size_t)c->V * 4));
    c->lrows = c->lrows < 1 ? 1 : c->lrows > B ? (uint32_t)B : c->lrows;
    /* Tests shrink the logits buffer to exercise the chunked vocabulary projection. */
    const char *lr = getenv("KINFER_CUDA_LOGIT_ROWS");
    if (lr && atoi(lr) > 0 && (uint32_t)atoi(lr) < c->lrows)
        c->lrows = (uint32_t)atoi(lr);
    struct {
        void **p;
        size_t bytes;
    } sc[] = {
        {(void **)&c->x, B * c->E * 4},
        {(void **)&c->qkv, B * (c->Q + 2 * (size_t)c->K) * 4},
        {(void **)&c->gu, B * 2 * (size_t)c->F * 4},
        {(void **)&c->logits, (size_t)c->lrows * c->V * 4},
        {(void **)&c->part, (size_t)c->part_blocks * 32 * (c->hd + 2) * 4},
        {&c->xn, B * c->E * c->wsize},
        {&c->att, B * c->Q * c->wsize},
        {&c->h, B * c->F * c->wsize},
        {(void **)&c->d_sp, B * sizeof(kf_cu_sp_t)},
        {(void **)&c->d_ids, B * sizeof(int32_t)},
    };
    for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
        if ((err = kf_cu_malloc(be, sc[i].p, sc[i].bytes, "scratch buffers")))
            goto fail;
        c->scratch_bytes += sc[i].bytes;
    }
    c->meta_cap = kf_cu_layout((uint32_t)B, (uint32_t)B).btab + kf_kv_n_blocks(be->kv) + 16;
    if ((err = kf_cu_malloc(be, (void **)&c->d_meta, c->meta_cap * 4, "batch metadata")))
        goto fail;
    c->scratch_bytes += c->meta_cap * 4;
    INIT_CHECK(cudaMallocHost((void **)&c->h_meta, c->meta_cap * 4), "pinned host memory");
    INIT_CHECK(cudaMallocHost((void **)&c->h_sp, B * sizeof(kf_cu_sp_t)), "pinned host memory");
    INIT_CHECK(cudaMallocHost((void **)&c->h_ids, B * sizeof(int32_t)), "pinned host memory");
    INIT_CHECK(cudaStreamSynchronize(c->st), "init");
    kf_log(KF_LOG_INFO, "cuda",
           "device %d %s (sm_%d): %.1f MiB weights (%s), %.1f MiB KV cache, %.1f MiB scratch, "
           "cuBLAS %s",
           c->dev, c->dev_name, c->cc, (double)c->weight_bytes / 1048576.0,
           c->wt == KF_CU_BF16 ? "bf16" : "f16", (double)c->cache_bytes / 1048576.0,
           (double)c->scratch_bytes / 1048576.0, cb->path);
    return KF_OK;
fail:
    kf_cuda_destroy(be);
    return err;
#undef INIT_CHECK
}

/* ---------- forward ---------- */

static kf_err_t
kf_cu_gemm(kf_backend_t *be,
           const kf_cu_mat_t *W,
           const void *X,
           uint32_t n_tok,
           float *Y,
           uint32_t ldy,
           float beta)
{
    kf_cuda_t *c = be->priv;
    /* Row-major Y[n_tok][n_out] = X[n_tok][n_in] W^T is, column-major, Y^T = W^T(as stored) X^T:
     * W's rows are the columns of an n_in x n_out matrix, so op(A) = A^T. */
    if (n_tok <= (uint32_t)c->gemv_max && W->n_in % 8 == 0) {
        KF_CU_CHECK(be,
                    kf_cu_gemv(W->d, c->wt, (int)W->n_in, (int)W->n_out, X, (int)n_tok, Y, (int)ldy,
                               beta, c->st),
                    "gemv");
        return KF_OK;
    }
    float alpha = 1.0f;
    int dt = c->wt == KF_CU_BF16 ? KF_CUDA_R_16BF : KF_CUDA_R_16F;
    kf_cublas_status_t st =
        c->cb->gemm_ex(c->cbh, KF_CUBLAS_OP_T, KF_CUBLAS_OP_N, (int)W->n_out, (int)n_tok,
                       (int)W->n_in, &alpha, W->d, dt, (int)W->n_in, X, dt, (int)W->n_in, &beta, Y,
                       KF_CUDA_R_32F, (int)ldy, KF_CUBLAS_COMPUTE_32F, KF_CUBLAS_GEMM_DEFAULT);
    if (st != 0) {
        snprintf(be->errstr, sizeof(be->errstr), "cublasGemmEx %ux%ux%u: %s", W->n_out, n_tok,
                 W->n_in, kf_cublas_status_str(c->cb, st));
        return KF_ERR_INTERNAL;
    }
    return KF_OK;
}

/* Profiling: charges the time since the previous mark to the stage that just ran. Each mark
 * synchronizes, so profiled steps are slower in total but each stage is timed alone. */
static void
kf_cu_mark(kf_cuda_t *c, int stage_done)
{
    if (!c->prof)
        return;
    cudaEventRecord(c->prof_ev[1], c->st);
    cudaEventSynchronize(c->prof_ev[1]);
    float ms = 0.0f;
    if (stage_done >= 0 && cudaEventElapsedTime(&ms, c->prof_ev[0], c->prof_ev[1]) == cudaSuccess)
        c->stage_ms[stage_done] += ms;
    cudaEventRecord(c->prof_ev[0], c->st);
}

/* Enqueues everything up to the final norm: embedding and all layers for T tokens. */
static kf_err_t
kf_cu_enqueue_body(kf_backend_t *be, uint32_t T, uint32_t R, uint32_t n_tiles)
{
    kf_cuda_t *c = be->priv;
    kf_cu_layout_t lo = kf_cu_layout(T, R);
    const int32_t *tok = c->d_meta + lo.tok, *pos = c->d_meta + lo.pos;
    const kf_cu_tile_t *tiles = (const kf_cu_tile_t *)(c->d_meta + lo.tiles);
    kf_cu_kv_t kv = {
        .cache = c->cache,
        .f16 = c->f16,
        .block_elems = c->block_elems,
        .bt = (int)c->bt,
        .kv_dim = (int)c->K,
        .blocktab = c->d_meta + lo.btab,
        .seqoff = c->d_meta + lo.seqoff,
    };
    kf_err_t err;
    /* Fewer (tile, kv head) blocks than multiprocessors: split the keys so that about two
     * blocks per multiprocessor run (a decode step of a few sequences would otherwise walk its
     * whole context on a handful of blocks). Depends on n_tiles only, so graphs stay valid. */
    uint32_t blocks = n_tiles * c->n_kv, n_split = 1;
    if (blocks < (uint32_t)c->n_sm) {
        n_split = (2 * (uint32_t)c->n_sm + blocks - 1) / blocks;
        n_split = n_split > 16 ? 16 : n_split;
        while (blocks * n_split > c->part_blocks)
            n_split--;
    }
    kf_cu_mark(c, -1);
    KF_CU_CHECK(be, kf_cu_embed(tok, c->embd.d, c->wt, (int)c->E, c->x, (int)T, c->st), "embed");
    for (uint32_t il = 0; il < c->n_layer; il++) {
        const kf_cu_layer_t *L = &c->L[il];
        kv.layer = (int)il;
        KF_CU_CHECK(
            be,
            kf_cu_rmsnorm(c->x, NULL, L->attn_norm, c->eps, (int)c->E, c->xn, c->wt, (int)T, c->st),
            "rmsnorm");
        kf_cu_mark(c, KF_CUDA_STAGE_MISC);
        if ((err = kf_cu_gemm(be, &L->qkv, c->xn, T, c->qkv, c->Q + 2 * c->K, 0.0f)))
            return err;
        kf_cu_mark(c, KF_CUDA_STAGE_QKV);
        KF_CU_CHECK(be,
                    kf_cu_qkv_post(c->qkv, L->bqkv, pos, c->inv_freq, (int)c->n_head, (int)c->n_kv,
                                   (int)c->hd, (int)c->n_rot, c->neox, &kv, (int)T, c->st),
                    "rope/kv store");
        KF_CU_CHECK(be,
                    kf_cu_attention(c->qkv, pos, tiles, (int)n_tiles, (int)c->n_head, (int)c->n_kv,
                                    (int)c->hd, &kv, c->att, c->wt, n_split, c->part, c->st),
                    "attention");
        kf_cu_mark(c, KF_CUDA_STAGE_ATTN);
        /* Residual add fused into the GEMM: x = 1 * (att Wo^T) + 1 * x. */
        if ((err = kf_cu_gemm(be, &L->o, c->att, T, c->x, c->E, 1.0f)))
            return err;
        kf_cu_mark(c, KF_CUDA_STAGE_O);
        KF_CU_CHECK(
            be,
            kf_cu_rmsnorm(c->x, NULL, L->ffn_norm, c->eps, (int)c->E, c->xn, c->wt, (int)T, c->st),
            "rmsnorm");
        kf_cu_mark(c, KF_CUDA_STAGE_MISC);
        if ((err = kf_cu_gemm(be, &L->gu, c->xn, T, c->gu, 2 * c->F, 0.0f)))
            return err;
        kf_cu_mark(c, KF_CUDA_STAGE_GATE_UP);
        KF_CU_CHECK(be, kf_cu_swiglu(c->gu, c->h, c->wt, (int)c->F, (int)T, c->st), "swiglu");
        kf_cu_mark(c, KF_CUDA_STAGE_MISC);
        if ((err = kf_cu_gemm(be, &L->down, c->h, T, c->x, c->E, 1.0f)))
            return err;
        kf_cu_mark(c, KF_CUDA_STAGE_DOWN);
    }
    return KF_OK;
}

/* Final norm + vocabulary GEMM for logits rows [r0, r0 + nr) (nr <= lrows), then the sampler
 * when sampling. */
static kf_err_t
kf_cu_enqueue_head(kf_backend_t *be, uint32_t T, uint32_t R, uint32_t r0, uint32_t nr, int smp)
{
    kf_cuda_t *c = be->priv;
    kf_cu_layout_t lo = kf_cu_layout(T, R);
    KF_CU_CHECK(be,
                kf_cu_rmsnorm(c->x, c->d_meta + lo.rows + r0, c->out_norm, c->eps, (int)c->E, c->xn,
                              c->wt, (int)nr, c->st),
                "output norm");
    kf_cu_mark(c, -1);
    kf_err_t err = kf_cu_gemm(be, &c->out, c->xn, nr, c->logits, c->V, 0.0f);
    if (err)
        return err;
    kf_cu_mark(c, KF_CUDA_STAGE_HEAD);
    if (smp)
        KF_CU_CHECK(be,
                    kf_cu_sample(c->logits, (int)c->V, c->d_sp + r0, c->d_ids + r0, (int)nr, c->st),
                    "sampler");
    kf_cu_mark(c, KF_CUDA_STAGE_SAMPLE);
    return KF_OK;
}

/* Whole forward for a shape that fits one logits chunk: what a graph holds. */
static kf_err_t
kf_cu_enqueue_all(kf_backend_t *be, uint32_t T, uint32_t R, uint32_t n_tiles, int smp)
{
    kf_err_t err = kf_cu_enqueue_body(be, T, R, n_tiles);
    if (!err && R)
        err = kf_cu_enqueue_head(be, T, R, 0, R, smp);
    return err;
}

static kf_err_t
kf_cu_run_graph(kf_backend_t *be, uint32_t T, uint32_t R, int smp)
{
    kf_cuda_t *c = be->priv;
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].T == T && c->graphs[i].R == R && c->graphs[i].smp == smp) {
            KF_CU_CHECK(be, cudaGraphLaunch(c->graphs[i].exec, c->st), "cudaGraphLaunch");
            return KF_OK;
        }
    if (c->n_graphs == KF_CU_MAX_GRAPHS) /* full: run without a graph */
        return kf_cu_enqueue_all(be, T, R, T, smp);
    cudaError_t e = cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal);
    kf_err_t err = e == cudaSuccess ? kf_cu_enqueue_all(be, T, R, T, smp) : KF_ERR_INTERNAL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (e == cudaSuccess) {
        e = cudaStreamEndCapture(c->st, &graph);
        if (e == cudaSuccess && !err)
            e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph)
            cudaGraphDestroy(graph);
    }
    if (e != cudaSuccess || err) {
        /* Something in the step cannot be captured (or failed while capturing): turn graphs
         * off for this backend and run the step directly, which reports any real error. */
        kf_log(KF_LOG_WARN, "cuda", "CUDA graph capture failed (%s%s%s); running without graphs",
               cudaGetErrorString(e), err ? ": " : "", err ? be->errstr : "");
        cudaGetLastError();
        if (exec)
            cudaGraphExecDestroy(exec);
        c->use_graphs = 0;
        be->errstr[0] = '\0';
        return kf_cu_enqueue_all(be, T, R, T, smp);
    }
    c->graphs[c->n_graphs++] = (kf_cu_graph_t){.T = T, .R = R, .smp = smp, .exec = exec};
    KF_CU_CHECK(be, cudaGraphLaunch(exec, c->st), "cudaGraphLaunch");
    return KF_OK;
}

static kf_err_t
kf_cuda_forward(kf_backend_t *be, const kf_batch_t *batch, kf_logits_t *out)
{
    kf_cuda_t *c = be->priv;
    uint32_t T = batch->n_tokens, R = 0;
    for (uint32_t t = 0; t < T; t++)
        R += batch->toks[t].logits != 0;
    KF_CU_CHECK(be, cudaSetDevice(c->dev), "cudaSetDevice");

    /* 1. Metadata. */
    kf_cu_layout_t lo = kf_cu_layout(T, R);
    int32_t *m = c->h_meta;
    size_t nb = 0;
    uint32_t n_tiles = 0, r = 0;
    for (uint32_t t = 0; t < T; t++) {
        const kf_batch_tok_t *tk = &batch->toks[t];
        m[lo.tok + t] = tk->token;
        m[lo.pos + t] = tk->pos;
        if (tk->logits)
            m[lo.rows + r++] = (int32_t)t;
        /* The block table of this token's sequence: shared with the previous token when it
         * is the same sequence (prefill runs), else appended. */
        if (t > 0 && batch->toks[t - 1].seq == tk->seq) {
            m[lo.seqoff + t] = m[lo.seqoff + t - 1];
        } else {
            uint32_t n = 0;
            const uint32_t *blocks = kf_kv_seq_blocks(be->kv, tk->seq, &n);
            if (lo.btab + nb + n > c->meta_cap) {
                snprintf(be->errstr, sizeof(be->errstr), "block tables exceed the metadata buffer");
                return KF_ERR_INTERNAL;
            }
            m[lo.seqoff + t] = (int32_t)nb;
            for (uint32_t i = 0; i < n; i++)
                m[lo.btab + nb + i] = (int32_t)blocks[i];
            nb += n;
        }
        /* Attention tiles: runs of consecutive tokens of one sequence, at most tq each. */
        kf_cu_tile_t *tl = (kf_cu_tile_t *)(m + lo.tiles);
        if (n_tiles > 0 && batch->toks[tl[n_tiles - 1].tok0].seq == tk->seq &&
            tl[n_tiles - 1].tok0 + tl[n_tiles - 1].n == (int32_t)t &&
            tl[n_tiles - 1].n < (int32_t)c->tq) {
            kf_cu_tile_t *cur = &tl[n_tiles - 1];
            cur->n++;
            cur->max_pos = tk->pos > cur->max_pos ? tk->pos : cur->max_pos;
        } else {
            tl[n_tiles++] = (kf_cu_tile_t){.tok0 = (int32_t)t, .n = 1, .max_pos = tk->pos};
        }
    }
    KF_CU_CHECK(be,
                cudaMemcpyAsync(c->d_meta, m, (lo.btab + nb) * 4, cudaMemcpyHostToDevice, c->st),
                "metadata upload");
    int smp = c->smp_mode && R > 0;
    if (smp) {
        for (uint32_t i = 0; i < R; i++) {
            const kf_cuda_sample_t *p = &c->smp_params[i];
            c->h_sp[i] = (kf_cu_sp_t){.temperature = p->temperature,
                                      .top_k = p->top_k,
                                      .top_p = p->top_p,
                                      .min_p = p->min_p,
                                      .u = p->u};
        }
        KF_CU_CHECK(be,
                    cudaMemcpyAsync(c->d_sp, c->h_sp, R * sizeof(kf_cu_sp_t),
                                    cudaMemcpyHostToDevice, c->st),
                    "sampler parameters upload");
    }

    /* 2-3. Compute. */
    kf_err_t err;
    if (R <= c->lrows && n_tiles == T && c->use_graphs && !c->prof) {
        err = kf_cu_run_graph(be, T, R, smp);
    } else if (R <= c->lrows) {
        err = kf_cu_enqueue_all(be, T, R, n_tiles, smp);
    } else {
        err = kf_cu_enqueue_body(be, T, R, n_tiles);
    }
    if (err)
        return err;
    if (R <= c->lrows) {
        if (R && !smp)
            KF_CU_CHECK(be,
                        cudaMemcpyAsync(out->data, c->logits, (size_t)R * c->V * 4,
                                        cudaMemcpyDeviceToHost, c->st),
                        "logits download");
    } else {
        /* More rows than the logits buffer: chunk the head; each chunk's copy must finish
         * before the next chunk overwrites the buffer (stream order guarantees that). */
        for (uint32_t r0 = 0; r0 < R; r0 += c->lrows) {
            uint32_t nr = R - r0 < c->lrows ? R - r0 : c->lrows;
            if ((err = kf_cu_enqueue_head(be, T, R, r0, nr, smp)))
                return err;
            if (!smp)
                KF_CU_CHECK(be,
                            cudaMemcpyAsync(out->data + (size_t)r0 * c->V, c->logits,
                                            (size_t)nr * c->V * 4, cudaMemcpyDeviceToHost, c->st),
                            "logits download");
        }
    }
    if (smp)
        KF_CU_CHECK(
            be,
            cudaMemcpyAsync(c->h_ids, c->d_ids, R * sizeof(int32_t), cudaMemcpyDeviceToHost, c->st),
            "token download");
    KF_CU_CHECK(be, cudaStreamSynchronize(c->st), "forward");
    if (smp)
        memcpy(c->smp_out, c->h_ids, R * sizeof(int32_t));
    return KF_OK;
}

const struct kf_backend_ops kf_backend_cuda_ops = {
    .name = "cuda",
    .init = kf_cuda_init,
    .destroy = kf_cuda_destroy,
    .forward = kf_cuda_forward,
    .n_threads = NULL, /* one host thread drives the GPU */
};

/* ---------- public extras (kf_cuda.h) ---------- */

static kf_err_t
kf_cuda_check_params(const kf_cuda_sample_t *p, uint32_t n, char *errstr, size_t errstr_size)
{
    for (uint32_t i = 0; i < n; i++) {
        const kf_cuda_sample_t *s = &p[i];
        if (isnan(s->temperature))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "sampling parameters of row %u: temperature is NaN", i);
        if (s->temperature <= 0.0f) /* greedy: the other fields are not used */
            continue;
        if (!(s->top_p > 0.0f && s->top_p <= 1.0f) || !(s->min_p >= 0.0f && s->min_p <= 1.0f) ||
            !(s->u >= 0.0f && s->u < 1.0f))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "sampling parameters of row %u out of range (temperature %g, top_p "
                              "%g, min_p %g, u %g)",
                              i, (double)s->temperature, (double)s->top_p, (double)s->min_p,
                              (double)s->u);
    }
    return KF_OK;
}

kf_err_t
kf_cuda_forward_sample(kf_backend_t *be,
                       const kf_batch_t *batch,
                       const kf_cuda_sample_t *params,
                       int32_t *out_tokens,
                       char *errstr,
                       size_t errstr_size)
{
    if (!be || be->ops != &kf_backend_cuda_ops)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "kf_cuda_forward_sample needs a cuda backend");
    if (!batch || !batch->toks || batch->n_tokens > be->max_batch)
        return kf_backend_forward(be, batch, NULL, errstr, errstr_size); /* reports it */
    uint32_t R = 0;
    for (uint32_t t = 0; t < batch->n_tokens; t++)
        R += batch->toks[t].logits != 0;
    if (R && (!params || !out_tokens))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "%u rows to sample but no parameters or output", R);
    kf_err_t err = kf_cuda_check_params(params, R, errstr, errstr_size);
    if (err)
        return err;
    kf_cuda_t *c = be->priv;
    /* The generic entry point validates the batch; the dummy buffer satisfies its output check
     * and is never written in sampling mode. */
    float dummy = 0.0f;
    kf_logits_t lg = {.data = &dummy, .cap_rows = R};
    c->smp_mode = 1;
    c->smp_params = params;
    c->smp_out = out_tokens;
    err = kf_backend_forward(be, batch, &lg, errstr, errstr_size);
    c->smp_mode = 0;
    c->smp_params = NULL;
    c->smp_out = NULL;
    return err;
}

kf_err_t
kf_cuda_sample_logits(int device,
                      const float *logits,
                      uint32_t n_rows,
                      uint32_t n_vocab,
                      const kf_cuda_sample_t *params,
                      int32_t *out_tokens,
                      char *errstr,
                      size_t errstr_size)
{
    if (!logits || !params || !out_tokens || n_rows == 0 || n_vocab == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "sample_logits: empty input or no output");
    kf_err_t err = kf_cuda_check_params(params, n_rows, errstr, errstr_size);
    if (err)
        return err;
    int n_dev = kf_cuda_device_count();
    if (device < 0 || device >= n_dev)
        return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                          "sample_logits: no CUDA device %d (%d present)", device, n_dev);
    float *d_l = NULL;
    kf_cu_sp_t *d_sp = NULL, *h_sp = NULL;
    int32_t *d_ids = NULL;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d_l, (size_t)n_rows * n_vocab * 4);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d_sp, n_rows * sizeof(kf_cu_sp_t));
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&d_ids, n_rows * sizeof(int32_t));
    h_sp = malloc(n_rows * sizeof(kf_cu_sp_t));
    if (e == cudaSuccess && !h_sp)
        e = cudaErrorMemoryAllocation;
    if (e == cudaSuccess) {
        for (uint32_t i = 0; i < n_rows; i++)
            h_sp[i] = (kf_cu_sp_t){.temperature = params[i].temperature,
                                   .top_k = params[i].top_k,
                                   .top_p = params[i].top_p,
                                   .min_p = params[i].min_p,
                                   .u = params[i].u};
        e = cudaMemcpy(d_l, logits, (size_t)n_rows * n_vocab * 4, cudaMemcpyHostToDevice);
    }
    if (e == cudaSuccess)
        e = cudaMemcpy(d_sp, h_sp, n_rows * sizeof(kf_cu_sp_t), cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = (cudaError_t)kf_cu_sample(d_l, (int)n_vocab, d_sp, d_ids, (int)n_rows, NULL);
    if (e == cudaSuccess)
        e = cudaMemcpy(out_tokens, d_ids, n_rows * sizeof(int32_t), cudaMemcpyDeviceToHost);
    cudaFree(d_l);
    cudaFree(d_sp);
    cudaFree(d_ids);
    free(h_sp);
    if (e != cudaSuccess)
        return kf_err_set(errstr, errstr_size,
                          e == cudaErrorMemoryAllocation ? KF_ERR_NOMEM : KF_ERR_INTERNAL,
                          "sample_logits: %s", cudaGetErrorString(e));
    return KF_OK;
}

kf_err_t
kf_cuda_backend_info(const kf_backend_t *be, kf_cuda_info_t *out)
{
    if (!be || !out || be->ops != &kf_backend_cuda_ops)
        return KF_ERR_INVALID_ARG;
    const kf_cuda_t *c = be->priv;
    memset(out, 0, sizeof(*out));
    snprintf(out->device_name, sizeof(out->device_name), "%s", c->dev_name);
    out->device = c->dev;
    out->compute_capability = c->cc;
    out->weight_bytes = c->weight_bytes;
    out->kv_bytes = c->cache_bytes;
    out->scratch_bytes = c->scratch_bytes;
    out->weight_bf16 = c->wt == KF_CU_BF16;
    out->n_graphs = c->n_graphs;
    out->gemv = c->gemv_max;
    memcpy(out->stage_ms, c->stage_ms, sizeof(out->stage_ms));
    snprintf(out->cublas_path, sizeof(out->cublas_path), "%s", c->cb->path);
    return KF_OK;
}

kf_err_t
kf_cuda_set_profile(kf_backend_t *be, int on)
{
    if (!be || be->ops != &kf_backend_cuda_ops)
        return KF_ERR_INVALID_ARG;
    kf_cuda_t *c = be->priv;
    c->prof = on != 0;
    memset(c->stage_ms, 0, sizeof(c->stage_ms));
    return KF_OK;
}
