/*
 * test_report.c: unit tests of the report renderers (risk/report*.c) on a hand-built
 * kf_risk_report_t whose every number is worked out in the comments: canonical JSON bytes,
 * HTML structure and SVG coordinates, Markdown rows, escaping of hostile narratives, the
 * InferenceResult -> meta mapping, the headline tail against kf_risk_compute, determinism
 * and the digest. No services needed.
 */
#include "kf_report.h"
#include "report_int.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the fixed report --------------------------------------------------------------------
 * Five daily values 100, 90, 95, 65, 90 (2026-10-26 .. 2026-10-30), so the P&L scenarios are
 * -10, +5, -30, +25 and the losses sorted descending 30, 10, -5, -25. At confidence 0.5:
 * k = ceil(4 * 0.5) = 2, VaR = 10, ES = (30 + 10) / 2 = 20. Drawdown: peak 100, worst 65 on
 * day 3 (-35%). Two positions of 45 each (weights 0.5). */
static double kf_t_pnl[4] = {-10, 5, -30, 25};
static double kf_t_values[5] = {100, 90, 95, 65, 90};
static int32_t kf_t_dates[5];
static kf_risk_pos_result_t kf_t_pos[2] = {
    {"AAA", "equity", "Tech", "USD", 3, 15, 1, 45, 0.5, 5, 0.01, 6, 0.6},
    {"BBB", "bond", "Gov", "EUR", 9, 5, 1, 45, 0.5, 0, 0.005, 4, 0.4}};
static kf_risk_exposure_t kf_t_ac[2] = {{"bond", 45, 0.5}, {"equity", 45, 0.5}};
static kf_risk_exposure_t kf_t_sec[2] = {{"Gov", 45, 0.5}, {"Tech", 45, 0.5}};
static kf_risk_exposure_t kf_t_ccy[2] = {{"EUR", 45, 0.5}, {"USD", 45, 0.5}};
static kf_risk_limit_result_t kf_t_lim[2] = {{"var_99_1d", 0.05, 0.25, 1}, {"hhi", 0.6, 0.5, 0}};
static kf_risk_stress_result_t kf_t_stress[1] = {{"crash", -18, -0.2}};

static kf_risk_report_t
kf_t_report(void)
{
    char e[128];
    int32_t d0 = 0;
    assert_int_equal(kf_risk_date_parse("2026-10-26", &d0, e, sizeof(e)), KF_OK);
    for (int i = 0; i < 5; i++)
        kf_t_dates[i] = d0 + i;
    kf_risk_report_t r;
    memset(&r, 0, sizeof(r));
    r.portfolio_id = "P-TEST";
    r.base_currency = "USD";
    r.as_of = kf_t_dates[4];
    r.first_date = kf_t_dates[0];
    r.last_date = kf_t_dates[4];
    r.n_returns = 4;
    r.value = 90;
    r.unrealized_pnl = 5;
    r.hist[0] = (kf_risk_tail_t){10, 20, 31.25, 62.5, 2};
    r.hist[1] = (kf_risk_tail_t){30, 30, 93.75, 93.75, 1};
    r.param[0] = (kf_risk_tail_t){12.5, 15, 39.5, 47.5, 0};
    r.param[1] = (kf_risk_tail_t){17.5, 20, 55.25, 63.25, 0};
    r.param_sigma_1d = 7.5;
    r.ewma_lambda = 0.94;
    r.ewma_vol_1d = 0.125;
    r.ewma_vol_annual = 2;
    r.ewma_var_99_1d = 26;
    r.max_drawdown = 0.35;
    r.max_drawdown_amount = 35;
    r.drawdown_peak = kf_t_dates[0];
    r.drawdown_trough = kf_t_dates[3];
    r.hhi = 0.5;
    r.top5_weight = 1;
    r.max_weight = 0.5;
    r.max_weight_symbol = "AAA";
    r.positions = kf_t_pos;
    r.npositions = 2;
    r.by_asset_class = kf_t_ac;
    r.nasset_class = 2;
    r.by_sector = kf_t_sec;
    r.nsector = 2;
    r.by_currency = kf_t_ccy;
    r.ncurrency = 2;
    r.limits = kf_t_lim;
    r.nlimits = 2;
    r.nbreaches = 1;
    r.stress = kf_t_stress;
    r.nstress = 1;
    r.pnl = kf_t_pnl;
    r.values = kf_t_values;
    r.dates = kf_t_dates;
    return r;
}

static const kf_report_tick_t kf_t_ticks[1] = {
    {"AAA", "kinfer.market", 2, 41, 1793370600250}}; /* 2026-10-30T14:30:00.250Z */

