/*
 * Unit tests of model loading and the CPU forward pass on tiny models built in memory with the
 * GGUF writer:
 *   - hparams come out right for llama and qwen2; missing or misshapen tensors, missing keys and
 *     unsupported architectures give clear errors naming the problem;
 *   - the forward pass is self-consistent: prefill of a whole prompt, token-by-token decode,
 *     and a mixed batch with another sequence all give the same logits; thread count does not
 *     change the result; freeing a sequence and recomputing reproduces it; F16 KV is close to
 *     F32 KV;
 *   - bad batches are rejected before anything runs.
 * Numerical agreement with an independent implementation is the job of the numpy parity tests
 * (tests/integration/model_ref.cmake).
 */
#include "kf_backend.h"
#include "kf_gguf_writer.h"
#include "kf_kv.h"
#include "kf_model.h"
#include "kf_quant.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { E = 64, NH = 4, NKV = 2, HD = 16, FF = 96, NL = 2, NV = 40 };

typedef struct spec {
    const char *arch;
    kf_tensor_type_t type;
    int tied;
    const char *omit;     /* tensor to leave out */
    const char *misshape; /* tensor written with one row too many */
    const char *omit_key; /* metadata key suffix to leave out */
    uint32_t head_count;  /* 0 = NH */
    int via_q4_0;         /* matrices: values rounded to Q4_0 first, then stored as `type` */
} spec_t;

typedef struct built {
    void *buf;
    kf_model_t *model;
    float *data[64];
    int n_data;
} built_t;

static uint64_t rng = 12345;

static float
rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void
add_tensor(kf_gguf_writer_t *w,
           built_t *b,
           const spec_t *s,
           const char *name,
           uint64_t n0,
           uint64_t n1,
           int is_norm)
{
    if (s->omit && !strcmp(s->omit, name))
        return;
    if (s->misshape && !strcmp(s->misshape, name))
        n1 += 1;
    uint64_t n = n0 * n1;
    float *f = malloc(sizeof(float) * n);
    for (uint64_t i = 0; i < n; i++)
        f[i] = is_norm ? 1.0f + 0.1f * rnd() : 0.3f * rnd();
    kf_tensor_type_t t = (n1 == 1 && (is_norm || strstr(name, "bias"))) ? KF_TT_F32 : s->type;
    if (s->via_q4_0 && t != KF_TT_F32) {
        void *q4 = malloc(kf_quant_row_size(KF_TT_Q4_0, (int64_t)n));
        assert_int_equal(kf_quant_row(KF_TT_Q4_0, f, q4, (int64_t)n), KF_OK);
        assert_int_equal(kf_dequant_row(KF_TT_Q4_0, q4, f, (int64_t)n), KF_OK);
        free(q4);
    }
    void *q = malloc(kf_quant_row_size(t, (int64_t)n));
    assert_int_equal(kf_quant_row(t, f, q, (int64_t)n), KF_OK);
    free(f);
    b->data[b->n_data++] = q;
    uint64_t ne[2] = {n0, n1};
    assert_int_equal(kf_gguf_writer_add_tensor(w, name, t, n1 == 1 ? 1 : 2, ne, q), KF_OK);
}

