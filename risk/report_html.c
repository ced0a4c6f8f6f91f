/*
 * report_html.c: the HTML rendering of a report document: one self-contained page (inline
 * CSS, inline SVG charts drawn here, no scripts, no external URLs) that a browser, a mail
 * client or a PDF printer shows the same way offline.
 *
 * Safety: every string from the document (the model's narrative above all, but also names
 * from the database) goes through kf_report_html_escape, and the page carries a
 * Content-Security-Policy that forbids scripts and remote loads, so even a missed escape
 * could not run code or leak the report. Coordinates are printed with one decimal ("%.1f"),
 * so the page is byte-stable for a given document.
 *
 * Charts (all sizes in SVG user units):
 *   - P&L histogram: the daily P&L scenarios in KF_HTML_BINS bins (fewer when there are fewer
 *     scenarios), tail bins (upper edge at or below -VaR) in red, dashed lines at -VaR and -ES
 *     of the headline confidence (1-day figures, as the histogram is of daily P&L);
 *   - drawdown: value / running peak - 1 over the window, with the maximum drawdown marked;
 *   - exposures: horizontal weight bars by asset class, sector and currency (top 10 each).
 */
#include "report_int.h"

#include "kf_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KF_HTML_BINS     30
#define KF_HTML_EXPO_MAX 10

/* Plot geometry shared by the histogram and the drawdown chart. */
#define KF_HTML_W  1040.0 /* viewBox width */
#define KF_HTML_X0 70.0   /* left of the plot area */
#define KF_HTML_PW 940.0  /* plot width */
#define KF_HTML_Y0 30.0   /* top of the plot area */
#define KF_HTML_PH 230.0  /* plot height */

kf_err_t
kf_report_html_escape(kf_buf_t *out, const char *text)
{
    if (!text)
        return KF_OK;
    char *fixed = kf_report_utf8_fix(text);
    if (!fixed)
        return KF_ERR_NOMEM;
    kf_err_t err = KF_OK;
    size_t run = 0, i = 0;
    for (; !err && fixed[i]; i++) {
        unsigned char c = (unsigned char)fixed[i];
        const char *rep = NULL;
        switch (c) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            /* C0 controls (but \n, \t) and DEL are not allowed in HTML text. */
            if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
                rep = "\xEF\xBF\xBD";
        }
        if (!rep)
            continue;
        err = kf_buf_append(out, fixed + run, i - run);
        if (!err)
            err = kf_buf_append_str(out, rep);
        run = i + 1;
    }
    if (!err)
        err = kf_buf_append(out, fixed + run, i - run);
    free(fixed);
    return err;
}

/* Appends printf text, then an escaped string, then more printf text: the common shape
 * "<td>" + escaped + "</td>". */
static kf_err_t
kf_html_wrap(kf_buf_t *out, const char *pre, const char *text, const char *post)
{
    kf_err_t err = kf_buf_append_str(out, pre);
    if (!err)
        err = kf_report_html_escape(out, text);
    return err ? err : kf_buf_append_str(out, post);
}

/* Compact axis label: 1.2M, -350k, 12. */
static char *
kf_html_compact(double v, char *buf, size_t size)
{
    double a = fabs(v);
    const char *sign = v < 0 && a >= 0.5 ? "-" : "";
    if (a >= 1e9)
        snprintf(buf, size, "%s%.1fB", sign, a / 1e9);
    else if (a >= 1e6)
        snprintf(buf, size, "%s%.1fM", sign, a / 1e6);
    else if (a >= 1e3)
        snprintf(buf, size, "%s%.0fk", sign, a / 1e3);
    else
        snprintf(buf, size, "%s%.0f", sign, a);
    return buf;
}

static const char kf_html_css[] =
    "body{margin:0;background:#f4f6f9;color:#1c2430;font:14px/1.45 -apple-system,'Segoe UI',"
    "Helvetica,Arial,sans-serif}\n"
    "main{max-width:1100px;margin:0 auto;padding:24px 28px 40px}\n"
    "header{border-bottom:3px solid #1f4e79;padding-bottom:12px;margin-bottom:18px}\n"
    "h1{font-size:26px;margin:0 0 4px;color:#1f4e79}\n"
    "h2{font-size:18px;margin:28px 0 10px;color:#1f4e79;border-bottom:1px solid #d5dce6;"
    "padding-bottom:4px}\n"
    "h3{font-size:14px;margin:0 0 6px;color:#44546a}\n"
    ".sub{color:#5b6878}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;"
    "font-weight:600;color:#fff;background:#2e7d32;vertical-align:middle}\n"
    ".badge.bad{background:#c62828}\n"
    ".cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}\n"
    ".card{background:#fff;border:1px solid #d5dce6;border-radius:6px;padding:10px 14px}\n"
    ".card .k{font-size:12px;color:#5b6878;text-transform:uppercase;letter-spacing:.03em}\n"
    ".card .v{font-size:20px;font-weight:600;margin-top:2px}\n"
    ".card .n{font-size:12px;color:#5b6878}\n"
    ".card.alert .v{color:#c62828}\n"
    ".narrative{background:#fff;border-left:4px solid #1f4e79;padding:10px 16px;"
    "white-space:normal;overflow-wrap:anywhere}\n"
    ".chart{background:#fff;border:1px solid #d5dce6;border-radius:6px;padding:8px;"
    "margin-bottom:12px}\n"
    ".chart svg{width:100%;height:auto;display:block}\n"
    ".row3{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;align-items:start}\n"
    "table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}\n"
    "th,td{border:1px solid #d5dce6;padding:4px 8px;text-align:left}\n"
    "th{background:#e8edf3}\n"
    "td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}\n"
    "tr.breach td{background:#fdecea;color:#8e1b1b;font-weight:600}\n"
    "code,.mono{font-family:Menlo,Consolas,monospace;font-size:12px;overflow-wrap:anywhere}\n"
    "dl{display:grid;grid-template-columns:160px 1fr;gap:4px 12px;margin:0 0 12px}\n"
    "dt{color:#5b6878}dd{margin:0}\n"
    "footer{margin-top:28px;color:#8592a3;font-size:12px}\n"
    "svg text{font-family:Helvetica,Arial,sans-serif}\n";

