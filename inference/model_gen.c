/*
 * model_gen.c: `kinfer model-gen`, which writes a Llama or Qwen2 GGUF model with seeded random
 * weights and a real tokenizer vocabulary copied from a vocab-only GGUF file.
 *
 * The models are for tests and benchmarks: tensor names, shapes and metadata keys are exactly
 * those llama.cpp writes, so the loader, tokenizer and forward pass see a realistic file, while
 * the weights come from our own deterministic PRNG (splitmix64 + Box-Muller). Each tensor is
 * seeded from (--seed, tensor name), so its values do not depend on write order or type.
 * Tensors are generated, quantized and streamed to disk a chunk of rows at a time, so a
 * Qwen2.5-1.5B-shaped file never needs more than a few MB of memory beyond the vocabulary.
 */
#include "kf_gguf.h"
#include "kf_gguf_writer.h"
#include "kf_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int kf_cmd_model_gen(int argc, char **argv);

typedef struct kf_mg_opts {
    const char *arch;
    const char *type;
    const char *vocab;
    const char *out;
    const char *name;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, ctx;
    uint64_t seed;
    double std;
    int tied;       /* -1 = arch default */
    int rope_freqs; /* llama only */
    int quiet;
} kf_mg_opts_t;

typedef struct kf_mg_rng {
    uint64_t s;
    int have_spare;
    float spare;
} kf_mg_rng_t;

static uint64_t
splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Standard normal by Box-Muller in float: one 64-bit draw gives the two 24-bit uniforms and
 * the pair of results (the second is kept for the next call). Float math keeps a 1.5B-shaped
 * model to seconds; the 24-bit u1 in (0, 1] bounds |z| at about 5.8, fine for test weights. */
static float
rng_normal(kf_mg_rng_t *r)
{
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    uint64_t x = splitmix64(&r->s);
    float u1 = (float)((x >> 40) + 1) * (1.0f / 16777216.0f);
    float u2 = (float)((x >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    float rad = sqrtf(-2.0f * logf(u1)), th = 6.2831853f * u2;
    r->spare = rad * sinf(th);
    r->have_spare = 1;
    return rad * cosf(th);
}

static void
rng_seed(kf_mg_rng_t *r, uint64_t seed, const char *name)
{
    /* FNV-1a of the name mixed into the seed: per-tensor streams that are order-independent. */
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++) {
        h ^= (uint8_t)*p;
        h *= 1099511628211ull;
    }
    r->s = seed ^ h;
    splitmix64(&r->s);
    r->have_spare = 0;
}

/* How a tensor's values are drawn. */
typedef enum { KF_MG_NORMAL, KF_MG_NORM_WEIGHT, KF_MG_ROPE_FREQS } kf_mg_fill_t;

typedef struct kf_mg_tensor {
    char name[96];
    kf_tensor_type_t type;
    uint32_t n_dims;
    uint64_t ne[2];
    kf_mg_fill_t fill;
} kf_mg_tensor_t;

typedef struct kf_mg_plan {
    kf_mg_tensor_t *t;
    size_t n, cap;
} kf_mg_plan_t;

static int
plan_add(kf_mg_plan_t *p,
         const char *name,
         kf_tensor_type_t type,
         uint32_t n_dims,
         uint64_t ne0,
         uint64_t ne1,
         kf_mg_fill_t fill)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        kf_mg_tensor_t *nt = realloc(p->t, cap * sizeof(*nt));
        if (!nt)
            return 0;
        p->t = nt;
        p->cap = cap;
    }
    kf_mg_tensor_t *t = &p->t[p->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    /* 1-D tensors are always F32, as llama.cpp keeps norms and biases. A matrix whose rows
     * do not fill whole blocks falls back (Q8_0 if possible, else F16), as llama.cpp does. */
    if (n_dims == 1)
        type = KF_TT_F32;
    else if (ne0 % kf_tensor_type_block(type))
        type = ne0 % 32 == 0 ? KF_TT_Q8_0 : KF_TT_F16;
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->fill = fill;
    return 1;
}

/* Llama 3.1 rope scaling factors (factor 8, low 1, high 4, original context 8192): one per
 * rotary frequency pair, 1 for high frequencies, `factor` for low ones, smooth between. */
