/*
 * test_tokenizer: unit tests of the tokenizer pieces that need no model file: UTF-8 and
 * Unicode classification, the GPT-2 byte mapping, every pre-tokenizer's split, and the BPE
 * and SentencePiece algorithms, special tokens, decode and errors on tiny in-memory
 * vocabularies built through kf_tokenizer_build().
 */
#include "tokenizer_int.h"
#include "unicode_int.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- UTF-8 and Unicode -------------------------------------------------------------- */

static uint32_t
dec(const char *s, size_t n, size_t *len)
{
    return kf_utf8_decode((const uint8_t *)s, n, len);
}

static void
test_utf8(void **state)
{
    (void)state;
    size_t l;
    assert_int_equal(dec("A", 1, &l), 'A');
    assert_int_equal(l, 1);
    assert_int_equal(dec("\xC3\xA9", 2, &l), 0xE9);
    assert_int_equal(l, 2);
    assert_int_equal(dec("\xE2\x96\x81", 3, &l), 0x2581);
    assert_int_equal(l, 3);
    assert_int_equal(dec("\xF0\x9F\xA6\x99", 4, &l), 0x1F999);
    assert_int_equal(l, 4);
    /* Overlong, surrogate, above U+10FFFF, truncated, stray continuation, bad lead. */
    const char *bad[] = {"\xC0\x80", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                         "\xE2\x96", "\x80",         "\xFF"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dec(bad[i], strlen(bad[i]), &l), KF_UTF8_INVALID);
        assert_int_equal(l, 1);
    }
    char out[4];
    uint32_t cps[] = {0x41, 0xE9, 0x2581, 0x1F999, 0x10FFFF};
    for (size_t i = 0; i < sizeof(cps) / sizeof(cps[0]); i++) {
        size_t n = kf_utf8_encode(cps[i], out);
        assert_int_equal(dec(out, n, &l), cps[i]);
        assert_int_equal(l, n);
    }
    assert_int_equal(kf_utf8_lead_len(0x41), 1);
    assert_int_equal(kf_utf8_lead_len(0x80), 1);
    assert_int_equal(kf_utf8_lead_len(0xC3), 2);
    assert_int_equal(kf_utf8_lead_len(0xE2), 3);
    assert_int_equal(kf_utf8_lead_len(0xF0), 4);
}

static void
test_unicode_classes(void **state)
{
    (void)state;
    assert_int_equal(kf_unicode_cat('A'), KF_UCAT_L);
    assert_int_equal(kf_unicode_cat('7'), KF_UCAT_N);
    assert_int_equal(kf_unicode_cat(','), KF_UCAT_P);
    assert_int_equal(kf_unicode_cat('$'), KF_UCAT_S);
    assert_int_equal(kf_unicode_cat(0xE9), KF_UCAT_L);    /* é */
    assert_int_equal(kf_unicode_cat(0x0660), KF_UCAT_N);  /* Arabic-Indic zero */
    assert_int_equal(kf_unicode_cat(0x3002), KF_UCAT_P);  /* ideographic full stop */
    assert_int_equal(kf_unicode_cat(0x1F600), KF_UCAT_S); /* emoji */
    assert_int_equal(kf_unicode_cat(0x0301), KF_UCAT_M);  /* combining acute */
    assert_int_equal(kf_unicode_cat(0x00A0), KF_UCAT_Z);
    assert_int_equal(kf_unicode_cat(0x0378), KF_UCAT_NONE); /* unassigned */
    assert_int_equal(kf_unicode_cat(0xE000), KF_UCAT_C);    /* private use */
    assert_int_equal(kf_unicode_cat(0x6211), KF_UCAT_L);    /* 我 */
    assert_int_equal(kf_unicode_cat(KF_UTF8_INVALID), KF_UCAT_S);
    assert_int_equal(kf_unicode_cat(0x10FFFF), KF_UCAT_NONE);
    assert_true(kf_unicode_is_ws(' ') && kf_unicode_is_ws('\n') && kf_unicode_is_ws(0x3000));
    assert_true(kf_unicode_is_ws(0x85) && kf_unicode_is_ws(0xA0) && kf_unicode_is_ws(0x2029));
    assert_false(kf_unicode_is_ws(0x200B) || kf_unicode_is_ws('x') || kf_unicode_is_ws(0x1C));
    /* The ASCII fast path agrees with the table. */
    for (uint32_t c = 0; c < 0x80; c++) {
        uint8_t f = kf_unicode_flags(c);
        assert_int_equal(f & KF_UFLAG_CAT_MASK, kf_unicode_cat(c));
        assert_int_equal((f & KF_UFLAG_WS) != 0, kf_unicode_is_ws(c) != 0);
    }
    /* deepseek-llm letters: the singleton-decomposition members are the original ones. */
    assert_true(kf_unicode_in_dsllm_letters(0x2126) && kf_unicode_in_dsllm_letters(0x212A));
    assert_true(kf_unicode_in_dsllm_letters(0x1FBE) && kf_unicode_in_dsllm_letters(0x1E943));
    assert_false(kf_unicode_in_dsllm_letters(0x0294) || kf_unicode_in_dsllm_letters(0x4E00));
}

