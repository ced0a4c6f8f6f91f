/*
 * Unit tests for `kinfer model-gen`: the files it writes open with the reader and carry the
 * llama.cpp metadata keys, tensor names, shapes and types asked for, the real tokenizer copied
 * from the vocab file, weights with the requested statistics, and identical bytes for the same
 * seed. Bad options give exit status 2 (usage) or 1 (runtime) and never a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_gguf.h"
#include "kf_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef KF_TESTDATA_TOKENIZER
#define KF_TESTDATA_TOKENIZER "/work/shared/testdata/tokenizer"
#endif
#define LLAMA_VOCAB KF_TESTDATA_TOKENIZER "/ggml-vocab-llama-bpe.gguf"
#define QWEN_VOCAB  KF_TESTDATA_TOKENIZER "/ggml-vocab-qwen2.gguf"
#define SPM_VOCAB   KF_TESTDATA_TOKENIZER "/ggml-vocab-llama-spm.gguf"

int kf_cmd_model_gen(int argc, char **argv);

static char g_dir[64];

static int
run(const char *first, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"model-gen";
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return kf_cmd_model_gen(argc, argv);
}

static const char *
tmp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
    return buf[k];
}

static kf_gguf_t *
open_ok(const char *path)
{
    kf_gguf_t *gf;
    char errstr[512];
    if (kf_gguf_open(path, &gf, errstr, sizeof(errstr)) != KF_OK)
        fail_msg("%s", errstr);
    return gf;
}

static uint32_t
u32_of(const kf_gguf_t *gf, const char *key)
{
    uint32_t v = 0;
    if (kf_gguf_get_u32(gf, key, &v) != KF_OK)
        fail_msg("missing u32 %s", key);
    return v;
}

static const kf_gguf_tensor_t *
tensor_ok(const kf_gguf_t *gf, const char *name, kf_tensor_type_t type, uint64_t ne0, uint64_t ne1)
{
    const kf_gguf_tensor_t *t = kf_gguf_find_tensor(gf, name);
    if (!t)
        fail_msg("missing tensor %s", name);
    if (t->type != type || t->ne[0] != ne0 || t->ne[1] != ne1 || t->n_dims != (ne1 > 1 ? 2u : 1u))
        fail_msg("%s: %s [%llu, %llu] dims %u, want %s [%llu, %llu]", name,
                 kf_tensor_type_name(t->type), (unsigned long long)t->ne[0],
                 (unsigned long long)t->ne[1], t->n_dims, kf_tensor_type_name(type),
                 (unsigned long long)ne0, (unsigned long long)ne1);
    return t;
}

/* Mean and standard deviation of a tensor's values. */
static void
stats(const kf_gguf_tensor_t *t, double *mean, double *sd)
{
    float *y = malloc(t->n_elements * sizeof(float));
    assert_non_null(y);
    assert_int_equal(kf_dequant_row(t->type, t->data, y, (int64_t)t->n_elements), KF_OK);
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        s += y[i];
        s2 += (double)y[i] * y[i];
    }
    *mean = s / (double)t->n_elements;
    *sd = sqrt(s2 / (double)t->n_elements - *mean * *mean);
    free(y);
}