static float
rope_factor(uint32_t i, uint32_t head_dim, double base)
{
    const double factor = 8.0, low = 1.0, high = 4.0, orig_ctx = 8192.0;
    double freq = 1.0 / pow(base, (double)(2 * i) / head_dim);
    double wavelen = 6.283185307179586 / freq;
    if (wavelen < orig_ctx / high)
        return 1.0f;
    if (wavelen > orig_ctx / low)
        return (float)factor;
    double smooth = (orig_ctx / wavelen - low) / (high - low);
    return (float)(1.0 / ((1.0 - smooth) / factor + smooth));
}

static void
usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: kinfer model-gen --arch llama|qwen2 --vocab VOCAB.gguf --out OUT.gguf [options]\n"
        "\n"
        "Writes a GGUF model with seeded random weights, llama.cpp tensor names and metadata,\n"
        "and the real tokenizer (all tokenizer.* keys) copied from VOCAB.gguf, e.g.\n"
        "/work/shared/testdata/tokenizer/ggml-vocab-llama-bpe.gguf or ggml-vocab-qwen2.gguf.\n"
        "\n"
        "Options:\n"
        "  --arch A          llama or qwen2 (required)\n"
        "  --type T          matrix type: f32 f16 bf16 q8_0 q4_0 q4_k q6_k (default f32);\n"
        "                    1-D tensors are always f32\n"
        "  --vocab PATH      vocab-only GGUF to copy the tokenizer from (required)\n"
        "  --out PATH        output file (required)\n"
        "  --n-embd N        embedding size (default 64)\n"
        "  --n-layer N       blocks (default 2)\n"
        "  --n-head N        attention heads (default 4)\n"
        "  --n-head-kv N     key/value heads (default 2)\n"
        "  --n-ff N          feed-forward size (default 128)\n"
        "  --ctx N           context length (default 512)\n"
        "  --seed N          PRNG seed (default 1)\n"
        "  --std X           weight standard deviation (default 0.02)\n"
        "  --tied            no output.weight; logits use token_embd (default for qwen2)\n"
        "  --no-tied         write output.weight (default for llama)\n"
        "  --rope-freqs      llama: add rope_freqs.weight with Llama 3.1 scaling factors\n"
        "  --name S          general.name (default kinfer-test-<arch>)\n"
        "  --quiet           no progress output\n"
        "\n"
        "Benchmark shapes: Qwen2.5-0.5B = --arch qwen2 --n-embd 896 --n-layer 24 --n-head 14\n"
        "--n-head-kv 2 --n-ff 4864 --tied; 1.5B = 1536 28 12 2 8960.\n");
}

static int
parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v == 0 || v > 1u << 24)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int
parse_type(const char *s, kf_tensor_type_t *t, uint32_t *file_type)
{
    static const struct {
        const char *name;
        kf_tensor_type_t t;
        uint32_t ftype; /* llama.cpp's general.file_type (LLAMA_FTYPE_*) */
    } types[] = {
        {"f32", KF_TT_F32, 0},    {"f16", KF_TT_F16, 1},   {"bf16", KF_TT_BF16, 32},
        {"q8_0", KF_TT_Q8_0, 7},  {"q4_0", KF_TT_Q4_0, 2}, {"q4_k", KF_TT_Q4_K, 14},
        {"q6_k", KF_TT_Q6_K, 18},
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (!strcmp(s, types[i].name)) {
            *t = types[i].t;
            *file_type = types[i].ftype;
            return 1;
        }
    }
    return 0;
}

/* Generates one tensor's values chunk by chunk, quantizes and streams them to the writer. */
static kf_err_t
write_tensor(kf_gguf_writer_t *w,
             const kf_mg_tensor_t *t,
             const kf_mg_opts_t *o,
             double rope_base,
             float *fbuf,
             uint8_t *qbuf,
             uint64_t chunk_rows_max,
             char *errstr,
             size_t errstr_size)
{
    kf_mg_rng_t rng;
    float std = (float)o->std;
    rng_seed(&rng, o->seed, t->name);
    uint64_t rows = t->ne[1];
    for (uint64_t r0 = 0; r0 < rows; r0 += chunk_rows_max) {
        uint64_t nr = rows - r0 < chunk_rows_max ? rows - r0 : chunk_rows_max;
        uint64_t n = nr * t->ne[0];
        for (uint64_t i = 0; i < n; i++) {
            switch (t->fill) {
            case KF_MG_NORMAL:
                fbuf[i] = std * rng_normal(&rng);
                break;
            case KF_MG_NORM_WEIGHT:
                fbuf[i] = 1.0f + std * rng_normal(&rng);
                break;
            case KF_MG_ROPE_FREQS:
                fbuf[i] = rope_factor((uint32_t)i, (uint32_t)(2 * t->ne[0]), rope_base);
                break;
            }
        }
        kf_err_t err = kf_quant_row(t->type, fbuf, qbuf, (int64_t)n);
        if (err)
            return kf_err_set(errstr, errstr_size, err, "tensor '%s': quantize failed", t->name);
        err = kf_gguf_writer_put_data(w, qbuf, kf_quant_row_size(t->type, (int64_t)n), errstr,
                                      errstr_size);
        if (err)
            return err;
    }
    return KF_OK;
}

