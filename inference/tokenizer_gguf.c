/*
 * tokenizer_gguf.c: kf_tokenizer_new(), reading the tokenizer.ggml.* metadata of a GGUF file
 * into a kf_tok_spec_t and handing it to kf_tokenizer_build().
 *
 * Kept apart from tokenizer.c so the tokenizer algorithms (and their unit tests) do not
 * depend on the GGUF reader.
 */
#include "tokenizer_int.h"

#include "kf_log.h"

#include <stdlib.h>
#include <string.h>

/* Copies a GGUF string into a NUL-terminated buffer (truncating). */
static void
str_copy(char *dst, size_t size, kf_gguf_str_t s)
{
    size_t n = s.len < size - 1 ? (size_t)s.len : size - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

static int64_t
get_id(const kf_gguf_t *gf, const char *key)
{
    uint32_t v;
    kf_err_t err = kf_gguf_get_u32(gf, key, &v);
    if (err == KF_ERR_NOT_FOUND)
        return -1;
    if (err) {
        kf_log(KF_LOG_WARN, "tokenizer", "%s is not an unsigned 32-bit id; ignored", key);
        return -1;
    }
    return v;
}

static int
get_flag(const kf_gguf_t *gf, const char *key)
{
    int v;
    if (kf_gguf_get_bool(gf, key, &v) != KF_OK)
        return -1;
    return v != 0;
}

/* Reads a string array into a malloc'd kf_tok_str_t array. */
static kf_err_t
read_strs(const kf_gguf_t *gf,
          const char *key,
          kf_tok_str_t **out,
          uint32_t *out_n,
          char *errstr,
          size_t errstr_size)
{
    kf_gguf_type_t et;
    uint64_t n;
    kf_err_t err = kf_gguf_get_arr(gf, key, &et, &n);
    if (err == KF_ERR_NOT_FOUND)
        return kf_err_set(errstr, errstr_size, err, "%s is missing", key);
    if (err || et != KF_GGUF_TYPE_STRING)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s is not an array of strings", key);
    if (n > (1u << 26))
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s has %llu entries (too many)", key,
                          (unsigned long long)n);
    kf_tok_str_t *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory reading %s", key);
    for (uint64_t i = 0; i < n; i++) {
        kf_gguf_str_t s;
        err = kf_gguf_arr_str(gf, key, i, &s);
        if (err) {
            free(v);
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s[%llu] unreadable: %s", key,
                              (unsigned long long)i, kf_err_str(err));
        }
        v[i].ptr = s.ptr;
        v[i].len = (size_t)s.len;
    }
    *out = v;
    *out_n = (uint32_t)n;
    return KF_OK;
}

/* Reads an optional numeric per-token array that must have n_vocab entries. */
static kf_err_t
read_nums(const kf_gguf_t *gf,
          const char *key,
          uint32_t n_vocab,
          float **out_f,
          int32_t **out_i,
          char *errstr,
          size_t errstr_size)
{
    kf_gguf_type_t et;
    uint64_t n;
    kf_err_t err = kf_gguf_get_arr(gf, key, &et, &n);
    if (err == KF_ERR_NOT_FOUND)
        return KF_OK;
    if (err || et == KF_GGUF_TYPE_STRING || et == KF_GGUF_TYPE_ARRAY)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s is not a numeric array", key);
    if (n != n_vocab)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "%s has %llu entries but there are %u tokens", key, (unsigned long long)n,
                          n_vocab);
    if (out_f) {
        *out_f = malloc((n ? n : 1) * sizeof(float));
        if (!*out_f)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < n; i++) {
            double d;
            if ((err = kf_gguf_arr_f64(gf, key, i, &d)) != KF_OK)
                return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s[%llu]: %s", key,
                                  (unsigned long long)i, kf_err_str(err));
            (*out_f)[i] = (float)d;
        }
    } else {
        *out_i = malloc((n ? n : 1) * sizeof(int32_t));
        if (!*out_i)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < n; i++) {
            int64_t v;
            if ((err = kf_gguf_arr_i64(gf, key, i, &v)) != KF_OK)
                return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s[%llu]: %s", key,
                                  (unsigned long long)i, kf_err_str(err));
            /* Unknown type values become "undefined" in the builder. */
            (*out_i)[i] = (v >= 0 && v <= 6) ? (int32_t)v : 0;
        }
    }
    return KF_OK;
}

