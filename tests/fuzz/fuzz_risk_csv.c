/*
 * libFuzzer target for the risk CSV loader (risk/risk_csv.c) and, through it, the analytics.
 *
 * The input holds the seven tables kf_risk_csv_load reads (portfolios, instruments, positions,
 * price_history, fx_rates, risk_limits, stress_shocks), separated by lines "%%\n", for portfolio
 * P1 as of 2024-10-04. Whatever parses is computed and rendered as JSON: hostile numbers must
 * end in an error message, never a crash, a leak or a NaN in the report.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf_risk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[512];
    kf_risk_csv_state_t *st;
    if (kf_risk_csv_state_new("P1", 20000, &st, errstr, sizeof(errstr)) != KF_OK)
        abort();
    const char *p = (const char *)data, *end = p + size;
    kf_err_t err = KF_OK;
    for (int t = 0; t < KF_RISK_CSV__COUNT && !err; t++) {
        /* The section runs to the next "\n%%\n" (or the end). */
        const char *q = p;
        while (q < end && !(end - q >= 4 && !memcmp(q, "\n%%\n", 4)))
            q++;
        err = kf_risk_csv_parse(st, (kf_risk_csv_table_t)t, "fuzz.csv", p, (size_t)(q - p), errstr,
                                sizeof(errstr));
        p = q < end ? q + 4 : end;
    }
    kf_risk_input_t *in = NULL;
    if (!err && kf_risk_csv_finish(st, &in, errstr, sizeof(errstr)) == KF_OK) {
        kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
        opts.as_of = 20000;
        kf_risk_report_t *rep = NULL;
        if (kf_risk_compute(in, &opts, &rep, errstr, sizeof(errstr)) == KF_OK) {
            /* A computed report has only finite numbers, so it always renders. */
            json_t *doc = kf_risk_report_to_json(rep, 1);
            if (!doc)
                abort();
            json_decref(doc);
            kf_risk_report_destroy(rep);
        }
        kf_risk_input_destroy(in);
    }
    kf_risk_csv_state_destroy(st);
    return 0;
}