/* Builds the model; returns the load error (model in b->model on success). */
static kf_err_t
build(const spec_t *s, built_t *b, char *err, size_t errsz)
{
    memset(b, 0, sizeof(*b));
    kf_gguf_writer_t *w = NULL;
    assert_int_equal(kf_gguf_writer_new(&w, err, errsz), KF_OK);
    char key[128];
    kf_gguf_writer_add_str(w, "general.architecture", s->arch);
#define KEY(sfx)  (snprintf(key, sizeof(key), "%s.%s", s->arch, sfx), key)
#define SKIP(sfx) (s->omit_key && !strcmp(s->omit_key, sfx))
    if (!SKIP("embedding_length"))
        kf_gguf_writer_add_u32(w, KEY("embedding_length"), E);
    kf_gguf_writer_add_u32(w, KEY("block_count"), NL);
    kf_gguf_writer_add_u32(w, KEY("feed_forward_length"), FF);
    kf_gguf_writer_add_u32(w, KEY("attention.head_count"), s->head_count ? s->head_count : NH);
    kf_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), NKV);
    kf_gguf_writer_add_u32(w, KEY("context_length"), 256);
    kf_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    kf_gguf_writer_add_f32(w, KEY("rope.freq_base"), 10000.0f);
    int qwen = !strcmp(s->arch, "qwen2");
    add_tensor(w, b, s, "token_embd.weight", E, NV, 0);
    char name[64];
    for (int l = 0; l < NL; l++) {
#define T(sfx, n0, n1, norm) \
    (snprintf(name, sizeof(name), "blk.%d.%s", l, sfx), add_tensor(w, b, s, name, n0, n1, norm))
        T("attn_norm.weight", E, 1, 1);
        T("attn_q.weight", E, NH * HD, 0);
        T("attn_k.weight", E, NKV * HD, 0);
        T("attn_v.weight", E, NKV * HD, 0);
        if (qwen) {
            T("attn_q.bias", NH * HD, 1, 0);
            T("attn_k.bias", NKV * HD, 1, 0);
            T("attn_v.bias", NKV * HD, 1, 0);
        }
        T("attn_output.weight", NH * HD, E, 0);
        T("ffn_norm.weight", E, 1, 1);
        T("ffn_gate.weight", E, FF, 0);
        T("ffn_up.weight", E, FF, 0);
        T("ffn_down.weight", FF, E, 0);
#undef T
    }
    add_tensor(w, b, s, "output_norm.weight", E, 1, 1);
    if (!s->tied)
        add_tensor(w, b, s, "output.weight", E, NV, 0);
    size_t size = 0;
    assert_int_equal(kf_gguf_writer_write_mem(w, &b->buf, &size, err, errsz), KF_OK);
    kf_gguf_writer_destroy(w);
    kf_gguf_t *gf = NULL;
    assert_int_equal(kf_gguf_open_mem(b->buf, size, &gf, err, errsz), KF_OK);
    kf_err_t e = kf_model_load_gguf(gf, &b->model, err, errsz);
    if (e)
        kf_gguf_close(gf);
    return e;
}

static void
unbuild(built_t *b)
{
    kf_model_destroy(b->model);
    free(b->buf);
    for (int i = 0; i < b->n_data; i++)
        free(b->data[i]);
}

static void
test_load_hparams(void **state)
{
    (void)state;
    char err[512];
    built_t b;
    spec_t s = {.arch = "llama", .type = KF_TT_F32};
    assert_int_equal(build(&s, &b, err, sizeof(err)), KF_OK);
    const kf_hparams_t *hp = kf_model_hparams(b.model);
    assert_int_equal(hp->arch, KF_ARCH_LLAMA);
    assert_int_equal(hp->n_vocab, NV);
    assert_int_equal(hp->n_embd, E);
    assert_int_equal(hp->n_head, NH);
    assert_int_equal(hp->n_head_kv, NKV);
    assert_int_equal(hp->head_dim, HD);
    assert_int_equal(hp->n_rot, HD);
    assert_int_equal(hp->n_ff, FF);
    assert_int_equal(hp->n_ctx_train, 256);
    assert_int_equal(hp->rope_order, KF_ROPE_NORMAL);
    assert_int_equal(hp->tied_output, 0);
    assert_true(fabsf(hp->rms_eps - 1e-6f) < 1e-12f);
    assert_null(kf_model_weights(b.model)->layers[0].bq.data);
    float inv[HD / 2];
    kf_model_rope_inv_freq(b.model, inv);
    assert_true(fabs(inv[0] - 1.0) < 1e-7);
    assert_true(fabs(inv[1] - pow(10000.0, -2.0 / HD)) < 1e-7);
    unbuild(&b);

    spec_t q = {.arch = "qwen2", .type = KF_TT_Q8_0, .tied = 1};
    assert_int_equal(build(&q, &b, err, sizeof(err)), KF_OK);
    hp = kf_model_hparams(b.model);
    assert_int_equal(hp->arch, KF_ARCH_QWEN2);
    assert_int_equal(hp->rope_order, KF_ROPE_NEOX);
    assert_int_equal(hp->tied_output, 1);
    const kf_model_weights_t *w = kf_model_weights(b.model);
    assert_ptr_equal(w->output.data, w->tok_embd.data);
    assert_non_null(w->layers[1].bv.data);
    assert_int_equal(w->layers[0].wq.type, KF_TT_Q8_0);
    assert_string_equal(kf_arch_name(hp->arch), "qwen2");
    unbuild(&b);
}

static void
expect_load_error(spec_t s, kf_err_t want, const char *needle)
{
    char err[512] = "";
    built_t b;
    kf_err_t e = build(&s, &b, err, sizeof(err));
    if (e != want || !strstr(err, needle)) {
        print_error("expected %s containing '%s', got %s: %s\n", kf_err_str(want), needle,
                    kf_err_str(e), err);
        fail();
    }
    assert_null(b.model);
    unbuild(&b);
}

