/*
 * worker_job.c: InferenceJob records in, InferenceResult records out, for the inference
 * worker. A job is decoded once through kf_avro's JSON mapping (every byte validated there)
 * and its fields are checked for what the engine needs; the result copies the job's lineage,
 * metadata and routing fields so downstream stages never need the job again. Also the model
 * file's SHA-256, computed once at load.
 */
#include "kf_worker.h"

#include "kf_avro.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_JOB_MAX_STOPS 16

void
kf_worker_job_destroy(kf_worker_job_t *job)
{
    if (!job)
        return;
    free(job->stop);
    free(job->messages);
    json_decref(job->json);
    free(job);
}

/* A string field (plain or nullable); NULL when absent or null. Rejects embedded NULs, which
 * would silently cut the text short in C. */
static kf_err_t
kf_job_str(json_t *root, const char *field, const char **out, char *errstr, size_t errstr_size)
{
    json_t *j = json_object_get(root, field);
    *out = NULL;
    if (!j || json_is_null(j))
        return KF_OK;
    if (!json_is_string(j))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "InferenceJob.%s: expected a string", field);
    if (strlen(json_string_value(j)) != json_string_length(j))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "InferenceJob.%s: contains a NUL character", field);
    *out = json_string_value(j);
    return KF_OK;
}

static double
kf_job_num(json_t *obj, const char *field, double def)
{
    json_t *j = json_object_get(obj, field);
    return json_is_number(j) ? json_number_value(j) : def;
}

