/*
 * tokenizer_spm.c: SentencePiece-style BPE (tokenizer.ggml.model "llama"), as llama.cpp's
 * llm_tokenizer_spm does it.
 *
 * The text (spaces escaped to U+2581, optionally with one prefixed) starts as one symbol per
 * UTF-8 character; the adjacent pair whose concatenation is the vocabulary piece with the
 * highest score is merged first (leftmost on ties) until no pair forms a piece. A symbol
 * that is not a piece falls back to its bytes as <0xNN> tokens.
 *
 * Unlike llama.cpp, only normal and user-defined pieces take part: text such as "<s>" or
 * "<0x0A>" is never turned into a control or byte token by merging; and invalid UTF-8 is
 * split byte by byte, so decoding always gives the input back.
 */
#include "tokenizer_int.h"
#include "unicode_int.h"

#include <string.h>

typedef struct spm_sym {
    int32_t prev;
    int32_t next;
    uint32_t start; /* byte offset in the escaped text */
    uint32_t n;     /* bytes; 0 once merged away */
} spm_sym_t;

typedef struct spm_pair {
    float score;
    int32_t left;
    int32_t right;
    uint32_t size;
} spm_pair_t;

typedef struct spm_ctx {
    const kf_tokenizer_t *tok;
    kf_tok_scratch_t *sc;
    const char *text;
    size_t n_heap;
} spm_ctx_t;

/* Max-heap on score, then min on left. */
static int
pair_before(const void *va, const void *vb)
{
    const spm_pair_t *a = va, *b = vb;
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int32_t
piece_id(const kf_tokenizer_t *tok, const char *s, size_t n)
{
    int32_t id = kf_tok_lookup2(tok, s, n, NULL, 0);
    if (id >= 0 && !(tok->attr[id] & (KF_TOKA_NORMAL | KF_TOKA_USER_DEFINED)))
        return -1;
    return id;
}

static void
heap_push(spm_ctx_t *cx, const spm_pair_t *p)
{
    _Static_assert(sizeof(spm_pair_t) <= KF_TOK_HEAP_ELEM_MAX, "heap element size");
    kf_tok_heap_push(cx->sc, &cx->n_heap, p, sizeof(*p), pair_before);
}

static spm_pair_t
heap_pop(spm_ctx_t *cx)
{
    spm_pair_t top;
    kf_tok_heap_pop(cx->sc, &cx->n_heap, &top, sizeof(top), pair_before);
    return top;
}

static void
add_pair(spm_ctx_t *cx, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const spm_sym_t *sym = cx->sc->sym;
    /* Live neighbours are contiguous in the text, so the pair is one substring. */
    uint32_t size = sym[left].n + sym[right].n;
    int32_t id = piece_id(cx->tok, cx->text + sym[left].start, size);
    if (id < 0)
        return;
    spm_pair_t p = {cx->tok->scores[id], left, right, size};
    heap_push(cx, &p);
}

void
kf_tok_spm_encode(const kf_tokenizer_t *tok,
                  const char *text,
                  size_t len,
                  int prefix_space,
                  kf_tok_scratch_t *sc,
                  kf_tok_ids_t *ids)
{
    /* Escape: every ' ' becomes U+2581 (3 bytes). */
    size_t cap_needed = 3 * len + 4;
    if (!kf_tok_grow(sc, &sc->buf, &sc->buf_cap, cap_needed, 1))
        return;
    char *buf = sc->buf;
    size_t n = 0;
    if (prefix_space) {
        memcpy(buf, "\xE2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, "\xE2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    if (n == 0)
        return;

    if (!kf_tok_grow(sc, &sc->sym, &sc->sym_cap, n, sizeof(spm_sym_t)))
        return;
    spm_sym_t *sym = sc->sym;
    int32_t n_sym = 0;
    for (size_t off = 0; off < n;) {
        /* One symbol per character. llama.cpp trusts the lead byte; we take invalid bytes one
         * at a time so a stray byte cannot swallow an escaped space that follows it. */
        size_t l;
        (void)kf_utf8_decode((const uint8_t *)buf + off, n - off, &l);
        sym[n_sym].start = (uint32_t)off;
        sym[n_sym].n = (uint32_t)l;
        sym[n_sym].prev = n_sym - 1;
        off += l;
        sym[n_sym].next = off < n ? n_sym + 1 : -1;
        n_sym++;
    }

    spm_ctx_t cx = {tok, sc, buf, 0};
    for (int32_t i = 1; i < n_sym; i++)
        add_pair(&cx, i - 1, i);
    while (cx.n_heap > 0 && !sc->oom) {
        spm_pair_t p = heap_pop(&cx);
        sym = sc->sym;
        spm_sym_t *l = &sym[p.left], *r = &sym[p.right];
        /* Stale pair: one side was merged away or grew since it was queued. */
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (l->next >= 0)
            sym[l->next].prev = p.left;
        add_pair(&cx, l->prev, p.left);
        add_pair(&cx, p.left, l->next);
    }

    sym = sc->sym;
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        int32_t id = piece_id(tok, buf + sym[i].start, sym[i].n);
        if (id >= 0) {
            kf_tok_ids_push(ids, id);
            continue;
        }
        /* Byte fallback; a byte without any token becomes <unk> (llama.cpp would throw). */
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t b = tok->byte_tok[(uint8_t)buf[sym[i].start + k]];
            if (b < 0)
                b = tok->unk;
            if (b >= 0)
                kf_tok_ids_push(ids, b);
        }
    }
}
