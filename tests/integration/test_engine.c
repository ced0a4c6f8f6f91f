/*
 * Integration tests of kf_engine on a small generated model (random weights, real vocabulary;
 * made by `kinfer model-gen` in a ctest fixture and passed in KF_TEST_MODEL):
 *   - batched greedy decoding (chunked prefill mixed with decode) gives token for token the
 *     output of each prompt run alone;
 *   - a tiny KV budget forces preemption and recomputation without changing any output;
 *   - same seed, same sampled output, whatever else is in the batch;
 *   - cancel and deadline finish with the right reasons; stop strings cut the text across
 *     token boundaries and streaming never leaks them; counts and timings are filled;
 *   - chat requests render through the detected template; bad requests are refused;
 *   - submit/generate from several threads while kf_engine_run() drives the engine;
 *   - the device choice (cpu, cuda, auto, and the errors of a bad or unusable one);
 *   - with a GPU only (cmocka skip() otherwise): sampling on the device gives the tokens of
 *     the logits path, and a device-sampled sequence keeps its output in a batch that forces
 *     the logits path for some steps (a neighbour with a repetition penalty).
 * KF_TEST_BACKEND (cpu, cuda, auto; default cpu) picks the backend of the general tests.
 * Exits 77 (SKIP) when KF_TEST_MODEL is unset or missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "backends/cuda/kf_cuda.h"
#include "kf_chat.h"
#include "kf_engine.h"
#include "kf_model.h"
#include "kf_tokenizer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *model_path;
static const char *test_backend = "cpu";
static kf_model_t *model;
static kf_tokenizer_t *tok;

#define N_PROMPTS 5
static const char *prompts[N_PROMPTS] = {
    "The capital of France is",
    "Once upon a time, in a land far away, there lived a",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Kafka partitions are ordered logs; consumers in a group",
};

static kf_engine_t *
mk_engine(const kf_engine_conf_t *conf_in)
{
    kf_engine_conf_t conf;
    if (conf_in)
        conf = *conf_in;
    else
        kf_engine_conf_init(&conf);
    if (!conf.n_threads)
        conf.n_threads = 2;
    if (!conf.backend)
        conf.backend = test_backend;
    if (!conf.kv_budget_bytes)
        conf.kv_budget_bytes = 16u << 20;
    char err[512] = "";
    kf_engine_t *eng = NULL;
    kf_err_t e = kf_engine_new(model, &conf, &eng, err, sizeof(err));
    if (e)
        fprintf(stderr, "engine_new: %s\n", err);
    assert_int_equal(e, KF_OK);
    return eng;
}

static void
greedy_req(kf_request_t *req, const char *prompt, uint32_t max_tokens)
{
    kf_request_init(req);
    kf_sampling_greedy(&req->sampling);
    req->prompt = prompt;
    req->max_tokens = max_tokens;
    req->ignore_eos = 1;
}

/* Runs `req` alone on a fresh default engine. */
static kf_result_t *
run_alone(const kf_request_t *req)
{
    kf_engine_t *eng = mk_engine(NULL);
    kf_result_t *res = NULL;
    char err[512] = "";
    kf_err_t e = kf_engine_generate(eng, req, &res, err, sizeof(err));
    if (e)
        fprintf(stderr, "generate: %s\n", err);
    assert_int_equal(e, KF_OK);
    kf_engine_destroy(eng);
    return res;
}

/* Steps until idle and collects the polled results by id (ids are 1..n in submit order). */
static void
drain(kf_engine_t *eng, kf_result_t **by_id, size_t n)
{
    char err[512];
    int busy = 1, guard = 0;
    while (busy) {
        assert_int_equal(kf_engine_step(eng, &busy, err, sizeof(err)), KF_OK);
        assert_true(++guard < 100000);
    }
    kf_result_t *r;
    while (kf_engine_poll(eng, &r) == KF_OK) {
        assert_true(r->id >= 1 && r->id <= n);
        assert_null(by_id[r->id - 1]);
        by_id[r->id - 1] = r;
    }
    for (size_t i = 0; i < n; i++)
        assert_non_null(by_id[i]);
}

static void
assert_same_tokens(const kf_result_t *a, const kf_result_t *b)
{
    assert_int_equal(a->n_tokens, b->n_tokens);
    for (uint32_t i = 0; i < a->n_tokens; i++) {
        if (a->tokens[i] != b->tokens[i])
            fprintf(stderr, "token %u differs: %d vs %d\n", i, a->tokens[i], b->tokens[i]);
        assert_int_equal(a->tokens[i], b->tokens[i]);
    }
    assert_int_equal(a->text_len, b->text_len);
    assert_memory_equal(a->text, b->text, a->text_len);
}

