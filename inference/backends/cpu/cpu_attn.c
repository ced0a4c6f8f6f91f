/*
 * cpu_attn.c: paged attention of the CPU backend (kf_cpu_attn_tokens, kf_cpu_attn_group and
 * kf_cpu_attn_head in cpu_kernels.h).
 *
 * The query heads that share one KV head (grouped-query attention), and up to
 * KF_ATTN_MAX_TOK tokens of one sequence (a prefill run), are computed together, so each K and
 * V row is read and widened once for all of them. Positions are taken in tiles
 * of at most KF_ATTN_TILE rows that never cross a cache block and start at fixed offsets in
 * it; per tile: the scores of 8 positions at a time, one rescale of the running softmax state
 * when the tile raises the maximum, exponentials 8 at a time, then the V rows. Every head's
 * arithmetic depends only on its own query, the cache and its position count, never on how
 * many heads or tokens were computed alongside: prefill, decode, batched or alone give the
 * same bits.
 */
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KF_ATTN_AVX2 1
#include <immintrin.h>
#endif

#define KF_ATTN_MAX_HD    512
#define KF_ATTN_TILE      16
#define KF_ATTN_MAX_GROUP 8
#define KF_ATTN_MAX_TOK   8
#define KF_ATTN_AHEAD     2 /* tiles prefetched ahead (1, 3 and 4 measured no better) */

#ifdef KF_ATTN_AVX2
/* e^x for 8 floats, x <= 0 as attention needs it (larger x is clamped at 88). exp(x) =
 * 2^n * e^r with n = round(x / ln 2) and |r| <= ln 2 / 2; e^r from its degree-7 minimax
 * polynomial (relative error about 2e-7 over that range); ln 2 split in two so r is exact.
 * Below -87.3 (where e^x leaves the normal floats), and for -inf, the result is 0. */
static inline __m256
kf_attn_exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.33f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, p);
}

/* Sums of each of 8 vectors, as one vector (lane i = sum of a[i]); a fixed order. */
static inline __m256
kf_attn_hsum8(const __m256 a[8])
{
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    t0 = _mm256_hadd_ps(t0, t1); /* 0 1 2 3 (low 128) | 0 1 2 3 (high 128) */
    t2 = _mm256_hadd_ps(t2, t3); /* 4 5 6 7 | 4 5 6 7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t2, 0x20),
                         _mm256_permute2f128_ps(t0, t2, 0x31));
}
#endif

/* s[i] = scale * q . rows[i] for i < 8 (rows padded to 8 by the caller). */
static void
kf_attn_scores8(const float *q, const float *const rows[8], uint32_t hd, float scale, float *s)
{
#ifdef KF_ATTN_AVX2
    if (hd % 8 == 0) {
        __m256 a[8];
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_setzero_ps();
        for (uint32_t d = 0; d < hd; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            for (int i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[i] + d), qv, a[i]);
        }
        _mm256_storeu_ps(s, _mm256_mul_ps(kf_attn_hsum8(a), _mm256_set1_ps(scale)));
        return;
    }
#endif
    for (int i = 0; i < 8; i++) {
        float acc = 0.0f;
        for (uint32_t d = 0; d < hd; d++)
            acc += q[d] * rows[i][d];
        s[i] = acc * scale;
    }
}

/* p[i] = e^(s[i] - m) for i < 16, and their sum in a fixed order. */
static float
kf_attn_exp16(const float *s, float m, float *p)
{
#ifdef KF_ATTN_AVX2
    __m256 mv = _mm256_set1_ps(m);
    __m256 p0 = kf_attn_exp8(_mm256_sub_ps(_mm256_loadu_ps(s), mv));
    __m256 p1 = kf_attn_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + 8), mv));
    _mm256_storeu_ps(p, p0);
    _mm256_storeu_ps(p + 8, p1);
    __m256 t = _mm256_add_ps(p0, p1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
#else
    float sum = 0.0f;
    for (int i = 0; i < 16; i++) {
        p[i] = expf(s[i] - m);
        sum += p[i];
    }
    return sum;
#endif
}

/* The largest of s[0..15]. */
static inline float
kf_attn_max16(const float *s)
{
#ifdef KF_ATTN_AVX2
    __m256 m = _mm256_max_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
#else
    float m = s[0];
    for (int i = 1; i < 16; i++)
        m = s[i] > m ? s[i] : m;
    return m;
#endif
}

/* acc[d] += sum_i p[i] * rows[i][d], i < n. */
static void
kf_attn_accum(float *acc, const float *p, const float *const *rows, uint32_t n, uint32_t hd)
{
#ifdef KF_ATTN_AVX2
    if (hd % 8 == 0) {
        /* 64 columns at a time in 8 registers, one broadcast per row; then 8 at a time.
         * Either way acc[d] gets the same FMAs in the same order (i ascending). */
        uint32_t d = 0;
        for (; d + 64 <= hd; d += 64) {
            __m256 a[8];
            for (int k = 0; k < 8; k++)
                a[k] = _mm256_loadu_ps(acc + d + 8 * k);
            for (uint32_t i = 0; i < n; i++) {
                __m256 b = _mm256_broadcast_ss(p + i);
                const float *r = rows[i] + d;
                for (int k = 0; k < 8; k++)
                    a[k] = _mm256_fmadd_ps(b, _mm256_loadu_ps(r + 8 * k), a[k]);
            }
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(acc + d + 8 * k, a[k]);
        }
        for (; d < hd; d += 8) {
            __m256 a = _mm256_loadu_ps(acc + d);
            for (uint32_t i = 0; i < n; i++)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + i), _mm256_loadu_ps(rows[i] + d), a);
            _mm256_storeu_ps(acc + d, a);
        }
        return;
    }
