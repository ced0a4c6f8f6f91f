/*
 * tokenizer.c: the kf_tokenizer object: building the vocabulary tables, splitting text on
 * special tokens, encode / decode and the getters.
 *
 * Building copies every token text into one arena and indexes it with an open-addressing
 * hash table (text -> id); BPE merges go into a second table keyed by the two token ids.
 * Each token's output bytes ("piece") are computed once here, so decoding is a lookup.
 * The behaviour follows llama.cpp's llama_vocab (defaults per model, auto-detected end-of-
 * generation tokens, special-token partitioning) so results match its tokenizer tests.
 */
#include "tokenizer_int.h"
#include "unicode_int.h"

#include "kf_log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_TOK_MAX_TEXT      (256u << 20) /* encode input limit */
#define KF_TOK_MAX_VOCAB     (1u << 26)
#define KF_TOK_MAX_TOKEN_LEN 65536u

/* ---- small helpers ------------------------------------------------------------------ */

void
kf_tok_spec_init(kf_tok_spec_t *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->bos = spec->eos = spec->eot = spec->eom = spec->unk = spec->pad = -1;
    spec->fim_pad = spec->fim_rep = spec->fim_sep = -1;
    spec->add_bos = spec->add_eos = spec->add_space_prefix = -1;
}

int
kf_tok_grow(kf_tok_scratch_t *sc, void **p, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap)
        return 1;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < n)
        ncap *= 2;
    void *np = realloc(*p, ncap * size);
    if (!np) {
        sc->oom = 1;
        return 0;
    }
    *p = np;
    *cap = ncap;
    return 1;
}

void
kf_tok_scratch_free(kf_tok_scratch_t *sc)
{
    free(sc->cps);
    free(sc->offs);
    free(sc->flags);
    free(sc->spans_a);
    free(sc->spans_b);
    free(sc->sym);
    free(sc->heap);
    free(sc->buf);
    memset(sc, 0, sizeof(*sc));
}

void
kf_tok_ids_push(kf_tok_ids_t *ids, int32_t id)
{
    if (ids->oom)
        return;
    if (ids->n == ids->cap) {
        size_t ncap = ids->cap ? ids->cap * 2 : 64;
        int32_t *nv = realloc(ids->v, ncap * sizeof(int32_t));
        if (!nv) {
            ids->oom = 1;
            return;
        }
        ids->v = nv;
        ids->cap = ncap;
    }
    ids->v[ids->n++] = id;
}

