/*
 * test_worker_logic: the inference worker's pure decisions (inference/worker_logic.c and
 * worker_job.c): contiguous offset tracking, dynamic batching, flow control, deadline and
 * cancellation rules, the cancel record parser, the cancelled set, and the job/result codec.
 */
#include "kf_avro.h"
#include "kf_worker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- tracker ---- */

static void
test_track_contiguous(void **state)
{
    (void)state;
    kf_worker_track_t *t = kf_worker_track_new();
    int64_t next = -1;
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 0); /* unknown partition */
    for (int64_t o = 10; o < 15; o++)
        assert_int_equal(kf_worker_track_add(t, 0, o), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 1);
    assert_int_equal(next, 10); /* nothing done: the first incomplete is 10 */
    /* 11 and 13 done out of order: 10 still blocks. */
    assert_int_equal(kf_worker_track_done(t, 0, 11), KF_OK);
    assert_int_equal(kf_worker_track_done(t, 0, 13), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 1);
    assert_int_equal(next, 10);
    kf_worker_track_committed(t, 0, 10);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 0); /* no progress */
    assert_int_equal(kf_worker_track_done(t, 0, 10), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 1);
    assert_int_equal(next, 12); /* 10, 11 done; 12 not */
    kf_worker_track_committed(t, 0, 12);
    assert_int_equal(kf_worker_track_pending(t, 0), 3);
    assert_int_equal(kf_worker_track_done(t, 0, 12), KF_OK);
    assert_int_equal(kf_worker_track_done(t, 0, 14), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 1);
    assert_int_equal(next, 15); /* all done: past the last one */
    kf_worker_track_committed(t, 0, 15);
    assert_int_equal(kf_worker_track_pending(t, 0), 0);
    assert_int_equal(kf_worker_track_commit_point(t, 0, &next), 0);
    kf_worker_track_destroy(t);
}

static void
test_track_gaps_redelivery_partitions(void **state)
{
    (void)state;
    kf_worker_track_t *t = kf_worker_track_new();
    int64_t next;
    /* Gaps (transaction markers, aborted records) need no result. */
    assert_int_equal(kf_worker_track_add(t, 1, 3), KF_OK);
    assert_int_equal(kf_worker_track_add(t, 1, 7), KF_OK);
    assert_int_equal(kf_worker_track_add(t, 2, 0), KF_OK);
    /* Re-delivery of an offset at or below the last one is refused. */
    assert_int_equal(kf_worker_track_add(t, 1, 7), KF_ERR_EXISTS);
    assert_int_equal(kf_worker_track_add(t, 1, 5), KF_ERR_EXISTS);
    assert_int_equal(kf_worker_track_done(t, 1, 5), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_worker_track_done(t, 3, 0), KF_ERR_NOT_FOUND);
    assert_int_equal(kf_worker_track_done(t, 1, 7), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 1, &next), 1);
    assert_int_equal(next, 3);
    assert_int_equal(kf_worker_track_done(t, 1, 3), KF_OK);
    assert_int_equal(kf_worker_track_commit_point(t, 1, &next), 1);
    assert_int_equal(next, 8);
    /* Partition 2 is independent. */
    assert_int_equal(kf_worker_track_commit_point(t, 2, &next), 1);
    assert_int_equal(next, 0);
    assert_int_equal(kf_worker_track_count(t), 2);
    /* Dropping forgets; a later add starts afresh (new owner semantics). */
    kf_worker_track_drop(t, 1);
    assert_int_equal(kf_worker_track_count(t), 1);
    assert_int_equal(kf_worker_track_partition_at(t, 0), 2);
    assert_int_equal(kf_worker_track_commit_point(t, 1, &next), 0);
    assert_int_equal(kf_worker_track_add(t, 1, 3), KF_OK);
    kf_worker_track_destroy(t);
}

