/*
 * report_int.h: helpers shared by the report*.c files (never included outside risk/):
 * locale-free number formatting, tolerant getters over the report document, UTF-8 repair.
 */
#ifndef KF_REPORT_INT_H
#define KF_REPORT_INT_H

#include "kf_report.h"

#include <stdbool.h>

/* Shortest of %.15g/%.16g/%.17g that reads back exactly; "null" for non-finite. */
char *kf_report_fmt_num(double v, char *buf, size_t size);
/* Fixed decimals with ',' thousands separators ("-1,234,567.89"); "n/a" for NaN. */
char *kf_report_fmt_fixed(double v, int decimals, char *buf, size_t size);
/* A fraction as a percentage with `decimals` digits ("12.35%"); "n/a" for NaN. */
char *kf_report_fmt_pct(double frac, int decimals, char *buf, size_t size);
/* Epoch milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
char *kf_report_fmt_time(int64_t ms, char *buf, size_t size);

/* Tolerant document getters: the value at a kf_json_path, or the fallback when absent or of
 * another type. Strings are borrowed from the document. */
double kf_report_num(const json_t *doc, const char *path); /* NaN when absent */
const char *kf_report_str(const json_t *doc, const char *path, const char *fallback);
const json_t *kf_report_arr(const json_t *doc, const char *path); /* NULL when absent */

/* A malloc'd copy of text in which every invalid UTF-8 sequence becomes U+FFFD (NULL on out of
 * memory; NULL text gives ""). */
char *kf_report_utf8_fix(const char *text);

/* The renderers (report_md.c, report_html.c). */
kf_err_t kf_report_render_md(const json_t *doc, kf_buf_t *out);
kf_err_t kf_report_render_html(const json_t *doc, kf_buf_t *out);

/* Writes `len` bytes to path atomically (temporary file in the same directory + rename). */
kf_err_t kf_report_write_file(
    const char *path, const char *data, size_t len, char *errstr, size_t errstr_size);

#endif /* KF_REPORT_INT_H */