kf_err_t
kf_tokenizer_new(const kf_gguf_t *gf, kf_tokenizer_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!gf)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "gguf handle is NULL");

    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    char model[32], pre[64] = "", name[128] = "";
    kf_tok_str_t *tokens = NULL, *merges = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    kf_gguf_str_t s;

    kf_err_t err = kf_gguf_get_str(gf, "tokenizer.ggml.model", &s);
    if (err) {
        err = kf_err_set(errstr, errstr_size, err == KF_ERR_NOT_FOUND ? err : KF_ERR_FORMAT,
                         "tokenizer.ggml.model is %s",
                         err == KF_ERR_NOT_FOUND ? "missing" : "not a string");
        goto out;
    }
    str_copy(model, sizeof(model), s);
    spec.model = model;
    if (kf_gguf_get_str(gf, "tokenizer.ggml.pre", &s) == KF_OK) {
        str_copy(pre, sizeof(pre), s);
        spec.pre = pre;
    }
    if (kf_gguf_get_str(gf, "general.name", &s) == KF_OK) {
        str_copy(name, sizeof(name), s);
        spec.name = name;
    }
    if (strcmp(model, "llama") != 0 && strcmp(model, "gpt2") != 0) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                         "tokenizer.ggml.model '%s' is not supported (llama, gpt2)", model);
        goto out;
    }

    if ((err = read_strs(gf, "tokenizer.ggml.tokens", &tokens, &spec.n_vocab, errstr,
                         errstr_size)) != KF_OK)
        goto out;
    spec.tokens = tokens;
    if ((err = read_nums(gf, "tokenizer.ggml.scores", spec.n_vocab, &scores, NULL, errstr,
                         errstr_size)) != KF_OK)
        goto out;
    spec.scores = scores;
    if ((err = read_nums(gf, "tokenizer.ggml.token_type", spec.n_vocab, NULL, &types, errstr,
                         errstr_size)) != KF_OK)
        goto out;
    spec.types = types;
    if (strcmp(model, "gpt2") == 0) {
        if ((err = read_strs(gf, "tokenizer.ggml.merges", &merges, &spec.n_merges, errstr,
                             errstr_size)) != KF_OK)
            goto out;
        spec.merges = merges;
    }

    spec.bos = get_id(gf, "tokenizer.ggml.bos_token_id");
    spec.eos = get_id(gf, "tokenizer.ggml.eos_token_id");
    spec.eot = get_id(gf, "tokenizer.ggml.eot_token_id");
    spec.eom = get_id(gf, "tokenizer.ggml.eom_token_id");
    spec.unk = get_id(gf, "tokenizer.ggml.unknown_token_id");
    spec.pad = get_id(gf, "tokenizer.ggml.padding_token_id");
    spec.fim_pad = get_id(gf, "tokenizer.ggml.fim_pad_token_id");
    spec.fim_rep = get_id(gf, "tokenizer.ggml.fim_rep_token_id");
    spec.fim_sep = get_id(gf, "tokenizer.ggml.fim_sep_token_id");
    spec.add_bos = get_flag(gf, "tokenizer.ggml.add_bos_token");
    spec.add_eos = get_flag(gf, "tokenizer.ggml.add_eos_token");
    spec.add_space_prefix = get_flag(gf, "tokenizer.ggml.add_space_prefix");

    err = kf_tokenizer_build(&spec, out, errstr, errstr_size);
out:
    free(tokens);
    free(merges);
    free(scores);
    free(types);
    return err;
}