static kf_report_meta_t
kf_t_meta(const char *narrative)
{
    kf_report_meta_t m = KF_REPORT_META_INIT;
    m.status = "completed";
    m.narrative = narrative;
    m.finish_reason = "stop";
    m.prompt_tokens = 1200;
    m.completion_tokens = 12;
    m.model = "demo";
    m.model_sha256 = "ab12";
    m.has_sampling = 1;
    m.sampling.has_seed = 1;
    m.sampling.seed = 7;
    m.confidence = 0.5;
    m.horizon_days = 1;
    m.ticks = kf_t_ticks;
    m.nticks = 1;
    m.request_id = "req-1";
    m.trace_id = "trace-1";
    m.tenant_id = "t1";
    m.produced_at_ms = 1793373600000; /* 2026-10-30T15:20:00.000Z */
    return m;
}

static char *
kf_t_render(const json_t *doc, kf_report_format_t fmt)
{
    kf_buf_t b;
    kf_buf_init(&b, 0);
    char e[256];
    assert_int_equal(kf_report_render(doc, fmt, &b, e, sizeof(e)), KF_OK);
    return kf_buf_steal(&b, NULL);
}

static json_t *
kf_t_doc(const char *narrative)
{
    kf_risk_report_t r = kf_t_report();
    kf_report_meta_t m = kf_t_meta(narrative);
    json_t *doc = NULL;
    char e[256];
    assert_int_equal(kf_report_build(&r, &m, &doc, e, sizeof(e)), KF_OK);
    return doc;
}

static size_t
kf_t_count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- formatting and canonical JSON ----------------------------------------------------- */

static void
test_number_formats(void **state)
{
    (void)state;
    char b[96];
    assert_string_equal(kf_report_fmt_num(0.94, b, sizeof(b)), "0.94");
    assert_string_equal(kf_report_fmt_num(0.1 + 0.2, b, sizeof(b)), "0.30000000000000004");
    assert_string_equal(kf_report_fmt_num(5.0, b, sizeof(b)), "5");
    assert_string_equal(kf_report_fmt_num(1e20, b, sizeof(b)), "1e+20");
    assert_string_equal(kf_report_fmt_num(NAN, b, sizeof(b)), "null");
    assert_string_equal(kf_report_fmt_fixed(-1234567.891, 2, b, sizeof(b)), "-1,234,567.89");
    assert_string_equal(kf_report_fmt_fixed(999.995, 0, b, sizeof(b)), "1,000");
    assert_string_equal(kf_report_fmt_fixed(-0.001, 2, b, sizeof(b)), "0.00");
    assert_string_equal(kf_report_fmt_fixed(12, 2, b, sizeof(b)), "12.00");
    assert_string_equal(kf_report_fmt_fixed(NAN, 2, b, sizeof(b)), "n/a");
    assert_string_equal(kf_report_fmt_pct(0.12345, 2, b, sizeof(b)), "12.35%");
    assert_string_equal(kf_report_fmt_pct(-0.35, 1, b, sizeof(b)), "-35.0%");
    assert_string_equal(kf_report_fmt_time(1793370600250, b, sizeof(b)),
                        "2026-10-30T14:30:00.250Z");
}

static void
test_canonical_json(void **state)
{
    (void)state;
    json_t *j = json_pack("{s:f, s:[i, f, s], s:{s:b, s:n}, s:s, s:[]}", "z", 0.1, "a", 1, 2.5, "x",
                          "m", "y", 1, "b", "q", "line\n\"q\"\\\x01\x7f é", "e");
    assert_non_null(j);
    kf_buf_t b;
    kf_buf_init(&b, 0);
    assert_int_equal(kf_report_canonical_json(j, &b), KF_OK);
    assert_string_equal(b.data, "{\n"
                                "  \"a\": [1, 2.5, \"x\"],\n"
                                "  \"e\": [],\n"
                                "  \"m\": {\n"
                                "    \"b\": null,\n"
                                "    \"y\": true\n"
                                "  },\n"
                                "  \"q\": \"line\\n\\\"q\\\"\\\\\\u0001\\u007f é\",\n"
                                "  \"z\": 0.1\n"
                                "}\n");
    kf_buf_free(&b);
    json_decref(j);
}