/* FNV-1a over two segments, so a pair can be looked up without concatenating it. */
static uint64_t
hash2(const char *a, size_t alen, const char *b, size_t blen)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < alen; i++)
        h = (h ^ (uint8_t)a[i]) * 0x100000001b3ULL;
    for (size_t i = 0; i < blen; i++)
        h = (h ^ (uint8_t)b[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

int32_t
kf_tok_lookup2(const kf_tokenizer_t *tok, const char *a, size_t alen, const char *b, size_t blen)
{
    size_t len = alen + blen;
    for (size_t i = hash2(a, alen, b, blen) & tok->tok_hash_mask;;
         i = (i + 1) & tok->tok_hash_mask) {
        uint32_t slot = tok->tok_hash[i];
        if (slot == 0)
            return -1;
        uint32_t id = slot - 1;
        const char *t = tok->text_arena + tok->text_off[id];
        if (tok->text_len[id] == len && memcmp(t, a, alen) == 0 &&
            (blen == 0 || memcmp(t + alen, b, blen) == 0))
            return (int32_t)id;
    }
}

static size_t
pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

static int
str_in(const char *s, size_t len, const char *const *list)
{
    for (; *list; list++) {
        if (strlen(*list) == len && memcmp(*list, s, len) == 0)
            return 1;
    }
    return 0;
}

/* ---- building ------------------------------------------------------------------------ */

static kf_err_t
build_texts(kf_tokenizer_t *tok, const kf_tok_spec_t *spec, char *errstr, size_t errstr_size)
{
    uint32_t n = tok->n_vocab;
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t l = spec->tokens[i].len;
        if (l > KF_TOK_MAX_TOKEN_LEN)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "tokenizer.ggml.tokens[%u] is %zu bytes long (limit %u)", i, l,
                              KF_TOK_MAX_TOKEN_LEN);
        if (l > 0 && !spec->tokens[i].ptr)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "token %u has no text", i);
        total += (l ? l : 24) + 1;
    }
    if (total >= UINT32_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "vocabulary text too large");
    tok->text_arena = malloc(total);
    tok->piece_arena = malloc(total);
    tok->text_off = malloc(n * sizeof(uint32_t));
    tok->text_len = malloc(n * sizeof(uint32_t));
    tok->piece_off = malloc(n * sizeof(uint32_t));
    tok->piece_len = malloc(n * sizeof(uint32_t));
    tok->scores = malloc(n * sizeof(float));
    tok->attr = malloc(n * sizeof(uint16_t));
    tok->tok_hash_mask = pow2_at_least(2 * (size_t)n) - 1;
    tok->tok_hash = calloc(tok->tok_hash_mask + 1, sizeof(uint32_t));
    if (!tok->text_arena || !tok->piece_arena || !tok->text_off || !tok->text_len ||
        !tok->piece_off || !tok->piece_len || !tok->scores || !tok->attr || !tok->tok_hash)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory for %u tokens", n);

    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        char *dst = tok->text_arena + off;
        size_t l = spec->tokens[i].len;
        if (l == 0) {
            /* llama.cpp's name for an empty token, so it can never match text. */
            l = (size_t)snprintf(dst, 24, "[EMPTY_%u]", i);
        } else {
            memcpy(dst, spec->tokens[i].ptr, l);
        }
        dst[l] = '\0';
        tok->text_off[i] = (uint32_t)off;
        tok->text_len[i] = (uint32_t)l;
        off += l + 1;

        tok->scores[i] = spec->scores ? spec->scores[i] : 0.0f;
        uint16_t a = KF_TOKA_NORMAL;
        if (spec->types) {
            switch (spec->types[i]) {
            case KF_TOKT_NORMAL:
                a = KF_TOKA_NORMAL;
                break;
            case KF_TOKT_UNKNOWN:
                a = KF_TOKA_UNKNOWN;
                break;
            case KF_TOKT_CONTROL:
                a = KF_TOKA_CONTROL;
                break;
            case KF_TOKT_USER_DEFINED:
                a = KF_TOKA_USER_DEFINED;
                break;
            case KF_TOKT_UNUSED:
                a = KF_TOKA_UNUSED;
                break;
            case KF_TOKT_BYTE:
                a = KF_TOKA_BYTE;
                break;
            default:
                a = 0; /* undefined: never produced, prints as nothing */
                break;
            }
        }
        tok->attr[i] = a;

        /* Later duplicates win, as in llama.cpp's token_to_id map, except that a normal token
         * is never shadowed by a special one with the same text: deepseek-llm adds user-defined
         * "ÿ", "û", ... that would otherwise replace the byte-level tokens of bytes FF, FB. */
        const char *t = tok->text_arena + tok->text_off[i];
        size_t h = hash2(t, l, NULL, 0) & tok->tok_hash_mask;
        for (;; h = (h + 1) & tok->tok_hash_mask) {
            uint32_t slot = tok->tok_hash[h];
            if (slot == 0) {
                tok->tok_hash[h] = i + 1;
                break;
            }
            uint32_t o = slot - 1;
            if (tok->text_len[o] == l && memcmp(tok->text_arena + tok->text_off[o], t, l) == 0) {
                if (!(tok->attr[o] & KF_TOKA_NORMAL) || (a & KF_TOKA_NORMAL))
                    tok->tok_hash[h] = i + 1;
                break;
            }
        }
    }
    return KF_OK;
}

static kf_err_t
build_merges(kf_tokenizer_t *tok, const kf_tok_spec_t *spec, char *errstr, size_t errstr_size)
{
    tok->merges_mask = pow2_at_least(2 * (size_t)spec->n_merges) - 1;
    tok->merges = calloc(tok->merges_mask + 1, sizeof(kf_tok_merge_t));
    if (!tok->merges)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory for %u merges",
                          spec->n_merges);
    uint32_t skipped = 0;
    for (uint32_t r = 0; r < spec->n_merges; r++) {
        const char *s = spec->merges[r].ptr;
        size_t len = spec->merges[r].len;
        /* "left right": split at the first space after the first byte, as llama.cpp. */
        const char *sp = len > 1 && s ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            skipped++;
            continue;
        }
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        int32_t left = kf_tok_lookup2(tok, s, ll, NULL, 0);
        int32_t right = kf_tok_lookup2(tok, sp + 1, rl, NULL, 0);
        int32_t merged = kf_tok_lookup2(tok, s, ll, sp + 1, rl);
        if (left < 0 || right < 0 || merged < 0) {
            skipped++;
            continue;
        }
        uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
        uint64_t x = key;
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        for (size_t i = x & tok->merges_mask;; i = (i + 1) & tok->merges_mask) {
            kf_tok_merge_t *m = &tok->merges[i];
            if (m->key == key)
                break; /* the first (lowest) rank of a duplicate pair wins */
            if (m->key == 0) {
                m->key = key;
                m->rank = (int32_t)r;
                m->id = merged;
                break;
            }
        }
    }
    if (skipped)
        kf_log(KF_LOG_DEBUG, "tokenizer", "%u of %u merges skipped (malformed or out of vocab)",
               skipped, spec->n_merges);
    return KF_OK;
}