static void
test_load_errors(void **state)
{
    (void)state;
    expect_load_error((spec_t){.arch = "llama", .type = KF_TT_F32, .omit = "blk.1.ffn_up.weight"},
                      KF_ERR_FORMAT, "blk.1.ffn_up.weight is missing");
    expect_load_error(
        (spec_t){.arch = "llama", .type = KF_TT_F16, .misshape = "blk.0.attn_k.weight"},
        KF_ERR_FORMAT, "blk.0.attn_k.weight has shape");
    expect_load_error((spec_t){.arch = "qwen2", .type = KF_TT_F32, .omit = "blk.0.attn_v.bias"},
                      KF_ERR_FORMAT, "blk.0.attn_v.bias is missing");
    expect_load_error((spec_t){.arch = "gpt2", .type = KF_TT_F32}, KF_ERR_UNSUPPORTED, "gpt2");
    expect_load_error((spec_t){.arch = "llama", .type = KF_TT_F32, .omit_key = "embedding_length"},
                      KF_ERR_FORMAT, "llama.embedding_length is missing");
    expect_load_error((spec_t){.arch = "llama", .type = KF_TT_F32, .head_count = 3}, KF_ERR_FORMAT,
                      "inconsistent dimensions");
    expect_load_error((spec_t){.arch = "llama", .type = KF_TT_F32, .omit = "output_norm.weight"},
                      KF_ERR_FORMAT, "output_norm.weight");
    char err[256];
    kf_model_t *m = NULL;
    assert_int_not_equal(kf_model_load("/nonexistent/model.gguf", &m, err, sizeof(err)), KF_OK);
    assert_null(m);
    kf_model_destroy(NULL);
}

/* An engine over one model: kv (F32 unless f16) and a CPU backend. */
typedef struct eng {
    kf_kv_t *kv;
    kf_backend_t *be;
} eng_t;

static int g_requant; /* eng_new: kf_backend_conf_t.requant_q8 */

static void
eng_new(eng_t *e, const kf_model_t *m, int f16, int threads)
{
    char err[256];
    kf_kv_conf_t kc = {.budget_bytes = 1 << 20,
                       .block_tokens = 4,
                       .max_seqs = 8,
                       .dtype = f16 ? KF_KV_F16 : KF_KV_F32};
    assert_int_equal(kf_kv_new(m, &kc, &e->kv, err, sizeof(err)), KF_OK);
    kf_backend_conf_t bc = {.n_threads = threads, .max_batch = 64, .requant_q8 = g_requant};
    assert_int_equal(kf_backend_new("cpu", m, e->kv, &bc, &e->be, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_backend_n_threads(e->be), threads);
    assert_string_equal(kf_backend_name(e->be), "cpu");
}

static void
eng_free(eng_t *e)
{
    kf_backend_destroy(e->be);
    kf_kv_destroy(e->kv);
}

static const int32_t prompt[] = {3, 17, 5, 39, 0, 22, 22, 8, 1, 30, 12};
#define NP ((int)(sizeof(prompt) / sizeof(prompt[0])))

/* Runs `prompt` through a new sequence in chunks of `chunk`; logits of every position. */
static void
run_prompt(eng_t *e, int chunk, float *out)
{
    char err[256];
    int32_t seq;
    assert_int_equal(kf_kv_seq_new(e->kv, &seq), KF_OK);
    assert_int_equal(kf_kv_seq_reserve(e->kv, seq, NP), KF_OK);
    kf_batch_tok_t toks[NP];
    for (int p0 = 0; p0 < NP; p0 += chunk) {
        int n = NP - p0 < chunk ? NP - p0 : chunk;
        for (int k = 0; k < n; k++)
            toks[k] =
                (kf_batch_tok_t){.token = prompt[p0 + k], .pos = p0 + k, .seq = seq, .logits = 1};
        kf_batch_t b = {.toks = toks, .n_tokens = (uint32_t)n};
        kf_logits_t lg = {.data = out + (size_t)p0 * NV, .cap_rows = (uint32_t)n};
        assert_int_equal(kf_backend_forward(e->be, &b, &lg, err, sizeof(err)), KF_OK);
        assert_int_equal(lg.n_rows, n);
        assert_int_equal(lg.n_vocab, NV);
    }
    kf_kv_seq_free(e->kv, seq);
}

static double
max_rel_diff(const float *a, const float *b, size_t n)
{
    double mx = 0.0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs((double)a[i] - b[i]));
        mag = fmax(mag, fabs((double)b[i]));
    }
    return mx / mag;
}