/* ---- charts ----------------------------------------------------------------------------- */

static kf_err_t
kf_html_hist(kf_buf_t *out, const json_t *doc)
{
    const json_t *pnl = kf_report_arr(doc, "series.pnl");
    size_t n = json_array_size(pnl);
    double var = kf_report_num(doc, "headline.var_1d");
    double es = kf_report_num(doc, "headline.es_1d");
    if (n == 0)
        return kf_buf_append_str(out, "<p class=\"sub\">No P&amp;L series in this report.</p>\n");
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double x = json_number_value(json_array_get(pnl, i));
        lo = fmin(lo, x);
        hi = fmax(hi, x);
    }
    /* The VaR/ES lines must be inside the range even when no scenario reaches them. */
    if (isfinite(var))
        lo = fmin(lo, -var);
    if (isfinite(es))
        lo = fmin(lo, -es);
    if (!(hi > lo)) {
        lo -= 1;
        hi += 1;
    }
    /* A range that overflows (1e308 next to -1e308) has no drawable scale. */
    if (!isfinite(hi - lo))
        return kf_buf_append_str(out, "<p class=\"sub\">The P&amp;L series is out of range and "
                                      "cannot be drawn.</p>\n");
    size_t bins = n < KF_HTML_BINS ? n : KF_HTML_BINS;
    size_t counts[KF_HTML_BINS] = {0}, maxc = 1;
    double w = (hi - lo) / (double)bins;
    for (size_t i = 0; i < n; i++) {
        double x = json_number_value(json_array_get(pnl, i));
        /* Clamp in double first: converting NaN or a huge value to size_t is undefined. */
        double fb = floor((x - lo) / w);
        size_t b = !(fb >= 0) ? 0 : fb >= (double)bins ? bins - 1 : (size_t)fb;
        counts[b]++;
        maxc = counts[b] > maxc ? counts[b] : maxc;
    }
    const double x0 = KF_HTML_X0, y0 = KF_HTML_Y0, pw = KF_HTML_PW, ph = KF_HTML_PH;
    const double bw = pw / (double)bins;
    kf_err_t err =
        kf_buf_appendf(out,
                       "<svg id=\"pnl-hist\" viewBox=\"0 0 %.0f 310\" role=\"img\" "
                       "aria-label=\"Histogram of daily P&amp;L scenarios with VaR and ES\">\n"
                       "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"310\" fill=\"#fff\"/>\n",
                       KF_HTML_W, KF_HTML_W);
    /* Horizontal grid and count labels: 0, half, max. */
    for (int g = 0; !err && g <= 2; g++) {
        double y = y0 + ph - ph * g / 2.0;
        err = kf_buf_appendf(out,
                             "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                             "stroke=\"#e3e8ef\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                             "text-anchor=\"end\" fill=\"#5b6878\">%.0f</text>\n",
                             x0, y, x0 + pw, y, x0 - 6, y + 4, (double)maxc * g / 2.0);
    }
    for (size_t b = 0; !err && b < bins; b++) {
        double h = ph * (double)counts[b] / (double)maxc;
        double upper = lo + w * (double)(b + 1);
        int tail = isfinite(var) && upper <= -var + 1e-9 * fabs(var);
        err = kf_buf_appendf(out,
                             "<rect class=\"bar%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                             "height=\"%.1f\" fill=\"%s\"><title>%zu days</title></rect>\n",
                             tail ? " tail" : "", x0 + bw * (double)b + 0.5, y0 + ph - h,
                             bw > 2 ? bw - 1 : bw, h, tail ? "#c62828" : "#4a7ab0", counts[b]);
    }
    /* x axis: five evenly spaced P&L labels. */
    if (!err)
        err = kf_buf_appendf(out,
                             "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                             "stroke=\"#44546a\"/>\n",
                             x0, y0 + ph, x0 + pw, y0 + ph);
    for (int t = 0; !err && t <= 4; t++) {
        char lab[32];
        double x = x0 + pw * t / 4.0;
        err = kf_buf_appendf(out,
                             "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" "
                             "fill=\"#5b6878\">%s</text>\n",
                             x, y0 + ph + 16,
                             kf_html_compact(lo + (hi - lo) * t / 4.0, lab, sizeof(lab)));
    }
    if (!err)
        err = kf_buf_appendf(out,
                             "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
                             "fill=\"#44546a\">daily P&amp;L scenario (",
                             x0 + pw / 2, y0 + ph + 38);
    if (!err)
        err = kf_html_wrap(out, "", kf_report_str(doc, "base_currency", ""), ")</text>\n");
    if (!err)
        err =
            kf_buf_appendf(out,
                           "<text x=\"14\" y=\"%.1f\" font-size=\"12\" fill=\"#44546a\" "
                           "transform=\"rotate(-90 14 %.1f)\" text-anchor=\"middle\">days</text>\n",
                           y0 + ph / 2, y0 + ph / 2);
    /* VaR and ES markers: a dashed line each with a short tag at its top, and a legend with
     * the amounts in the top right corner (long labels next to the lines would run off the
     * chart when the tail is at its left edge). ES is left of VaR (ES >= VaR as losses). */
    char conf[32];
    kf_report_fmt_pct(kf_report_num(doc, "headline.confidence"), 1, conf, sizeof(conf));
    struct {
        const char *id, *name, *color, *anchor;
        double loss, dx;
    } marks[2] = {{"var-line", "VaR", "#e65100", "start", var, 4},
                  {"es-line", "ES", "#6a1b9a", "end", es, -4}};
    for (int m = 0; !err && m < 2; m++) {
        if (!isfinite(marks[m].loss))
            continue;
        char val[64];
        double x = x0 + pw * (-marks[m].loss - lo) / (hi - lo);
        double ly = y0 + 8 + 18.0 * m;
        err = kf_buf_appendf(
            out,
            "<line id=\"%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n<text x=\"%.1f\" y=\"%.1f\" "
            "font-size=\"12\" font-weight=\"600\" fill=\"%s\" text-anchor=\"%s\">%s</text>\n"
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"%.1f\" y=\"%.1f\" "
            "font-size=\"12\" fill=\"#1c2430\">%s %s, 1 day: %s</text>\n",
            marks[m].id, x, y0 - 4, x, y0 + ph, marks[m].color, x + marks[m].dx, y0 + 6,
            marks[m].color, marks[m].anchor, marks[m].name, x0 + pw - 230, ly - 4, x0 + pw - 206,
            ly - 4, marks[m].color, x0 + pw - 200, ly, marks[m].name, conf,
            kf_report_fmt_fixed(marks[m].loss, 0, val, sizeof(val)));
    }
    return err ? err : kf_buf_append_str(out, "</svg>\n");
}

