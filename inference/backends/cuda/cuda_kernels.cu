/*
 * cuda_kernels.cu: the CUDA backend's kernels and their C launchers (see cuda_kernels.h).
 *
 * Matrix products go through cuBLAS (cuda_backend.c); what is here is the glue around them,
 * each kernel one pass over its data: weight conversion at load, embedding lookup, RMSNorm
 * (writing the F16/BF16 input of the next GEMM directly), bias + RoPE + KV-cache store in one
 * kernel, paged tiled attention (one kernel for prefill tiles and decode tokens), SwiGLU, and
 * the device sampler. The residual adds are fused into the GEMMs (beta = 1 accumulates the
 * output projection and the down projection into the F32 residual stream).
 *
 * Numerics follow the CPU backend (backends/cpu): RMSNorm sums squares in F32 per thread then
 * F32 across the block (the CPU uses double: differences ~1e-7 relative); RoPE angles are
 * computed in double like the CPU; softmax uses expf with a running max.
 */
#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

/* ---------- element type helpers ---------- */

template <typename T> __device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float
to_f<__half>(__half v)
{
    return __half2float(v);
}
template <>
__device__ __forceinline__ float
to_f<__nv_bfloat16>(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <typename T> __device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ __half
from_f<__half>(float v)
{
    return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16
from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

static inline int
grid_for(size_t n, int threads)
{
    size_t g = (n + (size_t)threads - 1) / (size_t)threads;
    return (int)(g > 65535u * 16u ? 65535u * 16u : g);
}

/* ---------- weight conversion ---------- */

/* Widening of any source element: overloads, so k_convert stays one template. */
__device__ __forceinline__ float
to_f_any(float v)
{
    return v;
}
__device__ __forceinline__ float
to_f_any(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ float
to_f_any(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}

template <typename S, typename T>
__global__ void
k_convert(const S *src, T *dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f<T>(to_f_any(src[i]));
}

template <typename S>
static int
convert_any(const S *src, void *dst, int wt, size_t n, cudaStream_t st)
{
    int g = grid_for(n, 256);
    if (wt == KF_CU_BF16)
        k_convert<S, __nv_bfloat16><<<g, 256, 0, st>>>(src, (__nv_bfloat16 *)dst, n);
    else
        k_convert<S, __half><<<g, 256, 0, st>>>(src, (__half *)dst, n);
    return (int)cudaGetLastError();
}

extern "C" int
kf_cu_convert_f32(const float *src, void *dst, int wt, size_t n, void *stream)
{
    return convert_any<float>(src, dst, wt, n, (cudaStream_t)stream);
}

extern "C" int
kf_cu_convert_f16(const uint16_t *src, void *dst, int wt, size_t n, void *stream)
{
    return convert_any<__half>((const __half *)src, dst, wt, n, (cudaStream_t)stream);
}

extern "C" int
kf_cu_convert_bf16(const uint16_t *src, void *dst, int wt, size_t n, void *stream)
{
    return convert_any<__nv_bfloat16>((const __nv_bfloat16 *)src, dst, wt, n, (cudaStream_t)stream);
}

/* One thread per element; the 34-byte blocks are not 4-byte aligned, so bytes are read one at
 * a time (this runs once at load). */
template <typename T>
__global__ void
k_dequant_q8_0(const uint8_t *src, T *dst, size_t n_blocks)
{
    size_t n = n_blocks * 32;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const uint8_t *b = src + (i / 32) * 34;
        __half_raw hr;
        hr.x = (unsigned short)(b[0] | (b[1] << 8));
        float d = __half2float(__half(hr));
        float q = (float)(int8_t)b[2 + i % 32];
        dst[i] = from_f<T>(d * q);
    }
}

extern "C" int
kf_cu_dequant_q8_0(const void *src, void *dst, int wt, size_t n_blocks, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    int g = grid_for(n_blocks * 32, 256);
    if (wt == KF_CU_BF16)
        k_dequant_q8_0<<<g, 256, 0, st>>>((const uint8_t *)src, (__nv_bfloat16 *)dst, n_blocks);
    else
        k_dequant_q8_0<<<g, 256, 0, st>>>((const uint8_t *)src, (__half *)dst, n_blocks);
    return (int)cudaGetLastError();
}

/* ---------- embedding ---------- */

template <typename T>
__global__ void
k_embed(const int32_t *tok, const T *emb, int E, float *x)
{
    const T *row = emb + (size_t)tok[blockIdx.x] * E;
    float *out = x + (size_t)blockIdx.x * E;
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        out[i] = to_f(row[i]);
}

extern "C" int
kf_cu_embed(const int32_t *tok, const void *emb, int wt, int E, float *x, int n_tok, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (wt == KF_CU_BF16)
        k_embed<<<n_tok, 256, 0, st>>>(tok, (const __nv_bfloat16 *)emb, E, x);
    else
        k_embed<<<n_tok, 256, 0, st>>>(tok, (const __half *)emb, E, x);
    return (int)cudaGetLastError();
}

/* ---------- reductions ---------- */

__device__ __forceinline__ float
warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float
warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum for blockDim.x a multiple of 32 (<= 1024); every thread gets the result. */
__device__ float
block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0)
        red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

/* ---------- RMSNorm ---------- */

template <typename T>
__global__ void
k_rmsnorm(const float *x, const int32_t *rows, const float *w, float eps, int E, T *out)
{
    __shared__ float red[32];
    int r = blockIdx.x;
    const float *xr = x + (size_t)(rows ? rows[r] : r) * E;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    float inv = rsqrtf(ss / (float)E + eps);
    T *o = out + (size_t)r * E;
    for (int i = threadIdx.x; i < E; i += blockDim.x)
        o[i] = from_f<T>(xr[i] * inv * w[i]);
}

extern "C" int
kf_cu_rmsnorm(const float *x,
              const int32_t *rows,
              const float *w,
              float eps,
              int E,
              void *out,
              int wt,
              int n_rows,
              void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    int th = E >= 4096 ? 1024 : E >= 1024 ? 512 : 256;
    if (wt == KF_CU_BF16)
        k_rmsnorm<<<n_rows, th, 0, st>>>(x, rows, w, eps, E, (__nv_bfloat16 *)out);
    else
        k_rmsnorm<<<n_rows, th, 0, st>>>(x, rows, w, eps, E, (__half *)out);
    return (int)cudaGetLastError();
}

/* ---------- bias + RoPE + KV store ---------- */

__device__ __forceinline__ size_t
kv_row_offset(const kf_cu_kv_t &kv, int tok, int p, int is_v)
{
    int blk = kv.blocktab[kv.seqoff[tok] + p / kv.bt];
    return (size_t)blk * kv.block_elems + (size_t)(2 * kv.layer + is_v) * kv.bt * kv.kv_dim +
           (size_t)(p % kv.bt) * kv.kv_dim;
}

/* One block per token. Shared memory: cos/sin of the n_rot/2 angles. */
__global__ void
k_qkv_post(float *qkv,
           const float *bias,
           const int32_t *pos,
           const float *inv_freq,
           int n_head,
           int n_kv,
           int hd,
           int n_rot,
           int neox,
           kf_cu_kv_t kv)
{
    extern __shared__ float cs[]; /* [half] cos, then [half] sin */
    int t = blockIdx.x, half = n_rot / 2;
    int Q = n_head * hd, K = n_kv * hd, W = Q + 2 * K;
    float *row = qkv + (size_t)t * W;
    int p = pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        /* Double precision like the CPU: positions reach 1e5, where float angles drift. */
        double s, c;
        sincos((double)p * (double)inv_freq[i], &s, &c);
        cs[i] = (float)c;
        cs[half + i] = (float)s;
    }
    if (bias)
        for (int i = threadIdx.x; i < W; i += blockDim.x)
            row[i] += bias[i];
    __syncthreads();
    /* Rotate q heads then k heads: pair (h, i) for every head of both. */
    int n_pairs = (n_head + n_kv) * half;
    for (int j = threadIdx.x; j < n_pairs; j += blockDim.x) {
        int h = j / half, i = j % half;
        float *xh = row + (size_t)h * hd; /* k heads follow q heads in the row */
        int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        float a = xh[i0], b = xh[i1], c = cs[i], s = cs[half + i];
        xh[i0] = a * c - b * s;
        xh[i1] = a * s + b * c;
    }
    __syncthreads();
    size_t ko = kv_row_offset(kv, t, p, 0), vo = kv_row_offset(kv, t, p, 1);
    const float *ks = row + Q, *vs = row + Q + K;
    if (kv.f16) {
        __half *c = (__half *)kv.cache;
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            c[ko + i] = __float2half_rn(ks[i]);
            c[vo + i] = __float2half_rn(vs[i]);
        }
    } else {
        float *c = (float *)kv.cache;
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            c[ko + i] = ks[i];
            c[vo + i] = vs[i];
        }
    }
}

