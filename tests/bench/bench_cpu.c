/*
 * bench_cpu.c: micro-benchmarks of the CPU backend, figures for docs/benchmarks.md.
 *
 *   bench_cpu bw [--mib N] [--threads LIST]     memory read bandwidth: each thread sums its
 *                                               share of an N MiB buffer (default 1024)
 *   bench_cpu mm [--type T] [--in N] [--out N] [--tok LIST] [--threads N]
 *                                               kf_cpu_matmul throughput: GFLOP/s (2 flops
 *                                               per multiply-add) and weight GB/s
 *   bench_cpu fwd -m MODEL [--threads N] [--prompt-len N] [--gen N] [--seqs LIST]
 *                                               the CPU backend's forward pass: prefill of one
 *                                               prompt, then decode steps of N sequences
 *   bench_cpu attn [--pos LIST] [--hd N] [--group N] [--kv-heads N] [--layers N] [--bt N]
 *                  [--f32] [--reps N]            paged attention of one decoding token over
 *                                               every layer and KV head, one thread: ns per
 *                                               position and K/V GB/s
 *   bench_cpu check                             a tiny mm run whose result is compared with
 *                                               a double-precision reference (ctest smoke)
 *
 * The machine this runs on is often shared, so every figure is the best of --reps runs (the
 * run least disturbed by other processes), and the load average is printed beside it. With one
 * thread, figures also come from the thread's (or process's) CPU time, which preemption by other
 * tenants does not inflate.
 *
 * `fwd` decodes at positions prompt-len .. prompt-len + gen - 1 of every sequence without
 * prefilling them first: the cost of a step does not depend on the K/V values (the cache starts
 * zeroed), only on the positions, and prefilling 32 prompts would dominate the run.
 */
#include "cpu_kernels.h"
#include "cpu_pool.h"
#include "kf_backend.h"
#include "kf_kv.h"
#include "kf_model.h"
#include "kf_quant.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: with one thread, the time the work itself took, whatever
 * else the machine was running (preemption does not count, cache pollution still does). */
static double
cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
print_load(void)
{
    double la[3] = {0, 0, 0};
    FILE *fp = fopen("/proc/loadavg", "r");
    if (fp) {
        if (fscanf(fp, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3)
            la[0] = la[1] = la[2] = -1;
        fclose(fp);
    }
    printf("load average: %.2f %.2f %.2f\n", la[0], la[1], la[2]);
}

/* Parses "1,2,4" into at most `max` positive ints; returns the count, 0 on a bad list. */
static int
parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 20)
            return 0;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return 0;
    }
    return n;
}

/* ---------- bandwidth ---------- */

typedef struct bw_task {
    const uint64_t *buf;
    size_t n; /* uint64 words */
    int nth;
    uint64_t sums[64];
} bw_task_t;

static void
bw_fn(void *arg, int ith, int nth)
{
    bw_task_t *bt = arg;
    size_t per = bt->n / (size_t)nth, i0 = per * (size_t)ith;
    size_t i1 = ith == nth - 1 ? bt->n : i0 + per;
    /* Four independent chains so the adds never limit the loads; the sum is used so the
     * compiler cannot drop the loop. */
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = i0; i + 4 <= i1; i += 4) {
        a += bt->buf[i];
        b += bt->buf[i + 1];
        c += bt->buf[i + 2];
        d += bt->buf[i + 3];
    }
    bt->sums[ith] = a + b + c + d;
}

