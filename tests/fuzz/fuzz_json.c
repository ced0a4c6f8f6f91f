/*
 * libFuzzer target for the strict JSON parser (kf_json_parse) and the path getters.
 *
 * Property checked: a document we accept encodes (kf_json_dump) and parses back, so nothing
 * accepted from outside can later fail to serialise into a Kafka record or an HTTP reply.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kf_json.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[512];
    json_t *json = NULL;
    kf_json_limits_t lim = {.max_bytes = 1 << 16, .max_depth = 32};
    if (kf_json_parse(data, size, &lim, &json, errstr, sizeof(errstr)) != KF_OK)
        return 0;
    /* Getters on a few paths: type mismatches must come back as errors, never crashes. */
    static const char *const paths[] = {"a",   "a.b",    "a[0]",           "a[0].b",
                                        "[0]", "prompt", "sampling.top_p", "messages[1].content"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const char *s;
        double d;
        int64_t n;
        int b;
        json_t *j;
        kf_json_get_str(json, paths[i], 16, &s, errstr, sizeof(errstr));
        kf_json_get_number(json, paths[i], 0, 1, &d, errstr, sizeof(errstr));
        kf_json_opt_int(json, paths[i], -10, 10, &n, errstr, sizeof(errstr));
        kf_json_opt_bool(json, paths[i], &b, errstr, sizeof(errstr));
        kf_json_get_array(json, paths[i], 4, &j, errstr, sizeof(errstr));
        kf_json_get_object(json, paths[i], &j, errstr, sizeof(errstr));
    }
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    if (kf_json_dump(json, &buf) != KF_OK)
        abort();
    json_t *again = NULL;
    kf_json_limits_t big = {.max_bytes = buf.len + 1, .max_depth = 32};
    if (kf_json_parse(buf.data, buf.len, &big, &again, errstr, sizeof(errstr)) != KF_OK) {
        fprintf(stderr, "re-parse failed: %s\n%s\n", errstr, buf.data);
        abort();
    }
    if (!json_equal(json, again))
        abort();
    json_decref(again);
    kf_buf_free(&buf);
    json_decref(json);
    return 0;
}