static void
test_llama_f32(void **state)
{
    (void)state;
    if (access(LLAMA_VOCAB, R_OK) != 0)
        skip();
    const char *out = tmp("llama.gguf");
    assert_int_equal(run("--arch", "llama", "--vocab", LLAMA_VOCAB, "--out", out, "--rope-freqs",
                         "--quiet", NULL),
                     0);
    kf_gguf_t *gf = open_ok(out);
    kf_gguf_t *voc = open_ok(LLAMA_VOCAB);
    kf_gguf_str_t s;
    assert_int_equal(kf_gguf_get_str(gf, "general.architecture", &s), KF_OK);
    assert_true(kf_gguf_str_eq(s, "llama"));
    assert_int_equal(u32_of(gf, "general.alignment"), 32);
    assert_int_equal(u32_of(gf, "general.file_type"), 0);
    assert_int_equal(u32_of(gf, "llama.context_length"), 512);
    assert_int_equal(u32_of(gf, "llama.embedding_length"), 64);
    assert_int_equal(u32_of(gf, "llama.block_count"), 2);
    assert_int_equal(u32_of(gf, "llama.feed_forward_length"), 128);
    assert_int_equal(u32_of(gf, "llama.attention.head_count"), 4);
    assert_int_equal(u32_of(gf, "llama.attention.head_count_kv"), 2);
    assert_int_equal(u32_of(gf, "llama.rope.dimension_count"), 16);
    assert_int_equal(u32_of(gf, "llama.vocab_size"), 128256);
    float f;
    assert_int_equal(kf_gguf_get_f32(gf, "llama.rope.freq_base", &f), KF_OK);
    assert_true(f == 500000.0f);
    assert_int_equal(kf_gguf_get_f32(gf, "llama.attention.layer_norm_rms_epsilon", &f), KF_OK);
    assert_true(f == 1e-5f);
    /* The tokenizer, copied verbatim. */
    assert_int_equal(kf_gguf_get_str(gf, "tokenizer.ggml.model", &s), KF_OK);
    assert_true(kf_gguf_str_eq(s, "gpt2"));
    assert_int_equal(kf_gguf_get_str(gf, "tokenizer.ggml.pre", &s), KF_OK);
    assert_true(kf_gguf_str_eq(s, "llama-bpe"));
    assert_int_equal(u32_of(gf, "tokenizer.ggml.bos_token_id"), 128000);
    kf_gguf_type_t et;
    uint64_t n, nv;
    assert_int_equal(kf_gguf_get_arr(gf, "tokenizer.ggml.merges", &et, &n), KF_OK);
    assert_int_equal(kf_gguf_get_arr(voc, "tokenizer.ggml.merges", &et, &nv), KF_OK);
    assert_int_equal(n, nv);
    kf_gguf_str_t a, b;
    assert_int_equal(kf_gguf_arr_str(gf, "tokenizer.ggml.tokens", 128255, &a), KF_OK);
    assert_int_equal(kf_gguf_arr_str(voc, "tokenizer.ggml.tokens", 128255, &b), KF_OK);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.ptr, b.ptr, a.len);
    assert_int_equal(kf_gguf_get_str(gf, "tokenizer.chat_template", &s), KF_OK);

    /* Tensors: names, shapes (ne[0] = input dim), types. */
    assert_int_equal(kf_gguf_n_tensors(gf), 1 + 1 + 2 * 9 + 1 + 1);
    const kf_gguf_tensor_t *emb = tensor_ok(gf, "token_embd.weight", KF_TT_F32, 64, 128256);
    tensor_ok(gf, "output.weight", KF_TT_F32, 64, 128256);
    tensor_ok(gf, "output_norm.weight", KF_TT_F32, 64, 1);
    const kf_gguf_tensor_t *rf = tensor_ok(gf, "rope_freqs.weight", KF_TT_F32, 8, 1);
    char name[64];
    for (int l = 0; l < 2; l++) {
#define T(suffix, ne0, ne1) \
    (snprintf(name, sizeof(name), "blk.%d." suffix, l), tensor_ok(gf, name, KF_TT_F32, ne0, ne1))
        T("attn_norm.weight", 64, 1);
        T("attn_q.weight", 64, 64);
        T("attn_k.weight", 64, 32);
        T("attn_v.weight", 64, 32);
        T("attn_output.weight", 64, 64);
        T("ffn_norm.weight", 64, 1);
        T("ffn_gate.weight", 64, 128);
        T("ffn_up.weight", 64, 128);
        T("ffn_down.weight", 128, 64);
#undef T
        snprintf(name, sizeof(name), "blk.%d.attn_q.bias", l);
        assert_null(kf_gguf_find_tensor(gf, name));
    }
    /* Weight statistics: N(0, 0.02) matrices, norms around 1. */
    double mean, sd;
    stats(emb, &mean, &sd);
    assert_true(fabs(mean) < 0.001 && fabs(sd - 0.02) < 0.0005);
    stats(kf_gguf_find_tensor(gf, "blk.1.attn_norm.weight"), &mean, &sd);
    assert_true(fabs(mean - 1.0) < 0.01 && sd > 0.01 && sd < 0.03);
    /* Llama 3.1 factors: 1 for the high frequencies, 8 for the lowest, smooth between. */
    const float *fac = rf->data;
    assert_true(fac[0] == 1.0f && fac[7] == 8.0f);
    for (int i = 1; i < 8; i++)
        assert_true(fac[i] >= fac[i - 1]);
    kf_gguf_close(voc);
    kf_gguf_close(gf);
    unlink(out);
}

