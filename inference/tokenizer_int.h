/*
 * tokenizer_int.h: internals of kf_tokenizer shared by tokenizer*.c and the unit tests.
 *
 * tokenizer.c builds the vocabulary from a kf_tok_spec_t (plain arrays, so tests can make
 * tiny vocabularies without a GGUF file) and runs special-token partitioning, encode and
 * decode; tokenizer_pre.c holds the hand-written pre-tokenizer regexes; tokenizer_bpe.c and
 * tokenizer_spm.c the two merge algorithms; tokenizer_gguf.c reads a kf_tok_spec_t out of
 * GGUF metadata.
 */
#ifndef KF_TOKENIZER_INT_H
#define KF_TOKENIZER_INT_H

#include "kf_tokenizer.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Token attributes (llama.cpp's llama_token_attr bits) plus our EOG mark. */
#define KF_TOKA_UNKNOWN      0x001u
#define KF_TOKA_UNUSED       0x002u
#define KF_TOKA_NORMAL       0x004u
#define KF_TOKA_CONTROL      0x008u
#define KF_TOKA_USER_DEFINED 0x010u
#define KF_TOKA_BYTE         0x020u
#define KF_TOKA_LSTRIP       0x040u /* eat whitespace before the token when matched in text */
#define KF_TOKA_RSTRIP       0x080u /* eat whitespace after it */
#define KF_TOKA_EOG          0x100u

/* GGUF tokenizer.ggml.token_type values. */
enum kf_tok_gguf_type {
    KF_TOKT_UNDEFINED = 0,
    KF_TOKT_NORMAL = 1,
    KF_TOKT_UNKNOWN = 2,
    KF_TOKT_CONTROL = 3,
    KF_TOKT_USER_DEFINED = 4,
    KF_TOKT_UNUSED = 5,
    KF_TOKT_BYTE = 6,
};

typedef enum kf_tok_model { KF_TOK_SPM = 0, KF_TOK_BPE = 1 } kf_tok_model_t;

/* Pre-tokenizers (tokenizer_pre.c): each is a fixed list of regexes applied in turn. */
typedef enum kf_pre_type {
    KF_PRE_DEFAULT = 0,
    KF_PRE_GPT2,
    KF_PRE_LLAMA3,
    KF_PRE_QWEN2,
    KF_PRE_DEEPSEEK_LLM,
    KF_PRE_DEEPSEEK_CODER,
    KF_PRE_FALCON,
    KF_PRE_STARCODER,
} kf_pre_type_t;

typedef struct kf_tok_str {
    const char *ptr;
    size_t len;
} kf_tok_str_t;

/* Everything a tokenizer is built from. Ids are -1 when absent (then model defaults apply);
 * flags are -1 when absent. Arrays are borrowed for the duration of kf_tokenizer_build(). */
typedef struct kf_tok_spec {
    const char *model; /* "llama" or "gpt2" */
    const char *pre;   /* tokenizer.ggml.pre or NULL */
    const char *name;  /* general.name or NULL (phi-3 strip rules key on it) */
    uint32_t n_vocab;
    const kf_tok_str_t *tokens;
    const float *scores;  /* NULL: all 0 */
    const int32_t *types; /* NULL: all normal */
    uint32_t n_merges;
    const kf_tok_str_t *merges; /* "left right" */
    int64_t bos, eos, eot, eom, unk, pad, fim_pad, fim_rep, fim_sep;
    int add_bos, add_eos, add_space_prefix;
} kf_tok_spec_t;

/* Initialises a spec with every id and flag "absent". */
void kf_tok_spec_init(kf_tok_spec_t *spec);

/* Builds a tokenizer from a spec (kf_tokenizer_new() is this plus reading GGUF). */
kf_err_t kf_tokenizer_build(const kf_tok_spec_t *spec,
                            kf_tokenizer_t **out,
                            char *errstr,
                            size_t errstr_size);

/* Open-addressing merge table entry: (left id, right id) -> rank and merged id. */
typedef struct kf_tok_merge {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty slot */
    int32_t rank;
    int32_t id;
} kf_tok_merge_t;

struct kf_tokenizer {
    kf_tok_model_t model;
    kf_pre_type_t pre;
    char pre_name[32];
    uint32_t n_vocab;

    /* Raw token texts, each NUL-terminated inside text_arena. */
    char *text_arena;
    uint32_t *text_off;
    uint32_t *text_len;
    float *scores;
    uint16_t *attr;

    /* Decoded pieces (what the token prints as), in piece_arena. */
    char *piece_arena;
    uint32_t *piece_off;
    uint32_t *piece_len;

    /* Token text -> id: open addressing over id+1 (0 = empty). */
    uint32_t *tok_hash;
    size_t tok_hash_mask;

    /* BPE merges. */
    kf_tok_merge_t *merges;
    size_t merges_mask;

    /* BPE: id of the byte-mapped character of each byte. SPM: id of <0xNN>. -1 if none. */
    int32_t byte_tok[256];