/* The whole document of the fixed report, byte for byte. */
static const char kf_t_expected_json[] =
    "{\n"
    "  \"as_of\": \"2026-10-30\",\n"
    "  \"base_currency\": \"USD\",\n"
    "  \"digest\": \"@DIGEST@\",\n"
    "  \"format\": \"kinfer.risk_report.v1\",\n"
    "  \"headline\": {\n"
    "    \"confidence\": 0.5,\n"
    "    \"es\": 20,\n"
    "    \"es_1d\": 20,\n"
    "    \"es_pct\": 0.2222222222222222,\n"
    "    \"horizon_days\": 1,\n"
    "    \"k\": 2,\n"
    "    \"n_scenarios\": 4,\n"
    "    \"value\": 90,\n"
    "    \"var\": 10,\n"
    "    \"var_1d\": 10,\n"
    "    \"var_pct\": 0.1111111111111111\n"
    "  },\n"
    "  \"lineage\": {\n"
    "    \"as_of\": \"2026-10-30\",\n"
    "    \"market\": [\n"
    "      {\n"
    "        \"event_time\": \"2026-10-30T14:30:00.250Z\",\n"
    "        \"offset\": 41,\n"
    "        \"partition\": 2,\n"
    "        \"symbol\": \"AAA\",\n"
    "        \"topic\": \"kinfer.market\"\n"
    "      }\n"
    "    ],\n"
    "    \"metrics\": {\n"
    "      \"engine\": \"kf_risk_compute (docs/risk-metrics.md)\",\n"
    "      \"first_date\": \"2026-10-26\",\n"
    "      \"last_date\": \"2026-10-30\",\n"
    "      \"n_returns\": 4\n"
    "    },\n"
    "    \"model\": {\n"
    "      \"name\": \"demo\",\n"
    "      \"sha256\": \"ab12\"\n"
    "    },\n"
    "    \"portfolio_id\": \"P-TEST\",\n"
    "    \"sampling\": {\n"
    "      \"max_tokens\": 256,\n"
    "      \"min_p\": 0,\n"
    "      \"repetition_penalty\": 1,\n"
    "      \"seed\": 7,\n"
    "      \"temperature\": 0,\n"
    "      \"top_k\": 0,\n"
    "      \"top_p\": 1\n"
    "    }\n"
    "  },\n"
    "  \"metrics\": {\n"
    "    \"as_of\": \"2026-10-30\",\n"
    "    \"base_currency\": \"USD\",\n"
    "    \"concentration\": {\n"
    "      \"hhi\": 0.5,\n"
    "      \"max_weight\": 0.5,\n"
    "      \"max_weight_symbol\": \"AAA\",\n"
    "      \"top5_weight\": 1\n"
    "    },\n"
    "    \"drawdown\": {\n"
    "      \"amount\": 35,\n"
    "      \"max\": 0.35,\n"
    "      \"peak_date\": \"2026-10-26\",\n"
    "      \"trough_date\": \"2026-10-29\"\n"
    "    },\n"
    "    \"ewma\": {\n"
    "      \"lambda\": 0.94,\n"
    "      \"var_99_1d\": 26,\n"
    "      \"vol_1d\": 0.125,\n"
    "      \"vol_annual\": 2\n"
    "    },\n"
    "    \"exposures\": {\n"
    "      \"asset_class\": [\n"
    "        {\n"
    "          \"key\": \"bond\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        },\n"
    "        {\n"
    "          \"key\": \"equity\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        }\n"
    "      ],\n"
    "      \"currency\": [\n"
    "        {\n"
    "          \"key\": \"EUR\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        },\n"
    "        {\n"
    "          \"key\": \"USD\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        }\n"
    "      ],\n"
    "      \"sector\": [\n"
    "        {\n"
    "          \"key\": \"Gov\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        },\n"
    "        {\n"
    "          \"key\": \"Tech\",\n"
    "          \"value\": 45,\n"
    "          \"weight\": 0.5\n"
    "        }\n"
    "      ]\n"
    "    },\n"
    "    \"first_date\": \"2026-10-26\",\n"
    "    \"historical\": {\n"
    "      \"95\": {\n"
    "        \"es_10d\": 62.5,\n"
    "        \"es_1d\": 20,\n"
    "        \"k\": 2,\n"
    "        \"var_10d\": 31.25,\n"
    "        \"var_1d\": 10\n"
    "      },\n"
    "      \"99\": {\n"
    "        \"es_10d\": 93.75,\n"
    "        \"es_1d\": 30,\n"
    "        \"k\": 1,\n"
    "        \"var_10d\": 93.75,\n"
    "        \"var_1d\": 30\n"
    "      }\n"
    "    },\n"
    "    \"last_date\": \"2026-10-30\",\n"
    "    \"limits\": [\n"
    "      {\n"
    "        \"breached\": true,\n"
    "        \"metric\": \"var_99_1d\",\n"
    "        \"observed\": 0.25,\n"
    "        \"threshold\": 0.05\n"
    "      },\n"
    "      {\n"
    "        \"breached\": false,\n"
    "        \"metric\": \"hhi\",\n"
    "        \"observed\": 0.5,\n"
    "        \"threshold\": 0.6\n"
    "      }\n"
    "    ],\n"
    "    \"n_breaches\": 1,\n"
    "    \"n_returns\": 4,\n"
    "    \"parametric\": {\n"
    "      \"95\": {\n"
    "        \"es_10d\": 47.5,\n"
    "        \"es_1d\": 15,\n"
    "        \"var_10d\": 39.5,\n"
    "        \"var_1d\": 12.5\n"
    "      },\n"
    "      \"99\": {\n"
    "        \"es_10d\": 63.25,\n"
    "        \"es_1d\": 20,\n"
    "        \"var_10d\": 55.25,\n"
    "        \"var_1d\": 17.5\n"
    "      },\n"
    "      \"sigma_1d\": 7.5\n"
    "    },\n"
    "    \"portfolio\": \"P-TEST\",\n"
    "    \"positions\": [\n"
    "      {\n"
    "        \"asset_class\": \"equity\",\n"
    "        \"component_var_99\": 6,\n"
    "        \"component_var_99_pct\": 0.6,\n"
    "        \"currency\": \"USD\",\n"
    "        \"ewma_vol_1d\": 0.01,\n"
    "        \"fx\": 1,\n"
    "        \"price\": 15,\n"
    "        \"quantity\": 3,\n"
    "        \"sector\": \"Tech\",\n"
    "        \"symbol\": \"AAA\",\n"
    "        \"unrealized_pnl\": 5,\n"
    "        \"value\": 45,\n"
    "        \"weight\": 0.5\n"
    "      },\n"
    "      {\n"
    "        \"asset_class\": \"bond\",\n"
    "        \"component_var_99\": 4,\n"
    "        \"component_var_99_pct\": 0.4,\n"
    "        \"currency\": \"EUR\",\n"
    "        \"ewma_vol_1d\": 0.005,\n"
    "        \"fx\": 1,\n"
    "        \"price\": 5,\n"
    "        \"quantity\": 9,\n"
    "        \"sector\": \"Gov\",\n"
    "        \"symbol\": \"BBB\",\n"
    "        \"unrealized_pnl\": 0,\n"
    "        \"value\": 45,\n"
    "        \"weight\": 0.5\n"
    "      }\n"
    "    ],\n"
    "    \"stress\": [\n"
    "      {\n"
    "        \"pnl\": -18,\n"
    "        \"pnl_pct\": -0.2,\n"
    "        \"scenario\": \"crash\"\n"
    "      }\n"
    "    ],\n"
    "    \"unrealized_pnl\": 5,\n"
    "    \"value\": 90\n"
    "  },\n"
    "  \"narrative\": {\n"
    "    \"completion_tokens\": 12,\n"
    "    \"error\": null,\n"
    "    \"finish_reason\": \"stop\",\n"
    "    \"prompt_tokens\": 1200,\n"
    "    \"text\": \"VaR is 10.\\nES is 20.\"\n"
    "  },\n"
    "  \"portfolio_id\": \"P-TEST\",\n"
    "  \"run\": {\n"
    "    \"produced_at\": \"2026-10-30T15:20:00.000Z\",\n"
    "    \"request_id\": \"req-1\",\n"
    "    \"tenant_id\": \"t1\",\n"
    "    \"trace_id\": \"trace-1\"\n"
    "  },\n"
    "  \"series\": {\n"
    "    \"dates\": [\"2026-10-26\", \"2026-10-27\", \"2026-10-28\", \"2026-10-29\", "
    "\"2026-10-30\"],\n"
    "    \"pnl\": [-10, 5, -30, 25],\n"
    "    \"values\": [100, 90, 95, 65, 90]\n"
    "  },\n"
    "  \"status\": \"completed\"\n"
    "}\n";

