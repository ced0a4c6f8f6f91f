/*
 * fuzz_report.c: libFuzzer target for the report renderers and the InferenceResult mapping
 * (risk/report*.c). The input is JSON text: parsed strictly (kf_json), then used both as a
 * report document (rendered as JSON, Markdown and HTML) and as an InferenceResult
 * (kf_report_meta_from_result). Invariants: no crash, no leak, and the HTML never contains a
 * "<script" that the renderer did not write (it writes none).
 */
#include "kf_json.h"
#include "kf_report.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = NULL;
    char e[256];
    kf_json_limits_t lim = {.max_bytes = 1 << 16, .max_depth = 32};
    if (kf_json_parse(data, size, &lim, &doc, e, sizeof(e)) != KF_OK)
        return 0;
    for (int f = KF_REPORT_JSON; f <= KF_REPORT_HTML; f++) {
        kf_buf_t b;
        kf_buf_init(&b, 0);
        kf_err_t err = kf_report_render(doc, (kf_report_format_t)f, &b, e, sizeof(e));
        if (err == KF_OK && f == KF_REPORT_HTML && b.data && strstr(b.data, "<script"))
            abort();
        kf_buf_free(&b);
    }
    kf_report_meta_t meta;
    if (kf_report_meta_from_result(doc, &meta, e, sizeof(e)) == KF_OK) {
        /* Every tick the mapping kept must have been an object of the lineage. */
        if (meta.nticks > json_array_size(json_object_get(doc, "lineage")))
            abort();
    }
    kf_report_meta_free(&meta);
    json_decref(doc);
    return 0;
}
