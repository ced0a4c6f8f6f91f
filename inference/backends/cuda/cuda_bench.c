/*
 * cuda_bench.c: kinfer-cuda-bench, throughput of the CUDA backend measured below the scheduler.
 *
 * It drives kf_backend_forward()/kf_cuda_forward_sample() directly so the figures are the
 * GPU's (no tokenizer, no host-side sampling of 150k-entry logits rows), and prints:
 *   - the device-to-device copy bandwidth (bytes read + written per second), the ceiling of a
 *     memory-bound decode step;
 *   - prefill tokens/s: S prompts of --prompt-len tokens in batches of up to --batch tokens;
 *   - decode tokens/s at each --seqs count: one token per sequence per step, greedy sampling on
 *     the device, after --prompt-len tokens of context, timed over --gen steps after warm-up
 *     (the warm-up also captures the step's CUDA graph);
 *   - the same decode with the logits copied to the host (the generic forward contract) at the
 *     smallest and largest count, to show what device sampling saves;
 *   - the bound: bandwidth / bytes of weights read per step, and the measured single-sequence
 *     decode as a fraction of it.
 * Timings use a monotonic host clock around whole synchronous calls (each call ends with a
 * stream synchronize), medians of repeated runs where noted.
 */
#include "kf_backend.h"
#include "kf_cuda.h"
#include "kf_kv.h"
#include "kf_log.h"
#include "kf_model.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SEQS_LIST 16

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Device-to-device copy bandwidth in GB/s (1e9), counting bytes read plus bytes written. */
static double
measure_bandwidth(void)
{
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        cudaFree(a);
        return 0.0;
    }
    cudaMemset(a, 1, bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float ms[10];
    for (int i = 0; i < 12; i++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        if (i >= 2)
            cudaEventElapsedTime(&ms[i - 2], e0, e1);
    }
    qsort(ms, 10, sizeof(float), cmp_f);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes / ((double)ms[5] * 1e-3) / 1e9;
}

typedef struct bench {
    kf_model_t *model;
    kf_kv_t *kv;
    kf_backend_t *be;
    const kf_hparams_t *hp;
    uint32_t max_batch;
    float *logits;
    uint32_t logit_rows;
} bench_t;

static uint64_t rng = 88172645463325252ull;

static int32_t
rand_tok(uint32_t n_vocab)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int32_t)(rng % n_vocab);
}

/* Prefills `n` sequences with `len` random tokens each, batching up to max_batch tokens; only the
 * last token of each prompt wants logits (sampled on the device). Returns seconds or < 0. */
static double
prefill(bench_t *b, int32_t *seqs, uint32_t n, uint32_t len, int32_t *last_tok)
{
    kf_batch_tok_t *toks = malloc(sizeof(*toks) * b->max_batch);
    kf_cuda_sample_t *sp = calloc(b->max_batch, sizeof(*sp));
    int32_t *ids = malloc(sizeof(int32_t) * b->max_batch);
    int32_t *row_seq = malloc(sizeof(int32_t) * b->max_batch);
    char err[256];
    double t0 = now_s();
    uint32_t s = 0, p = 0;
    while (s < n) {
        uint32_t nt = 0, nr = 0;
        while (s < n && nt < b->max_batch) {
            toks[nt] = (kf_batch_tok_t){.token = rand_tok(b->hp->n_vocab),
                                        .pos = (int32_t)p,
                                        .seq = seqs[s],
                                        .logits = p == len - 1};
            if (toks[nt].logits)
                row_seq[nr++] = (int32_t)s;
            nt++;
            if (++p == len) {
                p = 0;
                s++;
            }
        }
        kf_batch_t batch = {.toks = toks, .n_tokens = nt};
        if (kf_cuda_forward_sample(b->be, &batch, sp, ids, err, sizeof(err))) {
            fprintf(stderr, "prefill: %s\n", err);
            free(row_seq);
            free(toks);
            free(sp);
            free(ids);
            return -1.0;
        }
        for (uint32_t r = 0; r < nr; r++)
            last_tok[row_seq[r]] = ids[r];
    }
    double dt = now_s() - t0;
    free(row_seq);
    free(toks);
    free(sp);
    free(ids);
    return dt;
}

/* `steps` decode steps of n sequences starting at position `pos0`; device sampling, or logits
 * to the host when to_host. Returns seconds or < 0. */