static kf_err_t
kf_html_drawdown(kf_buf_t *out, const json_t *doc)
{
    const json_t *vals = kf_report_arr(doc, "series.values");
    const json_t *dates = kf_report_arr(doc, "series.dates");
    size_t n = json_array_size(vals);
    if (n < 2)
        return kf_buf_append_str(out, "<p class=\"sub\">No value series in this report.</p>\n");
    double *dd = malloc(n * sizeof(*dd));
    if (!dd)
        return KF_ERR_NOMEM;
    double peak = -INFINITY, worst = 0;
    size_t worst_t = 0;
    for (size_t t = 0; t < n; t++) {
        double v = json_number_value(json_array_get(vals, t));
        peak = fmax(peak, v);
        dd[t] = peak > 0 ? v / peak - 1 : 0;
        if (!isfinite(dd[t]) || dd[t] < -1)
            dd[t] = isfinite(dd[t]) ? -1 : 0; /* negative or non-finite values: clamp */
        if (dd[t] < worst) {
            worst = dd[t];
            worst_t = t;
        }
    }
    /* Axis down to the next grid step below the worst drawdown; steps of 2.5%, 5% or 10%
     * keep the labels round. */
    double step = -worst <= 0.1 ? 0.025 : -worst <= 0.3 ? 0.05 : 0.1;
    int nsteps = (int)ceil(-worst / step - 1e-9);
    nsteps = nsteps < 2 ? 2 : nsteps;
    double axis = step * nsteps;
    const double x0 = KF_HTML_X0, y0 = KF_HTML_Y0, pw = KF_HTML_PW, ph = KF_HTML_PH;
    kf_err_t err =
        kf_buf_appendf(out,
                       "<svg id=\"drawdown\" viewBox=\"0 0 %.0f 300\" role=\"img\" "
                       "aria-label=\"Drawdown from the running peak\">\n"
                       "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"300\" fill=\"#fff\"/>\n",
                       KF_HTML_W, KF_HTML_W);
    for (int g = 0; !err && g <= nsteps; g++) {
        char lab[32];
        double y = y0 + ph * g / (double)nsteps;
        err = kf_buf_appendf(out,
                             "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                             "stroke=\"#e3e8ef\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" "
                             "text-anchor=\"end\" fill=\"#5b6878\">%s</text>\n",
                             x0, y, x0 + pw, y, x0 - 6, y + 4,
                             kf_report_fmt_pct(-step * g, 1, lab, sizeof(lab)));
    }
    /* The underwater area, then its outline. */
    kf_buf_t path;
    kf_buf_init(&path, 0);
    for (size_t t = 0; !err && t < n; t++) {
        double x = x0 + pw * (double)t / (double)(n - 1);
        double y = y0 + ph * fmin(1.0, -dd[t] / axis);
        err = kf_buf_appendf(&path, "%s%.1f,%.1f", t ? " L" : "M", x, y);
    }
    if (!err)
        err = kf_buf_appendf(out,
                             "<path d=\"%s L%.1f,%.1f L%.1f,%.1f Z\" fill=\"#c6282833\" "
                             "stroke=\"none\"/>\n<path id=\"drawdown-line\" d=\"%s\" fill=\"none\" "
                             "stroke=\"#c62828\" stroke-width=\"1.5\"/>\n",
                             path.data, x0 + pw, y0, x0, y0, path.data);
    kf_buf_free(&path);
    if (!err && worst < 0) {
        char pct[32];
        double x = x0 + pw * (double)worst_t / (double)(n - 1);
        double y = y0 + ph * fmin(1.0, -worst / axis);
        err = kf_buf_appendf(
            out,
            "<circle id=\"max-drawdown\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\" "
            "fill=\"#1c2430\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" "
            "font-weight=\"600\" fill=\"#1c2430\" stroke=\"#fff\" stroke-width=\"3\" "
            "paint-order=\"stroke\" text-anchor=\"%s\">max "
            "drawdown %s</text>\n",
            x, y, x + (x > x0 + pw * 0.7 ? -8 : 8), y > y0 + ph * 0.8 ? y - 8 : y + 4,
            x > x0 + pw * 0.7 ? "end" : "start", kf_report_fmt_pct(worst, 2, pct, sizeof(pct)));
    }
    /* Dates at the start, middle and end of the window. */
    for (int k = 0; !err && k <= 2; k++) {
        size_t t = (n - 1) * (size_t)k / 2;
        const char *d = json_string_value(json_array_get(dates, t));
        err = kf_buf_appendf(out,
                             "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"%s\" "
                             "fill=\"#5b6878\">",
                             x0 + pw * k / 2.0, y0 + ph + 16,
                             k == 0   ? "start"
                             : k == 1 ? "middle"
                                      : "end");
        if (!err)
            err = kf_html_wrap(out, "", d ? d : "", "</text>\n");
    }
    free(dd);
    return err ? err : kf_buf_append_str(out, "</svg>\n");
}

