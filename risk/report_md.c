/*
 * report_md.c: the Markdown rendering of a report document (GitHub-flavoured tables).
 *
 * Every piece of text that came from outside (the model's narrative, names from the database)
 * is escaped so it renders as the same literal text: Markdown punctuation gets a backslash,
 * &, < and > become entities (so raw HTML in a narrative is shown, never interpreted), and in
 * table cells '|' is escaped and newlines become spaces.
 */
#include "report_int.h"

#include "kf_json.h"

#include <math.h>
#include <string.h>

/* Appends n bytes of s escaped for Markdown; in_cell also flattens newlines. */
static kf_err_t
kf_md_textn(kf_buf_t *out, const char *s, size_t n, int in_cell)
{
    kf_err_t err = KF_OK;
    for (size_t i = 0; !err && i < n; i++) {
        char c = s[i];
        if (c == '&')
            err = kf_buf_append_str(out, "&amp;");
        else if (c == '<')
            err = kf_buf_append_str(out, "&lt;");
        else if (c == '>')
            err = kf_buf_append_str(out, "&gt;");
        else if (in_cell && (c == '\n' || c == '\r'))
            err = kf_buf_append(out, " ", 1);
        else if (strchr("\\`*_[]|#!~", c))
            err = kf_buf_appendf(out, "\\%c", c);
        else
            err = kf_buf_append(out, &c, 1);
    }
    return err;
}

static kf_err_t
kf_md_text(kf_buf_t *out, const char *s, int in_cell)
{
    return kf_md_textn(out, s, strlen(s), in_cell);
}

/* A string cell from the document (fallback "n/a"). */
static kf_err_t
kf_md_cell_str(kf_buf_t *out, const json_t *o, const char *path)
{
    kf_err_t err = kf_buf_append_str(out, "| ");
    if (!err)
        err = kf_md_text(out, kf_report_str(o, path, "n/a"), 1);
    return err ? err : kf_buf_append(out, " ", 1);
}

/* A number cell: money (2 decimals), percentage (pct = 1) or plain (decimals). */
static kf_err_t
kf_md_cell_num(kf_buf_t *out, double v, int pct, int decimals)
{
    char num[96];
    if (pct)
        kf_report_fmt_pct(v, decimals, num, sizeof(num));
    else
        kf_report_fmt_fixed(v, decimals, num, sizeof(num));
    return kf_buf_appendf(out, "| %s ", num);
}

static kf_err_t
kf_md_exposures(kf_buf_t *out, const json_t *doc, const char *key, const char *title)
{
    char path[64];
    snprintf(path, sizeof(path), "metrics.exposures.%s", key);
    const json_t *arr = kf_report_arr(doc, path);
    kf_err_t err =
        kf_buf_appendf(out, "\n### By %s\n\n| %c%s | Value | Weight |\n|---|---:|---:|\n", title,
                       title[0] - 'a' + 'A', title + 1);
    for (size_t i = 0; !err && i < json_array_size(arr); i++) {
        const json_t *e = json_array_get(arr, i);
        err = kf_md_cell_str(out, e, "key");
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(e, "value"), 0, 2);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(e, "weight"), 1, 2);
        if (!err)
            err = kf_buf_append_str(out, "|\n");
    }
    return err;
}

static kf_err_t
kf_md_narrative(kf_buf_t *out, const json_t *doc)
{
    const char *text = kf_report_str(doc, "narrative.text", NULL);
    const char *error = kf_report_str(doc, "narrative.error", NULL);
    kf_err_t err = kf_buf_append_str(out, "\n## Narrative\n\n");
    if (!err && (!text || !*text))
        err = kf_buf_append_str(out, "_No narrative was generated._\n");
    /* One blockquote line per narrative line, so paragraphs survive. */
    for (const char *p = text; !err && p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n == 0) {
            err = kf_buf_append_str(out, ">\n");
        } else {
            err = kf_buf_append_str(out, "> ");
            if (!err)
                err = kf_md_textn(out, p, n, 0);
            if (!err)
                err = kf_buf_append_str(out, "\n");
        }
        p = nl ? nl + 1 : p + n;
    }
    if (!err && error) {
        err = kf_buf_append_str(out, "\n**Error:** ");
        if (!err)
            err = kf_md_text(out, error, 1);
        if (!err)
            err = kf_buf_append_str(out, "\n");
    }
    if (!err) {
        const char *fr = kf_report_str(doc, "narrative.finish_reason", "n/a");
        err = kf_buf_append_str(out, "\n_Finish reason: ");
        if (!err)
            err = kf_md_text(out, fr, 1);
        if (!err)
            err = kf_buf_appendf(out, "; prompt tokens %.0f, completion tokens %.0f._\n",
                                 fmax(0, kf_report_num(doc, "narrative.prompt_tokens")),
                                 fmax(0, kf_report_num(doc, "narrative.completion_tokens")));
    }
    return err;
}

