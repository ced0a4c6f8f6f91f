/*
 * Unit tests of the audit indexer's pure parts (consumers/kf_auditor.h): the index template
 * (and that deploy/search/kinfer-audit-template.json is the same body), the AuditEvent ->
 * ECS document mapping through a real Avro round trip, the search query body, and that the
 * Kibana saved objects in deploy/kibana/ are well-formed and reference each other.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kf_auditor.h"
#include "kf_avro.h"

#ifndef KF_SOURCE_DIR
#error "KF_SOURCE_DIR must point at the source tree"
#endif

static void
test_template_file_matches(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *file =
        json_load_file(KF_SOURCE_DIR "/deploy/search/kinfer-audit-template.json", 0, &jerr);
    if (!file)
        fail_msg("template file: %s (line %d)", jerr.text, jerr.line);
    json_t *tpl = kf_auditor_template("kinfer-audit-");
    assert_non_null(tpl);
    assert_true(json_equal(file, tpl));
    /* Single node: no replicas; the pattern matches the daily indexes. */
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(tpl, "template"), "settings"), "number_of_replicas")),
        0);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(tpl, "index_patterns"), 0)),
        "kinfer-audit-*");
    json_decref(file);
    json_decref(tpl);
    /* Another prefix changes only the pattern. */
    tpl = kf_auditor_template("kf-test-9-");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(tpl, "index_patterns"), 0)),
        "kf-test-9-*");
    json_decref(tpl);
}

/* Encodes an AuditEvent from JSON and decodes it back, as the indexer sees it. */
static json_t *
roundtrip(const char *text)
{
    json_error_t jerr;
    json_t *in = json_loads(text, 0, &jerr);
    if (!in)
        fail_msg("test JSON: %s", jerr.text);
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[256];
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_AUDIT_EVENT);
    if (kf_avro_encode_json(schema, in, &buf, &len, err, sizeof(err)) != KF_OK)
        fail_msg("encode: %s", err);
    json_t *out = NULL;
    if (kf_avro_decode_json(NULL, buf, len, schema, &out, NULL, err, sizeof(err)) != KF_OK)
        fail_msg("decode: %s", err);
    free(buf);
    json_decref(in);
    return out;
}

static const char *
path_str(json_t *doc, const char *a, const char *b)
{
    json_t *v = json_object_get(doc, a);
    if (b)
        v = json_object_get(v, b);
    return json_string_value(v);
}