static void
build_pieces(kf_tokenizer_t *tok)
{
    size_t off = 0;
    for (uint32_t i = 0; i < tok->n_vocab; i++) {
        const char *t = tok->text_arena + tok->text_off[i];
        size_t l = tok->text_len[i];
        char *dst = tok->piece_arena + off;
        size_t n = 0;
        uint16_t a = tok->attr[i];
        if (a & (KF_TOKA_CONTROL | KF_TOKA_UNKNOWN | KF_TOKA_USER_DEFINED)) {
            memcpy(dst, t, l);
            n = l;
        } else if ((a & KF_TOKA_BYTE) && tok->model == KF_TOK_SPM) {
            unsigned v;
            if (l == 6 && sscanf(t, "<0x%2x>", &v) == 1)
                dst[n++] = (char)v;
        } else if (a & KF_TOKA_NORMAL) {
            if (tok->model == KF_TOK_SPM) {
                /* U+2581 -> ' ' */
                for (size_t k = 0; k < l;) {
                    if (k + 3 <= l && memcmp(t + k, "\xE2\x96\x81", 3) == 0) {
                        dst[n++] = ' ';
                        k += 3;
                    } else {
                        dst[n++] = t[k++];
                    }
                }
            } else {
                /* Byte-level: each mapped character is one byte; keep anything else. */
                for (size_t k = 0; k < l;) {
                    size_t cl;
                    uint32_t cp = kf_utf8_decode((const uint8_t *)t + k, l - k, &cl);
                    int b = cp == KF_UTF8_INVALID ? -1 : kf_tok_cp_to_byte(cp);
                    if (b >= 0) {
                        dst[n++] = (char)b;
                    } else {
                        memcpy(dst + n, t + k, cl);
                        n += cl;
                    }
                    k += cl;
                }
            }
        }
        dst[n] = '\0';
        tok->piece_off[i] = (uint32_t)off;
        tok->piece_len[i] = (uint32_t)n;
        off += n + 1;
    }
}

/* End-of-generation and FIM tokens found by their text (llama.cpp's list). Matches are forced
 * to control type so plain text never turns into them. */
static const char *const eot_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "<\xEF\xBD\x9C"
                                        "end\xE2\x96\x81"
                                        "of\xE2\x96\x81"
                                        "sentence\xEF\xBD\x9C>",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const eom_names[] = {"<|eom_id|>", NULL};
static const char *const eog_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<\xEF\xBD\x9C"
                                        "end\xE2\x96\x81"
                                        "of\xE2\x96\x81"
                                        "sentence\xEF\xBD\x9C>",
                                        NULL};
static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};

/* First id (in list order) whose text is in `names`, or -1. */
static int32_t
find_named(const kf_tokenizer_t *tok, const char *const *names)
{
    for (; *names; names++) {
        int32_t id = kf_tok_lookup2(tok, *names, strlen(*names), NULL, 0);
        if (id >= 0)
            return id;
    }
    return -1;
}

static void
mark_eog(kf_tokenizer_t *tok, int32_t id)
{
    if (id >= 0 && (uint32_t)id < tok->n_vocab)
        tok->attr[id] |= KF_TOKA_EOG;
}

static void
force_control(kf_tokenizer_t *tok, int32_t id)
{
    if (id >= 0 && !(tok->attr[id] & KF_TOKA_CONTROL)) {
        kf_log(KF_LOG_DEBUG, "tokenizer",
               "token %d '%s' looks like a control token; using it as one", id,
               tok->text_arena + tok->text_off[id]);
        tok->attr[id] = (uint16_t)((tok->attr[id] & KF_TOKA_EOG) | KF_TOKA_CONTROL);
    }
}