static kf_err_t
kf_md_lineage(kf_buf_t *out, const json_t *doc)
{
    char a[96], b[96];
    kf_err_t err = kf_buf_append_str(out, "\n## Lineage\n\n- Portfolio: ");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "lineage.portfolio_id", "n/a"), 1);
    if (!err)
        err = kf_buf_appendf(out,
                             ", as of %s\n- Model: ", kf_report_str(doc, "lineage.as_of", "n/a"));
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "lineage.model.name", "n/a"), 1);
    if (!err)
        err = kf_buf_append_str(out, ", SHA-256 `");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "lineage.model.sha256", "n/a"), 1);
    if (!err && json_is_object(kf_json_path(doc, "lineage.sampling"))) {
        char c[96], d[96], e[96];
        double seed = kf_report_num(doc, "lineage.sampling.seed");
        err = kf_buf_appendf(
            out,
            "`\n- Sampling: temperature %s, top_p %s, top_k %.0f, min_p %s, repetition penalty "
            "%s, max tokens %.0f, seed %s",
            kf_report_fmt_num(kf_report_num(doc, "lineage.sampling.temperature"), a, sizeof(a)),
            kf_report_fmt_num(kf_report_num(doc, "lineage.sampling.top_p"), b, sizeof(b)),
            kf_report_num(doc, "lineage.sampling.top_k"),
            kf_report_fmt_num(kf_report_num(doc, "lineage.sampling.min_p"), c, sizeof(c)),
            kf_report_fmt_num(kf_report_num(doc, "lineage.sampling.repetition_penalty"), d,
                              sizeof(d)),
            kf_report_num(doc, "lineage.sampling.max_tokens"),
            isnan(seed) ? "none (not reproducible)" : kf_report_fmt_num(seed, e, sizeof(e)));
    } else if (!err) {
        err = kf_buf_append_str(out, "`\n- Sampling: unknown");
    }
    if (!err)
        err = kf_buf_appendf(out, "\n- Metrics: %s, %.0f daily returns %s to %s\n",
                             kf_report_str(doc, "lineage.metrics.engine", "n/a"),
                             kf_report_num(doc, "lineage.metrics.n_returns"),
                             kf_report_str(doc, "lineage.metrics.first_date", "n/a"),
                             kf_report_str(doc, "lineage.metrics.last_date", "n/a"));
    const json_t *market = kf_report_arr(doc, "lineage.market");
    if (!err)
        err = kf_buf_appendf(out, "- Market data: %zu ticks\n", json_array_size(market));
    if (!err && json_array_size(market))
        err = kf_buf_append_str(
            out,
            "\n| Symbol | Topic | Partition | Offset | Event time |\n|---|---|---:|---:|---|\n");
    for (size_t i = 0; !err && i < json_array_size(market); i++) {
        const json_t *t = json_array_get(market, i);
        err = kf_md_cell_str(out, t, "symbol");
        if (!err)
            err = kf_md_cell_str(out, t, "topic");
        if (!err)
            err = kf_buf_appendf(out, "| %.0f | %.0f ", kf_report_num(t, "partition"),
                                 kf_report_num(t, "offset"));
        if (!err)
            err = kf_md_cell_str(out, t, "event_time");
        if (!err)
            err = kf_buf_append_str(out, "|\n");
    }
    if (!err)
        err = kf_buf_append_str(out, "\n- Request: ");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "run.request_id", "n/a"), 1);
    if (!err)
        err = kf_buf_append_str(out, ", trace ");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "run.trace_id", "n/a"), 1);
    if (!err)
        err = kf_buf_append_str(out, ", produced at ");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "run.produced_at", "n/a"), 1);
    if (!err)
        err = kf_buf_append_str(out, "\n- Digest: `");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "digest", "n/a"), 1);
    return err ? err : kf_buf_append_str(out, "`\n");
}