static void
test_batched_equals_alone(void **state)
{
    (void)state;
    enum { GEN = 24 };
    kf_result_t *alone[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        kf_request_t req;
        greedy_req(&req, prompts[i], GEN);
        alone[i] = run_alone(&req);
        assert_int_equal(alone[i]->finish, KF_FINISH_LENGTH);
        assert_int_equal(alone[i]->n_tokens, GEN);
        assert_int_equal(alone[i]->n_completion_tokens, GEN);
        /* Counts and timings are filled. */
        assert_true(alone[i]->n_prompt_tokens > 3);
        assert_true(alone[i]->prefill_ms > 0.0);
        assert_true(alone[i]->decode_ms > 0.0);
        assert_true(alone[i]->queue_ms >= 0.0);
        assert_int_equal(alone[i]->n_preemptions, 0);
    }
    /* Not all prompts produce the same text: the comparison below means something. */
    assert_true(alone[0]->text_len != alone[1]->text_len ||
                memcmp(alone[0]->text, alone[1]->text, alone[0]->text_len) != 0);

    /* Small batches and prefill chunks force chunked prefill mixed with decode steps. */
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.max_batch_tokens = 12;
    conf.prefill_chunk = 5;
    conf.max_batch_seqs = 4; /* 5 prompts: one waits for a slot */
    kf_engine_t *eng = mk_engine(&conf);
    for (int i = 0; i < N_PROMPTS; i++) {
        kf_request_t req;
        greedy_req(&req, prompts[i], GEN);
        kf_seq_id_t id = 0;
        char err[512];
        assert_int_equal(kf_engine_submit(eng, &req, &id, err, sizeof(err)), KF_OK);
        assert_int_equal(id, (kf_seq_id_t)i + 1);
    }
    kf_result_t *batched[N_PROMPTS] = {0};
    drain(eng, batched, N_PROMPTS);
    kf_engine_stats_t st;
    kf_engine_stats(eng, &st);
    assert_int_equal(st.n_finished, N_PROMPTS);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);
    assert_int_equal(st.n_decode_tokens, (uint64_t)N_PROMPTS * (GEN - 1));
    for (int i = 0; i < N_PROMPTS; i++) {
        assert_same_tokens(alone[i], batched[i]);
        assert_int_equal(batched[i]->n_prompt_tokens, alone[i]->n_prompt_tokens);
        kf_result_destroy(alone[i]);
        kf_result_destroy(batched[i]);
    }
    kf_engine_destroy(eng);
}

static void
test_preemption_same_output(void **state)
{
    (void)state;
    enum { GEN = 40 };
    const kf_hparams_t *hp = kf_model_hparams(model);
    /* 10 blocks of 8 positions (F16): 4 sequences of ~50 tokens cannot all stay resident. */
    size_t block_bytes = (size_t)2 * hp->n_layer * 8 * hp->n_head_kv * hp->head_dim * 2;
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.kv_block_tokens = 8;
    conf.kv_budget_bytes = 10 * block_bytes;
    conf.max_batch_seqs = 4;
    kf_engine_t *eng = mk_engine(&conf);
    kf_engine_stats_t st;
    kf_engine_stats(eng, &st);
    assert_int_equal(st.kv_blocks_total, 10);

    kf_result_t *alone[4], *pre[4] = {0};
    for (int i = 0; i < 4; i++) {
        kf_request_t req;
        greedy_req(&req, prompts[i], GEN);
        alone[i] = run_alone(&req);
        char err[512];
        assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_OK);
    }
    drain(eng, pre, 4);
    kf_engine_stats(eng, &st);
    assert_true(st.n_preemptions > 0);
    uint32_t sum = 0;
    for (int i = 0; i < 4; i++) {
        sum += pre[i]->n_preemptions;
        assert_int_equal(pre[i]->finish, KF_FINISH_LENGTH);
        assert_same_tokens(alone[i], pre[i]);
        kf_result_destroy(alone[i]);
        kf_result_destroy(pre[i]);
    }
    assert_int_equal(sum, st.n_preemptions);
    assert_int_equal(st.kv_blocks_free, 10);
    /* Recomputation shows up as extra prefill work. */
    assert_true(st.n_prefill_tokens > 0);
    kf_engine_destroy(eng);
}

