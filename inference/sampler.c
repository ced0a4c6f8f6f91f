/*
 * Token sampling (kf_sampler.h): repetition penalty, greedy, top-k, top-p, min-p, temperature
 * and a per-sequence xoshiro256** PRNG; plus the stop-string helpers used while streaming.
 *
 * Performance notes: greedy decoding is one pass over the row (plus a copy when a penalty is
 * active). Sampling builds a candidate list; with top-k on, a bounded min-heap keeps the k best
 * in O(n log k) before sorting them, otherwise the whole vocabulary is sorted.
 */
#include "kf_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct kf_cand {
    float logit;
    int32_t id;
} kf_cand_t;

struct kf_sampler {
    kf_sampling_t sp;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    int32_t *hist;   /* accepted tokens, oldest first */
    size_t n_hist;
    size_t cap_hist;
    float *work;      /* penalized copy of the row (n_vocab) */
    uint8_t *seen;    /* one bit per token: penalty already applied this call */
    kf_cand_t *cands; /* candidate list (n_vocab) */
};

void
kf_sampling_defaults(kf_sampling_t *sp)
{
    sp->temperature = 0.8f;
    sp->top_k = 40;
    sp->top_p = 0.95f;
    sp->min_p = 0.05f;
    sp->repeat_penalty = 1.0f;
    sp->repeat_last_n = 64;
    sp->seed = KF_SAMPLER_SEED_RANDOM;
}

void
kf_sampling_greedy(kf_sampling_t *sp)
{
    kf_sampling_defaults(sp);
    sp->temperature = 0.0f;
    sp->seed = 0;
}

kf_err_t
kf_sampling_check(const kf_sampling_t *sp, char *errstr, size_t errstr_size)
{
    if (!sp)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "sampling params are NULL");
    /* Written as !(x op y) so that NaN fails every range check. */
    if (!(sp->temperature >= 0.0f && sp->temperature <= 100.0f))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "temperature must be in [0, 100], got %g", (double)sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "top_p must be in (0, 1], got %g", (double)sp->top_p);
    if (!(sp->min_p >= 0.0f && sp->min_p <= 1.0f))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "min_p must be in [0, 1], got %g", (double)sp->min_p);
    if (!(sp->repeat_penalty > 0.0f && sp->repeat_penalty <= 100.0f))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "repeat_penalty must be in (0, 100], got %g", (double)sp->repeat_penalty);
    if (sp->repeat_last_n < -1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "repeat_last_n must be >= -1, got %d", (int)sp->repeat_last_n);
    if (sp->top_k < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "top_k must be >= 0, got %d",
                          (int)sp->top_k);
    return KF_OK;
}

/* splitmix64: spreads a (possibly small, sequential) seed over the 256-bit state. */
static uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double
rng_uniform(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

kf_err_t
kf_sampler_new(
    const kf_sampling_t *sp, int32_t n_vocab, kf_sampler_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    kf_err_t err = kf_sampling_check(sp, errstr, errstr_size);
    if (err)
        return err;
    if (n_vocab <= 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "n_vocab must be > 0, got %d",
                          (int)n_vocab);
    kf_sampler_t *smp = calloc(1, sizeof(*smp));
    if (!smp)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "sampler: out of memory");
    smp->sp = *sp;
    smp->n_vocab = n_vocab;
    if (smp->sp.seed == KF_SAMPLER_SEED_RANDOM) {
        /* Clock plus the object's address: two requests in the same nanosecond still differ. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        smp->sp.seed =
            ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)smp;
        if (smp->sp.seed == KF_SAMPLER_SEED_RANDOM)
            smp->sp.seed = 0;
    }
    uint64_t x = smp->sp.seed;
    for (int i = 0; i < 4; i++)
        smp->rng[i] = splitmix64(&x);
    *out = smp;
    return KF_OK;
}

void
kf_sampler_destroy(kf_sampler_t *smp)
{
    if (!smp)
        return;
    free(smp->hist);
    free(smp->work);
    free(smp->seen);
    free(smp->cands);
    free(smp);
}

void
kf_sampler_accept(kf_sampler_t *smp, int32_t token)
{
    if (smp->n_hist == smp->cap_hist) {
        size_t cap = smp->cap_hist ? smp->cap_hist * 2 : 256;
        int32_t *h = realloc(smp->hist, cap * sizeof(*h));
        if (!h) {
            /* Losing history only weakens the penalty; drop the oldest half rather than fail. */
            size_t keep = smp->n_hist / 2;
            memmove(smp->hist, smp->hist + smp->n_hist - keep, keep * sizeof(*h));
            smp->n_hist = keep;
        } else {
            smp->hist = h;
            smp->cap_hist = cap;
        }
    }
    smp->hist[smp->n_hist++] = token;
}

