/*
 * test_tokenizer_vocab: checks kf_tokenizer against llama.cpp's tokenizer test vectors.
 *
 *   test_tokenizer_vocab DATA_DIR NAME [GGUF_NAME]
 *
 * Loads DATA_DIR/ggml-vocab-GGUF_NAME.gguf (GGUF_NAME defaults to NAME), tokenizes every
 * input of ggml-vocab-NAME.gguf.inp with add_special=0 and parse_special=0 (how the expected
 * ids were produced, see the README there) and requires exactly the ids of the .out file.
 * It also requires decode(encode(x)) == x for every input, checks the end-of-generation
 * tokens of the vocabulary, BOS/EOS handling of add_special, and that control-token text is
 * only parsed on request. Exits 77 (skip) when the data directory is missing.
 */
#include "kf_gguf.h"
#include "kf_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
        }                                                                   \
    } while (0)

static char *
read_file(const char *path, size_t *out_len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[n] = '\0';
        *out_len = (size_t)n;
    }
    return buf;
}

/* Expected end-of-generation tokens per vocabulary: text and id (-1: only "is EOG"). */
typedef struct eog_case {
    const char *vocab;
    const char *text;
    int32_t id;
    int eog;
} eog_case_t;

static const eog_case_t eog_cases[] = {
    {"llama-spm", "</s>", 2, 1},
    {"llama-spm", "<s>", 1, 0},
    {"phi-3", "<|endoftext|>", 32000, 1},
    {"phi-3", "<|end|>", 32007, 1},
    {"phi-3", "<|user|>", 32010, 0},
    {"llama-bpe", "<|end_of_text|>", 128001, 1},
    {"llama-bpe", "<|eot_id|>", 128009, 1},
    {"llama-bpe", "<|reserved_special_token_4|>", 128008, 0},
    {"llama-bpe", "<|begin_of_text|>", 128000, 0},
    {"llama-bpe", "<|start_header_id|>", 128006, 0},
    {"qwen2", "<|im_end|>", 151645, 1},
    {"qwen2", "<|endoftext|>", 151643, 1},
    {"qwen2", "<|im_start|>", 151644, 0},
    {"deepseek-r1-qwen", "<|im_end|>", 151645, 1},
    {"deepseek-llm",
     "<\xEF\xBD\x9C"
     "end\xE2\x96\x81"
     "of\xE2\x96\x81"
     "sentence\xEF\xBD\x9C>",
     100001, 1},
    {"deepseek-llm",
     "<\xEF\xBD\x9C"
     "begin\xE2\x96\x81"
     "of\xE2\x96\x81"
     "sentence\xEF\xBD\x9C>",
     100000, 0},
    {"deepseek-coder",
     "<\xEF\xBD\x9C"
     "end\xE2\x96\x81"
     "of\xE2\x96\x81"
     "sentence\xEF\xBD\x9C>",
     32014, 1},
    {"gpt-2", "<|endoftext|>", 50256, 1},
    {"falcon", "<|endoftext|>", 11, 1},
};

/* Chat-template text with parse_special (ids from llama.cpp's rules; phi-3 special tokens
 * swallow the white space after them). */
typedef struct special_case {
    const char *vocab;
    const char *text;
    int add_special;
    int32_t ids[12];
    size_t n;
} special_case_t;

static const special_case_t special_cases[] = {
    {"qwen2", "<|im_start|>user\nHello<|im_end|>\n", 0, {151644, 872, 198, 9707, 151645, 198}, 6},
    {"deepseek-r1-qwen",
     "<|im_start|>user\nHello<|im_end|>\n",
     0,
     {151644, 872, 198, 9707, 151645, 198},
     6},
    {"llama-bpe",
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
     1,
     {128000, 128006, 882, 128007, 271, 9906, 128009},
     7},
    {"phi-3", "<|user|>\nHello<|end|>\n<|assistant|>", 1, {1, 32010, 15043, 32007, 32001}, 5},
    {"llama-spm",
     "<s>[INST] Hi [/INST]",
     0,
     {1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962},
     9},
    {"deepseek-llm",
     "<\xEF\xBD\x9C"
     "begin\xE2\x96\x81"
     "of\xE2\x96\x81"
     "sentence\xEF\xBD\x9C>User: Hi\n\nAssistant:",
     0,
     {100000, 5726, 25, 11598, 185, 185, 77398, 25},
     8},
};