static void
build_special_ids(kf_tokenizer_t *tok, const kf_tok_spec_t *spec)
{
    int64_t fim_pad = spec->fim_pad, fim_rep = spec->fim_rep, fim_sep = spec->fim_sep;
    struct {
        const char *key;
        int64_t v;
        int32_t *dst;
    } ids[] = {{"bos", spec->bos, &tok->bos},     {"eos", spec->eos, &tok->eos},
               {"eot", spec->eot, &tok->eot},     {"eom", spec->eom, &tok->eom},
               {"unknown", spec->unk, &tok->unk}, {"padding", spec->pad, &tok->pad}};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        if (ids[i].v < 0)
            continue;
        if (ids[i].v >= tok->n_vocab) {
            kf_log(KF_LOG_WARN, "tokenizer",
                   "tokenizer.ggml.%s_token_id %lld is out of range (n_vocab %u); ignored",
                   ids[i].key, (long long)ids[i].v, tok->n_vocab);
            continue;
        }
        *ids[i].dst = (int32_t)ids[i].v;
    }
    /* Auto-detection by text, only where the metadata did not say. */
    if (tok->eot < 0) {
        tok->eot = find_named(tok, eot_names);
        force_control(tok, tok->eot);
    }
    if (tok->eom < 0) {
        tok->eom = find_named(tok, eom_names);
        force_control(tok, tok->eom);
    }
    int32_t fims[3] = {
        fim_pad >= 0 && fim_pad < tok->n_vocab ? (int32_t)fim_pad : find_named(tok, fim_pad_names),
        fim_rep >= 0 && fim_rep < tok->n_vocab ? (int32_t)fim_rep : find_named(tok, fim_rep_names),
        fim_sep >= 0 && fim_sep < tok->n_vocab ? (int32_t)fim_sep : find_named(tok, fim_sep_names)};
    for (int i = 0; i < 3; i++) {
        force_control(tok, fims[i]);
        mark_eog(tok, fims[i]);
    }
    for (const char *const *nm = eog_names; *nm; nm++) {
        int32_t id = kf_tok_lookup2(tok, *nm, strlen(*nm), NULL, 0);
        force_control(tok, id);
        mark_eog(tok, id);
    }
    mark_eog(tok, tok->eos);
    mark_eog(tok, tok->eot);
    mark_eog(tok, tok->eom);
}

/* Sort key of a special token: longer text first, then lower id. */
static int
u64_cmp(const void *pa, const void *pb)
{
    uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
    return a < b ? -1 : (a > b);
}

static kf_err_t
build_special_list(kf_tokenizer_t *tok, const kf_tok_spec_t *spec, char *errstr, size_t errstr_size)
{
    /* Phi-3: special tokens swallow the white space after them (llama.cpp sets RSTRIP by the
     * model name, the metadata has no per-token attributes). */
    char lname[64] = "";
    for (size_t i = 0; spec->name && spec->name[i] && i + 1 < sizeof(lname); i++) {
        lname[i] = (char)tolower((unsigned char)spec->name[i]);
        lname[i + 1] = '\0';
    }
    int phi3 = strstr(lname, "phi-3") || strstr(lname, "phi3");

    size_t n = 0;
    for (uint32_t i = 0; i < tok->n_vocab; i++) {
        if (tok->attr[i] & (KF_TOKA_CONTROL | KF_TOKA_USER_DEFINED | KF_TOKA_UNKNOWN))
            n++;
    }
    tok->special = malloc((n ? n : 1) * sizeof(int32_t));
    if (!tok->special)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < tok->n_vocab; i++) {
        if (tok->attr[i] & (KF_TOKA_CONTROL | KF_TOKA_USER_DEFINED | KF_TOKA_UNKNOWN)) {
            tok->special[tok->n_special++] = (int32_t)i;
            if (phi3)
                tok->attr[i] |= KF_TOKA_RSTRIP;
        }
    }
    if (phi3) {
        static const char *const strip_off[] = {"<unk>", "<s>", "<|endoftext|>", NULL};
        int32_t id = kf_tok_lookup2(tok, "</s>", 4, NULL, 0);
        if (id >= 0)
            tok->attr[id] |= KF_TOKA_RSTRIP;
        for (const char *const *nm = strip_off; *nm; nm++) {
            id = kf_tok_lookup2(tok, *nm, strlen(*nm), NULL, 0);
            if (id >= 0)
                tok->attr[id] &= (uint16_t)~KF_TOKA_RSTRIP;
        }
    }
    /* Longest first, ties by id, so matching is deterministic. */
    uint64_t *keys = malloc((n ? n : 1) * sizeof(uint64_t));
    if (!keys)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < tok->n_special; i++) {
        int32_t id = tok->special[i];
        keys[i] = ((uint64_t)(UINT32_MAX - tok->text_len[id]) << 32) | (uint32_t)id;
    }
    qsort(keys, tok->n_special, sizeof(uint64_t), u64_cmp);
    for (size_t i = 0; i < tok->n_special; i++)
        tok->special[i] = (int32_t)(keys[i] & 0xFFFFFFFFu);

    /* Index: hash of the texts, distinct lengths, first bytes. */
    tok->spec_hash_mask = pow2_at_least(2 * tok->n_special) - 1;
    tok->spec_hash = calloc(tok->spec_hash_mask + 1, sizeof(uint32_t));
    tok->spec_lens = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!tok->spec_hash || !tok->spec_lens) {
        free(keys);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    size_t nl = 0;
    for (size_t i = 0; i < tok->n_special; i++) {
        int32_t id = tok->special[i];
        const char *t = tok->text_arena + tok->text_off[id];
        uint32_t l = tok->text_len[id];
        tok->spec_first[(uint8_t)t[0]] = 1;
        keys[nl++] = l;
        size_t h = hash2(t, l, NULL, 0) & tok->spec_hash_mask;
        while (tok->spec_hash[h] != 0)
            h = (h + 1) & tok->spec_hash_mask;
        tok->spec_hash[h] = (uint32_t)i + 1;
    }
    qsort(keys, nl, sizeof(uint64_t), u64_cmp);
    for (size_t i = 0; i < nl; i++) {
        if (i == 0 || keys[i] != keys[i - 1])
            tok->spec_lens[tok->n_spec_lens++] = (uint32_t)keys[i];
    }
    free(keys);
    return KF_OK;
}

