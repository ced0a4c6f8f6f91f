/*
 * cmd_generate.c: the `kinfer generate` and `kinfer bench-infer` subcommands, thin drivers of
 * kf_engine. `generate` streams one completion to stdout (stats to stderr); `bench-infer`
 * prints prefill and decode throughput at several batch sizes, peak RSS and weight bytes.
 * Both take `--device cpu|cuda|auto` (default auto: the GPU when there is one), passed to
 * kf_engine_conf_t.backend, and `--host-sample` to keep the logits path on a GPU.
 */
#include "kf_engine.h"
#include "kf_gguf.h"
#include "kf_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

int kf_cmd_generate(int argc, char **argv);
int kf_cmd_bench_infer(int argc, char **argv);

#define MAX_STOPS 16
#define MAX_SEQS  16

/* Options shared by both commands. */
typedef struct gen_opts {
    const char *model;
    const char *device;
    int host_sample;
    int requant_q8;
    int threads;
    size_t kv_mib;
    uint32_t max_batch_seqs, max_batch_tokens, ctx;
    const char *chat_template;
} gen_opts_t;

static int
parse_long(const char *cmd, const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "%s: %s needs an integer in [%ld, %ld], got '%s'\n", cmd, opt, lo, hi,
                v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

static int
parse_float(const char *cmd, const char *opt, const char *v, float *out)
{
    char *end = NULL;
    errno = 0;
    float x = v ? strtof(v, &end) : 0.0f;
    if (!v || errno || end == v || *end) {
        fprintf(stderr, "%s: %s needs a number, got '%s'\n", cmd, opt, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

static double
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
open_engine(const char *cmd,
            const gen_opts_t *o,
            kf_model_t **out_model,
            kf_engine_t **out_eng,
            kf_engine_text_cb *on_text)
{
    char err[512];
    kf_err_t e = kf_model_load(o->model, out_model, err, sizeof(err));
    if (e) {
        fprintf(stderr, "%s: cannot load %s: %s\n", cmd, o->model, err);
        return 0;
    }
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.backend = o->device;
    conf.sample_on_host = o->host_sample;
    conf.cpu_requant_q8 = o->requant_q8;
    conf.n_threads = o->threads;
    conf.kv_budget_bytes = o->kv_mib << 20;
    conf.max_batch_seqs = o->max_batch_seqs;
    conf.max_batch_tokens = o->max_batch_tokens;
    conf.max_seq_len = o->ctx;
    conf.chat_template = o->chat_template;
    conf.on_text = on_text;
    e = kf_engine_new(*out_model, &conf, out_eng, err, sizeof(err));
    if (e) {
        fprintf(stderr, "%s: cannot start the engine: %s\n", cmd, err);
        kf_model_destroy(*out_model);
        *out_model = NULL;
        return 0;
    }
    return 1;
}

/* Parses an option common to both commands at argv[*i]; 1 = consumed, 0 = not ours, -1 =
 * bad value. */
static int
common_opt(const char *cmd, gen_opts_t *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    long x;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        if (!v)
            return -1;
        o->model = v;
    } else if (!strcmp(a, "--device")) {
        if (!v)
            return -1;
        if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
            fprintf(stderr, "%s: --device must be cpu, cuda or auto, got '%s'\n", cmd, v);
            return -1;
        }
        o->device = v;
    } else if (!strcmp(a, "--host-sample")) {
        o->host_sample = 1;
        return 1; /* a flag: no value to skip */
    } else if (!strcmp(a, "--requant-q8")) {
        o->requant_q8 = 1;
        return 1;
    } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
        if (!parse_long(cmd, a, v, 0, 1024, &x))
            return -1;
        o->threads = (int)x;
    } else if (!strcmp(a, "--kv-mib")) {
        if (!parse_long(cmd, a, v, 1, 1L << 20, &x))
            return -1;
        o->kv_mib = (size_t)x;
    } else if (!strcmp(a, "--batch-seqs")) {
        if (!parse_long(cmd, a, v, 1, 4096, &x))
            return -1;
        o->max_batch_seqs = (uint32_t)x;
    } else if (!strcmp(a, "--batch-tokens")) {
        if (!parse_long(cmd, a, v, 1, 65536, &x))
            return -1;
        o->max_batch_tokens = (uint32_t)x;
    } else if (!strcmp(a, "--ctx")) {
        if (!parse_long(cmd, a, v, 1, 1L << 24, &x))
            return -1;
        o->ctx = (uint32_t)x;
    } else {
        return 0;
    }
    (*i)++;
    return 1;
}

static void
generate_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer generate -m MODEL.gguf -p PROMPT [options]\n\n"
            "Generates one completion, streaming the text to stdout; stats go to stderr.\n\n"
            "  -m, --model PATH      GGUF model (required)\n"
            "  -p, --prompt TEXT     prompt (required); special-token text is parsed\n"
            "  --chat                wrap the prompt as a user message in the model's chat "
            "template\n"
            "  --system TEXT         system message (with --chat)\n"
            "  --chat-template NAME  force chatml, qwen2, qwen2.5, llama3 or deepseek-r1\n"
            "  -n, --n-predict N     tokens to generate (default 128)\n"
            "  --temp X              temperature, 0 = greedy (default 0.8)\n"
            "  --top-k N             (default 40, 0 = off)\n"
            "  --top-p X             (default 0.95, 1 = off)\n"
            "  --min-p X             (default 0.05, 0 = off)\n"
            "  --repeat-penalty X    (default 1.0 = off)\n"
            "  --repeat-last-n N     penalty window (default 64, -1 = all)\n"
            "  --seed N              sampling seed (default random; printed in the stats)\n"
            "  --stop TEXT           stop string (repeatable, up to %d)\n"
            "  --ignore-eos          keep generating past end-of-generation tokens\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "  --device NAME         cpu, cuda or auto (default: cuda when a GPU is present)\n"
            "  --host-sample         with cuda, copy logits and sample on the host\n"
            "  --requant-q8          cpu: run Q4_0/Q4_K/Q6_K matrices as Q8_0 (faster,\n"
            "                        more memory: 8.5 bits per weight)\n"
            "  --kv-mib N            KV cache budget in MiB (default 256)\n"
            "  --ctx N               max prompt + generated tokens (default: model context)\n",
            MAX_STOPS);
}

