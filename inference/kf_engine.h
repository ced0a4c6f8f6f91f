/*
 * kf_engine: the inference engine's public API, a continuous-batching scheduler over one model.
 *
 * Requests (a raw prompt, token ids, or chat messages, plus sampling parameters, stop strings,
 * limits and a deadline) are submitted from any thread and get a kf_seq_id_t. Each
 * kf_engine_step() builds ONE batch for one kf_backend_forward() call:
 *   - it first admits waiting requests (highest priority, then oldest first) while there are
 *     free sequence slots (max_batch_seqs) and free KV blocks for their whole prompt;
 *   - one decode token for every running sequence that is generating, then prefill chunks
 *     (at most prefill_chunk tokens of one sequence) of sequences still reading their prompt,
 *     until max_batch_tokens is reached;
 *   - it samples one token for every sequence whose last pending token was in the batch,
 *     applies stop conditions and delivers finished sequences.
 * KV memory is a paged pool (kf_kv.h) sized from kv_budget_bytes. When a sequence needs a
 * block and none is free, the lowest-ranked sequence (lowest priority, then newest) that is not
 * yet in the batch is PREEMPTED: its blocks are freed and it goes back to the head of the
 * waiting queue; on readmission its prompt and the tokens generated so far are recomputed
 * (re-prefilled), so its output is the same as if it had never been preempted.
 *
 * Device: conf.backend is "cpu", "cuda" or "auto" (the `--device` of every command that runs
 * the engine). "auto" takes the CUDA backend when this build has it and a GPU is present, and
 * otherwise (or when the CUDA backend fails to start) the CPU backend, saying so in a log line;
 * an explicit "cuda" without a usable GPU is an error. kf_engine_backend() tells which won.
 *
 * Sampling on the GPU: with the CUDA backend, a sequence whose sampling has no repetition
 * penalty and is greedy or has 1 <= top_k <= KF_CUDA_SAMPLE_MAX_K (1024) is sampled on the
 * device: its logits never leave the GPU, only its token id comes back (kf_cuda.h). The
 * candidate filtering is the CPU sampler's (kf_sampler.h); the one difference is the random
 * stream: such a sequence draws one uniform number per sampled token (temperature > 0) from
 * its own xoshiro256** PRNG, seeded like the sampler's from the request's seed, whereas the
 * CPU sampler skips the draw when one candidate is left. Same seed and same engine settings
 * therefore still give the same output whatever else is in the batch. Every other sequence
 * (repetition penalty, top_k off or above 1024, conf.sample_on_host) keeps the logits path:
 * rows copied to the host and kf_sampler_sample(). A step that mixes both kinds copies all
 * rows and samples the device kind through kf_cuda_sample_logits() with the same numbers.
 *
 * Results carry the text, token ids, finish reason, token counts and queue / prefill / decode
 * times. They are delivered to conf.on_done (called on the thread that runs kf_engine_step)
 * or, without a callback, queued for kf_engine_poll(). Optional streaming: conf.on_text gets
 * each piece of text as soon as it can no longer become part of a stop string.
 *
 * Thread-safety: kf_engine_submit(), kf_engine_cancel(), kf_engine_poll(), kf_engine_stats()
 * and kf_engine_stop() may be called from any thread at any time. kf_engine_step(),
 * kf_engine_run() and kf_engine_generate() drive the engine and must not run concurrently with
 * each other, except that kf_engine_generate() may be called from other threads while one
 * thread is inside kf_engine_run() (it then just waits for its result). Callbacks run on the
 * driving thread and must not call kf_engine_step/run/generate/destroy.
 */
#ifndef KF_ENGINE_H
#define KF_ENGINE_H

#include "kf_chat.h"
#include "kf_err.h"
#include "kf_model.h"
#include "kf_sampler.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_engine kf_engine_t;
/* Engine-wide request id, > 0, never reused within one engine. */
typedef uint64_t kf_seq_id_t;

typedef enum kf_finish {
    KF_FINISH_NONE = 0,  /* not finished */
    KF_FINISH_STOP,      /* end-of-generation token or a stop string */
    KF_FINISH_LENGTH,    /* max_tokens, or the context / KV budget limit of one sequence */
    KF_FINISH_CANCELLED, /* kf_engine_cancel() or engine shutdown */
    KF_FINISH_DEADLINE,  /* the request's deadline passed */
    KF_FINISH_ERROR,     /* see kf_result_t.err / errstr */
} kf_finish_t;

/* "stop", "length", "cancelled", "deadline", "error" ("none" for KF_FINISH_NONE). */
const char *kf_finish_name(kf_finish_t finish);