static void
build_byte_tokens(kf_tokenizer_t *tok)
{
    for (int b = 0; b < 256; b++) {
        int32_t id = -1;
        if (tok->model == KF_TOK_BPE) {
            char u[4];
            size_t l = kf_utf8_encode(kf_tok_byte_to_cp((uint8_t)b), u);
            id = kf_tok_lookup2(tok, u, l, NULL, 0);
        } else {
            char hex[8];
            snprintf(hex, sizeof(hex), "<0x%02X>", b);
            id = kf_tok_lookup2(tok, hex, 6, NULL, 0);
            if (id < 0) {
                char c = (char)b;
                id = kf_tok_lookup2(tok, &c, 1, NULL, 0);
            }
        }
        tok->byte_tok[b] = id;
    }
}

kf_err_t
kf_tokenizer_build(const kf_tok_spec_t *spec,
                   kf_tokenizer_t **out,
                   char *errstr,
                   size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!spec || !spec->model)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "no tokenizer model");
    kf_tok_model_t model;
    if (strcmp(spec->model, "llama") == 0)
        model = KF_TOK_SPM;
    else if (strcmp(spec->model, "gpt2") == 0)
        model = KF_TOK_BPE;
    else
        return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                          "tokenizer.ggml.model '%s' is not supported (llama, gpt2)", spec->model);
    if (spec->n_vocab == 0 || spec->n_vocab > KF_TOK_MAX_VOCAB || !spec->tokens)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "tokenizer.ggml.tokens has %u entries (1..%u allowed)", spec->n_vocab,
                          KF_TOK_MAX_VOCAB);
    if (model == KF_TOK_BPE && spec->n_merges > 0 && !spec->merges)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "merges missing");

    kf_tokenizer_t *tok = calloc(1, sizeof(*tok));
    if (!tok)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    tok->model = model;
    tok->n_vocab = spec->n_vocab;
    tok->bos = tok->eos = tok->eot = tok->eom = tok->unk = tok->pad = -1;
    kf_err_t err = build_texts(tok, spec, errstr, errstr_size);
    if (err)
        goto fail;

    /* Per-model defaults, then the metadata's word. */
    if (model == KF_TOK_SPM) {
        tok->pre = KF_PRE_DEFAULT;
        snprintf(tok->pre_name, sizeof(tok->pre_name), "spm");
        tok->add_bos = 1;
        tok->add_space_prefix = 1;
        tok->bos = tok->n_vocab > 1 ? 1 : -1;
        tok->eos = tok->n_vocab > 2 ? 2 : -1;
        tok->unk = 0;
    } else {
        int known;
        tok->pre = kf_pre_from_name(spec->pre, &known);
        if (!known)
            kf_log(KF_LOG_WARN, "tokenizer",
                   "unknown tokenizer.ggml.pre '%s'; using the default split",
                   spec->pre ? spec->pre : "(none)");
        snprintf(tok->pre_name, sizeof(tok->pre_name), "%s", kf_pre_name(tok->pre));
        static const char *const llama3_names[] = {"llama3",  "llama-v3", "llama-bpe",
                                                   "falcon3", "pixtral",  NULL};
        if (spec->pre && str_in(spec->pre, strlen(spec->pre), llama3_names)) {
            tok->ignore_merges = 1;
            tok->add_bos = 1;
        }
        err = build_merges(tok, spec, errstr, errstr_size);
        if (err)
            goto fail;
    }
    if (spec->add_bos >= 0)
        tok->add_bos = spec->add_bos != 0;
    if (spec->add_eos >= 0)
        tok->add_eos = spec->add_eos != 0;
    if (spec->add_space_prefix >= 0)
        tok->add_space_prefix = spec->add_space_prefix != 0;

    build_special_ids(tok, spec);
    err = build_special_list(tok, spec, errstr, errstr_size);
    if (err)
        goto fail;
    build_byte_tokens(tok);
    build_pieces(tok);
    *out = tok;
    return KF_OK;
