/*
 * enrich_summary.c: the {{risk.summary}} placeholder of risk_report prompts. Small models
 * (the demo model) cannot read a 9,000-token metrics JSON; they were trained on one compact
 * line of figures in a fixed order, and this renders the computed metrics into exactly that
 * line. The numbers come from the risk module's JSON unchanged, only rounded for display.
 */
#include "kf_enrich.h"

#include "kf_buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1004892.49 -> "1,004,900" (rounded to hundreds, like the training corpus). */
static void
kf_sum_amount(char *out, size_t size, double x)
{
    long long v = llround(x / 100.0) * 100;
    char digits[32], tmp[48];
    int neg = v < 0;
    snprintf(digits, sizeof(digits), "%lld", neg ? -v : v);
    size_t n = strlen(digits), j = 0;
    if (neg)
        tmp[j++] = '-';
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            tmp[j++] = ',';
        tmp[j++] = digits[i];
    }
    tmp[j] = '\0';
    snprintf(out, size, "%s", tmp);
}

/* Portfolio value in millions ("32.2M"), or billions above one ("1.25B"). */
static void
kf_sum_value(char *out, size_t size, double v)
{
    if (v >= 1e9)
        snprintf(out, size, "%.2fB", v / 1e9);
    else
        snprintf(out, size, "%.1fM", v / 1e6);
}

static double
kf_sum_num(const json_t *obj, const char *key, double def)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

/* The limit row for `metric`, or NULL. */
static const json_t *
kf_sum_limit(const json_t *limits, const char *metric)
{
    size_t i;
    const json_t *row;
    json_array_foreach(limits, i, row)
    {
        const char *m = json_string_value(json_object_get(row, "metric"));
        if (m && !strcmp(m, metric))
            return row;
    }
    return NULL;
}