static kf_err_t
kf_html_expo(kf_buf_t *out, const json_t *doc, const char *key, const char *title)
{
    char path[64];
    snprintf(path, sizeof(path), "metrics.exposures.%s", key);
    const json_t *arr = kf_report_arr(doc, path);
    size_t n = json_array_size(arr), rows = n < KF_HTML_EXPO_MAX ? n : KF_HTML_EXPO_MAX;
    double maxw = 1e-12;
    for (size_t i = 0; i < rows; i++)
        maxw = fmax(maxw, fabs(kf_report_num(json_array_get(arr, i), "weight")));
    double height = 12 + 24.0 * (double)(rows ? rows : 1);
    kf_err_t err = kf_html_wrap(out, "<div class=\"chart\"><h3>By ", title, "</h3>\n");
    if (!err)
        err = kf_buf_appendf(out,
                             "<svg id=\"expo-%s\" viewBox=\"0 0 330 %.0f\" role=\"img\" "
                             "aria-label=\"Exposure by %s\">\n",
                             key, height, title);
    if (!err && rows == 0)
        err = kf_buf_append_str(out, "<text x=\"10\" y=\"24\" font-size=\"12\">none</text>\n");
    for (size_t i = 0; !err && i < rows; i++) {
        const json_t *e = json_array_get(arr, i);
        double wgt = kf_report_num(e, "weight");
        double len = isfinite(wgt) ? 150.0 * fabs(wgt) / maxw : 0;
        double y = 8 + 24.0 * (double)i;
        char pct[32];
        const char *label = kf_report_str(e, "key", "");
        err = kf_buf_appendf(out,
                             "<text x=\"110\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\" "
                             "fill=\"#1c2430\">",
                             y + 13);
        /* Long names are cut so they stay left of the bars. */
        char cut[20];
        snprintf(cut, sizeof(cut), "%s", *label ? label : "(none)");
        if (strlen(*label ? label : "(none)") > 16)
            memcpy(cut + 14, "..", 3);
        char *fixed = kf_report_utf8_fix(cut);
        if (!err)
            err = fixed ? kf_html_wrap(out, "", fixed, "</text>\n") : KF_ERR_NOMEM;
        free(fixed);
        if (!err)
            err = kf_buf_appendf(out,
                                 "<rect class=\"expo\" x=\"118\" y=\"%.1f\" width=\"%.1f\" "
                                 "height=\"16\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                                 "font-size=\"12\" fill=\"#44546a\">%s</text>\n",
                                 y, len, wgt < 0 ? "#c62828" : "#1f4e79", 124 + len, y + 13,
                                 kf_report_fmt_pct(wgt, 1, pct, sizeof(pct)));
    }
    if (!err)
        err = kf_buf_append_str(out, "</svg>");
    if (!err && n > rows)
        err = kf_buf_appendf(out, "<p class=\"sub\">%zu more not shown.</p>", n - rows);
    return err ? err : kf_buf_append_str(out, "</div>\n");
}

