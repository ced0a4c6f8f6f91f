/*
 * kf_cuda.h: what the CUDA backend offers beyond the generic kf_backend.h API.
 *
 * The backend itself is reached through kf_backend_new("cuda", ...) like any other; this header
 * adds what only a GPU backend has:
 *   - device discovery (kf_cuda_device_count) and a `--device cpu|cuda|auto` helper
 *     (kf_backend_pick, header-only so it also works in builds without CUDA);
 *   - sampling on the device (kf_cuda_forward_sample): the forward pass keeps the logits in
 *     device memory and only one token id per row comes back, instead of n_vocab floats;
 *   - kf_cuda_sample_logits: the same sampler over host logits (tests, tools);
 *   - kf_cuda_backend_info: the memory the backend holds, for logs and benchmarks.
 *
 * Device sampler semantics (kf_sampler.h's pipeline without the repetition penalty):
 * temperature <= 0 is greedy (highest logit, ties to the lowest id, NaN never picked).
 * Otherwise top-k keeps the k highest logits, where k is capped at KF_CUDA_SAMPLE_MAX_K and a
 * top_k <= 0 ("off") means the cap: top-p and min-p then only see the KF_CUDA_SAMPLE_MAX_K most
 * likely tokens (for a real model the probability mass beyond them is negligible, but it is a
 * difference from the CPU sampler, which sees the whole vocabulary). top-p and min-p work on
 * the untempered probabilities, then the kept logits are divided by the temperature and one
 * token is drawn with the caller's uniform number u in [0, 1): the caller keeps the PRNG, so a
 * sequence's draws stay reproducible. The arithmetic of that last part is the CPU sampler's
 * (double precision, sorted order), so equal candidate lists and equal u give equal tokens.
 *
 * Thread-safety: as kf_backend.h: one thread at a time per backend.
 */
#ifndef KF_CUDA_H
#define KF_CUDA_H

#include "kf_backend.h"
#include "kf_err.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KF_CUDA_SAMPLE_MAX_K 1024

/* Sampling parameters of one logits row. */
typedef struct kf_cuda_sample {
    float temperature; /* <= 0: greedy */
    int32_t top_k;     /* <= 0: off (KF_CUDA_SAMPLE_MAX_K) */
    float top_p;       /* (0, 1]; 1: off */
    float min_p;       /* [0, 1]; 0: off */
    float u;           /* uniform draw in [0, 1) for this row */
} kf_cuda_sample_t;

/* Stages of a forward call, for kf_cuda_set_profile() / kf_cuda_info_t.stage_ms. */
enum {
    KF_CUDA_STAGE_MISC = 0, /* embedding, norms, RoPE + KV store, SwiGLU */
    KF_CUDA_STAGE_QKV,      /* Q/K/V projection */
    KF_CUDA_STAGE_ATTN,     /* attention */
    KF_CUDA_STAGE_O,        /* attention output projection (+ residual) */
    KF_CUDA_STAGE_GATE_UP,  /* gate and up projections */
    KF_CUDA_STAGE_DOWN,     /* down projection (+ residual) */
    KF_CUDA_STAGE_HEAD,     /* final norm + vocabulary projection */
    KF_CUDA_STAGE_SAMPLE,   /* device sampler */
    KF_CUDA_N_STAGES
};

typedef struct kf_cuda_info {
    char device_name[128];
    int device;
    int compute_capability;            /* e.g. 90 */
    size_t weight_bytes;               /* weights in device memory */
    size_t kv_bytes;                   /* KV cache blocks in device memory */
    size_t scratch_bytes;              /* activations, logits, metadata */
    int weight_bf16;                   /* 1: weights held as BF16, 0: as F16 */
    int n_graphs;                      /* CUDA graphs captured so far (decode steps) */
    char cublas_path[512];             /* the cuBLAS library in use */
    int gemv;                          /* batches of at most this many tokens use the GEMV kernel */
    double stage_ms[KF_CUDA_N_STAGES]; /* accumulated while profiling (kf_cuda_set_profile) */
} kf_cuda_info_t;

/* Usable CUDA devices; 0 when the driver or a device is missing (never fails). */
int kf_cuda_device_count(void);

/* Runs one forward pass like kf_backend_forward() (same validation and KV semantics) but
 * samples on the device: for the k-th token with `logits` set, params[k] is applied to its
 * logits row and the chosen id is written to out_tokens[k]. No logits are copied to the host.
 * `be` must be a "cuda" backend (KF_ERR_INVALID_ARG otherwise); KF_ERR_INVALID_ARG for bad
 * sampling values (NaN, top_p outside (0, 1], min_p outside [0, 1], u outside [0, 1)). */
kf_err_t kf_cuda_forward_sample(kf_backend_t *be,
                                const kf_batch_t *batch,
                                const kf_cuda_sample_t *params,
                                int32_t *out_tokens,
                                char *errstr,
                                size_t errstr_size);

/* The device sampler over n_rows host rows of n_vocab logits on GPU `device` (for tests and
 * tools; copies the logits to the device). KF_ERR_UNSUPPORTED without a device. */
kf_err_t kf_cuda_sample_logits(int device,
                               const float *logits,
                               uint32_t n_rows,
                               uint32_t n_vocab,
                               const kf_cuda_sample_t *params,
                               int32_t *out_tokens,
                               char *errstr,
                               size_t errstr_size);

/* Fills *out for a "cuda" backend; KF_ERR_INVALID_ARG for another backend. */
kf_err_t kf_cuda_backend_info(const kf_backend_t *be, kf_cuda_info_t *out);

/* Turns per-stage timing on (graphs are bypassed, each stage is synchronized and timed with
 * events) or off, and zeroes the accumulated stage_ms. For benchmarks; KF_ERR_INVALID_ARG for
 * a backend that is not "cuda". */
kf_err_t kf_cuda_set_profile(kf_backend_t *be, int on);

/* Maps a --device value to a backend name: "cpu" -> "cpu", "cuda" -> "cuda", "auto" -> "cuda"
 * when this build has the CUDA backend and a device is present, else "cpu". NULL for anything
 * else (the caller reports the bad value). Header-only so a build without CUDA links it too. */
static inline const char *
kf_backend_pick(const char *device)
{
    if (!device)
        return NULL;
    if (!strcmp(device, "cpu") || !strcmp(device, "cuda"))
        return device;
    if (strcmp(device, "auto"))
        return NULL;
#ifdef KF_HAVE_CUDA
    if (kf_backend_available("cuda") && kf_cuda_device_count() > 0)
        return "cuda";
#endif
    return "cpu";
}

#ifdef __cplusplus
}
#endif

#endif /* KF_CUDA_H */