uint64_t
kf_sampler_seed(const kf_sampler_t *smp)
{
    return smp->sp.seed;
}

size_t
kf_sampler_n_accepted(const kf_sampler_t *smp)
{
    return smp->n_hist;
}

/* Lazily allocates the scratch buffers; returns 0 on allocation failure. */
static int
ensure_scratch(kf_sampler_t *smp)
{
    size_t n = (size_t)smp->n_vocab;
    if (!smp->work)
        smp->work = malloc(n * sizeof(float));
    if (!smp->seen)
        smp->seen = calloc((n + 7) / 8, 1);
    if (!smp->cands)
        smp->cands = malloc(n * sizeof(kf_cand_t));
    return smp->work && smp->seen && smp->cands;
}

/* Applies the repetition penalty into smp->work; returns the row to read from. */
static const float *
apply_penalty(kf_sampler_t *smp, const float *logits)
{
    const kf_sampling_t *sp = &smp->sp;
    if (sp->repeat_penalty == 1.0f || sp->repeat_last_n == 0 || smp->n_hist == 0)
        return logits;
    memcpy(smp->work, logits, (size_t)smp->n_vocab * sizeof(float));
    size_t n = smp->n_hist;
    if (sp->repeat_last_n > 0 && (size_t)sp->repeat_last_n < n)
        n = (size_t)sp->repeat_last_n;
    const int32_t *h = smp->hist + smp->n_hist - n;
    /* Each distinct token is penalized once however often it repeats (llama.cpp semantics). */
    for (size_t i = 0; i < n; i++) {
        int32_t t = h[i];
        if (t < 0 || t >= smp->n_vocab || (smp->seen[t >> 3] & (1u << (t & 7))))
            continue;
        smp->seen[t >> 3] |= (uint8_t)(1u << (t & 7));
        float v = smp->work[t];
        smp->work[t] = v > 0.0f ? v / sp->repeat_penalty : v * sp->repeat_penalty;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t t = h[i];
        if (t >= 0 && t < smp->n_vocab)
            smp->seen[t >> 3] &= (uint8_t) ~(1u << (t & 7));
    }
    return smp->work;
}

/* a ranks before b: higher logit, then lower id. */
static int
cand_before(const kf_cand_t *a, const kf_cand_t *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int
cand_cmp(const void *pa, const void *pb)
{
    const kf_cand_t *a = pa, *b = pb;
    if (cand_before(a, b))
        return -1;
    if (cand_before(b, a))
        return 1;
    return 0;
}

/* Min-heap on rank (root = worst kept candidate). */
static void
heap_sift_down(kf_cand_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_before(&h[m], &h[l]))
            m = l;
        if (r < n && cand_before(&h[m], &h[r]))
            m = r;
        if (m == i)
            return;
        kf_cand_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void
heap_sift_up(kf_cand_t *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&h[p], &h[i]))
            return;
        kf_cand_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* Fills smp->cands with the candidates sorted best first; returns their count. NaN and -inf
 * logits are never candidates. */
static size_t
build_sorted(kf_sampler_t *smp, const float *row)
{
    kf_cand_t *c = smp->cands;
    size_t k = smp->sp.top_k > 0 && smp->sp.top_k < smp->n_vocab ? (size_t)smp->sp.top_k : 0;
    size_t n = 0;
    for (int32_t i = 0; i < smp->n_vocab; i++) {
        float v = row[i];
        if (isnan(v) || v == -INFINITY)
            continue;
        kf_cand_t cand = {v, i};
        if (!k) {
            c[n++] = cand;
        } else if (n < k) {
            c[n] = cand;
            heap_sift_up(c, n++);
        } else if (cand_before(&cand, &c[0])) {
            c[0] = cand;
            heap_sift_down(c, n, 0);
        }
    }
    qsort(c, n, sizeof(*c), cand_cmp);
    return n;
}

