/*
 * model.c: loads a llama/qwen2 model from GGUF (see kf_model.h).
 *
 * Loading is all validation: every hyper-parameter is range-checked and every tensor the forward
 * pass touches is looked up by its llama.cpp name and checked for type and shape here, once, so
 * the backends can trust the kf_model_weights_t they get and never re-check on the hot path.
 * Matrices stay inside the read-only mapping; only small vectors stored as F16/BF16 (norms,
 * biases) are widened into owned F32 copies, because the backends read those as F32.
 */
#include "kf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kf_model {
    kf_gguf_t *gf;
    kf_hparams_t hp;
    kf_model_weights_t w;
    float **owned; /* F32 copies of non-F32 vectors */
    size_t n_owned;
};

const char *
kf_arch_name(kf_arch_t arch)
{
    return arch == KF_ARCH_QWEN2 ? "qwen2" : "llama";
}

/* Sanity ceilings: far above any real model, low enough that products of them cannot overflow
 * the 64-bit size arithmetic used by the backends. */
#define KF_MAX_DIM   (1u << 20)
#define KF_MAX_LAYER 1024u

static int
kf_type_is_matrix_ok(kf_tensor_type_t t)
{
    switch (t) {
    case KF_TT_F32:
    case KF_TT_F16:
    case KF_TT_BF16:
    case KF_TT_Q8_0:
    case KF_TT_Q4_0:
    case KF_TT_Q4_K:
    case KF_TT_Q6_K:
        return 1;
    }
    return 0;
}

/* Reads a required u32 `{arch}.suffix`. */
static kf_err_t
kf_model_get_u32(const kf_gguf_t *gf,
                 const char *arch,
                 const char *suffix,
                 uint32_t *out,
                 int required,
                 char *errstr,
                 size_t errstr_size)
{
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    kf_err_t err = kf_gguf_get_u32(gf, key, out);
    if (err == KF_ERR_NOT_FOUND && !required)
        return KF_OK;
    if (err)
        return kf_err_set(errstr, errstr_size, err == KF_ERR_NOT_FOUND ? KF_ERR_FORMAT : err,
                          "model: metadata key %s %s", key,
                          err == KF_ERR_NOT_FOUND ? "is missing" : "is not a valid u32");
    return KF_OK;
}

static kf_err_t
kf_model_get_f32(const kf_gguf_t *gf,
                 const char *arch,
                 const char *suffix,
                 float *out,
                 int required,
                 char *errstr,
                 size_t errstr_size)
{
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    kf_err_t err = kf_gguf_get_f32(gf, key, out);
    if (err == KF_ERR_NOT_FOUND && !required)
        return KF_OK;
    if (err)
        return kf_err_set(errstr, errstr_size, err == KF_ERR_NOT_FOUND ? KF_ERR_FORMAT : err,
                          "model: metadata key %s %s", key,
                          err == KF_ERR_NOT_FOUND ? "is missing" : "is not a valid float");
    return KF_OK;
}

static float
kf_model_half_to_f32(uint16_t h)
{
    /* Independent of the backend's SIMD path: load time only, so clarity over speed. */
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    int exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
    } else if (exp == 31) {
        f = mant ? NAN : INFINITY;
    } else {
        f = ldexpf((float)(mant | 0x400), exp - 25);
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= sign;
    memcpy(&f, &u, 4);
    return f;
}

/* Looks up `name` and checks it: 1-D vector of n0 (n1 == 0) or 2-D matrix [n0, n1]. Vectors
 * must be F32/F16/BF16 and come back as F32 (widened copies are owned by the model). */
