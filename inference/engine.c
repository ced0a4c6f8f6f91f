/*
 * The continuous-batching scheduler behind kf_engine.h.
 *
 * Ownership of state: the waiting list, the running array and everything inside a sequence
 * except its cancel flag belong to the thread that drives the engine (kf_engine_step, under
 * step_mu). Other threads only touch what sits under `mu`: the incoming list (submit), the
 * live list and cancel flags (cancel), the results queue (poll), the stop flag and the stats
 * snapshot. A step takes `mu` twice: once to pick up submissions and cancellations, and once
 * per finished sequence to deliver its result; the forward pass runs without it.
 *
 * Sequence life cycle:
 *   incoming --step--> waiting (sorted by rank) --admit--> running --finish--> result
 *                          ^                                   |
 *                          +------------- preempt -------------+
 * "Rank" orders sequences by priority (higher first), then by id (older first). Admission,
 * batch placement and block allocation go in rank order, and preemption picks the lowest
 * ranked sequence not yet placed in the batch, so older work always makes progress.
 *
 * A sequence is one token array `toks` (prompt, then generated tokens) and `n_computed`, the
 * number of leading tokens whose K/V is in the cache. Each step feeds toks[n_computed, ...):
 * one token while decoding, a chunk while prefilling. Logits are asked for only when the chunk
 * reaches the end of `toks`; the sampled token is appended. Preemption frees the blocks and
 * sets n_computed to 0, so recomputation is just a longer prefill of the same tokens, and the
 * sampler (with its PRNG state and penalty history) is untouched: the output is unchanged.
 *
 * Sampling on the GPU (CUDA backend): a sequence is of the "device kind" when its sampling
 * fits the device sampler exactly (no repetition penalty; greedy or top_k in 1..1024) and is
 * decided once, at submit, so that its random stream never depends on the batch around it.
 * A step whose logits rows all belong to device-kind sequences calls kf_cuda_forward_sample()
 * and gets token ids back; any other step takes the logits path, where device-kind rows with a
 * temperature go through kf_cuda_sample_logits() with the same uniform numbers, so that a
 * sequence is sampled by the same rule whichever kind of step it lands in.
 */
#include "kf_engine.h"

#include "backends/cuda/kf_cuda.h" /* kf_backend_pick(); the rest only with KF_HAVE_CUDA */
#include "kf_backend.h"
#include "kf_kv.h"
#include "kf_log.h"
#include "kf_tokenizer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum seq_state {
    SEQ_WAITING = 0,
    SEQ_RUNNING,
    SEQ_DONE,
} seq_state_t;

/* Where kf_engine_generate() waits for its own result. */
typedef struct sync_wait {
    kf_result_t *res;
    int done;
} sync_wait_t;

typedef struct kf_seq {
    kf_seq_id_t id;
    int priority;
    void *user;
    seq_state_t state;

    int32_t *toks; /* prompt then generated tokens */
    uint32_t n_toks, cap_toks;
    uint32_t n_prompt;
    uint32_t n_computed; /* leading tokens whose K/V is cached */
    int32_t slot;        /* kf_kv sequence slot, -1 when none */
    uint32_t chunk;      /* tokens placed in the current batch */
    int placed;          /* in the batch being built */

    kf_sampler_t *smp;
    kf_sampling_t sp; /* the request's sampling (seed resolved) */
    int on_dev;       /* device kind: sampled by the GPU sampler (see the top comment) */
    uint64_t rng[4];  /* xoshiro256** state of the device kind's uniform draws */
    char **stops;
    size_t n_stops;
    uint32_t max_tokens;
    int ignore_eos;
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */

    char *text; /* generated text, NUL-terminated */
    size_t text_len, text_cap;
    size_t n_emitted; /* bytes already streamed */

    int64_t t_submit, t_admit, t_first, t_end;
    uint32_t n_preempt;

    kf_finish_t finish;
    kf_err_t err;
    char errstr[256];

    int cancel_req;    /* under mu */
    int cancel_seen;   /* copied from cancel_req by the step */
    sync_wait_t *sync; /* kf_engine_generate() waiter, or NULL */

    struct kf_seq *next; /* incoming or waiting list */
    struct kf_seq *live_prev, *live_next;
} kf_seq_t;

/* A result owned by the caller: the public struct first so kf_result_destroy can free it. */
typedef struct res_node {
    kf_result_t res;
    struct res_node *next;
} res_node_t;

struct kf_engine {
    const kf_model_t *model;
    kf_tokenizer_t *tok;
    kf_kv_t *kv;
    kf_backend_t *be;
    kf_engine_conf_t conf; /* defaults resolved; string fields not kept */
    int has_chat;
    kf_chat_tmpl_t chat;
    uint32_t n_vocab;

    /* Driving thread. */
    pthread_mutex_t step_mu;
    kf_seq_t *waiting;
    kf_seq_t **running;
    uint32_t n_running;
    kf_batch_tok_t *btoks;
    kf_seq_t **brows; /* seq of each logits row */
    float *logits;
    int dev_sample;            /* CUDA backend and sampling on the device allowed */
    kf_cuda_sample_t *sparams; /* per logits row, for the GPU sampler */
    int32_t *stoks;            /* per logits row, the GPU sampler's picks */
    kf_engine_stats_t pstats;  /* step-private counters, published into `stats` under mu */

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* submit / cancel / stop: wakes kf_engine_run */
    pthread_cond_t cv_done; /* a sync result arrived, or the run loop ended */
    kf_seq_t *in_head, *in_tail;
    uint32_t n_in;
    uint32_t n_wait_snapshot;
    uint32_t n_cancel_pending;
    kf_seq_t *live;
    res_node_t *res_head, *res_tail;
    int stopping;
    int loop_active;
    int busy; /* requests running or waiting, as of the end of the last step */
    kf_seq_id_t next_id;
    kf_engine_stats_t stats;
};

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t
epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static const char *const finish_names[] = {"none",      "stop",     "length",
                                           "cancelled", "deadline", "error"};

const char *
kf_finish_name(kf_finish_t finish)
{
    if ((int)finish < 0 || (size_t)finish >= sizeof(finish_names) / sizeof(finish_names[0]))
        return "unknown";
    return finish_names[finish];
}

void
kf_engine_conf_init(kf_engine_conf_t *conf)
{
    memset(conf, 0, sizeof(*conf));
}

void
kf_request_init(kf_request_t *req)
{
    memset(req, 0, sizeof(*req));
    kf_sampling_defaults(&req->sampling);
}

void
kf_result_destroy(kf_result_t *res)
{
    if (!res)
        return;
    free((void *)res->text);
    free((void *)res->tokens);
    free(res); /* res is the first member of a res_node_t */
}

/* a runs before b: higher priority, then older. */
static int
rank_before(const kf_seq_t *a, const kf_seq_t *b)
{
    return a->priority > b->priority || (a->priority == b->priority && a->id < b->id);
}

static void
seq_free(kf_seq_t *s)
{
    if (!s)
        return;
    kf_sampler_destroy(s->smp);
    for (size_t i = 0; i < s->n_stops; i++)
        free(s->stops[i]);
    free(s->stops);
    free(s->toks);
    free(s->text);
    free(s);
}