fail:
    kf_tokenizer_destroy(tok);
    return err;
}

void
kf_tokenizer_destroy(kf_tokenizer_t *tok)
{
    if (!tok)
        return;
    free(tok->text_arena);
    free(tok->text_off);
    free(tok->text_len);
    free(tok->scores);
    free(tok->attr);
    free(tok->piece_arena);
    free(tok->piece_off);
    free(tok->piece_len);
    free(tok->tok_hash);
    free(tok->merges);
    free(tok->special);
    free(tok->spec_hash);
    free(tok->spec_lens);
    free(tok);
}

/* ---- encode -------------------------------------------------------------------------- */

/* A piece of the input: raw text [off, off+len) or an already-recognised token. */
typedef struct frag {
    int32_t id; /* -1: raw text */
    uint32_t off;
    uint32_t len;
} frag_t;

typedef struct frag_list {
    frag_t *v;
    size_t n, cap;
} frag_list_t;

static int
frag_push(frag_list_t *fl, int32_t id, size_t off, size_t len)
{
    if (fl->n == fl->cap) {
        size_t ncap = fl->cap ? fl->cap * 2 : 16;
        frag_t *nv = realloc(fl->v, ncap * sizeof(frag_t));
        if (!nv)
            return -1;
        fl->v = nv;
        fl->cap = ncap;
    }
    fl->v[fl->n++] = (frag_t){id, (uint32_t)off, (uint32_t)len};
    return 0;
}

/* Positions in tok->special (ascending, so in matching order) of the special tokens that
 * occur in text and may match; *out is malloc'd. Looks up every substring that starts with a
 * possible first byte and has the length of some special token. */
static int
find_specials(const kf_tokenizer_t *tok,
              const char *text,
              size_t len,
              int parse_special,
              uint32_t **out,
              size_t *out_n)
{
    *out = NULL;
    *out_n = 0;
    if (tok->n_special == 0)
        return 0;
    uint8_t *seen = NULL;
    uint32_t *v = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < len; i++) {
        if (!tok->spec_first[(uint8_t)text[i]])
            continue;
        for (size_t k = 0; k < tok->n_spec_lens && tok->spec_lens[k] <= len - i; k++) {
            size_t l = tok->spec_lens[k];
            for (size_t h = hash2(text + i, l, NULL, 0) & tok->spec_hash_mask;
                 tok->spec_hash[h] != 0; h = (h + 1) & tok->spec_hash_mask) {
                uint32_t si = tok->spec_hash[h] - 1;
                int32_t id = tok->special[si];
                if (tok->text_len[id] != l ||
                    memcmp(tok->text_arena + tok->text_off[id], text + i, l) != 0)
                    continue;
                if (!parse_special && (tok->attr[id] & (KF_TOKA_CONTROL | KF_TOKA_UNKNOWN)))
                    continue; /* user-defined tokens are matched even then */
                if (!seen && !(seen = calloc(tok->n_special, 1)))
                    goto oom;
                if (seen[si])
                    continue;
                seen[si] = 1;
                if (n == cap) {
                    size_t ncap = cap ? 2 * cap : 8;
                    uint32_t *nv = realloc(v, ncap * sizeof(uint32_t));
                    if (!nv)
                        goto oom;
                    v = nv, cap = ncap;
                }
                v[n++] = si;
            }
        }
    }
    free(seen);
    /* Insertion sort: usually a handful. */
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    *out = v;
    *out_n = n;
    return 0;
oom:
    free(seen);
    free(v);
    return -1;
}

/* First occurrence of needle in hay (memmem is a GNU extension). */
static const char *
find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    while (hlen >= nlen) {
        const char *p = memchr(hay, needle[0], hlen - nlen + 1);
        if (!p)
            return NULL;
        if (memcmp(p, needle, nlen) == 0)
            return p;
        hlen -= (size_t)(p - hay) + 1;
        hay = p + 1;
    }
    return NULL;
}

/* Splits raw fragments on every occurrence of each special token, longest token first (the
 * order llama.cpp's tokenizer_st_partition uses), over the tokens that occur at all. */