/* ---- text sections ---------------------------------------------------------------------- */

static kf_err_t
kf_html_card(kf_buf_t *out, const char *title, const char *value, const char *note, int alert)
{
    kf_err_t err = kf_buf_appendf(out, "<div class=\"card%s\"><div class=\"k\">%s</div>",
                                  alert ? " alert" : "", title);
    if (!err)
        err = kf_html_wrap(out, "<div class=\"v\">", value, "</div>");
    if (!err)
        err = kf_html_wrap(out, "<div class=\"n\">", note, "</div></div>\n");
    return err;
}

static kf_err_t
kf_html_narrative(kf_buf_t *out, const json_t *doc)
{
    const char *text = kf_report_str(doc, "narrative.text", "");
    const char *error = kf_report_str(doc, "narrative.error", NULL);
    kf_err_t err = kf_buf_append_str(out, "<h2>Narrative</h2>\n<div class=\"narrative\">\n");
    if (!err && !*text)
        err = kf_buf_append_str(out, "<p class=\"sub\">No narrative was generated.</p>\n");
    /* Paragraphs at blank lines, <br> at single newlines; the text itself is escaped. */
    const char *p = text;
    while (!err && *p) {
        while (*p == '\n')
            p++;
        if (!*p)
            break;
        const char *end = strstr(p, "\n\n");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char *para = strndup(p, n);
        if (!para)
            return KF_ERR_NOMEM;
        err = kf_buf_append_str(out, "<p>");
        char *save = NULL;
        int first = 1;
        for (char *line = para; !err && line; line = save) {
            save = strchr(line, '\n');
            if (save)
                *save++ = '\0';
            if (!first)
                err = kf_buf_append_str(out, "<br>\n");
            if (!err)
                err = kf_report_html_escape(out, line);
            first = 0;
        }
        free(para);
        if (!err)
            err = kf_buf_append_str(out, "</p>\n");
        p += n;
    }
    if (!err && error)
        err = kf_html_wrap(out, "<p><strong>Error:</strong> ", error, "</p>\n");
    if (!err) {
        err = kf_html_wrap(out, "<p class=\"sub\">Finish reason: ",
                           kf_report_str(doc, "narrative.finish_reason", "n/a"), "");
        if (!err)
            err = kf_buf_appendf(out, "; prompt tokens %.0f, completion tokens %.0f.</p>\n",
                                 fmax(0, kf_report_num(doc, "narrative.prompt_tokens")),
                                 fmax(0, kf_report_num(doc, "narrative.completion_tokens")));
    }
    return err ? err : kf_buf_append_str(out, "</div>\n");
}

/* <td class="r">number</td> with money (pct = 0) or percentage formatting. */
static kf_err_t
kf_html_num(kf_buf_t *out, double v, int pct, int decimals)
{
    char num[96];
    return kf_buf_appendf(out, "<td class=\"r\">%s</td>",
                          pct ? kf_report_fmt_pct(v, decimals, num, sizeof(num))
                              : kf_report_fmt_fixed(v, decimals, num, sizeof(num)));
}

