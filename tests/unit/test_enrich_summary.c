/*
 * Unit tests for kf_enrich_risk_summary(): the exact line rendered from a hand-made risk
 * report JSON (same shape as kf_risk_report_to_json), the choice of confidence and horizon,
 * which breaches are named, and refusal when a headline figure is missing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_enrich.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Value 32,239,188.58; historical VaR/ES at 95 and 99, 1 and 10 days; three sectors;
 * limits with a VaR, a sector and an ES breach; two stress scenarios. */
static const char *const metrics_json =
    "{\"portfolio\":\"P001\",\"base_currency\":\"USD\",\"value\":32239188.58,"
    "\"historical\":{\"95\":{\"var_1d\":480291.2,\"es_1d\":724849.1,\"var_10d\":1518814.2,"
    "\"es_10d\":2292174.2},\"99\":{\"var_1d\":1004892.49,\"es_1d\":1102367.25,"
    "\"var_10d\":3177749.08,\"es_10d\":3485991.34}},"
    "\"ewma\":{\"vol_annual\":0.104409},\"drawdown\":{\"max\":0.249263},"
    "\"concentration\":{\"max_weight_symbol\":\"MERP.CH\"},"
    "\"exposures\":{\"sector\":[{\"key\":\"Utilities\",\"weight\":0.370974},"
    "{\"key\":\"Corporate\",\"weight\":0.167020},{\"key\":\"Financials\",\"weight\":0.156},"
    "{\"key\":\"Energy\",\"weight\":0.02}]},"
    "\"limits\":[{\"metric\":\"var_99_1d\",\"threshold\":0.02,\"observed\":0.031170,"
    "\"breached\":true},{\"metric\":\"es_99_1d\",\"threshold\":0.028,\"observed\":0.0342,"
    "\"breached\":true},{\"metric\":\"max_sector_weight\",\"threshold\":0.30,\"observed\":0.37,"
    "\"breached\":true},{\"metric\":\"max_weight_single\",\"threshold\":0.15,"
    "\"observed\":0.13,\"breached\":false}],"
    "\"stress\":[{\"scenario\":\"rates_up_200bp\",\"pnl_pct\":-0.0557},"
    "{\"scenario\":\"gfc_2008\",\"pnl_pct\":-0.330375}]}";

static json_t *
load(void)
{
    json_error_t jerr;
    json_t *m = json_loads(metrics_json, 0, &jerr);
    assert_non_null(m);
    return m;
}

static void
test_summary_99_1d(void **state)
{
    (void)state;
    json_t *m = load();
    char *s = kf_enrich_risk_summary(m, "P001", "2026-10-30", 0.99, 1);
    assert_non_null(s);
    assert_string_equal(s, "Portfolio P001 as of 2026-10-30: value 32.2M USD; 1-day 99% VaR "
                           "1,004,900 (3.12%); ES 1,102,400 (3.42%); volatility 10.4%; max "
                           "drawdown -24.9%; top exposures Utilities 37.1%, Corporate 16.7%, "
                           "Financials 15.6%; VaR limit 2.00%; breaches: 2 (VaR 3.12% > 2.00%; "
                           "sector Utilities 37.1% > 30.0%); stress gfc_2008 -33.0%.");
    free(s);
    json_decref(m);
}

static void
test_summary_95_10d_falls_back_to_var99_limit(void **state)
{
    (void)state;
    json_t *m = load();
    char *s = kf_enrich_risk_summary(m, "P001", "2026-10-30", 0.95, 10);
    assert_non_null(s);
    /* 10-day 95% figures; no var_95_10d limit, so the 99% 1-day limit is shown and its
     * breach is still the VaR breach. */
    assert_non_null(strstr(s, "; 10-day 95% VaR 1,518,800 (4.71%); ES 2,292,200 (7.11%);"));
    assert_non_null(strstr(s, "; VaR limit 2.00%; breaches: 2 (VaR 3.12% > 2.00%;"));
    free(s);
    json_decref(m);
}

static void
test_summary_no_breaches_no_optional(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *m = json_loads("{\"value\":2500000000,\"base_currency\":\"EUR\","
                           "\"historical\":{\"99\":{\"var_1d\":25000000,\"es_1d\":30000000}}}",
                           0, &jerr);
    assert_non_null(m);
    char *s = kf_enrich_risk_summary(m, "P9", "2025-01-02", 0.99, 1);
    assert_non_null(s);
    assert_string_equal(s, "Portfolio P9 as of 2025-01-02: value 2.50B EUR; 1-day 99% VaR "
                           "25,000,000 (1.00%); ES 30,000,000 (1.20%); breaches: none.");
    free(s);
    json_decref(m);
}

static void
test_summary_missing_figure(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *m = json_loads("{\"value\":1000000,\"historical\":{\"99\":{\"var_1d\":1}}}", 0, &jerr);
    assert_non_null(m);
    /* No es_1d: no line rather than a misleading one. */
    assert_null(kf_enrich_risk_summary(m, "P1", "2025-01-02", 0.99, 1));
    json_decref(m);
    m = json_loads("{\"value\":0,\"historical\":{\"99\":{\"var_1d\":1,\"es_1d\":2}}}", 0, &jerr);
    assert_null(kf_enrich_risk_summary(m, "P1", "2025-01-02", 0.99, 1));
    json_decref(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_99_1d),
        cmocka_unit_test(test_summary_95_10d_falls_back_to_var99_limit),
        cmocka_unit_test(test_summary_no_breaches_no_optional),
        cmocka_unit_test(test_summary_missing_figure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
