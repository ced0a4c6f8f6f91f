/*
 * risk_json.c: a kf_risk_report_t as JSON, the form `kinfer risk` prints and the report
 * generator will hand to the model. Numbers are JSON reals printed with 17 significant digits
 * (jansson's default), so a reader gets the computed doubles back bit for bit.
 */
#include "kf_risk.h"

#include <math.h>

/* json_object_set_new that tolerates a NULL value (OOM) by reporting failure later. */
static int
kf_risk_set(json_t *obj, const char *key, json_t *val)
{
    return val ? json_object_set_new(obj, key, val) : -1;
}

static json_t *
kf_risk_date_json(int32_t days)
{
    char buf[11];
    return json_string(kf_risk_date_format(days, buf));
}

static json_t *
kf_risk_tail_json(const kf_risk_tail_t *t, int hist)
{
    json_t *o = json_object();
    int bad = !o;
    if (o) {
        bad |= kf_risk_set(o, "var_1d", json_real(t->var_1d));
        bad |= kf_risk_set(o, "es_1d", json_real(t->es_1d));
        bad |= kf_risk_set(o, "var_10d", json_real(t->var_10d));
        bad |= kf_risk_set(o, "es_10d", json_real(t->es_10d));
        if (hist)
            bad |= kf_risk_set(o, "k", json_integer(t->k));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *
kf_risk_expo_json(const kf_risk_exposure_t *g, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *o = json_pack("{s:s, s:f, s:f}", "key", g[i].key, "value", g[i].value, "weight",
                              g[i].weight);
        if (json_array_append_new(a, o)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *
kf_risk_report_to_json(const kf_risk_report_t *rep, int with_series)
{
    KF_ASSERT(rep);
    json_t *root = json_object();
    if (!root)
        return NULL;
    int bad = 0;
    static const char *const conf_names[KF_RISK_NCONF] = {"95", "99"};

    bad |= kf_risk_set(root, "portfolio", json_string(rep->portfolio_id));
    bad |= kf_risk_set(root, "base_currency", json_string(rep->base_currency));
    bad |= kf_risk_set(root, "as_of", kf_risk_date_json(rep->as_of));
    bad |= kf_risk_set(root, "first_date", kf_risk_date_json(rep->first_date));
    bad |= kf_risk_set(root, "last_date", kf_risk_date_json(rep->last_date));
    bad |= kf_risk_set(root, "n_returns", json_integer(rep->n_returns));
    bad |= kf_risk_set(root, "value", json_real(rep->value));
    bad |= kf_risk_set(root, "unrealized_pnl", json_real(rep->unrealized_pnl));

    json_t *hist = json_object(), *param = json_object();
    bad |= kf_risk_set(root, "historical", hist);
    bad |= kf_risk_set(root, "parametric", param);
    for (int l = 0; hist && param && l < KF_RISK_NCONF; l++) {
        bad |= kf_risk_set(hist, conf_names[l], kf_risk_tail_json(&rep->hist[l], 1));
        bad |= kf_risk_set(param, conf_names[l], kf_risk_tail_json(&rep->param[l], 0));
    }
    if (param)
        bad |= kf_risk_set(param, "sigma_1d", json_real(rep->param_sigma_1d));

    bad |= kf_risk_set(root, "ewma",
                       json_pack("{s:f, s:f, s:f, s:f}", "lambda", rep->ewma_lambda, "vol_1d",
                                 rep->ewma_vol_1d, "vol_annual", rep->ewma_vol_annual, "var_99_1d",
                                 rep->ewma_var_99_1d));
    bad |= kf_risk_set(root, "drawdown",
                       json_pack("{s:f, s:f, s:o, s:o}", "max", rep->max_drawdown, "amount",
                                 rep->max_drawdown_amount, "peak_date",
                                 kf_risk_date_json(rep->drawdown_peak), "trough_date",
                                 kf_risk_date_json(rep->drawdown_trough)));
    bad |= kf_risk_set(root, "concentration",
                       json_pack("{s:f, s:f, s:f, s:s}", "hhi", rep->hhi, "top5_weight",
                                 rep->top5_weight, "max_weight", rep->max_weight,
                                 "max_weight_symbol", rep->max_weight_symbol));
    json_t *expo = json_object();
    bad |= kf_risk_set(root, "exposures", expo);
    if (expo) {
        bad |= kf_risk_set(expo, "asset_class",
                           kf_risk_expo_json(rep->by_asset_class, rep->nasset_class));
        bad |= kf_risk_set(expo, "sector", kf_risk_expo_json(rep->by_sector, rep->nsector));
        bad |= kf_risk_set(expo, "currency", kf_risk_expo_json(rep->by_currency, rep->ncurrency));
    }

    json_t *pos = json_array();
    bad |= kf_risk_set(root, "positions", pos);
    for (size_t i = 0; pos && i < rep->npositions; i++) {
        const kf_risk_pos_result_t *p = &rep->positions[i];
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "symbol",
                      p->symbol, "asset_class", p->asset_class, "sector", p->sector, "currency",
                      p->currency, "quantity", p->quantity, "price", p->price, "fx", p->fx, "value",
                      p->value, "weight", p->weight, "unrealized_pnl", p->unrealized_pnl,
                      "ewma_vol_1d", p->ewma_vol_1d, "component_var_99", p->component_var_99,
                      "component_var_99_pct", p->component_var_99_pct);
        bad |= json_array_append_new(pos, o);
    }

    json_t *lim = json_array();
    bad |= kf_risk_set(root, "limits", lim);
    for (size_t i = 0; lim && i < rep->nlimits; i++) {
        const kf_risk_limit_result_t *l = &rep->limits[i];
        bad |= json_array_append_new(lim, json_pack("{s:s, s:f, s:f, s:b}", "metric", l->metric,
                                                    "threshold", l->threshold, "observed",
                                                    l->observed, "breached", l->breached));
    }
    bad |= kf_risk_set(root, "n_breaches", json_integer((json_int_t)rep->nbreaches));

    json_t *st = json_array();
    bad |= kf_risk_set(root, "stress", st);
    for (size_t i = 0; st && i < rep->nstress; i++) {
        const kf_risk_stress_result_t *s = &rep->stress[i];
        bad |= json_array_append_new(st, json_pack("{s:s, s:f, s:f}", "scenario", s->scenario,
                                                   "pnl", s->pnl, "pnl_pct", s->pnl_pct));
    }

    if (with_series) {
        json_t *pnl = json_array(), *vals = json_array(), *dates = json_array();
        bad |= kf_risk_set(root, "pnl", pnl);
        bad |= kf_risk_set(root, "values", vals);
        bad |= kf_risk_set(root, "dates", dates);
        for (int t = 0; pnl && t < rep->n_returns; t++)
            bad |= json_array_append_new(pnl, json_real(rep->pnl[t]));
        for (int t = 0; vals && dates && t <= rep->n_returns; t++) {
            bad |= json_array_append_new(vals, json_real(rep->values[t]));
            bad |= json_array_append_new(dates, kf_risk_date_json(rep->dates[t]));
        }
    }
    if (bad) {
        json_decref(root);
        return NULL;
    }
    return root;
}