static kf_err_t
kf_html_tables(kf_buf_t *out, const json_t *doc)
{
    kf_err_t err = kf_html_wrap(out, "<h2>Value at risk (", kf_report_str(doc, "base_currency", ""),
                                ")</h2>\n<table id=\"var-table\"><tr><th>Method</th><th "
                                "class=\"r\">Confidence</th><th class=\"r\">VaR 1d</th><th "
                                "class=\"r\">ES 1d</th><th class=\"r\">VaR 10d</th><th "
                                "class=\"r\">ES 10d</th></tr>\n");
    static const char *const methods[2] = {"historical", "parametric"};
    static const char *const levels[2] = {"95", "99"};
    static const char *const cols[4] = {"var_1d", "es_1d", "var_10d", "es_10d"};
    for (int m = 0; !err && m < 2; m++)
        for (int l = 0; !err && l < 2; l++) {
            err = kf_buf_appendf(out, "<tr><td>%s</td><td class=\"r\">%s%%</td>", methods[m],
                                 levels[l]);
            for (int k = 0; !err && k < 4; k++) {
                char p[64];
                snprintf(p, sizeof(p), "metrics.%s.%s.%s", methods[m], levels[l], cols[k]);
                err = kf_html_num(out, kf_report_num(doc, p), 0, 2);
            }
            if (!err)
                err = kf_buf_append_str(out, "</tr>\n");
        }
    if (!err)
        err = kf_buf_append_str(out, "</table>\n");

    const json_t *pos = kf_report_arr(doc, "metrics.positions");
    if (!err)
        err = kf_buf_append_str(
            out, "<h2>Positions</h2>\n<table id=\"positions\"><tr><th>Symbol</th><th>Asset "
                 "class</th><th>Sector</th><th>Currency</th><th class=\"r\">Quantity</th><th "
                 "class=\"r\">Price</th><th class=\"r\">Value</th><th class=\"r\">Weight</th><th "
                 "class=\"r\">Component VaR 99%</th></tr>\n");
    for (size_t i = 0; !err && i < json_array_size(pos); i++) {
        const json_t *p = json_array_get(pos, i);
        err = kf_html_wrap(out, "<tr><td>", kf_report_str(p, "symbol", "n/a"), "</td>");
        if (!err)
            err = kf_html_wrap(out, "<td>", kf_report_str(p, "asset_class", "n/a"), "</td>");
        if (!err)
            err = kf_html_wrap(out, "<td>", kf_report_str(p, "sector", "n/a"), "</td>");
        if (!err)
            err = kf_html_wrap(out, "<td>", kf_report_str(p, "currency", "n/a"), "</td>");
        if (!err)
            err = kf_html_num(out, kf_report_num(p, "quantity"), 0, 2);
        if (!err)
            err = kf_html_num(out, kf_report_num(p, "price"), 0, 4);
        if (!err)
            err = kf_html_num(out, kf_report_num(p, "value"), 0, 2);
        if (!err)
            err = kf_html_num(out, kf_report_num(p, "weight"), 1, 2);
        if (!err)
            err = kf_html_num(out, kf_report_num(p, "component_var_99"), 0, 2);
        if (!err)
            err = kf_buf_append_str(out, "</tr>\n");
    }
    if (!err)
        err = kf_buf_append_str(out, "</table>\n");

    const json_t *lim = kf_report_arr(doc, "metrics.limits");
    if (!err)
        err = kf_buf_append_str(out, "<h2>Limits</h2>\n<table id=\"limits\"><tr><th>Metric</th><th "
                                     "class=\"r\">Threshold</th><th class=\"r\">Observed</th>"
                                     "<th>Status</th></tr>\n");
    if (!err && !json_array_size(lim))
        err = kf_buf_append_str(out, "<tr><td colspan=\"4\">No limits are set.</td></tr>\n");
    for (size_t i = 0; !err && i < json_array_size(lim); i++) {
        const json_t *l = json_array_get(lim, i);
        int breach = json_is_true(json_object_get(l, "breached"));
        int pct = strcmp(kf_report_str(l, "metric", ""), "hhi") != 0;
        err = kf_html_wrap(out, breach ? "<tr class=\"breach\"><td>" : "<tr><td>",
                           kf_report_str(l, "metric", "n/a"), "</td>");
        if (!err)
            err = kf_html_num(out, kf_report_num(l, "threshold"), pct, pct ? 2 : 4);
        if (!err)
            err = kf_html_num(out, kf_report_num(l, "observed"), pct, pct ? 2 : 4);
        if (!err)
            err = kf_buf_appendf(out, "<td>%s</td></tr>\n", breach ? "BREACH" : "ok");
    }
    if (!err)
        err = kf_buf_append_str(out, "</table>\n");

    const json_t *st = kf_report_arr(doc, "metrics.stress");
    if (!err)
        err = kf_buf_append_str(out, "<h2>Stress scenarios</h2>\n<table id=\"stress\"><tr><th>"
                                     "Scenario</th><th class=\"r\">P&amp;L</th><th class=\"r\">"
                                     "P&amp;L %</th></tr>\n");
    for (size_t i = 0; !err && i < json_array_size(st); i++) {
        const json_t *s = json_array_get(st, i);
        err = kf_html_wrap(out, "<tr><td>", kf_report_str(s, "scenario", "n/a"), "</td>");
        if (!err)
            err = kf_html_num(out, kf_report_num(s, "pnl"), 0, 2);
        if (!err)
            err = kf_html_num(out, kf_report_num(s, "pnl_pct"), 1, 2);
        if (!err)
            err = kf_buf_append_str(out, "</tr>\n");
    }
    return err ? err : kf_buf_append_str(out, "</table>\n");
}