static kf_err_t
kf_model_tensor(kf_model_t *m,
                const char *name,
                uint64_t n0,
                uint64_t n1,
                int required,
                kf_weight_t *out,
                char *errstr,
                size_t errstr_size)
{
    memset(out, 0, sizeof(*out));
    const kf_gguf_tensor_t *t = kf_gguf_find_tensor(m->gf, name);
    if (!t) {
        if (!required)
            return KF_OK;
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "model: tensor %s is missing", name);
    }
    int is_vec = n1 == 0;
    uint64_t want1 = is_vec ? 1 : n1;
    if (t->ne[0] != n0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: tensor %s has shape [%llu, %llu, %llu, %llu], expected "
                          "[%llu, %llu]",
                          name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                          (unsigned long long)n0, (unsigned long long)want1);
    if (!kf_type_is_matrix_ok(t->type) ||
        (is_vec && t->type != KF_TT_F32 && t->type != KF_TT_F16 && t->type != KF_TT_BF16))
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: tensor %s has unsupported type %s for its role", name,
                          kf_tensor_type_name(t->type));
    uint32_t blk = kf_tensor_type_block(t->type);
    uint32_t blk_bytes = kf_tensor_type_block_bytes(t->type);
    if (!blk || n0 % blk)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: tensor %s row of %llu is not a multiple of the %s block %u", name,
                          (unsigned long long)n0, kf_tensor_type_name(t->type), blk);
    out->type = t->type;
    out->ne0 = n0;
    out->ne1 = want1;
    out->row_bytes = (size_t)(n0 / blk) * blk_bytes;
    out->data = t->data;
    if (t->n_bytes < out->row_bytes * want1)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: tensor %s holds %llu bytes, expected %zu", name,
                          (unsigned long long)t->n_bytes, out->row_bytes * (size_t)want1);
    if (is_vec && t->type != KF_TT_F32) {
        float *f = malloc(sizeof(float) * n0);
        float **no = realloc(m->owned, sizeof(float *) * (m->n_owned + 1));
        if (!f || !no) {
            free(f);
            if (no)
                m->owned = no;
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "model: out of memory");
        }
        m->owned = no;
        m->owned[m->n_owned++] = f;
        const uint16_t *h = t->data;
        for (uint64_t i = 0; i < n0; i++) {
            uint16_t v;
            memcpy(&v, h + i, 2);
            if (t->type == KF_TT_F16) {
                f[i] = kf_model_half_to_f32(v);
            } else {
                uint32_t u = (uint32_t)v << 16;
                memcpy(&f[i], &u, 4);
            }
        }
        out->type = KF_TT_F32;
        out->row_bytes = sizeof(float) * n0;
        out->data = f;
    }
    return KF_OK;
}