static void
stream_stdout(kf_seq_id_t id, void *user, const char *piece, size_t len, void *opaque)
{
    (void)id;
    (void)user;
    (void)opaque;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
}

int
kf_cmd_generate(int argc, char **argv)
{
    const char *cmd = "generate";
    gen_opts_t o = {.device = "auto", .kv_mib = 256};
    const char *prompt = NULL, *system = NULL, *tmpl = NULL;
    const char *stops[MAX_STOPS];
    size_t n_stops = 0;
    int chat = 0;
    kf_request_t req;
    kf_request_init(&req);
    req.max_tokens = 128;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        int c = common_opt(cmd, &o, argc, argv, &i);
        if (c < 0) {
            if (!v)
                fprintf(stderr, "%s: %s needs a value\n", cmd, a);
            return 2;
        }
        if (c > 0)
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
            continue;
        } else if (!strcmp(a, "--ignore-eos")) {
            req.ignore_eos = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "%s: unknown option or missing value: '%s' (see --help)\n", cmd, a);
            return 2;
        }
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "--system")) {
            system = v;
        } else if (!strcmp(a, "--chat-template")) {
            tmpl = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!parse_long(cmd, a, v, 1, 1L << 24, &x))
                return 2;
            req.max_tokens = (uint32_t)x;
        } else if (!strcmp(a, "--temp")) {
            if (!parse_float(cmd, a, v, &req.sampling.temperature))
                return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!parse_long(cmd, a, v, 0, 1L << 24, &x))
                return 2;
            req.sampling.top_k = (int32_t)x;
        } else if (!strcmp(a, "--top-p")) {
            if (!parse_float(cmd, a, v, &req.sampling.top_p))
                return 2;
        } else if (!strcmp(a, "--min-p")) {
            if (!parse_float(cmd, a, v, &req.sampling.min_p))
                return 2;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (!parse_float(cmd, a, v, &req.sampling.repeat_penalty))
                return 2;
        } else if (!strcmp(a, "--repeat-last-n")) {
            if (!parse_long(cmd, a, v, -1, 1L << 24, &x))
                return 2;
            req.sampling.repeat_last_n = (int32_t)x;
        } else if (!strcmp(a, "--seed")) {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "%s: --seed needs an unsigned integer, got '%s'\n", cmd, v);
                return 2;
            }
            req.sampling.seed = (uint64_t)s;
        } else if (!strcmp(a, "--stop")) {
            if (n_stops == MAX_STOPS) {
                fprintf(stderr, "%s: at most %d --stop strings\n", cmd, MAX_STOPS);
                return 2;
            }
            stops[n_stops++] = v;
        } else {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", cmd, a);
            return 2;
        }
        i++;
    }
    if (!o.model || !prompt) {
        fprintf(stderr, "%s: -m MODEL and -p PROMPT are required (see --help)\n", cmd);
        return 2;
    }
    if (system && !chat) {
        fprintf(stderr, "%s: --system needs --chat\n", cmd);
        return 2;
    }
    char err[512];
    if (kf_sampling_check(&req.sampling, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "%s: %s\n", cmd, err);
        return 2;
    }

    if (tmpl) {
        kf_chat_tmpl_t t;
        if (kf_chat_tmpl_from_name(tmpl, &t) != KF_OK) {
            fprintf(stderr, "%s: unknown --chat-template '%s'\n", cmd, tmpl);
            return 2;
        }
    }
    o.chat_template = tmpl;
    kf_model_t *model = NULL;
    kf_engine_t *eng = NULL;
    if (!open_engine(cmd, &o, &model, &eng, stream_stdout))
        return 1;
    kf_chat_msg_t msgs[2];
    size_t n_msgs = 0;
    if (chat) {
        if (system)
            msgs[n_msgs++] = (kf_chat_msg_t){"system", system};
        msgs[n_msgs++] = (kf_chat_msg_t){"user", prompt};
        req.messages = msgs;
        req.n_messages = n_msgs;
    } else {
        req.prompt = prompt;
    }
    req.stop = stops;
    req.n_stop = n_stops;
    kf_result_t *res = NULL;
    double t0 = wall_ms();
    kf_err_t e = kf_engine_generate(eng, &req, &res, err, sizeof(err));
    double t1 = wall_ms();
    int rc = 0;
    if (e) {
        fprintf(stderr, "%s: %s\n", cmd, err);
        rc = 1;
    } else {
        printf("\n");
        fflush(stdout);
        double pre_tps = res->prefill_ms > 0 ? res->n_prompt_tokens * 1e3 / res->prefill_ms : 0;
        double dec_tps = res->decode_ms > 0 && res->n_completion_tokens > 1
                             ? (res->n_completion_tokens - 1) * 1e3 / res->decode_ms
                             : 0;
        fprintf(stderr,
                "\n%s: finish=%s prompt_tokens=%u completion_tokens=%u seed=%llu\n"
                "%s: queue %.1f ms, prefill %.1f ms (%.1f tok/s), decode %.1f ms (%.1f tok/s), "
                "total %.1f ms, %d threads, device %s, chat template %s\n",
                cmd, kf_finish_name(res->finish), res->n_prompt_tokens, res->n_completion_tokens,
                (unsigned long long)res->seed, cmd, res->queue_ms, res->prefill_ms, pre_tps,
                res->decode_ms, dec_tps, t1 - t0, kf_engine_n_threads(eng), kf_engine_backend(eng),
                kf_engine_chat_template(eng) ? kf_engine_chat_template(eng) : "none");
        if (res->finish == KF_FINISH_ERROR) {
            fprintf(stderr, "%s: error: %s\n", cmd, res->errstr);
            rc = 1;
        }
        kf_result_destroy(res);
    }
    kf_engine_destroy(eng);
    kf_model_destroy(model);
    return rc;
}