static kf_err_t
kf_html_lineage(kf_buf_t *out, const json_t *doc)
{
    char a[64];
    kf_err_t err = kf_buf_append_str(out, "<h2>Lineage</h2>\n<dl id=\"lineage\">\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Portfolio</dt><dd>",
                           kf_report_str(doc, "lineage.portfolio_id", "n/a"), "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>As of</dt><dd>", kf_report_str(doc, "lineage.as_of", "n/a"),
                           "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Model</dt><dd>",
                           kf_report_str(doc, "lineage.model.name", "n/a"), "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Model SHA-256</dt><dd class=\"mono\">",
                           kf_report_str(doc, "lineage.model.sha256", "n/a"), "</dd>\n");
    if (!err && json_is_object(kf_json_path(doc, "lineage.sampling"))) {
        static const char *const keys[] = {"temperature",        "top_p",      "top_k", "min_p",
                                           "repetition_penalty", "max_tokens", "seed"};
        err = kf_buf_append_str(out, "<dt>Sampling</dt><dd class=\"mono\">");
        for (size_t i = 0; !err && i < sizeof(keys) / sizeof(keys[0]); i++) {
            char p[64];
            snprintf(p, sizeof(p), "lineage.sampling.%s", keys[i]);
            double v = kf_report_num(doc, p);
            err = kf_buf_appendf(out, "%s%s=%s", i ? ", " : "", keys[i],
                                 isnan(v) ? "null" : kf_report_fmt_num(v, a, sizeof(a)));
        }
        if (!err)
            err = kf_buf_append_str(out, "</dd>\n");
    } else if (!err) {
        err = kf_buf_append_str(out, "<dt>Sampling</dt><dd>unknown</dd>\n");
    }
    if (!err)
        err = kf_html_wrap(out, "<dt>Metrics</dt><dd>",
                           kf_report_str(doc, "lineage.metrics.engine", "n/a"), "");
    if (!err)
        err = kf_buf_appendf(out, ", %.0f daily returns, ",
                             kf_report_num(doc, "lineage.metrics.n_returns"));
    if (!err)
        err =
            kf_html_wrap(out, "", kf_report_str(doc, "lineage.metrics.first_date", "n/a"), " to ");
    if (!err)
        err = kf_html_wrap(out, "", kf_report_str(doc, "lineage.metrics.last_date", "n/a"),
                           "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Request</dt><dd class=\"mono\">",
                           kf_report_str(doc, "run.request_id", "n/a"), "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Trace</dt><dd class=\"mono\">",
                           kf_report_str(doc, "run.trace_id", "n/a"), "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Produced at</dt><dd>",
                           kf_report_str(doc, "run.produced_at", "n/a"), "</dd>\n");
    if (!err)
        err = kf_html_wrap(out, "<dt>Digest</dt><dd class=\"mono\">",
                           kf_report_str(doc, "digest", "n/a"), "</dd>\n</dl>\n");

    const json_t *market = kf_report_arr(doc, "lineage.market");
    if (!err)
        err = kf_buf_appendf(out,
                             "<h3>Market data in the prompt (%zu ticks)</h3>\n<table "
                             "id=\"market\"><tr><th>Symbol</th><th>Topic</th><th "
                             "class=\"r\">Partition</th><th class=\"r\">Offset</th><th>Event "
                             "time</th></tr>\n",
                             json_array_size(market));
    for (size_t i = 0; !err && i < json_array_size(market); i++) {
        const json_t *t = json_array_get(market, i);
        err = kf_html_wrap(out, "<tr><td>", kf_report_str(t, "symbol", "n/a"), "</td>");
        if (!err)
            err =
                kf_html_wrap(out, "<td class=\"mono\">", kf_report_str(t, "topic", "n/a"), "</td>");
        if (!err)
            err = kf_buf_appendf(out, "<td class=\"r\">%.0f</td><td class=\"r\">%.0f</td>",
                                 kf_report_num(t, "partition"), kf_report_num(t, "offset"));
        if (!err)
            err = kf_html_wrap(out, "<td>", kf_report_str(t, "event_time", "n/a"), "</td></tr>\n");
    }
    return err ? err : kf_buf_append_str(out, "</table>\n");
}