static void
test_qwen2_q8_0_tied(void **state)
{
    (void)state;
    if (access(QWEN_VOCAB, R_OK) != 0)
        skip();
    const char *out = tmp("qwen.gguf");
    assert_int_equal(run("--arch", "qwen2", "--type", "q8_0", "--vocab", QWEN_VOCAB, "--out", out,
                         "--n-layer", "3", "--quiet", NULL),
                     0);
    kf_gguf_t *gf = open_ok(out);
    assert_int_equal(u32_of(gf, "qwen2.block_count"), 3);
    assert_int_equal(u32_of(gf, "general.file_type"), 7);
    float f;
    assert_int_equal(kf_gguf_get_f32(gf, "qwen2.attention.layer_norm_rms_epsilon", &f), KF_OK);
    assert_true(f == 1e-6f);
    assert_int_equal(kf_gguf_get_f32(gf, "qwen2.rope.freq_base", &f), KF_OK);
    assert_true(f == 1000000.0f);
    assert_int_equal(u32_of(gf, "tokenizer.ggml.eos_token_id"), 151645);
    assert_int_equal(kf_gguf_n_tensors(gf), 1 + 3 * 12 + 1);
    tensor_ok(gf, "token_embd.weight", KF_TT_Q8_0, 64, 151669);
    assert_null(kf_gguf_find_tensor(gf, "output.weight")); /* tied by default */
    assert_null(kf_gguf_find_tensor(gf, "rope_freqs.weight"));
    tensor_ok(gf, "blk.2.attn_q.bias", KF_TT_F32, 64, 1);
    tensor_ok(gf, "blk.2.attn_k.bias", KF_TT_F32, 32, 1);
    tensor_ok(gf, "blk.2.attn_v.bias", KF_TT_F32, 32, 1);
    tensor_ok(gf, "blk.2.attn_k.weight", KF_TT_Q8_0, 64, 32);
    tensor_ok(gf, "blk.2.ffn_down.weight", KF_TT_Q8_0, 128, 64);
    tensor_ok(gf, "blk.2.ffn_norm.weight", KF_TT_F32, 64, 1);
    double mean, sd;
    stats(kf_gguf_find_tensor(gf, "token_embd.weight"), &mean, &sd);
    assert_true(fabs(sd - 0.02) < 0.0005);
    kf_gguf_close(gf);
    unlink(out);
}