/* On long runs, a line on stderr every 5 s: what is running, tokens done of the total. */
static void
bench_progress(
    const char *what, uint32_t n_seqs, uint64_t done, uint64_t total, double t0, double *t_note)
{
    double now = wall_ms();
    if (now - *t_note < 5000.0)
        return;
    *t_note = now;
    fprintf(stderr, "bench-infer: %s, %u seq%s: %llu of %llu tokens after %.0f s\n", what, n_seqs,
            n_seqs == 1 ? "" : "s", (unsigned long long)done, (unsigned long long)total,
            (now - t0) / 1e3);
}

/* kf_engine_generate() for the prefill run, stepped here so a long prompt reports progress. */
static kf_err_t
bench_prefill(
    kf_engine_t *eng, const kf_request_t *req, kf_result_t **out, char *err, size_t err_size)
{
    kf_engine_stats_t st0, st;
    kf_engine_stats(eng, &st0);
    kf_err_t e = kf_engine_submit(eng, req, NULL, err, err_size);
    if (e)
        return e;
    double t0 = wall_ms(), t_note = t0;
    int busy = 1;
    while (busy) {
        e = kf_engine_step(eng, &busy, err, err_size);
        if (e)
            return e;
        kf_engine_stats(eng, &st);
        bench_progress("prefill", 1, st.n_prefill_tokens - st0.n_prefill_tokens,
                       (uint64_t)req->n_prompt_ids, t0, &t_note);
    }
    if (kf_engine_poll(eng, out) != KF_OK) {
        snprintf(err, err_size, "the engine returned no result");
        return KF_ERR_INTERNAL;
    }
    if ((*out)->err) {
        snprintf(err, err_size, "%s", (*out)->errstr);
        e = (*out)->err;
        kf_result_destroy(*out);
        *out = NULL;
        return e;
    }
    return KF_OK;
}