static void
check_consistency(kf_tensor_type_t type, const char *arch)
{
    char err[512];
    built_t b;
    spec_t s = {.arch = arch, .type = type, .tied = !strcmp(arch, "qwen2")};
    assert_int_equal(build(&s, &b, err, sizeof(err)), KF_OK);
    static float ref[NP * NV], got[NP * NV];
    eng_t e1, e3;
    eng_new(&e1, b.model, 0, 1);
    eng_new(&e3, b.model, 0, 3);

    run_prompt(&e1, NP, ref);
    for (size_t i = 0; i < NP * NV; i++)
        assert_true(isfinite(ref[i]));
    /* Different positions give different logits (RoPE and attention are doing something). */
    assert_true(max_rel_diff(ref, ref + NV, NV) > 1e-3);

    /* Thread count: rows and heads are partitioned, never summed across threads: identical. */
    run_prompt(&e3, NP, got);
    assert_memory_equal(got, ref, sizeof(ref));
    /* Decode token by token, and chunks of 3 (chunks straddle KV blocks of 4). */
    run_prompt(&e3, 1, got);
    assert_true(max_rel_diff(got, ref, NP * NV) < 1e-5);
    run_prompt(&e1, 3, got);
    assert_true(max_rel_diff(got, ref, NP * NV) < 1e-5);

    /* Mixed batch: a second sequence decodes alongside the prompt's prefill, with its own
     * different tokens; our rows must not change. Freed and recomputed sequences reuse blocks
     * that hold stale K/V of other tokens: the result must not depend on them. */
    int32_t a, o;
    assert_int_equal(kf_kv_seq_new(e3.kv, &o), KF_OK);
    assert_int_equal(kf_kv_seq_new(e3.kv, &a), KF_OK);
    assert_int_equal(kf_kv_seq_reserve(e3.kv, o, NP), KF_OK);
    assert_int_equal(kf_kv_seq_reserve(e3.kv, a, NP), KF_OK);
    kf_batch_tok_t toks[2 * NP];
    uint32_t n = 0;
    for (int p = 0; p < 4; p++)
        toks[n++] = (kf_batch_tok_t){.token = (p * 7) % NV, .pos = p, .seq = o, .logits = 0};
    for (int p = 0; p < NP; p++)
        toks[n++] = (kf_batch_tok_t){.token = prompt[p], .pos = p, .seq = a, .logits = 1};
    toks[n++] = (kf_batch_tok_t){.token = 9, .pos = 4, .seq = o, .logits = 1};
    static float mixed[(NP + 1) * NV];
    kf_batch_t bt = {.toks = toks, .n_tokens = n};
    kf_logits_t lg = {.data = mixed, .cap_rows = NP + 1};
    assert_int_equal(kf_backend_forward(e3.be, &bt, &lg, err, sizeof(err)), KF_OK);
    assert_int_equal(lg.n_rows, NP + 1);
    assert_true(max_rel_diff(mixed, ref, NP * NV) < 1e-5);
    kf_kv_seq_free(e3.kv, o);
    kf_kv_seq_free(e3.kv, a);

    /* F16 KV: close, not equal. */
    eng_t eh;
    eng_new(&eh, b.model, 1, 2);
    run_prompt(&eh, 2, got);
    double d16 = max_rel_diff(got, ref, NP * NV);
    print_message("f16 kv: max rel diff %g\n", d16);
    assert_true(d16 < 5e-2);
    eng_free(&eh);

    eng_free(&e1);
    eng_free(&e3);
    unbuild(&b);
}

static void
test_forward_consistency(void **state)
{
    (void)state;
    check_consistency(KF_TT_F32, "llama");
    check_consistency(KF_TT_F16, "qwen2");
    check_consistency(KF_TT_Q8_0, "llama");
    check_consistency(KF_TT_Q4_0, "qwen2");
    check_consistency(KF_TT_BF16, "llama");
    /* The same invariants with Q4_0 matrices run as Q8_0x8. */
    g_requant = 1;
    check_consistency(KF_TT_Q4_0, "qwen2");
    g_requant = 0;
}

/* requant_q8: a Q4_0 model run with Q4_0 matrices converted to Q8_0x8 gives exactly the logits
 * of a Q8_0 model whose weights are the Q8_0 rounding of the same Q4_0 values (both run the
 * Q8_0x8 kernels on the same bytes), and different ones from the Q4_0 kernels. */