static int
partition(
    const kf_tokenizer_t *tok, const char *text, size_t len, int parse_special, frag_list_t *fl)
{
    uint32_t *cand = NULL;
    size_t n_cand = 0;
    if (find_specials(tok, text, len, parse_special, &cand, &n_cand) != 0)
        return -1;
    frag_list_t next = {0};
    int rc = 0;
    for (size_t s = 0; s < n_cand && rc == 0; s++) {
        int32_t id = tok->special[cand[s]];
        uint16_t a = tok->attr[id];
        const char *t = tok->text_arena + tok->text_off[id];
        size_t tl = tok->text_len[id];
        next.n = 0;
        for (size_t f = 0; f < fl->n && rc == 0; f++) {
            frag_t fr = fl->v[f];
            if (fr.id >= 0) {
                rc = frag_push(&next, fr.id, 0, 0);
                continue;
            }
            size_t off = fr.off, end = (size_t)fr.off + fr.len;
            while (off < end && rc == 0) {
                const char *m = find_bytes(text + off, end - off, t, tl);
                if (!m) {
                    rc = frag_push(&next, -1, off, end - off);
                    break;
                }
                size_t mpos = (size_t)(m - text);
                size_t left_end = mpos;
                if (a & KF_TOKA_LSTRIP) {
                    while (left_end > off && isspace((unsigned char)text[left_end - 1]))
                        left_end--;
                }
                if (left_end > off)
                    rc = frag_push(&next, -1, off, left_end - off);
                if (rc == 0)
                    rc = frag_push(&next, id, 0, 0);
                off = mpos + tl;
                if (a & KF_TOKA_RSTRIP) {
                    while (off < end && isspace((unsigned char)text[off]))
                        off++;
                }
            }
        }
        frag_list_t tmp = *fl;
        *fl = next;
        next = tmp;
    }
    free(next.v);
    free(cand);
    return rc;
}

static kf_err_t
encode_ids(const kf_tokenizer_t *tok,
           const char *text,
           size_t len,
           int add_special,
           int parse_special,
           kf_tok_ids_t *ids)
{
    if (!tok || (!text && len > 0))
        return KF_ERR_INVALID_ARG;
    if (len > KF_TOK_MAX_TEXT)
        return KF_ERR_LIMIT;
    if (add_special && tok->add_bos && tok->bos >= 0)
        kf_tok_ids_push(ids, tok->bos);

    frag_list_t fl = {0};
    kf_tok_scratch_t sc = {0};
    kf_err_t err = KF_OK;
    if (len > 0 &&
        (frag_push(&fl, -1, 0, len) != 0 || partition(tok, text, len, parse_special, &fl) != 0)) {
        err = KF_ERR_NOMEM;
        goto out;
    }
    int prev_special = 1; /* SPM: prefix a space to text at the start or after a token */
    for (size_t f = 0; f < fl.n; f++) {
        const frag_t *fr = &fl.v[f];
        if (fr->id >= 0) {
            kf_tok_ids_push(ids, fr->id);
            prev_special = 1;
            continue;
        }
        if (tok->model == KF_TOK_SPM)
            kf_tok_spm_encode(tok, text + fr->off, fr->len, tok->add_space_prefix && prev_special,
                              &sc, ids);
        else
            kf_tok_bpe_encode(tok, text + fr->off, fr->len, &sc, ids);
        prev_special = 0;
        if (sc.oom)
            break;
    }
    if (add_special && tok->add_eos && tok->eos >= 0)
        kf_tok_ids_push(ids, tok->eos);
    if (sc.oom || ids->oom)
        err = KF_ERR_NOMEM;
out:
    free(fl.v);
    kf_tok_scratch_free(&sc);
    return err;
}

kf_err_t
kf_tokenizer_encode(const kf_tokenizer_t *tok,
                    const char *text,
                    size_t len,
                    int add_special,
                    int parse_special,
                    int32_t **out_ids,
                    size_t *out_n)
{
    if (!out_ids || !out_n)
        return KF_ERR_INVALID_ARG;
    *out_ids = NULL;
    *out_n = 0;
    kf_tok_ids_t ids = {0};
    kf_err_t err = encode_ids(tok, text, len, add_special, parse_special, &ids);
    if (err) {
        free(ids.v);
        return err;
    }
    *out_ids = ids.v;
    *out_n = ids.n;
    return KF_OK;
}

kf_err_t
kf_tokenizer_encode_buf(const kf_tokenizer_t *tok,
                        const char *text,
                        size_t len,
                        int add_special,
                        int parse_special,
                        int32_t *ids,
                        size_t cap,
                        size_t *out_n)
{
    if (!out_n || (!ids && cap > 0))
        return KF_ERR_INVALID_ARG;
    *out_n = 0;
    kf_tok_ids_t v = {0};
    kf_err_t err = encode_ids(tok, text, len, add_special, parse_special, &v);
    if (err == KF_OK) {
        *out_n = v.n;
        memcpy(ids, v.v, (v.n < cap ? v.n : cap) * sizeof(int32_t));
        if (v.n > cap)
            err = KF_ERR_LIMIT;
    }
    free(v.v);
    return err;
}

/* ---- decode and getters ------------------------------------------------------------- */

