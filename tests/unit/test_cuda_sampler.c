/*
 * The device sampler (kf_cuda_sample_logits) against a host reference of the semantics stated
 * in kf_cuda.h (label gpu; exit 77 = SKIP without a CUDA device).
 *
 * Rows of random logits go through greedy, top-k, top-p, min-p and temperature settings with
 * fixed draws u; each pick must equal the reference's exactly. Edge rows: all-equal logits
 * (ties break to the lowest id), NaN and -inf entries (never picked), +inf (always picked),
 * top_k above the cap, a full Qwen-sized vocabulary row, and invalid parameters (rejected).
 */
#include "kf_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
            n_fail++;                                            \
        }                                                        \
    } while (0)

typedef struct cand {
    float logit;
    int32_t id;
} cand_t;

static int
cand_cmp(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The documented semantics, written plainly. */
static int32_t
ref_sample(const float *row, uint32_t nv, const kf_cuda_sample_t *sp)
{
    if (sp->temperature <= 0.0f) {
        int32_t best = -1;
        for (uint32_t i = 0; i < nv; i++)
            if (!isnan(row[i]) && (best < 0 || row[i] > row[best]))
                best = (int32_t)i;
        return best < 0 ? 0 : best;
    }
    cand_t *c = malloc(sizeof(cand_t) * nv);
    size_t n = 0;
    for (uint32_t i = 0; i < nv; i++)
        if (!isnan(row[i]))
            c[n++] = (cand_t){row[i], (int32_t)i};
    qsort(c, n, sizeof(cand_t), cand_cmp);
    size_t k = sp->top_k > 0 && sp->top_k < KF_CUDA_SAMPLE_MAX_K ? (size_t)sp->top_k
                                                                 : KF_CUDA_SAMPLE_MAX_K;
    n = n < k ? n : k;
    int32_t out;
    if (n == 0) {
        out = 0;
    } else if (c[0].logit == INFINITY) {
        out = c[0].id;
    } else {
        if (sp->top_p < 1.0f && n > 1) {
            double z = 0.0, cum = 0.0;
            for (size_t i = 0; i < n; i++)
                z += exp((double)c[i].logit - (double)c[0].logit);
            for (size_t i = 0; i < n; i++) {
                cum += exp((double)c[i].logit - (double)c[0].logit) / z;
                if (cum >= (double)sp->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
        if (sp->min_p > 0.0f && n > 1) {
            double fl = (double)c[0].logit + log((double)sp->min_p);
            size_t keep = 1;
            while (keep < n && (double)c[keep].logit >= fl)
                keep++;
            n = keep;
        }
        out = c[n - 1].id;
        if (n == 1) {
            out = c[0].id;
        } else {
            double inv_t = 1.0 / (double)sp->temperature, z = 0.0, cum = 0.0;
            for (size_t i = 0; i < n; i++)
                z += exp(((double)c[i].logit - (double)c[0].logit) * inv_t);
            double r = (double)sp->u * z;
            for (size_t i = 0; i < n; i++) {
                cum += exp(((double)c[i].logit - (double)c[0].logit) * inv_t);
                if (r < cum) {
                    out = c[i].id;
                    break;
                }
            }
        }
    }
    free(c);
    return out;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double
unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static float
gauss(void)
{
    double u1 = unif() + 1e-12, u2 = unif();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void
run_rows(
    const char *what, const float *rows, uint32_t n_rows, uint32_t nv, const kf_cuda_sample_t *sp)
{
    int32_t *got = malloc(sizeof(int32_t) * n_rows);
    char err[256];
    kf_err_t e = kf_cuda_sample_logits(0, rows, n_rows, nv, sp, got, err, sizeof(err));
    CHECK(e == KF_OK, "%s: %s", what, err);
    for (uint32_t r = 0; e == KF_OK && r < n_rows; r++) {
        int32_t want = ref_sample(rows + (size_t)r * nv, nv, &sp[r]);
        CHECK(got[r] == want, "%s row %u (T %.2f k %d p %.2f minp %.2f u %.3f): cuda %d, ref %d",
              what, r, (double)sp[r].temperature, sp[r].top_k, (double)sp[r].top_p,
              (double)sp[r].min_p, (double)sp[r].u, got[r], want);
    }
    free(got);
}

int
main(void)
{
    if (kf_cuda_device_count() <= 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    /* Random rows with a spread like real logits, under many settings. */
    enum { NV = 5000, NR = 48 };
    float *rows = malloc(sizeof(float) * NR * NV);
    kf_cuda_sample_t sp[NR];
    for (int r = 0; r < NR; r++) {
        for (int i = 0; i < NV; i++)
            rows[(size_t)r * NV + i] = 3.0f * gauss();
        static const kf_cuda_sample_t presets[] = {
            {0.0f, 40, 0.95f, 0.05f, 0.0f},   {0.8f, 40, 0.95f, 0.05f, 0.0f},
            {0.8f, 40, 0.95f, 0.05f, 0.5f},   {0.8f, 40, 0.95f, 0.05f, 0.999f},
            {1.0f, 1, 1.0f, 0.0f, 0.7f},      {1.0f, 0, 0.9f, 0.0f, 0.25f},
            {2.0f, 5000, 1.0f, 0.0f, 0.6f},   {0.7f, 100, 1.0f, 0.5f, 0.9f},
            {1.5f, 0, 1.0f, 0.0f, 0.123f},    {0.3f, 7, 0.5f, 0.0f, 0.77f},
            {1.0f, 2000, 0.99f, 0.01f, 0.4f}, {5.0f, 64, 1.0f, 0.0f, 0.05f},
        };
        sp[r] = presets[r % 12];
        if (r >= 12)
            sp[r].u = (float)unif() * 0.999f;
    }
    run_rows("random rows", rows, NR, NV, sp);

    /* Edge rows. */
    float *e = malloc(sizeof(float) * 8 * NV);
    kf_cuda_sample_t esp[8];
    for (int i = 0; i < 8 * NV; i++)
        e[i] = 1.0f;
    esp[0] = (kf_cuda_sample_t){0.0f, 0, 1.0f, 0.0f, 0.0f}; /* all equal, greedy -> 0 */
    esp[1] = (kf_cuda_sample_t){1.0f, 3, 1.0f, 0.0f, 0.5f}; /* all equal, top 3 -> id 1 */
    for (int i = 0; i < NV; i++)                            /* NaN everywhere but 4321 */
        e[2 * NV + i] = NAN;
    e[2 * NV + 4321] = -5.0f;
    esp[2] = (kf_cuda_sample_t){0.0f, 0, 1.0f, 0.0f, 0.0f};
    for (int i = 0; i < NV; i++) /* -inf everywhere but two */
        e[3 * NV + i] = -INFINITY;
    e[3 * NV + 10] = 2.0f;
    e[3 * NV + 20] = 2.5f;
    esp[3] = (kf_cuda_sample_t){1.0f, 0, 1.0f, 0.0f, 0.1f};
    e[4 * NV + 333] = INFINITY; /* +inf wins whatever u */
    esp[4] = (kf_cuda_sample_t){1.0f, 10, 0.9f, 0.0f, 0.99f};
    for (int i = 0; i < NV; i++) /* negative logits, ties in pairs */
        e[5 * NV + i] = -1.0f - (float)(i / 2) * 0.001f;
    esp[5] = (kf_cuda_sample_t){0.9f, 20, 0.8f, 0.0f, 0.66f};
    for (int i = 0; i < NV; i++)
        e[6 * NV + i] = -1.0f - (float)(i / 2) * 0.001f;
    esp[6] = (kf_cuda_sample_t){0.0f, 0, 1.0f, 0.0f, 0.0f};
    for (int i = 0; i < NV; i++)
        e[7 * NV + i] = (float)(i % 97) * 0.01f;
    esp[7] = (kf_cuda_sample_t){1.0f, 0, 0.999f, 0.0f, 0.5f};
    run_rows("edge rows", e, 8, NV, esp);

    /* A full Qwen2-sized row. */
    enum { QV = 151936 };
    float *q = malloc(sizeof(float) * 2 * QV);
    for (int i = 0; i < 2 * QV; i++)
        q[i] = 2.0f * gauss();
    kf_cuda_sample_t qsp[2] = {{0.0f, 0, 1.0f, 0.0f, 0.0f}, {0.8f, 40, 0.95f, 0.05f, 0.42f}};
    run_rows("vocab 151936", q, 2, QV, qsp);

    /* Invalid parameters are rejected, not sampled. */
    char err[256];
    int32_t id;
    kf_cuda_sample_t bad = {1.0f, 0, 0.0f, 0.0f, 0.5f};
    CHECK(kf_cuda_sample_logits(0, rows, 1, NV, &bad, &id, err, sizeof(err)) == KF_ERR_INVALID_ARG,
          "top_p 0 accepted");
    bad = (kf_cuda_sample_t){1.0f, 0, 1.0f, 0.0f, 1.0f};
    CHECK(kf_cuda_sample_logits(0, rows, 1, NV, &bad, &id, err, sizeof(err)) == KF_ERR_INVALID_ARG,
          "u 1.0 accepted");
    bad = (kf_cuda_sample_t){NAN, 0, 1.0f, 0.0f, 0.5f};
    CHECK(kf_cuda_sample_logits(0, rows, 1, NV, &bad, &id, err, sizeof(err)) == KF_ERR_INVALID_ARG,
          "NaN temperature accepted");
    CHECK(kf_cuda_sample_logits(0, rows, 1, NV, sp, &id, err, sizeof(err)) == KF_OK, "%s", err);
    CHECK(kf_cuda_sample_logits(99, rows, 1, NV, sp, &id, err, sizeof(err)) == KF_ERR_UNSUPPORTED,
          "device 99 accepted");

    free(rows);
    free(e);
    free(q);
    if (n_fail) {
        fprintf(stderr, "%d failure(s)\n", n_fail);
        return 1;
    }
    printf("device sampler matches the reference on %d rows\n", NR + 8 + 2);
    return 0;
}