static int
cmd_bw(int argc, char **argv)
{
    size_t mib = 1024;
    int threads[8] = {1, 2}, n_threads = 2, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = (size_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            n_threads = parse_list(argv[++i], threads, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "bw: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!n_threads || !mib || reps < 1) {
        fprintf(stderr, "bw: bad --threads, --mib or --reps\n");
        return 2;
    }
    size_t n = mib * (1u << 20) / 8;
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 64, n * 8)) {
        fprintf(stderr, "bw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < n; i++) /* touch every page, so the timed loops do not fault */
        buf[i] = i;
    print_load();
    for (int k = 0; k < n_threads; k++) {
        kf_cpu_pool_t *pool = NULL;
        if (kf_cpu_pool_new(threads[k], &pool) != KF_OK) {
            fprintf(stderr, "bw: cannot start %d threads\n", threads[k]);
            free(buf);
            return 1;
        }
        bw_task_t bt = {.buf = buf, .n = n};
        double best = 1e30, best_cpu = 1e30;
        uint64_t check = 0;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s(), c0 = cpu_s();
            kf_cpu_pool_run(threads[k] > 1 ? pool : NULL, bw_fn, &bt);
            double dt = now_s() - t0, dc = cpu_s() - c0;
            best = dt < best ? dt : best;
            best_cpu = dc < best_cpu ? dc : best_cpu;
            for (int j = 0; j < threads[k]; j++)
                check += bt.sums[j];
        }
        printf("read bandwidth: %d thread(s), %zu MiB: %.1f GB/s wall", threads[k], mib,
               (double)n * 8 / best / 1e9);
        if (threads[k] == 1)
            printf(", %.1f GB/s cpu-time", (double)n * 8 / best_cpu / 1e9);
        printf(" (best of %d; checksum %llu)\n", reps, (unsigned long long)check);
        kf_cpu_pool_destroy(pool);
    }
    print_load();
    free(buf);
    return 0;
}

/* ---------- matmul ---------- */

typedef struct mm_case {
    kf_tensor_type_t type;
    size_t n_in, n_out;
    uint8_t *W;
    size_t rb;
    float *X, *Y;
    kf_q8a_t *Xq;
    uint32_t max_tok;
} mm_case_t;

static const struct {
    const char *name;
    kf_tensor_type_t type;
} kf_types[] = {
    {"f32", KF_TT_F32},
    {"f16", KF_TT_F16},
    {"bf16", KF_TT_BF16},
    {"q8_0", KF_TT_Q8_0},
    {"q4_0", KF_TT_Q4_0},
    {"q4_k", KF_TT_Q4_K},
    {"q6_k", KF_TT_Q6_K},
    /* Q8_0 repacked into the CPU backend's 8-row layout, as the engine runs it. */
    {"q8_0x8", KF_TT_CPU_Q8_0X8},
};

static float
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* Random weights quantized to `type` and max_tok random activation rows. 0 on no memory. */
static int
mm_case_init(mm_case_t *mc, kf_tensor_type_t type, size_t n_in, size_t n_out, uint32_t max_tok)
{
    memset(mc, 0, sizeof(*mc));
    mc->type = type;
    int x8 = type == KF_TT_CPU_Q8_0X8;
    if (x8)
        type = KF_TT_Q8_0;
    mc->n_in = n_in;
    mc->n_out = n_out;
    mc->max_tok = max_tok;
    mc->rb = kf_quant_row_size(type, (int64_t)n_in);
    /* 64-byte aligned like the engine's scratch buffers: misaligned rows would split vector
     * loads across cache lines and understate the kernels. */
    mc->W = aligned_alloc(64, (mc->rb * n_out + 63) & ~(size_t)63);
    mc->X = aligned_alloc(64, (sizeof(float) * n_in * max_tok + 63) & ~(size_t)63);
    mc->Y = aligned_alloc(64, (sizeof(float) * n_out * max_tok + 63) & ~(size_t)63);
    mc->Xq = aligned_alloc(64, (sizeof(kf_q8a_t) * (n_in / 32 + 1) * max_tok + 63) & ~(size_t)63);
    float *row = malloc(sizeof(float) * n_in);
    if (!mc->W || !mc->X || !mc->Y || !mc->Xq || !row) {
        free(row);
        return 0;
    }
    uint64_t s = 0x12345678abcdefull;
    for (size_t r = 0; r < n_out; r++) {
        for (size_t i = 0; i < n_in; i++)
            row[i] = rnd(&s) * 0.05f;
        kf_quant_row(type, row, mc->W + r * mc->rb, (int64_t)n_in);
    }
    free(row);
    if (x8) {
        uint8_t *pk = aligned_alloc(64, (kf_cpu_q8x8_bytes(n_in, n_out) + 63) & ~(size_t)63);
        if (!pk)
            return 0;
        kf_cpu_q8x8_pack(mc->W, mc->rb, n_in, n_out, pk);
        free(mc->W);
        mc->W = pk;
    }
    for (size_t i = 0; i < n_in * max_tok; i++)
        mc->X[i] = rnd(&s);
    for (uint32_t t = 0; t < max_tok; t++)
        kf_cpu_quantize_q8a(mc->X + t * n_in, mc->Xq + t * (n_in / 32), n_in);
    return 1;
}

