/*
 * enrich_risk.c: the risk_report renderer hook. When the consumers library is compiled with
 * risk/kf_risk.h on its include path (consumers/CMakeLists.txt linking kf_risk), the default
 * hook loads the portfolio from PostgreSQL, computes its metrics as of the requested date and
 * hands back the JSON report; otherwise the hook is NULL and risk_report requests fail with
 * "risk_report not available in this build". The enricher never depends on it to build.
 */
#include "kf_enrich.h"

#if defined(__has_include)
#if __has_include("kf_risk.h")
#define KF_ENRICH_HAVE_RISK 1
#endif
#endif

#ifdef KF_ENRICH_HAVE_RISK
#include "kf_risk.h"

static kf_err_t
kf_enrich_risk_compute(void *opaque,
                       kf_pg_t *pg,
                       const char *portfolio_id,
                       const char *as_of,
                       json_t **out_metrics,
                       char *errstr,
                       size_t errstr_size)
{
    (void)opaque;
    int32_t day = 0;
    kf_risk_input_t *in = NULL;
    kf_risk_report_t *rep = NULL;
    kf_err_t err = kf_risk_date_parse(as_of, &day, errstr, errstr_size);
    if (err)
        return KF_ERR_INVALID_ARG;
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    opts.as_of = day;
    if ((err = kf_risk_db_load(pg, portfolio_id, day, 0, &in, errstr, errstr_size)))
        return err;
    err = kf_risk_compute(in, &opts, &rep, errstr, errstr_size);
    kf_risk_input_destroy(in);
    if (err)
        return err;
    *out_metrics = kf_risk_report_to_json(rep, 0);
    kf_risk_report_destroy(rep);
    if (!*out_metrics)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    return KF_OK;
}

const kf_enrich_risk_fn kf_enrich_risk_default = kf_enrich_risk_compute;
#else
const kf_enrich_risk_fn kf_enrich_risk_default = NULL;
#endif