static int
toks_push(kf_seq_t *s, int32_t t)
{
    if (s->n_toks == s->cap_toks) {
        uint32_t cap = s->cap_toks ? s->cap_toks * 2 : 64;
        int32_t *p = realloc(s->toks, (size_t)cap * sizeof(*p));
        if (!p)
            return 0;
        s->toks = p;
        s->cap_toks = cap;
    }
    s->toks[s->n_toks++] = t;
    return 1;
}

static int
text_append(kf_seq_t *s, const char *p, size_t n)
{
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = s->text_cap ? s->text_cap : 256;
        while (cap < s->text_len + n + 1)
            cap *= 2;
        char *t = realloc(s->text, cap);
        if (!t)
            return 0;
        s->text = t;
        s->text_cap = cap;
    }
    if (n)
        memcpy(s->text + s->text_len, p, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
    return 1;
}

/* ---- sampling on the GPU ------------------------------------------------------------------ */

/* The device kind's PRNG is built like kf_sampler's (splitmix64 spreading the seed over a
 * xoshiro256** state), so a seed means the same stream of draws on both paths. */
static uint64_t
mix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
rng_seed(uint64_t st[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        st[i] = mix64(&seed);
}

static uint64_t
rng_next(uint64_t st[4])
{
    uint64_t x = st[1] * 5;
    uint64_t out = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = (st[3] << 45) | (st[3] >> 19);
    return out;
}

/* Uniform in [0, 1) with 24 bits: every value is exact in a float, so none rounds up to the 1.0
 * that the device sampler rejects. */
static float
rng_uniform24(uint64_t st[4])
{
    return (float)(rng_next(st) >> 40) * (1.0f / 16777216.0f);
}

/* 1 when the device sampler gives exactly the CPU sampler's candidate filtering for `sp`: no
 * repetition penalty (it needs the token history on the host), and greedy or a top-k the
 * device honours as such (top_k off would mean "the 1024 best" there, the whole vocabulary on
 * the CPU). */
static int
sampling_fits_device(const kf_sampling_t *sp)
{
    if (sp->repeat_penalty != 1.0f && sp->repeat_last_n != 0)
        return 0;
    return sp->temperature <= 0.0f || (sp->top_k >= 1 && sp->top_k <= KF_CUDA_SAMPLE_MAX_K);
}

/* Fills eng->sparams for the first `nrows` logits rows. Device-kind rows get their own
 * parameters and, with a temperature, one draw from their PRNG; the others (only present in a
 * mixed step, where their pick is discarded) get greedy settings and draw nothing. Returns the
 * number of device-kind rows that sample with a temperature. */
static uint32_t
fill_sample_params(kf_engine_t *eng, uint32_t nrows)
{
    uint32_t n_temp = 0;
    for (uint32_t r = 0; r < nrows; r++) {
        const kf_seq_t *s = eng->brows[r];
        kf_cuda_sample_t *p = &eng->sparams[r];
        *p = (kf_cuda_sample_t){.temperature = 0.0f, .top_k = 1, .top_p = 1.0f};
        if (!s->on_dev)
            continue;
        p->temperature = s->sp.temperature;
        p->top_k = s->sp.top_k;
        p->top_p = s->sp.top_p;
        p->min_p = s->sp.min_p;
        if (s->sp.temperature > 0.0f) {
            p->u = rng_uniform24(eng->brows[r]->rng);
            n_temp++;
        }
    }
    return n_temp;
}

/* ---- construction ---------------------------------------------------------------------- */

/* Starts the backend that conf->backend names (cpu, cuda, auto; kf_engine.h). */
static kf_err_t
start_backend(kf_engine_t *eng,
              const kf_engine_conf_t *conf,
              const kf_backend_conf_t *bc,
              char *errstr,
              size_t errstr_size)
{
    const char *want = conf->backend ? conf->backend : "cpu";
    const char *name = kf_backend_pick(want);
    if (!name)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                          "engine: unknown device '%s' (cpu, cuda or auto)", want);
    int is_auto = !strcmp(want, "auto");
    /* An explicit cuda must not quietly become cpu: say exactly what is missing. */
    if (!strcmp(want, "cuda")) {
        if (!kf_backend_available("cuda"))
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "engine: device cuda: this build has no CUDA backend (nvcc was not "
                              "found when it was built); use --device cpu or auto");
#ifdef KF_HAVE_CUDA
        int n_dev = kf_cuda_device_count();
        if (n_dev == 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "engine: device cuda: no CUDA device found (no GPU or no driver); "
                              "use --device cpu or auto");
        if (conf->device < 0 || conf->device >= n_dev)
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "engine: device cuda: GPU %d asked for, %d present", conf->device,
                              n_dev);
#endif
    }
    if (is_auto && !strcmp(name, "cpu"))
        kf_log(KF_LOG_INFO, "engine", "device auto: %s; using the cpu backend",
               kf_backend_available("cuda") ? "no CUDA device found"
                                            : "this build has no CUDA backend");
    kf_err_t err = kf_backend_new(name, eng->model, eng->kv, bc, &eng->be, errstr, errstr_size);
    if (err && is_auto && !strcmp(name, "cuda")) {
        kf_log(KF_LOG_WARN, "engine",
               "device auto: the cuda backend failed (%s); falling back to "
               "the cpu backend",
               errstr);
        err = kf_backend_new("cpu", eng->model, eng->kv, bc, &eng->be, errstr, errstr_size);
    } else if (!err && is_auto && !strcmp(name, "cuda")) {
        kf_log(KF_LOG_INFO, "engine", "device auto: using the cuda backend on GPU %d",
               conf->device);
    }
    return err;
}

static kf_err_t
detect_chat(kf_engine_t *eng, const char *name, char *errstr, size_t errstr_size)
{
    if (name) {
        if (kf_chat_tmpl_from_name(name, &eng->chat) != KF_OK)
            return kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                              "engine: unknown chat template '%s' (chatml, qwen2, qwen2.5, "
                              "llama3, deepseek-r1)",
                              name);
        eng->has_chat = 1;
        return KF_OK;
    }
    const kf_gguf_t *gf = kf_model_gguf(eng->model);
    kf_gguf_str_t tmpl = {0}, arch = {0};
    char pre[64] = "", archs[64] = "";
    if (kf_gguf_get_str(gf, "tokenizer.chat_template", &tmpl) != KF_OK)
        tmpl.ptr = NULL;
    kf_gguf_str_t s;
    if (kf_gguf_get_str(gf, "tokenizer.ggml.pre", &s) == KF_OK && s.len < sizeof(pre)) {
        memcpy(pre, s.ptr, s.len);
        pre[s.len] = '\0';
    }
    if (kf_gguf_get_str(gf, "general.architecture", &arch) == KF_OK && arch.len < sizeof(archs)) {
        memcpy(archs, arch.ptr, arch.len);
        archs[arch.len] = '\0';
    }
    char why[256];
    eng->has_chat = kf_chat_detect(tmpl.ptr, (size_t)tmpl.len, pre[0] ? pre : NULL,
                                   archs[0] ? archs : NULL, &eng->chat, why, sizeof(why)) == KF_OK;
    if (!eng->has_chat)
        kf_log(KF_LOG_INFO, "engine", "chat requests disabled: %s", why);
    return KF_OK;
}