typedef struct kf_result {
    kf_seq_id_t id;
    void *user; /* kf_request_t.user */
    kf_finish_t finish;
    kf_err_t err; /* KF_OK unless finish == KF_FINISH_ERROR */
    char errstr[256];
    const char *text; /* generated text, NUL-terminated; stop string and EOG token excluded */
    size_t text_len;
    const int32_t *tokens; /* generated token ids (an EOG token that ended generation included) */
    uint32_t n_tokens;
    uint32_t n_prompt_tokens;
    uint32_t n_completion_tokens; /* == n_tokens */
    double queue_ms;              /* submit -> first admission */
    double prefill_ms;            /* first admission -> first generated token */
    double decode_ms;             /* first generated token -> finish */
    uint32_t n_preemptions;
    uint64_t seed; /* the sampler's seed (the drawn one for random seeds) */
} kf_result_t;

/* Frees a result returned by kf_engine_poll() or kf_engine_generate(). Accepts NULL. */
void kf_result_destroy(kf_result_t *res);

/* Called once per finished request on the driving thread; `res` is borrowed for the call. */
typedef void(kf_engine_done_cb)(const kf_result_t *res, void *opaque);
/* Streaming text of request `id`: `piece` (not NUL-terminated, may be empty only at the end)
 * is final output text. Called on the driving thread. */
typedef void(kf_engine_text_cb)(
    kf_seq_id_t id, void *user, const char *piece, size_t len, void *opaque);

typedef struct kf_engine_conf {
    const char *backend;        /* "cpu" (default), "cuda" or "auto" (see above) */
    int n_threads;              /* backend threads; 0 = online cores */
    int device;                 /* GPU ordinal for "cuda" / "auto" */
    int sample_on_host;         /* 1: CUDA copies logits and samples on the host too */
    uint32_t max_batch_seqs;    /* sequences running at once (KV slots); default 32 */
    uint32_t max_batch_tokens;  /* tokens per forward call; default 512 */
    size_t kv_budget_bytes;     /* KV cache memory; default 256 MiB */
    uint32_t kv_block_tokens;   /* positions per KV block; default 16 */
    int kv_f32;                 /* 1: F32 KV cache (exact), 0: F16 (default) */
    int cpu_requant_q8;         /* 1: CPU backend runs Q4_0/Q4_K/Q6_K matrices as Q8_0x8
                                 * (faster; those weights take 8.5 bits instead of 4.5-6.6) */
    uint32_t prefill_chunk;     /* most prompt tokens of one sequence per step; default 256 */
    uint32_t max_seq_len;       /* prompt + generated tokens; default n_ctx_train, else 4096 */
    uint32_t max_waiting;       /* queued requests before submit says KF_ERR_LIMIT; def. 4096 */
    const char *chat_template;  /* kf_chat_tmpl_name(); NULL = detect from the model */
    kf_engine_done_cb *on_done; /* NULL: results queue for kf_engine_poll() */
    kf_engine_text_cb *on_text; /* optional streaming */
    void *opaque;               /* passed to the callbacks */
} kf_engine_conf_t;

/* Zeroes `conf`: every zero field means its default. */
void kf_engine_conf_init(kf_engine_conf_t *conf);

/* Creates the tokenizer, KV cache and backend for `model` (borrowed: it must outlive the
 * engine). `conf` may be NULL. KF_ERR_INVALID_ARG / KF_ERR_LIMIT for bad knobs (e.g. a budget
 * below one block), KF_ERR_NOT_FOUND for a backend name other than cpu/cuda/auto,
 * KF_ERR_UNSUPPORTED for "cuda" in a build without CUDA or without a usable GPU (the message
 * says which), or the tokenizer's error. */
kf_err_t kf_engine_new(const kf_model_t *model,
                       const kf_engine_conf_t *conf,
                       kf_engine_t **out,
                       char *errstr,
                       size_t errstr_size);
/* Finishes every unfinished request with KF_FINISH_CANCELLED (delivered to on_done when set),
 * then frees everything. Must not run while kf_engine_run() is active (kf_engine_stop() and
 * join first). Accepts NULL. */
void kf_engine_destroy(kf_engine_t *eng);