extern "C" int
kf_cu_qkv_post(float *qkv,
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
               void *stream)
{
    size_t shm = sizeof(float) * (size_t)(n_rot > 0 ? n_rot : 1);
    k_qkv_post<<<n_tok, 256, shm, (cudaStream_t)stream>>>(qkv, bias, pos, inv_freq, n_head, n_kv,
                                                          hd, n_rot, neox, *kv);
    return (int)cudaGetLastError();
}

/* Eight halves / bfloat16s packed in 16 bytes, widened. */
__device__ __forceinline__ void
unpack8(const uint4 &v, float *f, __half)
{
    const __half2 *h = (const __half2 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void
unpack8(const uint4 &v, float *f, __nv_bfloat16)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

/* ---------- attention ---------- */

#define ATT_WARPS 8
#define ATT_TK    32 /* keys per shared-memory tile */
#define ATT_RPW   4  /* query rows per warp: tile n * group <= ATT_WARPS * ATT_RPW = 32 */

/*
 * One block per (query tile, kv head). The tile's query rows are (token, query head) pairs for
 * the group of query heads that share this kv head (GQA), so K and V are read once for all of
 * them. Keys are walked in tiles of ATT_TK positions loaded into shared memory as floats; each
 * warp owns up to ATT_RPW rows and keeps a running max / denominator / accumulator per row
 * (online softmax, flash-attention style), so no score matrix is stored. Lane j scores key j of
 * the tile; the accumulator of head dim d lives in lane d % 32, slot d / 32 (NDIM slots).
 * A decode token is a tile of one token: the same kernel serves prefill and decode.
 */
template <int NDIM, typename T>
__global__ void
__launch_bounds__(ATT_WARPS * 32) k_attention(const float *qkv,
                                              const int32_t *pos,
                                              const kf_cu_tile_t *tiles,
                                              int n_head,
                                              int n_kv,
                                              int hd,
                                              kf_cu_kv_t kv,
                                              T *att,
                                              float *part)
{
    extern __shared__ float sm[];
    const int ldk = hd + 1;        /* padded: lane j reads row j, same column -> distinct banks */
    float *Ks = sm;                /* [ATT_TK][hd + 1] */
    float *Vs = Ks + ATT_TK * ldk; /* [ATT_TK][hd] */
    float *Qs = Vs + ATT_TK * hd;  /* [32 rows][hd] */
    __shared__ int rpos[ATT_WARPS * ATT_RPW];

    const kf_cu_tile_t tile = tiles[blockIdx.x];
    const int kvh = blockIdx.y, group = n_head / n_kv;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int Q = n_head * hd, W = Q + 2 * n_kv * hd;
    const int n_rows = tile.n * group;
    const float scale = rsqrtf((float)hd);

    /* Stage the (pre-scaled) query rows and their positions. */
    for (int e = threadIdx.x; e < n_rows * hd; e += blockDim.x) {
        int r = e / hd, d = e % hd;
        int t = tile.tok0 + r / group, h = kvh * group + r % group;
        Qs[r * hd + d] = qkv[(size_t)t * W + (size_t)h * hd + d] * scale;
    }
    for (int r = threadIdx.x; r < n_rows; r += blockDim.x)
        rpos[r] = pos[tile.tok0 + r / group];

    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][NDIM];
#pragma unroll
    for (int k = 0; k < ATT_RPW; k++) {
        m[k] = -INFINITY;
        l[k] = 0.0f;
#pragma unroll
        for (int i = 0; i < NDIM; i++)
            acc[k][i] = 0.0f;
    }

    const size_t koff = (size_t)(2 * kv.layer) * kv.bt * kv.kv_dim + (size_t)kvh * hd;
    const size_t voff = koff + (size_t)kv.bt * kv.kv_dim;
    const int32_t *btab = kv.blocktab + kv.seqoff[tile.tok0];
    const int n_keys = tile.max_pos + 1;
    /* Split-K (flash-decoding): block z of gridDim.z walks its own contiguous share of the key
     * tiles; a share may be empty or fully masked for a row, hence the -inf guards below. */
    const int n_kt = (n_keys + ATT_TK - 1) / ATT_TK;
    const int kt0 = (int)((long long)n_kt * blockIdx.z / gridDim.z);
    const int kt1 = (int)((long long)n_kt * (blockIdx.z + 1) / gridDim.z);

    for (int p0 = kt0 * ATT_TK; p0 < kt1 * ATT_TK; p0 += ATT_TK) {
        __syncthreads(); /* the previous tile's readers are done (and Qs is staged) */
        if (kv.f16 && (hd & 7) == 0) {
            /* 16-byte loads, all of this thread's issued before the first is used: the tile
             * is latency-bound (a block-table lookup, then the row), so overlap is what
             * matters. ATT_TK * hd / 8 <= 1024 chunks = at most 4 per thread. */
            const int cpr = hd / 8, n_ch = ATT_TK * cpr;
            uint4 kr4[4], vr4[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int e = threadIdx.x + u * ATT_WARPS * 32;
                kr4[u] = make_uint4(0, 0, 0, 0);
                vr4[u] = make_uint4(0, 0, 0, 0);
                if (e < n_ch) {
                    int j = e / cpr, p = p0 + j;
                    if (p < n_keys) {
                        size_t base = (size_t)btab[p / kv.bt] * kv.block_elems +
                                      (size_t)(p % kv.bt) * kv.kv_dim + (size_t)(e % cpr) * 8;
                        const __half *c = (const __half *)kv.cache;
                        kr4[u] = __ldg((const uint4 *)(c + base + koff));
                        vr4[u] = __ldg((const uint4 *)(c + base + voff));
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int e = threadIdx.x + u * ATT_WARPS * 32;
                if (e < n_ch) {
                    int j = e / cpr, d0 = (e % cpr) * 8;
                    float kf[8], vf[8];
                    unpack8(kr4[u], kf, __half());
                    unpack8(vr4[u], vf, __half());
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        Ks[j * ldk + d0 + i] = kf[i];
                        Vs[j * hd + d0 + i] = vf[i];
                    }
                }
            }
        } else {
            for (int e = threadIdx.x; e < ATT_TK * hd; e += blockDim.x) {
                int j = e / hd, d = e % hd, p = p0 + j;
                float kval = 0.0f, vval = 0.0f;
                if (p < n_keys) {
                    size_t base = (size_t)btab[p / kv.bt] * kv.block_elems +
                                  (size_t)(p % kv.bt) * kv.kv_dim + d;
                    if (kv.f16) {
                        const __half *c = (const __half *)kv.cache;
                        kval = __half2float(c[base + koff]);
                        vval = __half2float(c[base + voff]);
                    } else {
                        const float *c = (const float *)kv.cache;
                        kval = c[base + koff];
                        vval = c[base + voff];
                    }
                }
                Ks[j * ldk + d] = kval;
                Vs[j * hd + d] = vval;
            }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < ATT_RPW; k++) {
            int r = warp + ATT_WARPS * k;
            if (r >= n_rows) /* uniform per warp */
                continue;
            const float *q = Qs + r * hd;
            const float *kr = Ks + lane * ldk;
            float s = 0.0f;
            for (int d = 0; d < hd; d++)
                s += q[d] * kr[d];
            if (p0 + lane > rpos[r]) /* causal (also masks keys past n_keys) */
                s = -INFINITY;
            float mt = warp_max(s);
            float mn = fmaxf(m[k], mt);
            float pj = mn == -INFINITY ? 0.0f : __expf(s - mn);
            float corr = m[k] == -INFINITY ? 0.0f : __expf(m[k] - mn);
            l[k] = l[k] * corr + warp_sum(pj);
            m[k] = mn;
#pragma unroll
            for (int i = 0; i < NDIM; i++)
                acc[k][i] *= corr;
            for (int j = 0; j < ATT_TK; j++) {
                float pb = __shfl_sync(0xffffffffu, pj, j);
                const float *vr = Vs + j * hd;
#pragma unroll
                for (int i = 0; i < NDIM; i++) {
                    int d = lane + 32 * i;
                    if (d < hd)
                        acc[k][i] += pb * vr[d];
                }
            }
        }
    }
    if (gridDim.z > 1) {
        /* Partial result of this split: m, l, then the unnormalized accumulator, per row. */
        float *pb =
            part + ((size_t)(blockIdx.x * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z) *
                       (size_t)(32 * (hd + 2));
#pragma unroll
        for (int k = 0; k < ATT_RPW; k++) {
            int r = warp + ATT_WARPS * k;
            if (r >= n_rows)
                continue;
            float *pr = pb + (size_t)r * (hd + 2);
            if (lane == 0) {
                pr[0] = m[k];
                pr[1] = l[k];
            }
#pragma unroll
            for (int i = 0; i < NDIM; i++) {
                int d = lane + 32 * i;
                if (d < hd)
                    pr[2 + d] = acc[k][i];
            }
        }
        return;
    }
#pragma unroll
    for (int k = 0; k < ATT_RPW; k++) {
        int r = warp + ATT_WARPS * k;
        if (r >= n_rows)
            continue;
        int t = tile.tok0 + r / group, h = kvh * group + r % group;
        float inv = 1.0f / l[k];
        T *o = att + (size_t)t * Q + (size_t)h * hd;
#pragma unroll
        for (int i = 0; i < NDIM; i++) {
            int d = lane + 32 * i;
            if (d < hd)
                o[d] = from_f<T>(acc[k][i] * inv);
        }
    }
}

/* Merges the gridDim.z-way split partials of one (tile, kv head) into the output rows. */
template <typename T>
__global__ void
k_attention_combine(
    const kf_cu_tile_t *tiles, int n_head, int n_kv, int hd, int n_split, const float *part, T *att)
{
    const kf_cu_tile_t tile = tiles[blockIdx.x];
    const int kvh = blockIdx.y, group = n_head / n_kv, Q = n_head * hd;
    const int n_rows = tile.n * group;
    const float *pb =
        part + (size_t)(blockIdx.x * gridDim.y + blockIdx.y) * n_split * (size_t)(32 * (hd + 2));
    for (int e = threadIdx.x; e < n_rows * hd; e += blockDim.x) {
        int r = e / hd, d = e % hd;
        float M = -INFINITY;
        for (int z = 0; z < n_split; z++)
            M = fmaxf(M, pb[((size_t)z * 32 + r) * (hd + 2)]);
        float L = 0.0f, acc = 0.0f;
        for (int z = 0; z < n_split; z++) {
            const float *pr = pb + ((size_t)z * 32 + r) * (hd + 2);
            if (pr[0] == -INFINITY)
                continue;
            float w = __expf(pr[0] - M);
            L += pr[1] * w;
            acc += pr[2 + d] * w;
        }
        int t = tile.tok0 + r / group, h = kvh * group + r % group;
        att[(size_t)t * Q + (size_t)h * hd + d] = from_f<T>(acc / L);
    }
}

static size_t
att_smem(int hd)
{
    return sizeof(float) * ((size_t)ATT_TK * (hd + 1) + (size_t)ATT_TK * hd + 32u * hd);
}

template <int NDIM, typename T>
static int
att_launch(const float *qkv,
           const int32_t *pos,
           const kf_cu_tile_t *tiles,
           int n_tiles,
           int n_head,
           int n_kv,
           int hd,
           const kf_cu_kv_t *kv,
           void *att,
           int n_split,
           float *part,
           cudaStream_t st)
{
    dim3 grid(n_tiles, n_kv, n_split);
    k_attention<NDIM, T><<<grid, ATT_WARPS * 32, att_smem(hd), st>>>(qkv, pos, tiles, n_head, n_kv,
                                                                     hd, *kv, (T *)att, part);
    if (n_split > 1)
        k_attention_combine<T>
            <<<dim3(n_tiles, n_kv), 256, 0, st>>>(tiles, n_head, n_kv, hd, n_split, part, (T *)att);
    return (int)cudaGetLastError();
}

template <typename T>
static int
att_dispatch(const float *qkv,
             const int32_t *pos,
             const kf_cu_tile_t *tiles,
             int n_tiles,
             int n_head,
             int n_kv,
             int hd,
             const kf_cu_kv_t *kv,
             void *att,
             int n_split,
             float *part,
             cudaStream_t st)
{
    if (hd <= 32)
        return att_launch<1, T>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att, n_split, part,
                                st);
    if (hd <= 64)
        return att_launch<2, T>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att, n_split, part,
                                st);
    if (hd <= 128)
        return att_launch<4, T>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att, n_split, part,
                                st);
    return att_launch<8, T>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att, n_split, part, st);
}

