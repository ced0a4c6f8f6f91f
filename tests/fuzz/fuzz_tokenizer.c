/*
 * fuzz_tokenizer: libFuzzer target for kf_tokenizer_encode / _decode on arbitrary bytes.
 *
 * Input: byte 0 picks the tokenizer (low bits) and the flags (bit 6: add_special, bit 7:
 * parse_special); the rest is the text. The tokenizers are one tiny byte-level vocabulary per
 * pre-tokenizer type, a tiny SentencePiece vocabulary, and, when the test data directory is
 * present (KF_TOKENIZER_TESTDATA), the real llama-bpe, qwen2, llama-spm and deepseek-llm
 * vocabularies. Besides "never crash", it requires every id to be in range and, where the
 * tokenizer is lossless (byte-level BPE; SentencePiece without parse_special and without a
 * literal U+2581 in the text), that decoding gives the input back.
 */
#include "kf_gguf.h"
#include "tokenizer_int.h"
#include "unicode_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKS 16

static struct {
    kf_tokenizer_t *tok;
    int lossless_special; /* round trip also holds with parse_special */
    int all_bytes;        /* every byte has a token that decodes to it */
} toks[MAX_TOKS];
static size_t n_toks;

/* Byte-level vocabularies built from Unicode text may lack tokens for bytes that never occur
 * in valid UTF-8 (deepseek-llm has user-defined "ÿ" instead of a byte token for 0xFF). */
static int
has_all_bytes(const kf_tokenizer_t *tok)
{
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids = NULL;
        size_t n = 0, pl = 0;
        int ok = kf_tokenizer_encode(tok, &c, 1, 0, 0, &ids, &n) == KF_OK && n == 1;
        const char *p = ok ? kf_tokenizer_token_to_piece(tok, ids[0], 0, &pl) : NULL;
        ok = ok && pl == 1 && p[0] == c;
        free(ids);
        if (!ok)
            return 0;
    }
    return 1;
}

static void
add_tok(kf_tokenizer_t *tok, int lossless_special)
{
    if (tok && n_toks < MAX_TOKS) {
        toks[n_toks].tok = tok;
        toks[n_toks].lossless_special = lossless_special;
        toks[n_toks].all_bytes = strcmp(kf_tokenizer_model(tok), "gpt2") != 0 || has_all_bytes(tok);
        n_toks++;
    }
}

static int
valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l;
        if (kf_utf8_decode((const uint8_t *)s + i, n - i, &l) == KF_UTF8_INVALID)
            return 0;
        i += l;
    }
    return 1;
}

static kf_tokenizer_t *
tiny_bpe(const char *pre)
{
    static char arena[4096];
    static kf_tok_str_t t[300];
    static int32_t ty[300];
    size_t used = 0;
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) {
        size_t l = kf_utf8_encode(kf_tok_byte_to_cp((uint8_t)b), arena + used);
        t[n] = (kf_tok_str_t){arena + used, l};
        ty[n++] = KF_TOKT_NORMAL;
        used += l;
    }
    static const char *const extra[] = {"he", "ll", "hell", "hello", "\xC4\xA0w", "11", "111"};
    static const kf_tok_str_t merges[] = {{"h e", 3},    {"l l", 3},        {"he ll", 5},
                                          {"hell o", 6}, {"\xC4\xA0 w", 4}, {"1 1", 3},
                                          {"11 1", 4}};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        t[n] = (kf_tok_str_t){extra[i], strlen(extra[i])};
        ty[n++] = KF_TOKT_NORMAL;
    }
    t[n] = (kf_tok_str_t){"<|end|>", 7};
    ty[n++] = KF_TOKT_CONTROL;
    t[n] = (kf_tok_str_t){"<think>", 7};
    ty[n++] = KF_TOKT_USER_DEFINED;
    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    spec.model = "gpt2";
    spec.pre = pre;
    spec.n_vocab = n;
    spec.tokens = t;
    spec.types = ty;
    spec.n_merges = sizeof(merges) / sizeof(merges[0]);
    spec.merges = merges;
    spec.bos = 256;
    spec.add_bos = 1;
    kf_tokenizer_t *tok = NULL;
    kf_tokenizer_build(&spec, &tok, NULL, 0);
    return tok;
}