static void
test_byte_mapping(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++)
        assert_int_equal(kf_tok_cp_to_byte(kf_tok_byte_to_cp((uint8_t)b)), b);
    assert_int_equal(kf_tok_byte_to_cp(' '), 0x120);  /* Ġ */
    assert_int_equal(kf_tok_byte_to_cp('\n'), 0x10A); /* Ċ */
    assert_int_equal(kf_tok_byte_to_cp('A'), 'A');
    assert_int_equal(kf_tok_byte_to_cp(0xAD), 0x143);
    assert_int_equal(kf_tok_byte_to_cp(0xFF), 0xFF);
    assert_int_equal(kf_tok_cp_to_byte(0x2581), -1);
    assert_int_equal(kf_tok_cp_to_byte(0xAD), -1);
}

/* ---- pre-tokenizers ----------------------------------------------------------------- */

typedef struct joined {
    char s[512];
    size_t n;
    size_t words;
} joined_t;

static void
join_word(void *ctx, const char *w, size_t len)
{
    joined_t *j = ctx;
    if (j->words++ > 0)
        j->s[j->n++] = '|';
    memcpy(j->s + j->n, w, len);
    j->n += len;
    j->s[j->n] = '\0';
}

static void
expect_split(kf_pre_type_t pre, const char *text, const char *want)
{
    joined_t j = {.n = 0};
    kf_tok_scratch_t sc = {0};
    assert_int_equal(kf_pre_split(pre, text, strlen(text), &sc, join_word, &j), 0);
    kf_tok_scratch_free(&sc);
    if (strcmp(j.s, want) != 0)
        fail_msg("%s split of '%s': got '%s', want '%s'", kf_pre_name(pre), text, j.s, want);
}

static void
test_pre_split(void **state)
{
    (void)state;
    expect_split(KF_PRE_GPT2, "Hello world", "Hello| world");
    expect_split(KF_PRE_GPT2, "I'm  here!!", "I|'m| | here|!!");
    expect_split(KF_PRE_GPT2, "a  ", "a|  ");
    expect_split(KF_PRE_GPT2, "I'VE 12", "I|'|VE| 12");
    expect_split(KF_PRE_GPT2,
                 "a\xff"
                 "b",
                 "a|\xff|b");

    expect_split(KF_PRE_LLAMA3, "333333333", "333|333|333");
    expect_split(KF_PRE_LLAMA3, "Hello\n\nworld", "Hello|\n\n|world");
    expect_split(KF_PRE_LLAMA3, "I'VE been", "I|'VE| been");
    expect_split(KF_PRE_LLAMA3, " (x", " (|x");
    expect_split(KF_PRE_LLAMA3, "  \n  x", "  \n| | x");
    expect_split(KF_PRE_LLAMA3, "a   ", "a|   ");
    expect_split(KF_PRE_LLAMA3, "!!\n\nb", "!!\n\n|b");

    expect_split(KF_PRE_QWEN2, "x1234", "x|1|2|3|4");
    expect_split(KF_PRE_DEEPSEEK_CODER, "abc123\nd", "abc|1|2|3|\n|d");
    expect_split(KF_PRE_DEEPSEEK_LLM, "Hello 123", "Hello| |123");
    expect_split(KF_PRE_DEEPSEEK_LLM, "a, b  ", "a|,| b|  ");
    expect_split(KF_PRE_DEEPSEEK_LLM,
                 "\xE6\x88\x91\xE6\x83\xB3"
                 "ab",
                 "\xE6\x88\x91\xE6\x83\xB3|ab");
    expect_split(KF_PRE_FALCON, "a,b 1234", "a|,|b| |123|4");
    expect_split(KF_PRE_DEFAULT, "12345", "123|45");
    expect_split(KF_PRE_STARCODER, "x12", "x|1|2");

    int known;
    assert_int_equal(kf_pre_from_name("deepseek-r1-qwen", &known), KF_PRE_QWEN2);
    assert_true(known);
    assert_int_equal(kf_pre_from_name("llama-bpe", &known), KF_PRE_LLAMA3);
    assert_int_equal(kf_pre_from_name("nonsense", &known), KF_PRE_DEFAULT);
    assert_false(known);
}

