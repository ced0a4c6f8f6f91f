/*
 * kf_backend_int.h: the backend ops table (ggml-backend style). Internal to inference/: the
 * public API is kf_backend.h; each backend provides one `static const` table of these.
 */
#ifndef KF_BACKEND_INT_H
#define KF_BACKEND_INT_H

#include "kf_backend.h"

struct kf_backend_ops {
    const char *name;
    /* Sets be->priv. On failure writes be->errstr and returns the error; destroy is not called. */
    kf_err_t (*init)(kf_backend_t *be, const kf_backend_conf_t *conf);
    /* Frees be->priv. */
    void (*destroy)(kf_backend_t *be);
    /* The batch is already validated. On failure writes be->errstr. */
    kf_err_t (*forward)(kf_backend_t *be, const kf_batch_t *in, kf_logits_t *out);
    /* Optional: worker threads used; NULL means 1. */
    int (*n_threads)(const kf_backend_t *be);
};

struct kf_backend {
    const struct kf_backend_ops *ops;
    const kf_model_t *model;
    kf_kv_t *kv;
    uint32_t max_batch;
    void *priv;
    char errstr[256];
};

extern const struct kf_backend_ops kf_backend_cpu_ops;
#ifdef KF_HAVE_CUDA
extern const struct kf_backend_ops kf_backend_cuda_ops;
#endif

#endif /* KF_BACKEND_INT_H */