static kf_tokenizer_t *
tiny_spm(void)
{
    static char arena[4096];
    static kf_tok_str_t t[300];
    static int32_t ty[300];
    static float sc[300];
    size_t used = 0;
    uint32_t n = 0;
    static const char *const head[] = {"<unk>", "<s>", "</s>"};
    static const int32_t head_ty[] = {KF_TOKT_UNKNOWN, KF_TOKT_CONTROL, KF_TOKT_CONTROL};
    for (int i = 0; i < 3; i++) {
        t[n] = (kf_tok_str_t){head[i], strlen(head[i])};
        ty[n++] = head_ty[i];
    }
    for (int b = 0; b < 256; b++) {
        int l = snprintf(arena + used, 8, "<0x%02X>", b);
        t[n] = (kf_tok_str_t){arena + used, (size_t)l};
        ty[n++] = KF_TOKT_BYTE;
        used += (size_t)l;
    }
    static const char *const pieces[] = {"\xE2\x96\x81",
                                         "\xE2\x96\x81h",
                                         "he",
                                         "ll",
                                         "llo",
                                         "\xE2\x96\x81hello",
                                         "h",
                                         "e",
                                         "l",
                                         "o",
                                         "a"};
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        t[n] = (kf_tok_str_t){pieces[i], strlen(pieces[i])};
        sc[n] = -(float)i;
        ty[n++] = KF_TOKT_NORMAL;
    }
    kf_tok_spec_t spec;
    kf_tok_spec_init(&spec);
    spec.model = "llama";
    spec.n_vocab = n;
    spec.tokens = t;
    spec.types = ty;
    spec.scores = sc;
    kf_tokenizer_t *tok = NULL;
    kf_tokenizer_build(&spec, &tok, NULL, 0);
    return tok;
}

static void
load_real(const char *name)
{
#ifdef KF_TOKENIZER_TESTDATA
    char path[1024];
    snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", KF_TOKENIZER_TESTDATA, name);
    kf_gguf_t *gf = NULL;
    if (kf_gguf_open(path, &gf, NULL, 0) != KF_OK)
        return;
    kf_tokenizer_t *tok = NULL;
    if (kf_tokenizer_new(gf, &tok, NULL, 0) == KF_OK)
        add_tok(tok, strcmp(kf_tokenizer_model(tok), "gpt2") == 0);
    kf_gguf_close(gf);
#else
    (void)name;
#endif
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const pres[] = {"default",      "gpt-2",          "llama-bpe", "qwen2",
                                       "deepseek-llm", "deepseek-coder", "falcon",    "starcoder"};
    for (size_t i = 0; i < sizeof(pres) / sizeof(pres[0]); i++)
        add_tok(tiny_bpe(pres[i]), 1);
    add_tok(tiny_spm(), 0);
    load_real("llama-bpe");
    load_real("qwen2");
    load_real("llama-spm");
    load_real("deepseek-llm");
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || n_toks == 0)
        return 0;
    size_t k = (data[0] & 0x3F) % n_toks;
    const kf_tokenizer_t *tok = toks[k].tok;
    int lossless_special = toks[k].lossless_special;
    int add_special = (data[0] >> 6) & 1, parse_special = (data[0] >> 7) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    int32_t *ids = NULL;
    size_t n = 0;
    if (kf_tokenizer_encode(tok, text, len, add_special, parse_special, &ids, &n) != KF_OK)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= kf_tokenizer_n_vocab(tok))
            abort();
    }
    char *out = NULL;
    size_t out_len = 0;
    if (kf_tokenizer_decode(tok, ids, n, add_special, parse_special, &out, &out_len, NULL, 0) !=
        KF_OK)
        abort();
    /* SentencePiece writes spaces as U+2581, so a literal U+2581 in the text comes back as a
     * space: the one input it cannot round-trip. */
    int spm = strcmp(kf_tokenizer_model(tok), "llama") == 0;
    int has_2581 = 0;
    for (size_t i = 0; spm && i + 2 < len && !has_2581; i++)
        has_2581 = memcmp(text + i, "\xE2\x96\x81", 3) == 0;
    int bytes_ok = toks[k].all_bytes || valid_utf8(text, len);
    if ((lossless_special || !parse_special) && !has_2581 && bytes_ok &&
        (out_len != len || memcmp(out, text, len) != 0))
        abort();
    free(out);
    free(ids);
    return 0;
}