kf_err_t
kf_engine_new(const kf_model_t *model,
              const kf_engine_conf_t *conf_in,
              kf_engine_t **out,
              char *errstr,
              size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "engine: out is NULL");
    *out = NULL;
    if (!model)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "engine: model is NULL");
    kf_engine_conf_t conf;
    if (conf_in)
        conf = *conf_in;
    else
        kf_engine_conf_init(&conf);
    const kf_hparams_t *hp = kf_model_hparams(model);
    if (!conf.max_batch_seqs)
        conf.max_batch_seqs = 32;
    if (!conf.max_batch_tokens)
        conf.max_batch_tokens = 512;
    if (!conf.kv_budget_bytes)
        conf.kv_budget_bytes = (size_t)256 << 20;
    if (!conf.kv_block_tokens)
        conf.kv_block_tokens = 16;
    if (!conf.prefill_chunk)
        conf.prefill_chunk = 256;
    if (!conf.max_seq_len)
        conf.max_seq_len = hp->n_ctx_train ? hp->n_ctx_train : 4096;
    if (!conf.max_waiting)
        conf.max_waiting = 4096;
    if (conf.max_batch_seqs > 4096 || conf.max_batch_tokens > 65536 || conf.kv_block_tokens > 4096)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "engine: max_batch_seqs (<= 4096), max_batch_tokens (<= 65536) or "
                          "kv_block_tokens (<= 4096) out of range");
    /* Every running sequence must be able to place its decode token in one batch. */
    if (conf.max_batch_seqs > conf.max_batch_tokens)
        conf.max_batch_seqs = conf.max_batch_tokens;

    kf_engine_t *eng = calloc(1, sizeof(*eng));
    if (!eng)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "engine: out of memory");
    eng->model = model;
    eng->n_vocab = hp->n_vocab;
    eng->next_id = 1;
    pthread_mutex_init(&eng->mu, NULL);
    pthread_mutex_init(&eng->step_mu, NULL);
    pthread_cond_init(&eng->cv_work, NULL);
    pthread_cond_init(&eng->cv_done, NULL);

    kf_err_t err = kf_tokenizer_new(kf_model_gguf(model), &eng->tok, errstr, errstr_size);
    if (err)
        goto fail;
    err = detect_chat(eng, conf.chat_template, errstr, errstr_size);
    if (err)
        goto fail;
    kf_kv_conf_t kvc = {
        .budget_bytes = conf.kv_budget_bytes,
        .block_tokens = conf.kv_block_tokens,
        .max_seqs = conf.max_batch_seqs,
        .dtype = conf.kv_f32 ? KF_KV_F32 : KF_KV_F16,
    };
    err = kf_kv_new(model, &kvc, &eng->kv, errstr, errstr_size);
    if (err)
        goto fail;
    kf_backend_conf_t bc = {
        .n_threads = conf.n_threads,
        .device = conf.device,
        .max_batch = conf.max_batch_tokens,
        .requant_q8 = conf.cpu_requant_q8,
    };
    err = start_backend(eng, &conf, &bc, errstr, errstr_size);
    if (err)
        goto fail;
#ifdef KF_HAVE_CUDA
    eng->dev_sample = !strcmp(kf_backend_name(eng->be), "cuda") && !conf.sample_on_host;
#endif
    if (kf_backend_max_batch(eng->be) < conf.max_batch_tokens)
        conf.max_batch_tokens = kf_backend_max_batch(eng->be);
    if (conf.max_batch_seqs > conf.max_batch_tokens)
        conf.max_batch_seqs = conf.max_batch_tokens;

    eng->running = calloc(conf.max_batch_seqs, sizeof(*eng->running));
    eng->btoks = calloc(conf.max_batch_tokens, sizeof(*eng->btoks));
    eng->brows = calloc(conf.max_batch_seqs, sizeof(*eng->brows));
    eng->logits = malloc((size_t)conf.max_batch_seqs * hp->n_vocab * sizeof(float));
    eng->sparams = calloc(conf.max_batch_seqs, sizeof(*eng->sparams));
    eng->stoks = calloc(conf.max_batch_seqs, sizeof(*eng->stoks));
    if (!eng->running || !eng->btoks || !eng->brows || !eng->logits || !eng->sparams ||
        !eng->stoks) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM,
                         "engine: out of memory for batch buffers");
        goto fail;
    }
    conf.backend = NULL; /* borrowed strings are not kept */
    conf.chat_template = NULL;
    eng->conf = conf;
    eng->stats.kv_blocks_total = kf_kv_n_blocks(eng->kv);
    eng->stats.kv_block_tokens = kf_kv_block_tokens(eng->kv);
    eng->stats.kv_blocks_free = kf_kv_n_free_blocks(eng->kv);
    kf_log(KF_LOG_INFO, "engine",
           "engine up: backend %s%s, %d threads, %u seqs x %u tokens per batch, %u KV blocks of "
           "%u tokens, chat template %s",
           kf_backend_name(eng->be), eng->dev_sample ? " (sampling on the device)" : "",
           kf_backend_n_threads(eng->be), conf.max_batch_seqs, conf.max_batch_tokens,
           kf_kv_n_blocks(eng->kv), kf_kv_block_tokens(eng->kv),
           eng->has_chat ? kf_chat_tmpl_name(eng->chat) : "none");
    *out = eng;
    return KF_OK;
fail:
    kf_engine_destroy(eng);
    return err;
}

/* ---- delivery --------------------------------------------------------------------------- */

/* Builds an owned copy of the result of `s`; NULL when out of memory. */
static res_node_t *
result_copy(const kf_result_t *r)
{
    res_node_t *n = calloc(1, sizeof(*n));
    char *text = malloc(r->text_len + 1);
    int32_t *toks = malloc(((size_t)r->n_tokens + 1) * sizeof(int32_t));
    if (!n || !text || !toks) {
        free(n);
        free(text);
        free(toks);
        return NULL;
    }
    n->res = *r;
    memcpy(text, r->text, r->text_len);
    text[r->text_len] = '\0';
    if (r->n_tokens)
        memcpy(toks, r->tokens, (size_t)r->n_tokens * sizeof(int32_t));
    n->res.text = text;
    n->res.tokens = toks;
    return n;
}

static double
ms_between(int64_t a, int64_t b)
{
    return a && b && b > a ? (double)(b - a) / 1e6 : 0.0;
}

static void
emit_text(kf_engine_t *eng, kf_seq_t *s, size_t upto)
{
    if (eng->conf.on_text && upto > s->n_emitted) {
        eng->conf.on_text(s->id, s->user, s->text + s->n_emitted, upto - s->n_emitted,
                          eng->conf.opaque);
    }
    if (upto > s->n_emitted)
        s->n_emitted = upto;
}