static void
bench_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer bench-infer -m MODEL.gguf [options]\n\n"
                "Measures the engine: prefill tokens/s of one prompt, then decode tokens/s with\n"
                "N sequences generating at once (greedy, EOS ignored), peak RSS and weight "
                "bytes.\n"
                "Decode rate counts only steps that carried no prefill tokens. Runs longer\n"
                "than 5 s report tokens done on stderr every 5 s.\n\n"
                "  -m, --model PATH   GGUF model (required)\n"
                "  -t, --threads N    CPU threads (default 2)\n"
                "  --prompt-len N     prompt tokens (default 128)\n"
                "  --gen N            tokens generated per sequence (default 64)\n"
                "  --seqs LIST        concurrent sequences, comma separated (default 1,8,32)\n"
                "  --device NAME      cpu, cuda or auto (default: cuda when a GPU is present)\n"
                "  --host-sample      with cuda, copy logits and sample on the host\n"
                "  --requant-q8       cpu: run Q4_0/Q4_K/Q6_K matrices as Q8_0 (faster,\n"
                "                     more memory: 8.5 bits per weight)\n"
                "  --kv-mib N         KV cache budget in MiB (default 256)\n"
                "  --batch-tokens N   max tokens per forward call (default 512)\n"
                "  --warmup N         untimed rounds of the whole run first (default: 1 on\n"
                "                     cuda, where first calls capture CUDA graphs; 0 on cpu)\n");
}

/* A prompt of exactly n tokens: the tokenized filler text repeated, rotated by `shift` so
 * every sequence of a batch reads a different prompt. */
static int32_t *
make_prompt(const int32_t *base, size_t n_base, size_t n, size_t shift)
{
    int32_t *p = malloc(n * sizeof(*p));
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++)
        p[i] = base[(i + shift) % n_base];
    return p;
}