static void
test_event_to_doc(void **state)
{
    (void)state;
    /* 1704239999999 = 2024-01-02T23:59:59.999Z: the last millisecond of the day. */
    json_t *ev = roundtrip(
        "{\"event_id\":\"e-1\",\"ts\":1704239999999,\"action\":\"callback.attempted\","
        "\"outcome\":\"rejected\",\"request_id\":\"r-1\",\"tenant_id\":\"t-1\","
        "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"stage\":\"dispatch\","
        "\"duration_ms\":12.5,\"model\":\"tiny\",\"tokens\":42,\"message\":\"blocked private "
        "address\",\"attributes\":{\"http_status\":\"0\",\"attempt\":\"1\"}}");
    json_t *doc = NULL;
    char index[256], err[256];
    assert_int_equal(kf_auditor_event_to_doc(ev, "kinfer-audit-", &doc, index, err, sizeof(err)),
                     KF_OK);
    assert_string_equal(index, "kinfer-audit-2024.01.02");
    assert_string_equal(path_str(doc, "@timestamp", NULL), "2024-01-02T23:59:59.999Z");
    assert_string_equal(path_str(doc, "event", "id"), "e-1");
    assert_string_equal(path_str(doc, "event", "action"), "callback.attempted");
    assert_string_equal(path_str(doc, "event", "outcome"), "failure"); /* ECS has no rejected */
    assert_string_equal(path_str(doc, "kinfer", "outcome"), "rejected");
    assert_string_equal(path_str(doc, "kinfer", "stage"), "dispatch");
    assert_string_equal(path_str(doc, "event", "provider"), "dispatch");
    assert_string_equal(path_str(doc, "kinfer", "model"), "tiny");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "kinfer"), "tokens")),
                     42);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "event"), "duration")),
                     12500000);
    assert_string_equal(path_str(doc, "labels", "request_id"), "r-1");
    assert_string_equal(path_str(doc, "labels", "tenant_id"), "t-1");
    assert_string_equal(path_str(doc, "trace", "id"), "0af7651916cd43dd8448eb211c80319c");
    assert_string_equal(path_str(doc, "message", NULL), "blocked private address");
    assert_string_equal(path_str(doc, "service", "name"), "kinfer");
    json_t *attrs = json_object_get(json_object_get(doc, "kinfer"), "attributes");
    assert_string_equal(json_string_value(json_object_get(attrs, "http_status")), "0");
    json_decref(doc);
    json_decref(ev);

    /* Minimal event: optional parts absent, not null. The next millisecond is the next day. */
    ev = roundtrip("{\"event_id\":\"e-2\",\"ts\":1704240000000,\"action\":\"request.accepted\","
                   "\"outcome\":\"retry\",\"stage\":\"api\"}");
    assert_int_equal(kf_auditor_event_to_doc(ev, "kinfer-audit-", &doc, index, err, sizeof(err)),
                     KF_OK);
    assert_string_equal(index, "kinfer-audit-2024.01.03");
    assert_string_equal(path_str(doc, "event", "outcome"), "unknown");
    assert_null(json_object_get(doc, "trace"));
    assert_null(json_object_get(json_object_get(doc, "event"), "duration"));
    assert_null(json_object_get(json_object_get(doc, "kinfer"), "tokens"));
    assert_int_equal(json_object_size(json_object_get(doc, "labels")), 0);
    json_decref(doc);

    /* A prefix that makes an invalid index name is refused. */
    doc = NULL;
    assert_int_equal(kf_auditor_event_to_doc(ev, "Bad-Prefix-", &doc, index, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_null(doc);
    json_decref(ev);

    /* Required fields. */
    json_t *bad = json_pack("{ss si ss}", "event_id", "", "ts", 1, "action", "x");
    assert_int_equal(kf_auditor_event_to_doc(bad, "kinfer-audit-", &doc, index, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    json_decref(bad);
}

static void
test_query_body(void **state)
{
    (void)state;
    json_t *body = NULL;
    char err[256];
    kf_audit_query_t q = {.request_id = "r-1",
                          .tenant_id = "t-1",
                          .action = "callback.delivered",
                          .since = "now-1h",
                          .until = "2030-01-01T00:00:00Z",
                          .text = "delivered callback",
                          .limit = 7};
    assert_int_equal(kf_auditor_query_body(&q, &body, err, sizeof(err)), KF_OK);
    assert_int_equal(json_integer_value(json_object_get(body, "size")), 7);
    assert_true(json_is_true(json_object_get(body, "track_total_hits")));
    json_t *b = json_object_get(json_object_get(body, "query"), "bool");
    json_t *filter = json_object_get(b, "filter");
    assert_int_equal(json_array_size(filter), 4);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(filter, 0), "term"),
                                          "labels.request_id")),
        "r-1");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(filter, 2), "term"), "event.action")),
                        "callback.delivered");
    json_t *range =
        json_object_get(json_object_get(json_array_get(filter, 3), "range"), "@timestamp");
    assert_string_equal(json_string_value(json_object_get(range, "gte")), "now-1h");
    assert_string_equal(json_string_value(json_object_get(range, "lte")), "2030-01-01T00:00:00Z");
    json_t *match = json_object_get(
        json_object_get(json_array_get(json_object_get(b, "must"), 0), "match"), "message");
    assert_string_equal(json_string_value(json_object_get(match, "operator")), "and");
    json_decref(body);

    kf_audit_query_t none = {0};
    assert_int_equal(kf_auditor_query_body(&none, &body, err, sizeof(err)), KF_OK);
    assert_int_equal(json_integer_value(json_object_get(body, "size")), 100);
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(json_object_get(body, "query"), "bool"), "filter")),
                     0);
    json_decref(body);

    kf_audit_query_t big = {.limit = 10001};
    assert_int_equal(kf_auditor_query_body(&big, &body, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_audit_query_t neg = {.limit = -1};
    assert_int_equal(kf_auditor_query_body(&neg, &body, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_audit_query_t badutf = {.text = "\xff\xfe"};
    assert_int_equal(kf_auditor_query_body(&badutf, &body, err, sizeof(err)), KF_ERR_INVALID_ARG);
}

static void
test_kibana_objects(void **state)
{
    (void)state;
    FILE *fp = fopen(KF_SOURCE_DIR "/deploy/kibana/kinfer-audit.ndjson", "r");
    assert_non_null(fp);
    char line[16384];
    int n = 0, have_pattern = 0, have_search = 0, have_dash = 0;
    json_t *ids = json_object();
    json_t *objs = json_array();
    while (fgets(line, sizeof(line), fp)) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (!o)
            fail_msg("line %d: %s", n + 1, jerr.text);
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *id = json_string_value(json_object_get(o, "id"));
        assert_non_null(type);
        assert_non_null(id);
        json_object_set_new(ids, id, json_string(type));
        json_array_append(objs, o);
        if (!strcmp(type, "index-pattern")) {
            json_t *attrs = json_object_get(o, "attributes");
            assert_string_equal(json_string_value(json_object_get(attrs, "title")),
                                "kinfer-audit-*");
            assert_string_equal(json_string_value(json_object_get(attrs, "timeFieldName")),
                                "@timestamp");
            have_pattern = 1;
        } else if (!strcmp(type, "search")) {
            /* searchSourceJSON is itself JSON text. */
            const char *ss = json_string_value(json_object_get(
                json_object_get(json_object_get(o, "attributes"), "kibanaSavedObjectMeta"),
                "searchSourceJSON"));
            json_t *sj = json_loads(ss, 0, &jerr);
            assert_non_null(sj);
            json_decref(sj);
            have_search = 1;
        } else if (!strcmp(type, "dashboard")) {
            const char *pj =
                json_string_value(json_object_get(json_object_get(o, "attributes"), "panelsJSON"));
            json_t *panels = json_loads(pj, 0, &jerr);
            assert_true(json_array_size(panels) >= 1);
            json_decref(panels);
            have_dash = 1;
        }
        json_decref(o);
        n++;
    }
    fclose(fp);
    assert_true(have_pattern && have_search && have_dash);
    /* Every reference points at an object of the right type in the same file. */
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o)
    {
        size_t j;
        json_t *ref;
        json_array_foreach(json_object_get(o, "references"), j, ref)
        {
            const char *rid = json_string_value(json_object_get(ref, "id"));
            const char *rtype = json_string_value(json_object_get(ref, "type"));
            json_t *have = json_object_get(ids, rid);
            assert_non_null(have);
            assert_string_equal(json_string_value(have), rtype);
        }
    }
    json_decref(ids);
    json_decref(objs);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_file_matches),
        cmocka_unit_test(test_event_to_doc),
        cmocka_unit_test(test_query_body),
        cmocka_unit_test(test_kibana_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