/* Ends `s`: frees its KV, flushes streamed text and delivers the result. The caller unlinks
 * and frees the sequence afterwards (state SEQ_DONE). */
static void
finish(kf_engine_t *eng, kf_seq_t *s, kf_finish_t why, kf_err_t err, const char *msg)
{
    if (s->slot >= 0) {
        kf_kv_seq_free(eng->kv, s->slot);
        s->slot = -1;
    }
    s->state = SEQ_DONE;
    s->finish = why;
    s->err = err;
    if (msg)
        snprintf(s->errstr, sizeof(s->errstr), "%s", msg);
    s->t_end = now_ns();
    if (!s->text && !text_append(s, "", 0)) {
        s->finish = KF_FINISH_ERROR;
        s->err = KF_ERR_NOMEM;
    }
    emit_text(eng, s, s->text_len);

    kf_result_t r = {
        .id = s->id,
        .user = s->user,
        .finish = s->finish,
        .err = s->err,
        .text = s->text ? s->text : "",
        .text_len = s->text ? s->text_len : 0,
        .tokens = s->toks + s->n_prompt,
        .n_tokens = s->n_toks - s->n_prompt,
        .n_prompt_tokens = s->n_prompt,
        .n_completion_tokens = s->n_toks - s->n_prompt,
        .queue_ms = ms_between(s->t_submit, s->t_admit ? s->t_admit : s->t_end),
        .prefill_ms = s->t_admit ? ms_between(s->t_admit, s->t_first ? s->t_first : s->t_end) : 0.0,
        .decode_ms = s->t_first ? ms_between(s->t_first, s->t_end) : 0.0,
        .n_preemptions = s->n_preempt,
        .seed = s->smp ? kf_sampler_seed(s->smp) : 0,
    };
    memcpy(r.errstr, s->errstr, sizeof(r.errstr));
    kf_log(KF_LOG_DEBUG, "engine",
           "seq %llu finished: %s, %u prompt + %u generated tokens, %u preemptions",
           (unsigned long long)s->id, kf_finish_name(r.finish), r.n_prompt_tokens,
           r.n_completion_tokens, r.n_preemptions);

    res_node_t *copy = NULL;
    if (s->sync || !eng->conf.on_done)
        copy = result_copy(&r);
    pthread_mutex_lock(&eng->mu);
    /* Unlink from the live list: cancel() can no longer find it. */
    if (s->live_prev)
        s->live_prev->live_next = s->live_next;
    else if (eng->live == s)
        eng->live = s->live_next;
    if (s->live_next)
        s->live_next->live_prev = s->live_prev;
    s->live_prev = s->live_next = NULL;
    if (s->cancel_req && eng->n_cancel_pending)
        eng->n_cancel_pending--;
    s->cancel_req = 0;
    eng->stats.n_finished++;
    if (s->sync) {
        s->sync->res = copy ? &copy->res : NULL;
        s->sync->done = 1;
        pthread_cond_broadcast(&eng->cv_done);
    } else if (!eng->conf.on_done && copy) {
        if (eng->res_tail)
            eng->res_tail->next = copy;
        else
            eng->res_head = copy;
        eng->res_tail = copy;
    }
    pthread_mutex_unlock(&eng->mu);
    if (!s->sync && eng->conf.on_done)
        eng->conf.on_done(&r, eng->conf.opaque);
    else if (!copy)
        kf_log(KF_LOG_ERROR, "engine", "seq %llu: result lost, out of memory",
               (unsigned long long)s->id);
}

/* ---- submit / cancel -------------------------------------------------------------------- */

static kf_err_t
build_prompt(
    kf_engine_t *eng, const kf_request_t *req, kf_seq_t *s, char *errstr, size_t errstr_size)
{
    int forms = (req->prompt_ids != NULL) + (req->prompt != NULL) + (req->messages != NULL);
    if (forms != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "request: give exactly one of prompt_ids, prompt, messages (got %d)",
                          forms);
    int32_t *ids = NULL;
    size_t n = 0;
    kf_err_t err = KF_OK;
    if (req->prompt_ids) {
        n = req->n_prompt_ids;
        ids = malloc((n ? n : 1) * sizeof(*ids));
        if (!ids)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "request: out of memory");
        for (size_t i = 0; i < n; i++) {
            if (req->prompt_ids[i] < 0 || (uint32_t)req->prompt_ids[i] >= eng->n_vocab) {
                free(ids);
                return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                                  "request: prompt_ids[%zu] = %d is outside the vocabulary "
                                  "[0, %u)",
                                  i, (int)req->prompt_ids[i], eng->n_vocab);
            }
            ids[i] = req->prompt_ids[i];
        }
    } else if (req->prompt) {
        err = kf_tokenizer_encode(eng->tok, req->prompt, strlen(req->prompt), 1, 1, &ids, &n);
        if (err)
            return kf_err_set(errstr, errstr_size, err, "request: cannot tokenize prompt: %s",
                              kf_err_str(err));
    } else {
        if (!eng->has_chat)
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "request: the model has no chat template kinfer knows; send a "
                              "raw prompt");
        const char *bos = NULL;
        int32_t bos_id = kf_tokenizer_bos(eng->tok);
        size_t bl = 0;
        if (bos_id >= 0)
            bos = kf_tokenizer_token_text(eng->tok, bos_id, &bl);
        char *text = NULL;
        err = kf_chat_apply(eng->chat, req->messages, req->n_messages, 1, bos, &text, errstr,
                            errstr_size);
        if (err)
            return err;
        /* The template wrote BOS as text where the model wants it: parse it, add nothing. */
        err = kf_tokenizer_encode(eng->tok, text, strlen(text), 0, 1, &ids, &n);
        free(text);
        if (err)
            return kf_err_set(errstr, errstr_size, err, "request: cannot tokenize chat: %s",
                              kf_err_str(err));
    }
    if (n == 0) {
        free(ids);
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "request: empty prompt");
    }
    s->toks = ids;
    s->n_toks = s->cap_toks = (uint32_t)n;
    s->n_prompt = (uint32_t)n;
    return KF_OK;
}