static void
mm_case_free(mm_case_t *mc)
{
    free(mc->W);
    free(mc->X);
    free(mc->Y);
    free(mc->Xq);
}

static void
mm_run(kf_cpu_pool_t *pool, mm_case_t *mc, uint32_t n_tok)
{
    kf_weight_t W = {
        .type = mc->type, .ne0 = mc->n_in, .ne1 = mc->n_out, .row_bytes = mc->rb, .data = mc->W};
    kf_cpu_matmul(pool, &W, mc->X, kf_cpu_type_uses_q8a(mc->type) ? mc->Xq : NULL, n_tok, mc->Y,
                  mc->n_out);
}

static int
cmd_mm(int argc, char **argv)
{
    const char *tname = "f16";
    size_t n_in = 896, n_out = 4864;
    int toks[16] = {1, 4, 8, 32, 128}, n_toks = 5, threads = 1;
    double min_s = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "mm: '%s' needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--type"))
            tname = v;
        else if (!strcmp(argv[i], "--in"))
            n_in = (size_t)strtoul(v, NULL, 10);
        else if (!strcmp(argv[i], "--out"))
            n_out = (size_t)strtoul(v, NULL, 10);
        else if (!strcmp(argv[i], "--tok"))
            n_toks = parse_list(v, toks, 16);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(v);
        else if (!strcmp(argv[i], "--secs"))
            min_s = atof(v);
        else {
            fprintf(stderr, "mm: unknown option '%s'\n", argv[i]);
            return 2;
        }
        i++;
    }
    int ti = -1;
    for (size_t k = 0; k < sizeof(kf_types) / sizeof(kf_types[0]); k++)
        if (!strcmp(kf_types[k].name, tname))
            ti = (int)k;
    size_t blk = 32;
    if (ti >= 0 && (kf_types[ti].type == KF_TT_Q4_K || kf_types[ti].type == KF_TT_Q6_K))
        blk = 256;
    if (ti < 0 || !n_toks || threads < 1 || !n_in || n_in % blk || !n_out) {
        fprintf(stderr, "mm: bad --type, --tok, --threads or shape (--in must be a multiple "
                        "of the type's block, 32 or 256)\n");
        return 2;
    }
    uint32_t max_tok = 1;
    for (int k = 0; k < n_toks; k++)
        max_tok = (uint32_t)toks[k] > max_tok ? (uint32_t)toks[k] : max_tok;
    mm_case_t mc;
    if (!mm_case_init(&mc, kf_types[ti].type, n_in, n_out, max_tok)) {
        mm_case_free(&mc);
        fprintf(stderr, "mm: out of memory\n");
        return 1;
    }
    kf_cpu_pool_t *pool = NULL;
    if (kf_cpu_pool_new(threads, &pool) != KF_OK) {
        mm_case_free(&mc);
        return 1;
    }
    print_load();
    printf("%s %zu x %zu (weights %.1f MiB), %d thread(s), simd %s\n", tname, n_out, n_in,
           (double)(mc.rb * n_out) / (1 << 20), threads, kf_cpu_simd_name());
    for (int k = 0; k < n_toks; k++) {
        uint32_t nt = (uint32_t)toks[k];
        /* Repeat until min_s has passed; keep the fastest single call. */
        double best = 1e30, best_cpu = 1e30, t_start = now_s();
        int reps = 0;
        do {
            double t0 = now_s(), c0 = cpu_s();
            mm_run(threads > 1 ? pool : NULL, &mc, nt);
            double dt = now_s() - t0, dc = cpu_s() - c0;
            best = dt < best ? dt : best;
            best_cpu = dc < best_cpu ? dc : best_cpu;
            reps++;
        } while (now_s() - t_start < min_s || reps < 3);
        /* One thread: report thread CPU time, immune to the other tenants' preemption. */
        double t = threads == 1 ? best_cpu : best;
        double flops = 2.0 * (double)n_in * (double)n_out * nt;
        printf("  tok %4u: %8.3f ms  %7.1f GFLOP/s  %6.1f GB/s weights  (best of %d, %s)\n", nt,
               t * 1e3, flops / t / 1e9, (double)(mc.rb * n_out) / t / 1e9, reps,
               threads == 1 ? "cpu time" : "wall");
    }
    kf_cpu_pool_destroy(pool);
    mm_case_free(&mc);
    return 0;
}