static void
test_json_exact_bytes(void **state)
{
    (void)state;
    json_t *doc = kf_t_doc("VaR is 10.\nES is 20.");
    char *text = kf_t_render(doc, KF_REPORT_JSON);
    /* The digest is checked separately: splice it into the expected text. */
    const char *digest = json_string_value(json_object_get(doc, "digest"));
    assert_non_null(digest);
    assert_int_equal(strlen(digest), 64);
    char *expected = malloc(sizeof(kf_t_expected_json) + 64);
    const char *at = strstr(kf_t_expected_json, "@DIGEST@");
    assert_non_null(at);
    snprintf(expected, sizeof(kf_t_expected_json) + 64, "%.*s%s%s", (int)(at - kf_t_expected_json),
             kf_t_expected_json, digest, at + 8);
    assert_string_equal(text, expected);
    free(expected);
    free(text);
    json_decref(doc);
}

/* Same inputs -> same bytes in every format; a different run identity changes only "run". */
static void
test_determinism_and_digest(void **state)
{
    (void)state;
    json_t *a = kf_t_doc("Same text.");
    json_t *b = kf_t_doc("Same text.");
    for (int f = KF_REPORT_JSON; f <= KF_REPORT_HTML; f++) {
        char *x = kf_t_render(a, (kf_report_format_t)f), *y = kf_t_render(b, (kf_report_format_t)f);
        assert_string_equal(x, y);
        free(x);
        free(y);
    }
    kf_risk_report_t r = kf_t_report();
    kf_report_meta_t m = kf_t_meta("Same text.");
    m.request_id = "req-2";
    m.trace_id = "trace-2";
    m.produced_at_ms += 60000;
    json_t *c = NULL, *d = NULL;
    char e[256];
    assert_int_equal(kf_report_build(&r, &m, &c, e, sizeof(e)), KF_OK);
    assert_string_equal(json_string_value(json_object_get(a, "digest")),
                        json_string_value(json_object_get(c, "digest")));
    /* ... but another narrative (or seed) changes the digest. */
    m.narrative = "Other text.";
    assert_int_equal(kf_report_build(&r, &m, &d, e, sizeof(e)), KF_OK);
    assert_string_not_equal(json_string_value(json_object_get(a, "digest")),
                            json_string_value(json_object_get(d, "digest")));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
}