static double
decode(
    bench_t *b, int32_t *seqs, uint32_t n, uint32_t pos0, uint32_t steps, int32_t *tok, int to_host)
{
    kf_batch_tok_t *toks = malloc(sizeof(*toks) * n);
    kf_cuda_sample_t *sp = calloc(n, sizeof(*sp));
    int32_t *ids = malloc(sizeof(int32_t) * n);
    char err[256];
    double t0 = now_s();
    for (uint32_t st = 0; st < steps; st++) {
        for (uint32_t i = 0; i < n; i++)
            toks[i] = (kf_batch_tok_t){
                .token = tok[i], .pos = (int32_t)(pos0 + st), .seq = seqs[i], .logits = 1};
        kf_batch_t batch = {.toks = toks, .n_tokens = n};
        kf_err_t e;
        if (to_host) {
            kf_logits_t lg = {.data = b->logits, .cap_rows = b->logit_rows};
            e = kf_backend_forward(b->be, &batch, &lg, err, sizeof(err));
            for (uint32_t i = 0; !e && i < n; i++) { /* host greedy, as a scheduler would */
                const float *row = b->logits + (size_t)i * b->hp->n_vocab;
                uint32_t best = 0;
                for (uint32_t v = 1; v < b->hp->n_vocab; v++)
                    if (row[v] > row[best])
                        best = v;
                tok[i] = (int32_t)best;
            }
        } else {
            e = kf_cuda_forward_sample(b->be, &batch, sp, ids, err, sizeof(err));
            if (!e)
                memcpy(tok, ids, sizeof(int32_t) * n);
        }
        if (e) {
            fprintf(stderr, "decode: %s\n", err);
            steps = 0;
            break;
        }
    }
    double dt = now_s() - t0;
    free(toks);
    free(sp);
    free(ids);
    return steps ? dt : -1.0;
}

static void
usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer-cuda-bench -m MODEL.gguf [options]\n\n"
                "Prefill and decode throughput of the CUDA backend, and the memory-bandwidth\n"
                "bound of decoding, printed as a table.\n\n"
                "  -m, --model PATH   GGUF model (required)\n"
                "  --prompt-len N     context tokens before decoding (default 128)\n"
                "  --gen N            timed decode steps per sequence count (default 64)\n"
                "  --seqs LIST        sequence counts, comma separated (default 1,8,32,64)\n"
                "  --batch N          max tokens per forward call (default 512)\n"
                "  --kv-mib N         KV cache budget in MiB (default 2048)\n"
                "  --device N         GPU ordinal (default 0)\n");
}

