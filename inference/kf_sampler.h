/*
 * kf_sampler: picks the next token of one sequence from one row of logits, and finds stop
 * strings in generated text.
 *
 * Pipeline (the order of llama.cpp's default sampler chain, so that the same knobs mean the
 * same thing):
 *   1. repetition penalty over the last `repeat_last_n` accepted tokens (each distinct token
 *      once): a positive logit is divided by `repeat_penalty`, a negative one multiplied;
 *   2. temperature <= 0: greedy, the highest logit wins (ties: the lowest token id); done;
 *   3. top-k: keep the k highest logits;
 *   4. top-p: keep the smallest prefix (by probability, descending) whose cumulative
 *      probability reaches top_p (at least one token);
 *   5. min-p: keep tokens whose probability is at least min_p times the top probability;
 *   6. temperature: divide the kept logits by it, softmax, draw one token with the
 *      sequence's own PRNG.
 * Ties in the ordering are broken by token id, so a (seed, logits) pair always gives the same
 * token: the output of a sequence does not depend on what else is in the batch.
 *
 * The PRNG is xoshiro256** seeded through splitmix64 from the request's seed; each sampler
 * owns one, so sequences never share random state.
 *
 * Thread-safety: a kf_sampler_t is used by one thread at a time; distinct samplers are
 * independent. The kf_stop_* functions are pure.
 */
#ifndef KF_SAMPLER_H
#define KF_SAMPLER_H

#include "kf_err.h"

#include <stddef.h>
#include <stdint.h>

/* kf_sampling_t.seed value meaning "pick a seed from the clock" (see kf_sampler_seed()). */
#define KF_SAMPLER_SEED_RANDOM UINT64_MAX

typedef struct kf_sampling {
    float temperature;     /* <= 0: greedy. Default 0.8 */
    int32_t top_k;         /* <= 0: off. Default 40 */
    float top_p;           /* (0, 1]; 1: off. Default 0.95 */
    float min_p;           /* [0, 1]; 0: off. Default 0.05 */
    float repeat_penalty;  /* > 0; 1: off. Default 1.0 */
    int32_t repeat_last_n; /* window of accepted tokens; 0: off, -1: all. Default 64 */
    uint64_t seed;         /* KF_SAMPLER_SEED_RANDOM: from the clock. Default random */
} kf_sampling_t;

/* Fills `sp` with the defaults above (llama.cpp's). */
void kf_sampling_defaults(kf_sampling_t *sp);
/* Greedy settings: temperature 0, no penalty. */
void kf_sampling_greedy(kf_sampling_t *sp);
/* KF_ERR_INVALID_ARG naming the field for NaN or out-of-range values. */
kf_err_t kf_sampling_check(const kf_sampling_t *sp, char *errstr, size_t errstr_size);

typedef struct kf_sampler kf_sampler_t;

/* Copies `sp` (validated with kf_sampling_check) for a vocabulary of n_vocab tokens. */
kf_err_t kf_sampler_new(
    const kf_sampling_t *sp, int32_t n_vocab, kf_sampler_t **out, char *errstr, size_t errstr_size);
/* Accepts NULL. */
void kf_sampler_destroy(kf_sampler_t *smp);

/* Appends `token` to the history the repetition penalty looks at. The engine accepts the
 * prompt tokens and then every sampled token (llama.cpp server semantics). */
void kf_sampler_accept(kf_sampler_t *smp, int32_t token);
/* Returns the next token for `logits` (n_vocab floats, not modified). Draws from the PRNG only
 * when temperature > 0. NaN logits are never picked; if every logit is NaN or -inf the result
 * is token 0. */
int32_t kf_sampler_sample(kf_sampler_t *smp, const float *logits);
/* The seed in use (the clock-derived one when KF_SAMPLER_SEED_RANDOM was asked). */
uint64_t kf_sampler_seed(const kf_sampler_t *smp);
/* Tokens accepted so far. */
size_t kf_sampler_n_accepted(const kf_sampler_t *smp);

/*
 * Stop strings. Generated text grows a token at a time; a stop string may span tokens.
 */

/* Searches text[from, len) extended back so that matches ending at or after `from` are seen
 * (pass the length before the last append). Returns 1 and the offset of the earliest match in
 * *out_pos (the text to keep is text[0, *out_pos)), 0 when no stop string occurs. Empty and
 * NULL stop strings are ignored. */
int kf_stop_find(const char *text,
                 size_t len,
                 size_t from,
                 const char *const *stops,
                 size_t n_stops,
                 size_t *out_pos);
/* Length of the longest suffix of text[0, len) that is a proper prefix of some stop string:
 * bytes a streaming caller must hold back because the next token may complete a stop. */
size_t kf_stop_partial(const char *text, size_t len, const char *const *stops, size_t n_stops);
/* Bytes at the end of text[0, len) that form an incomplete UTF-8 sequence (0..3): held back
 * from streaming so that a character split across tokens is written whole. */
size_t kf_utf8_incomplete_tail(const char *text, size_t len);

#endif /* KF_SAMPLER_H */