/* A small matmul per type, every output against a double-precision dot over the dequantized
 * weights and (quantized, for the int8 types) activations. */
static int
cmd_check(void)
{
    kf_cpu_pool_t *pool = NULL;
    if (kf_cpu_pool_new(2, &pool) != KF_OK)
        return 1;
    int bad = 0;
    for (size_t k = 0; k < sizeof(kf_types) / sizeof(kf_types[0]); k++) {
        mm_case_t mc;
        /* Rows not a multiple of the 8-row tile, except for the 8-row layout itself. */
        size_t n_in = 512, n_out = kf_types[k].type == KF_TT_CPU_Q8_0X8 ? 40 : 37;
        uint32_t nt = 11;
        float *wd = malloc(sizeof(float) * n_in);
        if (!wd || !mm_case_init(&mc, kf_types[k].type, n_in, n_out, nt)) {
            free(wd);
            mm_case_free(&mc);
            kf_cpu_pool_destroy(pool);
            return 1;
        }
        mm_run(pool, &mc, nt);
        int q = kf_cpu_type_uses_q8a(mc.type);
        for (size_t r = 0; r < n_out; r++) {
            if (mc.type == KF_TT_CPU_Q8_0X8)
                kf_cpu_q8x8_dequant_row(mc.W, n_in, r, wd);
            else
                kf_dequant_row(mc.type, mc.W + r * mc.rb, wd, (int64_t)n_in);
            for (uint32_t t = 0; t < nt; t++) {
                double e = 0, mag = 0;
                for (size_t i = 0; i < n_in; i++) {
                    const kf_q8a_t *b = &mc.Xq[t * (n_in / 32) + i / 32];
                    double xv = q ? (double)b->d * b->qs[i % 32] : mc.X[t * n_in + i];
                    e += wd[i] * xv;
                    mag += fabs(wd[i] * xv);
                }
                double got = mc.Y[t * n_out + r];
                if (!(fabs(got - e) <= 1e-5 * mag + 1e-30)) {
                    if (bad++ < 5)
                        fprintf(stderr, "check: %s row %zu tok %u: %.9g, expected %.9g\n",
                                kf_types[k].name, r, t, got, e);
                }
            }
        }
        printf("check %s: %s\n", kf_types[k].name, bad ? "MISMATCH" : "ok");
        free(wd);
        mm_case_free(&mc);
    }
    kf_cpu_pool_destroy(pool);
    return bad ? 1 : 0;
}

/* ---------- forward pass ---------- */

