/*
 * ref_driver: runs our engine (kf_model + kf_kv + a kf_backend) on given token ids and writes
 * the logits of every position as raw little-endian float32 [n_tokens][n_vocab], for the numpy
 * reference (ref_model.py) to compare against. The batching mode decides how the tokens are fed,
 * so the same expected logits check prefill, token-by-token decode, chunked prefill and a mixed
 * batch where another sequence runs alongside (continuous batching must not leak between
 * sequences).
 *
 * It also has a --bench mode that prints prefill and batched-decode throughput.
 */
#include "kf_backend.h"
#include "kf_kv.h"
#include "kf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: ref_driver --model M.gguf [options] (--out LOGITS.f32 TOKEN... | --bench)\n"
        "  --mode M          prefill (default) | decode | chunk=N | mixed\n"
        "  --kv T            f32 (default) | f16\n"
        "  --block-tokens N  KV block size (default 4, so short prompts span blocks)\n"
        "  --threads N       CPU threads (default: all cores)\n"
        "  --backend B       cpu (default) | cuda\n"
        "  --bench           print prefill and decode tokens/s (--bench-seqs, --bench-steps)\n");
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct drv {
    kf_model_t *model;
    kf_kv_t *kv;
    kf_backend_t *be;
    uint32_t n_vocab;
} drv_t;

/* Runs one batch; rows of logits go to out (room for all). Returns 0 on success. */
static int
run_batch(drv_t *d, const kf_batch_tok_t *toks, uint32_t n, float *out, uint32_t cap_rows)
{
    char err[512];
    kf_batch_t b = {.toks = toks, .n_tokens = n};
    kf_logits_t lg = {.data = out, .cap_rows = cap_rows};
    if (kf_backend_forward(d->be, &b, &lg, err, sizeof(err))) {
        fprintf(stderr, "ref_driver: %s\n", err);
        return 1;
    }
    return 0;
}

