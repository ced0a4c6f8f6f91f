/*
 * backend.c: backend selection by name and the checks every backend shares (see kf_backend.h).
 *
 * The batch is outside input as far as a backend is concerned (it comes from the scheduler,
 * which got token ids from requests), so kf_backend_forward() validates all of it before the
 * ops table sees it; backends then trust their input and keep their hot loops free of checks.
 */
#include "kf_backend_int.h"

#include <stdlib.h>
#include <string.h>

static const struct kf_backend_ops *
kf_backend_find(const char *name)
{
    if (!strcmp(name, kf_backend_cpu_ops.name))
        return &kf_backend_cpu_ops;
#ifdef KF_HAVE_CUDA
    if (!strcmp(name, kf_backend_cuda_ops.name))
        return &kf_backend_cuda_ops;
#endif
    return NULL;
}

int
kf_backend_available(const char *name)
{
    return name && kf_backend_find(name) != NULL;
}

kf_err_t
kf_backend_new(const char *name,
               const kf_model_t *model,
               kf_kv_t *kv,
               const kf_backend_conf_t *conf,
               kf_backend_t **out,
               char *errstr,
               size_t errstr_size)
{
    KF_ASSERT(out);
    *out = NULL;
    if (!name || !model || !kv)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "backend: name, model and kv are required");
    const struct kf_backend_ops *ops = kf_backend_find(name);
    if (!ops) {
        if (!strcmp(name, "cuda"))
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "backend: cuda is not built in (configure with -DKF_CUDA=ON)");
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                          "backend: unknown backend '%s' (cpu, cuda)", name);
    }
    const kf_hparams_t *hp = kf_model_hparams(model);
    if (kf_kv_n_layer(kv) != hp->n_layer || kf_kv_n_head_kv(kv) != hp->n_head_kv ||
        kf_kv_head_dim(kv) != hp->head_dim)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "backend: kv cache geometry (%u layers, %u kv heads, head dim %u) does "
                          "not match the model (%u, %u, %u)",
                          kf_kv_n_layer(kv), kf_kv_n_head_kv(kv), kf_kv_head_dim(kv), hp->n_layer,
                          hp->n_head_kv, hp->head_dim);
    kf_backend_conf_t defaults = {0};
    if (!conf)
        conf = &defaults;
    if (conf->max_batch > (1u << 16))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "backend: max_batch %u is above 65536", conf->max_batch);
    kf_backend_t *be = calloc(1, sizeof(*be));
    if (!be)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "backend: out of memory");
    be->ops = ops;
    be->model = model;
    be->kv = kv;
    be->max_batch = conf->max_batch ? conf->max_batch : 512;
    kf_err_t err = ops->init(be, conf);
    if (err) {
        kf_err_set(errstr, errstr_size, err, "backend %s: %s", ops->name, be->errstr);
        free(be);
        return err;
    }
    *out = be;
    return KF_OK;
}

void
kf_backend_destroy(kf_backend_t *be)
{
    if (!be)
        return;
    be->ops->destroy(be);
    free(be);
}

kf_err_t
kf_backend_forward(
    kf_backend_t *be, const kf_batch_t *batch, kf_logits_t *out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(be);
    if (!batch || !out || !batch->toks || batch->n_tokens == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "forward: empty batch or no output buffer");
    if (batch->n_tokens > be->max_batch)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "forward: batch of %u tokens exceeds max_batch %u", batch->n_tokens,
                          be->max_batch);
    const kf_hparams_t *hp = kf_model_hparams(be->model);
    uint32_t n_rows = 0;
    for (uint32_t i = 0; i < batch->n_tokens; i++) {
        const kf_batch_tok_t *t = &batch->toks[i];
        if (t->token < 0 || (uint32_t)t->token >= hp->n_vocab)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "forward: token %u has id %d outside [0, %u)", i, t->token,
                              hp->n_vocab);
        if (!kf_kv_seq_valid(be->kv, t->seq))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "forward: token %u names sequence %d, which is not in use", i,
                              t->seq);
        if (t->pos < 0 || (uint32_t)t->pos >= kf_kv_seq_capacity(be->kv, t->seq))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "forward: token %u position %d is outside the %u reserved "
                              "positions of sequence %d",
                              i, t->pos, kf_kv_seq_capacity(be->kv, t->seq), t->seq);
        /* Two tokens writing the same cache slot would race and make the result undefined. */
        for (uint32_t j = 0; j < i; j++)
            if (batch->toks[j].seq == t->seq && batch->toks[j].pos == t->pos)
                return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                                  "forward: tokens %u and %u share sequence %d position %d", j, i,
                                  t->seq, t->pos);
        n_rows += t->logits != 0;
    }
    if (n_rows > out->cap_rows || (n_rows && !out->data))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "forward: %u logits rows wanted, output holds %u", n_rows,
                          out->data ? out->cap_rows : 0);
    be->errstr[0] = '\0';
    kf_err_t err = be->ops->forward(be, batch, out);
    if (err)
        return kf_err_set(errstr, errstr_size, err, "forward (%s): %s", be->ops->name, be->errstr);
    out->n_rows = n_rows;
    out->n_vocab = hp->n_vocab;
    return KF_OK;
}

const char *
kf_backend_name(const kf_backend_t *be)
{
    return be->ops->name;
}

uint32_t
kf_backend_max_batch(const kf_backend_t *be)
{
    return be->max_batch;
}

int
kf_backend_n_threads(const kf_backend_t *be)
{
    return be->ops->n_threads ? be->ops->n_threads(be) : 1;
}