extern "C" int
kf_cu_attention(const float *qkv,
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
                void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (wt == KF_CU_BF16)
        return att_dispatch<__nv_bfloat16>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att,
                                           n_split, part, st);
    return att_dispatch<__half>(qkv, pos, tiles, n_tiles, n_head, n_kv, hd, kv, att, n_split, part,
                                st);
}

template <int NDIM>
static int
att_setup_one(void)
{
    int bytes = (int)att_smem(NDIM * 32);
    cudaError_t e = cudaFuncSetAttribute(k_attention<NDIM, __half>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(k_attention<NDIM, __nv_bfloat16>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    return (int)e;
}

extern "C" int
kf_cu_attention_setup(void)
{
    int e = att_setup_one<1>();
    if (!e)
        e = att_setup_one<2>();
    if (!e)
        e = att_setup_one<4>();
    if (!e)
        e = att_setup_one<8>();
    return e;
}

/* ---------- small-batch GEMV ---------- */

#define GEMV_WARPS 8

/*
 * Y[t][o] = W[o] . X[t] (+ beta * Y[t][o]) for NT <= 8 tokens: one warp per output row, 16-byte
 * loads of the weight row (read once for all NT tokens, so the kernel streams the matrix at
 * memory speed), the NT activation rows come from L1/L2. Decode steps of a few sequences are
 * exactly this shape, and a tiled tensor-core GEMM launches too few blocks for it (an output
 * of 1536 rows is 12 tiles of 128). n_in % 8 == 0.
 */
template <typename T, int NT>
__global__ void
__launch_bounds__(GEMV_WARPS * 32)
    k_gemv(const T *W, const T *X, int n_in, int n_out, float *Y, int ldy, float beta)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= n_out)
        return;
    const uint4 *w4 = (const uint4 *)(W + (size_t)row * n_in);
    const int n8 = n_in / 8;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
#pragma unroll 4
    for (int i = lane; i < n8; i += 32) {
        uint4 wv = __ldg(w4 + i);
        float wf[8];
        unpack8(wv, wf, T());
#pragma unroll
        for (int t = 0; t < NT; t++) {
            uint4 xv = __ldg((const uint4 *)(X + (size_t)t * n_in) + i);
            float xf[8];
            unpack8(xv, xf, T());
#pragma unroll
            for (int j = 0; j < 8; j++)
                acc[t] += wf[j] * xf[j];
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = warp_sum(acc[t]);
        if (lane == 0) {
            float *y = Y + (size_t)t * ldy + row;
            *y = beta != 0.0f ? v + beta * *y : v;
        }
    }
}

template <typename T>
static int
gemv_launch(const void *W,
            const void *X,
            int n_in,
            int n_out,
            int n_tok,
            float *Y,
            int ldy,
            float beta,
            cudaStream_t st)
{
    int g = (n_out + GEMV_WARPS - 1) / GEMV_WARPS;
    const T *w = (const T *)W, *x = (const T *)X;
#define GEMV_CASE(n)                                                                  \
    case n:                                                                           \
        k_gemv<T, n><<<g, GEMV_WARPS * 32, 0, st>>>(w, x, n_in, n_out, Y, ldy, beta); \
        break
    switch (n_tok) {
        GEMV_CASE(1);
        GEMV_CASE(2);
        GEMV_CASE(3);
        GEMV_CASE(4);
        GEMV_CASE(5);
        GEMV_CASE(6);
        GEMV_CASE(7);
        GEMV_CASE(8);
    default:
        return (int)cudaErrorInvalidValue;
    }
#undef GEMV_CASE
    return (int)cudaGetLastError();
}

extern "C" int
kf_cu_gemv(const void *W,
           int wt,
           int n_in,
           int n_out,
           const void *X,
           int n_tok,
           float *Y,
           int ldy,
           float beta,
           void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    if (wt == KF_CU_BF16)
        return gemv_launch<__nv_bfloat16>(W, X, n_in, n_out, n_tok, Y, ldy, beta, st);
    return gemv_launch<__half>(W, X, n_in, n_out, n_tok, Y, ldy, beta, st);
}

/* ---------- SwiGLU ---------- */

template <typename T>
__global__ void
k_swiglu(const float *gu, T *h, int F, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / F, j = i % F;
        float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
        h[i] = from_f<T>(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" int
kf_cu_swiglu(const float *gu, void *h, int wt, int F, int n_tok, void *stream)
{
    cudaStream_t st = (cudaStream_t)stream;
    size_t n = (size_t)F * n_tok;
    int g = grid_for(n, 256);
    if (wt == KF_CU_BF16)
        k_swiglu<<<g, 256, 0, st>>>(gu, (__nv_bfloat16 *)h, F, n);
    else
        k_swiglu<<<g, 256, 0, st>>>(gu, (__half *)h, F, n);
    return (int)cudaGetLastError();
}

/* ---------- sampling ---------- */

#define SMP_THREADS 1024
#define SMP_SLOTS   (2 * KF_CU_SAMPLE_CAP)

/* Order-preserving key of a float (NaN lowest: never picked). */
__device__ __forceinline__ unsigned
f_key(float f)
{
    if (isnan(f))
        return 0u;
    unsigned b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* "a ranks before b": larger logit first, then lower token id (the CPU sampler's order). */
__device__ __forceinline__ bool
ranks_before(unsigned ka, int ia, unsigned kb, int ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

/*
 * One block per logits row.
 * Greedy: block argmax (ties -> lowest id).
 * Otherwise: the K-th largest key (K = top_k capped at KF_CU_SAMPLE_CAP, or the cap when top-k
 * is off) is found by a 4-pass 8-bit radix select over the row; the keys above it and up to
 * KF_CU_SAMPLE_CAP keys equal to it are gathered into shared memory, bitonic-sorted into the
 * CPU sampler's order, cut to K, and thread 0 applies top-p, min-p and the tempered draw in
 * double exactly as kf_sampler_sample() does.
 */
__global__ void
__launch_bounds__(SMP_THREADS)
    k_sample(const float *logits, int n_vocab, const kf_cu_sp_t *sps, int32_t *out)
{
    __shared__ unsigned s_key[SMP_SLOTS];
    __shared__ int s_id[SMP_SLOTS];
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix, s_need, s_cnt;
    __shared__ unsigned s_bk[32];
    __shared__ int s_bi[32];

    const float *row = logits + (size_t)blockIdx.x * n_vocab;
    const kf_cu_sp_t sp = sps[blockIdx.x];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    if (sp.temperature <= 0.0f) {
        unsigned bk = 0;
        int bi = INT_MAX;
        for (int i = tid; i < n_vocab; i += blockDim.x) {
            float v = row[i];
            if (isnan(v))
                continue;
            unsigned k = f_key(v);
            if (bi == INT_MAX || ranks_before(k, i, bk, bi)) {
                bk = k;
                bi = i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            unsigned ok = __shfl_xor_sync(0xffffffffu, bk, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi != INT_MAX && (bi == INT_MAX || ranks_before(ok, oi, bk, bi))) {
                bk = ok;
                bi = oi;
            }
        }
        if (lane == 0) {
            s_bk[warp] = bk;
            s_bi[warp] = bi;
        }
        __syncthreads();
        if (tid == 0) {
            for (int w = 1; w < (int)(blockDim.x >> 5); w++)
                if (s_bi[w] != INT_MAX &&
                    (bi == INT_MAX || ranks_before(s_bk[w], s_bi[w], bk, bi))) {
                    bk = s_bk[w];
                    bi = s_bi[w];
                }
            out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
        }
        return;
    }

    int K = sp.top_k > 0 && sp.top_k < KF_CU_SAMPLE_CAP ? sp.top_k : KF_CU_SAMPLE_CAP;
    if (K > n_vocab)
        K = n_vocab;
    /* Radix select of the K-th largest key. */
    if (tid == 0) {
        s_prefix = 0;
        s_need = (unsigned)K;
    }
    for (int pass = 0; pass < 4; pass++) {
        int shift = 24 - 8 * pass;
        unsigned mask_hi = pass == 0 ? 0u : (0xffffffffu << (32 - 8 * pass));
        for (int i = tid; i < 256; i += blockDim.x)
            hist[i] = 0;
        __syncthreads();
        unsigned prefix = s_prefix;
        for (int i = tid; i < n_vocab; i += blockDim.x) {
            unsigned k = f_key(row[i]);
            if ((k & mask_hi) == prefix)
                atomicAdd(&hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            unsigned need = s_need, cum = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + hist[b] >= need)
                    break;
                cum += hist[b];
            }
            s_prefix = prefix | ((unsigned)b << shift);
            s_need = need - cum;
        }
        __syncthreads();
    }
    const unsigned thr = s_prefix;
    /* Gather: every key above thr (fewer than K of them), then keys equal to thr into the
     * remaining slots; the sort below puts the lowest ids of the equal ones first. */
    if (tid == 0)
        s_cnt = 0;
    for (int i = tid; i < SMP_SLOTS; i += blockDim.x) {
        s_key[i] = 0;
        s_id[i] = INT_MAX;
    }
    __syncthreads();
    for (int i = tid; i < n_vocab; i += blockDim.x) {
        unsigned k = f_key(row[i]);
        if (k > thr || (k == thr && k != 0u)) {
            unsigned slot = atomicAdd(&s_cnt, 1u);
            if (slot < SMP_SLOTS) {
                s_key[slot] = k;
                s_id[slot] = i;
            }
        }
    }
    __syncthreads();
    /* Bitonic sort of SMP_SLOTS entries, "ranks before" first. */
    for (int size = 2; size <= SMP_SLOTS; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < SMP_SLOTS; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    bool up = (i & size) == 0;
                    unsigned ki = s_key[i], kj = s_key[j];
                    int ii = s_id[i], ij = s_id[j];
                    bool swap = up ? ranks_before(kj, ij, ki, ii) : ranks_before(ki, ii, kj, ij);
                    if (swap) {
                        s_key[i] = kj;
                        s_key[j] = ki;
                        s_id[i] = ij;
                        s_id[j] = ii;
                    }
                }
            }
            __syncthreads();
        }
    }
    if (tid != 0)
        return;
    int n = 0;
    while (n < K && s_id[n] != INT_MAX)
        n++;
    if (n == 0) {
        out[blockIdx.x] = 0;
        return;
    }
    /* Back from keys to logits (exact inverse of f_key for non-NaN). */
    float c0;
    {
        unsigned k = s_key[0];
        c0 = __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
    }
    if (c0 == INFINITY) {
        out[blockIdx.x] = s_id[0];
        return;
    }
#define LOGIT_AT(i) __uint_as_float((s_key[i] & 0x80000000u) ? (s_key[i] & 0x7fffffffu) : ~s_key[i])
    if (sp.top_p < 1.0f && n > 1) {
        double z = 0.0;
        for (int i = 0; i < n; i++)
            z += exp((double)LOGIT_AT(i) - (double)c0);
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)LOGIT_AT(i) - (double)c0) / z;
            if (cum >= (double)sp.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (sp.min_p > 0.0f && n > 1) {
        double floor_logit = (double)c0 + log((double)sp.min_p);
        int keep = 1;
        while (keep < n && (double)LOGIT_AT(keep) >= floor_logit)
            keep++;
        n = keep;
    }
    if (n == 1) {
        out[blockIdx.x] = s_id[0];
        return;
    }
    double inv_t = 1.0 / (double)sp.temperature;
    double z = 0.0;
    for (int i = 0; i < n; i++)
        z += exp(((double)LOGIT_AT(i) - (double)c0) * inv_t);
    double r = (double)sp.u * z;
    double cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += exp(((double)LOGIT_AT(i) - (double)c0) * inv_t);
        if (r < cum) {
            out[blockIdx.x] = s_id[i];
            return;
        }
    }
    out[blockIdx.x] = s_id[n - 1];
#undef LOGIT_AT
}

extern "C" int
kf_cu_sample(
    const float *logits, int n_vocab, const kf_cu_sp_t *sp, int32_t *out, int n_rows, void *stream)
{
    k_sample<<<n_rows, SMP_THREADS, 0, (cudaStream_t)stream>>>(logits, n_vocab, sp, out);
    return (int)cudaGetLastError();
}