const char *
kf_tokenizer_token_to_piece(const kf_tokenizer_t *tok, int32_t id, int special, size_t *out_len)
{
    if (!tok || id < 0 || (uint32_t)id >= tok->n_vocab) {
        if (out_len)
            *out_len = 0;
        return NULL;
    }
    const char *p = tok->piece_arena + tok->piece_off[id];
    size_t n = tok->piece_len[id];
    if (!special && (tok->attr[id] & (KF_TOKA_CONTROL | KF_TOKA_UNKNOWN)))
        n = 0;
    if (out_len)
        *out_len = n;
    return n ? p : "";
}

kf_err_t
kf_tokenizer_decode(const kf_tokenizer_t *tok,
                    const int32_t *ids,
                    size_t n,
                    int remove_special,
                    int unparse_special,
                    char **out_text,
                    size_t *out_len,
                    char *errstr,
                    size_t errstr_size)
{
    if (!tok || !out_text || !out_len || (!ids && n > 0))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "bad argument to decode");
    *out_text = NULL;
    *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= tok->n_vocab)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "token id %d at position %zu is out of range (n_vocab %u)", ids[i], i,
                              tok->n_vocab);
        total += tok->piece_len[ids[i]];
    }
    /* SentencePiece prefixed a space to the text: drop it from the first piece that prints
     * anything (llama.cpp keeps it after a removed BOS; sentencepiece does not). */
    int remove_space = tok->add_space_prefix;
    if (remove_special && tok->add_bos && n > 0 && ids[0] == tok->bos) {
        ids++;
        n--;
    }
    if (remove_special && tok->add_eos && n > 0 && ids[n - 1] == tok->eos)
        n--;
    char *s = malloc(total + 1);
    if (!s)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory (%zu bytes)", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = kf_tokenizer_token_to_piece(tok, ids[i], unparse_special, &pl);
        if (remove_space && pl > 0) {
            if (p[0] == ' ')
                p++, pl--;
            remove_space = 0;
        }
        memcpy(s + o, p, pl);
        o += pl;
    }
    s[o] = '\0';
    *out_text = s;
    *out_len = o;
    return KF_OK;
}

uint32_t
kf_tokenizer_n_vocab(const kf_tokenizer_t *tok)
{
    return tok->n_vocab;
}

int32_t
kf_tokenizer_bos(const kf_tokenizer_t *tok)
{
    return tok->bos;
}

int32_t
kf_tokenizer_eos(const kf_tokenizer_t *tok)
{
    return tok->eos;
}

int32_t
kf_tokenizer_eot(const kf_tokenizer_t *tok)
{
    return tok->eot;
}

int32_t
kf_tokenizer_eom(const kf_tokenizer_t *tok)
{
    return tok->eom;
}

int32_t
kf_tokenizer_pad(const kf_tokenizer_t *tok)
{
    return tok->pad;
}

int32_t
kf_tokenizer_unk(const kf_tokenizer_t *tok)
{
    return tok->unk;
}

int
kf_tokenizer_add_bos(const kf_tokenizer_t *tok)
{
    return tok->add_bos;
}

int
kf_tokenizer_add_eos(const kf_tokenizer_t *tok)
{
    return tok->add_eos;
}

int
kf_tokenizer_is_eog(const kf_tokenizer_t *tok, int32_t id)
{
    if (!tok || id < 0 || (uint32_t)id >= tok->n_vocab)
        return 0;
    return (tok->attr[id] & KF_TOKA_EOG) != 0;
}

int
kf_tokenizer_is_special(const kf_tokenizer_t *tok, int32_t id)
{
    if (!tok || id < 0 || (uint32_t)id >= tok->n_vocab)
        return 0;
    return (tok->attr[id] & (KF_TOKA_CONTROL | KF_TOKA_UNKNOWN | KF_TOKA_UNUSED)) != 0;
}

int32_t
kf_tokenizer_find_token(const kf_tokenizer_t *tok, const char *text, size_t len)
{
    if (!tok || (!text && len > 0))
        return -1;
    return kf_tok_lookup2(tok, text ? text : "", len, NULL, 0);
}

const char *
kf_tokenizer_token_text(const kf_tokenizer_t *tok, int32_t id, size_t *out_len)
{
    if (!tok || id < 0 || (uint32_t)id >= tok->n_vocab) {
        if (out_len)
            *out_len = 0;
        return NULL;
    }
    if (out_len)
        *out_len = tok->text_len[id];
    return tok->text_arena + tok->text_off[id];
}

const char *
kf_tokenizer_model(const kf_tokenizer_t *tok)
{
    return tok->model == KF_TOK_SPM ? "llama" : "gpt2";
}

const char *
kf_tokenizer_pre(const kf_tokenizer_t *tok)
{
    return tok->pre_name;
}
