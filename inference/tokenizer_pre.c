/*
 * tokenizer_pre.c: the pre-tokenizers of byte-level BPE vocabularies, written by hand.
 *
 * A pre-tokenizer is a list of regexes applied in turn, as llama.cpp's unicode_regex_split()
 * does: each regex is searched (leftmost match, alternatives tried in order, with the
 * backtracking a real regex engine would do) inside every chunk produced by the previous one;
 * both the matches and the unmatched text between them become chunks, so the chunks only
 * ever get finer. A regex never sees past the end of its chunk: lookaheads and `$` stop there.
 *
 * The regexes (facts taken from llama.cpp's llama-vocab.cpp) are:
 *   gpt2:    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
 *   llama3:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2:   as llama3 with \p{N} instead of \p{N}{1,3}
 *   deepseek-llm:   [\r\n] / \s?[<cased letters>]+ / \s?[!-/:-~！-／：-～‘-‟　-。]+ / \s+$
 *                   / [一-龥ࠀ-一가-퟿]+ / \p{N}+
 *   deepseek-coder: [\r\n] / \s?\p{L}+ / \s?\p{P}+ / [一-龥ࠀ-一가-퟿]+ / \p{N}
 *   falcon:  [\p{P}\$\+<=>\^~\|`]+ / gpt2 / [0-9][0-9][0-9]
 *   starcoder: \p{N} / gpt2
 *   default: [\p{P}\$\+<=>\^~\|]+ / gpt2 / \p{N}+ / [0-9][0-9][0-9]
 * llama.cpp runs the regexes without \p{..} through std::wregex on text where non-ASCII
 * white space was replaced by U+000B, so their explicit classes never contain such white
 * space; wr_cls() below reproduces that.
 */
#include "tokenizer_int.h"
#include "unicode_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct pre_text {
    const uint32_t *cp;
    const uint8_t *fl;
} pre_text_t;

/* A matcher returns the length of the match at pos (0: none). On failure it may set *skip to
 * the number of following start positions that are known to fail too. */
typedef size_t (*pre_match_fn)(const pre_text_t *t, size_t pos, size_t end, size_t *skip);

#define CAT(t, i)   ((t)->fl[i] & KF_UFLAG_CAT_MASK)
#define IS_L(t, i)  (CAT(t, i) == KF_UCAT_L)
#define IS_N(t, i)  (CAT(t, i) == KF_UCAT_N)
#define IS_P(t, i)  (CAT(t, i) == KF_UCAT_P)
#define IS_WS(t, i) (((t)->fl[i] & KF_UFLAG_WS) != 0)
#define IS_NL(t, i) ((t)->cp[i] == '\r' || (t)->cp[i] == '\n')

static size_t
run_while_L(const pre_text_t *t, size_t p, size_t end)
{
    size_t q = p;
    while (q < end && IS_L(t, q))
        q++;
    return q;
}

static size_t
run_while_ws(const pre_text_t *t, size_t p, size_t end)
{
    size_t q = p;
    while (q < end && IS_WS(t, q))
        q++;
    return q;
}

/* [^\s\p{L}\p{N}] */
static int
is_other(const pre_text_t *t, size_t i)
{
    return !IS_WS(t, i) && !IS_L(t, i) && !IS_N(t, i);
}

static char
ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (c < 0x80 ? (char)c : 0);
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. */
static size_t
contraction(const pre_text_t *t, size_t pos, size_t end, int icase)
{
    if (t->cp[pos] != '\'' || pos + 1 >= end)
        return 0;
    uint32_t c1 = t->cp[pos + 1];
    char a = icase ? ascii_lower(c1) : (c1 < 0x80 ? (char)c1 : 0);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 >= end)
        return 0;
    uint32_t c2 = t->cp[pos + 2];
    char b = icase ? ascii_lower(c2) : (c2 < 0x80 ? (char)c2 : 0);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* \s+(?!\S): all of a white-space run that ends the chunk, else all but its last character
 * (the backtracked match leaves one space to prefix the following word). */
static size_t
ws_not_before_nonws(const pre_text_t *t, size_t pos, size_t end)
{
    size_t r = run_while_ws(t, pos, end);
    size_t n = r - pos;
    if (n == 0)
        return 0;
    if (r == end)
        return n;
    return n >= 2 ? n - 1 : 0;
}