static void
test_forward_requant(void **state)
{
    (void)state;
    char err[512];
    built_t b4, b8;
    spec_t s4 = {.arch = "qwen2", .type = KF_TT_Q4_0, .tied = 1};
    spec_t s8 = {.arch = "qwen2", .type = KF_TT_Q8_0, .tied = 1, .via_q4_0 = 1};
    rng = 777;
    assert_int_equal(build(&s4, &b4, err, sizeof(err)), KF_OK);
    rng = 777;
    assert_int_equal(build(&s8, &b8, err, sizeof(err)), KF_OK);
    static float q4[NP * NV], rq[NP * NV], q8[NP * NV];
    eng_t e4, erq, e8;
    eng_new(&e4, b4.model, 0, 2);
    eng_new(&e8, b8.model, 0, 2);
    g_requant = 1;
    eng_new(&erq, b4.model, 0, 2);
    g_requant = 0;
    run_prompt(&e4, NP, q4);
    run_prompt(&erq, NP, rq);
    run_prompt(&e8, NP, q8);
    assert_memory_equal(rq, q8, sizeof(rq));
    double d = max_rel_diff(rq, q4, NP * NV);
    print_message("requant_q8 vs q4_0 kernels: max rel diff %g\n", d);
    assert_true(d > 0.0);
    eng_free(&e4);
    eng_free(&erq);
    eng_free(&e8);
    unbuild(&b4);
    unbuild(&b8);
}

static void
test_forward_rejects_bad_batches(void **state)
{
    (void)state;
    char err[512];
    built_t b;
    spec_t s = {.arch = "llama", .type = KF_TT_F32};
    assert_int_equal(build(&s, &b, err, sizeof(err)), KF_OK);
    eng_t e;
    eng_new(&e, b.model, 0, 1);
    int32_t seq;
    assert_int_equal(kf_kv_seq_new(e.kv, &seq), KF_OK);
    assert_int_equal(kf_kv_seq_reserve(e.kv, seq, 5), KF_OK); /* capacity 8 */
    float out[2 * NV];
    kf_logits_t lg = {.data = out, .cap_rows = 1};
    struct {
        kf_batch_tok_t t[2];
        uint32_t n;
        const char *needle;
    } cases[] = {
        {{{NV, 0, 0, 1}}, 1, "outside [0, 40)"},
        {{{-1, 0, 0, 1}}, 1, "outside"},
        {{{1, 8, 0, 1}}, 1, "outside the 8 reserved"},
        {{{1, -1, 0, 1}}, 1, "position -1"},
        {{{1, 0, 5, 1}}, 1, "sequence 5"},
        {{{1, 0, 0, 0}, {2, 0, 0, 0}}, 2, "share sequence"},
        {{{1, 0, 0, 1}, {2, 1, 0, 1}}, 2, "2 logits rows wanted, output holds 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cases[i].t[0].seq = cases[i].t[0].seq == 5 ? 5 : seq;
        if (cases[i].n > 1)
            cases[i].t[1].seq = seq;
        kf_batch_t bt = {.toks = cases[i].t, .n_tokens = cases[i].n};
        err[0] = '\0';
        assert_int_equal(kf_backend_forward(e.be, &bt, &lg, err, sizeof(err)), KF_ERR_INVALID_ARG);
        if (!strstr(err, cases[i].needle)) {
            print_error("case %zu: '%s' lacks '%s'\n", i, err, cases[i].needle);
            fail();
        }
    }
    kf_batch_t empty = {.toks = NULL, .n_tokens = 0};
    assert_int_equal(kf_backend_forward(e.be, &empty, &lg, err, sizeof(err)), KF_ERR_INVALID_ARG);
    static kf_batch_tok_t many[65];
    kf_batch_t big = {.toks = many, .n_tokens = 65};
    assert_int_equal(kf_backend_forward(e.be, &big, &lg, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "max_batch 64"));

    /* Backend selection and geometry checks. */
    kf_backend_t *be = NULL;
    assert_int_equal(kf_backend_new("tpu", b.model, e.kv, NULL, &be, err, sizeof(err)),
                     KF_ERR_NOT_FOUND);
    if (!kf_backend_available("cuda"))
        assert_int_equal(kf_backend_new("cuda", b.model, e.kv, NULL, &be, err, sizeof(err)),
                         KF_ERR_UNSUPPORTED);
    assert_true(kf_backend_available("cpu"));
    kf_kv_t *other = NULL;
    kf_kv_conf_t kc = {.budget_bytes = 1 << 20};
    assert_int_equal(kf_kv_new_dims(NL + 1, NKV, HD, &kc, &other, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_backend_new("cpu", b.model, other, NULL, &be, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_null(be);
    kf_kv_destroy(other);
    kf_backend_destroy(NULL);
    eng_free(&e);
    unbuild(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_hparams),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_forward_consistency),
        cmocka_unit_test(test_forward_requant),
        cmocka_unit_test(test_forward_rejects_bad_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