int
main(int argc, char **argv)
{
    const char *path = NULL;
    uint32_t prompt_len = 128, gen = 64, batch = 512, kv_mib = 2048;
    int device = 0;
    uint32_t seqs_list[MAX_SEQS_LIST] = {1, 8, 32, 64};
    int n_seqs_list = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "kinfer-cuda-bench: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            path = v;
        } else if (!strcmp(a, "--prompt-len")) {
            prompt_len = (uint32_t)strtoul(v, NULL, 10);
        } else if (!strcmp(a, "--gen")) {
            gen = (uint32_t)strtoul(v, NULL, 10);
        } else if (!strcmp(a, "--batch")) {
            batch = (uint32_t)strtoul(v, NULL, 10);
        } else if (!strcmp(a, "--kv-mib")) {
            kv_mib = (uint32_t)strtoul(v, NULL, 10);
        } else if (!strcmp(a, "--device")) {
            device = atoi(v);
        } else if (!strcmp(a, "--seqs")) {
            n_seqs_list = 0;
            char buf[256];
            snprintf(buf, sizeof(buf), "%s", v);
            for (char *s = strtok(buf, ","); s && n_seqs_list < MAX_SEQS_LIST;
                 s = strtok(NULL, ","))
                seqs_list[n_seqs_list++] = (uint32_t)strtoul(s, NULL, 10);
        } else {
            fprintf(stderr, "kinfer-cuda-bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!path || prompt_len < 1 || gen < 1 || batch < 1 || n_seqs_list == 0) {
        fprintf(stderr, "kinfer-cuda-bench: -m MODEL is required and counts must be >= 1\n");
        return 2;
    }
    uint32_t max_seqs = 1;
    for (int i = 0; i < n_seqs_list; i++) {
        if (seqs_list[i] < 1 || seqs_list[i] > 512) {
            fprintf(stderr, "kinfer-cuda-bench: --seqs values must be in [1, 512]\n");
            return 2;
        }
        max_seqs = seqs_list[i] > max_seqs ? seqs_list[i] : max_seqs;
    }
    if (kf_cuda_device_count() <= device) {
        fprintf(stderr, "kinfer-cuda-bench: no CUDA device %d\n", device);
        return 77;
    }
    kf_log_set_level(KF_LOG_WARN);
    char err[512];
    bench_t b = {.max_batch = batch};
    if (kf_model_load(path, &b.model, err, sizeof(err))) {
        fprintf(stderr, "kinfer-cuda-bench: %s\n", err);
        return 1;
    }
    b.hp = kf_model_hparams(b.model);
    kf_kv_conf_t kc = {.budget_bytes = (size_t)kv_mib << 20, .max_seqs = max_seqs + 1};
    kf_backend_conf_t bc = {.device = device, .max_batch = batch};
    if (kf_kv_new(b.model, &kc, &b.kv, err, sizeof(err)) ||
        kf_backend_new("cuda", b.model, b.kv, &bc, &b.be, err, sizeof(err))) {
        fprintf(stderr, "kinfer-cuda-bench: %s\n", err);
        return 1;
    }
    b.logit_rows = max_seqs;
    b.logits = malloc(sizeof(float) * (size_t)max_seqs * b.hp->n_vocab);
    kf_cuda_info_t info;
    kf_cuda_backend_info(b.be, &info);
    double bw = measure_bandwidth();
    /* Bytes a decode step must read: every weight once, except the embedding table when the
     * output matrix is separate (then only one row per token is gathered). */
    const kf_model_weights_t *w = kf_model_weights(b.model);
    size_t step_bytes = info.weight_bytes;
    if (w->output.data != w->tok_embd.data)
        step_bytes -= (size_t)b.hp->n_vocab * b.hp->n_embd * 2;
    double bound = bw * 1e9 / (double)step_bytes;
    printf("device %s (sm_%d), cuBLAS %s\n", info.device_name, info.compute_capability,
           info.cublas_path);
    printf("model %s: %s, n_embd %u, %u layers, %u/%u heads, n_ff %u, vocab %u\n", path,
           kf_arch_name(b.hp->arch), b.hp->n_embd, b.hp->n_layer, b.hp->n_head, b.hp->n_head_kv,
           b.hp->n_ff, b.hp->n_vocab);
    printf("device memory: weights %.1f MiB (%s), KV %.1f MiB, scratch %.1f MiB\n",
           (double)info.weight_bytes / 1048576.0, info.weight_bf16 ? "bf16" : "f16",
           (double)info.kv_bytes / 1048576.0, (double)info.scratch_bytes / 1048576.0);
    printf("bandwidth (device-to-device copy, read+write): %.0f GB/s\n", bw);
    printf("decode bound: %.1f MB per step -> %.0f steps/s\n", (double)step_bytes / 1e6, bound);

    int32_t *seqs = malloc(sizeof(int32_t) * max_seqs);
    int32_t *tok = malloc(sizeof(int32_t) * max_seqs);
    uint32_t need = prompt_len + gen + 8;
    int rc = 0;

    /* Prefill: as many prompts as the largest count, best of 3 runs. */
    double best_pf = 0.0;
    for (int rep = 0; rep < 3 && !rc; rep++) {
        for (uint32_t i = 0; i < max_seqs; i++)
            if (kf_kv_seq_new(b.kv, &seqs[i]) || kf_kv_seq_reserve(b.kv, seqs[i], need)) {
                fprintf(stderr, "kinfer-cuda-bench: KV budget too small (--kv-mib)\n");
                rc = 1;
                break;
            }
        if (rc)
            break;
        double dt = prefill(&b, seqs, max_seqs, prompt_len, tok);
        if (dt < 0)
            rc = 1;
        else if ((double)max_seqs * prompt_len / dt > best_pf)
            best_pf = (double)max_seqs * prompt_len / dt;
        for (uint32_t i = 0; i < max_seqs; i++)
            kf_kv_seq_free(b.kv, seqs[i]);
    }
    printf("\nprefill: %u prompts x %u tokens, batches of %u: %.0f tokens/s\n", max_seqs,
           prompt_len, batch, best_pf);

    double prof[2][KF_CUDA_N_STAGES];
    uint32_t prof_n[2];
    int n_prof = 0;
    printf(
        "\n| seqs | decode tok/s | step ms | tok/s per seq | x single | logits-to-host tok/s |\n");
    printf("|---:|---:|---:|---:|---:|---:|\n");
    double single = 0.0;
    for (int k = 0; k < n_seqs_list && !rc; k++) {
        uint32_t n = seqs_list[k];
        for (uint32_t i = 0; i < n; i++)
            if (kf_kv_seq_new(b.kv, &seqs[i]) || kf_kv_seq_reserve(b.kv, seqs[i], need)) {
                fprintf(stderr, "kinfer-cuda-bench: KV budget too small (--kv-mib)\n");
                rc = 1;
                break;
            }
        if (rc || prefill(&b, seqs, n, prompt_len, tok) < 0) {
            rc = 1;
            break;
        }
        /* Warm-up steps capture the graph for this shape. */
        if (decode(&b, seqs, n, prompt_len, 3, tok, 0) < 0) {
            rc = 1;
            break;
        }
        double dt = decode(&b, seqs, n, prompt_len + 3, gen, tok, 0);
        double host = -1.0;
        if (k == 0 || k == n_seqs_list - 1) {
            /* Same steps again over the same positions (K/V rewritten with equal values). */
            decode(&b, seqs, n, prompt_len, 2, tok, 1);
            host = decode(&b, seqs, n, prompt_len + 3, gen < 16 ? gen : 16, tok, 1);
            if (host > 0)
                host = (double)n * (gen < 16 ? gen : 16) / host;
        }
        if (k == 0 || k == n_seqs_list - 1) {
            /* Per-stage breakdown of a few steps (graphs bypassed while profiling). */
            kf_cuda_set_profile(b.be, 1);
            double pt = decode(&b, seqs, n, prompt_len + 3, 8, tok, 0);
            kf_cuda_backend_info(b.be, &info);
            kf_cuda_set_profile(b.be, 0);
            if (pt > 0 && n_prof < 2) {
                prof_n[n_prof] = n;
                memcpy(prof[n_prof], info.stage_ms, sizeof(info.stage_ms));
                n_prof++;
            }
        }
        for (uint32_t i = 0; i < n; i++)
            kf_kv_seq_free(b.kv, seqs[i]);
        if (dt < 0) {
            rc = 1;
            break;
        }
        double tps = (double)n * gen / dt;
        if (k == 0)
            single = tps / n;
        char hs[32] = "-";
        if (host > 0)
            snprintf(hs, sizeof(hs), "%.0f", host);
        printf("| %u | %.0f | %.3f | %.1f | %.1f | %s |\n", n, tps, dt * 1e3 / gen, tps / n,
               single > 0 ? tps / single : 0.0, hs);
    }
    if (n_prof) {
        static const char *names[KF_CUDA_N_STAGES] = {"misc",    "qkv",  "attn", "o",
                                                      "gate+up", "down", "head", "sample"};
        printf("\nstage breakdown, ms per decode step (profiled, each stage synchronized; %s):\n",
               info.gemv ? "GEMV kernel for small batches" : "cuBLAS for all");
        printf("| seqs |");
        for (int i = 0; i < KF_CUDA_N_STAGES; i++)
            printf(" %s |", names[i]);
        printf(" total |\n|---:|");
        for (int i = 0; i <= KF_CUDA_N_STAGES; i++)
            printf("---:|");
        printf("\n");
        for (int p = 0; p < n_prof; p++) {
            double tot = 0.0;
            printf("| %u |", prof_n[p]);
            for (int i = 0; i < KF_CUDA_N_STAGES; i++) {
                printf(" %.3f |", prof[p][i] / 8.0);
                tot += prof[p][i] / 8.0;
            }
            printf(" %.3f |\n", tot);
        }
    }
    kf_cuda_backend_info(b.be, &info);
    if (!rc && seqs_list[0] == 1)
        printf("\nsingle-sequence decode: %.0f tok/s = %.0f%% of the %.0f tok/s bandwidth bound "
               "(%d CUDA graphs captured)\n",
               single, 100.0 * single / bound, bound, info.n_graphs);
    free(seqs);
    free(tok);
    free(b.logits);
    kf_backend_destroy(b.be);
    kf_kv_destroy(b.kv);
    kf_model_destroy(b.model);
    return rc;
}