/* The GPT-2 regex. */
static size_t
m_gpt2(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    size_t n = contraction(t, pos, end, 0);
    if (n)
        return n;
    size_t p = pos + (t->cp[pos] == ' ' && pos + 1 < end);
    /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the optional space only helps when the
     * class matches right after it; without it the class would have to match a space. */
    if (IS_L(t, p))
        return run_while_L(t, p, end) - pos;
    if (IS_N(t, p)) {
        size_t q = p;
        while (q < end && IS_N(t, q))
            q++;
        return q - pos;
    }
    if (is_other(t, p)) {
        size_t q = p;
        while (q < end && is_other(t, q))
            q++;
        return q - pos;
    }
    return ws_not_before_nonws(t, pos, end);
}

/* The Llama 3 regex (nmax 3) and the Qwen2 one (nmax 1). */
static size_t
llama3_like(const pre_text_t *t, size_t pos, size_t end, size_t nmax)
{
    size_t n = contraction(t, pos, end, 1);
    if (n)
        return n;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (IS_L(t, pos))
        return run_while_L(t, pos, end) - pos;
    if (!IS_NL(t, pos) && !IS_N(t, pos) && pos + 1 < end && IS_L(t, pos + 1))
        return run_while_L(t, pos + 1, end) - pos;
    /* \p{N}{1,nmax} */
    if (IS_N(t, pos)) {
        size_t q = pos;
        while (q < end && q - pos < nmax && IS_N(t, q))
            q++;
        return q - pos;
    }
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
    size_t p = pos + (t->cp[pos] == ' ' && pos + 1 < end);
    if (is_other(t, p)) {
        size_t q = p;
        while (q < end && is_other(t, q))
            q++;
        while (q < end && IS_NL(t, q))
            q++;
        return q - pos;
    }
    /* \s*[\r\n]+ : up to and including the last line break of the white-space run. */
    size_t r = run_while_ws(t, pos, end);
    if (r == pos)
        return 0;
    for (size_t j = r; j > pos; j--) {
        if (IS_NL(t, j - 1))
            return j - pos;
    }
    /* \s+(?!\S) and then \s+ */
    n = ws_not_before_nonws(t, pos, end);
    return n ? n : r - pos;
}

static size_t
m_llama3(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return llama3_like(t, pos, end, 3);
}

static size_t
m_qwen2(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return llama3_like(t, pos, end, 1);
}

/* [\r\n] */
static size_t
m_newline(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return IS_NL(t, pos) ? 1 : 0;
}

/* \p{N} and \p{N}+ */
static size_t
m_digit(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return IS_N(t, pos) ? 1 : 0;
}

static size_t
m_digits(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    size_t q = pos;
    while (q < end && IS_N(t, q))
        q++;
    return q - pos;
}

/* [0-9][0-9][0-9] */
static size_t
m_ascii3(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    if (pos + 3 > end)
        return 0;
    for (size_t i = pos; i < pos + 3; i++) {
        if (t->cp[i] < '0' || t->cp[i] > '9')
            return 0;
    }
    return 3;
}

/* [\p{P}\$\+<=>\^~\|`]+ (falcon) and the same without the backtick (default). */
static size_t
punct_run(const pre_text_t *t, size_t pos, size_t end, int backtick)
{
    size_t q = pos;
    while (q < end) {
        uint32_t c = t->cp[q];
        if (!(IS_P(t, q) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' ||
              c == '~' || c == '|' || (backtick && c == '`')))
            break;
        q++;
    }
    return q - pos;
}

static size_t
m_punct_falcon(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return punct_run(t, pos, end, 1);
}

static size_t
m_punct_default(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return punct_run(t, pos, end, 0);
}

/* \s?X+ for a class X: the optional white space is taken only if X follows it. */
static size_t
ws_opt_class(const pre_text_t *t, size_t pos, size_t end, int (*cls)(const pre_text_t *, size_t))
{
    size_t p;
    if (IS_WS(t, pos) && pos + 1 < end && cls(t, pos + 1))
        p = pos + 1;
    else if (cls(t, pos))
        p = pos;
    else
        return 0;
    while (p < end && cls(t, p))
        p++;
    return p - pos;
}

/* Explicit classes of the wregex-run patterns see non-ASCII white space as U+000B. */
static int
wr_hidden(const pre_text_t *t, size_t i)
{
    return t->cp[i] > 0x7F && IS_WS(t, i);
}

static int
cls_L(const pre_text_t *t, size_t i)
{
    return IS_L(t, i);
}

static int
cls_P(const pre_text_t *t, size_t i)
{
    return IS_P(t, i);
}

static int
cls_dsllm_letter(const pre_text_t *t, size_t i)
{
    uint32_t c = t->cp[i];
    if (c < 0x80)
        return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return !wr_hidden(t, i) && kf_unicode_in_dsllm_letters(c);
}