kf_err_t
kf_report_render_md(const json_t *doc, kf_buf_t *out)
{
    char v1[96], v2[96], v3[96];
    const char *ccy = kf_report_str(doc, "base_currency", "");
    kf_err_t err = kf_buf_append_str(out, "# Risk report: ");
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "portfolio_id", "n/a"), 1);
    if (!err)
        err = kf_buf_appendf(out, ", as of %s\n\nStatus: ", kf_report_str(doc, "as_of", "n/a"));
    if (!err)
        err = kf_md_text(out, kf_report_str(doc, "status", "n/a"), 1);
    if (!err)
        err = kf_buf_append_str(out, ". Base currency: ");
    if (!err)
        err = kf_md_text(out, ccy, 1);
    if (!err)
        err = kf_buf_append_str(out, ".\n\n## Headline\n\n| Metric | Value |\n|---|---:|\n");

    /* Headline rows. The currency is escaped once here and reused. */
    kf_buf_t c;
    kf_buf_init(&c, 256);
    if (!err)
        err = kf_md_text(&c, ccy, 1);
    const char *cc = c.data ? c.data : "";
    double conf = kf_report_num(doc, "headline.confidence");
    double hz = kf_report_num(doc, "headline.horizon_days");
    if (!err)
        err = kf_buf_appendf(
            out, "| Portfolio value | %s %s |\n",
            kf_report_fmt_fixed(kf_report_num(doc, "headline.value"), 2, v1, sizeof(v1)), cc);
    if (!err)
        err = kf_buf_appendf(
            out, "| Historical VaR %s, %.0f day(s) | %s %s (%s) |\n",
            kf_report_fmt_pct(conf, 1, v1, sizeof(v1)), hz,
            kf_report_fmt_fixed(kf_report_num(doc, "headline.var"), 2, v2, sizeof(v2)), cc,
            kf_report_fmt_pct(kf_report_num(doc, "headline.var_pct"), 2, v3, sizeof(v3)));
    if (!err)
        err = kf_buf_appendf(
            out, "| Expected shortfall %s, %.0f day(s) | %s %s (%s) |\n",
            kf_report_fmt_pct(conf, 1, v1, sizeof(v1)), hz,
            kf_report_fmt_fixed(kf_report_num(doc, "headline.es"), 2, v2, sizeof(v2)), cc,
            kf_report_fmt_pct(kf_report_num(doc, "headline.es_pct"), 2, v3, sizeof(v3)));
    if (!err)
        err = kf_buf_appendf(
            out, "| EWMA volatility (annualised) | %s |\n",
            kf_report_fmt_pct(kf_report_num(doc, "metrics.ewma.vol_annual"), 2, v1, sizeof(v1)));
    if (!err)
        err = kf_buf_appendf(
            out, "| Maximum drawdown | %s (%s to %s) |\n",
            kf_report_fmt_pct(kf_report_num(doc, "metrics.drawdown.max"), 2, v1, sizeof(v1)),
            kf_report_str(doc, "metrics.drawdown.peak_date", "n/a"),
            kf_report_str(doc, "metrics.drawdown.trough_date", "n/a"));
    if (!err)
        err = kf_buf_appendf(out, "| Limit breaches | %.0f of %zu |\n",
                             kf_report_num(doc, "metrics.n_breaches"),
                             json_array_size(kf_report_arr(doc, "metrics.limits")));

    if (!err)
        err = kf_md_narrative(out, doc);

    /* VaR / ES table: historical and parametric, 95% and 99%. */
    if (!err)
        err = kf_buf_appendf(out,
                             "\n## Value at risk (%s)\n\n| Method | Confidence | VaR 1d | ES 1d | "
                             "VaR 10d | ES 10d |\n|---|---:|---:|---:|---:|---:|\n",
                             cc);
    static const char *const methods[2] = {"historical", "parametric"};
    static const char *const levels[2] = {"95", "99"};
    for (int m = 0; !err && m < 2; m++) {
        for (int l = 0; !err && l < 2; l++) {
            char p[64];
            err = kf_buf_appendf(out, "| %s | %s%% ", methods[m], levels[l]);
            static const char *const cols[4] = {"var_1d", "es_1d", "var_10d", "es_10d"};
            for (int k = 0; !err && k < 4; k++) {
                snprintf(p, sizeof(p), "metrics.%s.%s.%s", methods[m], levels[l], cols[k]);
                err = kf_md_cell_num(out, kf_report_num(doc, p), 0, 2);
            }
            if (!err)
                err = kf_buf_append_str(out, "|\n");
        }
    }

    if (!err)
        err = kf_buf_append_str(out, "\n## Exposures\n");
    if (!err)
        err = kf_md_exposures(out, doc, "asset_class", "asset class");
    if (!err)
        err = kf_md_exposures(out, doc, "sector", "sector");
    if (!err)
        err = kf_md_exposures(out, doc, "currency", "currency");

    const json_t *pos = kf_report_arr(doc, "metrics.positions");
    if (!err)
        err = kf_buf_append_str(out, "\n## Positions\n\n| Symbol | Asset class | Sector | Currency "
                                     "| Quantity | Price | Value | Weight | Component VaR 99% |\n"
                                     "|---|---|---|---|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; !err && i < json_array_size(pos); i++) {
        const json_t *p = json_array_get(pos, i);
        err = kf_md_cell_str(out, p, "symbol");
        if (!err)
            err = kf_md_cell_str(out, p, "asset_class");
        if (!err)
            err = kf_md_cell_str(out, p, "sector");
        if (!err)
            err = kf_md_cell_str(out, p, "currency");
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(p, "quantity"), 0, 2);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(p, "price"), 0, 4);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(p, "value"), 0, 2);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(p, "weight"), 1, 2);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(p, "component_var_99"), 0, 2);
        if (!err)
            err = kf_buf_append_str(out, "|\n");
    }

    const json_t *lim = kf_report_arr(doc, "metrics.limits");
    if (!err)
        err = kf_buf_append_str(out, "\n## Limits\n\n| Metric | Threshold | Observed | Status |\n"
                                     "|---|---:|---:|---|\n");
    if (!err && !json_array_size(lim))
        err = kf_buf_append_str(out, "| (no limits) | | | |\n");
    for (size_t i = 0; !err && i < json_array_size(lim); i++) {
        const json_t *l = json_array_get(lim, i);
        /* hhi is an index; every other limit metric is a fraction of the portfolio value. */
        int pct = strcmp(kf_report_str(l, "metric", ""), "hhi") != 0;
        err = kf_md_cell_str(out, l, "metric");
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(l, "threshold"), pct, pct ? 2 : 4);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(l, "observed"), pct, pct ? 2 : 4);
        if (!err)
            err =
                kf_buf_appendf(out, "| %s |\n",
                               json_is_true(json_object_get(l, "breached")) ? "**BREACH**" : "ok");
    }

    const json_t *st = kf_report_arr(doc, "metrics.stress");
    if (!err)
        err = kf_buf_append_str(out, "\n## Stress scenarios\n\n| Scenario | P&L | P&L % |\n"
                                     "|---|---:|---:|\n");
    for (size_t i = 0; !err && i < json_array_size(st); i++) {
        const json_t *s = json_array_get(st, i);
        err = kf_md_cell_str(out, s, "scenario");
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(s, "pnl"), 0, 2);
        if (!err)
            err = kf_md_cell_num(out, kf_report_num(s, "pnl_pct"), 1, 2);
        if (!err)
            err = kf_buf_append_str(out, "|\n");
    }

    if (!err)
        err = kf_md_lineage(out, doc);
    kf_buf_free(&c);
    return err;
}