static void
test_track_many(void **state)
{
    (void)state;
    /* Thousands of offsets completing in reverse: the point stays at the first until it is
     * done, then jumps to the end; the array compacts as the head moves. */
    kf_worker_track_t *t = kf_worker_track_new();
    int64_t next;
    for (int round = 0; round < 3; round++) {
        int64_t base = round * 1000;
        for (int64_t o = base; o < base + 1000; o++)
            assert_int_equal(kf_worker_track_add(t, 5, o), KF_OK);
        for (int64_t o = base + 999; o > base; o--)
            assert_int_equal(kf_worker_track_done(t, 5, o), KF_OK);
        assert_int_equal(kf_worker_track_commit_point(t, 5, &next), round == 0 ? 1 : 0);
        if (round == 0)
            assert_int_equal(next, 0);
        assert_int_equal(kf_worker_track_done(t, 5, base), KF_OK);
        assert_int_equal(kf_worker_track_commit_point(t, 5, &next), 1);
        assert_int_equal(next, base + 1000);
        kf_worker_track_committed(t, 5, next);
        assert_int_equal(kf_worker_track_pending(t, 5), 0);
    }
    kf_worker_track_destroy(t);
}

/* ---- batching and flow ---- */

static void
test_batch_decide(void **state)
{
    (void)state;
    kf_worker_batch_in_t in = {.max_batch_seqs = 8, .max_wait_ms = 20, .now_ms = 1000};
    assert_int_equal(kf_worker_batch_decide(&in), -1); /* idle */
    /* Two fresh jobs, the oldest 5 ms old: wait the remaining 15 ms. */
    in.n_active = 2;
    in.n_fresh = 2;
    in.oldest_fresh_ms = 995;
    assert_int_equal(kf_worker_batch_decide(&in), 15);
    /* Waited long enough. */
    in.oldest_fresh_ms = 980;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    in.oldest_fresh_ms = 900;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    /* A full batch goes at once. */
    in.oldest_fresh_ms = 999;
    in.n_active = in.n_fresh = 8;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    /* Running sequences are never stalled for newcomers. */
    in.n_active = 3;
    in.n_fresh = 1;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    /* Draining (paused or stopping): no waiting. */
    in.n_active = in.n_fresh = 1;
    in.draining = 1;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    in.draining = 0;
    /* max_wait 0 disables waiting; a clock going backwards waits the full period at most. */
    in.max_wait_ms = 0;
    assert_int_equal(kf_worker_batch_decide(&in), 0);
    in.max_wait_ms = 20;
    in.oldest_fresh_ms = 2000;
    assert_int_equal(kf_worker_batch_decide(&in), 20);
}

static void
test_flow_decide(void **state)
{
    (void)state;
    assert_int_equal(kf_worker_flow_decide(0, 15, 16, 8), KF_WORKER_FLOW_KEEP);
    assert_int_equal(kf_worker_flow_decide(0, 16, 16, 8), KF_WORKER_FLOW_PAUSE);
    assert_int_equal(kf_worker_flow_decide(0, 40, 16, 8), KF_WORKER_FLOW_PAUSE);
    assert_int_equal(kf_worker_flow_decide(1, 16, 16, 8), KF_WORKER_FLOW_KEEP);
    assert_int_equal(kf_worker_flow_decide(1, 9, 16, 8), KF_WORKER_FLOW_KEEP); /* hysteresis */
    assert_int_equal(kf_worker_flow_decide(1, 8, 16, 8), KF_WORKER_FLOW_RESUME);
    assert_int_equal(kf_worker_flow_decide(1, 0, 16, 8), KF_WORKER_FLOW_RESUME);
    assert_int_equal(kf_worker_flow_decide(0, 0, 16, 8), KF_WORKER_FLOW_KEEP);
}

/* ---- deadlines, cancels, statuses ---- */