/* Words must tile the input exactly, in order. */
typedef struct tiling {
    const char *base;
    size_t next;
    size_t words;
    int ok;
} tiling_t;

static void
tile_word(void *ctx, const char *w, size_t len)
{
    tiling_t *t = ctx;
    if (w != t->base + t->next || len == 0)
        t->ok = 0;
    t->next += len;
    t->words++;
}

/* Long white-space runs before a digit stay linear (\s+$ of deepseek-llm skips the run). */
static void
test_pre_long_runs(void **state)
{
    (void)state;
    size_t n = 200000;
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, ' ', n);
    s[n] = '1';
    for (int p = KF_PRE_DEFAULT; p <= KF_PRE_STARCODER; p++) {
        tiling_t t = {s, 0, 0, 1};
        kf_tok_scratch_t sc = {0};
        assert_int_equal(kf_pre_split((kf_pre_type_t)p, s, n + 1, &sc, tile_word, &t), 0);
        kf_tok_scratch_free(&sc);
        assert_true(t.ok);
        assert_int_equal(t.next, n + 1);
        assert_true(t.words >= 2);
    }
    free(s);
}

/* ---- tiny vocabularies --------------------------------------------------------------- */

typedef struct vocab {
    kf_tok_str_t tok[600];
    int32_t type[600];
    float score[600];
    uint32_t n;
    kf_tok_str_t merge[32];
    uint32_t n_merges;
    char arena[8192];
    size_t used;
} vocab_t;

static int32_t
add_tok(vocab_t *v, const char *text, size_t len, int32_t type, float score)
{
    memcpy(v->arena + v->used, text, len);
    v->tok[v->n] = (kf_tok_str_t){v->arena + v->used, len};
    v->used += len;
    v->type[v->n] = type;
    v->score[v->n] = score;
    return (int32_t)v->n++;
}

static int32_t
add(vocab_t *v, const char *text, int32_t type, float score)
{
    return add_tok(v, text, strlen(text), type, score);
}

static void
add_merge(vocab_t *v, const char *m)
{
    v->merge[v->n_merges++] = (kf_tok_str_t){m, strlen(m)};
}