static void
test_seed_independent_of_batch(void **state)
{
    (void)state;
    kf_request_t req;
    kf_request_init(&req);
    req.prompt = prompts[1];
    req.max_tokens = 20;
    req.ignore_eos = 1;
    req.sampling.temperature = 1.0f;
    req.sampling.top_k = 50;
    req.sampling.top_p = 0.95f;
    req.sampling.min_p = 0.0f;
    req.sampling.seed = 777;
    kf_result_t *a = run_alone(&req);
    assert_int_equal(a->seed, 777);

    /* The same request among others (different seeds and prompts) in one batch. */
    kf_engine_t *eng = mk_engine(NULL);
    char err[512];
    kf_result_t *res[3] = {0};
    kf_request_t other = req;
    other.prompt = prompts[2];
    other.sampling.seed = 1;
    assert_int_equal(kf_engine_submit(eng, &other, NULL, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_OK);
    other.prompt = prompts[1];
    other.sampling.seed = 778;
    assert_int_equal(kf_engine_submit(eng, &other, NULL, err, sizeof(err)), KF_OK);
    drain(eng, res, 3);
    assert_same_tokens(a, res[1]);
    /* Same prompt, another seed: different tokens (20 draws at T=1 over a real vocabulary). */
    int same = res[2]->n_tokens == a->n_tokens &&
               !memcmp(res[2]->tokens, a->tokens, a->n_tokens * sizeof(int32_t));
    assert_false(same);
    for (int i = 0; i < 3; i++)
        kf_result_destroy(res[i]);
    kf_result_destroy(a);
    kf_engine_destroy(eng);
}

static void
test_cancel_and_deadline(void **state)
{
    (void)state;
    kf_engine_t *eng = mk_engine(NULL);
    char err[512];
    kf_request_t req;
    greedy_req(&req, prompts[0], 400);
    kf_seq_id_t running_id, waiting_id, dl_id, past_id, keep_id;
    assert_int_equal(kf_engine_submit(eng, &req, &running_id, err, sizeof(err)), KF_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(kf_engine_step(eng, NULL, err, sizeof(err)), KF_OK);
    /* Cancel before its first step: finishes with no tokens. */
    assert_int_equal(kf_engine_submit(eng, &req, &waiting_id, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_engine_cancel(eng, waiting_id), KF_OK);
    assert_int_equal(kf_engine_cancel(eng, running_id), KF_OK);
    assert_int_equal(kf_engine_cancel(eng, 999999), KF_ERR_NOT_FOUND);
    /* A relative timeout that has passed before the next step, and an absolute deadline in
     * the past; a request with a far deadline is unaffected. */
    kf_request_t dl = req;
    dl.timeout_ms = 1;
    assert_int_equal(kf_engine_submit(eng, &dl, &dl_id, err, sizeof(err)), KF_OK);
    dl.timeout_ms = 0;
    dl.deadline_ms = 1000; /* 1970 */
    assert_int_equal(kf_engine_submit(eng, &dl, &past_id, err, sizeof(err)), KF_OK);
    kf_request_t keep = req;
    keep.max_tokens = 3;
    keep.deadline_ms = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    assert_int_equal(kf_engine_submit(eng, &keep, &keep_id, err, sizeof(err)), KF_OK);
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
    kf_result_t *res[5] = {0};
    drain(eng, res, 5);
    assert_int_equal(res[running_id - 1]->finish, KF_FINISH_CANCELLED);
    assert_int_equal(res[running_id - 1]->err, KF_ERR_CANCELLED);
    assert_true(res[running_id - 1]->n_tokens > 0 && res[running_id - 1]->n_tokens < 400);
    assert_int_equal(res[waiting_id - 1]->finish, KF_FINISH_CANCELLED);
    assert_int_equal(res[waiting_id - 1]->n_tokens, 0);
    assert_int_equal(res[dl_id - 1]->finish, KF_FINISH_DEADLINE);
    assert_int_equal(res[dl_id - 1]->n_tokens, 0);
    assert_int_equal(res[past_id - 1]->finish, KF_FINISH_DEADLINE);
    assert_int_equal(res[keep_id - 1]->finish, KF_FINISH_LENGTH);
    assert_int_equal(res[keep_id - 1]->n_tokens, 3);
    /* Finished ids can no longer be cancelled. */
    assert_int_equal(kf_engine_cancel(eng, running_id), KF_ERR_NOT_FOUND);
    for (int i = 0; i < 5; i++)
        kf_result_destroy(res[i]);
    kf_engine_destroy(eng);
}

typedef struct stream_buf {
    char text[8192];
    size_t len;
    int calls;
} stream_buf_t;

static void
on_text(kf_seq_id_t id, void *user, const char *piece, size_t len, void *opaque)
{
    (void)id;
    (void)opaque;
    stream_buf_t *sb = user;
    assert_true(sb->len + len < sizeof(sb->text));
    memcpy(sb->text + sb->len, piece, len);
    sb->len += len;
    sb->calls++;
}

static void
test_stop_strings(void **state)
{
    (void)state;
    enum { GEN = 32 };
    kf_request_t req;
    greedy_req(&req, prompts[3], GEN);
    kf_result_t *full = run_alone(&req);
    /* Pick a stop string that spans the boundary of two generated tokens with >= 2 bytes of
     * text each, a few tokens in. */
    size_t off = 0, plen_prev = 0;
    char stop[16] = "";
    for (uint32_t i = 0; i < full->n_tokens; i++) {
        size_t pl = 0;
        const char *p = kf_tokenizer_token_to_piece(tok, full->tokens[i], 0, &pl);
        if (i >= 3 && plen_prev >= 2 && pl >= 2 && !stop[0]) {
            memcpy(stop, full->text + off - 2, 2);
            memcpy(stop + 2, p, 2);
            stop[4] = '\0';
        }
        off += pl;
        plen_prev = pl;
    }
    if (!stop[0] || strlen(stop) != 4) {
        fprintf(stderr, "no suitable token boundary in the generated text; skipping\n");
        kf_result_destroy(full);
        skip();
    }
    const char *hit = strstr(full->text, stop);
    assert_non_null(hit);
    size_t want_len = (size_t)(hit - full->text);

    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.on_text = on_text;
    kf_engine_t *eng = mk_engine(&conf);
    stream_buf_t sb = {0};
    const char *stops[] = {"never-appears-xyz", stop};
    req.stop = stops;
    req.n_stop = 2;
    req.user = &sb;
    kf_result_t *res = NULL;
    char err[512];
    assert_int_equal(kf_engine_generate(eng, &req, &res, err, sizeof(err)), KF_OK);
    assert_int_equal(res->finish, KF_FINISH_STOP);
    assert_int_equal(res->text_len, want_len);
    assert_memory_equal(res->text, full->text, want_len);
    assert_int_equal(strlen(res->text), want_len);
    assert_true(res->n_tokens < full->n_tokens);
    /* Streaming delivered exactly the final text, never the stop string. */
    assert_int_equal(sb.len, want_len);
    assert_memory_equal(sb.text, res->text, want_len);
    kf_result_destroy(res);

    /* Without a stop string, streaming reproduces the whole text. */
    memset(&sb, 0, sizeof(sb));
    req.stop = NULL;
    req.n_stop = 0;
    assert_int_equal(kf_engine_generate(eng, &req, &res, err, sizeof(err)), KF_OK);
    assert_int_equal(sb.len, full->text_len);
    assert_memory_equal(sb.text, full->text, full->text_len);
    assert_true(sb.calls > 1);
    kf_result_destroy(res);
    kf_result_destroy(full);
    kf_engine_destroy(eng);
}

static void
test_chat_and_bad_requests(void **state)
{
    (void)state;
    kf_engine_t *eng = mk_engine(NULL);
    const char *tname = kf_engine_chat_template(eng);
    assert_non_null(tname);
    kf_chat_tmpl_t t;
    assert_int_equal(kf_chat_tmpl_from_name(tname, &t), KF_OK);
    kf_chat_msg_t msgs[] = {{"system", "Be brief."}, {"user", "Hi there"}};
    char *text = NULL;
    char err[512];
    int32_t bos = kf_tokenizer_bos(tok);
    const char *bos_text = bos >= 0 ? kf_tokenizer_token_text(tok, bos, NULL) : NULL;
    assert_int_equal(kf_chat_apply(t, msgs, 2, 1, bos_text, &text, err, sizeof(err)), KF_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(kf_tokenizer_encode(tok, text, strlen(text), 0, 1, &ids, &n), KF_OK);
    kf_request_t req;
    greedy_req(&req, NULL, 4);
    req.messages = msgs;
    req.n_messages = 2;
    kf_result_t *res = NULL;
    assert_int_equal(kf_engine_generate(eng, &req, &res, err, sizeof(err)), KF_OK);
    assert_int_equal(res->n_prompt_tokens, n);
    kf_result_destroy(res);
    /* The same ids as a token prompt give the same output as the chat request. */
    kf_result_t *res2 = NULL;
    greedy_req(&req, NULL, 4);
    req.prompt_ids = ids;
    req.n_prompt_ids = n;
    assert_int_equal(kf_engine_generate(eng, &req, &res2, err, sizeof(err)), KF_OK);
    req.prompt_ids = NULL;
    req.messages = msgs;
    req.n_messages = 2;
    assert_int_equal(kf_engine_generate(eng, &req, &res, err, sizeof(err)), KF_OK);
    assert_same_tokens(res, res2);
    kf_result_destroy(res);
    kf_result_destroy(res2);
    free(text);

    /* Refusals: no prompt, two prompts, bad ids, bad sampling, prompt above max_seq_len. */
    kf_seq_id_t id;
    kf_request_t bad;
    kf_request_init(&bad);
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    bad.prompt = "x";
    bad.prompt_ids = ids;
    bad.n_prompt_ids = n;
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "exactly one"));
    int32_t badids[2] = {1, (int32_t)kf_engine_n_vocab(eng)};
    bad.prompt = NULL;
    bad.prompt_ids = badids;
    bad.n_prompt_ids = 2;
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "prompt_ids[1]"));
    bad.n_prompt_ids = 0;
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    bad.n_prompt_ids = 1;
    bad.sampling.top_p = 2.0f;
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    bad.sampling.top_p = 1.0f;
    kf_chat_msg_t tool[] = {{"tool", "{}"}};
    bad.prompt_ids = NULL;
    bad.messages = tool;
    bad.n_messages = 1;
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_INVALID_ARG);
    free(ids);
    kf_engine_destroy(eng);

    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.max_seq_len = 4;
    eng = mk_engine(&conf);
    kf_request_init(&bad);
    bad.prompt = prompts[4];
    assert_int_equal(kf_engine_submit(eng, &bad, &id, err, sizeof(err)), KF_ERR_LIMIT);
    kf_engine_destroy(eng);
}