static void
test_status_rules(void **state)
{
    (void)state;
    assert_int_equal(kf_worker_deadline_passed(0, 5000), 0);  /* none */
    assert_int_equal(kf_worker_deadline_passed(-1, 5000), 0); /* none */
    assert_int_equal(kf_worker_deadline_passed(5001, 5000), 0);
    assert_int_equal(kf_worker_deadline_passed(5000, 5000), 1);
    assert_int_equal(kf_worker_deadline_passed(1, 5000), 1);

    assert_int_equal(kf_worker_status_of(KF_FINISH_STOP, 0, 0), KF_WORKER_COMPLETED);
    assert_int_equal(kf_worker_status_of(KF_FINISH_LENGTH, 0, 0), KF_WORKER_COMPLETED);
    /* A cancel that lost the race against completion: the text is valid. */
    assert_int_equal(kf_worker_status_of(KF_FINISH_STOP, 1, 0), KF_WORKER_COMPLETED);
    assert_int_equal(kf_worker_status_of(KF_FINISH_DEADLINE, 0, 0), KF_WORKER_EXPIRED);
    assert_int_equal(kf_worker_status_of(KF_FINISH_CANCELLED, 1, 0), KF_WORKER_CANCELLED);
    /* Cancelled by the engine without a cancel record (shutdown): redone, no result. */
    assert_int_equal(kf_worker_status_of(KF_FINISH_CANCELLED, 0, 0), KF_WORKER_DROP);
    assert_int_equal(kf_worker_status_of(KF_FINISH_ERROR, 0, 0), KF_WORKER_FAILED);
    /* Revoked: never a result, whatever happened. */
    assert_int_equal(kf_worker_status_of(KF_FINISH_STOP, 0, 1), KF_WORKER_DROP);
    assert_int_equal(kf_worker_status_of(KF_FINISH_CANCELLED, 1, 1), KF_WORKER_DROP);
    assert_string_equal(kf_worker_status_name(KF_WORKER_EXPIRED), "expired");
    assert_string_equal(kf_worker_status_name(KF_WORKER_CANCELLED), "cancelled");
    assert_string_equal(kf_worker_status_name(KF_WORKER_COMPLETED), "completed");
    assert_string_equal(kf_worker_status_name(KF_WORKER_FAILED), "failed");
}

static void
test_cancel_parse(void **state)
{
    (void)state;
    char rid[128], tid[128], err[256];
    const char *ok = "{\"request_id\":\"r-1\",\"tenant_id\":\"t1\",\"ts\":123}";
    assert_int_equal(kf_worker_cancel_parse(ok, strlen(ok), rid, tid, err, sizeof(err)), KF_OK);
    assert_string_equal(rid, "r-1");
    assert_string_equal(tid, "t1");
    const char *no_tenant = "{\"request_id\":\"r-2\"}";
    assert_int_equal(
        kf_worker_cancel_parse(no_tenant, strlen(no_tenant), rid, tid, err, sizeof(err)), KF_OK);
    assert_string_equal(rid, "r-2");
    assert_string_equal(tid, "");
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"tenant_id\":\"t\"}",
                         "{\"request_id\":\"\"}",
                         "{\"request_id\":5}",
                         "{\"request_id\":\"a\",\"request_id\":\"b\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_not_equal(
            kf_worker_cancel_parse(bad[i], strlen(bad[i]), rid, tid, err, sizeof(err)), KF_OK);
        assert_true(err[0] != '\0' || i == 0);
        assert_string_equal(rid, "");
    }
    assert_int_not_equal(kf_worker_cancel_parse(NULL, 0, rid, tid, err, sizeof(err)), KF_OK);
    /* Oversized value. */
    char big[5000];
    memset(big, ' ', sizeof(big));
    memcpy(big, "{\"request_id\":\"x\"}", 18);
    assert_int_equal(kf_worker_cancel_parse(big, sizeof(big), rid, tid, err, sizeof(err)),
                     KF_ERR_LIMIT);
}

static void
test_cancels_set(void **state)
{
    (void)state;
    kf_worker_cancels_t *c = kf_worker_cancels_new(3, 1000);
    assert_int_equal(kf_worker_cancels_has(c, "a", "t", 0), 0);
    kf_worker_cancels_add(c, "a", "t", 100);
    kf_worker_cancels_add(c, "b", "", 100);
    assert_int_equal(kf_worker_cancels_has(c, "a", "t", 200), 1);
    assert_int_equal(kf_worker_cancels_has(c, "a", "", 200), 1);      /* unknown tenant */
    assert_int_equal(kf_worker_cancels_has(c, "a", "other", 200), 0); /* wrong tenant */
    assert_int_equal(kf_worker_cancels_has(c, "b", "any", 200), 1);
    assert_int_equal(kf_worker_cancels_has(c, "a", "t", 1101), 0); /* past the TTL */
    /* Capacity 3: the oldest is forgotten first. */
    kf_worker_cancels_add(c, "c", "", 300);
    kf_worker_cancels_add(c, "d", "", 300);
    assert_int_equal(kf_worker_cancels_has(c, "a", "t", 400), 0);
    assert_int_equal(kf_worker_cancels_has(c, "b", "", 400), 1);
    assert_int_equal(kf_worker_cancels_has(c, "d", "", 400), 1);
    kf_worker_cancels_destroy(c);
}