static kf_err_t
model_gen(const kf_mg_opts_t *o, char *errstr, size_t errstr_size)
{
    kf_gguf_t *vocab = NULL;
    kf_gguf_writer_t *w = NULL;
    kf_mg_plan_t plan = {0};
    float *fbuf = NULL;
    uint8_t *qbuf = NULL;
    kf_tensor_type_t mtype;
    uint32_t file_type;
    kf_err_t err;
    char key[128], name[96];
    int qwen = !strcmp(o->arch, "qwen2");
    int started = 0; /* output file created */

    if (!parse_type(o->type, &mtype, &file_type))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "unknown --type '%s'", o->type);
    if (o->n_embd % o->n_head || o->n_head % o->n_head_kv || (o->n_embd / o->n_head) % 2)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "n_embd %u must split into %u heads of even size, and n_head must be a "
                          "multiple of n_head_kv %u",
                          o->n_embd, o->n_head, o->n_head_kv);
    err = kf_gguf_open(o->vocab, &vocab, errstr, errstr_size);
    if (err)
        return err;
    uint64_t n_vocab;
    kf_gguf_type_t et;
    if (kf_gguf_get_arr(vocab, "tokenizer.ggml.tokens", &et, &n_vocab) != KF_OK ||
        et != KF_GGUF_TYPE_STRING || n_vocab == 0 || n_vocab > UINT32_MAX) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                         "%s: no usable tokenizer.ggml.tokens string array", o->vocab);
        goto out;
    }

    uint32_t head_dim = o->n_embd / o->n_head, kv_dim = head_dim * o->n_head_kv;
    int tied = o->tied >= 0 ? o->tied : qwen;
    double rope_base = qwen ? 1000000.0 : 500000.0;

    err = kf_gguf_writer_new(&w, errstr, errstr_size);
    if (err)
        goto out;
    /* Metadata, in the order llama.cpp's converter writes it. */
    err = kf_gguf_writer_add_str(w, "general.architecture", o->arch);
    if (!err) {
        char def[64];
        snprintf(def, sizeof(def), "kinfer-test-%s", o->arch);
        err = kf_gguf_writer_add_str(w, "general.name", o->name ? o->name : def);
    }
    if (!err)
        err = kf_gguf_writer_set_alignment(w, 32);
    if (!err)
        err = kf_gguf_writer_add_u32(w, "general.file_type", file_type);
#define ARCH_KEY(suffix) (snprintf(key, sizeof(key), "%s." suffix, o->arch), key)
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("context_length"), o->ctx);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("embedding_length"), o->n_embd);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("block_count"), o->n_layer);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("feed_forward_length"), o->n_ff);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("attention.head_count"), o->n_head);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("attention.head_count_kv"), o->n_head_kv);
    if (!err)
        err = kf_gguf_writer_add_f32(w, ARCH_KEY("rope.freq_base"), (float)rope_base);
    if (!err)
        err = kf_gguf_writer_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"),
                                     qwen ? 1e-6f : 1e-5f);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("rope.dimension_count"), head_dim);
    if (!err)
        err = kf_gguf_writer_add_u32(w, ARCH_KEY("vocab_size"), (uint32_t)n_vocab);