/* ---- HTML ------------------------------------------------------------------------------- */

static void
test_html_structure_and_svg(void **state)
{
    (void)state;
    json_t *doc = kf_t_doc("VaR is 10.\nES is 20.\n\nSecond paragraph.");
    char *html = kf_t_render(doc, KF_REPORT_HTML);
    /* Self-contained: no scripts, no external references, a restrictive CSP. */
    assert_non_null(strstr(html, "<!DOCTYPE html>"));
    assert_non_null(strstr(html, "default-src 'none'"));
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));
    assert_null(strstr(html, "<link"));
    assert_int_equal(kf_t_count(html, "<style>"), 1);
    /* Narrative: two paragraphs, a line break in the first. */
    assert_non_null(strstr(html, "<p>VaR is 10.<br>\nES is 20.</p>\n<p>Second paragraph.</p>"));
    /* Histogram: 4 scenarios -> 4 bins (one per scenario), one tail bin (upper edge -16.25 <=
     * -VaR = -10). Range [-30, 25], plot x0 70 width 940: VaR at 70 + 940 * 20/55 = 411.8,
     * ES at 70 + 940 * 10/55 = 240.9. */
    assert_int_equal(kf_t_count(html, "<rect class=\"bar"), 4);
    assert_int_equal(kf_t_count(html, "<rect class=\"bar tail\""), 1);
    assert_non_null(strstr(html, "<line id=\"var-line\" x1=\"411.8\" y1=\"26.0\" x2=\"411.8\""));
    assert_non_null(strstr(html, "<line id=\"es-line\" x1=\"240.9\" y1=\"26.0\" x2=\"240.9\""));
    assert_non_null(strstr(html, "VaR 50.0%, 1 day: 10</text>"));
    assert_non_null(strstr(html, "ES 50.0%, 1 day: 20</text>"));
    /* First bar: x = 70 + 0.5, full height 230 (every bin holds 1 = the maximum). */
    assert_non_null(strstr(html, "x=\"70.5\" y=\"30.0\" width=\"234.0\" height=\"230.0\""));
    /* Drawdown: worst -35% on day 3 of 0..4 -> cx = 70 + 940 * 3/4 = 775.0; the path has 5
     * points; grid steps of 10% down to -40%. */
    assert_non_null(strstr(html, "<circle id=\"max-drawdown\" cx=\"775.0\""));
    assert_non_null(strstr(html, "max drawdown -35.00%"));
    const char *dl = strstr(html, "<path id=\"drawdown-line\" d=\"");
    assert_non_null(dl);
    const char *dl_end = strchr(dl + 30, '"');
    size_t pts = 0;
    for (const char *p = dl; p < dl_end; p++)
        pts += *p == ',';
    assert_int_equal(pts, 5);
    assert_non_null(strstr(html, ">-40.0%</text>"));
    /* Exposures: 2 bars in each of the three charts, equal weights -> full length 150. */
    assert_int_equal(kf_t_count(html, "<rect class=\"expo\""), 6);
    assert_int_equal(kf_t_count(html, "width=\"150.0\" height=\"16\""), 6);
    assert_non_null(strstr(html, "id=\"expo-asset_class\""));
    assert_non_null(strstr(html, "id=\"expo-sector\""));
    assert_non_null(strstr(html, "id=\"expo-currency\""));
    /* Tables and lineage. */
    assert_non_null(strstr(html, "<tr class=\"breach\"><td>var_99_1d</td><td class=\"r\">5.00%"
                                 "</td><td class=\"r\">25.00%</td><td>BREACH</td></tr>"));
    assert_non_null(strstr(html, "<tr><td>hhi</td><td class=\"r\">0.6000</td>"));
    assert_non_null(strstr(html, "seed=7"));
    assert_non_null(strstr(html, "<td class=\"r\">2</td><td class=\"r\">41</td>"));
    free(html);
    json_decref(doc);
}