static void
check_special_cases(const kf_tokenizer_t *tok, const char *name)
{
    for (size_t i = 0; i < sizeof(special_cases) / sizeof(special_cases[0]); i++) {
        const special_case_t *c = &special_cases[i];
        if (strcmp(c->vocab, name) != 0)
            continue;
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(kf_tokenizer_encode(tok, c->text, strlen(c->text), c->add_special, 1, &ids, &n) ==
                  KF_OK,
              "encode");
        int same = n == c->n && memcmp(ids, c->ids, n * sizeof(int32_t)) == 0;
        CHECK(same, "chat text '%s' gave %zu ids (want %zu)", c->text, n, c->n);
        if (!same) {
            for (size_t k = 0; k < n; k++)
                fprintf(stderr, " %d", ids[k]);
            fputc('\n', stderr);
        }
        free(ids);
    }
}

static void
check_eog(const kf_tokenizer_t *tok, const char *name)
{
    int32_t eos = kf_tokenizer_eos(tok);
    CHECK(eos >= 0 && kf_tokenizer_is_eog(tok, eos), "eos %d must be EOG", eos);
    CHECK(!kf_tokenizer_is_eog(tok, -1) &&
              !kf_tokenizer_is_eog(tok, (int32_t)kf_tokenizer_n_vocab(tok)),
          "out-of-range ids are not EOG");
    int n = 0;
    for (size_t i = 0; i < sizeof(eog_cases) / sizeof(eog_cases[0]); i++) {
        const eog_case_t *c = &eog_cases[i];
        if (strcmp(c->vocab, name) != 0)
            continue;
        n++;
        int32_t id = kf_tokenizer_find_token(tok, c->text, strlen(c->text));
        CHECK(id == c->id, "find_token(%s) = %d, want %d", c->text, id, c->id);
        CHECK(kf_tokenizer_is_eog(tok, c->id) == c->eog, "is_eog(%s) != %d", c->text, c->eog);
        size_t tl;
        const char *t = kf_tokenizer_token_text(tok, c->id, &tl);
        CHECK(t && tl == strlen(c->text) && memcmp(t, c->text, tl) == 0, "token_text(%d)", c->id);
    }
    CHECK(n > 0, "no EOG expectations for vocab %s", name);
}