kf_err_t
kf_worker_job_decode(
    const void *buf, size_t len, kf_worker_job_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(out);
    *out = NULL;
    if (!buf || len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "empty record value");
    const kf_avro_schema_t *reader = kf_avro_schema_get(KF_AVRO_INFERENCE_JOB);
    const kf_avro_schema_t *writer = NULL;
    json_t *root = NULL;
    /* With the job schema as reader, an older or newer InferenceJob resolves and any other
     * record type fails resolution: both are checked by the codec. */
    kf_err_t err = kf_avro_decode_json(NULL, buf, len, reader, &root, &writer, errstr, errstr_size);
    if (err)
        return err;
    kf_worker_job_t *job = calloc(1, sizeof(*job));
    if (!job) {
        json_decref(root);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    job->json = root;
    err = kf_job_str(root, "request_id", &job->request_id, errstr, errstr_size);
    if (!err)
        err = kf_job_str(root, "tenant_id", &job->tenant_id, errstr, errstr_size);
    if (!err)
        err = kf_job_str(root, "model", &job->model, errstr, errstr_size);
    if (!err)
        err = kf_job_str(root, "prompt_text", &job->prompt, errstr, errstr_size);
    if (!err)
        err = kf_job_str(root, "trace_id", &job->trace_id, errstr, errstr_size);
    if (!err)
        err = kf_job_str(root, "callback_url", &job->callback_url, errstr, errstr_size);
    if (err)
        goto fail;
    if (!job->request_id || !*job->request_id || strlen(job->request_id) > 127) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "InferenceJob.request_id: must be 1..127 bytes");
        goto fail;
    }
    if (!job->tenant_id)
        job->tenant_id = "";
    if (!job->model)
        job->model = "";
    if (!job->prompt)
        job->prompt = "";
    if (!job->trace_id)
        job->trace_id = "";

    json_t *s = json_object_get(root, "sampling");
    kf_request_t defaults;
    kf_request_init(&defaults);
    job->sampling = defaults.sampling;
    json_int_t max_tokens = json_integer_value(json_object_get(s, "max_tokens"));
    if (max_tokens < 1) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "InferenceJob.sampling.max_tokens: must be >= 1, got %lld",
                         (long long)max_tokens);
        goto fail;
    }
    job->max_tokens = max_tokens > (json_int_t)UINT32_MAX ? UINT32_MAX : (uint32_t)max_tokens;
    /* The API's semantics: 0 disables top_k / min_p, 1 disables top_p and the penalty. The
     * engine validates ranges at submit (a bad value fails that job, not the worker). */
    job->sampling.temperature = (float)kf_job_num(s, "temperature", 1.0);
    job->sampling.top_p = (float)kf_job_num(s, "top_p", 1.0);
    job->sampling.top_k = (int32_t)json_integer_value(json_object_get(s, "top_k"));
    job->sampling.min_p = (float)kf_job_num(s, "min_p", 0.0);
    job->sampling.repeat_penalty = (float)kf_job_num(s, "repetition_penalty", 1.0);
    json_t *seed = json_object_get(s, "seed");
    job->sampling.seed =
        json_is_integer(seed) ? (uint64_t)json_integer_value(seed) : KF_SAMPLER_SEED_RANDOM;
    json_t *stops = json_object_get(s, "stop");
    size_t n_stop = json_is_array(stops) ? json_array_size(stops) : 0;
    if (n_stop > KF_JOB_MAX_STOPS) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "InferenceJob.sampling.stop: at most %d strings, got %zu",
                         KF_JOB_MAX_STOPS, n_stop);
        goto fail;
    }
    if (n_stop) {
        job->stop = calloc(n_stop, sizeof(*job->stop));
        if (!job->stop) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_stop; i++) {
            json_t *st = json_array_get(stops, i);
            if (!json_is_string(st) || strlen(json_string_value(st)) != json_string_length(st)) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "InferenceJob.sampling.stop[%zu]: not a plain string", i);
                goto fail;
            }
            job->stop[job->n_stop++] = json_string_value(st);
        }
    }
    /* Chat turns: the schema says a non-empty list replaces prompt_text, and the engine
     * applies the model's chat template to them (kf_request_t.messages). */
    json_t *msgs = json_object_get(root, "messages");
    size_t n_msgs = json_is_array(msgs) ? json_array_size(msgs) : 0;
    if (n_msgs) {
        job->messages = calloc(n_msgs, sizeof(*job->messages));
        if (!job->messages) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_msgs; i++) {
            json_t *m = json_array_get(msgs, i);
            const char *role = NULL, *content = NULL;
            err = kf_job_str(m, "role", &role, errstr, errstr_size);
            if (!err)
                err = kf_job_str(m, "content", &content, errstr, errstr_size);
            if (err)
                goto fail;
            if (!role) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                                 "InferenceJob.messages[%zu]: role missing", i);
                goto fail;
            }
            job->messages[i] = (kf_chat_msg_t){.role = role, .content = content ? content : ""};
        }
        job->n_messages = n_msgs;
    }
    job->priority = (int)json_integer_value(json_object_get(root, "priority"));
    json_t *dl = json_object_get(root, "deadline");
    job->deadline_ms = json_is_integer(dl) ? (int64_t)json_integer_value(dl) : 0;
    job->accepted_at_ms = (int64_t)json_integer_value(json_object_get(root, "accepted_at"));
    *out = job;
    return KF_OK;

