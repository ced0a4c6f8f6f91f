/*
 * demo_model_driver: runs kinfer's engine on the prompts of the demonstration model's golden
 * file (tests/fixtures/demo_model/greedy.json, written by tools/demo-model/export.py from
 * PyTorch) and checks, token for token, that
 *   - kinfer's tokenization of each prompt equals the Python BPE's ids, and
 *   - kinfer's greedy continuation equals PyTorch's greedy continuation.
 * A mismatch prints both sequences from the first differing position and fails the test.
 *
 * With --dump it prints what the engine produced as one JSON object instead of checking, for
 * tests/reference/demo_model_check.py (which also recomputes PyTorch live when it can).
 *
 * The engine runs with an F32 KV cache so the only difference from PyTorch's float32 is the
 * order of summation; the export script records the smallest top-1/top-2 logit margin of each
 * continuation so a near-tie (where either answer would be right) is visible in the file.
 */
#include "kf_engine.h"
#include "kf_model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage(FILE *fp)
{
    fprintf(fp, "Usage: demo_model_driver --model M.gguf --golden greedy.json [--dump] "
                "[--threads N]\n"
                "  checks kinfer's tokenization and greedy continuation of every case in the\n"
                "  golden file (exit 0 all equal, 1 a mismatch, 2 bad input or engine error)\n"
                "  --dump  print {\"cases\": [{\"prompt_ids\", \"ids\", \"text\"}]} instead\n");
}

/* Reads an array of integers into a malloc'd int32 array; -1 when it is not one. */
static long
json_ids(const json_t *a, int32_t **out)
{
    *out = NULL;
    if (!json_is_array(a))
        return -1;
    size_t n = json_array_size(a);
    int32_t *v = malloc((n ? n : 1) * sizeof(int32_t));
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x)) {
            free(v);
            return -1;
        }
        v[i] = (int32_t)json_integer_value(x);
    }
    *out = v;
    return (long)n;
}

/* Prints two id sequences from the first position where they differ. */
static void
print_diff(const char *what, const int32_t *want, size_t n_want, const int32_t *got, size_t n_got)
{
    size_t i = 0;
    while (i < n_want && i < n_got && want[i] == got[i])
        i++;
    fprintf(stderr, "  %s differ at index %zu (expected %zu ids, got %zu)\n  expected:", what, i,
            n_want, n_got);
    for (size_t j = i; j < n_want && j < i + 16; j++)
        fprintf(stderr, " %d", want[j]);
    fprintf(stderr, "\n  kinfer:  ");
    for (size_t j = i; j < n_got && j < i + 16; j++)
        fprintf(stderr, " %d", got[j]);
    fprintf(stderr, "\n");
}

static int
same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(int32_t)) == 0);
}

static json_t *
ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Runs one case: tokenization, then greedy generation of n_predict tokens. Returns 0 when
 * both match the golden ids (or in dump mode, after adding the case to `dump`), 1 on a
 * mismatch, 2 on an engine error. */