/* BOS/EOS and parse_special behaviour on a short text. */
static void
check_special(const kf_tokenizer_t *tok)
{
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    const char *txt = "Hello world";
    CHECK(kf_tokenizer_encode(tok, txt, strlen(txt), 0, 0, &a, &na) == KF_OK, "encode");
    CHECK(kf_tokenizer_encode(tok, txt, strlen(txt), 1, 0, &b, &nb) == KF_OK, "encode special");
    size_t extra = (kf_tokenizer_add_bos(tok) && kf_tokenizer_bos(tok) >= 0) +
                   (kf_tokenizer_add_eos(tok) && kf_tokenizer_eos(tok) >= 0);
    CHECK(nb == na + extra, "add_special adds %zu tokens, got %zu -> %zu", extra, na, nb);
    if (kf_tokenizer_add_bos(tok) && nb > 0)
        CHECK(b[0] == kf_tokenizer_bos(tok), "first token %d is not BOS", b[0]);
    /* Decoding with remove_special gives the text back. */
    char *s = NULL;
    size_t sl = 0;
    CHECK(kf_tokenizer_decode(tok, b, nb, 1, 0, &s, &sl, NULL, 0) == KF_OK, "decode");
    CHECK(s && sl == strlen(txt) && memcmp(s, txt, sl) == 0, "decode(add_special) = '%s'",
          s ? s : "(null)");
    free(s);
    free(a);
    free(b);

    /* The EOS text is one token only when parse_special is set. */
    int32_t eos = kf_tokenizer_eos(tok);
    size_t el;
    const char *et = kf_tokenizer_token_text(tok, eos, &el);
    CHECK(et != NULL, "eos text");
    if (et && kf_tokenizer_is_special(tok, eos)) {
        CHECK(kf_tokenizer_encode(tok, et, el, 0, 1, &a, &na) == KF_OK, "encode eos text");
        CHECK(na == 1 && a[0] == eos, "parse_special: '%s' -> %zu tokens", et, na);
        free(a);
        CHECK(kf_tokenizer_encode(tok, et, el, 0, 0, &a, &na) == KF_OK, "encode eos text");
        CHECK(na > 1, "without parse_special '%s' must be split, got %zu tokens", et, na);
        for (size_t i = 0; i < na; i++)
            CHECK(a[i] != eos, "eos produced from plain text");
        free(a);
    }
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_DIR NAME [GGUF_NAME]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *name = argv[2], *gname = argc > 3 ? argv[3] : argv[2];
    char path[4096], inp_path[4096], out_path[4096];
    snprintf(path, sizeof(path), "%s/ggml-vocab-%s.gguf", dir, gname);
    snprintf(inp_path, sizeof(inp_path), "%s/ggml-vocab-%s.gguf.inp", dir, name);
    snprintf(out_path, sizeof(out_path), "%s/ggml-vocab-%s.gguf.out", dir, name);

    size_t inp_len = 0, out_len = 0;
    char *inp = read_file(inp_path, &inp_len);
    char *outs = read_file(out_path, &out_len);
    if (!inp || !outs) {
        printf("SKIP: test data %s / %s not found\n", inp_path, out_path);
        return 77;
    }
    char err[256] = "";
    kf_gguf_t *gf = NULL;
    if (kf_gguf_open(path, &gf, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "FAIL: cannot open %s: %s\n", path, err);
        return 1;
    }
    kf_tokenizer_t *tok = NULL;
    if (kf_tokenizer_new(gf, &tok, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "FAIL: tokenizer for %s: %s\n", path, err);
        return 1;
    }
    kf_gguf_close(gf); /* the tokenizer must not need it any more */

    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof(sep) - 1;
    char *ip = inp, *iend = inp + inp_len;
    char *op = outs, *oend = outs + out_len;
    int n_inputs = 0, n_pass = 0, n_roundtrip = 0;
    while (ip < iend) {
        char *s = strstr(ip, sep);
        size_t len = s ? (size_t)(s - ip) : (size_t)(iend - ip);
        char *nl = memchr(op, '\n', (size_t)(oend - op));
        if (!nl) {
            CHECK(0, "missing expected line for input %d", n_inputs);
            break;
        }
        int32_t want[4096];
        size_t n_want = 0;
        for (char *q = op; q < nl && n_want < 4096;) {
            while (q < nl && *q == ' ')
                q++;
            if (q >= nl)
                break;
            want[n_want++] = (int32_t)strtol(q, &q, 10);
        }
        int32_t *got = NULL;
        size_t n_got = 0;
        kf_err_t e = kf_tokenizer_encode(tok, ip, len, 0, 0, &got, &n_got);
        int ok = e == KF_OK && n_got == n_want &&
                 (n_got == 0 || memcmp(got, want, n_got * sizeof(int32_t)) == 0);
        if (ok) {
            n_pass++;
        } else {
            failures++;
            fprintf(stderr, "FAIL %s input %d '%.*s'\n  want:", name, n_inputs, (int)len, ip);
            for (size_t i = 0; i < n_want; i++)
                fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n  got: ");
            for (size_t i = 0; i < n_got; i++)
                fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n");
        }
        /* Lossless round trip. */
        char *text = NULL;
        size_t tl = 0;
        if (e == KF_OK &&
            kf_tokenizer_decode(tok, got, n_got, 0, 0, &text, &tl, err, sizeof(err)) == KF_OK &&
            tl == len && memcmp(text, ip, len) == 0) {
            n_roundtrip++;
        } else {
            failures++;
            fprintf(stderr, "FAIL %s round trip of input %d '%.*s' gave '%s'\n", name, n_inputs,
                    (int)len, ip, text ? text : "(error)");
        }
        free(text);
        free(got);
        n_inputs++;
        op = nl + 1;
        if (!s)
            break;
        ip = s + sep_len;
    }
    CHECK(n_inputs == 46, "expected 46 inputs, found %d", n_inputs);
    check_eog(tok, name);
    check_special(tok);
    check_special_cases(tok, name);
    printf("vocab %s (%s, pre %s, %u tokens): %d/%d inputs match, %d/%d round trips, %d failures\n",
           name, kf_tokenizer_model(tok), kf_tokenizer_pre(tok), kf_tokenizer_n_vocab(tok), n_pass,
           n_inputs, n_roundtrip, n_inputs, failures);
    kf_tokenizer_destroy(tok);
    free(inp);
    free(outs);
    return failures ? 1 : 0;
}
