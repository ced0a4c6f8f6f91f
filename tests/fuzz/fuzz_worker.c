/*
 * fuzz_worker: libFuzzer target for the inference worker's parsers of outside bytes
 * (inference/worker_logic.c, worker_job.c): the first byte picks the cancel record parser
 * (JSON from the control topic) or the InferenceJob decoder (Avro from the jobs topic, then
 * the worker's field checks and, for jobs that decode, the result encoder and the UTF-8
 * sanitizer). Any input must give KF_OK or a clean error, never a crash or a leak.
 */
#include "kf_worker.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char errstr[512];
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        char rid[128], tid[128];
        (void)kf_worker_cancel_parse(body, len, rid, tid, errstr, sizeof(errstr));
        return 0;
    }
    kf_worker_job_t *job = NULL;
    if (kf_worker_job_decode(body, len, &job, errstr, sizeof(errstr)) == KF_OK) {
        /* The prompt bytes double as generated text: any bytes must encode. */
        kf_worker_outcome_t o = {.status = KF_WORKER_COMPLETED,
                                 .text = job->prompt,
                                 .finish_reason = "stop",
                                 .model = "fuzz",
                                 .model_sha256 = "00"};
        unsigned char *buf = NULL;
        size_t n = 0;
        if (kf_worker_result_encode(job, &o, &buf, &n, errstr, sizeof(errstr)) != KF_OK)
            abort(); /* a decoded job always has an encodable result */
        free(buf);
        kf_worker_job_destroy(job);
    }
    char *clean = kf_worker_utf8_sanitize((const char *)body, len);
    free(clean);
    return 0;
}