static void
test_html_escapes_hostile_narrative(void **state)
{
    (void)state;
    const char *evil = "</p></div><script>alert('x')</script><img src=x onerror=\"alert(1)\">"
                       " & \x01\xff\xc3\xa9 </svg><style>body{display:none}</style>";
    json_t *doc = kf_t_doc(evil);
    char *html = kf_t_render(doc, KF_REPORT_HTML);
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "<img"));
    assert_int_equal(kf_t_count(html, "<style>"), 1);
    assert_non_null(strstr(html, "<p>&lt;/p&gt;&lt;/div&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/"
                                 "script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; "
                                 "\xEF\xBF\xBD\xEF\xBF\xBD\xc3\xa9 &lt;/svg&gt;&lt;style&gt;"));
    free(html);
    /* Markdown: raw HTML is shown as text, Markdown punctuation is inert. */
    char *md = kf_t_render(doc, KF_REPORT_MD);
    assert_null(strstr(md, "<script"));
    assert_non_null(strstr(md, "> &lt;/p&gt;&lt;/div&gt;&lt;script&gt;alert('x')&lt;/script&gt;"));
    free(md);
    json_decref(doc);

    /* Database strings end up in SVG labels and table cells: escaped there too. */
    kf_risk_report_t r = kf_t_report();
    kf_risk_exposure_t sec[1] = {{"<b>\"S&P\"</b>", 90, 1}};
    r.by_sector = sec;
    r.nsector = 1;
    kf_report_meta_t m = kf_t_meta("x");
    json_t *d2 = NULL;
    char e[256];
    assert_int_equal(kf_report_build(&r, &m, &d2, e, sizeof(e)), KF_OK);
    html = kf_t_render(d2, KF_REPORT_HTML);
    assert_null(strstr(html, "<b>"));
    assert_non_null(strstr(html, ">&lt;b&gt;&quot;S&amp;P&quot;&lt;/b&gt;</text>"));
    free(html);
    json_decref(d2);

    kf_buf_t b;
    kf_buf_init(&b, 0);
    assert_int_equal(kf_report_html_escape(&b, "a<b>&\"'\n\t\x7f"), KF_OK);
    assert_string_equal(b.data, "a&lt;b&gt;&amp;&quot;&#39;\n\t\xEF\xBF\xBD");
    kf_buf_free(&b);
}

/* ---- Markdown --------------------------------------------------------------------------- */

static void
test_markdown_rows(void **state)
{
    (void)state;
    json_t *doc = kf_t_doc("Line *one* | two\n\nLine [three]");
    char *md = kf_t_render(doc, KF_REPORT_MD);
    assert_true(strncmp(md, "# Risk report: P-TEST, as of 2026-10-30\n", 40) == 0);
    assert_non_null(strstr(md, "| Portfolio value | 90.00 USD |\n"));
    assert_non_null(strstr(md, "| Historical VaR 50.0%, 1 day(s) | 10.00 USD (11.11%) |\n"));
    assert_non_null(strstr(md, "| Expected shortfall 50.0%, 1 day(s) | 20.00 USD (22.22%) |\n"));
    assert_non_null(strstr(md, "| Maximum drawdown | 35.00% (2026-10-26 to 2026-10-29) |\n"));
    assert_non_null(strstr(md, "| Limit breaches | 1 of 2 |\n"));
    assert_non_null(strstr(md, "| historical | 95% | 10.00 | 20.00 | 31.25 | 62.50 |\n"));
    assert_non_null(strstr(md, "| parametric | 99% | 17.50 | 20.00 | 55.25 | 63.25 |\n"));
    assert_non_null(strstr(md, "| AAA | equity | Tech | USD | 3.00 | 15.0000 | 45.00 | 50.00% | "
                               "6.00 |\n"));
    assert_non_null(strstr(md, "| var\\_99\\_1d | 5.00% | 25.00% | **BREACH** |\n"));
    assert_non_null(strstr(md, "| hhi | 0.6000 | 0.5000 | ok |\n"));
    assert_non_null(strstr(md, "| crash | -18.00 | -20.00% |\n"));
    assert_non_null(strstr(md, "| Asset class | Value | Weight |\n|---|---:|---:|\n"
                               "| bond | 45.00 | 50.00% |\n| equity | 45.00 | 50.00% |\n"));
    assert_non_null(strstr(md, "> Line \\*one\\* \\| two\n>\n> Line \\[three\\]\n"));
    assert_non_null(strstr(md, "| AAA | kinfer.market | 2 | 41 | 2026-10-30T14:30:00.250Z |\n"));
    assert_non_null(strstr(md, "seed 7"));
    assert_int_equal(kf_t_count(md, "\n## "), 8);
    free(md);
    json_decref(doc);
}

/* ---- meta from an InferenceResult ------------------------------------------------------- */