static kf_err_t
submit(kf_engine_t *eng,
       const kf_request_t *req,
       sync_wait_t *sync,
       kf_seq_id_t *out_id,
       char *errstr,
       size_t errstr_size)
{
    if (!eng || !req)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "submit: NULL argument");
    kf_seq_t *s = calloc(1, sizeof(*s));
    if (!s)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "submit: out of memory");
    s->t_submit = now_ns();
    s->slot = -1;
    s->priority = req->priority;
    s->user = req->user;
    s->ignore_eos = req->ignore_eos;
    s->sync = sync;
    kf_err_t err =
        kf_sampler_new(&req->sampling, (int32_t)eng->n_vocab, &s->smp, errstr, errstr_size);
    if (err)
        goto fail;
    /* Decided once: a sequence keeps one sampling rule and one random stream for its life. */
    s->sp = req->sampling;
    s->sp.seed = kf_sampler_seed(s->smp);
    s->on_dev = eng->dev_sample && sampling_fits_device(&s->sp);
    rng_seed(s->rng, s->sp.seed);
    err = build_prompt(eng, req, s, errstr, errstr_size);
    if (err)
        goto fail;
    if (s->n_prompt >= eng->conf.max_seq_len) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                         "request: prompt of %u tokens does not fit max_seq_len %u", s->n_prompt,
                         eng->conf.max_seq_len);
        goto fail;
    }
    if (kf_kv_blocks_for(eng->kv, s->n_prompt + 1) > kf_kv_n_blocks(eng->kv)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                         "request: prompt of %u tokens needs %u KV blocks, the budget holds %u",
                         s->n_prompt, kf_kv_blocks_for(eng->kv, s->n_prompt + 1),
                         kf_kv_n_blocks(eng->kv));
        goto fail;
    }
    uint32_t room = eng->conf.max_seq_len - s->n_prompt;
    s->max_tokens = req->max_tokens && req->max_tokens < room ? req->max_tokens : room;
    if (req->n_stop && !req->stop) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "request: stop is NULL");
        goto fail;
    }
    if (req->n_stop) {
        s->stops = calloc(req->n_stop, sizeof(*s->stops));
        if (!s->stops) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "submit: out of memory");
            goto fail;
        }
        for (size_t i = 0; i < req->n_stop; i++) {
            if (!req->stop[i] || !req->stop[i][0])
                continue; /* an empty stop string would match everywhere: ignore it */
            s->stops[s->n_stops] = strdup(req->stop[i]);
            if (!s->stops[s->n_stops]) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "submit: out of memory");
                goto fail;
            }
            s->n_stops++;
        }
    }
    /* Deltas are clamped to about 34 years so that the conversion to ns cannot overflow. */
    const int64_t max_ms = (int64_t)1 << 40;
    if (req->deadline_ms > 0) {
        int64_t delta = req->deadline_ms - epoch_ms();
        if (delta > max_ms)
            delta = max_ms;
        if (delta < -max_ms)
            delta = -max_ms;
        s->deadline_ns = s->t_submit + delta * 1000000LL;
    }
    if (req->timeout_ms > 0) {
        int64_t d = s->t_submit + (req->timeout_ms < max_ms ? req->timeout_ms : max_ms) * 1000000LL;
        if (!s->deadline_ns || d < s->deadline_ns)
            s->deadline_ns = d;
    }
    if (req->deadline_ms > 0 && s->deadline_ns <= s->t_submit)
        s->deadline_ns = s->t_submit; /* already past: expires at the next step */
    /* The prompt feeds the repetition penalty, as in llama.cpp's server. */
    for (uint32_t i = 0; i < s->n_prompt; i++)
        kf_sampler_accept(s->smp, s->toks[i]);

    pthread_mutex_lock(&eng->mu);
    if (eng->stopping) {
        pthread_mutex_unlock(&eng->mu);
        err = kf_err_set(errstr, errstr_size, KF_ERR_STATE, "submit: engine is stopping");
        goto fail;
    }
    if (eng->n_in + eng->n_wait_snapshot >= eng->conf.max_waiting) {
        pthread_mutex_unlock(&eng->mu);
        err =
            kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                       "submit: %u requests already waiting (max_waiting)", eng->conf.max_waiting);
        goto fail;
    }
    s->id = eng->next_id++;
    if (eng->in_tail)
        eng->in_tail->next = s;
    else
        eng->in_head = s;
    eng->in_tail = s;
    eng->n_in++;
    s->live_next = eng->live;
    if (eng->live)
        eng->live->live_prev = s;
    eng->live = s;
    if (out_id)
        *out_id = s->id;
    pthread_cond_broadcast(&eng->cv_work);
    pthread_mutex_unlock(&eng->mu);
    return KF_OK;
fail:
    seq_free(s);
    return err;
}

kf_err_t
kf_engine_submit(kf_engine_t *eng,
                 const kf_request_t *req,
                 kf_seq_id_t *out_id,
                 char *errstr,
                 size_t errstr_size)
{
    return submit(eng, req, NULL, out_id, errstr, errstr_size);
}

kf_err_t
kf_engine_cancel(kf_engine_t *eng, kf_seq_id_t id)
{
    if (!eng)
        return KF_ERR_INVALID_ARG;
    kf_err_t err = KF_ERR_NOT_FOUND;
    pthread_mutex_lock(&eng->mu);
    for (kf_seq_t *s = eng->live; s; s = s->live_next) {
        if (s->id == id) {
            if (!s->cancel_req) {
                s->cancel_req = 1;
                eng->n_cancel_pending++;
            }
            err = KF_OK;
            break;
        }
    }
    if (err == KF_OK)
        pthread_cond_broadcast(&eng->cv_work);
    pthread_mutex_unlock(&eng->mu);
    return err;
}

/* ---- scheduling --------------------------------------------------------------------------- */

static void
waiting_insert(kf_engine_t *eng, kf_seq_t *s)
{
    kf_seq_t **pp = &eng->waiting;
    while (*pp && rank_before(*pp, s))
        pp = &(*pp)->next;
    s->next = *pp;
    *pp = s;
}

static void
running_insert(kf_engine_t *eng, kf_seq_t *s)
{
    uint32_t i = eng->n_running;
    while (i > 0 && rank_before(s, eng->running[i - 1])) {
        eng->running[i] = eng->running[i - 1];
        i--;
    }
    eng->running[i] = s;
    eng->n_running++;
}

static void
preempt(kf_engine_t *eng, kf_seq_t *s)
{
    kf_kv_seq_free(eng->kv, s->slot);
    s->slot = -1;
    s->n_computed = 0;
    s->state = SEQ_WAITING;
    s->n_preempt++;
    eng->pstats.n_preemptions++;
    waiting_insert(eng, s);
    kf_log(KF_LOG_DEBUG, "engine", "preempted seq %llu (%u tokens to recompute)",
           (unsigned long long)s->id, s->n_toks);
}

/* Makes room in the KV cache for positions [0, n) of `s`, preempting lower ranked sequences
 * that are not in the batch yet. Returns 0 when `s` itself had to give way (preempted, or
 * finished when it alone exceeds the whole cache). */
static int
ensure_blocks(kf_engine_t *eng, kf_seq_t *s, uint32_t n)
{
    while (kf_kv_seq_reserve(eng->kv, s->slot, n) != KF_OK) {
        kf_seq_t *victim = NULL;
        for (uint32_t i = eng->n_running; i-- > 0;) {
            kf_seq_t *v = eng->running[i];
            if (v->state == SEQ_RUNNING && !v->placed) {
                victim = v;
                break;
            }
        }
        if (victim && victim != s) {
            preempt(eng, victim);
            continue;
        }
        /* Nobody left to evict. If other sequences hold blocks they will free them; if `s` is
         * alone the cache is simply too small for it. */
        int others = 0;
        for (uint32_t i = 0; i < eng->n_running; i++)
            if (eng->running[i] != s && eng->running[i]->state == SEQ_RUNNING)
                others = 1;
        if (others)
            preempt(eng, s);
        else
            finish(eng, s, KF_FINISH_LENGTH, KF_OK, "KV budget exhausted by one sequence");
        return 0;
    }
    return 1;
}