/* [!-/:-~！-／：-～‘-‟　-。] */
static int
cls_dsllm_punct(const pre_text_t *t, size_t i)
{
    uint32_t c = t->cp[i];
    if (wr_hidden(t, i))
        return 0;
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) || (c >= 0xFF01 && c <= 0xFF0F) ||
           (c >= 0xFF1A && c <= 0xFF5E) || (c >= 0x2018 && c <= 0x201F) ||
           (c >= 0x3000 && c <= 0x3002);
}

/* [一-龥ࠀ-一가-퟿] */
static int
cls_cjk(const pre_text_t *t, size_t i)
{
    uint32_t c = t->cp[i];
    if (wr_hidden(t, i))
        return 0;
    return (c >= 0x0800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF);
}

static size_t
m_ws_letters(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return ws_opt_class(t, pos, end, cls_L);
}

static size_t
m_ws_punct(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return ws_opt_class(t, pos, end, cls_P);
}

static size_t
m_dsllm_letters(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return ws_opt_class(t, pos, end, cls_dsllm_letter);
}

static size_t
m_dsllm_punct(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    return ws_opt_class(t, pos, end, cls_dsllm_punct);
}

static size_t
m_cjk(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    size_t q = pos;
    while (q < end && cls_cjk(t, q))
        q++;
    return q - pos;
}

/* \s+$ : a white-space run that reaches the end of the chunk. Every start inside a run that
 * stops early fails too, so skip the run (keeps long runs linear). */
static size_t
m_ws_end(const pre_text_t *t, size_t pos, size_t end, size_t *skip)
{
    size_t r = run_while_ws(t, pos, end);
    if (r == end)
        return r - pos;
    if (r > pos)
        *skip = r - pos;
    return 0;
}

typedef struct pre_def {
    const char *name;
    pre_match_fn stages[6];
} pre_def_t;

/* Indexed by kf_pre_type_t. */
static const pre_def_t pre_defs[] = {
    [KF_PRE_DEFAULT] = {"default", {m_punct_default, m_gpt2, m_digits, m_ascii3}},
    [KF_PRE_GPT2] = {"gpt2", {m_gpt2}},
    [KF_PRE_LLAMA3] = {"llama3", {m_llama3}},
    [KF_PRE_QWEN2] = {"qwen2", {m_qwen2}},
    [KF_PRE_DEEPSEEK_LLM] = {"deepseek-llm",
                             {m_newline, m_dsllm_letters, m_dsllm_punct, m_ws_end, m_cjk,
                              m_digits}},
    [KF_PRE_DEEPSEEK_CODER] = {"deepseek-coder",
                               {m_newline, m_ws_letters, m_ws_punct, m_cjk, m_digit}},
    [KF_PRE_FALCON] = {"falcon", {m_punct_falcon, m_gpt2, m_ascii3}},
    [KF_PRE_STARCODER] = {"starcoder", {m_digit, m_gpt2}},
};

/* tokenizer.ggml.pre values and the split they use (names as llama.cpp accepts them). */
static const struct {
    const char *name;
    kf_pre_type_t pre;
} pre_names[] = {
    {"default", KF_PRE_DEFAULT},
    {"llama3", KF_PRE_LLAMA3},
    {"llama-v3", KF_PRE_LLAMA3},
    {"llama-bpe", KF_PRE_LLAMA3},
    {"falcon3", KF_PRE_LLAMA3},
    {"pixtral", KF_PRE_LLAMA3},
    {"dbrx", KF_PRE_LLAMA3},
    {"smaug-bpe", KF_PRE_LLAMA3},
    {"chatglm-bpe", KF_PRE_LLAMA3},
    {"glm4", KF_PRE_LLAMA3},
    {"deepseek-llm", KF_PRE_DEEPSEEK_LLM},
    {"deepseek-coder", KF_PRE_DEEPSEEK_CODER},
    {"falcon", KF_PRE_FALCON},
    {"gpt-2", KF_PRE_GPT2},
    {"phi-2", KF_PRE_GPT2},
    {"mpt", KF_PRE_GPT2},
    {"olmo", KF_PRE_GPT2},
    {"jais", KF_PRE_GPT2},
    {"jina-es", KF_PRE_GPT2},
    {"jina-de", KF_PRE_GPT2},
    {"qwen2", KF_PRE_QWEN2},
    {"deepseek-r1-qwen", KF_PRE_QWEN2},
    {"stablelm2", KF_PRE_QWEN2},
    {"megrez", KF_PRE_QWEN2},
    {"starcoder", KF_PRE_STARCODER},
    {"refact", KF_PRE_STARCODER},
    {"command-r", KF_PRE_STARCODER},
    {"smollm", KF_PRE_STARCODER},
    {"codeshell", KF_PRE_STARCODER},
    {"exaone", KF_PRE_STARCODER},
};