static void
test_meta_from_result(void **state)
{
    (void)state;
    kf_report_sampling_t s = KF_REPORT_SAMPLING_INIT;
    s.seed = 123;
    s.has_seed = 1;
    s.max_tokens = 64;
    char *stxt = kf_report_sampling_json(&s);
    assert_non_null(stxt);
    assert_string_equal(stxt, "{\"max_tokens\":64,\"min_p\":0.0,\"repetition_penalty\":1.0,"
                              "\"seed\":123,\"temperature\":0.0,\"top_k\":0,\"top_p\":1.0}");
    json_t *res = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:I, s:[{s:s, s:s, s:i, s:I, s:I}], "
        "s:{s:s, s:s, s:s, s:s}}",
        "request_id", "r-9", "tenant_id", "t", "status", "completed", "text", "hello",
        "finish_reason", "length", "prompt_tokens", 10, "completion_tokens", 64, "model", "m",
        "model_sha256", "00ff", "produced_at", (json_int_t)1793373600000, "lineage", "symbol",
        "AAA", "topic", "kinfer.market", "partition", 1, "offset", (json_int_t)99, "event_time",
        (json_int_t)1793370600000, "metadata", KF_REPORT_MD_CONFIDENCE, "0.95",
        KF_REPORT_MD_HORIZON, "10", KF_REPORT_MD_SAMPLING, stxt, KF_REPORT_MD_PORTFOLIO, "P1");
    free(stxt);
    kf_report_meta_t m;
    char e[256];
    assert_int_equal(kf_report_meta_from_result(res, &m, e, sizeof(e)), KF_OK);
    assert_string_equal(m.request_id, "r-9");
    assert_string_equal(m.narrative, "hello");
    assert_string_equal(m.finish_reason, "length");
    assert_int_equal(m.completion_tokens, 64);
    assert_true(m.confidence == 0.95);
    assert_int_equal(m.horizon_days, 10);
    assert_int_equal(m.has_sampling, 1);
    assert_int_equal(m.sampling.seed, 123);
    assert_int_equal(m.sampling.max_tokens, 64);
    assert_int_equal(m.nticks, 1);
    assert_int_equal(m.ticks[0].offset, 99);
    assert_int_equal(m.produced_at_ms, 1793373600000);
    kf_report_meta_free(&m);

    /* Bad values are errors that name the key. */
    json_object_set_new(json_object_get(res, "metadata"), KF_REPORT_MD_SAMPLING,
                        json_string("{\"seed\": \"x\"}"));
    assert_int_equal(kf_report_meta_from_result(res, &m, e, sizeof(e)), KF_ERR_PARSE);
    assert_non_null(strstr(e, KF_REPORT_MD_SAMPLING));
    kf_report_meta_free(&m);
    json_object_set_new(json_object_get(res, "metadata"), KF_REPORT_MD_SAMPLING, json_string("{"));
    assert_int_equal(kf_report_meta_from_result(res, &m, e, sizeof(e)), KF_ERR_PARSE);
    kf_report_meta_free(&m);
    json_object_set_new(json_object_get(res, "metadata"), KF_REPORT_MD_CONFIDENCE,
                        json_string("1.5"));
    json_object_del(json_object_get(res, "metadata"), KF_REPORT_MD_SAMPLING);
    assert_int_equal(kf_report_meta_from_result(res, &m, e, sizeof(e)), KF_ERR_PARSE);
    assert_non_null(strstr(e, KF_REPORT_MD_CONFIDENCE));
    kf_report_meta_free(&m);
    json_object_del(res, "status");
    assert_int_equal(kf_report_meta_from_result(res, &m, e, sizeof(e)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(e, "status"));
    kf_report_meta_free(&m);
    json_decref(res);
}

/* ---- headline tail against kf_risk_compute ---------------------------------------------- */