fail:
    kf_worker_job_destroy(job);
    return err;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid or truncated
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t
kf_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0x01 && c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* beyond U+10FFFF */
    } else {
        return 0; /* NUL, continuation byte as lead, 0xC0/0xC1, 0xF5.. */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

char *
kf_worker_utf8_sanitize(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    if (!text)
        len = 0;
    /* Worst case every byte becomes the 3-byte replacement character. */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t n = kf_utf8_seq(s + i, len - i);
        if (n) {
            memcpy(out + k, s + i, n);
            k += n;
            i += n;
        } else {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    out[k] = '\0';
    return out;
}

/* Sets a nullable string field from the job's value (or null). */
static int
kf_result_copy(json_t *res, json_t *jobj, const char *field)
{
    json_t *v = json_object_get(jobj, field);
    return json_object_set(res, field, v ? v : json_null());
}

kf_err_t
kf_worker_result_encode(const kf_worker_job_t *job,
                        const kf_worker_outcome_t *o,
                        unsigned char **out_buf,
                        size_t *out_len,
                        char *errstr,
                        size_t errstr_size)
{
    KF_ASSERT(job && o && out_buf && out_len);
    *out_buf = NULL;
    *out_len = 0;
    json_t *res = json_object();
    json_t *ids = NULL;
    if (!res)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    if (o->token_ids) {
        ids = json_array();
        for (uint32_t i = 0; ids && i < o->n_token_ids; i++)
            json_array_append_new(ids, json_integer(o->token_ids[i]));
    }
    int rc = 0;
    rc |= json_object_set_new(res, "request_id", json_string(job->request_id));
    rc |= json_object_set_new(res, "tenant_id", json_string(job->tenant_id));
    rc |= json_object_set_new(res, "status", json_string(kf_worker_status_name(o->status)));
    /* Generated text is arbitrary bytes (a stop at max_tokens can split a character). */
    char *text =
        kf_worker_utf8_sanitize(o->text, o->text && !o->text_len ? strlen(o->text) : o->text_len);
    if (!text) {
        json_decref(res);
        json_decref(ids);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    rc |= json_object_set_new(res, "text", json_string(text));
    free(text);
    rc |= json_object_set_new(res, "token_ids", ids ? ids : json_null());
    rc |= json_object_set_new(res, "finish_reason",
                              o->finish_reason ? json_string(o->finish_reason) : json_null());
    rc |= json_object_set_new(res, "prompt_tokens", json_integer(o->prompt_tokens));
    rc |= json_object_set_new(res, "completion_tokens", json_integer(o->completion_tokens));
    rc |= json_object_set_new(res, "queue_ms", json_real(o->queue_ms));
    rc |= json_object_set_new(res, "prefill_ms", json_real(o->prefill_ms));
    rc |= json_object_set_new(res, "decode_ms", json_real(o->decode_ms));
    rc |= json_object_set_new(res, "model", json_string(o->model ? o->model : ""));
    rc |= json_object_set_new(res, "model_sha256",
                              json_string(o->model_sha256 ? o->model_sha256 : ""));
    rc |= json_object_set_new(res, "error", o->error ? json_string(o->error) : json_null());
    rc |= json_object_set_new(res, "produced_at", json_integer(o->produced_at_ms));
    rc |= json_object_set_new(res, "trace_id", json_string(job->trace_id));
    rc |= kf_result_copy(res, job->json, "lineage");
    rc |= kf_result_copy(res, job->json, "callback_url");
    rc |= kf_result_copy(res, job->json, "metadata");
    rc |= kf_result_copy(res, job->json, "batch_id");
    rc |= kf_result_copy(res, job->json, "custom_id");
    kf_err_t err;
    if (rc) {
        /* json_string() returns NULL for invalid UTF-8 (job strings were validated by the
         * Avro decoder, the text is sanitized) and on out of memory. */
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "result for %s: a field is not valid UTF-8 or memory ran out",
                         job->request_id);
    } else {
        err = kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_RESULT), res, out_buf,
                                  out_len, errstr, errstr_size);
    }
    json_decref(res);
    return err;
}

kf_err_t
kf_worker_file_sha256(const char *path, char out[65], char *errstr, size_t errstr_size)
{
    KF_ASSERT(path && out);
    out[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot open %s: %s", path,
                          strerror(errno));
    kf_err_t err = KF_OK;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *chunk = malloc(1 << 20);
    if (!ctx || !chunk || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "SHA-256 init failed");
        goto out;
    }
    size_t n;
    while ((n = fread(chunk, 1, 1 << 20, fp)) > 0)
        if (EVP_DigestUpdate(ctx, chunk, n) != 1) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "SHA-256 update failed");
            goto out;
        }
    if (ferror(fp)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_IO, "reading %s failed", path);
        goto out;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL, "SHA-256 final failed");
        goto out;
    }
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
out:
    EVP_MD_CTX_free(ctx);
    free(chunk);
    fclose(fp);
    return err;
}