typedef struct kf_request {
    /* Exactly one prompt form: */
    const int32_t *prompt_ids; /* token ids, used as is (no BOS added) */
    size_t n_prompt_ids;
    const char *prompt;            /* raw text: BOS added when the model wants one */
    const kf_chat_msg_t *messages; /* chat: rendered with the model's chat template */
    size_t n_messages;

    kf_sampling_t sampling;  /* see kf_sampler.h; kf_request_init() sets the defaults */
    const char *const *stop; /* stop strings (copied), may be NULL */
    size_t n_stop;
    uint32_t max_tokens; /* generated tokens; 0 = until max_seq_len */
    int ignore_eos;      /* 1: do not stop on end-of-generation tokens */
    int64_t deadline_ms; /* absolute, Unix epoch milliseconds; 0 = none */
    int64_t timeout_ms;  /* relative to submit; 0 = none (the earlier of both applies) */
    int priority;        /* higher runs first and is preempted last; default 0 */
    void *user;          /* returned in the result */
} kf_request_t;

/* Zeroes `req` and sets the default sampling parameters. */
void kf_request_init(kf_request_t *req);

/* Validates and copies `req` (tokenizing text and rendering chat messages on the calling
 * thread), queues it and returns its id. KF_ERR_INVALID_ARG for a missing or ambiguous prompt,
 * bad sampling values, token ids out of range or an empty prompt; KF_ERR_LIMIT when the prompt
 * does not fit max_seq_len or the whole KV budget, or the waiting queue is full;
 * KF_ERR_UNSUPPORTED for chat messages on a model without a known template; KF_ERR_STATE after
 * kf_engine_stop(). On error nothing is queued and no result will be delivered. */
kf_err_t kf_engine_submit(kf_engine_t *eng,
                          const kf_request_t *req,
                          kf_seq_id_t *out_id,
                          char *errstr,
                          size_t errstr_size);

/* Requests cancellation; the result (KF_FINISH_CANCELLED, with the text so far) is delivered by
 * the next step. KF_ERR_NOT_FOUND when `id` is unknown or already finished. */
kf_err_t kf_engine_cancel(kf_engine_t *eng, kf_seq_id_t id);

/* Runs one scheduling step and at most one forward pass. *out_busy (may be NULL) is set to 1
 * when requests remain (running or waiting), 0 when the engine is idle. A backend failure
 * finishes the sequences of that batch with KF_FINISH_ERROR and is returned; the engine stays
 * usable. */
kf_err_t kf_engine_step(kf_engine_t *eng, int *out_busy, char *errstr, size_t errstr_size);

/* Steps until kf_engine_stop(); sleeps while idle and wakes on submit/cancel. Run it in its own
 * thread. Returns KF_OK after stop. */
kf_err_t kf_engine_run(kf_engine_t *eng);
/* Makes kf_engine_run() return and later submits fail with KF_ERR_STATE. */
void kf_engine_stop(kf_engine_t *eng);

/* Pops one finished result (ownership to the caller: kf_result_destroy()). KF_ERR_NOT_FOUND
 * when none is ready. Only used when conf.on_done is NULL. */
kf_err_t kf_engine_poll(kf_engine_t *eng, kf_result_t **out);

/* Submits `req` and drives the engine (or, while kf_engine_run() is active in another thread,
 * waits) until it finishes. *out is owned by the caller. The result is not delivered to
 * on_done / poll. Streaming via conf.on_text still happens. */
kf_err_t kf_engine_generate(
    kf_engine_t *eng, const kf_request_t *req, kf_result_t **out, char *errstr, size_t errstr_size);

typedef struct kf_engine_stats {
    uint32_t n_waiting;
    uint32_t n_running;
    uint32_t kv_blocks_total;
    uint32_t kv_blocks_free;
    uint32_t kv_block_tokens;
    uint64_t n_steps;
    uint64_t n_preemptions;
    uint64_t n_prefill_tokens; /* tokens fed as prompt (including recomputation) */
    uint64_t n_decode_tokens;  /* tokens fed as decode steps */
    uint64_t n_finished;
    uint64_t n_device_sampled; /* tokens sampled by the GPU sampler (CUDA backend) */
} kf_engine_stats_t;

void kf_engine_stats(kf_engine_t *eng, kf_engine_stats_t *out);

/* The chat template in use, or NULL when the model has none that kf_chat knows. */
const char *kf_engine_chat_template(const kf_engine_t *eng);
/* The backend in use, "cpu" or "cuda" (what "auto" resolved to). */
const char *kf_engine_backend(const kf_engine_t *eng);
/* Vocabulary size. */
uint32_t kf_engine_n_vocab(const kf_engine_t *eng);
/* The backend's worker threads. */
int kf_engine_n_threads(const kf_engine_t *eng);
/* Tokenizes `text` like a raw-prompt request (BOS per the model). *out_ids is malloc()ed. */
kf_err_t kf_engine_tokenize(kf_engine_t *eng,
                            const char *text,
                            int32_t **out_ids,
                            size_t *out_n,
                            char *errstr,
                            size_t errstr_size);

#endif /* KF_ENGINE_H */