static void
test_tail_matches_risk_engine(void **state)
{
    (void)state;
    char e[256];
    kf_risk_input_t *in = NULL;
    assert_int_equal(kf_risk_input_new("P", "USD", &in, e, sizeof(e)), KF_OK);
    kf_risk_position_t a = {"AAA", 10, 50, "equity", "Tech", "USD"};
    kf_risk_position_t b = {"BBB", -4, 20, "bond", "Gov", "USD"};
    assert_int_equal(kf_risk_input_add_position(in, &a, e, sizeof(e)), KF_OK);
    assert_int_equal(kf_risk_input_add_position(in, &b, e, sizeof(e)), KF_OK);
    int32_t d0;
    assert_int_equal(kf_risk_date_parse("2026-01-05", &d0, e, sizeof(e)), KF_OK);
    /* 250 days of deterministic, uneven prices. */
    uint64_t x = 88172645463325252ull;
    double pa = 50, pb = 20;
    for (int t = 0; t < 250; t++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pa *= 1 + ((double)(x % 2001) - 1000) / 40000.0;
        pb *= 1 + ((double)((x >> 20) % 2001) - 1000) / 90000.0;
        assert_int_equal(kf_risk_input_add_price(in, "AAA", d0 + t, pa, e, sizeof(e)), KF_OK);
        assert_int_equal(kf_risk_input_add_price(in, "BBB", d0 + t, pb, e, sizeof(e)), KF_OK);
    }
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    opts.as_of = d0 + 249;
    kf_risk_report_t *rep = NULL;
    assert_int_equal(kf_risk_compute(in, &opts, &rep, e, sizeof(e)), KF_OK);
    for (int l = 0; l < KF_RISK_NCONF; l++) {
        double var, es;
        int k;
        assert_int_equal(kf_report_tail(rep->pnl, (size_t)rep->n_returns, kf_risk_confidence[l], 1,
                                        &var, &es, &k),
                         KF_OK);
        assert_true(var == rep->hist[l].var_1d); /* bit for bit */
        assert_true(es == rep->hist[l].es_1d);
        assert_int_equal(k, rep->hist[l].k);
        assert_int_equal(kf_report_tail(rep->pnl, (size_t)rep->n_returns, kf_risk_confidence[l], 10,
                                        &var, &es, NULL),
                         KF_OK);
        assert_true(var == rep->hist[l].var_10d);
        assert_true(es == rep->hist[l].es_10d);
    }
    double var, es;
    assert_int_equal(kf_report_tail(rep->pnl, 0, 0.99, 1, &var, &es, NULL), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_report_tail(rep->pnl, 5, 1.0, 1, &var, &es, NULL), KF_ERR_INVALID_ARG);

    /* A real report renders in every format, and the headline equals hist.99.var_1d. */
    kf_report_meta_t m = KF_REPORT_META_INIT;
    json_t *doc = NULL;
    assert_int_equal(kf_report_build(rep, &m, &doc, e, sizeof(e)), KF_OK);
    assert_true(json_real_value(json_object_get(json_object_get(doc, "headline"), "var")) ==
                rep->hist[KF_RISK_C99].var_1d);
    for (int f = KF_REPORT_JSON; f <= KF_REPORT_HTML; f++)
        free(kf_t_render(doc, (kf_report_format_t)f));
    json_decref(doc);
    m.confidence = 1.5;
    assert_int_equal(kf_report_build(rep, &m, &doc, e, sizeof(e)), KF_ERR_INVALID_ARG);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* ---- robustness --------------------------------------------------------------------------- */

static void
test_render_garbage_documents(void **state)
{
    (void)state;
    const char *docs[] = {
        "{}",
        "{\"headline\": \"x\", \"series\": {\"pnl\": [\"a\", 1, null], \"values\": [1]}}",
        "{\"series\": {\"pnl\": [1, 1, 1], \"values\": [0, 0, 0], \"dates\": [1, 2]},"
        " \"metrics\": {\"exposures\": {\"sector\": [{\"key\": 5}, 7]}, \"limits\": [1],"
        " \"positions\": [{}], \"stress\": \"no\"}, \"narrative\": {\"text\": 5}}",
        "{\"lineage\": {\"sampling\": {}, \"market\": [{}, 3]}, \"headline\": {\"var_1d\": 1e308,"
        " \"es_1d\": -1e308}, \"series\": {\"pnl\": [1e308, -1e308]}}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_error_t je;
        json_t *doc = json_loads(docs[i], 0, &je);
        assert_non_null(doc);
        for (int f = KF_REPORT_JSON; f <= KF_REPORT_HTML; f++) {
            char *text = kf_t_render(doc, (kf_report_format_t)f);
            /* Regression (found by fuzz_report): a P&L range that overflows used to reach a
             * NaN-to-size_t conversion; it is now reported instead of drawn. */
            if (i == 3 && f == KF_REPORT_HTML)
                assert_non_null(strstr(text, "cannot be drawn"));
            free(text);
        }
        json_decref(doc);
    }
    json_t *arr = json_array();
    kf_buf_t b;
    kf_buf_init(&b, 0);
    char e[128];
    assert_int_equal(kf_report_render(arr, KF_REPORT_HTML, &b, e, sizeof(e)), KF_ERR_INVALID_ARG);
    json_decref(arr);
    kf_report_format_t fmt;
    assert_int_equal(kf_report_format_parse("pdf", &fmt, e, sizeof(e)), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(e, "pdf"));
    assert_int_equal(kf_report_format_parse("markdown", &fmt, e, sizeof(e)), KF_OK);
    assert_int_equal(fmt, KF_REPORT_MD);
    kf_buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_formats),
        cmocka_unit_test(test_canonical_json),
        cmocka_unit_test(test_json_exact_bytes),
        cmocka_unit_test(test_determinism_and_digest),
        cmocka_unit_test(test_html_structure_and_svg),
        cmocka_unit_test(test_html_escapes_hostile_narrative),
        cmocka_unit_test(test_markdown_rows),
        cmocka_unit_test(test_meta_from_result),
        cmocka_unit_test(test_tail_matches_risk_engine),
        cmocka_unit_test(test_render_garbage_documents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
