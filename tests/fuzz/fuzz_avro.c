/*
 * libFuzzer target for the kf_avro decoder: every input must decode cleanly or fail with an
 * error, never crash, leak or read out of bounds (run it under ASan/UBSan).
 *
 * Each input is tried twice: as a whole single-object frame (header parsing, unknown
 * fingerprints), and as a body for the catalog schema picked by its first byte, so the
 * fuzzer reaches the body validator of every record without having to guess a 64-bit
 * fingerprint. Decoded values must then survive re-encoding, the JSON round trip (same
 * bytes again) and resolution against another schema.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kf_avro.h"

static void
kf_fuzz_check(const kf_avro_catalog_t *cat, const uint8_t *buf, size_t len, size_t other)
{
    char err[512];
    avro_value_t v;
    const kf_avro_schema_t *writer = NULL;
    if (kf_avro_decode(cat, buf, len, NULL, &v, &writer, err, sizeof(err)) != KF_OK)
        return;

    /* What we decoded we must be able to write again, and read back. */
    unsigned char *enc = NULL, *enc2 = NULL;
    size_t enc_len = 0, enc2_len = 0;
    KF_ASSERT(kf_avro_encode(writer, &v, &enc, &enc_len, err, sizeof(err)) == KF_OK);
    avro_value_t v2;
    KF_ASSERT(kf_avro_decode(cat, enc, enc_len, NULL, &v2, NULL, err, sizeof(err)) == KF_OK);
    avro_value_decref(&v2);

    /* JSON and back gives the same canonical bytes (NaN/Inf have no JSON form: skipped). */
    json_t *j = NULL;
    if (kf_avro_to_json(&v, &j, err, sizeof(err)) == KF_OK) {
        KF_ASSERT(kf_avro_encode_json(writer, j, &enc2, &enc2_len, err, sizeof(err)) == KF_OK);
        KF_ASSERT(enc2_len == enc_len && memcmp(enc, enc2, enc_len) == 0);
        json_decref(j);
        free(enc2);
    }

    /* Resolution into another schema either works or reports a clean error. */
    const kf_avro_schema_t *reader = kf_avro_catalog_at(cat, other % kf_avro_catalog_count(cat));
    if (kf_avro_decode(cat, buf, len, reader, &v2, NULL, err, sizeof(err)) == KF_OK)
        avro_value_decref(&v2);
    free(enc);
    avro_value_decref(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const kf_avro_catalog_t *cat = kf_avro_catalog_default();
    size_t n = kf_avro_catalog_count(cat);

    kf_fuzz_check(cat, data, size, size);
    if (size < 1)
        return 0;

    /* First byte picks a schema; the rest is its body. An exact-size heap copy lets ASan
     * catch any read past the end. */
    const kf_avro_schema_t *ks = kf_avro_catalog_at(cat, data[0] % n);
    uint64_t fp = kf_avro_schema_fingerprint(ks);
    size_t len = KF_AVRO_HEADER_SIZE + size - 1;
    uint8_t *frame = malloc(len);
    if (!frame)
        return 0;
    frame[0] = KF_AVRO_MAGIC0;
    frame[1] = KF_AVRO_MAGIC1;
    for (int i = 0; i < 8; i++)
        frame[2 + i] = (uint8_t)(fp >> (8 * i));
    memcpy(frame + KF_AVRO_HEADER_SIZE, data + 1, size - 1);
    kf_fuzz_check(cat, frame, len, (size_t)data[0] / n + 1);
    free(frame);
    return 0;
}