int
kf_cmd_bench_infer(int argc, char **argv)
{
    const char *cmd = "bench-infer";
    gen_opts_t o = {.device = "auto", .kv_mib = 256, .threads = 2};
    long prompt_len = 128, gen = 64, warmup = -1;
    uint32_t seqs[MAX_SEQS] = {1, 8, 32};
    size_t n_seqs = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int c = common_opt(cmd, &o, argc, argv, &i);
        if (c < 0) {
            if (!v)
                fprintf(stderr, "%s: %s needs a value\n", cmd, a);
            return 2;
        }
        if (c > 0)
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--prompt-len")) {
            if (!parse_long(cmd, a, v, 1, 1L << 20, &prompt_len))
                return 2;
        } else if (!strcmp(a, "--gen")) {
            if (!parse_long(cmd, a, v, 2, 1L << 20, &gen))
                return 2;
        } else if (!strcmp(a, "--warmup")) {
            if (!parse_long(cmd, a, v, 0, 100, &warmup))
                return 2;
        } else if (!strcmp(a, "--seqs")) {
            if (!v) {
                fprintf(stderr, "%s: --seqs needs a value\n", cmd);
                return 2;
            }
            n_seqs = 0;
            char buf[256];
            snprintf(buf, sizeof(buf), "%s", v);
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save)) {
                long x;
                if (n_seqs == MAX_SEQS || !parse_long(cmd, "--seqs", tok, 1, 4096, &x))
                    return 2;
                seqs[n_seqs++] = (uint32_t)x;
            }
            if (!n_seqs) {
                fprintf(stderr, "%s: --seqs is empty\n", cmd);
                return 2;
            }
        } else {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", cmd, a);
            return 2;
        }
        i++;
    }
    if (!o.model) {
        fprintf(stderr, "%s: -m MODEL is required (see --help)\n", cmd);
        return 2;
    }
    uint32_t max_seqs = 1;
    for (size_t i = 0; i < n_seqs; i++)
        if (seqs[i] > max_seqs)
            max_seqs = seqs[i];
    o.max_batch_seqs = max_seqs;
    if (!o.ctx)
        o.ctx = (uint32_t)(prompt_len + gen + 8);

    kf_model_t *model = NULL;
    kf_engine_t *eng = NULL;
    if (!open_engine(cmd, &o, &model, &eng, NULL))
        return 1;
    uint64_t weight_bytes = 0;
    const kf_gguf_t *gf = kf_model_gguf(model);
    for (uint64_t i = 0; i < kf_gguf_n_tensors(gf); i++)
        weight_bytes += kf_gguf_tensor(gf, i)->n_bytes;

    char err[512];
    int32_t *base = NULL;
    size_t n_base = 0;
    const char *filler = "The quick brown fox jumps over the lazy dog while the engine counts "
                         "tokens, batches sequences and pages its key value cache. ";
    if (kf_engine_tokenize(eng, filler, &base, &n_base, err, sizeof(err)) != KF_OK || n_base == 0) {
        fprintf(stderr, "%s: cannot tokenize the filler prompt: %s\n", cmd, err);
        kf_engine_destroy(eng);
        kf_model_destroy(model);
        return 1;
    }
    printf("model %s: %.1f MiB of weights, %d threads, device %s (asked: %s), sampling on the "
           "%s\n",
           o.model, (double)weight_bytes / (1 << 20), kf_engine_n_threads(eng),
           kf_engine_backend(eng), o.device,
           strcmp(kf_engine_backend(eng), "cuda") || o.host_sample ? "host" : "device");
    int rc = 0;
    if (warmup < 0)
        warmup = strcmp(kf_engine_backend(eng), "cpu") ? 1 : 0;
    if (warmup)
        printf("warm-up: %ld untimed round%s first\n", warmup, warmup > 1 ? "s" : "");

    for (long round = 0; round <= warmup && rc == 0; round++) {
        int quiet = round < warmup; /* warm-up rounds print nothing */
        /* Prefill: one prompt, one generated token. */
        {
            int32_t *p = make_prompt(base, n_base, (size_t)prompt_len, 0);
            kf_request_t req;
            kf_request_init(&req);
            kf_sampling_greedy(&req.sampling);
            req.prompt_ids = p;
            req.n_prompt_ids = (size_t)prompt_len;
            req.max_tokens = 1;
            req.ignore_eos = 1;
            kf_result_t *res = NULL;
            if (!p || bench_prefill(eng, &req, &res, err, sizeof(err)) != KF_OK) {
                fprintf(stderr, "%s: prefill run failed: %s\n", cmd, p ? err : "out of memory");
                rc = 1;
            } else if (!quiet) {
                printf("prefill: %ld tokens in %.1f ms = %.1f tokens/s\n", prompt_len,
                       res->prefill_ms,
                       res->prefill_ms > 0 ? prompt_len * 1e3 / res->prefill_ms : 0);
            }
            kf_result_destroy(res);
            free(p);
        }

        /* Decode at each concurrency. */
        for (size_t k = 0; k < n_seqs && rc == 0; k++) {
            uint32_t n = seqs[k];
            kf_engine_stats_t st0, st1, st_begin;
            kf_engine_stats(eng, &st_begin);
            st1 = st_begin;
            for (uint32_t j = 0; j < n; j++) {
                int32_t *p = make_prompt(base, n_base, (size_t)prompt_len, j * 7);
                kf_request_t req;
                kf_request_init(&req);
                kf_sampling_greedy(&req.sampling);
                req.prompt_ids = p;
                req.n_prompt_ids = (size_t)prompt_len;
                req.max_tokens = (uint32_t)gen;
                req.ignore_eos = 1;
                kf_err_t e = p ? kf_engine_submit(eng, &req, NULL, err, sizeof(err)) : KF_ERR_NOMEM;
                free(p);
                if (e) {
                    fprintf(stderr, "%s: submit failed: %s\n", cmd, err);
                    rc = 1;
                    break;
                }
            }
            double decode_ms = 0, t_all = wall_ms(), t_note = t_all;
            uint64_t decode_toks = 0;
            int busy = 1;
            while (busy && rc == 0) {
                bench_progress("decode", n, st1.n_decode_tokens - st_begin.n_decode_tokens,
                               (uint64_t)n * (uint64_t)gen, t_all, &t_note);
                kf_engine_stats(eng, &st0);
                double t0 = wall_ms();
                if (kf_engine_step(eng, &busy, err, sizeof(err)) != KF_OK) {
                    fprintf(stderr, "%s: step failed: %s\n", cmd, err);
                    rc = 1;
                    break;
                }
                double t1 = wall_ms();
                kf_engine_stats(eng, &st1);
                if (st1.n_prefill_tokens == st0.n_prefill_tokens &&
                    st1.n_decode_tokens > st0.n_decode_tokens) {
                    decode_ms += t1 - t0;
                    decode_toks += st1.n_decode_tokens - st0.n_decode_tokens;
                }
            }
            kf_result_t *res;
            while (kf_engine_poll(eng, &res) == KF_OK)
                kf_result_destroy(res);
            if (quiet)
                continue;
            printf("decode: %3u seqs: %llu tokens in %.1f ms = %.1f tokens/s (%.1f per seq); "
                   "batch wall %.1f ms, %llu preemptions, %llu tokens sampled on the device\n",
                   n, (unsigned long long)decode_toks, decode_ms,
                   decode_ms > 0 ? decode_toks * 1e3 / decode_ms : 0,
                   decode_ms > 0 ? decode_toks * 1e3 / decode_ms / n : 0, wall_ms() - t_all,
                   (unsigned long long)(st1.n_preemptions - st_begin.n_preemptions),
                   (unsigned long long)(st1.n_device_sampled - st_begin.n_device_sampled));
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS: %.1f MiB; weights: %llu bytes (%.1f MiB)\n", (double)ru.ru_maxrss / 1024.0,
           (unsigned long long)weight_bytes, (double)weight_bytes / (1 << 20));
    free(base);
    kf_engine_destroy(eng);
    kf_model_destroy(model);
    return rc;
}