#endif
    for (uint32_t d = 0; d < hd; d++) {
        float a = acc[d];
        for (uint32_t i = 0; i < n; i++)
            a += p[i] * rows[i][d];
        acc[d] = a;
    }
}

/* Positions in the tile that starts at j0: up to KF_ATTN_TILE, never past its block's end
 * (tiles start at fixed offsets of a block) or past n_pos. */
static inline uint32_t
kf_attn_tile_len(const kf_cpu_kv_view_t *kv, uint32_t j0, uint32_t n_pos)
{
    uint32_t in = j0 % kv->bt;
    uint32_t n = KF_ATTN_TILE - in % KF_ATTN_TILE;
    n = n < kv->bt - in ? n : kv->bt - in;
    return n < n_pos - j0 ? n : n_pos - j0;
}

/* Element offset in the cache of position j0's row in its block (layer and head not added). */
static inline size_t
kf_attn_tile_base(const kf_cpu_kv_view_t *kv, uint32_t j0)
{
    return (size_t)kv->blocks[j0 / kv->bt] * kv->block_elems + (size_t)(j0 % kv->bt) * kv->kv_dim;
}

/* Prefetches the K and V rows of the tile at j0; returns its length. */
static inline uint32_t
kf_attn_prefetch_tile(const kf_cpu_kv_view_t *kv,
                      const char *cache,
                      uint32_t j0,
                      uint32_t n_pos,
                      size_t k_off,
                      size_t v_off,
                      size_t esz,
                      size_t row_bytes)
{
    uint32_t n = kf_attn_tile_len(kv, j0, n_pos);
    size_t base = kf_attn_tile_base(kv, j0);
    for (uint32_t i = 0; i < n; i++) {
        const char *kp = cache + (base + k_off + (size_t)i * kv->kv_dim) * esz;
        const char *vp = cache + (base + v_off + (size_t)i * kv->kv_dim) * esz;
        for (size_t o = 0; o < row_bytes; o += 64) {
            __builtin_prefetch(kp + o, 0, 3);
            __builtin_prefetch(vp + o, 0, 3);
        }
    }
    return n;
}

/* Up to KF_ATTN_MAX_TOK tokens of one sequence, heads h0 .. h0 + n_q - 1 of each (at most
 * KF_ATTN_MAX_GROUP). The tile's K/V rows are widened once for all of them; each token then
 * takes the part of the tile below its own n_pos, exactly as it would alone. */