#undef ARCH_KEY
    /* The whole tokenizer, verbatim. */
    for (int64_t i = 0; !err && i < (int64_t)kf_gguf_n_kv(vocab); i++) {
        kf_gguf_str_t k = kf_gguf_key_name(vocab, i);
        if (k.len > 10 && !memcmp(k.ptr, "tokenizer.", 10))
            err = kf_gguf_writer_copy_kv(w, vocab, i);
    }
    if (err) {
        err = kf_err_set(errstr, errstr_size, err, "building metadata failed");
        goto out;
    }

    /* Tensor plan. ne[0] is the input dimension of every weight matrix. */
    int ok = 1;
    if (!qwen && o->rope_freqs)
        ok &= plan_add(&plan, "rope_freqs.weight", KF_TT_F32, 1, head_dim / 2, 1, KF_MG_ROPE_FREQS);
    ok &= plan_add(&plan, "token_embd.weight", mtype, 2, o->n_embd, n_vocab, KF_MG_NORMAL);
    for (uint32_t l = 0; l < o->n_layer && ok; l++) {
        static const struct {
            const char *suffix;
            int kind; /* 0 norm, 1 q/o, 2 k/v, 3 gate/up, 4 down, 5 q bias, 6 kv bias */
        } blk[] = {
            {"attn_norm.weight", 0}, {"attn_q.weight", 1},      {"attn_q.bias", 5},
            {"attn_k.weight", 2},    {"attn_k.bias", 6},        {"attn_v.weight", 2},
            {"attn_v.bias", 6},      {"attn_output.weight", 1}, {"ffn_norm.weight", 0},
            {"ffn_gate.weight", 3},  {"ffn_up.weight", 3},      {"ffn_down.weight", 4},
        };
        for (size_t j = 0; j < sizeof(blk) / sizeof(blk[0]) && ok; j++) {
            snprintf(name, sizeof(name), "blk.%u.%s", l, blk[j].suffix);
            switch (blk[j].kind) {
            case 0:
                ok &= plan_add(&plan, name, KF_TT_F32, 1, o->n_embd, 1, KF_MG_NORM_WEIGHT);
                break;
            case 1:
                ok &= plan_add(&plan, name, mtype, 2, o->n_embd, o->n_embd, KF_MG_NORMAL);
                break;
            case 2:
                ok &= plan_add(&plan, name, mtype, 2, o->n_embd, kv_dim, KF_MG_NORMAL);
                break;
            case 3:
                ok &= plan_add(&plan, name, mtype, 2, o->n_embd, o->n_ff, KF_MG_NORMAL);
                break;
            case 4:
                ok &= plan_add(&plan, name, mtype, 2, o->n_ff, o->n_embd, KF_MG_NORMAL);
                break;
            case 5:
                if (qwen)
                    ok &= plan_add(&plan, name, KF_TT_F32, 1, o->n_embd, 1, KF_MG_NORMAL);
                break;
            case 6:
                if (qwen)
                    ok &= plan_add(&plan, name, KF_TT_F32, 1, kv_dim, 1, KF_MG_NORMAL);
                break;
            }
        }
    }
    ok &= plan_add(&plan, "output_norm.weight", KF_TT_F32, 1, o->n_embd, 1, KF_MG_NORM_WEIGHT);
    if (!tied)
        ok &= plan_add(&plan, "output.weight", mtype, 2, o->n_embd, n_vocab, KF_MG_NORMAL);
    if (!ok) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory planning tensors");
        goto out;
    }

    uint64_t max_ne0 = 0;
    for (size_t i = 0; i < plan.n; i++) {
        err = kf_gguf_writer_add_tensor(w, plan.t[i].name, plan.t[i].type, plan.t[i].n_dims,
                                        plan.t[i].ne, NULL);
        if (err) {
            err = kf_err_set(errstr, errstr_size, err, "tensor '%s': bad shape", plan.t[i].name);
            goto out;
        }
        if (plan.t[i].ne[0] > max_ne0)
            max_ne0 = plan.t[i].ne[0];
    }

    /* Chunks of about 1M elements: small buffers, few writes. */
    uint64_t chunk_rows = (1u << 20) / max_ne0;
    if (chunk_rows == 0)
        chunk_rows = 1;
    fbuf = malloc((size_t)(chunk_rows * max_ne0) * sizeof(float));
    qbuf = malloc((size_t)(chunk_rows * max_ne0) * sizeof(float));
    if (!fbuf || !qbuf) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t total = kf_gguf_writer_file_size(w);
    int progress = !o->quiet && total > (64ull << 20);
    err = kf_gguf_writer_begin_file(w, o->out, errstr, errstr_size);
    if (err)
        goto out;
    started = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < plan.n; i++) {
        err =
            write_tensor(w, &plan.t[i], o, rope_base, fbuf, qbuf, chunk_rows, errstr, errstr_size);
        if (err)
            goto out;
        if (progress && (i % 10 == 9 || i + 1 == plan.n))
            fprintf(stderr, "model-gen: %zu/%zu tensors written\n", i + 1, plan.n);
    }
    err = kf_gguf_writer_finish(w, errstr, errstr_size);
    if (err)
        goto out;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!o->quiet)
        fprintf(stderr,
                "model-gen: wrote %s: %s %s, n_vocab %llu, %u layers, %zu tensors, %.1f MB in "
                "%.1f s\n",
                o->out, o->arch, o->type, (unsigned long long)n_vocab, o->n_layer, plan.n,
                (double)total / 1e6,
                (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
out:
    /* Never leave a half-written model behind to be mistaken for a good one. */
    if (err && w && started) {
        kf_gguf_writer_destroy(w);
        w = NULL;
        unlink(o->out);
    }
    free(fbuf);
    free(qbuf);
    free(plan.t);
    kf_gguf_writer_destroy(w);
    kf_gguf_close(vocab);
    return err;
}

int
kf_cmd_model_gen(int argc, char **argv)
{
    kf_mg_opts_t o = {
        .type = "f32",
        .n_embd = 64,
        .n_layer = 2,
        .n_head = 4,
        .n_head_kv = 2,
        .n_ff = 128,
        .ctx = 512,
        .seed = 1,
        .std = 0.02,
        .tied = -1,
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int need = 1; /* option takes a value */
        uint32_t *u = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tied")) {
            o.tied = 1;
            need = 0;
        } else if (!strcmp(a, "--no-tied")) {
            o.tied = 0;
            need = 0;
        } else if (!strcmp(a, "--rope-freqs")) {
            o.rope_freqs = 1;
            need = 0;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
            need = 0;
        } else if (!strcmp(a, "--arch")) {
            o.arch = v;
        } else if (!strcmp(a, "--type")) {
            o.type = v;
        } else if (!strcmp(a, "--vocab")) {
            o.vocab = v;
        } else if (!strcmp(a, "--out")) {
            o.out = v;
        } else if (!strcmp(a, "--name")) {
            o.name = v;
        } else if (!strcmp(a, "--n-embd")) {
            u = &o.n_embd;
        } else if (!strcmp(a, "--n-layer")) {
            u = &o.n_layer;
        } else if (!strcmp(a, "--n-head")) {
            u = &o.n_head;
        } else if (!strcmp(a, "--n-head-kv")) {
            u = &o.n_head_kv;
        } else if (!strcmp(a, "--n-ff")) {
            u = &o.n_ff;
        } else if (!strcmp(a, "--ctx")) {
            u = &o.ctx;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            if (v)
                o.seed = strtoull(v, &end, 10);
            if (!v || !*v || *end) {
                fprintf(stderr, "model-gen: --seed needs an unsigned integer\n");
                return 2;
            }
        } else if (!strcmp(a, "--std")) {
            char *end;
            if (v)
                o.std = strtod(v, &end);
            if (!v || !*v || *end || !(o.std >= 0 && o.std < 10)) {
                fprintf(stderr, "model-gen: --std needs a number in [0, 10)\n");
                return 2;
            }
        } else {
            fprintf(stderr, "model-gen: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (need) {
            if (!v) {
                fprintf(stderr, "model-gen: %s needs a value\n", a);
                return 2;
            }
            if (u && !parse_u32(v, u)) {
                fprintf(stderr, "model-gen: %s needs a positive integer, got '%s'\n", a, v);
                return 2;
            }
            i++;
        }
    }
    if (!o.arch || !o.vocab || !o.out) {
        fprintf(stderr, "model-gen: --arch, --vocab and --out are required (see --help)\n");
        return 2;
    }
    if (strcmp(o.arch, "llama") && strcmp(o.arch, "qwen2")) {
        fprintf(stderr, "model-gen: --arch must be llama or qwen2, got '%s'\n", o.arch);
        return 2;
    }
    char errstr[512];
    kf_err_t err = model_gen(&o, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "model-gen: %s (%s)\n", errstr, kf_err_str(err));
        return 1;
    }
    return 0;
}