/* Byte-level vocabulary: the 256 byte characters, a few merges and special tokens. */
static kf_tokenizer_t *
make_bpe(vocab_t *v, const char *const *merges)
{
    memset(v, 0, sizeof(*v));
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t l = kf_utf8_encode(kf_tok_byte_to_cp((uint8_t)b), u);
        add_tok(v, u, l, KF_TOKT_NORMAL, 0);
    }
    for (const char *const *m = merges; *m; m++) {
        add_merge(v, *m);
        /* The merged token: the merge text without its separating space. */
        const char *sp = strchr(*m + 1, ' ');
        char buf[64];
        size_t a = (size_t)(sp - *m);
        memcpy(buf, *m, a);
        strcpy(buf + a, sp + 1);
        add(v, buf, KF_TOKT_NORMAL, 0);
    }
    add(v, "<|end|>", KF_TOKT_CONTROL, 0);
    add(v, "<think>", KF_TOKT_USER_DEFINED, 0);
    add(v, "<|endofprompt|>", KF_TOKT_CONTROL, 0);
    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    spec.model = "gpt2";
    spec.pre = "gpt-2";
    spec.n_vocab = v->n;
    spec.tokens = v->tok;
    spec.types = v->type;
    spec.n_merges = v->n_merges;
    spec.merges = v->merge;
    spec.eos = 256;
    kf_tokenizer_t *tok = NULL;
    char err[128];
    assert_int_equal(kf_tokenizer_build(&spec, &tok, err, sizeof(err)), KF_OK);
    return tok;
}

static int32_t
find(const kf_tokenizer_t *tok, const char *s)
{
    int32_t id = kf_tokenizer_find_token(tok, s, strlen(s));
    assert_true(id >= 0);
    return id;
}

static void
expect_ids(const kf_tokenizer_t *tok,
           const char *text,
           int add_special,
           int parse_special,
           const int32_t *want,
           size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(
        kf_tokenizer_encode(tok, text, strlen(text), add_special, parse_special, &ids, &n), KF_OK);
    if (n != n_want || (n && memcmp(ids, want, n * sizeof(int32_t)) != 0)) {
        char got[256] = "";
        for (size_t i = 0; i < n && strlen(got) < 200; i++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), " %d", ids[i]);
        fail_msg("encode('%s'): got [%s ] (%zu ids), want %zu ids", text, got, n, n_want);
    }
    free(ids);
}

static void
expect_roundtrip(const kf_tokenizer_t *tok, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(kf_tokenizer_encode(tok, text, len, 0, 0, &ids, &n), KF_OK);
    char *s = NULL;
    size_t sl = 0;
    assert_int_equal(kf_tokenizer_decode(tok, ids, n, 0, 0, &s, &sl, NULL, 0), KF_OK);
    assert_int_equal(sl, len);
    assert_memory_equal(s, text, len);
    free(s);
    free(ids);
}