    /* Tokens matched in raw text (control, user-defined, unknown), longest text first. */
    int32_t *special;
    size_t n_special;
    /* Index over them so encode finds the few that occur without searching for each:
     * text -> position in `special` (+1, 0 = empty), their distinct lengths (ascending) and
     * which bytes start one. */
    uint32_t *spec_hash;
    size_t spec_hash_mask;
    uint32_t *spec_lens;
    size_t n_spec_lens;
    uint8_t spec_first[256];

    int32_t bos, eos, eot, eom, unk, pad;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
};

/* Id of the token with text a[0..alen) followed by b[0..blen), or -1. */
int32_t
kf_tok_lookup2(const kf_tokenizer_t *tok, const char *a, size_t alen, const char *b, size_t blen);

/* Growable int32 vector used for output ids. */
typedef struct kf_tok_ids {
    int32_t *v;
    size_t n, cap;
    int oom;
} kf_tok_ids_t;
void kf_tok_ids_push(kf_tok_ids_t *ids, int32_t id);

/* Scratch memory for one encode call (never shared between threads). */
typedef struct kf_tok_scratch {
    /* Untyped so that kf_tok_grow() can realloc them through a void **. */
    void *cps;   /* uint32_t code points (KF_UTF8_INVALID for stray bytes) */
    void *offs;  /* uint32_t byte offset of each code point, n + 1 entries */
    void *flags; /* uint8_t kf_unicode_flags() of each */
    size_t cp_cap;
    void *spans_a, *spans_b; /* uint32_t (start, end) code point pairs of the chunks */
    size_t span_cap;
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
    void *buf; /* char */
    size_t buf_cap;
    int oom;
} kf_tok_scratch_t;
void kf_tok_scratch_free(kf_tok_scratch_t *sc);
/* Grows *p (elements of `size` bytes) to hold n; sets sc->oom and returns 0 on failure. */
int kf_tok_grow(kf_tok_scratch_t *sc, void **p, size_t *cap, size_t n, size_t size);

/*
 * Binary heap of *n elements of `size` bytes (at most KF_TOK_HEAP_ELEM_MAX) in sc->heap, the
 * merge queue of both the SentencePiece and the BPE encoder: before(a, b) is true when a must
 * come out first. Inline so each encoder gets a copy specialised to its element type and
 * order. push sets sc->oom (and drops the element) when memory runs out; pop needs *n > 0.
 */
#define KF_TOK_HEAP_ELEM_MAX 32
typedef int (*kf_tok_heap_before_fn)(const void *a, const void *b);

static inline void
kf_tok_heap_push(
    kf_tok_scratch_t *sc, size_t *n, const void *item, size_t size, kf_tok_heap_before_fn before)
{
    if (!kf_tok_grow(sc, &sc->heap, &sc->heap_cap, *n + 1, size))
        return;
    unsigned char *h = sc->heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(item, h + parent * size))
            break;
        memcpy(h + i * size, h + parent * size, size);
        i = parent;
    }
    memcpy(h + i * size, item, size);
}

static inline void
kf_tok_heap_pop(
    kf_tok_scratch_t *sc, size_t *n, void *top, size_t size, kf_tok_heap_before_fn before)
{
    unsigned char *h = sc->heap, last[KF_TOK_HEAP_ELEM_MAX];
    memcpy(top, h, size);
    size_t m = --*n, i = 0;
    memcpy(last, h + m * size, size);
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && before(h + (c + 1) * size, h + c * size))
            c++;
        if (!before(h + c * size, last))
            break;
        memcpy(h + i * size, h + c * size, size);
        i = c;
    }
    if (m > 0)
        memcpy(h + i * size, last, size);
}

/* Pre-tokenizer (tokenizer_pre.c). */
kf_pre_type_t kf_pre_from_name(const char *name, int *out_known);
const char *kf_pre_name(kf_pre_type_t pre);
/* Splits text[0..len) into words. Calls fn(ctx, word, word_len) for each, in order. The
 * split is computed on code points; word boundaries always fall on byte offsets of the
 * input. Returns 0, or -1 on allocation failure. */
int kf_pre_split(kf_pre_type_t pre,
                 const char *text,
                 size_t len,
                 kf_tok_scratch_t *sc,
                 void (*fn)(void *ctx, const char *word, size_t word_len),
                 void *ctx);

/* The two merge algorithms: append the ids of one raw-text fragment to `ids`. */
void kf_tok_bpe_encode(const kf_tokenizer_t *tok,
                       const char *text,
                       size_t len,
                       kf_tok_scratch_t *sc,
                       kf_tok_ids_t *ids);
void kf_tok_spm_encode(const kf_tokenizer_t *tok,
                       const char *text,
                       size_t len,
                       int prefix_space,
                       kf_tok_scratch_t *sc,
                       kf_tok_ids_t *ids);

/* GPT-2 byte <-> unicode mapping. */
uint32_t kf_tok_byte_to_cp(uint8_t b);
/* Byte for a mapped code point, or -1 when cp is not in the mapping. */
int kf_tok_cp_to_byte(uint32_t cp);

#endif /* KF_TOKENIZER_INT_H */