static kf_err_t
kf_model_read_hparams(kf_model_t *m, char *errstr, size_t errstr_size)
{
    kf_hparams_t *hp = &m->hp;
    kf_gguf_str_t s;
    kf_err_t err = kf_gguf_get_str(m->gf, "general.architecture", &s);
    if (err)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: general.architecture is missing or not a string");
    char arch[32];
    if (s.len >= sizeof(arch))
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: unsupported architecture (name too long)");
    memcpy(arch, s.ptr, s.len);
    arch[s.len] = '\0';
    if (!strcmp(arch, "llama")) {
        hp->arch = KF_ARCH_LLAMA;
        hp->rope_order = KF_ROPE_NORMAL;
    } else if (!strcmp(arch, "qwen2")) {
        hp->arch = KF_ARCH_QWEN2;
        hp->rope_order = KF_ROPE_NEOX;
    } else {
        return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                          "model: unsupported architecture '%s' (llama, qwen2)", arch);
    }

    if ((err = kf_model_get_u32(m->gf, arch, "embedding_length", &hp->n_embd, 1, errstr,
                                errstr_size)) ||
        (err =
             kf_model_get_u32(m->gf, arch, "block_count", &hp->n_layer, 1, errstr, errstr_size)) ||
        (err = kf_model_get_u32(m->gf, arch, "feed_forward_length", &hp->n_ff, 1, errstr,
                                errstr_size)) ||
        (err = kf_model_get_u32(m->gf, arch, "attention.head_count", &hp->n_head, 1, errstr,
                                errstr_size)))
        return err;
    hp->n_head_kv = hp->n_head;
    hp->rope_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->rms_eps = 1e-5f;
    if ((err = kf_model_get_u32(m->gf, arch, "attention.head_count_kv", &hp->n_head_kv, 0, errstr,
                                errstr_size)) ||
        (err = kf_model_get_u32(m->gf, arch, "context_length", &hp->n_ctx_train, 0, errstr,
                                errstr_size)) ||
        (err = kf_model_get_f32(m->gf, arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps, 1,
                                errstr, errstr_size)) ||
        (err = kf_model_get_f32(m->gf, arch, "rope.freq_base", &hp->rope_base, 0, errstr,
                                errstr_size)))
        return err;

    if (!hp->n_embd || hp->n_embd > KF_MAX_DIM || !hp->n_layer || hp->n_layer > KF_MAX_LAYER ||
        !hp->n_ff || hp->n_ff > KF_MAX_DIM || !hp->n_head || hp->n_head > hp->n_embd ||
        hp->n_embd % hp->n_head || !hp->n_head_kv || hp->n_head % hp->n_head_kv)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: inconsistent dimensions n_embd=%u n_layer=%u n_ff=%u "
                          "n_head=%u n_head_kv=%u",
                          hp->n_embd, hp->n_layer, hp->n_ff, hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    hp->n_rot = hp->head_dim;
    if ((err = kf_model_get_u32(m->gf, arch, "rope.dimension_count", &hp->n_rot, 0, errstr,
                                errstr_size)))
        return err;
    if (!hp->n_rot || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: rope.dimension_count %u invalid for head_dim %u", hp->n_rot,
                          hp->head_dim);
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f) ||
        !(hp->rope_base > 1.0f && hp->rope_base < 1e12f))
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: rms epsilon %g or rope base %g out of range", (double)hp->rms_eps,
                          (double)hp->rope_base);

    /* RoPE scaling: "none" and "linear" are supported; others would silently change results. */
    char key[160];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
    if (kf_gguf_get_str(m->gf, key, &s) == KF_OK) {
        if (s.len == 6 && !memcmp(s.ptr, "linear", 6)) {
            float factor = 1.0f;
            if ((err = kf_model_get_f32(m->gf, arch, "rope.scaling.factor", &factor, 0, errstr,
                                        errstr_size)))
                return err;
            if (!(factor >= 1.0f && factor < 1e6f))
                return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                                  "model: rope.scaling.factor %g out of range", (double)factor);
            hp->rope_freq_scale = 1.0f / factor;
        } else if (!(s.len == 4 && !memcmp(s.ptr, "none", 4))) {
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "model: rope scaling type '%.*s' is not supported (none, linear)",
                              (int)(s.len > 32 ? 32 : s.len), s.ptr);
        }
    }
    return KF_OK;
}