static int
run_case(kf_engine_t *eng, size_t ci, const json_t *c, long n_predict, json_t *dump)
{
    const char *prompt = json_string_value(json_object_get(c, "prompt"));
    int32_t *want_p = NULL, *want_g = NULL, *got_p = NULL;
    long n_want_p = json_ids(json_object_get(c, "prompt_ids"), &want_p);
    long n_want_g = json_ids(json_object_get(c, "ids"), &want_g);
    size_t n_got_p = 0;
    kf_result_t *res = NULL;
    char err[512];
    int rc = 2;
    if (!prompt || n_want_p < 0 || n_want_g < 0) {
        fprintf(stderr, "case %zu: needs \"prompt\", \"prompt_ids\" and \"ids\"\n", ci);
        goto out;
    }
    if (kf_engine_tokenize(eng, prompt, &got_p, &n_got_p, err, sizeof(err))) {
        fprintf(stderr, "case %zu: tokenize: %s\n", ci, err);
        goto out;
    }
    kf_request_t req;
    kf_request_init(&req);
    req.prompt = prompt;
    kf_sampling_greedy(&req.sampling);
    req.max_tokens = (uint32_t)n_predict;
    if (kf_engine_generate(eng, &req, &res, err, sizeof(err)) || res->finish == KF_FINISH_ERROR) {
        fprintf(stderr, "case %zu: generate: %s\n", ci, res ? res->errstr : err);
        goto out;
    }
    if (dump) {
        json_t *o = json_object();
        json_object_set_new(o, "prompt_ids", ids_json(got_p, n_got_p));
        json_object_set_new(o, "ids", ids_json(res->tokens, res->n_tokens));
        json_object_set_new(o, "text", json_stringn(res->text, res->text_len));
        json_array_append_new(dump, o);
        rc = 0;
        goto out;
    }
    rc = 0;
    if (!same_ids(want_p, (size_t)n_want_p, got_p, n_got_p)) {
        fprintf(stderr, "case %zu: prompt tokenization differs from the Python BPE\n", ci);
        print_diff("prompt ids", want_p, (size_t)n_want_p, got_p, n_got_p);
        rc = 1;
    }
    if (!same_ids(want_g, (size_t)n_want_g, res->tokens, res->n_tokens)) {
        fprintf(stderr, "case %zu: greedy continuation differs from PyTorch\n", ci);
        print_diff("generated ids", want_g, (size_t)n_want_g, res->tokens, res->n_tokens);
        rc = 1;
    }
    printf("case %zu: %s: %zu prompt tokens, %u generated tokens (finish %s)\n  kinfer: %.*s\n", ci,
           rc ? "MISMATCH" : "equal", n_got_p, res->n_tokens, kf_finish_name(res->finish),
           (int)res->text_len, res->text);
out:
    kf_result_destroy(res);
    free(got_p);
    free(want_p);
    free(want_g);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *model_path = NULL, *golden_path = NULL;
    int dump_mode = 0, threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model_path = argv[++i];
        } else if (!strcmp(argv[i], "--golden") && i + 1 < argc) {
            golden_path = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--dump")) {
            dump_mode = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!model_path || !golden_path) {
        usage(stderr);
        return 2;
    }
    json_error_t jerr;
    json_t *golden = json_load_file(golden_path, 0, &jerr);
    if (!golden) {
        fprintf(stderr, "%s: %s (line %d)\n", golden_path, jerr.text, jerr.line);
        return 2;
    }
    const json_t *cases = json_object_get(golden, "cases");
    const json_t *np = json_object_get(golden, "n_predict");
    if (!json_is_array(cases) || json_array_size(cases) == 0 || !json_is_integer(np) ||
        json_integer_value(np) < 1 || json_integer_value(np) > 4096) {
        fprintf(stderr, "%s: needs a non-empty \"cases\" array and \"n_predict\" in 1..4096\n",
                golden_path);
        json_decref(golden);
        return 2;
    }

    char err[512];
    kf_model_t *model = NULL;
    kf_engine_t *eng = NULL;
    int rc = 2;
    json_t *dump = dump_mode ? json_array() : NULL;
    if (kf_model_load(model_path, &model, err, sizeof(err))) {
        fprintf(stderr, "cannot load %s: %s\n", model_path, err);
        goto out;
    }
    kf_engine_conf_t conf;
    kf_engine_conf_init(&conf);
    conf.n_threads = threads;
    conf.kv_f32 = 1; /* exact cache: PyTorch keeps K/V in float32 too */
    conf.kv_budget_bytes = 16u << 20;
    conf.max_batch_seqs = 1;
    if (kf_engine_new(model, &conf, &eng, err, sizeof(err))) {
        fprintf(stderr, "cannot start the engine: %s\n", err);
        goto out;
    }
    rc = 0;
    size_t n_bad = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        int r = run_case(eng, i, json_array_get(cases, i), (long)json_integer_value(np), dump);
        if (r > rc)
            rc = r;
        n_bad += r != 0;
    }
    if (dump_mode && rc == 0) {
        json_t *o = json_pack("{s:o}", "cases", dump);
        dump = NULL;
        json_dumpf(o, stdout, JSON_COMPACT);
        printf("\n");
        json_decref(o);
    } else if (!dump_mode) {
        printf("%zu of %zu cases equal to the PyTorch golden continuations\n",
               json_array_size(cases) - n_bad, json_array_size(cases));
    }
out:
    json_decref(dump);
    kf_engine_destroy(eng);
    kf_model_destroy(model);
    json_decref(golden);
    return rc;
}