static void
test_bpe_merges(void **state)
{
    (void)state;
    vocab_t *v = malloc(sizeof(*v));
    assert_non_null(v);
    static const char *const merges[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", NULL};
    kf_tokenizer_t *tok = make_bpe(v, merges);
    assert_string_equal(kf_tokenizer_model(tok), "gpt2");
    assert_string_equal(kf_tokenizer_pre(tok), "gpt2");

    int32_t hello = find(tok, "hello"), gw = find(tok, "\xC4\xA0w");
    int32_t want1[] = {hello, gw, find(tok, "o"), find(tok, "r"), find(tok, "l"), find(tok, "d")};
    expect_ids(tok, "hello world", 0, 0, want1, 6);

    /* Control token text is split unless parse_special; user-defined always matches. */
    int32_t end = find(tok, "<|end|>"), think = find(tok, "<think>");
    int32_t want2[] = {hello, end};
    expect_ids(tok, "hello<|end|>", 0, 1, want2, 2);
    int32_t want3[] = {think, hello};
    expect_ids(tok, "<think>hello", 0, 0, want3, 2);
    /* Longest special first: "<|end|>" never eats the start of "<|endofprompt|>". */
    int32_t eop = find(tok, "<|endofprompt|>");
    int32_t want3b[] = {find(tok, "a"), eop, hello, end, end, think};
    expect_ids(tok, "a<|endofprompt|>hello<|end|><|end|><think>", 0, 1, want3b, 6);
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(kf_tokenizer_encode(tok, "hello<|end|>", 12, 0, 0, &ids, &n), KF_OK);
    assert_true(n > 2);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(ids[i], end);
    free(ids);

    /* Names: <|end|> is an end-of-generation token by text; EOS (256) too. */
    assert_true(kf_tokenizer_is_eog(tok, end));
    assert_true(kf_tokenizer_is_eog(tok, 256));
    assert_false(kf_tokenizer_is_eog(tok, hello));
    assert_int_equal(kf_tokenizer_eot(tok), end);
    assert_int_equal(kf_tokenizer_bos(tok), -1);
    assert_false(kf_tokenizer_add_bos(tok));
    assert_true(kf_tokenizer_is_special(tok, end));
    assert_false(kf_tokenizer_is_special(tok, think));

    /* Pieces: control text only when asked; byte-level decoding of Ġ. */
    size_t pl;
    const char *p = kf_tokenizer_token_to_piece(tok, end, 0, &pl);
    assert_non_null(p);
    assert_int_equal(pl, 0);
    p = kf_tokenizer_token_to_piece(tok, end, 1, &pl);
    assert_int_equal(pl, 7);
    assert_memory_equal(p, "<|end|>", 7);
    p = kf_tokenizer_token_to_piece(tok, gw, 0, &pl);
    assert_int_equal(pl, 2);
    assert_memory_equal(p, " w", 2);
    assert_null(kf_tokenizer_token_to_piece(tok, -1, 0, &pl));
    assert_null(kf_tokenizer_token_to_piece(tok, (int32_t)kf_tokenizer_n_vocab(tok), 0, &pl));

    /* Any bytes survive a round trip. */
    expect_roundtrip(tok, "hello world", 11);
    expect_roundtrip(tok, "\x00\xff\xfe \xe2\x82 \xf0\x9f\xa6\x99\n\t<think>", 20);

    /* Caller buffer: too small gives KF_ERR_LIMIT with the needed count. */
    int32_t buf[3];
    size_t need = 0;
    assert_int_equal(kf_tokenizer_encode_buf(tok, "hello world", 11, 0, 0, buf, 3, &need),
                     KF_ERR_LIMIT);
    assert_int_equal(need, 6);
    assert_int_equal(buf[0], hello);
    int32_t big[16];
    assert_int_equal(kf_tokenizer_encode_buf(tok, "hello world", 11, 0, 0, big, 16, &need), KF_OK);
    assert_int_equal(need, 6);

    /* Errors. */
    assert_int_equal(kf_tokenizer_encode(tok, NULL, 3, 0, 0, &ids, &n), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_tokenizer_encode(tok, "", 0, 0, 0, &ids, &n), KF_OK);
    assert_int_equal(n, 0);
    free(ids);
    char err[128] = "";
    char *s = NULL;
    size_t sl;
    int32_t bad[] = {hello, 999999};
    assert_int_equal(kf_tokenizer_decode(tok, bad, 2, 0, 0, &s, &sl, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "999999"));
    assert_null(s);
    kf_tokenizer_destroy(tok);
    free(v);
}

/* Merge priority is the rank, not the position in the word. */
static void
test_bpe_rank_order(void **state)
{
    (void)state;
    vocab_t *v = malloc(sizeof(*v));
    assert_non_null(v);
    static const char *const m1[] = {"b c", "a b", NULL};
    kf_tokenizer_t *tok = make_bpe(v, m1);
    int32_t want1[] = {find(tok, "a"), find(tok, "bc")};
    expect_ids(tok, "abc", 0, 0, want1, 2);
    kf_tokenizer_destroy(tok);
    static const char *const m2[] = {"a b", "b c", NULL};
    tok = make_bpe(v, m2);
    int32_t want2[] = {find(tok, "ab"), find(tok, "c")};
    expect_ids(tok, "abc", 0, 0, want2, 2);
    /* Equal pairs: leftmost first ("aaa" -> "aa" "a"). */
    kf_tokenizer_destroy(tok);
    static const char *const m3[] = {"a a", NULL};
    tok = make_bpe(v, m3);
    int32_t want3[] = {find(tok, "aa"), find(tok, "a")};
    expect_ids(tok, "aaa", 0, 0, want3, 2);
    kf_tokenizer_destroy(tok);
    free(v);
}

/* SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, a few scored pieces. */
static kf_tokenizer_t *
make_spm(vocab_t *v, int add_eos)
{
    memset(v, 0, sizeof(*v));
    add(v, "<unk>", KF_TOKT_UNKNOWN, 0);
    add(v, "<s>", KF_TOKT_CONTROL, 0);
    add(v, "</s>", KF_TOKT_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        add(v, hex, KF_TOKT_BYTE, 0);
    }
    add(v, "\xE2\x96\x81", KF_TOKT_NORMAL, -1.0f);  /* ▁ */
    add(v, "\xE2\x96\x81h", KF_TOKT_NORMAL, -3.0f); /* ▁h */
    add(v, "he", KF_TOKT_NORMAL, -2.0f);
    add(v, "\xE2\x96\x81he", KF_TOKT_NORMAL, -2.5f); /* ▁he */
    add(v, "ll", KF_TOKT_NORMAL, -2.0f);
    add(v, "llo", KF_TOKT_NORMAL, -2.2f);
    add(v, "\xE2\x96\x81hello", KF_TOKT_NORMAL, -1.5f); /* ▁hello */
    add(v, "\xE2\x96\x81hellollo", KF_TOKT_NORMAL, -9.0f);
    const char *letters[] = {"h", "e", "l", "o", "w", "r", "d", "a", "<", ">", "s", NULL};
    for (const char **l = letters; *l; l++)
        add(v, *l, KF_TOKT_NORMAL, -5.0f);
    add(v, "aa", KF_TOKT_NORMAL, -1.0f);
    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    spec.model = "llama";
    spec.n_vocab = v->n;
    spec.tokens = v->tok;
    spec.types = v->type;
    spec.scores = v->score;
    spec.add_eos = add_eos;
    kf_tokenizer_t *tok = NULL;
    char err[128];
    assert_int_equal(kf_tokenizer_build(&spec, &tok, err, sizeof(err)), KF_OK);
    return tok;
}

static void
test_spm(void **state)
{
    (void)state;
    vocab_t *v = malloc(sizeof(*v));
    assert_non_null(v);
    kf_tokenizer_t *tok = make_spm(v, -1);
    assert_string_equal(kf_tokenizer_model(tok), "llama");
    assert_int_equal(kf_tokenizer_bos(tok), 1);
    assert_int_equal(kf_tokenizer_eos(tok), 2);
    assert_int_equal(kf_tokenizer_unk(tok), 0);
    assert_true(kf_tokenizer_add_bos(tok));
    int32_t hello = find(tok, "\xE2\x96\x81hello");

    int32_t want1[] = {hello};
    expect_ids(tok, "hello", 0, 0, want1, 1);
    int32_t want2[] = {1, hello};
    expect_ids(tok, "hello", 1, 0, want2, 2);
    /* é has no piece: its two bytes fall back to <0xC3> <0xA9> (ids 3 + byte). */
    int32_t want3[] = {find(tok, "\xE2\x96\x81"), 3 + 0xC3, 3 + 0xA9};
    expect_ids(tok, "\xC3\xA9", 0, 0, want3, 3);
    /* "<s>" in text is never BOS without parse_special, and is with it. */
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(kf_tokenizer_encode(tok, "<s>", 3, 0, 0, &ids, &n), KF_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(ids[i], 1);
    free(ids);
    int32_t want4[] = {1};
    expect_ids(tok, "<s>", 0, 1, want4, 1);
    /* After a special token the next text gets the prefix space again. */
    int32_t want5[] = {1, hello};
    expect_ids(tok, "<s>hello", 0, 1, want5, 2);
    /* Equal scores: leftmost pair first ("aaa" -> "▁" "aa" "a"). */
    int32_t want6[] = {find(tok, "\xE2\x96\x81"), find(tok, "aa"), find(tok, "a")};
    expect_ids(tok, "aaa", 0, 0, want6, 3);

    /* Decoding drops the prefixed space, also after a removed or silent BOS. */
    char *s = NULL;
    size_t sl = 0;
    int32_t d1[] = {1, hello, hello};
    assert_int_equal(kf_tokenizer_decode(tok, d1, 3, 1, 0, &s, &sl, NULL, 0), KF_OK);
    assert_string_equal(s, "hello hello");
    free(s);
    assert_int_equal(kf_tokenizer_decode(tok, d1, 3, 0, 0, &s, &sl, NULL, 0), KF_OK);
    assert_string_equal(s, "hello hello");
    free(s);
    assert_int_equal(kf_tokenizer_decode(tok, d1, 3, 0, 1, &s, &sl, NULL, 0), KF_OK);
    assert_string_equal(s, "<s> hello hello");
    free(s);

    expect_roundtrip(tok, " hello  world\n", 14);
    expect_roundtrip(tok, "\xff\x00\xe2\x96", 4);
    kf_tokenizer_destroy(tok);

    tok = make_spm(v, 1);
    int32_t want7[] = {1, hello, 2};
    expect_ids(tok, "hello", 1, 0, want7, 3);
    kf_tokenizer_destroy(tok);
    free(v);
}

static void
test_build_errors(void **state)
{
    (void)state;
    kf_tok_str_t toks[2] = {{"a", 1}, {"b", 1}};
    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    spec.model = "bert";
    spec.n_vocab = 2;
    spec.tokens = toks;
    kf_tokenizer_t *tok = (kf_tokenizer_t *)1;
    char err[128] = "";
    assert_int_equal(kf_tokenizer_build(&spec, &tok, err, sizeof(err)), KF_ERR_UNSUPPORTED);
    assert_null(tok);
    assert_non_null(strstr(err, "bert"));
    spec.model = "gpt2";
    spec.n_vocab = 0;
    assert_int_equal(kf_tokenizer_build(&spec, &tok, err, sizeof(err)), KF_ERR_FORMAT);
    /* Out-of-range special ids are ignored, empty tokens get a placeholder text. */
    kf_tok_str_t toks2[3] = {{"a", 1}, {"", 0}, {"b", 1}};
    spec.n_vocab = 3;
    spec.tokens = toks2;
    spec.eos = 99;
    assert_int_equal(kf_tokenizer_build(&spec, &tok, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_tokenizer_eos(tok), -1);
    size_t l;
    assert_string_equal(kf_tokenizer_token_text(tok, 1, &l), "[EMPTY_1]");
    assert_int_equal(kf_tokenizer_find_token(tok, "", 0), -1);
    kf_tokenizer_destroy(tok);
    kf_tokenizer_destroy(NULL);
}

/* Many threads share one tokenizer and must all get the single-threaded answer. */
typedef struct thr {
    const kf_tokenizer_t *tok;
    const int32_t *want;
    size_t n_want;
    int ok;
} thr_t;

static const char thr_text[] = "hello world <think> hello<|end|> \xC3\xA9\xF0\x9F\xA6\x99 again";

static void *
thr_main(void *arg)
{
    thr_t *t = arg;
    t->ok = 1;
    for (int i = 0; i < 200; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (kf_tokenizer_encode(t->tok, thr_text, sizeof(thr_text) - 1, 1, 1, &ids, &n) != KF_OK ||
            n != t->n_want || memcmp(ids, t->want, n * sizeof(int32_t)) != 0)
            t->ok = 0;
        free(ids);
    }
    return NULL;
}

static void
test_threads(void **state)
{
    (void)state;
    vocab_t *v = malloc(sizeof(*v));
    assert_non_null(v);
    static const char *const merges[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", NULL};
    kf_tokenizer_t *tok = make_bpe(v, merges);
    int32_t *want = NULL;
    size_t n_want = 0;
    assert_int_equal(kf_tokenizer_encode(tok, thr_text, sizeof(thr_text) - 1, 1, 1, &want, &n_want),
                     KF_OK);
    pthread_t th[4];
    thr_t t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (thr_t){tok, want, n_want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(t[i].ok);
    }
    free(want);
    kf_tokenizer_destroy(tok);
    free(v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),           cmocka_unit_test(test_unicode_classes),
        cmocka_unit_test(test_byte_mapping),   cmocka_unit_test(test_pre_split),
        cmocka_unit_test(test_pre_long_runs),  cmocka_unit_test(test_bpe_merges),
        cmocka_unit_test(test_bpe_rank_order), cmocka_unit_test(test_spm),
        cmocka_unit_test(test_build_errors),   cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