/* Picks up submissions and cancellations; expires deadlines. */
static void
sync_inputs(kf_engine_t *eng, int64_t now)
{
    pthread_mutex_lock(&eng->mu);
    kf_seq_t *in = eng->in_head;
    eng->in_head = eng->in_tail = NULL;
    eng->n_in = 0;
    if (eng->n_cancel_pending)
        for (kf_seq_t *s = eng->live; s; s = s->live_next)
            if (s->cancel_req)
                s->cancel_seen = 1;
    pthread_mutex_unlock(&eng->mu);
    while (in) {
        kf_seq_t *next = in->next;
        in->state = SEQ_WAITING;
        waiting_insert(eng, in);
        in = next;
    }

    /* Cancelled or expired sequences end now, waiting or running. */
    for (kf_seq_t **pp = &eng->waiting; *pp;) {
        kf_seq_t *s = *pp;
        if (s->cancel_seen || (s->deadline_ns && now >= s->deadline_ns)) {
            *pp = s->next;
            if (s->cancel_seen)
                finish(eng, s, KF_FINISH_CANCELLED, KF_ERR_CANCELLED, "cancelled");
            else
                finish(eng, s, KF_FINISH_DEADLINE, KF_ERR_TIMEOUT, "deadline passed");
            seq_free(s);
        } else {
            pp = &s->next;
        }
    }
    for (uint32_t i = 0; i < eng->n_running; i++) {
        kf_seq_t *s = eng->running[i];
        if (s->cancel_seen)
            finish(eng, s, KF_FINISH_CANCELLED, KF_ERR_CANCELLED, "cancelled");
        else if (s->deadline_ns && now >= s->deadline_ns)
            finish(eng, s, KF_FINISH_DEADLINE, KF_ERR_TIMEOUT, "deadline passed");
    }
}

/* Drops finished and preempted sequences from the running array (keeping rank order). */
static void
compact_running(kf_engine_t *eng)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < eng->n_running; i++) {
        kf_seq_t *s = eng->running[i];
        if (s->state == SEQ_RUNNING)
            eng->running[j++] = s;
        else if (s->state == SEQ_DONE)
            seq_free(s);
        /* SEQ_WAITING: preempted, now owned by the waiting list. */
    }
    eng->n_running = j;
}

static void
admit(kf_engine_t *eng, int64_t now)
{
    uint32_t total = kf_kv_n_blocks(eng->kv);
    while (eng->waiting && eng->n_running < eng->conf.max_batch_seqs) {
        kf_seq_t *s = eng->waiting;
        uint32_t need = kf_kv_blocks_for(eng->kv, s->n_toks);
        if (need > total) {
            /* Generated so far no longer fits even an empty cache. */
            eng->waiting = s->next;
            finish(eng, s, KF_FINISH_LENGTH, KF_OK, "KV budget exhausted by one sequence");
            seq_free(s);
            continue;
        }
        /* One spare block per running sequence keeps new admissions from immediately forcing
         * preemptions at the next block boundary; FCFS: the head waits, nobody jumps it. */
        uint32_t headroom = eng->n_running < total - need ? eng->n_running : total - need;
        if (kf_kv_n_free_blocks(eng->kv) < need + headroom)
            break;
        int32_t slot;
        if (kf_kv_seq_new(eng->kv, &slot) != KF_OK)
            break;
        if (kf_kv_seq_reserve(eng->kv, slot, s->n_toks) != KF_OK) {
            kf_kv_seq_free(eng->kv, slot);
            break;
        }
        eng->waiting = s->next;
        s->next = NULL;
        s->slot = slot;
        s->state = SEQ_RUNNING;
        s->n_computed = 0;
        if (!s->t_admit)
            s->t_admit = now;
        running_insert(eng, s);
    }
}

/* Appends the sampled token `t` to `s` and applies the stop conditions. */
static void
advance_token(kf_engine_t *eng, kf_seq_t *s, int32_t t, int64_t now)
{
    kf_sampler_accept(s->smp, t);
    if (!toks_push(s, t)) {
        finish(eng, s, KF_FINISH_ERROR, KF_ERR_NOMEM, "out of memory");
        return;
    }
    if (!s->t_first)
        s->t_first = now;
    uint32_t n_gen = s->n_toks - s->n_prompt;
    if (!s->ignore_eos && kf_tokenizer_is_eog(eng->tok, t)) {
        finish(eng, s, KF_FINISH_STOP, KF_OK, NULL);
        return;
    }
    size_t plen = 0;
    const char *piece = kf_tokenizer_token_to_piece(eng->tok, t, 0, &plen);
    size_t old = s->text_len;
    if (!text_append(s, piece ? piece : "", piece ? plen : 0)) {
        finish(eng, s, KF_FINISH_ERROR, KF_ERR_NOMEM, "out of memory");
        return;
    }
    size_t pos;
    if (s->n_stops &&
        kf_stop_find(s->text, s->text_len, old, (const char *const *)s->stops, s->n_stops, &pos)) {
        s->text_len = pos;
        s->text[pos] = '\0';
        finish(eng, s, KF_FINISH_STOP, KF_OK, NULL);
        return;
    }
    if (n_gen >= s->max_tokens || s->n_toks >= eng->conf.max_seq_len) {
        finish(eng, s, KF_FINISH_LENGTH, KF_OK, NULL);
        return;
    }
    if (eng->conf.on_text) {
        size_t hold =
            kf_stop_partial(s->text, s->text_len, (const char *const *)s->stops, s->n_stops);
        size_t tail = kf_utf8_incomplete_tail(s->text, s->text_len);
        if (tail > hold)
            hold = tail;
        emit_text(eng, s, s->text_len - hold);
    }
}

/* Samples the next token of `s` from `row` on the host and applies the stop conditions. */
static void
advance(kf_engine_t *eng, kf_seq_t *s, const float *row, int64_t now)
{
    advance_token(eng, s, kf_sampler_sample(s->smp, row), now);
}

/* One forward pass sampled on the GPU: eng->stoks[r] gets the token of logits row r. */
static kf_err_t
forward_on_device(
    kf_engine_t *eng, const kf_batch_t *batch, uint32_t nrows, char *why, size_t why_size)
{
#ifdef KF_HAVE_CUDA
    fill_sample_params(eng, nrows);
    return kf_cuda_forward_sample(eng->be, batch, eng->sparams, eng->stoks, why, why_size);
#else
    (void)eng;
    (void)batch;
    (void)nrows;
    return kf_err_set(why, why_size, KF_ERR_UNSUPPORTED, "no CUDA in this build");
#endif
}

/* Samples the rows of a step that took the logits path on a device-sampling engine (a
 * sequence with a repetition penalty, say, shares the batch). Host-kind rows and greedy
 * device-kind rows use kf_sampler_sample() (for greedy the two samplers agree: highest logit,
 * lowest id on ties, NaN never); device-kind rows with a temperature are sampled by the GPU
 * sampler over the copied rows with their own draws, as in a device step. */
