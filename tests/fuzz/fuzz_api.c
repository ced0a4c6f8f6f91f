/*
 * libFuzzer target for the HTTP API's request validation: bytes -> kf_json_parse_object (the
 * server's limits) -> kf_api_request_build, once as a single request and once as a batch line;
 * the first line of the input is also routed as a path and parsed as an RFC 3339 deadline.
 *
 * Besides "never crash, never leak", it checks the property the server relies on: whatever
 * validation accepts encodes with the real InferenceRequest schema (so a 202 can never turn
 * into an encoding failure), and every rejection is a 400 naming a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"
#include "kf_avro.h"
#include "kf_json.h"

static void
fuzz_build(const json_t *body, const char *batch_id)
{
    kf_api_req_ids_t ids = {.request_id = "0f8fad5b-d9cb-469f-a165-70867728950e",
                            .tenant_id = "fuzz",
                            .idempotency_key = "k",
                            .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                            .accepted_at_ms = 1900000000000LL,
                            .batch_id = batch_id};
    kf_api_limits_t lim = {.max_tokens = 4096,
                           .max_prompt_bytes = 2048,
                           .max_messages = 16,
                           .now_ms = 1900000000000LL};
    kf_api_error_t err = {0};
    json_t *ir = NULL;
    if (kf_api_request_build(body, &ids, &lim, &ir, &err) != KF_OK) {
        if (err.status != 400 || !err.message[0])
            abort();
        return;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    char es[512];
    if (kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_REQUEST), ir, &buf, &len, es,
                            sizeof(es)) != KF_OK)
        abort(); /* accepted but not encodable: the server would fail after storing it */
    free(buf);
    json_decref(ir);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kf_json_limits_t jl = {.max_bytes = 1 << 20, .max_depth = 32};
    json_t *body = NULL;
    char es[512];
    if (kf_json_parse_object(data, size, &jl, &body, es, sizeof(es)) == KF_OK) {
        fuzz_build(body, NULL);
        fuzz_build(body, "7d444840-9dc0-11d1-b245-5ffdce74fad2");
        json_decref(body);
    }
    char line[256];
    size_t n = 0;
    while (n < size && n < sizeof(line) - 1 && data[n] != '\n' && data[n] != '\0') {
        line[n] = (char)data[n];
        n++;
    }
    line[n] = '\0';
    char param[64], allow[64];
    const kf_api_route_t *route;
    kf_api_route_match("GET", line, param, sizeof(param), allow, sizeof(allow), &route);
    int64_t ms;
    kf_api_parse_rfc3339(line, &ms);
    (void)kf_api_is_uuid(line);
    return 0;
}