static kf_err_t
kf_model_read_weights(kf_model_t *m, char *errstr, size_t errstr_size)
{
    kf_hparams_t *hp = &m->hp;
    kf_model_weights_t *w = &m->w;
    kf_err_t err;
    const kf_gguf_tensor_t *te = kf_gguf_find_tensor(m->gf, "token_embd.weight");
    if (!te)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: tensor token_embd.weight is missing");
    if (te->ne[1] == 0 || te->ne[1] > 0x7fffffffull)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "model: token_embd.weight has %llu rows", (unsigned long long)te->ne[1]);
    hp->n_vocab = (uint32_t)te->ne[1];
    uint64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    uint64_t Q = (uint64_t)hp->n_head * hp->head_dim, K = (uint64_t)hp->n_head_kv * hp->head_dim;
    if ((err =
             kf_model_tensor(m, "token_embd.weight", E, V, 1, &w->tok_embd, errstr, errstr_size)) ||
        (err = kf_model_tensor(m, "output_norm.weight", E, 0, 1, &w->output_norm, errstr,
                               errstr_size)) ||
        (err = kf_model_tensor(m, "output.weight", E, V, 0, &w->output, errstr, errstr_size)) ||
        (err = kf_model_tensor(m, "rope_freqs.weight", hp->n_rot / 2, 0, 0, &w->rope_freqs, errstr,
                               errstr_size)))
        return err;
    if (!w->output.data) {
        w->output = w->tok_embd;
        hp->tied_output = 1;
    }
    w->layers = calloc(hp->n_layer, sizeof(kf_layer_weights_t));
    if (!w->layers)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "model: out of memory");
    int bias = hp->arch == KF_ARCH_QWEN2;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        kf_layer_weights_t *l = &w->layers[il];
        struct {
            const char *suffix;
            uint64_t n0, n1;
            int required;
            kf_weight_t *dst;
        } spec[] = {
            {"attn_norm.weight", E, 0, 1, &l->attn_norm}, {"attn_q.weight", E, Q, 1, &l->wq},
            {"attn_k.weight", E, K, 1, &l->wk},           {"attn_v.weight", E, K, 1, &l->wv},
            {"attn_q.bias", Q, 0, bias, &l->bq},          {"attn_k.bias", K, 0, bias, &l->bk},
            {"attn_v.bias", K, 0, bias, &l->bv},          {"attn_output.weight", Q, E, 1, &l->wo},
            {"ffn_norm.weight", E, 0, 1, &l->ffn_norm},   {"ffn_gate.weight", E, F, 1, &l->w_gate},
            {"ffn_up.weight", E, F, 1, &l->w_up},         {"ffn_down.weight", F, E, 1, &l->w_down},
        };
        for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
            char name[96];
            snprintf(name, sizeof(name), "blk.%u.%s", il, spec[i].suffix);
            if ((err = kf_model_tensor(m, name, spec[i].n0, spec[i].n1, spec[i].required,
                                       spec[i].dst, errstr, errstr_size)))
                return err;
        }
    }
    return KF_OK;
}

kf_err_t
kf_model_load_gguf(kf_gguf_t *gf, kf_model_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(gf && out);
    *out = NULL;
    kf_model_t *m = calloc(1, sizeof(*m));
    if (!m)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "model: out of memory");
    m->gf = gf;
    kf_err_t err = kf_model_read_hparams(m, errstr, errstr_size);
    if (!err)
        err = kf_model_read_weights(m, errstr, errstr_size);
    if (err) {
        m->gf = NULL; /* the caller keeps gf on failure */
        kf_model_destroy(m);
        return err;
    }
    *out = m;
    return KF_OK;
}

kf_err_t
kf_model_load(const char *path, kf_model_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(path && out);
    *out = NULL;
    kf_gguf_t *gf = NULL;
    kf_err_t err = kf_gguf_open(path, &gf, errstr, errstr_size);
    if (err)
        return err;
    err = kf_model_load_gguf(gf, out, errstr, errstr_size);
    if (err)
        kf_gguf_close(gf);
    return err;
}

void
kf_model_destroy(kf_model_t *model)
{
    if (!model)
        return;
    for (size_t i = 0; i < model->n_owned; i++)
        free(model->owned[i]);
    free(model->owned);
    free(model->w.layers);
    kf_gguf_close(model->gf);
    free(model);
}

const kf_hparams_t *
kf_model_hparams(const kf_model_t *model)
{
    return &model->hp;
}

const kf_model_weights_t *
kf_model_weights(const kf_model_t *model)
{
    return &model->w;
}

const kf_gguf_t *
kf_model_gguf(const kf_model_t *model)
{
    return model->gf;
}

void
kf_model_rope_inv_freq(const kf_model_t *model, float *inv_freq)
{
    const kf_hparams_t *hp = &model->hp;
    const float *ff = model->w.rope_freqs.data;
    for (uint32_t i = 0; i < hp->n_rot / 2; i++) {
        /* Double precision for the power so CPU and GPU tables agree to the last bit. */
        double f = pow((double)hp->rope_base, -2.0 * i / (double)hp->n_rot);
        f *= hp->rope_freq_scale;
        if (ff)
            f /= ff[i];
        inv_freq[i] = (float)f;
    }
}