kf_err_t
kf_report_render_html(const json_t *doc, kf_buf_t *out)
{
    char v1[96], v2[96], v3[96];
    const char *ccy = kf_report_str(doc, "base_currency", "");
    const char *status = kf_report_str(doc, "status", "n/a");
    kf_err_t err = kf_buf_append_str(
        out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; img-src data:\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
             "<title>Risk report ");
    if (!err)
        err = kf_report_html_escape(out, kf_report_str(doc, "portfolio_id", "n/a"));
    if (!err)
        err =
            kf_html_wrap(out, " as of ", kf_report_str(doc, "as_of", "n/a"), "</title>\n<style>\n");
    if (!err)
        err = kf_buf_append_str(out, kf_html_css);
    if (!err)
        err = kf_html_wrap(out, "</style>\n</head>\n<body>\n<main>\n<header>\n<h1>Risk report: ",
                           kf_report_str(doc, "portfolio_id", "n/a"), "</h1>\n");
    if (!err)
        err = kf_html_wrap(out, "<div class=\"sub\">As of ", kf_report_str(doc, "as_of", "n/a"),
                           " &middot; base currency ");
    if (!err)
        err = kf_report_html_escape(out, ccy);
    if (!err)
        err = kf_html_wrap(out,
                           strcmp(status, "completed") ? " &middot; <span class=\"badge bad\">"
                                                       : " &middot; <span class=\"badge\">",
                           status, "</span></div>\n</header>\n");

    /* Headline cards. */
    double conf = kf_report_num(doc, "headline.confidence");
    double hz = kf_report_num(doc, "headline.horizon_days");
    char title[256], note[256];
    if (!err)
        err = kf_buf_append_str(out, "<section class=\"cards\" id=\"headline\">\n");
    snprintf(note, sizeof(note), "%s, %s daily returns", ccy,
             kf_report_fmt_fixed(kf_report_num(doc, "headline.n_scenarios"), 0, v1, sizeof(v1)));
    if (!err)
        err = kf_html_card(
            out, "Portfolio value",
            kf_report_fmt_fixed(kf_report_num(doc, "headline.value"), 0, v2, sizeof(v2)), note, 0);
    kf_report_fmt_pct(conf, 1, v3, sizeof(v3));
    snprintf(title, sizeof(title), "Historical VaR %s, %.0fd", v3, hz);
    snprintf(note, sizeof(note), "%s of value",
             kf_report_fmt_pct(kf_report_num(doc, "headline.var_pct"), 2, v1, sizeof(v1)));
    if (!err)
        err = kf_html_card(
            out, title, kf_report_fmt_fixed(kf_report_num(doc, "headline.var"), 0, v2, sizeof(v2)),
            note, 0);
    snprintf(title, sizeof(title), "Expected shortfall %s, %.0fd", v3, hz);
    snprintf(note, sizeof(note), "%s of value",
             kf_report_fmt_pct(kf_report_num(doc, "headline.es_pct"), 2, v1, sizeof(v1)));
    if (!err)
        err = kf_html_card(
            out, title, kf_report_fmt_fixed(kf_report_num(doc, "headline.es"), 0, v2, sizeof(v2)),
            note, 0);
    snprintf(note, sizeof(note), "1-day %s, lambda %s",
             kf_report_fmt_pct(kf_report_num(doc, "metrics.ewma.vol_1d"), 2, v1, sizeof(v1)),
             kf_report_fmt_num(kf_report_num(doc, "metrics.ewma.lambda"), v3, sizeof(v3)));
    if (!err)
        err = kf_html_card(
            out, "EWMA volatility, annual",
            kf_report_fmt_pct(kf_report_num(doc, "metrics.ewma.vol_annual"), 2, v2, sizeof(v2)),
            note, 0);
    snprintf(note, sizeof(note), "%s to %s",
             kf_report_str(doc, "metrics.drawdown.peak_date", "n/a"),
             kf_report_str(doc, "metrics.drawdown.trough_date", "n/a"));
    if (!err)
        err = kf_html_card(
            out, "Maximum drawdown",
            kf_report_fmt_pct(kf_report_num(doc, "metrics.drawdown.max"), 2, v2, sizeof(v2)), note,
            0);
    double breaches = kf_report_num(doc, "metrics.n_breaches");
    snprintf(note, sizeof(note), "of %zu limits",
             json_array_size(kf_report_arr(doc, "metrics.limits")));
    if (!err)
        err = kf_html_card(out, "Limit breaches", kf_report_fmt_fixed(breaches, 0, v2, sizeof(v2)),
                           note, breaches > 0);
    if (!err)
        err = kf_buf_append_str(out, "</section>\n");

    if (!err)
        err = kf_html_narrative(out, doc);
    if (!err)
        err = kf_buf_appendf(out, "<h2>Daily P&amp;L distribution</h2>\n<div class=\"chart\">\n");
    if (!err)
        err = kf_html_hist(out, doc);
    if (!err)
        err = kf_buf_append_str(out, "</div>\n<h2>Drawdown</h2>\n<div class=\"chart\">\n");
    if (!err)
        err = kf_html_drawdown(out, doc);
    if (!err)
        err = kf_buf_append_str(out, "</div>\n<h2>Exposures</h2>\n<div class=\"row3\">\n");
    if (!err)
        err = kf_html_expo(out, doc, "asset_class", "asset class");
    if (!err)
        err = kf_html_expo(out, doc, "sector", "sector");
    if (!err)
        err = kf_html_expo(out, doc, "currency", "currency");
    if (!err)
        err = kf_buf_append_str(out, "</div>\n");
    if (!err)
        err = kf_html_tables(out, doc);
    if (!err)
        err = kf_html_lineage(out, doc);
    if (!err)
        err = kf_html_wrap(out, "<footer>Generated by kinfer report (",
                           kf_report_str(doc, "format", "n/a"),
                           "). Metrics are computed by kinfer; the narrative is written by the "
                           "model named above from those metrics.</footer>\n</main>\n</body>\n"
                           "</html>\n");
    return err;
}