static void
sample_mixed(kf_engine_t *eng, uint32_t nrows, uint32_t n_vocab, int64_t now)
{
    uint32_t n_temp = fill_sample_params(eng, nrows);
    kf_err_t err = KF_OK;
    char why[256] = "";
#ifdef KF_HAVE_CUDA
    if (n_temp)
        err = kf_cuda_sample_logits(eng->conf.device, eng->logits, nrows, n_vocab, eng->sparams,
                                    eng->stoks, why, sizeof(why));
#else
    err =
        n_temp ? kf_err_set(why, sizeof(why), KF_ERR_UNSUPPORTED, "no CUDA in this build") : KF_OK;
#endif
    if (err)
        kf_log(KF_LOG_ERROR, "engine", "device sampling of %u rows failed: %s", nrows, why);
    else
        eng->pstats.n_device_sampled += n_temp;
    for (uint32_t r = 0; r < nrows; r++) {
        kf_seq_t *s = eng->brows[r];
        if (s->state != SEQ_RUNNING)
            continue;
        if (s->on_dev && s->sp.temperature > 0.0f) {
            /* Falling back to the host sampler would change its random stream: fail it. */
            if (err)
                finish(eng, s, KF_FINISH_ERROR, err, why);
            else
                advance_token(eng, s, eng->stoks[r], now);
        } else {
            advance(eng, s, eng->logits + (size_t)r * n_vocab, now);
        }
    }
}

static kf_err_t
step_locked(kf_engine_t *eng, int *out_busy, char *errstr, size_t errstr_size)
{
    int64_t now = now_ns();
    sync_inputs(eng, now);
    compact_running(eng);
    admit(eng, now);

    uint32_t budget = eng->conf.max_batch_tokens, nb = 0, nrows = 0;
    for (uint32_t i = 0; i < eng->n_running; i++)
        eng->running[i]->placed = 0;
    /* Decode tokens first (latency of running requests), in rank order. */
    for (uint32_t i = 0; i < eng->n_running && budget > 0; i++) {
        kf_seq_t *s = eng->running[i];
        if (s->state != SEQ_RUNNING || s->n_toks - s->n_computed != 1)
            continue;
        if (!ensure_blocks(eng, s, s->n_toks))
            continue;
        eng->btoks[nb++] = (kf_batch_tok_t){
            .token = s->toks[s->n_toks - 1],
            .pos = (int32_t)(s->n_toks - 1),
            .seq = s->slot,
            .logits = 1,
        };
        eng->brows[nrows++] = s;
        s->placed = 1;
        s->chunk = 1;
        budget--;
    }
    /* Then prefill chunks (new prompts and recomputation) with what is left. */
    for (uint32_t i = 0; i < eng->n_running && budget > 0; i++) {
        kf_seq_t *s = eng->running[i];
        uint32_t pending = s->n_toks - s->n_computed;
        if (s->state != SEQ_RUNNING || s->placed || pending < 2)
            continue;
        uint32_t chunk = pending;
        if (chunk > eng->conf.prefill_chunk)
            chunk = eng->conf.prefill_chunk;
        if (chunk > budget)
            chunk = budget;
        if (!ensure_blocks(eng, s, s->n_computed + chunk))
            continue;
        int last = s->n_computed + chunk == s->n_toks;
        for (uint32_t k = 0; k < chunk; k++) {
            uint32_t p = s->n_computed + k;
            eng->btoks[nb++] = (kf_batch_tok_t){
                .token = s->toks[p],
                .pos = (int32_t)p,
                .seq = s->slot,
                .logits = last && k + 1 == chunk,
            };
        }
        if (last)
            eng->brows[nrows++] = s;
        s->placed = 1;
        s->chunk = chunk;
        budget -= chunk;
    }

    kf_err_t err = KF_OK;
    if (nb > 0) {
        kf_batch_t batch = {.toks = eng->btoks, .n_tokens = nb};
        kf_logits_t lo = {.data = eng->logits, .cap_rows = eng->conf.max_batch_seqs};
        char why[256] = "";
        /* Every row of the device kind: the logits stay on the GPU, token ids come back. */
        int on_dev = eng->dev_sample && nrows > 0;
        for (uint32_t r = 0; r < nrows && on_dev; r++)
            on_dev = eng->brows[r]->on_dev;
        if (on_dev)
            err = forward_on_device(eng, &batch, nrows, why, sizeof(why));
        else
            err = kf_backend_forward(eng->be, &batch, &lo, why, sizeof(why));
        now = now_ns();
        if (err) {
            kf_err_set(errstr, errstr_size, err, "forward failed: %s", why);
            kf_log(KF_LOG_ERROR, "engine", "forward of %u tokens failed: %s", nb, why);
            for (uint32_t i = 0; i < eng->n_running; i++) {
                kf_seq_t *s = eng->running[i];
                if (s->state == SEQ_RUNNING && s->placed)
                    finish(eng, s, KF_FINISH_ERROR, err, why);
            }
        } else {
            for (uint32_t i = 0; i < eng->n_running; i++) {
                kf_seq_t *s = eng->running[i];
                if (s->state != SEQ_RUNNING || !s->placed)
                    continue;
                if (s->chunk == 1 && s->n_computed >= s->n_prompt)
                    eng->pstats.n_decode_tokens++;
                else
                    eng->pstats.n_prefill_tokens += s->chunk;
                s->n_computed += s->chunk;
            }
            if (on_dev) {
                eng->pstats.n_device_sampled += nrows;
                for (uint32_t r = 0; r < nrows; r++)
                    if (eng->brows[r]->state == SEQ_RUNNING)
                        advance_token(eng, eng->brows[r], eng->stoks[r], now);
            } else if (eng->dev_sample) {
                sample_mixed(eng, nrows, lo.n_vocab, now);
            } else {
                for (uint32_t r = 0; r < nrows; r++)
                    if (eng->brows[r]->state == SEQ_RUNNING)
                        advance(eng, eng->brows[r], eng->logits + (size_t)r * lo.n_vocab, now);
            }
        }
    }
    compact_running(eng);
    eng->pstats.n_steps++;

    uint32_t n_wait = 0;
    for (kf_seq_t *s = eng->waiting; s; s = s->next)
        n_wait++;
    pthread_mutex_lock(&eng->mu);
    eng->n_wait_snapshot = n_wait;
    eng->stats.n_steps = eng->pstats.n_steps;
    eng->stats.n_preemptions = eng->pstats.n_preemptions;
    eng->stats.n_prefill_tokens = eng->pstats.n_prefill_tokens;
    eng->stats.n_decode_tokens = eng->pstats.n_decode_tokens;
    eng->stats.n_device_sampled = eng->pstats.n_device_sampled;
    eng->stats.n_waiting = n_wait + eng->n_in;
    eng->stats.n_running = eng->n_running;
    eng->stats.kv_blocks_free = kf_kv_n_free_blocks(eng->kv);
    int busy = eng->n_running > 0 || eng->waiting || eng->n_in > 0;
    /* A step run by kf_engine_generate() may have admitted work while kf_engine_run() was
     * deciding to sleep: wake it. */
    if (busy && !eng->busy)
        pthread_cond_broadcast(&eng->cv_work);
    eng->busy = busy;
    pthread_mutex_unlock(&eng->mu);
    if (out_busy)
        *out_busy = busy;
    return err;
}