static double
proc_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
cmd_fwd(int argc, char **argv)
{
    const char *path = NULL;
    int threads = 2, seqs[16] = {1, 8, 32}, n_seqs = 3;
    long prompt_len = 128, gen = 16;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "fwd: '%s' needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "-m"))
            path = v;
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(v);
        else if (!strcmp(argv[i], "--prompt-len"))
            prompt_len = atol(v);
        else if (!strcmp(argv[i], "--gen"))
            gen = atol(v);
        else if (!strcmp(argv[i], "--seqs"))
            n_seqs = parse_list(v, seqs, 16);
        else {
            fprintf(stderr, "fwd: unknown option '%s'\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (!path || threads < 1 || prompt_len < 1 || prompt_len > 4096 || gen < 1 || gen > 4096 ||
        !n_seqs) {
        fprintf(stderr, "fwd: -m MODEL is required; bad --threads, --prompt-len, --gen or "
                        "--seqs\n");
        return 2;
    }
    uint32_t max_seqs = 1;
    for (int k = 0; k < n_seqs; k++)
        max_seqs = (uint32_t)seqs[k] > max_seqs ? (uint32_t)seqs[k] : max_seqs;
    uint32_t max_batch = max_seqs > (uint32_t)prompt_len ? max_seqs : (uint32_t)prompt_len;

    char err[512];
    int rc = 1;
    kf_model_t *model = NULL;
    kf_kv_t *kv = NULL;
    kf_backend_t *be = NULL;
    kf_batch_tok_t *toks = NULL;
    float *logits = NULL;
    if (kf_model_load(path, &model, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "fwd: %s\n", err);
        return 1;
    }
    const kf_hparams_t *hp = kf_model_hparams(model);
    uint32_t ctx = (uint32_t)(prompt_len + gen);
    size_t per_tok = (size_t)hp->n_layer * 2 * hp->n_head_kv * hp->head_dim * 2;
    kf_kv_conf_t kc = {.budget_bytes = per_tok * (ctx + 16) * max_seqs + (1u << 20),
                       .block_tokens = 16,
                       .max_seqs = max_seqs,
                       .dtype = KF_KV_F16};
    kf_backend_conf_t bc = {.n_threads = threads, .max_batch = max_batch};
    toks = calloc(max_batch, sizeof(*toks));
    logits = malloc(sizeof(float) * hp->n_vocab * max_seqs);
    if (!toks || !logits || kf_kv_new(model, &kc, &kv, err, sizeof(err)) != KF_OK ||
        kf_backend_new("cpu", model, kv, &bc, &be, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "fwd: %s\n", toks && logits ? err : "out of memory");
        goto out;
    }
    print_load();
    printf("%s: %u layers, n_embd %u, %d thread(s), simd %s\n", path, hp->n_layer, hp->n_embd,
           threads, kf_cpu_simd_name());

    /* Prefill: one prompt in one batch, logits for its last token only. A one-token forward
     * first faults the mapped weights in, so that page-cache copying is not timed. */
    int32_t seq;
    if (kf_kv_seq_new(kv, &seq) != KF_OK || kf_kv_seq_reserve(kv, seq, ctx) != KF_OK) {
        fprintf(stderr, "fwd: KV cache too small\n");
        goto out;
    }
    toks[0] = (kf_batch_tok_t){.token = 1, .pos = 0, .seq = seq, .logits = 1};
    kf_batch_t warm = {.toks = toks, .n_tokens = 1};
    kf_logits_t lw = {.data = logits, .cap_rows = max_seqs};
    if (kf_backend_forward(be, &warm, &lw, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "fwd: warm-up: %s\n", err);
        goto out;
    }
    for (long p = 0; p < prompt_len; p++)
        toks[p] = (kf_batch_tok_t){.token = (int32_t)((p * 7919) % hp->n_vocab),
                                   .pos = (int32_t)p,
                                   .seq = seq,
                                   .logits = p == prompt_len - 1};
    kf_batch_t bt = {.toks = toks, .n_tokens = (uint32_t)prompt_len};
    kf_logits_t lg = {.data = logits, .cap_rows = max_seqs};
    double w0 = now_s(), c0 = proc_cpu_s();
    if (kf_backend_forward(be, &bt, &lg, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "fwd: prefill: %s\n", err);
        goto out;
    }
    double w = now_s() - w0, c = proc_cpu_s() - c0;
    printf("prefill %ld tokens: %.1f tok/s wall, %.1f tok/s per CPU-second x %d threads "
           "(%.0f ms wall, %.0f ms CPU)\n",
           prompt_len, prompt_len / w, prompt_len / c * threads, threads, w * 1e3, c * 1e3);
    kf_kv_seq_free(kv, seq);

    /* Decode: every sequence one token per step. */
    for (int k = 0; k < n_seqs; k++) {
        uint32_t ns = (uint32_t)seqs[k];
        int32_t ids[4096];
        for (uint32_t j = 0; j < ns; j++)
            if (kf_kv_seq_new(kv, &ids[j]) != KF_OK || kf_kv_seq_reserve(kv, ids[j], ctx)) {
                fprintf(stderr, "fwd: KV cache too small for %u sequences\n", ns);
                goto out;
            }
        double best = 1e30, tw = 0, tc = 0;
        for (long g = 0; g < gen; g++) {
            for (uint32_t j = 0; j < ns; j++)
                toks[j] =
                    (kf_batch_tok_t){.token = (int32_t)((j * 31 + (uint32_t)g * 17) % hp->n_vocab),
                                     .pos = (int32_t)(prompt_len + g),
                                     .seq = ids[j],
                                     .logits = 1};
            bt.n_tokens = ns;
            w0 = now_s();
            c0 = proc_cpu_s();
            if (kf_backend_forward(be, &bt, &lg, err, sizeof(err)) != KF_OK) {
                fprintf(stderr, "fwd: decode: %s\n", err);
                goto out;
            }
            w = now_s() - w0;
            tw += w;
            tc += proc_cpu_s() - c0;
            best = w < best ? w : best;
        }
        printf("decode %2u seqs: %.1f tok/s wall (best step %.1f), %.1f tok/s per CPU-second x "
               "%d threads (%ld steps, %.1f ms/step wall)\n",
               ns, ns * gen / tw, ns / best, ns * gen / tc * threads, threads, gen, tw / gen * 1e3);
        for (uint32_t j = 0; j < ns; j++)
            kf_kv_seq_free(kv, ids[j]);
    }
    print_load();
    rc = 0;
out:
    kf_backend_destroy(be);
    kf_kv_destroy(kv);
    kf_model_destroy(model);
    free(toks);
    free(logits);
    return rc;
}

/* ---------- attention ---------- */

/* One decoding token's attention (kf_cpu_attn_group for every layer and KV head) over a
 * cache laid out as the backend's: blocks of bt positions holding all layers' K and V, in
 * shuffled order. One thread, best CPU time of --reps runs. */
static int
cmd_attn(int argc, char **argv)
{
    int pos[16] = {128, 512, 2048, 8192}, n_pos_list = 4;
    int hd = 64, group = 7, n_kv = 2, layers = 24, bt = 16, f16 = 1, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pos") && i + 1 < argc)
            n_pos_list = parse_list(argv[++i], pos, 16);
        else if (!strcmp(argv[i], "--hd") && i + 1 < argc)
            hd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--group") && i + 1 < argc)
            group = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-heads") && i + 1 < argc)
            n_kv = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bt") && i + 1 < argc)
            bt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f32"))
            f16 = 0;
        else {
            fprintf(stderr, "bench_cpu attn: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!n_pos_list || hd <= 0 || hd > 512 || group <= 0 || n_kv <= 0 || layers <= 0 || bt <= 0 ||
        reps <= 0) {
        fprintf(stderr, "bench_cpu attn: bad --pos, --hd (1..512), --group, --kv-heads, "
                        "--layers, --bt or --reps\n");
        return 2;
    }
    int max_pos = 0;
    for (int i = 0; i < n_pos_list; i++)
        max_pos = pos[i] > max_pos ? pos[i] : max_pos;
    size_t kv_dim = (size_t)n_kv * (size_t)hd, esz = f16 ? 2 : 4;
    size_t block_elems = (size_t)2 * (size_t)layers * (size_t)bt * kv_dim;
    uint32_t nblk = (uint32_t)((max_pos + bt - 1) / bt);
    void *cache = malloc(block_elems * nblk * esz);
    uint32_t *table = malloc(sizeof(uint32_t) * nblk);
    size_t qn = (size_t)n_kv * (size_t)group * (size_t)hd;
    float *q = malloc(sizeof(float) * qn), *out = malloc(sizeof(float) * qn);
    if (!cache || !table || !q || !out) {
        fprintf(stderr, "bench_cpu attn: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < block_elems * nblk; i++) {
        float v = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        if (f16)
            ((uint16_t *)cache)[i] = kf_cpu_f32_to_f16(v);
        else
            ((float *)cache)[i] = v;
    }
    for (uint32_t b = 0; b < nblk; b++) /* out of order, as blocks come from a free list */
        table[b] = b % 2 ? nblk - 1 - b / 2 : b / 2;
    for (size_t i = 0; i < qn; i++)
        q[i] = (float)(i % 17) / 17.0f - 0.5f;
    printf("attention: head_dim %d, %d query heads per KV head, %d KV heads, %d layers, "
           "blocks of %d, %s cache, 1 thread, best of %d\n",
           hd, group, n_kv, layers, bt, f16 ? "f16" : "f32", reps);
    print_load();
    printf("%8s %12s %16s %12s\n", "pos", "ms/token", "ns/pos/kv-head", "K+V GB/s");
    float scale = 1.0f / sqrtf((float)hd);
    for (int pi = 0; pi < n_pos_list; pi++) {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = cpu_s();
            for (int l = 0; l < layers; l++) {
                kf_cpu_kv_view_t view = {.cache = cache,
                                         .f16 = f16,
                                         .block_elems = block_elems,
                                         .bt = (uint32_t)bt,
                                         .kv_dim = (uint32_t)kv_dim,
                                         .layer = (uint32_t)l,
                                         .blocks = table};
                for (int h = 0; h < n_kv; h++) {
                    size_t qo = (size_t)h * (size_t)group * (size_t)hd;
                    kf_cpu_attn_group(&view, q + qo, (uint32_t)group, (uint32_t)hd,
                                      (uint32_t)(h * hd), (uint32_t)pos[pi], scale, out + qo);
                }
            }
            double t = cpu_s() - t0;
            best = t < best ? t : best;
        }
        double per = (double)pos[pi] * layers * n_kv;
        double bytes = per * 2.0 * hd * (double)esz;
        printf("%8d %12.3f %16.2f %12.2f\n", pos[pi], best * 1e3, best * 1e9 / per,
               bytes / best * 1e-9);
    }
    double chk = 0.0;
    for (size_t i = 0; i < qn; i++)
        chk += out[i];
    printf("checksum %.6f\n", chk);
    free(cache);
    free(table);
    free(q);
    free(out);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("Usage: bench_cpu bw [--mib N] [--threads LIST] [--reps N]\n"
               "       bench_cpu mm [--type f32|f16|bf16|q8_0|q8_0x8|q4_0|q4_k|q6_k] [--in N] "
               "[--out N]\n"
               "                    [--tok LIST] [--threads N] [--secs S]\n"
               "       bench_cpu fwd -m MODEL [--threads N] [--prompt-len N] [--gen N] "
               "[--seqs LIST]\n"
               "       bench_cpu attn [--pos LIST] [--hd N] [--group N] [--kv-heads N] "
               "[--layers N] [--bt N] [--f32] [--reps N]\n"
               "       bench_cpu check\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "bw"))
        return cmd_bw(argc - 1, argv + 1);
    if (!strcmp(argv[1], "mm"))
        return cmd_mm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "fwd"))
        return cmd_fwd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "attn"))
        return cmd_attn(argc - 1, argv + 1);
    if (!strcmp(argv[1], "check"))
        return cmd_check();
    fprintf(stderr, "bench_cpu: unknown command '%s' (see --help)\n", argv[1]);
    return 2;
}