static void
kf_attn_heads(const kf_cpu_kv_view_t *kv,
              const kf_cpu_attn_tok_t *toks,
              uint32_t n_tok,
              uint32_t h0,
              uint32_t n_q,
              uint32_t hd,
              uint32_t kv_off,
              float scale)
{
    static const float zero_row[KF_ATTN_MAX_HD];
    float acc[KF_ATTN_MAX_TOK * KF_ATTN_MAX_GROUP * KF_ATTN_MAX_HD];
    float kt[KF_ATTN_TILE * KF_ATTN_MAX_HD], vt[KF_ATTN_TILE * KF_ATTN_MAX_HD];
    float m[KF_ATTN_MAX_TOK * KF_ATTN_MAX_GROUP];
    double l[KF_ATTN_MAX_TOK * KF_ATTN_MAX_GROUP];
    const float *kr[KF_ATTN_TILE], *vr[KF_ATTN_TILE], *krt[KF_ATTN_TILE];
    uint32_t n_pos = 0;
    for (uint32_t t = 0; t < n_tok; t++)
        n_pos = toks[t].n_pos > n_pos ? toks[t].n_pos : n_pos;
    memset(acc, 0, sizeof(float) * n_tok * n_q * hd);
    for (uint32_t h = 0; h < n_tok * n_q; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0;
    }
    size_t k_off = (size_t)(2 * kv->layer) * kv->bt * kv->kv_dim + kv_off;
    size_t v_off = (size_t)(2 * kv->layer + 1) * kv->bt * kv->kv_dim + kv_off;
    size_t esz = kv->f16 ? 2 : 4, row_bytes = (size_t)hd * esz;
    const char *cache = kv->cache;
    /* Tiles sit in different parts of the cache (blocks are a whole layer stack apart), where
     * the hardware prefetchers do not follow: jp runs KF_ATTN_AHEAD tiles ahead, fetching. */
    uint32_t jp = 0;
    for (int t = 0; t < KF_ATTN_AHEAD && jp < n_pos; t++)
        jp += kf_attn_prefetch_tile(kv, cache, jp, n_pos, k_off, v_off, esz, row_bytes);
    for (uint32_t j0 = 0; j0 < n_pos;) {
        uint32_t n = kf_attn_tile_len(kv, j0, n_pos);
        size_t base = kf_attn_tile_base(kv, j0);
        if (jp < n_pos)
            jp += kf_attn_prefetch_tile(kv, cache, jp, n_pos, k_off, v_off, esz, row_bytes);
        for (uint32_t i = 0; i < n; i++) {
            size_t ko = base + k_off + (size_t)i * kv->kv_dim;
            size_t vo = base + v_off + (size_t)i * kv->kv_dim;
            if (kv->f16) {
                const uint16_t *c = kv->cache;
                kf_cpu_f16_to_f32_row(c + ko, kt + (size_t)i * hd, hd);
                kf_cpu_f16_to_f32_row(c + vo, vt + (size_t)i * hd, hd);
                kr[i] = kt + (size_t)i * hd;
                vr[i] = vt + (size_t)i * hd;
            } else {
                const float *c = kv->cache;
                kr[i] = c + ko;
                vr[i] = c + vo;
            }
        }
        for (uint32_t t = 0; t < n_tok; t++) {
            if (toks[t].n_pos <= j0)
                continue;
            /* This token's share of the tile: what kf_attn_tile_len gives for its n_pos. */
            uint32_t nt = kf_attn_tile_len(kv, j0, toks[t].n_pos);
            for (uint32_t i = 0; i < KF_ATTN_TILE; i++)
                krt[i] = i < nt ? kr[i] : zero_row;
            for (uint32_t h = 0; h < n_q; h++) {
                uint32_t sh = t * n_q + h;
                const float *qh = toks[t].q + (size_t)(h0 + h) * hd;
                float *ah = acc + (size_t)sh * hd;
                float sc[KF_ATTN_TILE], p[KF_ATTN_TILE];
                kf_attn_scores8(qh, krt, hd, scale, sc);
                if (nt > 8)
                    kf_attn_scores8(qh, krt + 8, hd, scale, sc + 8);
                for (uint32_t i = nt; i < KF_ATTN_TILE; i++)
                    sc[i] = -INFINITY;
                float mt = kf_attn_max16(sc); /* the padding is -inf */
                if (mt > m[sh]) {
                    /* The tile raises the maximum: rescale what was summed under the old one
                     * (nothing yet when m is -inf: e^-inf = 0). */
                    float corr = expf(m[sh] - mt);
                    for (uint32_t d = 0; d < hd; d++)
                        ah[d] *= corr;
                    l[sh] *= corr;
                    m[sh] = mt;
                }
                l[sh] += kf_attn_exp16(sc, m[sh], p);
                kf_attn_accum(ah, p, vr, nt, hd);
            }
        }
        j0 += n;
    }
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t h = 0; h < n_q; h++) {
            uint32_t sh = t * n_q + h;
            float inv = l[sh] > 0.0 ? (float)(1.0 / l[sh]) : 0.0f;
            float *o = toks[t].out + (size_t)(h0 + h) * hd;
            for (uint32_t d = 0; d < hd; d++)
                o[d] = acc[(size_t)sh * hd + d] * inv;
        }
}

void
kf_cpu_attn_tokens(const kf_cpu_kv_view_t *kv,
                   const kf_cpu_attn_tok_t *toks,
                   uint32_t n_tok,
                   uint32_t n_q,
                   uint32_t head_dim,
                   uint32_t kv_off,
                   float scale)
{
    KF_ASSERT(head_dim <= KF_ATTN_MAX_HD);
    for (uint32_t t0 = 0; t0 < n_tok; t0 += KF_ATTN_MAX_TOK) {
        uint32_t nt = n_tok - t0 < KF_ATTN_MAX_TOK ? n_tok - t0 : KF_ATTN_MAX_TOK;
        for (uint32_t h0 = 0; h0 < n_q; h0 += KF_ATTN_MAX_GROUP) {
            uint32_t nh = n_q - h0 < KF_ATTN_MAX_GROUP ? n_q - h0 : KF_ATTN_MAX_GROUP;
            kf_attn_heads(kv, toks + t0, nt, h0, nh, head_dim, kv_off, scale);
        }
    }
}

void
kf_cpu_attn_group(const kf_cpu_kv_view_t *kv,
                  const float *q,
                  uint32_t n_q,
                  uint32_t head_dim,
                  uint32_t kv_off,
                  uint32_t n_pos,
                  float scale,
                  float *out)
{
    kf_cpu_attn_tok_t tok = {.q = q, .out = out, .n_pos = n_pos};
    kf_cpu_attn_tokens(kv, &tok, 1, n_q, head_dim, kv_off, scale);
}

void
kf_cpu_attn_head(const kf_cpu_kv_view_t *kv,
                 const float *q,
                 uint32_t head_dim,
                 uint32_t kv_off,
                 uint32_t n_pos,
                 float scale,
                 float *out)
{
    kf_cpu_attn_group(kv, q, 1, head_dim, kv_off, n_pos, scale, out);
}