static int32_t
argmax(const float *row, int32_t n)
{
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(row[i]))
            continue;
        if (best < 0 || row[i] > row[best])
            best = i;
    }
    return best < 0 ? 0 : best;
}

int32_t
kf_sampler_sample(kf_sampler_t *smp, const float *logits)
{
    const kf_sampling_t *sp = &smp->sp;
    if (!ensure_scratch(smp))
        return argmax(logits, smp->n_vocab); /* out of memory: degrade to greedy, unpenalized */
    const float *row = apply_penalty(smp, logits);
    if (sp->temperature <= 0.0f)
        return argmax(row, smp->n_vocab);

    size_t n = build_sorted(smp, row);
    kf_cand_t *c = smp->cands;
    if (n == 0)
        return 0;
    if (c[0].logit == INFINITY)
        return c[0].id; /* +inf dominates any distribution */

    /* top-p on the untempered distribution of the remaining candidates. */
    if (sp->top_p < 1.0f && n > 1) {
        double z = 0.0;
        for (size_t i = 0; i < n; i++)
            z += exp((double)c[i].logit - (double)c[0].logit);
        double cum = 0.0;
        for (size_t i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - (double)c[0].logit) / z;
            if (cum >= (double)sp->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    /* min-p: p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p). */
    if (sp->min_p > 0.0f && n > 1) {
        double floor_logit = (double)c[0].logit + log((double)sp->min_p);
        size_t keep = 1;
        while (keep < n && (double)c[keep].logit >= floor_logit)
            keep++;
        n = keep;
    }
    if (n == 1)
        return c[0].id;

    /* Temperature, softmax, one draw. Sum in sorted order so the result is reproducible. */
    double inv_t = 1.0 / (double)sp->temperature;
    double z = 0.0;
    for (size_t i = 0; i < n; i++)
        z += exp(((double)c[i].logit - (double)c[0].logit) * inv_t);
    double r = rng_uniform(smp->rng) * z;
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - (double)c[0].logit) * inv_t);
        if (r < cum)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left r at the very top */
}

int
kf_stop_find(const char *text,
             size_t len,
             size_t from,
             const char *const *stops,
             size_t n_stops,
             size_t *out_pos)
{
    int found = 0;
    size_t best = 0;
    for (size_t s = 0; s < n_stops; s++) {
        if (!stops[s] || !stops[s][0])
            continue;
        size_t sl = strlen(stops[s]);
        if (sl > len)
            continue;
        /* A new match must end after `from`, so it starts at or after from - sl + 1. */
        size_t start = from >= sl ? from - sl + 1 : 0;
        for (size_t p = start; p + sl <= len; p++) {
            if (found && p >= best)
                break;
            if (!memcmp(text + p, stops[s], sl)) {
                found = 1;
                best = p;
                break;
            }
        }
    }
    if (found && out_pos)
        *out_pos = best;
    return found;
}

size_t
kf_stop_partial(const char *text, size_t len, const char *const *stops, size_t n_stops)
{
    size_t hold = 0;
    for (size_t s = 0; s < n_stops; s++) {
        if (!stops[s] || !stops[s][0])
            continue;
        size_t sl = strlen(stops[s]);
        /* Longest proper prefix of the stop string that ends the text. */
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > hold; k--) {
            if (!memcmp(text + len - k, stops[s], k)) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

size_t
kf_utf8_incomplete_tail(const char *text, size_t len)
{
    /* Walk back over at most 3 continuation bytes to the lead byte. */
    size_t i = 0;
    while (i < 3 && i < len && ((unsigned char)text[len - 1 - i] & 0xC0) == 0x80)
        i++;
    if (i == len)
        return 0; /* only continuation bytes: malformed, nothing to wait for */
    unsigned char lead = (unsigned char)text[len - 1 - i];
    size_t need;
    if (lead < 0x80)
        need = 1;
    else if ((lead & 0xE0) == 0xC0)
        need = 2;
    else if ((lead & 0xF0) == 0xE0)
        need = 3;
    else if ((lead & 0xF8) == 0xF0)
        need = 4;
    else
        return 0; /* invalid lead byte: waiting will not fix it */
    return i + 1 < need ? i + 1 : 0;
}