char *
kf_enrich_risk_summary(const json_t *metrics,
                       const char *portfolio_id,
                       const char *as_of,
                       double confidence,
                       int horizon_days)
{
    int conf = confidence >= 0.97 ? 99 : 95;
    int hz = horizon_days >= 10 ? 10 : 1;
    char key_var[16], key_es[16], metric[32], a[48], b[48];
    snprintf(key_var, sizeof(key_var), "var_%dd", hz);
    snprintf(key_es, sizeof(key_es), "es_%dd", hz);
    snprintf(a, sizeof(a), "%d", conf);

    const json_t *hist = json_object_get(json_object_get(metrics, "historical"), a);
    double value = kf_sum_num(metrics, "value", NAN);
    double var = kf_sum_num(hist, key_var, NAN);
    double es = kf_sum_num(hist, key_es, NAN);
    if (!isfinite(value) || value <= 0 || !isfinite(var) || !isfinite(es))
        return NULL;
    const char *ccy = json_string_value(json_object_get(metrics, "base_currency"));
    double var_pct = var / value * 100.0, es_pct = es / value * 100.0;

    /* Any failed append (out of memory) is remembered and turns the result into NULL. */
    unsigned bad = 0;
    kf_buf_t buf;
    kf_buf_init(&buf, 0);
    kf_sum_value(a, sizeof(a), value);
    bad |= kf_buf_appendf(&buf, "Portfolio %s as of %s: value %s %s",
                          portfolio_id ? portfolio_id : "?", as_of ? as_of : "?", a,
                          ccy ? ccy : "USD");
    kf_sum_amount(a, sizeof(a), var);
    kf_sum_amount(b, sizeof(b), es);
    bad |= kf_buf_appendf(&buf, "; %d-day %d%% VaR %s (%.2f%%); ES %s (%.2f%%)", hz, conf, a,
                          var_pct, b, es_pct);

    double vol = kf_sum_num(json_object_get(metrics, "ewma"), "vol_annual", NAN);
    if (isfinite(vol))
        bad |= kf_buf_appendf(&buf, "; volatility %.1f%%", vol * 100.0);
    double dd = kf_sum_num(json_object_get(metrics, "drawdown"), "max", NAN);
    if (isfinite(dd))
        bad |= kf_buf_appendf(&buf, "; max drawdown %.1f%%", -dd * 100.0);

    /* Top three sectors by weight (the risk module lists them largest first). */
    const json_t *sectors = json_object_get(json_object_get(metrics, "exposures"), "sector");
    const char *top_sector = NULL;
    double top_weight = 0;
    for (size_t i = 0; i < json_array_size(sectors) && i < 3; i++) {
        const json_t *row = json_array_get(sectors, i);
        const char *name = json_string_value(json_object_get(row, "key"));
        double w = kf_sum_num(row, "weight", 0);
        if (!name)
            continue;
        if (!top_sector) {
            top_sector = name;
            top_weight = w;
        }
        bad |= kf_buf_appendf(&buf, "%s%s %.1f%%", i == 0 ? "; top exposures " : ", ", name,
                              w * 100.0);
    }

    const json_t *limits = json_object_get(metrics, "limits");
    snprintf(metric, sizeof(metric), "var_%d_%dd", conf, hz);
    const json_t *var_limit = kf_sum_limit(limits, metric);
    if (!var_limit)
        var_limit = kf_sum_limit(limits, "var_99_1d");
    if (var_limit)
        bad |= kf_buf_appendf(&buf, "; VaR limit %.2f%%",
                              kf_sum_num(var_limit, "threshold", 0) * 100.0);

    /* Breaches of the kinds the model knows: VaR, sector weight, single-name weight. */
    kf_buf_t br;
    kf_buf_init(&br, 0);
    int nbr = 0;
    size_t i;
    const json_t *row;
    json_array_foreach(limits, i, row)
    {
        const char *m = json_string_value(json_object_get(row, "metric"));
        if (!m || !json_is_true(json_object_get(row, "breached")))
            continue;
        double thr = kf_sum_num(row, "threshold", 0) * 100.0;
        double obs = kf_sum_num(row, "observed", 0) * 100.0;
        const char *sep = nbr ? "; " : "";
        if (row == var_limit) {
            bad |= kf_buf_appendf(&br, "%sVaR %.2f%% > %.2f%%", sep, obs, thr);
        } else if (!strcmp(m, "max_sector_weight") && top_sector) {
            bad |= kf_buf_appendf(&br, "%ssector %s %.1f%% > %.1f%%", sep, top_sector,
                                  top_weight * 100.0, thr);
        } else if (!strcmp(m, "max_weight_single")) {
            const json_t *cc = json_object_get(metrics, "concentration");
            const char *sym = json_string_value(json_object_get(cc, "max_weight_symbol"));
            bad |= kf_buf_appendf(&br, "%ssingle-name %s %.1f%% > %.1f%%", sep, sym ? sym : "?",
                                  obs, thr);
        } else {
            continue;
        }
        nbr++;
    }
    if (nbr)
        bad |= kf_buf_appendf(&buf, "; breaches: %d (%s)", nbr, br.len ? br.data : "");
    else
        bad |= kf_buf_appendf(&buf, "; breaches: none");
    kf_buf_free(&br);

    /* The worst stress scenario. */
    const json_t *stress = json_object_get(metrics, "stress"), *worst = NULL;
    json_array_foreach(stress, i, row)
    {
        if (!worst || kf_sum_num(row, "pnl_pct", 0) < kf_sum_num(worst, "pnl_pct", 0))
            worst = row;
    }
    const char *scen = worst ? json_string_value(json_object_get(worst, "scenario")) : NULL;
    if (scen)
        bad |= kf_buf_appendf(&buf, "; stress %s %.1f%%", scen,
                              kf_sum_num(worst, "pnl_pct", 0) * 100.0);
    bad |= kf_buf_appendf(&buf, ".");
    if (bad) {
        kf_buf_free(&buf);
        return NULL;
    }
    return kf_buf_steal(&buf, NULL);
}