static int
bench(drv_t *d, int n_seqs, int steps)
{
    const uint32_t prompt = 64;
    float *out = malloc(sizeof(float) * d->n_vocab * (size_t)(n_seqs > 1 ? n_seqs : 1));
    kf_batch_tok_t *toks =
        calloc(prompt > (uint32_t)n_seqs ? prompt : (uint32_t)n_seqs, sizeof(*toks));
    int32_t *seq = calloc((size_t)n_seqs, sizeof(int32_t));
    if (!out || !toks || !seq)
        return 1;
    double t_pre = 0.0;
    for (int s = 0; s < n_seqs; s++) {
        if (kf_kv_seq_new(d->kv, &seq[s]) ||
            kf_kv_seq_reserve(d->kv, seq[s], prompt + (uint32_t)steps)) {
            fprintf(stderr, "ref_driver: KV budget too small for the benchmark\n");
            return 1;
        }
        for (uint32_t i = 0; i < prompt; i++)
            toks[i] = (kf_batch_tok_t){.token = (int32_t)((i * 7919u + (uint32_t)s) % d->n_vocab),
                                       .pos = (int32_t)i,
                                       .seq = seq[s],
                                       .logits = i == prompt - 1};
        double t0 = now_s();
        if (run_batch(d, toks, prompt, out, 1))
            return 1;
        t_pre += now_s() - t0;
    }
    double t0 = now_s();
    for (int st = 0; st < steps; st++) {
        for (int s = 0; s < n_seqs; s++)
            toks[s] = (kf_batch_tok_t){.token = (int32_t)((st * 31u + (uint32_t)s) % d->n_vocab),
                                       .pos = (int32_t)(prompt + (uint32_t)st),
                                       .seq = seq[s],
                                       .logits = 1};
        if (run_batch(d, toks, (uint32_t)n_seqs, out, (uint32_t)n_seqs))
            return 1;
    }
    double t_dec = now_s() - t0;
    printf("backend=%s threads=%d prefill: %u tok x %d seqs in %.3f s = %.1f tok/s\n",
           kf_backend_name(d->be), kf_backend_n_threads(d->be), prompt, n_seqs, t_pre,
           prompt * n_seqs / t_pre);
    printf("decode: %d seqs x %d steps in %.3f s = %.1f tok/s (%.2f ms/step)\n", n_seqs, steps,
           t_dec, n_seqs * steps / t_dec, 1e3 * t_dec / steps);
    free(out);
    free(toks);
    free(seq);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *model_path = NULL, *out_path = NULL, *mode = "prefill", *kvt = "f32";
    const char *backend = "cpu";
    int threads = 0, block_tokens = 4, do_bench = 0, bench_seqs = 1, bench_steps = 32;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--bench")) {
            do_bench = 1;
        } else if (i + 1 < argc && !strcmp(a, "--model")) {
            model_path = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--out")) {
            out_path = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--mode")) {
            mode = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--kv")) {
            kvt = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--backend")) {
            backend = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--threads")) {
            threads = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--block-tokens")) {
            block_tokens = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--bench-seqs")) {
            bench_seqs = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--bench-steps")) {
            bench_steps = atoi(argv[++i]);
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "ref_driver: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    int n_tok = argc - i;
    if (!model_path || (!do_bench && (!out_path || n_tok <= 0)) || block_tokens <= 0 ||
        bench_seqs <= 0 || bench_steps <= 0) {
        usage(stderr);
        return 2;
    }

    char err[512];
    drv_t d = {0};
    if (kf_model_load(model_path, &d.model, err, sizeof(err))) {
        fprintf(stderr, "ref_driver: %s\n", err);
        return 1;
    }
    d.n_vocab = kf_model_hparams(d.model)->n_vocab;
    kf_kv_conf_t kc = {.budget_bytes = (size_t)256 << 20,
                       .block_tokens = (uint32_t)block_tokens,
                       .max_seqs = 64,
                       .dtype = !strcmp(kvt, "f16") ? KF_KV_F16 : KF_KV_F32};
    kf_backend_conf_t bc = {.n_threads = threads, .max_batch = 512};
    if (kf_kv_new(d.model, &kc, &d.kv, err, sizeof(err)) ||
        kf_backend_new(backend, d.model, d.kv, &bc, &d.be, err, sizeof(err))) {
        fprintf(stderr, "ref_driver: %s\n", err);
        kf_kv_destroy(d.kv);
        kf_model_destroy(d.model);
        return 1;
    }
    int rc = 1;
    if (do_bench) {
        rc = bench(&d, bench_seqs, bench_steps);
        goto out;
    }

    int32_t *ids = calloc((size_t)n_tok, sizeof(int32_t));
    float *logits = malloc(sizeof(float) * d.n_vocab * (size_t)n_tok);
    kf_batch_tok_t *toks = calloc((size_t)n_tok * 2, sizeof(*toks));
    if (!ids || !logits || !toks) {
        fprintf(stderr, "ref_driver: out of memory\n");
        goto free_out;
    }
    for (int k = 0; k < n_tok; k++)
        ids[k] = atoi(argv[i + k]);

    int32_t seq, other = -1;
    if (kf_kv_seq_new(d.kv, &seq) || kf_kv_seq_reserve(d.kv, seq, (uint32_t)n_tok)) {
        fprintf(stderr, "ref_driver: KV budget too small\n");
        goto free_out;
    }
    int chunk = 0;
    if (!strcmp(mode, "prefill"))
        chunk = n_tok;
    else if (!strcmp(mode, "decode"))
        chunk = 1;
    else if (!strncmp(mode, "chunk=", 6))
        chunk = atoi(mode + 6);
    else if (!strcmp(mode, "mixed"))
        chunk = 3;
    if (chunk <= 0) {
        fprintf(stderr, "ref_driver: bad --mode %s\n", mode);
        goto free_out;
    }
    /* mixed: a second sequence with different tokens shares every batch, running one position
     * ahead per chunk, and its logits are requested too (then dropped). */
    if (!strcmp(mode, "mixed")) {
        if (kf_kv_seq_new(d.kv, &other) || kf_kv_seq_reserve(d.kv, other, (uint32_t)n_tok)) {
            fprintf(stderr, "ref_driver: KV budget too small\n");
            goto free_out;
        }
    }
    float *scratch = malloc(sizeof(float) * d.n_vocab * (size_t)chunk * 2);
    if (!scratch)
        goto free_out;
    for (int p0 = 0; p0 < n_tok; p0 += chunk) {
        int n = n_tok - p0 < chunk ? n_tok - p0 : chunk;
        uint32_t nb = 0;
        /* The other sequence goes first so our rows are not simply the first ones. */
        if (other >= 0)
            for (int k = 0; k < n; k++)
                toks[nb++] = (kf_batch_tok_t){.token = (ids[p0 + k] * 13 + 5) % (int32_t)d.n_vocab,
                                              .pos = p0 + k,
                                              .seq = other,
                                              .logits = (k % 2) == 0};
        uint32_t n_other_rows = 0;
        for (uint32_t k = 0; k < nb; k++)
            n_other_rows += toks[k].logits != 0;
        for (int k = 0; k < n; k++)
            toks[nb++] =
                (kf_batch_tok_t){.token = ids[p0 + k], .pos = p0 + k, .seq = seq, .logits = 1};
        if (run_batch(&d, toks, nb, scratch, (uint32_t)chunk * 2)) {
            free(scratch);
            goto free_out;
        }
        memcpy(logits + (size_t)p0 * d.n_vocab, scratch + (size_t)n_other_rows * d.n_vocab,
               sizeof(float) * d.n_vocab * (size_t)n);
    }
    free(scratch);
    FILE *fp = fopen(out_path, "wb");
    if (!fp || fwrite(logits, sizeof(float) * d.n_vocab, (size_t)n_tok, fp) != (size_t)n_tok) {
        fprintf(stderr, "ref_driver: cannot write %s\n", out_path);
        if (fp)
            fclose(fp);
        goto free_out;
    }
    fclose(fp);
    printf("%u %d\n", d.n_vocab, n_tok);
    rc = 0;
free_out:
    free(ids);
    free(logits);
    free(toks);
out:
    kf_backend_destroy(d.be);
    kf_kv_destroy(d.kv);
    kf_model_destroy(d.model);
    return rc;
}