static void
test_determinism_and_types(void **state)
{
    (void)state;
    if (access(SPM_VOCAB, R_OK) != 0)
        skip();
    const char *a = tmp("a.gguf"), *b = tmp("b.gguf"), *c = tmp("c.gguf"), *h = tmp("h.gguf");
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", a, "--seed", "42", "--quiet", NULL),
        0);
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", b, "--seed", "42", "--quiet", NULL),
        0);
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", c, "--seed", "43", "--quiet", NULL),
        0);
    assert_int_equal(run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", h, "--seed", "42",
                         "--type", "f16", "--quiet", NULL),
                     0);
    kf_gguf_t *ga = open_ok(a), *gb = open_ok(b), *gc = open_ok(c), *gh = open_ok(h);
    assert_int_equal(kf_gguf_file_size(ga), kf_gguf_file_size(gb));
    const kf_gguf_tensor_t *ta = kf_gguf_find_tensor(ga, "blk.1.ffn_up.weight");
    const kf_gguf_tensor_t *tb = kf_gguf_find_tensor(gb, "blk.1.ffn_up.weight");
    const kf_gguf_tensor_t *tc = kf_gguf_find_tensor(gc, "blk.1.ffn_up.weight");
    const kf_gguf_tensor_t *th = kf_gguf_find_tensor(gh, "blk.1.ffn_up.weight");
    assert_memory_equal(ta->data, tb->data, ta->n_bytes);
    assert_memory_not_equal(ta->data, tc->data, ta->n_bytes);
    /* Same seed, other type: the f16 weights are the f32 ones rounded to half. */
    assert_int_equal(th->type, KF_TT_F16);
    const float *fa = ta->data;
    const uint8_t *hb = th->data;
    for (uint64_t i = 0; i < ta->n_elements; i++)
        assert_int_equal(kf_fp32_to_fp16(fa[i]), hb[2 * i] | hb[2 * i + 1] << 8);
    /* Different tensors get different streams. */
    assert_memory_not_equal(kf_gguf_find_tensor(ga, "blk.0.ffn_up.weight")->data, ta->data, 64);
    kf_gguf_close(ga);
    kf_gguf_close(gb);
    kf_gguf_close(gc);
    kf_gguf_close(gh);
    unlink(a);
    unlink(b);
    unlink(c);
    unlink(h);
}

static void
test_k_quants_and_fallback(void **state)
{
    (void)state;
    if (access(SPM_VOCAB, R_OK) != 0)
        skip();
    const char *out = tmp("k.gguf");
    /* n_embd 256: rows of 256 take Q4_K; ffn_down rows (n_ff 384) fall back to Q8_0. */
    assert_int_equal(run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--type", "q4_k",
                         "--n-embd", "256", "--n-ff", "384", "--n-layer", "1", "--quiet", NULL),
                     0);
    kf_gguf_t *gf = open_ok(out);
    tensor_ok(gf, "blk.0.attn_q.weight", KF_TT_Q4_K, 256, 256);
    tensor_ok(gf, "blk.0.ffn_down.weight", KF_TT_Q8_0, 384, 256);
    double mean, sd;
    stats(kf_gguf_find_tensor(gf, "token_embd.weight"), &mean, &sd);
    assert_true(fabs(sd - 0.02) < 0.002);
    kf_gguf_close(gf);
    assert_int_equal(run("--arch", "qwen2", "--vocab", SPM_VOCAB, "--out", out, "--type", "q6_k",
                         "--n-embd", "256", "--n-ff", "512", "--n-layer", "1", "--no-tied",
                         "--quiet", NULL),
                     0);
    gf = open_ok(out);
    tensor_ok(gf, "output.weight", KF_TT_Q6_K, 256, 32000);
    tensor_ok(gf, "blk.0.ffn_down.weight", KF_TT_Q6_K, 512, 256);
    kf_gguf_close(gf);
    unlink(out);
}

static void
test_bad_options(void **state)
{
    (void)state;
    const char *out = tmp("bad.gguf");
    assert_int_equal(run("--help", NULL), 0);
    assert_int_equal(run("--arch", "llama", "--vocab", SPM_VOCAB, NULL), 2);
    assert_int_equal(run("--arch", "gpt2", "--vocab", SPM_VOCAB, "--out", out, NULL), 2);
    assert_int_equal(run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--bogus", NULL),
                     2);
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--n-embd", "0", NULL), 2);
    assert_int_equal(run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--n-embd", NULL),
                     2);
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--type", "q2_k", NULL), 1);
    assert_int_equal(
        run("--arch", "llama", "--vocab", SPM_VOCAB, "--out", out, "--n-embd", "66", NULL),
        1); /* 66 does not split into 4 heads */
    assert_int_equal(run("--arch", "llama", "--vocab", "/nonexistent.gguf", "--out", out, NULL), 1);
    assert_int_not_equal(access(out, F_OK), 0); /* nothing was written */
}

int
main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/kf_model_gen_XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_f32),
        cmocka_unit_test(test_qwen2_q8_0_tied),
        cmocka_unit_test(test_determinism_and_types),
        cmocka_unit_test(test_k_quants_and_fallback),
        cmocka_unit_test(test_bad_options),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