kf_pre_type_t
kf_pre_from_name(const char *name, int *out_known)
{
    for (size_t i = 0; name && i < sizeof(pre_names) / sizeof(pre_names[0]); i++) {
        if (strcmp(name, pre_names[i].name) == 0) {
            *out_known = 1;
            return pre_names[i].pre;
        }
    }
    *out_known = 0;
    return KF_PRE_DEFAULT;
}

const char *
kf_pre_name(kf_pre_type_t pre)
{
    return pre_defs[pre].name;
}

/* Runs one regex over every chunk of `in`, writing the finer chunks to `out`. */
static size_t
apply_stage(const pre_text_t *t, pre_match_fn fn, const uint32_t *in, size_t n_in, uint32_t *out)
{
    size_t n_out = 0;
    for (size_t c = 0; c < n_in; c++) {
        size_t s = in[2 * c], e = in[2 * c + 1];
        size_t pos = s, unmatched = s;
        while (pos < e) {
            size_t skip = 1;
            size_t len = fn(t, pos, e, &skip);
            if (len == 0) {
                pos += skip;
                continue;
            }
            if (pos > unmatched) {
                out[2 * n_out] = (uint32_t)unmatched;
                out[2 * n_out + 1] = (uint32_t)pos;
                n_out++;
            }
            out[2 * n_out] = (uint32_t)pos;
            out[2 * n_out + 1] = (uint32_t)(pos + len);
            n_out++;
            pos += len;
            unmatched = pos;
        }
        if (unmatched < e) {
            out[2 * n_out] = (uint32_t)unmatched;
            out[2 * n_out + 1] = (uint32_t)e;
            n_out++;
        }
    }
    return n_out;
}

int
kf_pre_split(kf_pre_type_t pre,
             const char *text,
             size_t len,
             kf_tok_scratch_t *sc,
             void (*fn)(void *ctx, const char *word, size_t word_len),
             void *ctx)
{
    if (len == 0)
        return 0;
    /* One code point per byte at most, and never more chunks than code points. The three
     * per-code-point arrays (and the two span arrays) share one capacity. */
    if (len + 1 > sc->cp_cap) {
        size_t cap = 0, cap2 = 0, cap3 = 0;
        free(sc->cps), free(sc->offs), free(sc->flags);
        sc->cps = NULL, sc->offs = NULL, sc->flags = NULL, sc->cp_cap = 0;
        if (!kf_tok_grow(sc, &sc->cps, &cap, len + 1, sizeof(uint32_t)) ||
            !kf_tok_grow(sc, &sc->offs, &cap2, len + 1, sizeof(uint32_t)) ||
            !kf_tok_grow(sc, &sc->flags, &cap3, len + 1, sizeof(uint8_t)))
            return -1;
        sc->cp_cap = len + 1;
    }
    if (2 * (len + 1) > sc->span_cap) {
        size_t cap = 0, cap2 = 0;
        free(sc->spans_a), free(sc->spans_b);
        sc->spans_a = NULL, sc->spans_b = NULL, sc->span_cap = 0;
        if (!kf_tok_grow(sc, &sc->spans_a, &cap, 2 * (len + 1), sizeof(uint32_t)) ||
            !kf_tok_grow(sc, &sc->spans_b, &cap2, 2 * (len + 1), sizeof(uint32_t)))
            return -1;
        sc->span_cap = 2 * (len + 1);
    }

    const uint8_t *s = (const uint8_t *)text;
    uint32_t *cps = sc->cps, *offs = sc->offs;
    uint8_t *flags = sc->flags;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t l;
        uint32_t c = kf_utf8_decode(s + i, len - i, &l);
        cps[n] = c;
        offs[n] = (uint32_t)i;
        flags[n] = kf_unicode_flags(c);
        n++;
        i += l;
    }
    offs[n] = (uint32_t)len;

    pre_text_t t = {cps, flags};
    uint32_t *in = sc->spans_a, *out = sc->spans_b;
    in[0] = 0;
    in[1] = (uint32_t)n;
    size_t n_spans = 1;
    const pre_def_t *def = &pre_defs[pre];
    for (size_t k = 0; k < sizeof(def->stages) / sizeof(def->stages[0]) && def->stages[k]; k++) {
        n_spans = apply_stage(&t, def->stages[k], in, n_spans, out);
        uint32_t *tmp = in;
        in = out;
        out = tmp;
    }
    for (size_t c = 0; c < n_spans; c++) {
        size_t b0 = offs[in[2 * c]], b1 = offs[in[2 * c + 1]];
        fn(ctx, text + b0, b1 - b0);
    }
    return 0;
}
