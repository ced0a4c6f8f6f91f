/*
 * tokenizer_bpe.c: byte-level BPE (tokenizer.ggml.model "gpt2").
 *
 * Each pre-tokenized word starts as one symbol per byte (the token of the byte's GPT-2
 * mapped character); the adjacent pair with the lowest merge rank is merged first (leftmost
 * on ties) until no ranked pair is left, as HuggingFace and llama.cpp do. Symbols carry
 * token ids and the merge table is keyed by (left id, right id), so merging needs no string
 * work at all.
 */
#include "tokenizer_int.h"
#include "unicode_int.h"

#include <stdlib.h>

typedef struct bpe_sym {
    int32_t id;   /* token id, -1 when the byte has no token */
    int32_t prev; /* linked list of live symbols */
    int32_t next;
    uint32_t n; /* bytes covered; 0 once merged into its left neighbour */
} bpe_sym_t;

typedef struct bpe_pair {
    int32_t rank;
    int32_t left;
    int32_t right;
    int32_t id; /* merged token */
    uint32_t size;
} bpe_pair_t;

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes
 * to U+0100.. in byte order. */
static int
byte_is_self(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t
kf_tok_byte_to_cp(uint8_t b)
{
    if (byte_is_self(b))
        return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        n += !byte_is_self(i);
    return 256 + n;
}

int
kf_tok_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return byte_is_self(cp) ? (int)cp : -1;
    if (cp >= 256 + 68)
        return -1;
    uint32_t n = cp - 256;
    for (unsigned b = 0; b < 256; b++) {
        if (!byte_is_self(b) && n-- == 0)
            return (int)b;
    }
    return -1;
}

static uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static const kf_tok_merge_t *
merge_find(const kf_tokenizer_t *tok, int32_t left, int32_t right)
{
    if (!tok->merges || left < 0 || right < 0)
        return NULL;
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (size_t i = mix64(key) & tok->merges_mask;; i = (i + 1) & tok->merges_mask) {
        const kf_tok_merge_t *m = &tok->merges[i];
        if (m->key == key)
            return m;
        if (m->key == 0)
            return NULL;
    }
}

/* Min-heap on (rank, left). */
static int
pair_less(const void *va, const void *vb)
{
    const bpe_pair_t *a = va, *b = vb;
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

typedef struct bpe_ctx {
    const kf_tokenizer_t *tok;
    kf_tok_scratch_t *sc;
    kf_tok_ids_t *ids;
    size_t n_heap;
} bpe_ctx_t;

static void
heap_push(bpe_ctx_t *cx, const bpe_pair_t *p)
{
    _Static_assert(sizeof(bpe_pair_t) <= KF_TOK_HEAP_ELEM_MAX, "heap element size");
    kf_tok_heap_push(cx->sc, &cx->n_heap, p, sizeof(*p), pair_less);
}

static bpe_pair_t
heap_pop(bpe_ctx_t *cx)
{
    bpe_pair_t top;
    kf_tok_heap_pop(cx->sc, &cx->n_heap, &top, sizeof(top), pair_less);
    return top;
}

static void
add_pair(bpe_ctx_t *cx, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const bpe_sym_t *sym = cx->sc->sym;
    const kf_tok_merge_t *m = merge_find(cx->tok, sym[left].id, sym[right].id);
    if (!m)
        return;
    bpe_pair_t p = {m->rank, left, right, m->id, sym[left].n + sym[right].n};
    heap_push(cx, &p);
}

/* Llama 3 (ignore_merges): a word that is itself a token is emitted whole. */
static int32_t
whole_word_token(bpe_ctx_t *cx, const char *word, size_t len)
{
    kf_tok_scratch_t *sc = cx->sc;
    if (!kf_tok_grow(sc, &sc->buf, &sc->buf_cap, 2 * len + 1, 1))
        return -1;
    char *buf = sc->buf;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += kf_utf8_encode(kf_tok_byte_to_cp((uint8_t)word[i]), buf + n);
    int32_t id = kf_tok_lookup2(cx->tok, buf, n, NULL, 0);
    if (id >= 0 && !(cx->tok->attr[id] & KF_TOKA_NORMAL))
        return -1;
    return id;
}

static void
bpe_word(void *ctx, const char *word, size_t len)
{
    bpe_ctx_t *cx = ctx;
    kf_tok_scratch_t *sc = cx->sc;
    const kf_tokenizer_t *tok = cx->tok;
    if (len == 0 || sc->oom)
        return;
    if (tok->ignore_merges) {
        int32_t id = whole_word_token(cx, word, len);
        if (id >= 0) {
            kf_tok_ids_push(cx->ids, id);
            return;
        }
    }
    if (!kf_tok_grow(sc, &sc->sym, &sc->sym_cap, len, sizeof(bpe_sym_t)))
        return;
    bpe_sym_t *sym = sc->sym;
    for (size_t i = 0; i < len; i++) {
        sym[i].id = tok->byte_tok[(uint8_t)word[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < len ? (int32_t)i + 1 : -1;
        sym[i].n = 1;
    }
    cx->n_heap = 0;
    for (size_t i = 1; i < len; i++)
        add_pair(cx, (int32_t)i - 1, (int32_t)i);

    while (cx->n_heap > 0 && !sc->oom) {
        bpe_pair_t p = heap_pop(cx);
        sym = sc->sym;
        bpe_sym_t *l = &sym[p.left], *r = &sym[p.right];
        /* Stale pair: one side was merged away or grew since it was queued. */
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue;
        l->id = p.id;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (l->next >= 0)
            sym[l->next].prev = p.left;
        add_pair(cx, l->prev, p.left);
        add_pair(cx, p.left, l->next);
    }
    sym = sc->sym;
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        /* A byte without a token (broken vocabulary) is dropped, as llama.cpp does. */
        if (sym[i].id >= 0)
            kf_tok_ids_push(cx->ids, sym[i].id);
    }
}

void
kf_tok_bpe_encode(const kf_tokenizer_t *tok,
                  const char *text,
                  size_t len,
                  kf_tok_scratch_t *sc,
                  kf_tok_ids_t *ids)
{
    bpe_ctx_t cx = {tok, sc, ids, 0};
    if (kf_pre_split(tok->pre, text, len, sc, bpe_word, &cx) != 0)
        sc->oom = 1;
}
