/*
 * Unit tests of kf_avro: CRC-64-AVRO vectors, Parsing Canonical Form, the embedded catalog,
 * round trips of every kinfer record, hostile inputs (truncation at every length, bad magic,
 * unknown fingerprints, oversized lengths and counts), schema evolution with defaults, and
 * the JSON mapping's error messages.
 *
 * With KF_AVRO_WRITE_CORPUS=<dir> set, the round-trip test also writes each encoded record
 * to <dir> (how tests/fuzz/corpus/avro/ was produced).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_avro.h"

/* ---- CRC and canonical form ------------------------------------------------------------- */

static void
test_crc64_vectors(void **state)
{
    (void)state;
    /* Expected values computed once with an independent Python transcription of the
     * specification's reference algorithm (table from EMPTY = 0xc15d213aa4d7a795, then
     * fp = (fp >> 8) ^ table[(fp ^ b) & 0xff]). The "null", "int", "long" and "string"
     * values also equal the Rabin fingerprints listed in Avro's share/test/data/
     * schema-tests.txt (7195948357588979594, 8247732601305521295, -3434872931120570953,
     * -8142146995180207161 as signed 64-bit). */
    static const struct {
        const char *in;
        uint64_t fp;
    } v[] = {
        {"", 0xc15d213aa4d7a795ULL},
        {"\"null\"", 0x63dd24e7cc258f8aULL},
        {"\"int\"", 0x7275d51a3f395c8fULL},
        {"\"long\"", 0xd054e14493f41db7ULL},
        {"\"string\"", 0x8f014872634503c7ULL},
        {"{\"type\":\"fixed\",\"name\":\"Foo\",\"size\":32}", 0x6014f13f6f0e3a12ULL},
        {"123456789", 0xa2cdcf9465b2c75fULL},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_int_equal(kf_avro_crc64(v[i].in, strlen(v[i].in)), v[i].fp);
}

static void
test_pcf(void **state)
{
    (void)state;
    char err[256], *pcf = NULL;
    /* Exercises [FULLNAMES] (inherited, explicit and dotted), [STRIP] (doc, aliases, default,
     * logicalType), [ORDER] (keys given out of order) and [PRIMITIVES]. */
    const char *in =
        "{\"type\": \"record\", \"name\": \"Test\", \"namespace\": \"ns.a\", \"doc\": \"d\","
        " \"aliases\": [\"x\"], \"fields\": ["
        " {\"name\": \"f\", \"type\": {\"type\": \"long\", \"logicalType\": \"timestamp-millis\"},"
        "  \"default\": 0, \"doc\": \"x\"},"
        " {\"type\": [\"null\", {\"type\": \"enum\", \"name\": \"E\", \"symbols\": [\"A\", \"B\"],"
        "  \"default\": \"A\"}], \"name\": \"e\"},"
        " {\"name\": \"m\", \"type\": {\"values\": {\"type\": \"array\", \"items\": \"Test\"},"
        "  \"type\": \"map\"}},"
        " {\"name\": \"fx\", \"type\": {\"size\": 4, \"type\": \"fixed\", \"name\": "
        "\"other.F\"}}]}";
    const char *want =
        "{\"name\":\"ns.a.Test\",\"type\":\"record\",\"fields\":[{\"name\":\"f\",\"type\":\"long\"}"
        ","
        "{\"name\":\"e\",\"type\":[\"null\",{\"name\":\"ns.a.E\",\"type\":\"enum\",\"symbols\":["
        "\"A\",\"B\"]}]},{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":{\"type\":\"array\","
        "\"items\":\"ns.a.Test\"}}},{\"name\":\"fx\",\"type\":{\"name\":\"other.F\",\"type\":"
        "\"fixed\",\"size\":4}}]}";
    assert_int_equal(kf_avro_pcf(in, &pcf, err, sizeof(err)), KF_OK);
    assert_string_equal(pcf, want);
    /* Fingerprint of `want`, from the same Python reference as the CRC vectors. Both `want`
     * and this value were also confirmed with Apache Avro Java 1.11.3
     * (SchemaNormalization.toParsingForm / parsingFingerprint64) on the same input. */
    assert_int_equal(kf_avro_crc64(pcf, strlen(pcf)), 0x807b2e871860888bULL);
    free(pcf);

    assert_int_equal(kf_avro_pcf("{\"type\": \"int\"}", &pcf, err, sizeof(err)), KF_OK);
    assert_string_equal(pcf, "\"int\"");
    free(pcf);
    assert_int_equal(kf_avro_pcf(" \"string\" ", &pcf, err, sizeof(err)), KF_OK);
    assert_string_equal(pcf, "\"string\"");
    free(pcf);

    assert_int_equal(kf_avro_pcf("{\"type\":\"record\",\"fields\":[]}", &pcf, err, sizeof(err)),
                     KF_ERR_PARSE);
    assert_non_null(strstr(err, "name"));
    assert_int_equal(kf_avro_pcf("{not json", &pcf, err, sizeof(err)), KF_ERR_PARSE);
}

/* ---- catalog ------------------------------------------------------------------------------ */

static const char *const kf_test_names[] = {
    KF_AVRO_INFERENCE_REQUEST, KF_AVRO_INFERENCE_JOB, KF_AVRO_INFERENCE_RESULT,
    KF_AVRO_MARKET_TICK,       KF_AVRO_AUDIT_EVENT,   KF_AVRO_CALLBACK_ATTEMPT,
};
#define KF_TEST_NSCHEMAS (sizeof(kf_test_names) / sizeof(kf_test_names[0]))

static void
test_catalog(void **state)
{
    (void)state;
    const kf_avro_catalog_t *cat = kf_avro_catalog_default();
    assert_non_null(cat);
    assert_int_equal(kf_avro_catalog_count(cat), KF_TEST_NSCHEMAS);
    for (size_t i = 0; i < KF_TEST_NSCHEMAS; i++) {
        const kf_avro_schema_t *ks = kf_avro_schema_get(kf_test_names[i]);
        assert_non_null(ks);
        assert_string_equal(kf_avro_schema_name(ks), kf_test_names[i]);
        assert_ptr_equal(kf_avro_catalog_find(cat, kf_avro_schema_fingerprint(ks)), ks);
        /* The fingerprint is the CRC of the canonical form, which has no whitespace. */
        const char *pcf = kf_avro_schema_pcf(ks);
        assert_int_equal(kf_avro_crc64(pcf, strlen(pcf)), kf_avro_schema_fingerprint(ks));
        assert_null(strchr(pcf, ' '));
        assert_null(strstr(pcf, "\"doc\""));
        assert_null(strstr(pcf, "\"default\""));
        for (size_t k = 0; k < i; k++)
            assert_true(kf_avro_schema_fingerprint(ks) !=
                        kf_avro_schema_fingerprint(kf_avro_schema_get(kf_test_names[k])));
    }
    /* Every schema is listed exactly once by iteration. */
    for (size_t i = 0; i < kf_avro_catalog_count(cat); i++) {
        int seen = 0;
        for (size_t k = 0; k < KF_TEST_NSCHEMAS; k++)
            seen += strcmp(kf_avro_schema_name(kf_avro_catalog_at(cat, i)), kf_test_names[k]) == 0;
        assert_int_equal(seen, 1);
    }
    assert_null(kf_avro_catalog_at(cat, kf_avro_catalog_count(cat)));
    assert_null(kf_avro_schema_get("kinfer.Nope"));

    /* A second catalog from the same sources yields the same fingerprints. */
    kf_avro_catalog_t *mine;
    char err[256];
    assert_int_equal(kf_avro_catalog_new(&mine, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_catalog_count(mine), KF_TEST_NSCHEMAS);
    const kf_avro_schema_t *dup = NULL;
    assert_int_equal(
        kf_avro_catalog_add_json(mine, kf_avro_schema_json(kf_avro_schema_get(KF_AVRO_MARKET_TICK)),
                                 &dup, err, sizeof(err)),
        KF_OK);
    assert_int_equal(kf_avro_catalog_count(mine), KF_TEST_NSCHEMAS); /* deduplicated */
    assert_int_equal(kf_avro_schema_fingerprint(dup),
                     kf_avro_schema_fingerprint(kf_avro_schema_get(KF_AVRO_MARKET_TICK)));
    assert_int_equal(kf_avro_catalog_add_json(mine, "{\"type\":\"bogus\"}", NULL, err, sizeof(err)),
                     KF_ERR_PARSE);
    kf_avro_catalog_destroy(mine);
    kf_avro_catalog_destroy(NULL);
}

/* ---- round trips ---------------------------------------------------------------------- */

/* Realistic instances with every field present, so decode(encode(x)) must equal x. */
static const struct {
    const char *name;
    const char *json;
} kf_test_records[] = {
    {KF_AVRO_INFERENCE_REQUEST,
     "{\"request_id\":\"0b6f3c1e-8d1a-4c39-9b7e-2f4a5d6c7e81\",\"tenant_id\":\"acme\","
     "\"idempotency_key\":\"key-42\",\"model\":\"qwen2.5-0.5b-instruct\",\"task\":\"risk_report\","
     "\"prompt\":null,\"messages\":[{\"role\":\"system\",\"content\":\"You are a risk analyst.\"},"
     "{\"role\":\"user\",\"content\":\"Summarise the VaR of my portfolio \\u00e9\\u20ac.\"}],"
     "\"sampling\":{\"max_tokens\":128,\"temperature\":0.7,\"top_p\":0.9,\"top_k\":40,"
     "\"min_p\":0.05,\"repetition_penalty\":1.1,\"seed\":1234567890123,\"stop\":[\"</s>\","
     "\"\\n\\n\"]},\"risk\":{\"portfolio_id\":\"pf-7\",\"as_of\":\"2026-03-31\","
     "\"confidence\":0.975,\"horizon_days\":10},\"customer_id\":\"c-9\",\"portfolio_id\":\"pf-7\","
     "\"symbols\":[\"AAPL\",\"MSFT\",\"NVDA\"],\"callback_url\":\"https://hooks.example.com/r\","
     "\"metadata\":{\"team\":\"risk\",\"ticket\":\"RISK-12\"},\"priority\":-3,"
     "\"deadline\":1774962000000,\"accepted_at\":1774958400123,"
     "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"batch_id\":\"b-1\",\"custom_id\":\"line-"
     "3\"}"},
    {KF_AVRO_INFERENCE_JOB,
     "{\"request_id\":\"r-1\",\"tenant_id\":\"acme\",\"idempotency_key\":null,\"model\":\"tiny\","
     "\"task\":\"completion\",\"prompt_text\":\"<|user|>Price of AAPL: 189.5\\nWhat now?\","
     "\"sampling\":{\"max_tokens\":16,\"temperature\":0.0,\"top_p\":1.0,\"top_k\":0,\"min_p\":0.0,"
     "\"repetition_penalty\":1.0,\"seed\":null,\"stop\":[]},\"risk\":null,\"customer_id\":null,"
     "\"portfolio_id\":null,\"symbols\":[\"AAPL\"],\"callback_url\":null,\"metadata\":{},"
     "\"priority\":0,\"deadline\":null,\"accepted_at\":1774958400000,\"trace_id\":\"\","
     "\"batch_id\":null,\"custom_id\":null,\"lineage\":[{\"symbol\":\"AAPL\","
     "\"topic\":\"kinfer.market.ticks\",\"partition\":3,\"offset\":9876543210,"
     "\"event_time\":1774958399000}],\"enriched_at\":1774958400500,\"messages\":[]}"},
    {KF_AVRO_INFERENCE_RESULT,
     "{\"request_id\":\"r-1\",\"tenant_id\":\"acme\",\"status\":\"completed\","
     "\"text\":\"Hold. Volatility is elevated.\",\"token_ids\":[1,15043,29892,2],"
     "\"finish_reason\":\"stop\",\"prompt_tokens\":17,\"completion_tokens\":4,"
     "\"queue_ms\":12.5,\"prefill_ms\":3.25,\"decode_ms\":40.125,\"model\":\"tiny\","
     "\"model_sha256\":\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\","
     "\"error\":null,\"lineage\":[{\"symbol\":\"AAPL\",\"topic\":\"kinfer.market.ticks\","
     "\"partition\":0,\"offset\":0,\"event_time\":1}],\"produced_at\":1774958400600,"
     "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"callback_url\":null,"
     "\"metadata\":{\"k\":\"v\"},\"batch_id\":null,\"custom_id\":null}"},
    {KF_AVRO_MARKET_TICK,
     "{\"symbol\":\"AAPL\",\"price\":189.52,\"bid\":189.5,\"ask\":null,"
     "\"volume\":1200.0,\"event_time\":1774958399000,\"source\":\"synthetic\"}"},
    {KF_AVRO_AUDIT_EVENT,
     "{\"event_id\":\"e-1\",\"ts\":1774958400700,\"action\":\"callback.delivered\","
     "\"outcome\":\"retry\",\"request_id\":\"r-1\",\"tenant_id\":\"acme\",\"trace_id\":null,"
     "\"stage\":\"dispatcher\",\"duration_ms\":85.5,\"model\":null,\"tokens\":21,"
     "\"message\":\"HTTP 503, retrying\",\"attributes\":{\"http_status\":\"503\","
     "\"topic\":\"kinfer.results\",\"offset\":\"42\"}}"},
    {KF_AVRO_CALLBACK_ATTEMPT,
     "{\"request_id\":\"r-1\",\"tenant_id\":\"acme\",\"webhook_id\":null,"
     "\"url\":\"https://hooks.example.com/r\",\"attempt\":2,\"next_attempt_at\":1774958402000,"
     "\"last_status\":503,\"last_error\":null,\"trace_id\":\"t\","
     "\"payload\":\"{\\\"request_id\\\":\\\"r-1\\\",\\\"status\\\":\\\"completed\\\"}\","
     "\"created_at\":1774958400600}"},
};
#define KF_TEST_NRECORDS (sizeof(kf_test_records) / sizeof(kf_test_records[0]))

/* Encodes record i of kf_test_records; the caller frees *out. */
static void
kf_test_encode(size_t i, unsigned char **out, size_t *out_len)
{
    char err[512];
    json_error_t jerr;
    json_t *j = json_loads(kf_test_records[i].json, 0, &jerr);
    assert_non_null(j);
    const kf_avro_schema_t *ks = kf_avro_schema_get(kf_test_records[i].name);
    assert_non_null(ks);
    kf_err_t rc = kf_avro_encode_json(ks, j, out, out_len, err, sizeof(err));
    if (rc != KF_OK)
        fail_msg("%s: %s", kf_test_records[i].name, err);
    json_decref(j);
}

static void
test_roundtrip_all(void **state)
{
    (void)state;
    const char *corpus = getenv("KF_AVRO_WRITE_CORPUS");
    assert_int_equal(KF_TEST_NRECORDS, KF_TEST_NSCHEMAS); /* one per schema */
    for (size_t i = 0; i < KF_TEST_NRECORDS; i++) {
        unsigned char *buf;
        size_t len;
        char err[512];
        kf_test_encode(i, &buf, &len);
        const kf_avro_schema_t *ks = kf_avro_schema_get(kf_test_records[i].name);
        assert_true(len > KF_AVRO_HEADER_SIZE);
        assert_int_equal(buf[0], 0xC3);
        assert_int_equal(buf[1], 0x01);
        uint64_t fp = 0;
        assert_int_equal(kf_avro_peek_fingerprint(buf, len, &fp), KF_OK);
        assert_int_equal(fp, kf_avro_schema_fingerprint(ks));
        /* Little-endian on the wire. */
        assert_int_equal(buf[2], (unsigned char)(kf_avro_schema_fingerprint(ks) & 0xff));

        json_t *back = NULL;
        const kf_avro_schema_t *writer = NULL;
        kf_err_t rc = kf_avro_decode_json(NULL, buf, len, NULL, &back, &writer, err, sizeof(err));
        if (rc != KF_OK)
            fail_msg("%s: %s", kf_test_records[i].name, err);
        assert_ptr_equal(writer, ks);
        json_t *want = json_loads(kf_test_records[i].json, 0, NULL);
        if (!json_equal(want, back)) {
            char *got = json_dumps(back, JSON_SORT_KEYS);
            fail_msg("%s round trip differs: %s", kf_test_records[i].name, got);
        }
        if (corpus) {
            char path[1024];
            snprintf(path, sizeof(path), "%s/%s.bin", corpus, kf_test_records[i].name + 7);
            FILE *fp_out = fopen(path, "wb");
            assert_non_null(fp_out);
            assert_int_equal(fwrite(buf, 1, len, fp_out), len);
            fclose(fp_out);
        }
        json_decref(want);
        json_decref(back);
        free(buf);
    }
}

/* Defaults fill what the JSON leaves out; accessors see through nullable unions. */
static void
test_defaults_and_accessors(void **state)
{
    (void)state;
    char err[512];
    const kf_avro_schema_t *ks = kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST);
    json_t *j = json_loads("{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\","
                           "\"prompt\":\"hi\",\"accepted_at\":5}",
                           0, NULL);
    avro_value_t v, sampling;
    assert_int_equal(kf_avro_from_json(ks, j, &v, err, sizeof(err)), KF_OK);
    json_decref(j);

    const char *s = NULL;
    int64_t n = 0;
    double d = 0;
    assert_int_equal(kf_avro_get_string(&v, "prompt", &s), KF_OK);
    assert_string_equal(s, "hi");
    assert_int_equal(kf_avro_get_string(&v, "callback_url", &s), KF_ERR_NOT_FOUND); /* null */
    assert_int_equal(kf_avro_get_enum(&v, "task", &s), KF_OK);
    assert_string_equal(s, "completion");
    assert_int_equal(kf_avro_get_long(&v, "priority", &n), KF_OK);
    assert_int_equal(n, 0);
    assert_int_equal(avro_value_get_by_name(&v, "sampling", &sampling, NULL), 0);
    assert_int_equal(kf_avro_get_long(&sampling, "max_tokens", &n), KF_OK);
    assert_int_equal(n, 256);
    assert_int_equal(kf_avro_get_double(&sampling, "top_p", &d), KF_OK);
    assert_true(d == 1.0);

    /* Setters pick the union branch; errors for absent fields and wrong types. */
    assert_int_equal(kf_avro_set_string(&v, "callback_url", "http://x/y"), KF_OK);
    assert_int_equal(kf_avro_get_string(&v, "callback_url", &s), KF_OK);
    assert_string_equal(s, "http://x/y");
    assert_int_equal(kf_avro_set_long(&v, "deadline", 99), KF_OK);
    assert_int_equal(kf_avro_get_long(&v, "deadline", &n), KF_OK);
    assert_int_equal(n, 99);
    assert_int_equal(kf_avro_set_string(&v, "prompt", NULL), KF_OK);
    assert_int_equal(kf_avro_get_string(&v, "prompt", &s), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_avro_set_enum(&v, "task", "risk_report"), KF_OK);
    assert_int_equal(kf_avro_set_enum(&v, "task", "poetry"), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_avro_set_long(&v, "priority", (int64_t)1 << 40), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_avro_set_string(&v, "nope", "x"), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_avro_set_double(&v, "model", 1.0), KF_ERR_INVALID_ARG);

    unsigned char *buf;
    size_t len;
    assert_int_equal(
        kf_avro_encode_name(KF_AVRO_INFERENCE_REQUEST, &v, &buf, &len, err, sizeof(err)), KF_OK);
    avro_value_t back;
    assert_int_equal(kf_avro_decode(NULL, buf, len, NULL, &back, NULL, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_get_enum(&back, "task", &s), KF_OK);
    assert_string_equal(s, "risk_report");
    assert_int_equal(kf_avro_get_long(&back, "deadline", &n), KF_OK);
    assert_int_equal(n, 99);
    avro_value_decref(&back);
    free(buf);
    avro_value_decref(&v);

    /* Encoding a value of another schema is refused. */
    const kf_avro_schema_t *tick = kf_avro_schema_get(KF_AVRO_MARKET_TICK);
    assert_int_equal(kf_avro_value_new(tick, &v, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_encode(ks, &v, &buf, &len, err, sizeof(err)), KF_ERR_INVALID_ARG);
    /* A fresh tick has unset unions (bid, ask): the encoder names the first one. */
    assert_int_equal(kf_avro_encode(tick, &v, &buf, &len, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "MarketTick.bid"));
    avro_value_decref(&v);
}

static void
test_from_json_errors(void **state)
{
    (void)state;
    char err[512];
    avro_value_t v;
    const kf_avro_schema_t *ks = kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST);
    static const struct {
        const char *json;
        const char *msg;
    } bad[] = {
        {"{\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1}",
         "InferenceRequest.request_id: missing required field"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"sampling\":{\"top_p\":\"high\"}}",
         "InferenceRequest.sampling.top_p: expected a number"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"sampling\":{\"max_tokens\":4294967296}}",
         "InferenceRequest.sampling.max_tokens: expected a 32-bit integer"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"temprature\":1}",
         "unknown field \"temprature\""},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"task\":\"poem\"}",
         "InferenceRequest.task: expected one of completion risk_report"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"callback_url\":5}",
         "InferenceRequest.callback_url: value matches no branch of the union (null | string)"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"messages\":[{\"role\":\"user\"}]}",
         "InferenceRequest.messages[0].content: missing required field"},
        {"{\"request_id\":\"r\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1,"
         "\"metadata\":{\"a\":1}}",
         "InferenceRequest.metadata.a: expected a string"},
        {"{\"request_id\":\"a\\u0000b\",\"tenant_id\":\"t\",\"model\":\"m\",\"accepted_at\":1}",
         "InferenceRequest.request_id: string contains a NUL character"},
        {"[1,2]", "InferenceRequest: expected an object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_error_t jerr;
        json_t *j = json_loads(bad[i].json, JSON_ALLOW_NUL, &jerr);
        assert_non_null(j);
        err[0] = '\0';
        assert_int_equal(kf_avro_from_json(ks, j, &v, err, sizeof(err)), KF_ERR_INVALID_ARG);
        if (!strstr(err, bad[i].msg))
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bad[i].msg);
        json_decref(j);
    }
}

/* ---- hostile input ---------------------------------------------------------------------- */

static void
test_truncated_every_length(void **state)
{
    (void)state;
    char err[512];
    for (size_t i = 0; i < KF_TEST_NRECORDS; i++) {
        unsigned char *buf;
        size_t len;
        kf_test_encode(i, &buf, &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* A copy of exactly `cut` bytes, so ASan flags any read past the end. */
            unsigned char *part = malloc(cut ? cut : 1);
            memcpy(part, buf, cut);
            avro_value_t v;
            err[0] = '\0';
            kf_err_t rc = kf_avro_decode(NULL, part, cut, NULL, &v, NULL, err, sizeof(err));
            if (rc != KF_ERR_TRUNCATED)
                fail_msg("%s cut at %zu/%zu: got %s (%s)", kf_test_records[i].name, cut, len,
                         kf_err_str(rc), err);
            assert_true(strlen(err) > 0);
            free(part);
        }
        free(buf);
    }
}

static void
test_bad_frames(void **state)
{
    (void)state;
    char err[512];
    unsigned char *buf;
    size_t len;
    avro_value_t v;
    kf_test_encode(3, &buf, &len); /* MarketTick */

    /* Bad magic. */
    buf[0] = 0xC4;
    assert_int_equal(kf_avro_decode(NULL, buf, len, NULL, &v, NULL, err, sizeof(err)),
                     KF_ERR_PARSE);
    assert_non_null(strstr(err, "magic"));
    buf[0] = 0xC3;
    buf[1] = 0x02;
    assert_int_equal(kf_avro_decode(NULL, buf, len, NULL, &v, NULL, err, sizeof(err)),
                     KF_ERR_PARSE);
    buf[1] = 0x01;

    /* Unknown fingerprint. */
    buf[5] ^= 0x5A;
    assert_int_equal(kf_avro_decode(NULL, buf, len, NULL, &v, NULL, err, sizeof(err)),
                     KF_ERR_UNKNOWN_SCHEMA);
    assert_non_null(strstr(err, "fingerprint"));
    buf[5] ^= 0x5A;

    /* Trailing bytes. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(kf_avro_decode(NULL, longer, len + 1, NULL, &v, NULL, err, sizeof(err)),
                     KF_ERR_PARSE);
    assert_non_null(strstr(err, "trailing"));
    free(longer);

    /* The untouched frame still decodes. */
    assert_int_equal(kf_avro_decode(NULL, buf, len, NULL, &v, NULL, err, sizeof(err)), KF_OK);
    avro_value_decref(&v);
    assert_int_equal(kf_avro_decode(NULL, NULL, 0, NULL, &v, NULL, err, sizeof(err)),
                     KF_ERR_TRUNCATED);
    free(buf);
}

/* Hand-made bodies against a test schema: the inputs avro-c alone would misbehave on. */
static void
test_hostile_bodies(void **state)
{
    (void)state;
    char err[512];
    kf_avro_catalog_t *cat;
    const kf_avro_schema_t *ks;
    assert_int_equal(kf_avro_catalog_new_empty(&cat, err, sizeof(err)), KF_OK);
    assert_int_equal(
        kf_avro_catalog_add_json(
            cat,
            "{\"type\":\"record\",\"name\":\"H\",\"namespace\":\"kinfer.test\",\"fields\":["
            "{\"name\":\"s\",\"type\":\"string\"},"
            "{\"name\":\"u\",\"type\":[\"null\",\"int\"]},"
            "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}}"
            ","
            "{\"name\":\"n\",\"type\":{\"type\":\"array\",\"items\":\"null\"}},"
            "{\"name\":\"b\",\"type\":\"boolean\"}]}",
            &ks, err, sizeof(err)),
        KF_OK);
    uint64_t fp = kf_avro_schema_fingerprint(ks);
    static const struct {
        unsigned char body[24];
        size_t len;
        kf_err_t want;
        const char *msg;
    } cases[] = {
        /* s="hi", u=null, e=B, n=[] , b=true: valid */
        {{4, 'h', 'i', 0, 2, 0, 1}, 7, KF_OK, ""},
        /* string length 2^62 */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
         10,
         KF_ERR_TRUNCATED,
         "H.s: length runs past"},
        /* negative string length */
        {{3, 'h'}, 2, KF_ERR_PARSE, "H.s: negative length"},
        /* 11-byte varint */
        {{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
         11,
         KF_ERR_PARSE,
         "varint too long"},
        /* union index 2 of 2 */
        {{0, 4, 0, 0, 0}, 5, KF_ERR_PARSE, "H.u: union branch index out of range"},
        /* int that does not fit 32 bits */
        {{0, 2, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 1},
         10,
         KF_ERR_PARSE,
         "H.u: varint out of range"},
        /* enum index 2 of 2 */
        {{0, 0, 4, 0, 1}, 5, KF_ERR_PARSE, "H.e: enum index out of range"},
        /* 2^40 null items: no bytes each, would make avro-c allocate forever */
        {{0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0, 1},
         11,
         KF_ERR_PARSE,
         "too many zero-size items"},
        /* negative block count with a wrong byte size */
        {{0, 0, 0, 0x03, 0x02, 0, 1}, 7, KF_ERR_PARSE, "block byte size"},
        /* negative block count, right byte size (0 bytes for 2 nulls): valid */
        {{0, 0, 0, 0x03, 0x00, 0, 1}, 7, KF_OK, ""},
        /* boolean 2 */
        {{0, 0, 0, 0, 2}, 5, KF_ERR_PARSE, "H.b: boolean byte"},
        /* invalid UTF-8 and NUL in strings */
        {{2, 0xff, 0, 0, 0, 1}, 6, KF_ERR_PARSE, "H.s: string is not UTF-8"},
        {{2, 0x00, 0, 0, 0, 1}, 6, KF_ERR_PARSE, "H.s: string is not UTF-8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char frame[64] = {0xC3, 0x01};
        for (int k = 0; k < 8; k++)
            frame[2 + k] = (unsigned char)(fp >> (8 * k));
        memcpy(frame + KF_AVRO_HEADER_SIZE, cases[i].body, cases[i].len);
        avro_value_t v;
        err[0] = '\0';
        kf_err_t rc = kf_avro_decode(cat, frame, KF_AVRO_HEADER_SIZE + cases[i].len, NULL, &v, NULL,
                                     err, sizeof(err));
        if (rc != cases[i].want || !strstr(err, cases[i].msg))
            fail_msg("case %zu: got %s \"%s\", want %s \"%s\"", i, kf_err_str(rc), err,
                     kf_err_str(cases[i].want), cases[i].msg);
        if (rc == KF_OK) {
            size_t n = 99;
            avro_value_t arr;
            assert_int_equal(avro_value_get_by_name(&v, "n", &arr, NULL), 0);
            assert_int_equal(avro_value_get_size(&arr, &n), 0);
            assert_int_equal(n, i == 0 ? 0 : 2);
            avro_value_decref(&v);
        }
    }
    kf_avro_catalog_destroy(cat);
}

/* ---- evolution -------------------------------------------------------------------------- */

static const char *kf_test_evo_v1 =
    "{\"type\":\"record\",\"name\":\"Evo\",\"namespace\":\"kinfer.test\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},"
    "{\"name\":\"n\",\"type\":\"int\"},"
    "{\"name\":\"gone\",\"type\":\"string\"},"
    "{\"name\":\"color\",\"type\":{\"type\":\"enum\",\"name\":\"Color\","
    "\"symbols\":[\"RED\",\"GREEN\",\"BLUE\"]}},"
    "{\"name\":\"maybe\",\"type\":[\"null\",\"int\"]}]}";

/* v2 drops `gone`, widens n and maybe to long/double, removes BLUE (enum default RED) and adds
 * three fields with defaults. */
static const char *kf_test_evo_v2 =
    "{\"type\":\"record\",\"name\":\"Evo\",\"namespace\":\"kinfer.test\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"string\"},"
    "{\"name\":\"priority\",\"type\":\"int\",\"default\":7},"
    "{\"name\":\"n\",\"type\":\"long\"},"
    "{\"name\":\"color\",\"type\":{\"type\":\"enum\",\"name\":\"Color\","
    "\"symbols\":[\"RED\",\"GREEN\"],\"default\":\"RED\"}},"
    "{\"name\":\"maybe\",\"type\":[\"null\",\"double\"]},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"},"
    "\"default\":[\"a\",\"b\"]},"
    "{\"name\":\"note\",\"type\":[\"null\",\"string\"],\"default\":null}]}";

static void
test_evolution(void **state)
{
    (void)state;
    char err[512];
    kf_avro_catalog_t *cat;
    const kf_avro_schema_t *v1, *v2;
    assert_int_equal(kf_avro_catalog_new_empty(&cat, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_catalog_add_json(cat, kf_test_evo_v1, &v1, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_catalog_add_json(cat, kf_test_evo_v2, &v2, err, sizeof(err)), KF_OK);
    assert_true(kf_avro_schema_fingerprint(v1) != kf_avro_schema_fingerprint(v2));
    /* Lookup by name returns the newest version. */
    assert_ptr_equal(kf_avro_catalog_get(cat, "kinfer.test.Evo"), v2);

    /* Old writer, new reader: defaults, promotions, removed field, enum default. */
    const char *rows[] = {
        "{\"id\":\"x\",\"n\":-5,\"gone\":\"bye\",\"color\":\"GREEN\",\"maybe\":3}",
        "{\"id\":\"y\",\"n\":2147483647,\"gone\":\"\",\"color\":\"BLUE\",\"maybe\":null}",
    };
    const char *want[] = {
        "{\"id\":\"x\",\"priority\":7,\"n\":-5,\"color\":\"GREEN\",\"maybe\":3.0,"
        "\"tags\":[\"a\",\"b\"],\"note\":null}",
        "{\"id\":\"y\",\"priority\":7,\"n\":2147483647,\"color\":\"RED\",\"maybe\":null,"
        "\"tags\":[\"a\",\"b\"],\"note\":null}",
    };
    for (size_t i = 0; i < 2; i++) {
        json_t *j = json_loads(rows[i], 0, NULL);
        unsigned char *buf;
        size_t len;
        assert_int_equal(kf_avro_encode_json(v1, j, &buf, &len, err, sizeof(err)), KF_OK);
        json_decref(j);

        avro_value_t v;
        const kf_avro_schema_t *writer = NULL;
        kf_err_t rc = kf_avro_decode(cat, buf, len, v2, &v, &writer, err, sizeof(err));
        if (rc != KF_OK)
            fail_msg("evolution decode: %s", err);
        assert_ptr_equal(writer, v1);
        assert_ptr_equal(avro_value_get_schema(&v), kf_avro_schema_avro(v2));
        int64_t prio = 0;
        assert_int_equal(kf_avro_get_long(&v, "priority", &prio), KF_OK);
        assert_int_equal(prio, 7); /* the default, absent from the writer */
        json_t *got = NULL;
        assert_int_equal(kf_avro_to_json(&v, &got, err, sizeof(err)), KF_OK);
        json_t *exp = json_loads(want[i], 0, NULL);
        if (!json_equal(got, exp))
            fail_msg("row %zu: got %s", i, json_dumps(got, JSON_SORT_KEYS));
        json_decref(got);
        json_decref(exp);
        avro_value_decref(&v);

        /* Reading with its own schema is unaffected. */
        assert_int_equal(kf_avro_decode(cat, buf, len, NULL, &v, NULL, err, sizeof(err)), KF_OK);
        assert_ptr_equal(avro_value_get_schema(&v), kf_avro_schema_avro(v1));
        avro_value_decref(&v);
        free(buf);
    }

    /* New writer, old reader: `gone` has no default, so resolution fails and says why. */
    json_t *j = json_loads("{\"id\":\"z\",\"n\":1,\"color\":\"RED\",\"maybe\":null}", 0, NULL);
    unsigned char *buf;
    size_t len;
    avro_value_t v;
    assert_int_equal(kf_avro_encode_json(v2, j, &buf, &len, err, sizeof(err)), KF_OK);
    json_decref(j);
    assert_int_equal(kf_avro_decode(cat, buf, len, v1, &v, NULL, err, sizeof(err)), KF_ERR_FORMAT);
    assert_non_null(strstr(err, "Evo.n"));
    free(buf);

    /* A writer without `gone`, read as v1 where `gone` has no default: named in the error. */
    const kf_avro_schema_t *v0;
    assert_int_equal(kf_avro_catalog_add_json(
                         cat,
                         "{\"type\":\"record\",\"name\":\"Evo\",\"namespace\":"
                         "\"kinfer.test\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"}]}",
                         &v0, err, sizeof(err)),
                     KF_OK);
    j = json_loads("{\"id\":\"q\"}", 0, NULL);
    assert_int_equal(kf_avro_encode_json(v0, j, &buf, &len, err, sizeof(err)), KF_OK);
    json_decref(j);
    assert_int_equal(kf_avro_decode(cat, buf, len, v1, &v, NULL, err, sizeof(err)), KF_ERR_FORMAT);
    assert_non_null(strstr(err, "Evo.n: field missing in the writer schema and has no default"));
    free(buf);
    kf_avro_catalog_destroy(cat);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc64_vectors),
        cmocka_unit_test(test_pcf),
        cmocka_unit_test(test_catalog),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_defaults_and_accessors),
        cmocka_unit_test(test_from_json_errors),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_hostile_bodies),
        cmocka_unit_test(test_evolution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