/* ---- job and result codec ---- */

static unsigned char *
encode_job(const char *json, size_t *len)
{
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    assert_non_null(j);
    unsigned char *buf = NULL;
    char err[512];
    kf_err_t e = kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_JOB), j, &buf, len, err,
                                     sizeof(err));
    if (e)
        fail_msg("encode: %s", err);
    json_decref(j);
    return buf;
}

static void
test_job_result_codec(void **state)
{
    (void)state;
    size_t len;
    unsigned char *buf = encode_job(
        "{\"request_id\":\"r1\",\"tenant_id\":\"t1\",\"model\":\"m\",\"prompt_text\":\"Hi\","
        "\"sampling\":{\"max_tokens\":7,\"temperature\":0,\"top_p\":0.9,\"top_k\":5,"
        "\"min_p\":0,\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"\\n\",\"END\"]},"
        "\"metadata\":{\"k\":\"v\"},\"priority\":-2,\"deadline\":99000,\"accepted_at\":1000,"
        "\"trace_id\":\"abc\",\"callback_url\":\"https://h/cb\",\"batch_id\":\"b1\","
        "\"lineage\":[{\"symbol\":\"AAPL\",\"topic\":\"kinfer.market\",\"partition\":1,"
        "\"offset\":9,\"event_time\":5}],\"enriched_at\":1001}",
        &len);
    kf_worker_job_t *job = NULL;
    char err[512];
    assert_int_equal(kf_worker_job_decode(buf, len, &job, err, sizeof(err)), KF_OK);
    assert_string_equal(job->request_id, "r1");
    assert_string_equal(job->prompt, "Hi");
    assert_int_equal(job->max_tokens, 7);
    assert_true(job->sampling.temperature == 0.0f);
    assert_int_equal(job->sampling.top_k, 5);
    assert_int_equal(job->sampling.seed, 42);
    assert_int_equal(job->n_stop, 2);
    assert_string_equal(job->stop[1], "END");
    assert_int_equal(job->priority, -2);
    assert_int_equal(job->deadline_ms, 99000);
    assert_string_equal(job->callback_url, "https://h/cb");

    kf_worker_outcome_t o = {.status = KF_WORKER_COMPLETED,
                             .text = "hello",
                             .finish_reason = "length",
                             .prompt_tokens = 2,
                             .completion_tokens = 7,
                             .model = "m",
                             .model_sha256 = "00ff",
                             .produced_at_ms = 2000};
    unsigned char *rbuf = NULL;
    size_t rlen = 0;
    assert_int_equal(kf_worker_result_encode(job, &o, &rbuf, &rlen, err, sizeof(err)), KF_OK);
    json_t *res = NULL;
    assert_int_equal(kf_avro_decode_json(NULL, rbuf, rlen, NULL, &res, NULL, err, sizeof(err)),
                     KF_OK);
    assert_string_equal(json_string_value(json_object_get(res, "status")), "completed");
    assert_string_equal(json_string_value(json_object_get(res, "text")), "hello");
    assert_string_equal(json_string_value(json_object_get(res, "finish_reason")), "length");
    assert_int_equal(json_integer_value(json_object_get(res, "completion_tokens")), 7);
    assert_string_equal(json_string_value(json_object_get(res, "trace_id")), "abc");
    assert_string_equal(json_string_value(json_object_get(res, "callback_url")), "https://h/cb");
    assert_string_equal(json_string_value(json_object_get(res, "batch_id")), "b1");
    assert_string_equal(json_string_value(json_object_get(res, "model_sha256")), "00ff");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "metadata"), "k")),
                        "v");
    json_t *lin = json_object_get(res, "lineage");
    assert_int_equal(json_array_size(lin), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(lin, 0), "offset")), 9);
    assert_true(json_is_null(json_object_get(res, "error")));
    json_decref(res);
    free(rbuf);

    /* A cancelled outcome: no finish reason, an error text. */
    kf_worker_outcome_t c = {.status = KF_WORKER_CANCELLED, .error = "cancelled"};
    assert_int_equal(kf_worker_result_encode(job, &c, &rbuf, &rlen, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_avro_decode_json(NULL, rbuf, rlen, NULL, &res, NULL, err, sizeof(err)),
                     KF_OK);
    assert_string_equal(json_string_value(json_object_get(res, "status")), "cancelled");
    assert_true(json_is_null(json_object_get(res, "finish_reason")));
    json_decref(res);
    free(rbuf);
    kf_worker_job_destroy(job);
    free(buf);
}