kf_err_t
kf_engine_step(kf_engine_t *eng, int *out_busy, char *errstr, size_t errstr_size)
{
    if (!eng)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "step: engine is NULL");
    pthread_mutex_lock(&eng->step_mu);
    kf_err_t err = step_locked(eng, out_busy, errstr, errstr_size);
    pthread_mutex_unlock(&eng->step_mu);
    return err;
}

kf_err_t
kf_engine_run(kf_engine_t *eng)
{
    if (!eng)
        return KF_ERR_INVALID_ARG;
    pthread_mutex_lock(&eng->mu);
    eng->loop_active = 1;
    pthread_mutex_unlock(&eng->mu);
    for (;;) {
        char why[256];
        kf_err_t err = kf_engine_step(eng, NULL, why, sizeof(why));
        if (err)
            kf_log(KF_LOG_WARN, "engine", "step failed: %s", why);
        pthread_mutex_lock(&eng->mu);
        /* Sleep only when there is nothing to do; a submit or cancel wakes us. */
        while (!eng->stopping && !eng->busy && eng->n_in == 0 && eng->n_cancel_pending == 0)
            pthread_cond_wait(&eng->cv_work, &eng->mu);
        int stop = eng->stopping;
        pthread_mutex_unlock(&eng->mu);
        if (stop)
            break;
    }
    pthread_mutex_lock(&eng->mu);
    eng->loop_active = 0;
    pthread_cond_broadcast(&eng->cv_done);
    pthread_mutex_unlock(&eng->mu);
    return KF_OK;
}

void
kf_engine_stop(kf_engine_t *eng)
{
    if (!eng)
        return;
    pthread_mutex_lock(&eng->mu);
    eng->stopping = 1;
    pthread_cond_broadcast(&eng->cv_work);
    pthread_mutex_unlock(&eng->mu);
}

kf_err_t
kf_engine_poll(kf_engine_t *eng, kf_result_t **out)
{
    if (!eng || !out)
        return KF_ERR_INVALID_ARG;
    *out = NULL;
    pthread_mutex_lock(&eng->mu);
    res_node_t *n = eng->res_head;
    if (n) {
        eng->res_head = n->next;
        if (!eng->res_head)
            eng->res_tail = NULL;
        n->next = NULL;
    }
    pthread_mutex_unlock(&eng->mu);
    if (!n)
        return KF_ERR_NOT_FOUND;
    *out = &n->res;
    return KF_OK;
}

kf_err_t
kf_engine_generate(
    kf_engine_t *eng, const kf_request_t *req, kf_result_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "generate: out is NULL");
    *out = NULL;
    sync_wait_t w = {0};
    kf_err_t err = submit(eng, req, &w, NULL, errstr, errstr_size);
    if (err)
        return err;
    pthread_mutex_lock(&eng->mu);
    while (!w.done) {
        if (eng->loop_active) {
            pthread_cond_wait(&eng->cv_done, &eng->mu);
            continue;
        }
        /* Nobody drives the engine: do it here (other requests progress too). */
        pthread_mutex_unlock(&eng->mu);
        char why[256];
        kf_err_t serr = kf_engine_step(eng, NULL, why, sizeof(why));
        if (serr)
            kf_log(KF_LOG_WARN, "engine", "step failed: %s", why);
        pthread_mutex_lock(&eng->mu);
    }
    pthread_mutex_unlock(&eng->mu);
    if (!w.res)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "generate: out of memory");
    *out = w.res;
    return KF_OK;
}

void
kf_engine_stats(kf_engine_t *eng, kf_engine_stats_t *out)
{
    pthread_mutex_lock(&eng->mu);
    *out = eng->stats;
    pthread_mutex_unlock(&eng->mu);
}

const char *
kf_engine_chat_template(const kf_engine_t *eng)
{
    return eng->has_chat ? kf_chat_tmpl_name(eng->chat) : NULL;
}

const char *
kf_engine_backend(const kf_engine_t *eng)
{
    return kf_backend_name(eng->be);
}

uint32_t
kf_engine_n_vocab(const kf_engine_t *eng)
{
    return eng->n_vocab;
}

int
kf_engine_n_threads(const kf_engine_t *eng)
{
    return kf_backend_n_threads(eng->be);
}

kf_err_t
kf_engine_tokenize(kf_engine_t *eng,
                   const char *text,
                   int32_t **out_ids,
                   size_t *out_n,
                   char *errstr,
                   size_t errstr_size)
{
    if (!eng || !text || !out_ids || !out_n)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "tokenize: NULL argument");
    kf_err_t err = kf_tokenizer_encode(eng->tok, text, strlen(text), 1, 1, out_ids, out_n);
    if (err)
        return kf_err_set(errstr, errstr_size, err, "tokenize: %s", kf_err_str(err));
    return KF_OK;
}

void
kf_engine_destroy(kf_engine_t *eng)
{
    if (!eng)
        return;
    /* Every request still in flight gets a result, so a worker can answer its client. */
    pthread_mutex_lock(&eng->step_mu);
    pthread_mutex_lock(&eng->mu);
    eng->stopping = 1;
    kf_seq_t *in = eng->in_head;
    eng->in_head = eng->in_tail = NULL;
    eng->n_in = 0;
    pthread_mutex_unlock(&eng->mu);
    while (in) {
        kf_seq_t *next = in->next;
        finish(eng, in, KF_FINISH_CANCELLED, KF_ERR_CANCELLED, "engine shut down");
        seq_free(in);
        in = next;
    }
    while (eng->waiting) {
        kf_seq_t *s = eng->waiting;
        eng->waiting = s->next;
        finish(eng, s, KF_FINISH_CANCELLED, KF_ERR_CANCELLED, "engine shut down");
        seq_free(s);
    }
    for (uint32_t i = 0; i < eng->n_running; i++) {
        kf_seq_t *s = eng->running[i];
        if (s->state == SEQ_RUNNING)
            finish(eng, s, KF_FINISH_CANCELLED, KF_ERR_CANCELLED, "engine shut down");
        if (s->state == SEQ_DONE)
            seq_free(s);
    }
    eng->n_running = 0;
    pthread_mutex_unlock(&eng->step_mu);
    while (eng->res_head) {
        res_node_t *n = eng->res_head;
        eng->res_head = n->next;
        kf_result_destroy(&n->res);
    }
    kf_backend_destroy(eng->be);
    kf_kv_destroy(eng->kv);
    kf_tokenizer_destroy(eng->tok);
    free(eng->running);
    free(eng->btoks);
    free(eng->brows);
    free(eng->logits);
    free(eng->sparams);
    free(eng->stoks);
    pthread_cond_destroy(&eng->cv_work);
    pthread_cond_destroy(&eng->cv_done);
    pthread_mutex_destroy(&eng->mu);
    pthread_mutex_destroy(&eng->step_mu);
    free(eng);
}