typedef struct thr_arg {
    kf_engine_t *eng;
    int idx;
    kf_result_t *res;
    kf_err_t err;
} thr_arg_t;

static void *
thr_generate(void *p)
{
    thr_arg_t *a = p;
    kf_request_t req;
    greedy_req(&req, prompts[a->idx], 16);
    char err[512];
    a->err = kf_engine_generate(a->eng, &req, &a->res, err, sizeof(err));
    return NULL;
}

static void *
thr_run(void *p)
{
    kf_engine_run(p);
    return NULL;
}

static void
test_threads_run_loop(void **state)
{
    (void)state;
    kf_result_t *alone[3];
    for (int i = 0; i < 3; i++) {
        kf_request_t req;
        greedy_req(&req, prompts[i], 16);
        alone[i] = run_alone(&req);
    }
    kf_engine_t *eng = mk_engine(NULL);
    pthread_t runner, th[3];
    thr_arg_t args[3];
    assert_int_equal(pthread_create(&runner, NULL, thr_run, eng), 0);
    for (int i = 0; i < 3; i++) {
        args[i] = (thr_arg_t){.eng = eng, .idx = i};
        assert_int_equal(pthread_create(&th[i], NULL, thr_generate, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    kf_engine_stop(eng);
    pthread_join(runner, NULL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(args[i].err, KF_OK);
        assert_same_tokens(alone[i], args[i].res);
        kf_result_destroy(args[i].res);
        kf_result_destroy(alone[i]);
    }
    /* After stop, submits are refused. */
    kf_request_t req;
    greedy_req(&req, prompts[0], 2);
    char err[512];
    assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_ERR_STATE);
    kf_engine_destroy(eng);
}

typedef struct done_log {
    int n;
    kf_finish_t finish[8];
} done_log_t;

static void
on_done(const kf_result_t *res, void *opaque)
{
    done_log_t *dl = opaque;
    if (dl->n < 8)
        dl->finish[dl->n] = res->finish;
    dl->n++;
}

static void
test_destroy_cancels_pending(void **state)
{
    (void)state;
    done_log_t dl = {0};
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.on_done = on_done;
    conf.opaque = &dl;
    kf_engine_t *eng = mk_engine(&conf);
    kf_request_t req;
    greedy_req(&req, prompts[0], 100);
    char err[512];
    assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_engine_step(eng, NULL, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_OK);
    kf_result_t *r;
    assert_int_equal(kf_engine_poll(eng, &r), KF_ERR_NOT_FOUND); /* callback mode */
    kf_engine_destroy(eng);
    assert_int_equal(dl.n, 2);
    assert_int_equal(dl.finish[0], KF_FINISH_CANCELLED);
    assert_int_equal(dl.finish[1], KF_FINISH_CANCELLED);
}

/* GPUs this process can use (0 in a build without CUDA). */
static int
n_gpus(void)
{
#ifdef KF_HAVE_CUDA
    return kf_cuda_device_count();
#else
    return 0;
#endif
}

static void
test_device_choice(void **state)
{
    (void)state;
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.n_threads = 2;
    conf.kv_budget_bytes = 4u << 20;
    char err[512] = "";
    kf_engine_t *eng = NULL;

    /* auto: the GPU when there is one, else the CPU. */
    conf.backend = "auto";
    assert_int_equal(kf_engine_new(model, &conf, &eng, err, sizeof(err)), KF_OK);
    assert_string_equal(kf_engine_backend(eng), n_gpus() > 0 ? "cuda" : "cpu");
    kf_engine_destroy(eng);
    eng = NULL;

    /* No backend named: the CPU, as before the choice existed. */
    conf.backend = NULL;
    assert_int_equal(kf_engine_new(model, &conf, &eng, err, sizeof(err)), KF_OK);
    assert_string_equal(kf_engine_backend(eng), "cpu");
    /* The CPU never samples on a device. */
    kf_request_t req;
    kf_request_init(&req);
    req.prompt = prompts[0];
    req.max_tokens = 6;
    req.ignore_eos = 1;
    req.sampling.seed = 5;
    kf_result_t *res = NULL;
    assert_int_equal(kf_engine_generate(eng, &req, &res, err, sizeof(err)), KF_OK);
    assert_int_equal(res->n_tokens, 6);
    kf_engine_stats_t st;
    kf_engine_stats(eng, &st);
    assert_int_equal(st.n_device_sampled, 0);
    kf_result_destroy(res);
    kf_engine_destroy(eng);
    eng = NULL;

    /* An unknown name is refused and named. */
    conf.backend = "tpu";
    assert_int_equal(kf_engine_new(model, &conf, &eng, err, sizeof(err)), KF_ERR_NOT_FOUND);
    assert_null(eng);
    assert_non_null(strstr(err, "'tpu'"));

    /* An explicit cuda never turns into cpu: without a GPU it is an error saying why. */
    conf.backend = "cuda";
    kf_err_t e = kf_engine_new(model, &conf, &eng, err, sizeof(err));
    if (n_gpus() > 0) {
        assert_int_equal(e, KF_OK);
        assert_string_equal(kf_engine_backend(eng), "cuda");
        kf_engine_destroy(eng);
        eng = NULL;
        /* A GPU ordinal that does not exist. */
        conf.device = n_gpus();
        assert_int_equal(kf_engine_new(model, &conf, &eng, err, sizeof(err)), KF_ERR_UNSUPPORTED);
        assert_non_null(strstr(err, "present"));
    } else {
        assert_int_equal(e, KF_ERR_UNSUPPORTED);
        assert_null(eng);
        assert_true(strstr(err, "no CUDA device") || strstr(err, "no CUDA backend"));
    }
}

/* A sampled request with the CPU sampler's full pipeline on (top-k, top-p, min-p). */
static void
sampled_req(kf_request_t *req, const char *prompt, uint32_t max_tokens, uint64_t seed)
{
    kf_request_init(req);
    req->prompt = prompt;
    req->max_tokens = max_tokens;
    req->ignore_eos = 1;
    req->sampling.temperature = 0.9f;
    req->sampling.top_k = 40;
    req->sampling.top_p = 0.9f;
    req->sampling.min_p = 0.02f;
    req->sampling.seed = seed;
}

/* Runs `req` alone on a fresh cuda engine; *out_dev gets the tokens sampled on the device. */
static kf_result_t *
run_cuda(const kf_request_t *req, int sample_on_host, uint64_t *out_dev)
{
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.backend = "cuda";
    conf.sample_on_host = sample_on_host;
    kf_engine_t *eng = mk_engine(&conf);
    kf_result_t *res = NULL;
    char err[512] = "";
    kf_err_t e = kf_engine_generate(eng, req, &res, err, sizeof(err));
    if (e)
        fprintf(stderr, "generate: %s\n", err);
    assert_int_equal(e, KF_OK);
    assert_int_equal(res->finish, KF_FINISH_LENGTH);
    kf_engine_stats_t st;
    kf_engine_stats(eng, &st);
    *out_dev = st.n_device_sampled;
    kf_engine_destroy(eng);
    return res;
}

static void
test_device_sampling(void **state)
{
    (void)state;
    if (n_gpus() == 0)
        skip(); /* needs a GPU */
    kf_request_t req;
    uint64_t n_dev = 0, n_host = 0;

    /* Greedy and sampled: the device sampler picks what the host sampler picks from the same
     * logits. The device kind draws the top 24 bits of the number the CPU sampler would draw;
     * with top-p and min-p off, 40 candidates remain at every step, so the CPU sampler draws
     * at every step too and both streams stay aligned. */
    for (int k = 0; k < 2; k++) {
        if (k == 0) {
            greedy_req(&req, prompts[3], 24);
        } else {
            sampled_req(&req, prompts[1], 24, 4242);
            req.sampling.top_p = 1.0f;
            req.sampling.min_p = 0.0f;
        }
        kf_result_t *dev = run_cuda(&req, 0, &n_dev);
        kf_result_t *host = run_cuda(&req, 1, &n_host);
        assert_int_equal(n_dev, 24);
        assert_int_equal(n_host, 0);
        assert_same_tokens(dev, host);
        kf_result_destroy(dev);
        kf_result_destroy(host);
    }

    /* Mixed batch: a penalised neighbour sends the first steps down the logits path; the
     * sampled sequence must still give its output alone (same seed, same draws). */
    sampled_req(&req, prompts[1], 24, 4242);
    kf_result_t *alone = run_cuda(&req, 0, &n_dev);
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.backend = "cuda";
    kf_engine_t *eng = mk_engine(&conf);
    char err[512] = "";
    kf_request_t pen;
    sampled_req(&pen, prompts[4], 8, 9);
    pen.sampling.repeat_penalty = 1.3f;
    assert_int_equal(kf_engine_submit(eng, &pen, NULL, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_engine_submit(eng, &req, NULL, err, sizeof(err)), KF_OK);
    kf_result_t *res[2] = {0};
    drain(eng, res, 2);
    assert_int_equal(res[0]->n_tokens, 8);
    assert_same_tokens(alone, res[1]);
    kf_engine_stats_t st;
    kf_engine_stats(eng, &st);
    /* Every token of the sampled sequence went through the GPU sampler, the neighbour's not. */
    assert_int_equal(st.n_device_sampled, 24);
    kf_result_destroy(res[0]);
    kf_result_destroy(res[1]);
    kf_result_destroy(alone);
    kf_engine_destroy(eng);
}

int
main(void)
{
    model_path = getenv("KF_TEST_MODEL");
    if (getenv("KF_TEST_BACKEND") && getenv("KF_TEST_BACKEND")[0])
        test_backend = getenv("KF_TEST_BACKEND");
    if (!model_path || access(model_path, R_OK) != 0) {
        fprintf(stderr,
                "SKIP: KF_TEST_MODEL is unset or unreadable (%s); the model-gen fixture "
                "needs the vocab files under KF_TESTDATA_DIR\n",
                model_path ? model_path : "unset");
        return 77;
    }
    char err[512];
    if (kf_model_load(model_path, &model, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "cannot load %s: %s\n", model_path, err);
        return 1;
    }
    if (kf_tokenizer_new(kf_model_gguf(model), &tok, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "cannot build tokenizer: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_alone),
        cmocka_unit_test(test_preemption_same_output),
        cmocka_unit_test(test_seed_independent_of_batch),
        cmocka_unit_test(test_cancel_and_deadline),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_chat_and_bad_requests),
        cmocka_unit_test(test_threads_run_loop),
        cmocka_unit_test(test_destroy_cancels_pending),
        cmocka_unit_test(test_device_choice),
        cmocka_unit_test(test_device_sampling),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    kf_tokenizer_destroy(tok);
    kf_model_destroy(model);
    return rc;
}