static void
test_job_poison(void **state)
{
    (void)state;
    kf_worker_job_t *job = NULL;
    char err[512];
    /* Not Avro at all, truncated, empty. */
    assert_int_not_equal(kf_worker_job_decode("garbage!!!!!", 12, &job, err, sizeof(err)), KF_OK);
    assert_null(job);
    assert_int_not_equal(kf_worker_job_decode(NULL, 0, &job, err, sizeof(err)), KF_OK);
    size_t len;
    unsigned char *buf = encode_job("{\"request_id\":\"r1\",\"tenant_id\":\"t\",\"model\":\"m\","
                                    "\"prompt_text\":\"x\",\"accepted_at\":1,\"enriched_at\":1}",
                                    &len);
    assert_int_not_equal(kf_worker_job_decode(buf, len - 1, &job, err, sizeof(err)), KF_OK);
    assert_null(job);
    /* Decodes, but max_tokens 0 can never run. */
    free(buf);
    buf = encode_job("{\"request_id\":\"r1\",\"tenant_id\":\"t\",\"model\":\"m\","
                     "\"prompt_text\":\"x\",\"accepted_at\":1,\"enriched_at\":1,"
                     "\"sampling\":{\"max_tokens\":0}}",
                     &len);
    assert_int_equal(kf_worker_job_decode(buf, len, &job, err, sizeof(err)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "max_tokens"));
    free(buf);
    /* Another record type (an AuditEvent-shaped InferenceResult) is rejected. */
    json_t *r = json_pack("{s:s, s:s, s:s, s:I}", "request_id", "r", "tenant_id", "t", "status",
                          "completed", "produced_at", (json_int_t)1);
    unsigned char *rb = NULL;
    assert_int_equal(kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_RESULT), r, &rb, &len,
                                         err, sizeof(err)),
                     KF_OK);
    json_decref(r);
    assert_int_not_equal(kf_worker_job_decode(rb, len, &job, err, sizeof(err)), KF_OK);
    assert_null(job);
    free(rb);
}

static void
test_utf8_sanitize(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"caf\xC3\xA9", 5, "caf\xC3\xA9"},                                   /* valid 2-byte */
        {"\xE2\x82\xAC\xF0\x9F\x98\x80", 7, "\xE2\x82\xAC\xF0\x9F\x98\x80"}, /* 3, 4 */
        {"ab\xE2\x82", 4, "ab\xEF\xBF\xBD\xEF\xBF\xBD"},                     /* cut mid-character */
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                         /* overlong */
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},         /* surrogate */
        {"\xF4\x90\x80\x80", 4,
         "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
        {"a\0b", 3,
         "a\xEF\xBF\xBD"
         "b"},                         /* NUL */
        {"\x80x", 2, "\xEF\xBF\xBDx"}, /* stray continuation */
        {"", 0, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *o = kf_worker_utf8_sanitize(cases[i].in, cases[i].len);
        assert_non_null(o);
        assert_string_equal(o, cases[i].out);
        free(o);
    }
    char *o = kf_worker_utf8_sanitize(NULL, 10);
    assert_string_equal(o, "");
    free(o);
}

static void
test_pick_backend(void **state)
{
    (void)state;
    assert_string_equal(kf_worker_pick_backend("cpu"), "cpu");
    assert_string_equal(kf_worker_pick_backend("cuda"), "cuda");
    assert_null(kf_worker_pick_backend("tpu"));
    const char *a = kf_worker_pick_backend("auto");
    assert_true(!strcmp(a, "cpu") || !strcmp(a, "cuda"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_track_contiguous),
        cmocka_unit_test(test_track_gaps_redelivery_partitions),
        cmocka_unit_test(test_track_many),
        cmocka_unit_test(test_batch_decide),
        cmocka_unit_test(test_flow_decide),
        cmocka_unit_test(test_status_rules),
        cmocka_unit_test(test_cancel_parse),
        cmocka_unit_test(test_cancels_set),
        cmocka_unit_test(test_job_result_codec),
        cmocka_unit_test(test_job_poison),
        cmocka_unit_test(test_utf8_sanitize),
        cmocka_unit_test(test_pick_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
